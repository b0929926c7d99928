//! Bringing the index up to date with this host's disk: the start-up scan.
//!
//! [`scan_into_index`] walks the mirrored trees with the index as the
//! scanner's baseline (its stat cache spares unchanged files a re-read, its
//! inode cache recognises renames made while the daemon was down), turns
//! what differs into versioned local changes with
//! [`omirr_core::observe`], and records them, with the new stat keys, in
//! one index transaction: a kill at any moment leaves either the old index
//! or the new one, and the next scan finds whatever is left.

use crate::scan::{self, BaselineError, Known, ScanBaseline, ScanError, ScanReport, StatKey};
use omirr_core::observe::{self, observe, When};
use omirr_core::{Content, Hlc, HostId, IndexView, RelPath};
use omirr_index::{Batch, Index, IndexError, StatUpdate};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LocalScanError {
    #[error(transparent)]
    Scan(#[from] ScanError),
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
}

/// Scans `tops` under `root` and records every local change in `index`.
/// `exclude` says which paths are not mirrored; `hlc` is this host's clock,
/// advanced past everything the index has seen.
pub fn scan_into_index(
    index: &Index,
    hlc: &mut Hlc,
    host: &HostId,
    root: &Path,
    tops: &[RelPath],
    exclude: &dyn Fn(&RelPath) -> bool,
) -> Result<LocalScan, LocalScanError> {
    hlc.observe(index.hlc_last()?);
    // Changes found now were made after everything seen before.
    let floor = hlc.last();
    let baseline = IndexBaseline::load(index, tops)?;
    let report = scan::scan(root, tops, exclude, &baseline)?;

    let found: HashMap<&RelPath, &scan::Found> =
        report.found.iter().map(|f| (&f.path, f)).collect();
    let vanished: HashMap<&RelPath, &scan::Vanished> =
        report.vanished.iter().map(|v| (&v.path, v)).collect();
    let unknown: Vec<&RelPath> = report.issues.iter().map(|i| i.path()).collect();
    let in_scope = |p: &RelPath| {
        tops.iter().any(|t| p == t || p.is_below(t))
            && !exclude(p)
            && !unknown.iter().any(|u| p == *u || p.is_below(u))
    };
    let when = |p: &RelPath| match (found.get(p), vanished.get(p)) {
        (Some(f), _) => f.when(floor),
        (None, Some(v)) => v.when(floor),
        // A path observe came back to (below a changed one): nothing
        // better than the floor is known.
        (None, None) => When::Scanned {
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
    let changes = observe(
        index,
        hlc,
        host,
        paths,
        observe::Disk {
            at: &mut |p| found.get(p).map(|f| f.node.clone()),
            when: &when,
            in_scope: &in_scope,
        },
    )?;

    let mut batch = Batch::new();
    let count = changes.len();
    let changed: std::collections::HashSet<RelPath> =
        changes.iter().map(|c| c.path.clone()).collect();
    for c in changes {
        let stat = stat_update(found.get(&c.path).copied());
        batch.record(c, stat);
    }
    // Stat keys move on without a change too (a file touched back to the
    // same content, a rename of the same bytes): keep them current so the
    // next scan reads nothing it need not.
    for f in &report.found {
        if changed.contains(&f.path) {
            continue;
        }
        match stat_update(Some(f)) {
            StatUpdate::Set(key) if baseline.stats.get(&f.path) != Some(&f.key) => {
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
    batch.observe_hlc(hlc.last());
    index.commit(&batch)?;
    Ok(LocalScan {
        report,
        changes: count,
    })
}

/// The stat key to keep for what the scan found: none for a racy file, so
/// that the next scan reads it again.
fn stat_update(found: Option<&scan::Found>) -> StatUpdate {
    match found {
        Some(f) if f.racy => StatUpdate::Forget,
        Some(f) => StatUpdate::Set(omirr_index::StatKey {
            dev: f.key.dev,
            ino: f.key.ino,
            size: f.key.size,
            mtime_ns: f.key.mtime_ns,
            ctime_ns: f.key.ctime_ns,
        }),
        None => StatUpdate::Forget,
    }
}

/// The persisted index as the scanner's baseline, read once per scan: one
/// range read per mirrored top rather than two lookups per file. It holds
/// the stat keys and live entries below the tops in memory for the scan's
/// duration.
struct IndexBaseline<'a> {
    index: &'a Index,
    stats: HashMap<RelPath, StatKey>,
    live: BTreeMap<RelPath, Content>,
}

impl<'a> IndexBaseline<'a> {
    fn load(index: &'a Index, tops: &[RelPath]) -> Result<IndexBaseline<'a>, IndexError> {
        let mut stats = HashMap::new();
        let mut live = BTreeMap::new();
        for top in tops {
            let own = index.stat(top)?.map(|k| (top.clone(), k));
            for (p, k) in own.into_iter().chain(index.stats_below(top)?) {
                stats.insert(
                    p,
                    StatKey {
                        dev: k.dev,
                        ino: k.ino,
                        size: k.size,
                        mtime_ns: k.mtime_ns,
                        ctime_ns: k.ctime_ns,
                    },
                );
            }
            let own = index.entry(top)?.map(|e| (top.clone(), e));
            for (p, e) in own.into_iter().chain(index.below(top)?) {
                if e.is_live() {
                    live.insert(p, e.content);
                }
            }
        }
        Ok(IndexBaseline { index, stats, live })
    }
}

impl ScanBaseline for IndexBaseline<'_> {
    fn known(&self, path: &RelPath) -> Result<Option<Known>, BaselineError> {
        match (self.stats.get(path), self.live.get(path)) {
            (Some(key), Some(content)) => Ok(Some(Known {
                key: *key,
                content: content.clone(),
                racy: false,
            })),
            _ => Ok(None),
        }
    }

    fn path_of_inode(&self, dev: u64, ino: u64) -> Result<Option<RelPath>, BaselineError> {
        Ok(self.index.path_of_inode(dev, ino)?)
    }

    fn for_each_below(
        &self,
        dir: &RelPath,
        f: &mut dyn FnMut(&RelPath),
    ) -> Result<(), BaselineError> {
        for p in self.live.range(dir.below_path_range()).map(|(p, _)| p) {
            f(p);
        }
        Ok(())
    }
}
