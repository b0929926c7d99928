//! What can go wrong while applying: [`ApplyError`] for one action,
//! [`BatchError`] for a batch, and the helpers that build them so that
//! every message names the path (relative to the mirror root) and the
//! system's reason the same way.

use std::io;
use std::path::PathBuf;

use super::SourceError;
use omirr_core::{Hash, RelPath};
use rustix::fs::FileType;
use rustix::io::Errno;

/// Why an action (or a barrier) failed. Paths are relative to the mirror
/// root; the root itself is shown as "the mirror root".
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot open mirror root {}: {}", root.display(), describe(error))]
    OpenRoot { root: PathBuf, error: io::Error },

    /// The reason is part of the message; `error` is deliberately not the
    /// `source()`, so error chains do not print it twice.
    #[error("cannot {op} {}: {}", shown(path), describe(error))]
    Io {
        path: RelPath,
        op: &'static str,
        error: io::Error,
    },

    #[error(
        "refusing {}: {} is a symbolic link, and omirr never follows one inside a mirror root",
        shown(path),
        shown(component)
    )]
    SymlinkInPath { path: RelPath, component: RelPath },

    #[error(
        "cannot reach {}: {} is not a directory",
        shown(path),
        shown(component)
    )]
    NotADirectory { path: RelPath, component: RelPath },

    #[error("cannot {op} the mirror root itself")]
    RootPath { op: &'static str },

    #[error(
        "{} is a directory that is not empty; refusing to delete what the index does not know about",
        shown(path)
    )]
    DirNotEmpty { path: RelPath },

    #[error("{} is a {found} on disk where a {expected} was expected", shown(path))]
    Unexpected {
        path: RelPath,
        expected: &'static str,
        found: &'static str,
    },

    #[error(
        "cannot rename to {}: something the index does not know about is already there",
        shown(path)
    )]
    TargetExists { path: RelPath },

    #[error("cannot get the content of {}: {error}", shown(path))]
    Source { path: RelPath, error: SourceError },

    #[error("reading the content of {} failed: {}", shown(path), describe(error))]
    ContentRead { path: RelPath, error: io::Error },

    #[error("content of {} is {got} bytes, expected {expected}", shown(path))]
    SizeMismatch {
        path: RelPath,
        expected: u64,
        got: u64,
    },

    #[error(
        "content of {} is longer than the expected {expected} bytes",
        shown(path)
    )]
    TooLong { path: RelPath, expected: u64 },

    #[error(
        "content of {} has BLAKE3 hash {}, expected {}",
        shown(path),
        blake3::Hash::from_bytes(*got).to_hex(),
        blake3::Hash::from_bytes(*expected).to_hex()
    )]
    HashMismatch {
        path: RelPath,
        expected: Hash,
        got: Hash,
    },

    #[error("cannot make symbolic link {}: its target {reason}", shown(path))]
    BadSymlinkTarget { path: RelPath, reason: &'static str },

    #[error("cannot give {} owner {uid}:{gid}: -1 is not an id", shown(path))]
    InvalidOwner { path: RelPath, uid: u32, gid: u32 },

    #[error(
        "{} changed on this host since the index recorded it (a local write not yet recorded); it is recorded first, then the newer of the two wins",
        shown(path)
    )]
    ChangedLocally { path: RelPath },
}

impl ApplyError {
    /// Whether this is "no such file or directory" (a path or one of its
    /// parents is missing).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApplyError::Io { error, .. } if error.kind() == io::ErrorKind::NotFound)
    }
}

/// A batch that stopped early, or whose final barrier failed.
///
/// Actions `[0, durable)` were carried out and are durable: the caller
/// may record exactly those in its index. `index` is the action that
/// failed. Actions after it were not attempted, except that a staged
/// file's rename is deferred to the barrier (see
/// [`Applier::apply`](super::Applier::apply)), so when a deferred rename
/// fails, actions between it and the end of the batch may have been
/// carried out too, as after a crash: a later scan sees them.
#[derive(Debug, thiserror::Error)]
#[error("{}", batch_message(self))]
pub struct BatchError {
    /// The failed action; `None` if every action was carried out but the
    /// final barrier failed (then nothing is known to be durable).
    pub index: Option<usize>,
    /// How many leading actions are carried out and durable.
    pub durable: usize,
    /// Why `index` failed, or the barrier's error when `index` is `None`.
    pub error: ApplyError,
    /// The barrier after a failed action failed too; `durable` is then 0.
    pub sync_error: Option<Box<ApplyError>>,
}

fn batch_message(e: &BatchError) -> String {
    let mut s = match e.index {
        Some(i) => format!("action {i} of the batch failed: {}", e.error),
        None => format!("syncing the batch failed: {}", e.error),
    };
    if let Some(sync) = &e.sync_error {
        s.push_str(&format!(
            "; syncing the actions before it failed too: {sync}"
        ));
    }
    s
}

pub(super) fn io_error(path: &RelPath, op: &'static str, e: Errno) -> ApplyError {
    ApplyError::Io {
        path: path.clone(),
        op,
        error: e.into(),
    }
}

pub(super) fn unexpected(path: &RelPath, expected: &'static str, found: FileType) -> ApplyError {
    ApplyError::Unexpected {
        path: path.clone(),
        expected,
        found: kind_name(found),
    }
}

pub(super) fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "named pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown kind",
    }
}

pub(super) fn shown(path: &RelPath) -> String {
    if path.is_root() {
        "the mirror root".to_string()
    } else {
        path.to_string()
    }
}

/// The system's description of an I/O error, without Rust's
/// "(os error N)" suffix.
fn describe(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => error.to_string(),
    }
}
