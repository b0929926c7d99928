//! What can go wrong while applying: [`ApplyError`] for one action,
//! [`BatchError`] for a batch, and the helpers that build them so that
//! every message names the path (relative to the mirror root) and the
//! system's reason the same way.

use std::io;
use std::path::PathBuf;

use super::SourceError;
use crate::scan::kind_name;
use omirr_core::{Hash, RelPath};
use omirr_open::secure::describe;
use rustix::fs::FileType;
use rustix::io::Errno;

/// Why an action (or a barrier) failed. Paths are relative to the mirror
/// root; the root itself is shown as "the mirror root".
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// [`Applier::open`](super::Applier::open) could not open the mirror
    /// root as a directory.
    #[error("cannot open mirror root {}: {}", root.display(), describe(error))]
    OpenRoot {
        /// The root as given, absolute or relative to the working directory.
        root: PathBuf,
        /// The system's reason.
        error: io::Error,
    },

    /// A system call on `path` failed.
    ///
    /// The reason is part of the message; `error` is deliberately not the
    /// `source()`, so error chains do not print it twice.
    #[error("cannot {op} {}: {}", shown(path), describe(error))]
    Io {
        /// The path worked on (for a parent that could not be opened, that
        /// parent).
        path: RelPath,
        /// What was being done, as a verb phrase that reads after "cannot",
        /// e.g. "rename" or "write the temporary file for".
        op: &'static str,
        /// The system's reason.
        error: io::Error,
    },

    /// A parent of `path` on disk is a symlink; omirr does not follow
    /// it (see [`crate::apply`], path safety).
    #[error(
        "refusing {}: {} is a symbolic link, and omirr never follows one inside a mirror root",
        shown(path),
        shown(component)
    )]
    SymlinkInPath {
        /// The path the action was for.
        path: RelPath,
        /// The ancestor of `path` that is a symlink, as a path from the root.
        component: RelPath,
    },

    /// A parent of `path` on disk is neither a directory nor a symlink.
    #[error(
        "cannot reach {}: {} is not a directory",
        shown(path),
        shown(component)
    )]
    NotADirectory {
        /// The path the action was for.
        path: RelPath,
        /// The ancestor of `path` that is not a directory, as a path from
        /// the root.
        component: RelPath,
    },

    /// The action names the mirror root (the empty path) where it needs
    /// an entry inside a directory, e.g. writing a file or removing.
    #[error("cannot {op} the mirror root itself")]
    RootPath {
        /// What was being done, as a verb phrase that reads after "cannot".
        op: &'static str,
    },

    /// A directory to be removed, or replaced by a file, still holds
    /// entries: the resolver only removes what the index knows of, so
    /// these are unknown and are not deleted.
    #[error(
        "{} is a directory that is not empty; refusing to delete what the index does not know about",
        shown(path)
    )]
    DirNotEmpty {
        /// The directory.
        path: RelPath,
    },

    /// What is on disk at `path` is of another kind than the action
    /// expects (e.g. a directory where a file is to be removed).
    #[error("{} is a {found} on disk where a {expected} was expected", shown(path))]
    Unexpected {
        /// The path whose kind is wrong.
        path: RelPath,
        /// The kind the action expected, as a word ("file", "directory").
        expected: &'static str,
        /// The kind found, as a word (see `scan::kind_name`).
        found: &'static str,
    },

    /// A `Rename`'s target already exists and the index does not know of
    /// it, so it is not overwritten.
    #[error(
        "cannot rename to {}: something the index does not know about is already there",
        shown(path)
    )]
    TargetExists {
        /// The rename's target.
        path: RelPath,
    },

    /// The [`ContentSource`](super::ContentSource) could not open the
    /// content of a `WriteFile`.
    #[error("cannot get the content of {}: {error}", shown(path))]
    Source {
        /// The file being written.
        path: RelPath,
        /// The source's reason.
        error: SourceError,
    },

    /// Reading a file's content from its source (or the local file it is
    /// copied from) failed, or the size of a file the source handed over
    /// whole could not be read.
    #[error("reading the content of {} failed: {}", shown(path), describe(error))]
    ContentRead {
        /// The file being written.
        path: RelPath,
        /// The reader's reason.
        error: io::Error,
    },

    /// The content ended before the size the action gives (or a file the
    /// source handed over whole has another size).
    #[error("content of {} is {got} bytes, expected {expected}", shown(path))]
    SizeMismatch {
        /// The file being written.
        path: RelPath,
        /// The size the action gives, in bytes.
        expected: u64,
        /// The size the content had, in bytes.
        got: u64,
    },

    /// The content grew past the size the action gives (checked as it
    /// arrives, so a source cannot fill the disk).
    #[error(
        "content of {} is longer than the expected {expected} bytes",
        shown(path)
    )]
    TooLong {
        /// The file being written.
        path: RelPath,
        /// The size the action gives, in bytes.
        expected: u64,
    },

    /// The content has the right size but not the hash the action gives;
    /// the temporary file is deleted.
    #[error(
        "content of {} has BLAKE3 hash {}, expected {}",
        shown(path),
        blake3::Hash::from_bytes(*got).to_hex(),
        blake3::Hash::from_bytes(*expected).to_hex()
    )]
    HashMismatch {
        /// The file being written.
        path: RelPath,
        /// The BLAKE3 hash the action gives.
        expected: Hash,
        /// The BLAKE3 hash of the content received.
        got: Hash,
    },

    /// A symlink's target cannot be made: it is empty or holds a NUL
    /// byte.
    #[error("cannot make symbolic link {}: its target {reason}", shown(path))]
    BadSymlinkTarget {
        /// The symlink to be made.
        path: RelPath,
        /// What is wrong, as a phrase that reads after "its target"
        /// ("is empty", "holds a NUL byte").
        reason: &'static str,
    },

    /// The owner or group to set came out as `u32::MAX` (-1), which
    /// `chown` takes as "leave unchanged"; from a peer it is garbage.
    #[error("cannot give {} owner {uid}:{gid}: -1 is not an id", shown(path))]
    InvalidOwner {
        /// The path whose owner was to be set.
        path: RelPath,
        /// The owner's uid in the action's metadata.
        uid: u32,
        /// The group's gid in the action's metadata.
        gid: u32,
    },

    /// [`Applier::apply_guarded`](super::Applier::apply_guarded): the
    /// file to be replaced or removed no longer matches the index's
    /// `lstat` record, so it was written locally and not yet recorded.
    #[error(
        "{} changed on this host since the index recorded it (a local write not yet recorded); it is recorded first, then the newer of the two wins",
        shown(path)
    )]
    ChangedLocally {
        /// The file that changed locally.
        path: RelPath,
    },
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

pub(super) fn shown(path: &RelPath) -> String {
    if path.is_root() {
        "the mirror root".to_string()
    } else {
        path.to_string()
    }
}
