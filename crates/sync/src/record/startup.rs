//! The start-up scan ([`scan_into_index`]): every mirrored tree walked
//! with the index as its baseline, in pieces, each recorded in its own
//! transaction (see the module doc of [`crate::record`] for why and how).

use omirr_core::{Hlc, HostId, IndexView, RelPath, StatKey, Timestamp};
use omirr_fs::owners::Rules;
use omirr_fs::scan::{self, Known, ScanIssue, ScanStats};
use omirr_index::{Batch, Index, IndexError};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::changes::{record_scan, LocalScanError, Stamp};
#[cfg(doc)]
use super::plan_restore;

/// What a start-up scan did, summed over its pieces (what each piece found
/// is dropped once it is recorded).
#[derive(Debug, Default)]
pub struct StartupScan {
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

/// Directories at most this many levels below a top are scanned (and
/// recorded) without their subdirectories; each of their subdirectories is
/// a piece of its own, whole if deeper. Two levels split a tree of the
/// shape `top/project/part/...` into one piece per `part`.
pub const SPLIT_DEPTH: usize = 2;

/// At most this many paths found vanished are remembered for the later
/// pieces of a scan (to recognise a rename out of an earlier piece); past
/// it a renamed file is read again, which is slower but no less right.
const DEPARTED_MAX: usize = 100_000;

/// Pieces are committed together until they found this many paths: one
/// transaction (and its fsyncs) per small directory would cost more than
/// the scan on a disk. The batch of a group stays small (a few hundred
/// bytes per change).
const GROUP_ENTRIES: usize = 20_000;

/// At most this many index rows for the upper levels of the tops (see
/// [`Upper`]) are held for the whole scan.
const UPPER_MAX: usize = 100_000;

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

/// One piece of a start-up scan, beyond what a live scan has.
pub(super) struct Piece<'p> {
    pub(super) floor: Timestamp,
    /// Directories below the piece's top that are pieces of their own:
    /// neither scanned nor judged here.
    pub(super) cut: &'p [RelPath],
    pub(super) departed: &'p Departed,
    pub(super) upper: Option<&'p Upper>,
}

/// The index's rows for the paths at most [`SPLIT_DEPTH`] levels below
/// the tops: all that the pieces split around their subdirectories need,
/// read in one pass rather than a pass over the whole subtree per such
/// piece.
#[derive(Default)]
pub(super) struct Upper {
    pub(super) stats: BTreeMap<RelPath, StatKey>,
    pub(super) entries: BTreeMap<RelPath, omirr_core::Entry>,
}

impl Upper {
    /// `None` if the tops hold more than [`UPPER_MAX`] such rows (a tree
    /// of millions of entries but two levels deep): the pieces then read
    /// their own rows, rather than all of them being held for the scan.
    pub(super) fn load(index: &Index, tops: &[RelPath]) -> Result<Option<Upper>, IndexError> {
        let mut upper = Upper::default();
        // One read transaction, one pass over the rows below each top,
        // keeping only the shallow ones.
        let view = index.reader()?;
        for top in scan::normalise_tops(tops) {
            let shallow = |p: &RelPath| depth_below(p, &top) <= SPLIT_DEPTH;
            upper
                .entries
                .extend(view.entry(&top)?.map(|e| (top.clone(), e)));
            upper
                .stats
                .extend(view.stat(&top)?.map(|k| (top.clone(), k)));
            view.for_each_below(&top, |p, e, stat| {
                if shallow(&p) {
                    if let Some(k) = stat {
                        upper.stats.insert(p.clone(), k);
                    }
                    upper.entries.insert(p, e);
                }
            })?;
            upper.stats.extend(
                view.loose_stats_below(&top)?
                    .into_iter()
                    .filter(|(p, _)| shallow(p)),
            );
            if upper.entries.len() > UPPER_MAX {
                return Ok(None);
            }
        }
        Ok(Some(upper))
    }
}

/// How many levels `path` lies below `top` (0 for the top itself); only
/// meaningful for a path at or below it.
fn depth_below(path: &RelPath, top: &RelPath) -> usize {
    path.components().count() - top.components().count()
}

/// What earlier pieces of a scan knew of the paths they found vanished:
/// the index no longer does once they are recorded, and a later piece may
/// find the same inode under its new name.
#[derive(Default)]
pub(super) struct Departed {
    pub(super) known: HashMap<RelPath, Known>,
    pub(super) inodes: HashMap<(u64, u64), RelPath>,
    /// The names of hard-linked files earlier pieces found, by inode,
    /// with the name each was given to link to: a later piece's names of
    /// the same inode follow the same leader (the index has not recorded
    /// them yet).
    pub(super) linked: HashMap<(u64, u64), Vec<scan::HardLink>>,
}

impl Departed {
    fn remember_links(&mut self, found: &[scan::HardLink]) {
        for h in found {
            if self.linked.len() >= DEPARTED_MAX {
                return;
            }
            self.linked
                .entry((h.dev, h.ino))
                .or_default()
                .push(h.clone());
        }
    }

    fn remember(&mut self, path: &RelPath, known: Known) {
        if self.known.len() >= DEPARTED_MAX {
            return;
        }
        self.inodes
            .insert((known.key.dev, known.key.ino), path.clone());
        self.known.insert(path.clone(), known);
    }
}
