//! Scanning trees: what is on disk under the mirrored tops, as observations.
//!
//! This module owns turning a directory tree into the input of
//! [`omirr_core::observe::observe`]: for every path found, its
//! [`Node`] (content and metadata), the [`StatKey`] that lets the next scan
//! skip re-reading it, and its ctime, which [`When::Scanned`] stamps the
//! change with. It also owns finding what went away (see [`Vanished`]).
//! It decides nothing about versions: the caller hands the found and
//! vanished paths to `observe`, answering its `on_disk` from
//! [`Found::node`] (`None` for a [`Vanished`] path) and its `when` from
//! [`Found::when`] / [`Vanished::when`].
//!
//! What it promises:
//!
//! - Symlinks are never followed: every entry is `lstat`ed and opened with
//!   `O_NOFOLLOW` relative to its parent directory's descriptor, and a
//!   directory is only descended into after checking (by device and
//!   inode) that the descriptor opened is the directory that was listed.
//!   A top reached through a symlink is not scanned
//!   ([`ScanIssue::SymlinkAncestor`]).
//! - Names are bytes. Nothing assumes UTF-8.
//! - A file is read only when it has to be. Its hash is reused, in this
//!   order, when: the baseline's [`StatKey`] for the path matches (inode,
//!   size, mtime and ctime; see [`StatKey::unchanged`]) and was not taken
//!   while racy ([`RACY_WINDOW_NS`]); another hard link to the same inode
//!   was already hashed in this scan; or the baseline knows its inode
//!   under another path that no longer holds it, with the same size and
//!   mtime (a rename made while the daemon was down; also when the rename
//!   replaced a path the baseline knew). Directories and symlinks renamed
//!   the same way are reported too ([`Found::renamed_from`]), so a
//!   directory rename re-reads nothing below it.
//! - A file's extended attributes are read only when they have to be:
//!   when the baseline's stat key vouches for its hash (the first case
//!   above), they are the baseline's ([`Known::xattrs`]), since changing
//!   one moves the ctime. A directory's are read through the descriptor
//!   the walk opens anyway, every time.
//! - Hashing streams through one page-aligned 1 MiB buffer per scan,
//!   whatever the file size (read(2), not mmap: a file truncated under a
//!   mapping would kill the daemon with SIGBUS). A file whose inode, size,
//!   mtime or ctime differ after the read from the `lstat` before it is
//!   looked at again (up to [`TRIES`] times), so a torn read is never
//!   reported.
//! - A path that cannot be read, or is a FIFO, socket or device, is
//!   reported in [`ScanReport::issues`]; the scan goes on. Nothing at or
//!   below such a path is reported as vanished, because the scan cannot
//!   tell; nor at or below an excluded path.
//!
//! What the scanner needs from its baseline (the persisted index, see
//! `omirr_sync::record`) is the [`ScanBaseline`] trait; [`MemBaseline`]
//! is an in-memory one for tests, benchmarks and as the model an index
//! implementation follows.
//!
//! Vanished paths are found here, not by the caller, because only the scan
//! knows which subtrees it could read and which directories' ctimes it saw
//! (a deletion's best witness, per the design).
//!
//! Limits: mount points below a top are crossed; the walk holds one
//! descriptor per directory level, so a tree deeper than the open-file
//! limit reports the deepest directories as issues.
//!
//! The scan's parts, by job (the walk is one `Walker`, whose methods are
//! spread over them):
//!
//! - `walk.rs`: the walk itself: the tops, each directory's entries,
//!   directories, symlinks and FIFOs;
//! - `hash.rs`: regular files: a hash reused when something vouches for
//!   it (and the extended attributes when the baseline's stat key does),
//!   else the file read (through the buffer of `buf.rs`) and checked
//!   unchanged;
//! - `renames.rs`: an inode the baseline knew under another name;
//! - `links.rs`: which name leads a hard-linked file's names;
//! - `vanished.rs`: what the baseline knew that the walk did not find;
//! - `stat.rs`: what a `stat` says: the stat key (the one builder of a
//!   [`StatKey`], [`key_of`]), the ctime and the metadata;
//! - `baseline.rs`: what the scan asks its baseline ([`ScanBaseline`]);
//!   `mem.rs`: an in-memory one ([`MemBaseline`]);
//! - `report.rs`: what it reports ([`ScanReport`]).

use std::io;
use std::path::Path;

#[cfg(doc)]
use omirr_core::observe::When;
#[cfg(doc)]
use omirr_core::tree::Node;
use omirr_core::RelPath;
#[cfg(doc)]
use omirr_core::StatKey;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

mod baseline;
mod buf;
mod hash;
mod links;
mod mem;
mod renames;
mod report;
mod stat;
#[cfg(test)]
mod tests;
mod vanished;
mod walk;

pub use baseline::{BaselineError, Known, ScanBaseline};
pub(crate) use buf::AlignedBuf;
pub use mem::MemBaseline;
pub use report::{
    Found, HardLink, ScanError, ScanIssue, ScanReport, ScanStats, Vanished, UNSUPPORTED_REMEMBERED,
};
use stat::ctime_of;
pub(crate) use stat::kind_name;
pub use stat::{fstat_key, key_of, lstat_key};
use walk::{Walker, DIR_FLAGS};

/// How many times an entry that changes under the scan is looked at again
/// before it is given up on (and left to the watcher).
pub const TRIES: u32 = 3;

/// Files whose ctime is this close to the moment they were scanned are
/// *racy*: a write in the same timestamp tick could leave size, mtime and
/// ctime unchanged, so their [`StatKey`] must not vouch for their content
/// later. Two seconds covers filesystems with coarse (up to 2 s)
/// timestamps.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// Scans `tops` (paths relative to `root`) and reports what is there.
///
/// A top that does not exist is simply absent (and what the baseline knew
/// under it is vanished); the root itself must exist. A path for which
/// `exclude` returns true is not reported, not descended into, and never
/// vanished. Overlapping tops are scanned once.
pub fn scan(
    root: &Path,
    tops: &[RelPath],
    exclude: &dyn Fn(&RelPath) -> bool,
    baseline: &dyn ScanBaseline,
) -> Result<ScanReport, ScanError> {
    let root_err = |source: io::Error| ScanError::Root {
        root: root.to_path_buf(),
        source,
    };
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| root_err(e.into()))?;
    let root_stat = rustix::fs::fstat(&root_fd).map_err(|e| root_err(e.into()))?;

    let tops = normalise_tops(tops);
    let mut walker = Walker::new(root, &tops, exclude, baseline);
    walker
        .dir_ctimes
        .insert(RelPath::root(), ctime_of(&root_stat));

    for top in &tops {
        walker.top(&root_fd, top)?;
    }
    walker.vanished()?;
    walker.assign_links()?;
    Ok(walker.report)
}

/// The directories directly below `dir` (relative to `root`), in byte
/// order, found without following a symlink on the way or among the
/// entries (a symlink to a directory is not one). `None` if `dir` cannot
/// be opened as a directory or listed: the caller then scans it whole, and
/// the scan reports why. A listing, not a promise: the caller's scan looks
/// at each entry again.
pub fn child_dirs(root: &Path, dir: &RelPath) -> Option<Vec<RelPath>> {
    let mut fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    for comp in dir.components() {
        fd = rustix::fs::openat(&fd, comp, DIR_FLAGS, Mode::empty()).ok()?;
    }
    let mut out = Vec::new();
    for entry in Dir::read_from(&fd).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match entry.file_type() {
            // Filesystems without d_type: ask.
            FileType::Unknown => match rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => continue,
            },
            known => known,
        };
        if kind == FileType::Directory {
            out.push(dir.join(name).ok()?);
        }
    }
    out.sort_unstable();
    Some(out)
}

/// Sorted, deduplicated, and without tops below other tops.
pub fn normalise_tops(tops: &[RelPath]) -> Vec<RelPath> {
    let mut sorted: Vec<RelPath> = tops.to_vec();
    sorted.sort();
    sorted.dedup();
    // Sorted, a top's ancestors come before it: keep a top unless one of
    // its ancestors was kept.
    let kept: std::collections::HashSet<RelPath> = sorted.iter().cloned().collect();
    sorted.retain(|t| !t.ancestors().any(|a| kept.contains(&a)));
    sorted
}
