//! What a scan reports: the paths found ([`Found`]), those gone
//! ([`Vanished`]), those it could not establish ([`ScanIssue`]), counters,
//! and what aborts a scan altogether ([`ScanError`]).

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use omirr_core::observe::When;
use omirr_core::tree::Node;
use omirr_core::{RelPath, StatKey, Timestamp};

use super::baseline::{BaselineError, Known};
#[cfg(doc)]
use super::RACY_WINDOW_NS;
#[cfg(doc)]
use omirr_core::Meta;

/// A path found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Relative to the scanned root: `root/srv/www/x` is `srv/www/x`.
    pub path: RelPath,
    /// What is there, as `observe` takes it.
    pub node: Node,
    pub key: StatKey,
    /// The inode's ctime: when the change found here happened, as far as
    /// anyone can tell ([`When::Scanned`]).
    pub ctime: Timestamp,
    /// Whether the file's content was read (always false for directories
    /// and symlinks).
    pub hashed: bool,
    /// The ctime was within [`RACY_WINDOW_NS`] of the scan: store
    /// [`Known::racy`] so the next scan reads it again.
    pub racy: bool,
    /// A rename made while nobody watched: the baseline knew this inode
    /// under `renamed_from`, which no longer holds it.
    pub renamed_from: Option<RelPath>,
}

impl Found {
    /// How `observe` should stamp this path's change; `floor` is
    /// [`omirr_core::Hlc::last`] when the scan began.
    pub fn when(&self, floor: Timestamp) -> When {
        When::Scanned {
            ctime: self.ctime,
            floor,
        }
    }

    /// What a baseline should record for this path after the scan.
    pub fn known(&self) -> Known {
        Known {
            key: self.key,
            content: self.node.content.clone(),
            racy: self.racy,
        }
    }
}

/// A path the baseline knew under a scanned top that is no longer on disk
/// (or whose inode left for a rename target outside the tops).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vanished {
    pub path: RelPath,
    /// The ctime of the nearest ancestor directory still on disk: the best
    /// witness of when the deletion happened.
    pub witness: Timestamp,
}

impl Vanished {
    /// How `observe` should stamp this deletion; `floor` is
    /// [`omirr_core::Hlc::last`] when the scan began.
    pub fn when(&self, floor: Timestamp) -> When {
        When::Scanned {
            ctime: self.witness,
            floor,
        }
    }
}

/// A path the scan could not establish. Nothing at or below it is
/// reported as vanished.
#[derive(Debug, thiserror::Error)]
pub enum ScanIssue {
    #[error("cannot {op} {path}: {source}")]
    Io {
        path: RelPath,
        op: &'static str,
        source: io::Error,
    },
    #[error("{path} is a {kind}, which omirr does not mirror; left alone (said once)")]
    Unsupported { path: RelPath, kind: &'static str },
    #[error("{path} kept changing while it was scanned; skipped, the watcher reports it once it settles")]
    Unstable { path: RelPath },
    #[error("{path} is a symlink on the way to top {top}; symlinks are not followed, so the top was not scanned")]
    SymlinkAncestor { top: RelPath, path: RelPath },
}

impl ScanIssue {
    /// Whether the issue is worth a log line: every issue is, but a
    /// socket or device node ([`ScanIssue::Unsupported`]) only the first
    /// time this process meets it at that path, whatever number of scans
    /// and watcher events meet it again (up to [`UNSUPPORTED_REMEMBERED`]
    /// paths; past that, each is logged again).
    pub fn worth_logging(&self) -> bool {
        let ScanIssue::Unsupported { path, kind } = self else {
            return true;
        };
        static SEEN: std::sync::Mutex<Option<HashSet<(RelPath, &'static str)>>> =
            std::sync::Mutex::new(None);
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        let seen = seen.get_or_insert_with(HashSet::new);
        if seen.len() >= UNSUPPORTED_REMEMBERED {
            seen.clear();
        }
        seen.insert((path.clone(), kind))
    }

    /// The path the scan could not establish.
    pub fn path(&self) -> &RelPath {
        match self {
            ScanIssue::Io { path, .. }
            | ScanIssue::Unsupported { path, .. }
            | ScanIssue::Unstable { path }
            | ScanIssue::SymlinkAncestor { path, .. } => path,
        }
    }
}

/// How many sockets and device nodes [`ScanIssue::worth_logging`]
/// remembers having reported.
pub const UNSUPPORTED_REMEMBERED: usize = 10_000;

/// What aborts a scan: the root is unusable, or the baseline failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot open mirror root {}: {source}", root.display())]
    Root { root: PathBuf, source: io::Error },
    #[error("baseline lookup for {path} failed: {source}")]
    Baseline {
        path: RelPath,
        source: BaselineError,
    },
}

/// Counters, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Files whose content was read.
    pub hashed_files: u64,
    pub hashed_bytes: u64,
}

/// Everything one scan found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Every path found, in walk order (parents before children, names in
    /// byte order within a directory).
    pub found: Vec<Found>,
    /// Known paths gone from disk, in path order.
    pub vanished: Vec<Vanished>,
    pub issues: Vec<ScanIssue>,
    pub stats: ScanStats,
    /// Every name found of a file with several (hard links).
    pub hard_links: Vec<HardLink>,
}

/// One name of a file with several, as a scan found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardLink {
    /// The inode: device and number.
    pub dev: u64,
    pub ino: u64,
    pub path: RelPath,
    /// The name it was given to link to ([`Meta::link`]; `None`: it
    /// leads).
    pub link: Option<RelPath>,
}

impl ScanReport {
    /// The entry found at `path`, if any (a linear search: for tests and
    /// tools, not hot paths).
    pub fn get(&self, path: &RelPath) -> Option<&Found> {
        self.found.iter().find(|f| &f.path == path)
    }

    /// The renames made while nobody watched, as `(from, to)`.
    pub fn renames(&self) -> impl Iterator<Item = (&RelPath, &RelPath)> {
        self.found
            .iter()
            .filter_map(|f| f.renamed_from.as_ref().map(|from| (from, &f.path)))
    }
}
