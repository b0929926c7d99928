//! redb's file format, below the index's own ([`crate::FORMAT`]): redb 2
//! wrote file format v2, which redb 3 and later (this crate's) refuse to
//! open. An index written by an omirrd built with redb 2 is rewritten in
//! file format v3 once, in place, when it is opened, by redb 2.6's own
//! upgrade (`Database::upgrade`, through the `redb2` dependency, which
//! is there for nothing else). Only redb's headers change: the tables
//! and every byte of their keys and values stay as they were.
//!
//! The upgrade is a redb commit: a crash during it leaves a file that
//! the next start upgrades, or opens, as it finds it.

use crate::error::{panic_message, IndexError};
use std::path::Path;

/// Rewrites the redb 2 file at `path` in file format v3. Refuses, with
/// an error that says what to do, a file redb 2.6 cannot open or
/// upgrade; a file that is already v3 is left as it is.
pub(crate) fn upgrade_v2(path: &Path, cache_bytes: usize) -> Result<(), IndexError> {
    let upgrade = || -> Result<(), Box<redb2::Error>> {
        let mut db = redb2::Database::builder()
            .set_cache_size(cache_bytes)
            .open(path)
            .map_err(|e| Box::new(e.into()))?;
        db.upgrade().map_err(|e| Box::new(e.into()))?;
        Ok(())
    };
    // redb asserts on some damaged files; here, as at any open, that is
    // an unusable index, not a reason to die.
    let why = match std::panic::catch_unwind(upgrade) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) if matches!(*e, redb2::Error::DatabaseAlreadyOpen) => {
            return Err(IndexError::InUse {
                path: path.to_path_buf(),
            })
        }
        Ok(Err(e)) => e.to_string(),
        Err(panic) => panic_message(&*panic).to_string(),
    };
    Err(IndexError::Upgrade {
        path: path.to_path_buf(),
        why,
    })
}
