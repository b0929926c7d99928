//! [`MemBaseline`], an in-memory [`ScanBaseline`]: the model the
//! persisted index follows, and what tests and benchmarks scan against.

use std::collections::{BTreeMap, HashMap};

use omirr_core::RelPath;

use super::baseline::{BaselineError, Known, ScanBaseline};
use super::report::ScanReport;

/// An in-memory [`ScanBaseline`]: the model the persisted index follows,
/// and what tests and benchmarks scan against.
#[derive(Debug, Clone, Default)]
pub struct MemBaseline {
    paths: BTreeMap<RelPath, Known>,
    inodes: HashMap<(u64, u64), RelPath>,
}

impl MemBaseline {
    /// An empty baseline: the first scan reads every file.
    pub fn new() -> MemBaseline {
        MemBaseline::default()
    }

    /// A baseline holding what `report` found.
    pub fn from_report(report: &ScanReport) -> MemBaseline {
        let mut b = MemBaseline::new();
        b.record(report);
        b
    }

    /// Brings the baseline up to date with a scan: vanished paths go,
    /// found ones are (re)recorded.
    pub fn record(&mut self, report: &ScanReport) {
        for v in &report.vanished {
            self.remove(&v.path);
        }
        for f in &report.found {
            self.insert(f.path.clone(), f.known());
        }
    }

    /// Records `known` for `path`, replacing what was recorded there;
    /// its inode now leads to `path`.
    pub fn insert(&mut self, path: RelPath, known: Known) {
        let inode = (known.key.dev, known.key.ino);
        if let Some(old) = self.paths.insert(path.clone(), known) {
            self.forget_inode(&path, &old);
        }
        self.inodes.insert(inode, path);
    }

    /// Forgets `path`, returning what was recorded for it.
    pub fn remove(&mut self, path: &RelPath) -> Option<Known> {
        let old = self.paths.remove(path)?;
        self.forget_inode(path, &old);
        Some(old)
    }

    fn forget_inode(&mut self, path: &RelPath, old: &Known) {
        let inode = (old.key.dev, old.key.ino);
        if self.inodes.get(&inode) == Some(path) {
            self.inodes.remove(&inode);
        }
    }

    /// How many paths are recorded.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether no path is recorded.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

impl ScanBaseline for MemBaseline {
    fn known(&self, path: &RelPath) -> Result<Option<Known>, BaselineError> {
        Ok(self.paths.get(path).cloned())
    }

    fn path_of_inode(&self, dev: u64, ino: u64) -> Result<Option<RelPath>, BaselineError> {
        Ok(self.inodes.get(&(dev, ino)).cloned())
    }

    fn for_each_below(
        &self,
        dir: &RelPath,
        f: &mut dyn FnMut(&RelPath),
    ) -> Result<(), BaselineError> {
        for p in self.paths.range(dir.below_path_range()).map(|(p, _)| p) {
            f(p);
        }
        Ok(())
    }
}
