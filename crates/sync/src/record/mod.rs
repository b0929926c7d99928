//! Recording: where the index meets this host's disk, in both directions.
//!
//! - [`scan_into_index`]: the disk into the index (the start-up scan).
//! - [`apply_remote`]: a peer's changes onto the disk, then into the index
//!   ([`apply_resolved`] when the caller has resolved them already). After
//!   a failed action only the changes no undone action touches are
//!   recorded ([`omirr_core::resolve::held_back`]), and the error says
//!   which action failed and whether the host as a whole is at fault.
//! - [`plan_restore`], [`apply_restore`]: where this host only receives
//!   (`receiveonly`), a local change is not recorded (the scans hold it
//!   back, [`omirr_fs::owners::Rules::undoes_local_changes`]) but undone:
//!   the set's version, as the index holds it, put back on disk.
//!
//! [`scan_into_index`] walks the mirrored trees with the index as the
//! scanner's baseline (its stat cache spares unchanged files a re-read, its
//! inode cache recognises renames made while the daemon was down), turns
//! what differs into versioned local changes with
//! [`omirr_core::observe`], and records them, with the new stat keys.
//! It works in pieces, so that its memory is bounded by the largest piece
//! rather than the tree: each directory up to [`SPLIT_DEPTH`] levels below
//! a top is one piece without its subdirectories, each subdirectory below
//! those one piece with everything under it. A piece preloads only its own
//! baseline and is recorded in its own index transaction: a kill at any
//! moment leaves every piece either recorded or not, and the next scan
//! finds whatever is left. A rename made while down from one piece into
//! another is still recognised by its inode: in the order the pieces run,
//! either the new path comes first (the index still knows the old one), or
//! the old path was found vanished by an earlier piece of the same scan,
//! which remembers what it knew of the inode (`Departed`).
//!
//! By job:
//!
//! - `startup.rs`: the start-up scan; `piece.rs`: what a piece of it
//!   carries;
//! - `changes.rs`: one look at the disk turned into recorded changes,
//!   which the watcher's batches, the pieces and the undo share;
//! - `baseline.rs`: the index as the scanner's baseline;
//! - `remote.rs`: a peer's changes; `restore.rs`: the receive-only undo.

use omirr_core::{RelPath, StatKey};
use omirr_fs::scan;
use std::path::Path;

mod baseline;
mod changes;
mod piece;
mod remote;
mod restore;
mod startup;

pub use changes::{record_live, LocalScan, LocalScanError, Stamp};
pub use piece::SPLIT_DEPTH;
pub use remote::{apply_remote, apply_resolved, Applied, ApplyRemoteError};
pub use restore::{apply_restore, plan_restore, Restore};
pub use startup::{scan_into_index, StartupScan};
#[doc(hidden)]
pub use startup::{scan_into_index_with, PieceHooks};

/// The stat key of what is at `path` under `root`, without following a
/// symlink (the applier has just put it there, inside the root).
fn stat_key_at(root: &Path, path: &RelPath) -> Option<StatKey> {
    use std::os::unix::ffi::OsStrExt;
    let full = root.join(std::ffi::OsStr::from_bytes(path.as_bytes()));
    scan::lstat_key(&full).ok()
}
