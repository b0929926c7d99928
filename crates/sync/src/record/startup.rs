//! The start-up scan ([`scan_into_index`]): every mirrored tree walked
//! with the index as its baseline, in pieces, each recorded in its own
//! transaction (see the module doc of [`crate::record`] for why and how).

use omirr_core::{Hlc, HostId, RelPath};
use omirr_fs::owners::Rules;
use omirr_fs::scan::{self, ScanIssue, ScanStats};
use omirr_index::{Batch, Index, IndexError};
use std::path::Path;

use super::changes::{record_scan, LocalScanError, Stamp};
use super::piece::{Departed, Piece, Upper, SPLIT_DEPTH};
#[cfg(doc)]
use super::plan_restore;

/// What a start-up scan did, summed over its pieces (what each piece found
/// is dropped once it is recorded).
#[derive(Debug, Default)]
pub struct StartupScan {
    /// What the pieces walked and hashed, added up.
    pub stats: ScanStats,
    /// Paths found on disk.
    pub entries: u64,
    /// Known paths found gone.
    pub vanished: u64,
    /// Paths found renamed while nobody watched ([`scan::Found::renamed_from`]).
    pub renamed: u64,
    /// Paths the scan could not establish.
    pub issues: Vec<ScanIssue>,
    /// How many local changes were recorded.
    pub changes: usize,
    /// The paths of the local changes found where this host only receives:
    /// not recorded, to be undone ([`plan_restore`]).
    pub undone: Vec<RelPath>,
    /// How many pieces the scan ran in.
    pub pieces: usize,
}

/// Pieces are committed together until they found this many paths: one
/// transaction (and its fsyncs) per small directory would cost more than
/// the scan on a disk. The batch of a group stays small (a few hundred
/// bytes per change).
const GROUP_ENTRIES: usize = 20_000;

/// The start-up scan: walks `tops` under `root` and records every local
/// change in `index`, piece by piece (see the module doc). `exclude` says
/// which paths are not mirrored, `rules` which owners, groups and modes
/// are (see [`omirr_fs::owners::canonical`]); `hlc` is this host's clock,
/// advanced past everything the index has seen.
#[allow(clippy::too_many_arguments)]
pub fn scan_into_index(
    index: &Index,
    hlc: &mut Hlc,
    host: &HostId,
    root: &Path,
    tops: &[RelPath],
    exclude: &dyn Fn(&RelPath) -> bool,
    rules: &dyn Rules,
) -> Result<StartupScan, LocalScanError> {
    let hooks = PieceHooks::default();
    scan_into_index_with(index, hlc, host, root, tops, exclude, rules, hooks)
}

/// How [`scan_into_index_with`] deviates from [`scan_into_index`]: for
/// tests of the piece boundaries.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct PieceHooks {
    /// Stop before the piece after this many, as if killed there (what
    /// was not committed yet is lost).
    pub stop_after: usize,
    /// Commit once the pieces since the last commit found this many paths.
    pub group_entries: usize,
}

impl Default for PieceHooks {
    fn default() -> PieceHooks {
        PieceHooks {
            stop_after: usize::MAX,
            group_entries: GROUP_ENTRIES,
        }
    }
}

/// [`scan_into_index`] with test hooks.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn scan_into_index_with(
    index: &Index,
    hlc: &mut Hlc,
    host: &HostId,
    root: &Path,
    tops: &[RelPath],
    exclude: &dyn Fn(&RelPath) -> bool,
    rules: &dyn Rules,
    hooks: PieceHooks,
) -> Result<StartupScan, LocalScanError> {
    hlc.observe(index.hlc_last()?);
    // Changes found by any piece were made after everything seen before the
    // scan began: one floor for all of them.
    let floor = hlc.last();
    let mut out = StartupScan::default();
    let mut departed = Departed::default();
    let upper = Upper::load(index, tops)?;
    let upper = upper.as_ref();
    let mut batch = Batch::new();
    let mut pending = 0;
    // Depth first, in path order, so that a directory's piece runs before
    // those below it.
    let mut todo: Vec<(RelPath, usize)> = scan::normalise_tops(tops)
        .into_iter()
        .rev()
        .map(|t| (t, 0))
        .collect();
    while let Some((dir, depth)) = todo.pop() {
        if out.pieces >= hooks.stop_after {
            // As a kill here would: what is not committed is not recorded.
            return Ok(out);
        }
        let mut children = if depth < SPLIT_DEPTH && !exclude(&dir) {
            scan::child_dirs(root, &dir).unwrap_or_default()
        } else {
            Vec::new()
        };
        // An excluded directory is left alone by its parent's piece; no
        // piece of its own is needed for that.
        children.retain(|c| !exclude(c));
        let piece = Piece {
            floor,
            cut: &children,
            departed: &departed,
            // A piece without subdirectories of its own is scanned whole
            // (and its rows read from the index); one split around its
            // subdirectories has its rows in `upper`.
            upper: upper.filter(|_| !children.is_empty()),
        };
        let r = record_scan(
            index,
            hlc,
            host,
            root,
            tops,
            std::slice::from_ref(&dir),
            exclude,
            rules,
            Stamp::Startup,
            Some(piece),
            &mut batch,
        )?;
        for (path, k) in r.departing {
            departed.remember(&path, k);
        }
        let report = r.report;
        departed.remember_links(&report.hard_links);
        out.pieces += 1;
        out.changes += r.changes;
        out.undone.extend(r.undone.into_iter().map(|c| c.path));
        out.entries += report.found.len() as u64;
        out.vanished += report.vanished.len() as u64;
        out.renamed += report.renames().count() as u64;
        let (s, t) = (&mut out.stats, report.stats);
        s.files += t.files;
        s.dirs += t.dirs;
        s.symlinks += t.symlinks;
        s.hashed_files += t.hashed_files;
        s.hashed_bytes += t.hashed_bytes;
        s.xattr_reads += t.xattr_reads;
        out.issues.extend(report.issues);
        pending += report.found.len() + report.vanished.len();
        if pending >= hooks.group_entries {
            commit_group(index, hlc, &mut batch)?;
            pending = 0;
        }
        todo.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
    }
    commit_group(index, hlc, &mut batch)?;
    Ok(out)
}

/// Commits what the pieces since the last commit recorded, and empties
/// `batch`. Nothing to record (a restart with nothing changed) writes
/// nothing: the clock moved only by what was read from the index.
fn commit_group(index: &Index, hlc: &Hlc, batch: &mut Batch) -> Result<(), IndexError> {
    if !batch.is_empty() {
        batch.observe_hlc(hlc.last());
        index.commit(batch)?;
    }
    *batch = Batch::new();
    Ok(())
}
