//! What the scanner needs to know of the disk as it was: the
//! [`ScanBaseline`] trait (the persisted index implements it, in
//! `omirr_sync::record`), and [`MemBaseline`], its in-memory model for
//! tests and benchmarks.

use std::collections::{BTreeMap, HashMap};

use omirr_core::{Content, RelPath, StatKey};

use super::report::ScanReport;
#[cfg(doc)]
use super::report::Found;
#[cfg(doc)]
use omirr_core::Meta;

/// What a baseline knows about one path: its stat key when it was last
/// scanned (or written by the daemon) and the content recorded then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub key: StatKey,
    pub content: Content,
    /// The key was taken while the file was racy ([`Found::racy`]): it
    /// proves nothing, and the next scan reads the file again.
    pub racy: bool,
}

/// A baseline's failure (e.g. a database read error), boxed so that the
/// trait stays object safe and free of the index's error type.
pub type BaselineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the scanner needs to know about the previous state of the disk.
///
/// The persisted index implements this; [`MemBaseline`] is the in-memory
/// model. Only paths believed present on disk are known: tombstones and
/// entries not yet applied must not be returned.
pub trait ScanBaseline {
    /// What was recorded for `path`, if anything.
    fn known(&self, path: &RelPath) -> Result<Option<Known>, BaselineError>;

    /// The path last recorded for inode `ino` on device `dev` (any one, if
    /// it has several hard links).
    fn path_of_inode(&self, dev: u64, ino: u64) -> Result<Option<RelPath>, BaselineError>;

    /// Every path recorded for inode `ino` on device `dev`: the names of
    /// a hard-linked file that the index knows.
    fn paths_of_inode(&self, dev: u64, ino: u64) -> Result<Vec<RelPath>, BaselineError> {
        Ok(self.path_of_inode(dev, ino)?.into_iter().collect())
    }

    /// For a path the index holds as a live file: the hard link its
    /// entry names ([`Meta::link`]; `Some(None)`: none, it leads).
    /// `None` for anything else.
    fn recorded_link(&self, _path: &RelPath) -> Result<Option<Option<RelPath>>, BaselineError> {
        Ok(None)
    }

    /// Whether `path` is believed present on disk, stat key or not (a file
    /// written moments ago has none yet, and may vanish all the same).
    fn is_live(&self, path: &RelPath) -> Result<bool, BaselineError> {
        Ok(self.known(path)?.is_some())
    }

    /// Calls `f` with every known path strictly below `dir`. A callback
    /// rather than a list, so that an index of millions of paths can
    /// stream them.
    fn for_each_below(
        &self,
        dir: &RelPath,
        f: &mut dyn FnMut(&RelPath),
    ) -> Result<(), BaselineError>;
}

/// An in-memory [`ScanBaseline`]: the model the persisted index follows,
/// and what tests and benchmarks scan against.
#[derive(Debug, Clone, Default)]
pub struct MemBaseline {
    paths: BTreeMap<RelPath, Known>,
    inodes: HashMap<(u64, u64), RelPath>,
}

impl MemBaseline {
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

    pub fn insert(&mut self, path: RelPath, known: Known) {
        let inode = (known.key.dev, known.key.ino);
        if let Some(old) = self.paths.insert(path.clone(), known) {
            self.forget_inode(&path, &old);
        }
        self.inodes.insert(inode, path);
    }

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

    pub fn len(&self) -> usize {
        self.paths.len()
    }

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
