//! What a look at the disk finds, turned into local changes
//! ([`omirr_core::observe`]) and put in a batch with the stat keys: the
//! watcher's paths ([`record_live`]), and the one look ([`record_scan`])
//! that the start-up scan's pieces and the receive-only undo share.

use omirr_core::observe::{self, observe, When};
use omirr_core::tree::Node;
use omirr_core::{Change, Content, Hlc, HostId, IndexView, RelPath, Timestamp};
use omirr_fs::owners::Rules;
use omirr_fs::scan::{self, Known, ScanBaseline, ScanError, ScanReport};
use omirr_index::{Batch, Index, IndexError, StatUpdate};
use std::collections::HashMap;
use std::path::Path;

use super::baseline::{Cut, IndexBaseline};
use super::piece::Piece;
#[cfg(doc)]
use super::plan_restore;

/// Why recording what is on disk failed as a whole (a path that could
/// not be read is an issue in the report, not an error).
#[derive(Debug, thiserror::Error)]
pub enum LocalScanError {
    /// The scan was aborted: the mirror root is unusable, or a baseline
    /// lookup failed.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Reading or committing the index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
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
    Live {
        /// The wall clock when the watcher reported them.
        wall: Timestamp,
    },
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
        .filter(|d| d.is_within_any(tops))
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

/// One look at the `dirty` paths inside `tops`, with the index as the
/// scan's baseline: the local changes found go in `batch` with their stat
/// keys, but for those where this host only receives (returned, to be
/// undone). `piece` is the start-up scan's, `None` for a live look.
#[allow(clippy::too_many_arguments)]
pub(super) fn record_scan(
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
        &|p: &RelPath| exclude(p) || omirr_fs::apply::is_temp_name(p.file_name()) || is_cut(p);
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
    let look = Look {
        tops,
        dirty,
        exclude,
        stamp,
        floor,
    };
    let changes = changes_found(index, hlc, host, rules, &look, &report, &found, &baseline)?;
    let (count, undone) = put_in_batch(batch, rules, changes, &report, &found, &baseline);
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

/// What one look may judge, and how it stamps what it finds.
#[derive(Clone, Copy)]
struct Look<'l> {
    tops: &'l [RelPath],
    dirty: &'l [RelPath],
    /// The caller's exclusions, the applier's temporary files and the
    /// directories left to other pieces.
    exclude: &'l dyn Fn(&RelPath) -> bool,
    stamp: Stamp,
    floor: Timestamp,
}

/// The local changes `report` shows against the index
/// ([`omirr_core::observe`]).
#[allow(clippy::too_many_arguments)]
fn changes_found(
    index: &Index,
    hlc: &mut Hlc,
    host: &HostId,
    rules: &dyn Rules,
    look: &Look<'_>,
    report: &ScanReport,
    found: &HashMap<&RelPath, &scan::Found>,
    baseline: &IndexBaseline<'_>,
) -> Result<Vec<Change>, LocalScanError> {
    let Look {
        tops,
        dirty,
        exclude,
        stamp,
        floor,
    } = *look;
    let vanished: HashMap<&RelPath, &scan::Vanished> =
        report.vanished.iter().map(|v| (&v.path, v)).collect();
    let unknown: Vec<&RelPath> = report.issues.iter().map(|i| i.path()).collect();
    // Only what this scan looked at can be judged: inside the mirrored
    // tops and the dirty paths, not excluded (nor cut), not unreadable.
    let dirty_set: std::collections::HashSet<&RelPath> = dirty.iter().collect();
    let in_scope = |p: &RelPath| {
        p.is_within_any(tops)
            && (dirty_set.contains(p) || p.ancestors().any(|a| dirty_set.contains(&a)))
            && !exclude(p)
            && !unknown.iter().any(|u| p.is_within(u))
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
    Ok(changes)
}

/// Puts `changes` in `batch` with their stat keys, and the stat keys that
/// moved on without a change; returns how many changes it put there, and
/// those it left out because this host only receives at their paths.
fn put_in_batch(
    batch: &mut Batch,
    rules: &dyn Rules,
    changes: Vec<Change>,
    report: &ScanReport,
    found: &HashMap<&RelPath, &scan::Found>,
    baseline: &IndexBaseline<'_>,
) -> (usize, Vec<Change>) {
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
        tracing::debug!("local change {}", omirr_fs::shown::Shown(&c));
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
    (count, undone)
}

/// What one [`record_scan`] put in its batch.
pub(super) struct Recorded {
    pub(super) report: ScanReport,
    pub(super) changes: usize,
    /// Local changes where this host only receives: not in the batch.
    pub(super) undone: Vec<Change>,
    /// What the baseline knew of the paths found vanished.
    pub(super) departing: Vec<(RelPath, Known)>,
}

/// What the scan found at `path`, with the owner, group and mode that this
/// host renders from the index's entry (or leaves alone) made equal to the
/// entry's: see [`omirr_fs::owners::canonical`].
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
            node.meta.xattrs = omirr_fs::owners::canonical_xattrs(&found.meta.xattrs, None, &rules);
            return node;
        }
    };
    Node {
        content: found.content.clone(),
        meta: omirr_fs::owners::canonical(path, found.meta.clone(), &recorded, &rules),
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
