//! Where the index meets this host's disk, in both directions.
//!
//! - [`scan_into_index`]: the disk into the index (the start-up scan).
//! - [`apply_remote`]: a peer's changes onto the disk, then into the index
//!   ([`apply_resolved`] when the caller has resolved them already). After
//!   a failed action only the changes no undone action touches are
//!   recorded ([`omirr_core::resolve::held_back`]), and the error says
//!   which action failed and whether the host as a whole is at fault.
//! - [`plan_restore`], [`apply_restore`]: where this host only receives
//!   (`receiveonly`), a local change is not recorded (the scans hold it
//!   back, [`crate::owners::Rules::undoes_local_changes`]) but undone:
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

use crate::apply::{Applier, ContentSource};
use crate::owners::Rules;
use crate::scan::{
    self, BaselineError, Known, ScanBaseline, ScanError, ScanIssue, ScanReport, ScanStats, StatKey,
};
use omirr_core::observe::{self, observe, When};
use omirr_core::resolve::{resolve_with, Action};
use omirr_core::tree::Node;
use omirr_core::{Change, Content, Hlc, HostId, IndexView, RelPath, Timestamp};
use omirr_index::{Batch, Index, IndexError, StatUpdate};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LocalScanError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyRemoteError {
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Part of the batch was applied and recorded; the rest was not.
    #[error("{error}")]
    Apply {
        #[source]
        error: Box<crate::apply::BatchError>,
        /// How many of the accepted changes were recorded.
        recorded: usize,
        /// The action that failed, if one did (not the final barrier).
        action: Option<Box<Action>>,
        /// The conflicts of the changes that were recorded (their
        /// conflict copies are made).
        conflicts: Vec<omirr_core::resolve::Conflict>,
    },
}

impl ApplyRemoteError {
    /// Whether the failure lies with this host as a whole (a full or
    /// read-only disk, an I/O error, the index, a barrier) rather than
    /// with the one change being applied: then every later change would
    /// fail the same way, and setting them aside one by one would only
    /// churn.
    pub fn is_host_fault(&self) -> bool {
        let e = match self {
            ApplyRemoteError::Index(_) => return true,
            ApplyRemoteError::Apply { action: None, .. } => return true,
            ApplyRemoteError::Apply { error, .. } => error,
        };
        if e.sync_error.is_some() {
            return true;
        }
        let io = match &e.error {
            crate::apply::ApplyError::Io { error, .. }
            | crate::apply::ApplyError::ContentRead { error, .. }
            | crate::apply::ApplyError::OpenRoot { error, .. } => error,
            _ => return false,
        };
        matches!(
            io.raw_os_error(),
            Some(nix::libc::ENOSPC)
                | Some(nix::libc::EDQUOT)
                | Some(nix::libc::EROFS)
                | Some(nix::libc::EIO)
                | Some(nix::libc::ENOMEM)
                | Some(nix::libc::EMFILE)
                | Some(nix::libc::ENFILE)
        )
    }
}

/// What applying a peer's batch did.
#[derive(Debug)]
pub struct Applied {
    /// The accepted changes, recorded in the index.
    pub recorded: usize,
    /// The actions carried out on disk.
    pub actions: Vec<Action>,
    /// The conflicts the batch met (see [`omirr_core::conflict`]).
    pub conflicts: Vec<omirr_core::resolve::Conflict>,
}

/// Resolves a peer's `batch` against the index, carries the actions out
/// with `applier`, and records the accepted changes with the stat keys of
/// what now lies on disk, in one transaction, so that the next scan (and
/// the watcher) sees these writes as already known: they are not sent
/// back. If the applier fails part-way, only the changes whose paths the
/// completed actions fully covered are recorded; the rest stays unknown to
/// the index and is asked for again.
pub fn apply_remote(
    index: &Index,
    applier: &Applier,
    hlc: &mut Hlc,
    batch: &[Change],
    rules: &omirr_core::resolve::Rules<'_>,
    source: &mut dyn ContentSource,
) -> Result<Applied, ApplyRemoteError> {
    let res = resolve_with(index, batch, rules, &mut |d| tracing::trace!("decided {d}"))?;
    apply_resolved(index, applier, hlc, batch, res, source)
}

/// [`apply_remote`] with `batch` already resolved against `index` as it
/// is now (the caller knows nothing was recorded since): resolving a
/// batch that touches a large directory looks at everything below it,
/// which is worth doing once.
pub fn apply_resolved(
    index: &Index,
    applier: &Applier,
    hlc: &mut Hlc,
    batch: &[Change],
    res: omirr_core::resolve::Resolution,
    source: &mut dyn ContentSource,
) -> Result<Applied, ApplyRemoteError> {
    for c in batch {
        hlc.observe(c.entry.version.ts);
    }
    // Conflict copies are stamped above the batch: the clock follows.
    for c in &res.accepted {
        hlc.observe(c.entry.version.ts);
    }
    let rules = applier.rules();
    let guard = IndexGuard {
        index,
        rules: &*rules,
    };
    let (done, failure) = match applier.apply_guarded(&res.actions, source, &guard) {
        Ok(()) => (res.actions.len(), None),
        Err(e) => (e.durable, Some(e)),
    };
    // A change is recorded only if no action left undone touches its
    // path, an ancestor, or something below it.
    let undone: std::collections::BTreeSet<RelPath> = res.actions[done..]
        .iter()
        .flat_map(Action::paths)
        .cloned()
        .collect();
    let mut out = Batch::new();
    let mut recorded = 0;
    for c in &res.accepted {
        if omirr_core::resolve::held_back(&undone, &c.path) {
            continue;
        }
        out.record(c.clone(), StatUpdate::Keep);
        recorded += 1;
    }
    stat_keys_after(applier.root(), &res.actions[..done], &mut out);
    out.observe_hlc(hlc.last());
    index.commit(&out)?;
    match failure {
        None => Ok(Applied {
            recorded,
            actions: res.actions,
            conflicts: res.conflicts,
        }),
        Some(error) => {
            let action = error
                .index
                .and_then(|i| res.actions.get(i).cloned())
                .map(Box::new);
            let conflicts = res
                .conflicts
                .into_iter()
                .filter(|c| !omirr_core::resolve::held_back(&undone, &c.path))
                .collect();
            Err(ApplyRemoteError::Apply {
                error: Box::new(error),
                recorded,
                action,
                conflicts,
            })
        }
    }
}

/// Puts in `out` the stat keys of what the completed `actions` left on
/// disk under `root`.
fn stat_keys_after(root: &Path, actions: &[Action], out: &mut Batch) {
    for a in actions {
        match a {
            Action::Remove { path, .. } => {
                out.forget_stat(path.clone());
            }
            Action::Rename { from, to, .. } => {
                out.forget_stat(from.clone());
                if let Some(key) = lstat_key(root, to) {
                    out.set_stat(to.clone(), key);
                }
            }
            Action::SaveOld { .. } => {}
            Action::KeepConflictCopy { copy, prune, .. } => {
                for old in prune {
                    out.forget_stat(old.clone());
                }
                match lstat_key(root, copy) {
                    Some(key) => out.set_stat(copy.clone(), key),
                    None => out.forget_stat(copy.clone()),
                };
            }
            other => {
                let path = other.path();
                match lstat_key(root, path) {
                    Some(key) => out.set_stat(path.clone(), key),
                    None => out.forget_stat(path.clone()),
                };
            }
        }
    }
}

/// How a receive-only host undoes its local changes at some paths: the
/// changes as found, the actions that put the set's version back
/// ([`omirr_core::resolve::restore`]), and what lay at each path those
/// actions touch when this was planned.
#[derive(Debug, Default)]
pub struct Restore {
    /// The local changes found (never recorded).
    pub local: Vec<Change>,
    pub actions: Vec<Action>,
    /// `lstat` of each path the actions touch, as planned (`None`:
    /// nothing there). Carrying the actions out stops at a path that
    /// changed since: a newer local write, undone on the next round.
    pub seen: HashMap<RelPath, Option<StatKey>>,
}

/// Looks at `paths` (inside `tops`, where `rules` says this host only
/// receives) and plans how to undo the local changes found there. Reads
/// the disk and the index; writes neither.
#[allow(clippy::too_many_arguments)]
pub fn plan_restore(
    index: &Index,
    hlc: &mut Hlc,
    host: &HostId,
    root: &Path,
    tops: &[RelPath],
    paths: &[RelPath],
    exclude: &dyn Fn(&RelPath) -> bool,
    rules: &dyn Rules,
    savetargets: &dyn Fn(&RelPath) -> bool,
    wall: Timestamp,
) -> Result<Restore, LocalScanError> {
    let paths: Vec<RelPath> = paths
        .iter()
        .filter(|d| tops.iter().any(|t| *d == t || d.is_below(t)))
        .cloned()
        .collect();
    // The changes other than those to undo are the watcher's business:
    // this batch is dropped.
    let mut scratch = Batch::new();
    let r = record_scan(
        index,
        hlc,
        host,
        root,
        tops,
        &paths,
        exclude,
        rules,
        Stamp::Live { wall },
        None,
        &mut scratch,
    )?;
    let view = index.reader()?;
    let actions = omirr_core::resolve::restore(&view, &r.undone, savetargets)?;
    let seen = actions
        .iter()
        .flat_map(Action::paths)
        .map(|p| (p.clone(), lstat_key(root, p)))
        .collect();
    Ok(Restore {
        local: r.undone,
        actions,
        seen,
    })
}

/// Carries out a [`Restore`] with `applier` and records the stat keys of
/// what it left on disk (the index's entries are the set's already).
/// Returns how many actions were done; an error as [`apply_resolved`]'s.
pub fn apply_restore(
    index: &Index,
    applier: &Applier,
    restore: &Restore,
    source: &mut dyn ContentSource,
) -> Result<usize, ApplyRemoteError> {
    let guard = SeenGuard(&restore.seen);
    let (done, failure) = match applier.apply_guarded(&restore.actions, source, &guard) {
        Ok(()) => (restore.actions.len(), None),
        Err(e) => (e.durable, Some(e)),
    };
    let mut out = Batch::new();
    stat_keys_after(applier.root(), &restore.actions[..done], &mut out);
    if !out.is_empty() {
        index.commit(&out)?;
    }
    match failure {
        None => Ok(done),
        Some(error) => {
            let action = error
                .index
                .and_then(|i| restore.actions.get(i).cloned())
                .map(Box::new);
            Err(ApplyRemoteError::Apply {
                error: Box::new(error),
                recorded: 0,
                action,
                // An undo meets no conflict: it puts the set's version back.
                conflicts: Vec::new(),
            })
        }
    }
}

/// What a restore planned to replace, as the applier's guard: a file
/// written since is left alone.
struct SeenGuard<'s>(&'s HashMap<RelPath, Option<StatKey>>);

impl crate::apply::LocalGuard for SeenGuard<'_> {
    fn unchanged(&self, path: &RelPath, now: &StatKey) -> bool {
        matches!(self.0.get(path), Some(Some(key)) if key.unchanged(now))
    }
}

/// The index's stat keys, as the applier's guard against replacing a
/// local write the watcher has not recorded yet; except where this host
/// only receives, where a local write is to be undone anyway (waiting for
/// the undo would hold the peer's newer change back for as long as the
/// undo waits for the set's older content).
struct IndexGuard<'i> {
    index: &'i Index,
    rules: &'i dyn Rules,
}

impl crate::apply::LocalGuard for IndexGuard<'_> {
    fn unchanged(&self, path: &RelPath, now: &StatKey) -> bool {
        if self.rules.undoes_local_changes(path) {
            return true;
        }
        match self.index.stat(path) {
            // Nothing to compare: as before.
            Ok(Some(key)) => key.unchanged(now),
            _ => true,
        }
    }
}

/// The stat key of what is at `path` under `root`, without following a
/// symlink (the applier has just put it there, inside the root).
fn lstat_key(root: &Path, path: &RelPath) -> Option<StatKey> {
    use std::os::unix::ffi::OsStrExt;
    let full = root.join(std::ffi::OsStr::from_bytes(path.as_bytes()));
    Some(stat_key_of(&std::fs::symlink_metadata(full).ok()?))
}

/// The stat key of what `m` describes, as the index stores it.
pub fn stat_key_of(m: &std::fs::Metadata) -> StatKey {
    use std::os::unix::fs::MetadataExt;
    StatKey {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    }
}

/// What a start-up scan did.
#[derive(Debug)]
pub struct LocalScan {
    /// The scan itself: what was found, hashed, and could not be read.
    pub report: ScanReport,
    /// How many local changes were recorded.
    pub changes: usize,
    /// The paths of the local changes found where this host only receives
    /// ([`Rules::undoes_local_changes`]): not recorded, to be undone
    /// ([`plan_restore`]).
    pub undone: Vec<RelPath>,
}

/// How the changes a scan finds are stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// At start: the changes were made while nobody watched, at their
    /// ctime (see [`When::Scanned`]).
    Startup,
    /// Reported by the watcher just now.
    Live { wall: Timestamp },
}

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
/// are (see [`crate::owners::canonical`]); `hlc` is this host's clock,
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
struct Piece<'p> {
    floor: Timestamp,
    /// Directories below the piece's top that are pieces of their own:
    /// neither scanned nor judged here.
    cut: &'p [RelPath],
    departed: &'p Departed,
    upper: Option<&'p Upper>,
}

/// The index's rows for the paths at most [`SPLIT_DEPTH`] levels below
/// the tops: all that the pieces split around their subdirectories need,
/// read in one pass rather than a pass over the whole subtree per such
/// piece.
#[derive(Default)]
struct Upper {
    stats: BTreeMap<RelPath, StatKey>,
    entries: BTreeMap<RelPath, omirr_core::Entry>,
}

impl Upper {
    /// `None` if the tops hold more than [`UPPER_MAX`] such rows (a tree
    /// of millions of entries but two levels deep): the pieces then read
    /// their own rows, rather than all of them being held for the scan.
    fn load(index: &Index, tops: &[RelPath]) -> Result<Option<Upper>, IndexError> {
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
struct Departed {
    known: HashMap<RelPath, Known>,
    inodes: HashMap<(u64, u64), RelPath>,
    /// The names of hard-linked files earlier pieces found, by inode,
    /// with the name each was given to link to: a later piece's names of
    /// the same inode follow the same leader (the index has not recorded
    /// them yet).
    linked: HashMap<(u64, u64), Vec<scan::HardLink>>,
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

/// The watcher's batch: looks at `dirty` paths (a file, or a directory and
/// everything below it) inside the mirrored `tops`, and records what
/// changed, stamped now. A directory renamed into place is walked; its
/// files are recognised by their inodes and not read again.
#[allow(clippy::too_many_arguments)]
pub fn record_live(
    index: &Index,
    hlc: &mut Hlc,
    host: &HostId,
    root: &Path,
    tops: &[RelPath],
    dirty: &[RelPath],
    exclude: &dyn Fn(&RelPath) -> bool,
    rules: &dyn Rules,
    wall: Timestamp,
) -> Result<LocalScan, LocalScanError> {
    let dirty: Vec<RelPath> = dirty
        .iter()
        .filter(|d| tops.iter().any(|t| *d == t || d.is_below(t)))
        .cloned()
        .collect();
    let mut batch = Batch::new();
    let r = record_scan(
        index,
        hlc,
        host,
        root,
        tops,
        &dirty,
        exclude,
        rules,
        Stamp::Live { wall },
        None,
        &mut batch,
    )?;
    batch.observe_hlc(hlc.last());
    index.commit(&batch)?;
    Ok(LocalScan {
        report: r.report,
        changes: r.changes,
        undone: r.undone.into_iter().map(|c| c.path).collect(),
    })
}

#[allow(clippy::too_many_arguments)]
fn record_scan(
    index: &Index,
    hlc: &mut Hlc,
    host: &HostId,
    root: &Path,
    tops: &[RelPath],
    dirty: &[RelPath],
    exclude: &dyn Fn(&RelPath) -> bool,
    rules: &dyn Rules,
    stamp: Stamp,
    piece: Option<Piece<'_>>,
    batch: &mut Batch,
) -> Result<Recorded, LocalScanError> {
    let cut = piece.as_ref().map_or(&[][..], |p| p.cut);
    let cut_set = Cut::new(cut);
    let is_cut = |p: &RelPath| cut_set.holds(p);
    // The applier's temporary files are never anyone's changes; the cut
    // directories are other pieces'.
    let exclude =
        &|p: &RelPath| exclude(p) || crate::apply::is_temp_name(p.file_name()) || is_cut(p);
    let floor = match &piece {
        Some(p) => p.floor,
        None => {
            hlc.observe(index.hlc_last()?);
            // Changes found now were made after everything seen before.
            hlc.last()
        }
    };
    let departed = piece.as_ref().map(|p| p.departed);
    let upper = piece.as_ref().and_then(|p| p.upper);
    let baseline = IndexBaseline::load(index, dirty, cut, departed, upper)?;
    let report = scan::scan(root, dirty, exclude, &baseline)?;

    let found: HashMap<&RelPath, &scan::Found> =
        report.found.iter().map(|f| (&f.path, f)).collect();
    let vanished: HashMap<&RelPath, &scan::Vanished> =
        report.vanished.iter().map(|v| (&v.path, v)).collect();
    let unknown: Vec<&RelPath> = report.issues.iter().map(|i| i.path()).collect();
    // Only what this scan looked at can be judged: inside the mirrored
    // tops and the dirty paths, not excluded, not unreadable.
    let dirty_set: std::collections::HashSet<&RelPath> = dirty.iter().collect();
    let in_scope = |p: &RelPath| {
        tops.iter().any(|t| p == t || p.is_below(t))
            && (dirty_set.contains(p) || p.ancestors().any(|a| dirty_set.contains(&a)))
            && !exclude(p)
            && !is_cut(p)
            && !unknown.iter().any(|u| p == *u || p.is_below(u))
    };
    let when = |p: &RelPath| match (stamp, found.get(p), vanished.get(p)) {
        (Stamp::Live { wall }, _, _) => When::Live { wall },
        (Stamp::Startup, Some(f), _) => f.when(floor),
        (Stamp::Startup, None, Some(v)) => v.when(floor),
        // A path observe came back to (below a changed one): nothing
        // better than the floor is known.
        (Stamp::Startup, None, None) => When::Scanned {
            ctime: floor,
            floor,
        },
    };
    // A path whose stat key is the one recorded when the index last agreed
    // with the disk has not changed since: only the others need a look.
    let paths = report
        .found
        .iter()
        .filter(|f| {
            f.hashed || f.renamed_from.is_some() || baseline.stats.get(&f.path) != Some(&f.key)
        })
        .map(|f| f.path.clone())
        .chain(report.vanished.iter().map(|v| v.path.clone()));
    // One read transaction for every lookup of this observe: nothing is
    // committed before it ends (the caller commits the batch).
    let view = index.reader()?;
    let changes = observe(
        &view,
        hlc,
        host,
        paths,
        observe::Disk {
            at: &mut |p| found.get(p).map(|f| comparable(&view, rules, p, &f.node)),
            when: &when,
            in_scope: &in_scope,
        },
    )?;

    // Where this host only receives, a local change is not recorded (so
    // not sent) and its stat key not taken: the next look finds it again
    // until it is undone.
    let (changes, undone): (Vec<Change>, Vec<Change>) = changes
        .into_iter()
        .partition(|c| !rules.undoes_local_changes(&c.path));
    let count = changes.len();
    let changed: std::collections::HashSet<RelPath> = changes
        .iter()
        .chain(&undone)
        .map(|c| c.path.clone())
        .collect();
    for c in changes {
        tracing::debug!("local change {}", crate::shown::Shown(&c));
        let stat = stat_update(found.get(&c.path).copied());
        batch.record(c, stat);
    }
    // Stat keys move on without a change too (a file touched back to the
    // same content, a rename of the same bytes): keep them current so the
    // next scan reads nothing it need not.
    for f in &report.found {
        // A key equal to the stored one is left as it is, racy or not: it
        // was stored by whoever last vouched for the content (the applier
        // right after writing it, or a scan that hashed it), and this scan
        // has just trusted it too. Forgetting it would only make the next
        // start-up scan re-read every file the applier wrote lately.
        if changed.contains(&f.path) || baseline.stats.get(&f.path) == Some(&f.key) {
            continue;
        }
        match stat_update(Some(f)) {
            StatUpdate::Set(key) => {
                batch.set_stat(f.path.clone(), key);
            }
            StatUpdate::Forget => {
                batch.forget_stat(f.path.clone());
            }
            _ => {}
        }
    }
    for v in &report.vanished {
        batch.forget_stat(v.path.clone());
    }
    // Once recorded, the index forgets what it knew of the vanished paths'
    // inodes; the scan's later pieces may still meet them renamed.
    let mut departing = Vec::new();
    if piece.is_some() {
        for v in &report.vanished {
            if let Ok(Some(k)) = baseline.known(&v.path) {
                departing.push((v.path.clone(), k));
            }
        }
    }
    Ok(Recorded {
        report,
        changes: count,
        undone,
        departing,
    })
}

/// What one [`record_scan`] put in its batch.
struct Recorded {
    report: ScanReport,
    changes: usize,
    /// Local changes where this host only receives: not in the batch.
    undone: Vec<Change>,
    /// What the baseline knew of the paths found vanished.
    departing: Vec<(RelPath, Known)>,
}

/// What the scan found at `path`, with the owner, group and mode that this
/// host renders from the index's entry (or leaves alone) made equal to the
/// entry's: see [`crate::owners::canonical`].
fn comparable(
    view: &impl IndexView<Error = IndexError>,
    rules: &dyn Rules,
    path: &RelPath,
    found: &Node,
) -> Node {
    let rules = rules.rules(path);
    let recorded = match view.entry(path) {
        Ok(Some(e)) if same_kind(&e.content, &found.content) => e.meta,
        // Nothing to compare with: only the extended attributes this
        // host does not mirror are left out.
        _ => {
            let mut node = found.clone();
            node.meta.xattrs = crate::owners::canonical_xattrs(&found.meta.xattrs, None, &rules);
            return node;
        }
    };
    Node {
        content: found.content.clone(),
        meta: crate::owners::canonical(path, found.meta.clone(), &recorded, &rules),
    }
}

fn same_kind(a: &Content, b: &Content) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// The stat key to keep for what the scan found: none for a racy file, so
/// that the next scan reads it again.
fn stat_update(found: Option<&scan::Found>) -> StatUpdate {
    match found {
        Some(f) if f.racy => StatUpdate::Forget,
        Some(f) => StatUpdate::Set(f.key),
        None => StatUpdate::Forget,
    }
}

/// The persisted index as the scanner's baseline, read once per scan (or
/// piece of one): one range read per scanned top rather than two lookups
/// per file. It holds the stat keys and live entries below the tops in
/// memory for the scan's duration, but for those in the cut directories
/// (other pieces'); paths elsewhere (the old name of something renamed in)
/// are looked up in the index, then among the paths earlier pieces found
/// vanished.
struct IndexBaseline<'a> {
    index: &'a Index,
    tops: Vec<RelPath>,
    cut: Cut,
    stats: HashMap<RelPath, StatKey>,
    live: BTreeMap<RelPath, Content>,
    departed: Option<&'a Departed>,
}

/// The index's rows at and below one top of a piece, in path order.
struct Rows {
    stats: Vec<(RelPath, StatKey)>,
    entries: Vec<(RelPath, omirr_core::Entry)>,
}

impl Rows {
    /// Everything at and below `top`, from the index.
    fn whole(index: &Index, top: &RelPath) -> Result<Rows, IndexError> {
        let own = index.stat(top)?.map(|k| (top.clone(), k));
        let stats = own.into_iter().chain(index.stats_below(top)?).collect();
        let own = index.entry(top)?.map(|e| (top.clone(), e));
        let entries = own.into_iter().chain(index.below(top)?).collect();
        Ok(Rows { stats, entries })
    }

    /// What a piece split around the `cut` subdirectories of `top` needs:
    /// `top` and its children from `upper`, and, from the index, whatever
    /// lies below a child that is not cut (a directory gone from disk, or
    /// no longer a directory), so that all of it is found vanished.
    fn upper(index: &Index, upper: &Upper, top: &RelPath, cut: &Cut) -> Result<Rows, IndexError> {
        let near = |p: &RelPath| p == top || p.parent().as_ref() == Some(top);
        let mut stats: BTreeMap<RelPath, StatKey> = BTreeMap::new();
        let mut entries: BTreeMap<RelPath, omirr_core::Entry> = BTreeMap::new();
        let own = upper.entries.get(top).map(|e| (top, e));
        for (p, e) in own
            .into_iter()
            .chain(upper.entries.range(top.below_path_range()))
        {
            if near(p) && !cut.holds(p) {
                entries.insert(p.clone(), e.clone());
            }
        }
        let own = upper.stats.get(top).map(|k| (top, k));
        for (p, k) in own
            .into_iter()
            .chain(upper.stats.range(top.below_path_range()))
        {
            if near(p) && !cut.holds(p) {
                stats.insert(p.clone(), *k);
            }
        }
        let gone_dirs: Vec<RelPath> = entries
            .iter()
            .filter(|(p, e)| *p != top && e.content.is_dir())
            .map(|(p, _)| p.clone())
            .collect();
        for dir in gone_dirs {
            entries.extend(index.below(&dir)?);
            stats.extend(index.stats_below(&dir)?);
        }
        Ok(Rows {
            stats: stats.into_iter().collect(),
            entries: entries.into_iter().collect(),
        })
    }
}

/// Subdirectories of the tops left to other pieces, by their bytes.
struct Cut(HashSet<Vec<u8>>);

impl Cut {
    fn new(dirs: &[RelPath]) -> Cut {
        Cut(dirs.iter().map(|d| d.as_bytes().to_vec()).collect())
    }

    /// Whether `path` is a cut directory or below one: a look at each of
    /// its ancestors' bytes, not at each cut directory.
    fn holds(&self, path: &RelPath) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let bytes = path.as_bytes();
        let prefixes = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| &bytes[..i])
            .chain(std::iter::once(bytes));
        for prefix in prefixes {
            if self.0.contains(prefix) {
                return true;
            }
        }
        false
    }
}

impl<'a> IndexBaseline<'a> {
    fn load(
        index: &'a Index,
        tops: &[RelPath],
        cut: &[RelPath],
        departed: Option<&'a Departed>,
        upper: Option<&Upper>,
    ) -> Result<IndexBaseline<'a>, IndexError> {
        let cut = Cut::new(cut);
        let mut stats = HashMap::new();
        let mut live = BTreeMap::new();
        for top in tops {
            let rows = match upper {
                Some(upper) => Rows::upper(index, upper, top, &cut)?,
                None => Rows::whole(index, top)?,
            };
            stats.extend(rows.stats);
            // Entries hidden under a newer non-directory ancestor (the old
            // children of a deleted or renamed directory, see
            // `omirr_core::tree`) are not expected on disk: left out, the
            // scan does not find each of them vanished, and observe does
            // not look at each. Path order puts ancestors first.
            let mut blockers: HashMap<RelPath, omirr_core::Version> = HashMap::new();
            for a in top.ancestors().filter(|a| !a.is_root()) {
                if let Some(e) = index.entry(&a)?.filter(|e| !e.content.is_dir()) {
                    blockers.insert(a, e.version);
                }
            }
            for (p, e) in rows.entries {
                let hidden = p
                    .ancestors()
                    .any(|a| blockers.get(&a).is_some_and(|v| *v > e.version));
                if !e.content.is_dir() {
                    blockers.insert(p.clone(), e.version.clone());
                }
                if e.is_live() && !hidden {
                    live.insert(p, e.content);
                }
            }
        }
        Ok(IndexBaseline {
            index,
            tops: tops.to_vec(),
            cut,
            stats,
            live,
            departed,
        })
    }

    fn preloaded(&self, path: &RelPath) -> bool {
        self.tops.iter().any(|t| path == t || path.is_below(t)) && !self.cut.holds(path)
    }
}

impl ScanBaseline for IndexBaseline<'_> {
    fn known(&self, path: &RelPath) -> Result<Option<Known>, BaselineError> {
        let (key, content) = if self.preloaded(path) {
            (self.stats.get(path).copied(), self.live.get(path).cloned())
        } else {
            // Found vanished by an earlier piece: the index has forgotten
            // its stat key (and may hold a tombstone, or an entry hidden
            // under one).
            if let Some(k) = self.departed.and_then(|d| d.known.get(path)) {
                return Ok(Some(k.clone()));
            }
            let content = self
                .index
                .entry(path)?
                .filter(|e| e.is_live())
                .map(|e| e.content);
            (self.index.stat(path)?, content)
        };
        Ok(match (key, content) {
            (Some(key), Some(content)) => Some(Known {
                key,
                content,
                racy: false,
            }),
            _ => None,
        })
    }

    fn path_of_inode(&self, dev: u64, ino: u64) -> Result<Option<RelPath>, BaselineError> {
        if let Some(p) = self.index.path_of_inode(dev, ino)? {
            return Ok(Some(p));
        }
        Ok(self
            .departed
            .and_then(|d| d.inodes.get(&(dev, ino)))
            .cloned())
    }

    /// The index's names only: a name an earlier piece found vanished
    /// (`Departed`) no longer holds the inode.
    fn paths_of_inode(&self, dev: u64, ino: u64) -> Result<Vec<RelPath>, BaselineError> {
        let mut paths = self.index.paths_of_inode(dev, ino)?;
        if let Some(met) = self.departed.and_then(|d| d.linked.get(&(dev, ino))) {
            paths.extend(met.iter().map(|h| h.path.clone()));
        }
        Ok(paths)
    }

    /// What an earlier piece of this scan gave the path, else what the
    /// index holds.
    fn recorded_link(&self, path: &RelPath) -> Result<Option<Option<RelPath>>, BaselineError> {
        let earlier = self.departed.and_then(|d| {
            d.linked
                .values()
                .flatten()
                .find(|h| h.path == *path)
                .map(|h| h.link.clone())
        });
        if let Some(link) = earlier {
            return Ok(Some(link));
        }
        Ok(match self.index.entry(path)? {
            Some(e) if matches!(e.content, Content::File { .. }) => Some(e.meta.link.map(|l| *l)),
            _ => None,
        })
    }

    fn is_live(&self, path: &RelPath) -> Result<bool, BaselineError> {
        if self.preloaded(path) {
            return Ok(self.live.contains_key(path));
        }
        Ok(self.index.entry(path)?.is_some_and(|e| e.is_live()))
    }

    fn for_each_below(
        &self,
        dir: &RelPath,
        f: &mut dyn FnMut(&RelPath),
    ) -> Result<(), BaselineError> {
        if self.preloaded(dir) {
            // The cut directories' rows were never loaded.
            for p in self.live.range(dir.below_path_range()).map(|(p, _)| p) {
                f(p);
            }
        } else {
            for (p, e) in self.index.below(dir)? {
                if e.is_live() {
                    f(&p);
                }
            }
        }
        Ok(())
    }
}
