//! Renames made while nobody watched: an inode the baseline knew under
//! another path that no longer holds it. The old path is reported
//! vanished (here, if it lies outside the scanned tops), the new one
//! [`Found::renamed_from`] it, with the old hash if the content provably
//! is the same.

use std::io;
use std::os::unix::fs::MetadataExt;

use omirr_core::{RelPath, StatKey};

use super::baseline::Known;
#[cfg(doc)]
use super::report::Found;
use super::report::ScanError;
use super::walk::Walker;

impl Walker<'_> {
    /// If `path` holds an inode the baseline knew under another path that
    /// no longer holds it, and `same` accepts what was known there: that
    /// path and what was known.
    pub(super) fn moved_from(
        &mut self,
        path: &RelPath,
        key: &StatKey,
        known_here: Option<&Known>,
        same: &dyn Fn(&Known) -> bool,
    ) -> Result<Option<(RelPath, Known)>, ScanError> {
        if known_here.is_some_and(|k| (k.key.dev, k.key.ino) == (key.dev, key.ino)) {
            return Ok(None);
        }
        let old = self
            .baseline
            .path_of_inode(key.dev, key.ino)
            .map_err(|source| ScanError::Baseline {
                path: path.clone(),
                source,
            })?;
        let Some(old) = old.filter(|o| o != path) else {
            return Ok(None);
        };
        let Some(k) = self.known(&old)? else {
            return Ok(None);
        };
        if (k.key.dev, k.key.ino) != (key.dev, key.ino) || !same(&k) || !self.gone(&old, key) {
            return Ok(None);
        }
        Ok(Some((old, k)))
    }

    /// Whether `old` no longer holds the inode of `key`. Rename sources
    /// outside the scanned tops are recorded as vanished here, since the
    /// walk will not come across them.
    fn gone(&mut self, old: &RelPath, key: &StatKey) -> bool {
        let gone = match std::fs::symlink_metadata(self.on_disk(old)) {
            Ok(m) => (m.dev(), m.ino()) != (key.dev, key.ino),
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ),
        };
        if gone && !old.is_within_any(self.tops) {
            let witness = self.witness_on_disk(old);
            self.outside_vanished.insert(old.clone(), witness);
        }
        gone
    }
}
