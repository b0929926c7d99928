//! Carrying the resolver's [`Action`]s out on a real disk, inside one mirror
//! root, without ever following a symlink out of it.
//!
//! This module owns the only code that changes a mirrored tree on behalf of
//! a peer, so it owns the rules that keep a peer from reaching outside it
//! and keep readers from seeing half a file:
//!
//! - **Path safety.** Every path is a checked [`RelPath`] (see
//!   [`wire_path`] for bytes from the wire). It is resolved from a
//!   descriptor of the root by opening each parent component with
//!   `openat(O_NOFOLLOW | O_DIRECTORY)`; a symlink anywhere among the
//!   parents is refused ([`ApplyError::SymlinkInPath`]). The final
//!   operation is made relative to the parent's descriptor with the `*at`
//!   calls, never following a symlink in the last component either: a
//!   symlink there is replaced (rename over it), never written through,
//!   and never `chmod`ed (Linux cannot chmod a link; chmod would follow).
//! - **Atomic replacement.** Files and symlinks are made under a
//!   temporary name in the target's directory (`.omirr.NAME.TAG.tmp`, see
//!   [`is_temp_name`]) and renamed over the target. File content is
//!   streamed through a bounded buffer and its BLAKE3 hash and size are
//!   checked before the file can become visible; a mismatch deletes the
//!   temporary file.
//! - **Durability per batch** (see [`Applier::apply`]): one barrier for
//!   all of a batch's new file contents before any of them is renamed
//!   into place, one more for the directories after the renames. A small
//!   batch always flushes only its own files and directories.
//! - **Directory times kept.** The directories a batch writes in get
//!   their mtimes back afterwards (the batch's own or those they had).
//!
//! What it does not do: decide what to do (that is `omirr-core`), talk to
//! peers (content arrives through a [`ContentSource`]), or record anything
//! in the index (the caller does that once [`Applier::apply`] says the
//! actions are durable).
//!
//! Where things are, by job:
//!
//! - [`Applier`] (`applier.rs`): opening a root and running a batch;
//!   `batch.rs`, the state of one batch and the order it keeps.
//! - Each action: `stage.rs` (`WriteFile`: content into a checked
//!   temporary file, renamed at the barrier), `make.rs` (directories,
//!   symlinks, FIFOs, hard links), `rename.rs`, `remove.rs`, `meta.rs`
//!   (owner, mode, extended attributes, mtime; `SetMeta`), `keep.rs`
//!   (`SaveOld`'s old versions and conflict copies).
//! - The rules around them: `open.rs` (path safety), `temp.rs`
//!   (temporary names), `barrier.rs` (durability), `dir_times.rs`
//!   (directory times kept), `tops.rs` (the host's directories above the
//!   mirrored trees), `cleanup.rs` (stale temporary files at startup),
//!   `error.rs` (what can go wrong, as messages name it).

mod applier;
mod barrier;
mod batch;
mod cleanup;
mod dir_times;
mod error;
mod keep;
mod make;
mod meta;
mod open;
mod remove;
mod rename;
mod stage;
mod temp;
#[cfg(test)]
mod testing;
mod tops;

pub use barrier::Barrier;
pub use cleanup::Cleanup;
pub use error::{ApplyError, BatchError};
pub use temp::is_temp_name;

use std::io::Read;
use std::path::PathBuf;

use omirr_core::{Action, Hash, PathError, RelPath, Source};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;

use crate::owners::Rules;
use stage::Staged;

// The two types every step works on are defined here, and each module
// below adds the methods of one job to them (`applier.rs`: opening and
// `apply`; `batch.rs`: dispatching actions; `stage.rs`, `meta.rs`, ...):
// the modules share these types through their parent, not by naming
// each other.

/// Carries out actions inside one mirror root.
pub struct Applier {
    root_path: PathBuf,
    root: OwnedFd,
    options: ApplyOptions,
    /// The mirrored trees (see [`Applier::with_tops`]); `None`: all of
    /// the root.
    tops: Option<Vec<RelPath>>,
    /// How owners, groups, modes and old versions are kept, per path.
    rules: Arc<dyn Rules>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("root", &self.root_path)
            .field("options", &self.options)
            .field("tops", &self.tops)
            .finish_non_exhaustive()
    }
}

/// The state of one [`Applier::apply`] call.
struct Batch<'a> {
    ap: &'a Applier,
    /// See [`Applier::apply_guarded`].
    guard: Option<&'a dyn LocalGuard>,
    /// Paths this batch changed in place (a hard link for `SaveOld`, a
    /// `chmod`): their stat no longer matches the index, by our doing.
    changed_here: BTreeSet<RelPath>,
    staged: Vec<Staged>,
    /// The paths of `staged`, for the checks of
    /// [`Batch::must_commit_before`] without a scan per action.
    staged_paths: BTreeSet<RelPath>,
    /// Parent directories of staged files, opened once per commit
    /// segment. Safe to reuse: an action that could rename or replace one
    /// of them touches an ancestor of a staged path and so commits (and
    /// clears) them first.
    dirs: HashMap<RelPath, Rc<OwnedFd>>,
    /// Directories whose entries changed: barrier 2 flushes them.
    touched: BTreeSet<RelPath>,
    /// Non-directories whose metadata changed in place (fsync mode).
    meta_changed: BTreeSet<RelPath>,
    /// Directory mtimes the batch set, with the action that set them.
    dir_times: BTreeMap<RelPath, (usize, i64)>,
    /// The mtimes, before the batch, of the directories it writes in; put
    /// back at the end unless the batch set them itself. Otherwise a
    /// peer's change would leave a new mtime on this host's directory,
    /// which its next scan would record as a change of its own.
    kept_times: BTreeMap<RelPath, i64>,
    /// This batch's barrier: the applier's, or per-file fsyncs for a
    /// small batch.
    barrier: Barrier,
    buf: Option<crate::scan::AlignedBuf>,
}

/// Why a source could not produce content. The network side has its own
/// error types; they only need to be displayable here.
pub type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where `WriteFile` content with [`Source::Fetch`] comes from: the peer
/// connection in the daemon, an in-memory map in tests.
///
/// The returned reader is read to its end through a bounded buffer; the
/// applier itself checks the size and hash, so a source need not.
pub trait ContentSource {
    /// A file that already holds exactly this content (checked by the
    /// source), which the applier may move into the tree as its
    /// temporary file instead of copying it. `None` (the default): the
    /// content is read through [`ContentSource::open`]. If the move fails
    /// (another filesystem), the file must still be there for `open`.
    fn take_file(&mut self, _hash: &Hash, _size: u64) -> Option<PathBuf> {
        None
    }

    /// A reader for the content of `path` that has `hash` and `size`.
    fn open(
        &mut self,
        path: &RelPath,
        hash: &Hash,
        size: u64,
    ) -> Result<Box<dyn Read + '_>, SourceError>;
}

/// The files `actions` fetch from their [`ContentSource`], in order.
pub fn wanted(actions: &[Action]) -> Vec<Wanted> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::WriteFile {
                path,
                size,
                hash,
                source: Source::Fetch,
                ..
            } if *size > 0 => Some(Wanted {
                path: path.clone(),
                hash: *hash,
                size: *size,
            }),
            _ => None,
        })
        .collect()
}

/// A file a batch wants from its [`ContentSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Where the file is to be written, relative to the mirror root.
    pub path: RelPath,
    /// The BLAKE3 hash of its content.
    pub hash: Hash,
    /// Its size in bytes (never 0: empty files need no content).
    pub size: u64,
}

/// Settings of an [`Applier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Give files the owner and group of their [`Meta`](omirr_core::Meta). Only root can;
    /// the default is whether we run as root. When false, owners are left
    /// as the kernel makes them.
    pub set_owner: bool,
    /// How barriers are made. Batches of up to 16 actions use
    /// [`Barrier::Fsync`] whatever this says.
    pub barrier: Barrier,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            set_owner: nix::unistd::geteuid().is_root(),
            barrier: Barrier::Syncfs,
        }
    }
}

/// What the index knows of the files an apply is about to replace or
/// remove: a file whose `lstat` no longer matches what was recorded was
/// written locally since, and the watcher has not recorded that yet.
/// Replacing it would lose that write (see [`ApplyError::ChangedLocally`]).
pub trait LocalGuard {
    /// Whether the non-directory at `path`, with `now` from `lstat`, is
    /// still what the index recorded there (`true` when the index has no
    /// stat for it to compare).
    fn unchanged(&self, path: &RelPath, now: &omirr_core::StatKey) -> bool;
}

/// Checks a path received from a peer: relative, no `..` or `.`
/// component, no empty component, no NUL. The empty path is the mirror
/// root.
pub fn wire_path(bytes: &[u8]) -> Result<RelPath, PathError> {
    RelPath::new(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;

    #[test]
    fn wire_paths_are_checked() {
        assert!(matches!(
            wire_path(b"/etc/passwd"),
            Err(PathError::Absolute(_))
        ));
        assert!(matches!(wire_path(b".."), Err(PathError::DotDot(_))));
        assert!(matches!(wire_path(b"a/../../b"), Err(PathError::DotDot(_))));
        assert!(matches!(wire_path(b"a/\0b"), Err(PathError::Nul(_))));
        assert!(matches!(
            wire_path(b"a//b"),
            Err(PathError::EmptyComponent(_))
        ));
        assert_eq!(wire_path(b"a/b").expect("fine"), p("a/b"));
        assert!(wire_path(b"a/\xff\nname").is_ok(), "names are bytes");
    }
}
