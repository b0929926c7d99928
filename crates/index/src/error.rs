//! What can go wrong with the index. Every message names the database
//! file, so that a log line alone says which state directory is at fault.

use omirr_core::RelPath;
use std::path::{Path, PathBuf};

/// An error from the persisted index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// redb could not create or open the database file for a reason not
    /// covered below (an I/O error, say).
    #[error("cannot open index at {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: redb::DatabaseError,
    },

    /// Another process (another omirrd with the same state directory)
    /// has the database open: redb allows one at a time.
    #[error(
        "index at {} is open in another process; is another omirrd running \
         with this state directory?",
        path.display()
    )]
    InUse {
        /// The database file.
        path: PathBuf,
    },

    /// The file is not an omirr index: not a redb database, a redb
    /// database without omirr's meta table or magic, or one redb cannot
    /// read (cut short or damaged).
    #[error(
        "{} is not a usable omirr index ({why}); move it aside and restart: omirrd \
         then builds a fresh index with a full scan",
        path.display()
    )]
    NotAnIndex {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },

    /// The file is in redb 2's file format, and redb 2.6's upgrade to
    /// the current one failed or panicked.
    #[error(
        "index at {} is in redb's file format v2, and upgrading it to v3 failed ({why}); \
         move it aside and restart: omirrd then builds a fresh index with a full scan",
        path.display()
    )]
    Upgrade {
        /// The database file.
        path: PathBuf,
        /// What redb 2 said, or what its panic said.
        why: String,
    },

    /// The index is of a format this build neither reads nor converts
    /// from: a newer one, or an older one too old to convert.
    #[error(
        "index at {} has format {found}; this omirrd reads format {expected}: {advice}",
        path.display()
    )]
    Format {
        /// The database file.
        path: PathBuf,
        /// The format the file says it is in.
        found: u32,
        /// This build's format, [`crate::FORMAT`].
        expected: u32,
        /// What the operator should do, depending on whether the file is
        /// newer or older.
        advice: &'static str,
    },

    /// A redb operation on the opened database (a transaction, a table,
    /// a read or a write) failed.
    #[error("index at {}: {what} failed: {source}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// What was being done, e.g. "reading a cursor".
        what: &'static str,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },

    /// The database holds something that does not decode or does not
    /// add up: a bad path, an entry or value that does not decode, a
    /// missing format or id, a table of the wrong type.
    #[error("index at {} is corrupt: {detail}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What does not decode or does not add up.
        detail: String,
    },

    /// A value could not be encoded for writing (a set-aside change,
    /// [`crate::Aside`]); nothing was written.
    #[error("index at {}: cannot encode {what}: {detail}", path.display())]
    Encode {
        /// The database file.
        path: PathBuf,
        /// What was being encoded.
        what: &'static str,
        /// What the encoder said.
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
