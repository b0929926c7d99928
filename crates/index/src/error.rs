//! What can go wrong with the index. Every message names the database
//! file, so that a log line alone says which state directory is at fault.

use omirr_core::RelPath;
use std::path::{Path, PathBuf};

/// An error from the persisted index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot open index at {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },

    #[error(
        "index at {} is open in another process; is another omirrd running \
         with this state directory?",
        path.display()
    )]
    InUse { path: PathBuf },

    #[error(
        "{} is not a usable omirr index ({why}); move it aside and restart: omirrd \
         then builds a fresh index with a full scan",
        path.display()
    )]
    NotAnIndex { path: PathBuf, why: String },

    #[error(
        "index at {} is in redb's file format v2, and upgrading it to v3 failed ({why}); \
         move it aside and restart: omirrd then builds a fresh index with a full scan",
        path.display()
    )]
    Upgrade { path: PathBuf, why: String },

    #[error(
        "index at {} has format {found}; this omirrd reads format {expected}: {advice}",
        path.display()
    )]
    Format {
        path: PathBuf,
        found: u32,
        expected: u32,
        advice: &'static str,
    },

    #[error("index at {}: {what} failed: {source}", path.display())]
    Db {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: Box<redb::Error>,
    },

    #[error("index at {} is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },

    #[error("index at {}: cannot encode {what}: {detail}", path.display())]
    Encode {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
}

/// Adds the database path and what was being done to a redb error.
pub(crate) trait Ctx<T> {
    fn at(self, path: &Path, what: &'static str) -> Result<T, IndexError>;
}

impl<T, E: Into<redb::Error>> Ctx<T> for Result<T, E> {
    fn at(self, path: &Path, what: &'static str) -> Result<T, IndexError> {
        self.map_err(|e| IndexError::Db {
            path: path.to_path_buf(),
            what,
            source: Box::new(e.into()),
        })
    }
}

pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> IndexError {
    IndexError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

pub(crate) fn decode_path(db: &Path, table: &str, bytes: &[u8]) -> Result<RelPath, IndexError> {
    RelPath::new(bytes).map_err(|e| corrupt(db, format!("{table} holds a bad path: {e}")))
}

pub(crate) fn bad_record(db: &Path, path: &[u8], e: crate::codec::CodecError) -> IndexError {
    corrupt(
        db,
        format!(
            "the entry for {} does not decode: {e}",
            String::from_utf8_lossy(path)
        ),
    )
}

/// What a panic caught at open said, for the error that replaces it.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}
