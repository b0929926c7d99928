//! What a scan reports: the paths found ([`Found`]), those gone
//! ([`Vanished`]), those it could not establish ([`ScanIssue`]), counters,
//! and what aborts a scan altogether ([`ScanError`]).

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use omirr_core::observe::When;
use omirr_core::tree::Node;
use omirr_core::{Content, RelPath, StatKey, Timestamp};

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
    /// What `lstat` said when the path was read, for the baseline: the
    /// next scan skips re-reading the file while this still matches.
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
        let file = matches!(self.node.content, Content::File { .. });
        Known {
            key: self.key,
            content: self.node.content.clone(),
            // Only a file's: a directory that could not be opened is
            // found without its attributes, which must not be vouched for.
            xattrs: file.then(|| self.node.meta.xattrs.clone()),
            racy: self.racy,
        }
    }
}

/// A path the baseline knew under a scanned top that is no longer on disk
/// (or whose inode left for a rename target outside the tops).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vanished {
    /// The path that is gone, relative to the scanned root.
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
    /// A system call on `path` failed (e.g. permission denied).
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// The path that could not be read.
        path: RelPath,
        /// What was being done, as a verb phrase that reads after
        /// "cannot", e.g. "stat" or "list directory".
        op: &'static str,
        /// The system's reason.
        source: io::Error,
    },
    /// `path` is a socket or device node, which omirr does not mirror.
    #[error("{path} is a {kind}, which omirr does not mirror; left alone (said once)")]
    Unsupported {
        /// Where it is.
        path: RelPath,
        /// Its kind, as a word ("socket", "block device", ...).
        kind: &'static str,
    },
    /// `path` changed between its `lstat` and the end of its read on each
    /// of [`TRIES`](super::TRIES) tries.
    #[error("{path} kept changing while it was scanned; skipped, the watcher reports it once it settles")]
    Unstable {
        /// The path that would not hold still.
        path: RelPath,
    },
    /// A directory above a top is a symlink, so the top was not scanned.
    #[error("{path} is a symlink on the way to top {top}; symlinks are not followed, so the top was not scanned")]
    SymlinkAncestor {
        /// The top that was not scanned.
        top: RelPath,
        /// The symlink above it.
        path: RelPath,
    },
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
    /// The root could not be opened as a directory, or `fstat`ed.
    #[error("cannot open mirror root {}: {source}", root.display())]
    Root {
        /// The root as given.
        root: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The [`ScanBaseline`](super::ScanBaseline) returned an error.
    #[error("baseline lookup for {path} failed: {source}")]
    Baseline {
        /// The path (or, for an inode lookup, the path being scanned) the
        /// baseline was asked about.
        path: RelPath,
        /// The baseline's reason.
        source: BaselineError,
    },
}

/// Counters, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Regular files found (each name of a hard-linked file counts).
    pub files: u64,
    /// Directories found, tops included (the root itself is not found,
    /// only walked).
    pub dirs: u64,
    /// Symlinks found.
    pub symlinks: u64,
    /// Files whose content was read.
    pub hashed_files: u64,
    /// The bytes read to hash those files (their sizes, summed).
    pub hashed_bytes: u64,
    /// Files, directories and named pipes whose extended attributes were
    /// read from disk, not taken from the baseline.
    pub xattr_reads: u64,
}

/// Everything one scan found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Every path found, in walk order (parents before children, names in
    /// byte order within a directory).
    pub found: Vec<Found>,
    /// Known paths gone from disk, in path order.
    pub vanished: Vec<Vanished>,
    /// The paths that could not be established, in the order met; the
    /// scan went on past each.
    pub issues: Vec<ScanIssue>,
    /// Counters of what was found and read.
    pub stats: ScanStats,
    /// Every name found of a file with several (hard links).
    pub hard_links: Vec<HardLink>,
}

/// One name of a file with several, as a scan found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardLink {
    /// The inode's device.
    pub dev: u64,
    /// The inode's number on `dev`.
    pub ino: u64,
    /// This name, relative to the scanned root.
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
