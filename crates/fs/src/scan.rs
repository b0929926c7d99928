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
//! What the scanner needs from its baseline (the persisted index, later)
//! is the [`ScanBaseline`] trait; [`MemBaseline`] is an in-memory one for
//! tests, benchmarks and as the model an index implementation follows.
//!
//! Vanished paths are found here, not by the caller, because only the scan
//! knows which subtrees it could read and which directories' ctimes it saw
//! (a deletion's best witness, per the design).
//!
//! Limits: mount points below a top are crossed; the walk holds one
//! descriptor per directory level, so a tree deeper than the open-file
//! limit reports the deepest directories as issues.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use omirr_core::observe::When;
use omirr_core::tree::Node;
use omirr_core::{Content, Hash, Meta, RelPath, Timestamp, Xattrs};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

/// How many times an entry that changes under the scan is looked at again
/// before it is given up on (and left to the watcher).
pub const TRIES: u32 = 3;

/// Files whose ctime is this close to the moment they were scanned are
/// *racy*: a write in the same timestamp tick could leave size, mtime and
/// ctime unchanged, so their [`StatKey`] must not vouch for their content
/// later. Two seconds covers filesystems with coarse (up to 2 s)
/// timestamps.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// The read buffer; large reads keep the syscall count low and let blake3
/// hash many chunks at once with SIMD.
const BUF_SIZE: usize = 1 << 20;

/// The read buffer's alignment. The kernel copies file data into it with
/// `rep movsb`, which on the AMD EPYC we measured ran at half speed into a
/// buffer 16 bytes past a page boundary (where glibc puts large
/// allocations) — see docs/benchmarks.md.
const BUF_ALIGN: usize = 4096;

/// A page-aligned read buffer, carved out of a slightly larger vector so
/// that no unsafe code is needed.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    pub(crate) fn new(size: usize) -> AlignedBuf {
        let raw = vec![0; size + BUF_ALIGN];
        // `align_offset` may decline (usize::MAX); an unaligned buffer is
        // only slower.
        let start = raw.as_ptr().align_offset(BUF_ALIGN).min(BUF_ALIGN);
        AlignedBuf { raw, start }
    }

    pub(crate) fn get(&mut self) -> &mut [u8] {
        let end = self.raw.len() - BUF_ALIGN + self.start;
        &mut self.raw[self.start..end]
    }
}

/// The identity and state of an inode as `lstat` reports it; the index's
/// stat cache stores it (see [`StatKey::unchanged`]).
pub use omirr_index::StatKey;

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
pub(crate) fn normalise_tops(tops: &[RelPath]) -> Vec<RelPath> {
    let mut sorted: Vec<RelPath> = tops.to_vec();
    sorted.sort();
    sorted.dedup();
    // Sorted, a top's ancestors come before it: keep a top unless one of
    // its ancestors was kept.
    let kept: std::collections::HashSet<RelPath> = sorted.iter().cloned().collect();
    sorted.retain(|t| !t.ancestors().any(|a| kept.contains(&a)));
    sorted
}

/// What became of one look at an entry.
enum Step {
    Done,
    /// The entry changed between two system calls: look again.
    Changed,
}

/// What came of reading a file.
enum Reading {
    Hashed(Hash),
    Changed,
    /// Reported as an issue.
    Failed,
}

struct Walker<'a> {
    root: &'a Path,
    tops: &'a [RelPath],
    exclude: &'a dyn Fn(&RelPath) -> bool,
    baseline: &'a dyn ScanBaseline,
    buf: AlignedBuf,
    /// Files with several links hashed in this scan, so that the other
    /// links are not read again.
    links: HashMap<(u64, u64), (StatKey, Hash)>,
    /// The files with several names met, by inode: their places in
    /// `report.found` (see [`Walker::assign_links`]).
    linked: HashMap<(u64, u64), Vec<usize>>,
    /// The ctime of every directory seen (and of the tops' ancestors):
    /// witnesses for deletions below them.
    dir_ctimes: HashMap<RelPath, Timestamp>,
    /// Paths the scan could not establish or was told to leave alone.
    unsure: HashSet<RelPath>,
    /// Rename sources outside the scanned tops, found gone.
    outside_vanished: BTreeMap<RelPath, Timestamp>,
    report: ScanReport,
}

impl<'a> Walker<'a> {
    fn new(
        root: &'a Path,
        tops: &'a [RelPath],
        exclude: &'a dyn Fn(&RelPath) -> bool,
        baseline: &'a dyn ScanBaseline,
    ) -> Walker<'a> {
        Walker {
            root,
            tops,
            exclude,
            baseline,
            buf: AlignedBuf::new(BUF_SIZE),
            links: HashMap::new(),
            linked: HashMap::new(),
            dir_ctimes: HashMap::new(),
            unsure: HashSet::new(),
            outside_vanished: BTreeMap::new(),
            report: ScanReport::default(),
        }
    }

    fn issue(&mut self, issue: ScanIssue) {
        self.unsure.insert(issue.path().clone());
        self.report.issues.push(issue);
    }

    fn io_issue(&mut self, path: &RelPath, op: &'static str, e: impl Into<io::Error>) {
        self.issue(ScanIssue::Io {
            path: path.clone(),
            op,
            source: e.into(),
        });
    }

    fn known(&self, path: &RelPath) -> Result<Option<Known>, ScanError> {
        self.baseline
            .known(path)
            .map_err(|source| ScanError::Baseline {
                path: path.clone(),
                source,
            })
    }

    /// Opens the way to `top` without following symlinks and visits it.
    fn top(&mut self, root_fd: &OwnedFd, top: &RelPath) -> Result<(), ScanError> {
        if top.is_root() {
            return self.walk_dir(root_fd.as_fd(), &RelPath::root());
        }
        let mut comps: Vec<&[u8]> = top.components().collect();
        let Some(last) = comps.pop() else {
            return Ok(());
        };
        let mut fd: Option<OwnedFd> = None;
        let mut at = RelPath::root();
        for comp in comps {
            at = match at.join(comp) {
                Ok(p) => p,
                // Cannot happen: `top` is a checked path.
                Err(_) => return Ok(()),
            };
            if (self.exclude)(&at) {
                self.unsure.insert(at);
                return Ok(());
            }
            let parent = fd.as_ref().map_or(root_fd.as_fd(), |f| f.as_fd());
            match rustix::fs::openat(parent, comp, DIR_FLAGS, Mode::empty()) {
                Ok(next) => {
                    if let Ok(st) = rustix::fs::fstat(&next) {
                        self.dir_ctimes.insert(at.clone(), ctime_of(&st));
                    }
                    fd = Some(next);
                }
                Err(Errno::NOENT) => return Ok(()),
                // With O_DIRECTORY, a symlink gives ENOTDIR like a file
                // does; only a file means the top is simply absent.
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    let link = rustix::fs::statat(parent, comp, AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                    if link {
                        self.issue(ScanIssue::SymlinkAncestor {
                            top: top.clone(),
                            path: at,
                        });
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.io_issue(&at, "open directory", e);
                    return Ok(());
                }
            }
        }
        let parent_path = top.parent().unwrap_or_default();
        let parent = fd.as_ref().map_or(root_fd.as_fd(), |f| f.as_fd());
        self.visit(parent, &parent_path, last)
    }

    /// Visits every entry of the open directory `fd` at `path`.
    fn walk_dir(&mut self, fd: BorrowedFd<'_>, path: &RelPath) -> Result<(), ScanError> {
        let mut names = match list(fd) {
            Ok(n) => n,
            Err(e) => {
                self.io_issue(path, "list directory", e);
                return Ok(());
            }
        };
        // Byte order, so that reports are deterministic.
        names.sort_unstable();
        for name in names {
            self.visit(fd, path, &name)?;
        }
        Ok(())
    }

    /// Reports the entry `name` of the directory `dir` (at `parent`), and
    /// descends if it is a directory.
    fn visit(
        &mut self,
        dir: BorrowedFd<'_>,
        parent: &RelPath,
        name: &[u8],
    ) -> Result<(), ScanError> {
        let path = match parent.join(name) {
            Ok(p) => p,
            Err(e) => {
                // Cannot happen for names from readdir; kept as an issue
                // rather than a panic.
                self.io_issue(
                    parent,
                    "name an entry of",
                    io::Error::new(io::ErrorKind::InvalidData, e),
                );
                return Ok(());
            }
        };
        if (self.exclude)(&path) {
            self.unsure.insert(path);
            return Ok(());
        }
        for _ in 0..TRIES {
            let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Removed since the directory was listed: not there.
                Err(Errno::NOENT) => return Ok(()),
                Err(e) => {
                    self.io_issue(&path, "stat", e);
                    return Ok(());
                }
            };
            let step = match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => self.file(dir, name, &path, &st)?,
                FileType::Directory => self.dir(dir, name, &path, &st)?,
                FileType::Symlink => self.symlink(dir, name, &path, &st)?,
                FileType::Fifo => self.fifo(dir, name, &path, &st)?,
                other => {
                    self.issue(ScanIssue::Unsupported {
                        path,
                        kind: kind_name(other),
                    });
                    return Ok(());
                }
            };
            if let Step::Done = step {
                return Ok(());
            }
        }
        self.issue(ScanIssue::Unstable { path });
        Ok(())
    }

    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &RelPath,
        st: &rustix::fs::Stat,
    ) -> Result<Step, ScanError> {
        let lkey = key_of(st);
        let known = self.known(path)?;
        let mut reuse = None;
        let mut renamed_from = None;
        if let Some(Known {
            key,
            content: Content::File { size, hash },
            racy: false,
        }) = &known
        {
            if key.unchanged(&lkey) && *size == lkey.size {
                reuse = Some(*hash);
            }
        }
        let linked = st.st_nlink > 1;
        if reuse.is_none() && linked {
            if let Some((k, h)) = self.links.get(&(lkey.dev, lkey.ino)) {
                if *k == lkey {
                    reuse = Some(*h);
                }
            }
        }
        if reuse.is_none() {
            let same = |k: &Known| {
                !k.racy
                    && k.key.size == lkey.size
                    && k.key.mtime_ns == lkey.mtime_ns
                    && matches!(k.content, Content::File { size, .. } if size == lkey.size)
            };
            if let Some((old, k)) = self.moved_from(path, &lkey, known.as_ref(), &same)? {
                if let Content::File { hash, .. } = k.content {
                    reuse = Some(hash);
                    renamed_from = Some(old);
                }
            }
        }
        let (st, hash, hashed) = match reuse {
            Some(h) => (*st, h, false),
            None => match self.read(dir, name, path, &lkey) {
                Reading::Hashed(h) => (*st, h, true),
                Reading::Changed => return Ok(Step::Changed),
                Reading::Failed => return Ok(Step::Done),
            },
        };
        let key = key_of(&st);
        let Some(xattrs) = self.xattrs(dir, name, path) else {
            return Ok(Step::Done);
        };
        if linked {
            self.linked
                .entry((key.dev, key.ino))
                .or_default()
                .push(self.report.found.len());
        }
        if linked {
            self.links.insert((key.dev, key.ino), (key, hash));
        }
        let stats = &mut self.report.stats;
        stats.files += 1;
        if hashed {
            stats.hashed_files += 1;
            stats.hashed_bytes += key.size;
        }
        self.report.found.push(Found {
            path: path.clone(),
            node: Node {
                content: Content::File {
                    size: key.size,
                    hash,
                },
                meta: Meta {
                    xattrs,
                    ..meta_of(&st)
                },
            },
            key,
            ctime: ctime_of(&st),
            hashed,
            racy: key.ctime_ns > now_ns().saturating_sub(RACY_WINDOW_NS),
            renamed_from,
        });
        Ok(Step::Done)
    }

    /// Hashes the regular file `name` in `dir`, checking that it is the
    /// inode that was `lstat`ed and that it did not change while read.
    fn read(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &RelPath,
        lkey: &StatKey,
    ) -> Reading {
        // O_NONBLOCK: if a FIFO was swapped in since the stat, do not hang.
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            // Removed or replaced by a symlink since the stat.
            Err(Errno::NOENT) | Err(Errno::LOOP) => return Reading::Changed,
            Err(e) => {
                self.io_issue(path, "open", e);
                return Reading::Failed;
            }
        };
        if lkey.size > BUF_SIZE as u64 {
            // A hint for the kernel's readahead; failure changes nothing.
            let _ = rustix::fs::fadvise(&fd, 0, None, rustix::fs::Advice::Sequential);
        }
        let mut file = File::from(fd);
        let (hash, len) = match hash_stream(&mut file, lkey.size, self.buf.get()) {
            Ok(r) => r,
            Err(e) => {
                self.io_issue(path, "read", e);
                return Reading::Failed;
            }
        };
        // One fstat after the read proves both that this is the inode
        // that was lstat'ed and that it did not change since: any write,
        // truncation, chmod or replacement moves the ctime or the inode.
        match rustix::fs::fstat(&file) {
            Ok(after) if len == lkey.size && key_of(&after) == *lkey => Reading::Hashed(hash),
            Ok(_) => Reading::Changed,
            Err(e) => {
                self.io_issue(path, "stat", e);
                Reading::Failed
            }
        }
    }

    fn dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &RelPath,
        lst: &rustix::fs::Stat,
    ) -> Result<Step, ScanError> {
        let fd = match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            // Removed or replaced since the stat.
            Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Ok(Step::Changed),
            Err(e) => {
                // It is there (the stat said so) but its entries are
                // unknown: report it, and nothing below it vanishes.
                self.found_dir(path, lst)?;
                self.io_issue(path, "open directory", e);
                return Ok(Step::Done);
            }
        };
        let st = match rustix::fs::fstat(&fd) {
            Ok(st) => st,
            Err(e) => {
                self.found_dir(path, lst)?;
                self.io_issue(path, "stat", e);
                return Ok(Step::Done);
            }
        };
        // Only descend into the directory that was listed in its parent.
        let (k, lk) = (key_of(&st), key_of(lst));
        if (k.dev, k.ino) != (lk.dev, lk.ino) {
            return Ok(Step::Changed);
        }
        let xattrs = match crate::xattrs::read_fd(fd.as_fd()) {
            Ok(x) => x,
            Err(e) => {
                self.issue(ScanIssue::Io {
                    path: path.clone(),
                    op: "read the extended attributes of",
                    source: e,
                });
                return Ok(Step::Done);
            }
        };
        self.found_dir_with(path, &st, xattrs)?;
        self.walk_dir(fd.as_fd(), path)?;
        Ok(Step::Done)
    }

    /// Gives every file met with several names the name that leads its
    /// inode's names ([`Meta::link`]), the same whatever order the names
    /// were met in. Among the names (those met, and those the baseline
    /// records for the inode): the one a name's entry already links to,
    /// if it is still one of them, is kept (no change for nothing); else
    /// the smallest of those the baseline records as leading; else the
    /// smallest.
    fn assign_links(&mut self) -> Result<(), ScanError> {
        let linked = std::mem::take(&mut self.linked);
        for ((dev, ino), places) in linked {
            let Some(first) = places.first().map(|&i| self.report.found[i].path.clone()) else {
                continue;
            };
            let err = |source| ScanError::Baseline {
                path: first.clone(),
                source,
            };
            let mut names: Vec<RelPath> = self.baseline.paths_of_inode(dev, ino).map_err(err)?;
            names.extend(places.iter().map(|&i| self.report.found[i].path.clone()));
            names.sort();
            names.dedup();
            let mut recorded = HashMap::new();
            for n in &names {
                if let Some(link) = self.baseline.recorded_link(n).map_err(err)? {
                    recorded.insert(n.clone(), link);
                }
            }
            let fallback = recorded
                .iter()
                .filter(|(_, link)| link.is_none())
                .map(|(n, _)| n)
                .min()
                .or(names.first())
                .cloned();
            for &i in &places {
                let path = &self.report.found[i].path;
                let kept = match recorded.get(path) {
                    Some(Some(l)) if names.contains(l) => Some(l.clone()),
                    _ => None,
                };
                let leader = kept.or_else(|| fallback.clone());
                let link = leader.filter(|l| l != path);
                self.report.hard_links.push(HardLink {
                    dev,
                    ino,
                    path: path.clone(),
                    link: link.clone(),
                });
                self.report.found[i].node.meta.link = link.map(Box::new);
            }
        }
        Ok(())
    }

    /// The extended attributes of `name` in `dir` (see [`crate::xattrs`]);
    /// `None`, with an issue reported, if they cannot be read.
    fn xattrs(&mut self, dir: BorrowedFd<'_>, name: &[u8], path: &RelPath) -> Option<Xattrs> {
        match crate::xattrs::read_at(dir, name) {
            Ok(x) => Some(x),
            // Gone since the stat: the watcher reports what replaced it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                self.issue(ScanIssue::Io {
                    path: path.clone(),
                    op: "read the extended attributes of",
                    source: e,
                });
                None
            }
        }
    }

    /// A named pipe: its metadata only (it is never opened).
    fn fifo(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &RelPath,
        st: &rustix::fs::Stat,
    ) -> Result<Step, ScanError> {
        let key = key_of(st);
        let Some(xattrs) = self.xattrs(dir, name, path) else {
            return Ok(Step::Done);
        };
        let known = self.known(path)?;
        let renamed_from = self
            .moved_from(path, &key, known.as_ref(), &|k| {
                matches!(k.content, Content::Fifo)
            })?
            .map(|(old, _)| old);
        self.report.found.push(Found {
            path: path.clone(),
            node: Node {
                content: Content::Fifo,
                meta: Meta {
                    xattrs,
                    ..meta_of(st)
                },
            },
            key,
            ctime: ctime_of(st),
            hashed: false,
            racy: false,
            renamed_from,
        });
        Ok(Step::Done)
    }

    fn found_dir(&mut self, path: &RelPath, st: &rustix::fs::Stat) -> Result<(), ScanError> {
        self.found_dir_with(path, st, Xattrs::EMPTY)
    }

    fn found_dir_with(
        &mut self,
        path: &RelPath,
        st: &rustix::fs::Stat,
        xattrs: Xattrs,
    ) -> Result<(), ScanError> {
        let key = key_of(st);
        let known = self.known(path)?;
        let renamed_from = self
            .moved_from(path, &key, known.as_ref(), &|k| k.content.is_dir())?
            .map(|(old, _)| old);
        let ctime = ctime_of(st);
        self.dir_ctimes.insert(path.clone(), ctime);
        self.report.stats.dirs += 1;
        self.report.found.push(Found {
            path: path.clone(),
            node: Node {
                content: Content::Dir,
                meta: Meta {
                    xattrs,
                    ..meta_of(st)
                },
            },
            key,
            ctime,
            hashed: false,
            racy: false,
            renamed_from,
        });
        Ok(())
    }

    fn symlink(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &RelPath,
        st: &rustix::fs::Stat,
    ) -> Result<Step, ScanError> {
        let target = match rustix::fs::readlinkat(dir, name, Vec::new()) {
            Ok(t) => t.into_bytes(),
            // Removed, or no longer a symlink, since the stat.
            Err(Errno::NOENT) | Err(Errno::INVAL) => return Ok(Step::Changed),
            Err(e) => {
                self.io_issue(path, "read the target of", e);
                return Ok(Step::Done);
            }
        };
        // The target must belong to the link that was stat'ed: a link
        // replaced in between has another inode or ctime.
        let key = key_of(st);
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(again) if key_of(&again) == key => {}
            Ok(_) | Err(Errno::NOENT) => return Ok(Step::Changed),
            Err(e) => {
                self.io_issue(path, "stat", e);
                return Ok(Step::Done);
            }
        }
        let known = self.known(path)?;
        let same = |k: &Known| matches!(&k.content, Content::Symlink { target: t } if *t == target);
        let renamed_from = self
            .moved_from(path, &key, known.as_ref(), &same)?
            .map(|(old, _)| old);
        self.report.stats.symlinks += 1;
        self.report.found.push(Found {
            path: path.clone(),
            node: Node {
                content: Content::Symlink { target },
                meta: meta_of(st),
            },
            key,
            ctime: ctime_of(st),
            hashed: false,
            racy: false,
            renamed_from,
        });
        Ok(Step::Done)
    }

    /// If `path` holds an inode the baseline knew under another path that
    /// no longer holds it, and `same` accepts what was known there: that
    /// path and what was known.
    fn moved_from(
        &mut self,
        path: &RelPath,
        key: &StatKey,
        known_here: Option<&Known>,
        same: &dyn Fn(&Known) -> bool,
    ) -> Result<Option<(RelPath, Known)>, ScanError> {
        if known_here.is_some_and(|k| (k.key.dev, k.key.ino) == (key.dev, key.ino)) {
            return Ok(None);
        }
        let old = self
            .baseline
            .path_of_inode(key.dev, key.ino)
            .map_err(|source| ScanError::Baseline {
                path: path.clone(),
                source,
            })?;
        let Some(old) = old.filter(|o| o != path) else {
            return Ok(None);
        };
        let Some(k) = self.known(&old)? else {
            return Ok(None);
        };
        if (k.key.dev, k.key.ino) != (key.dev, key.ino) || !same(&k) || !self.gone(&old, key) {
            return Ok(None);
        }
        Ok(Some((old, k)))
    }

    /// Whether `old` no longer holds the inode of `key`. Rename sources
    /// outside the scanned tops are recorded as vanished here, since the
    /// walk will not come across them.
    fn gone(&mut self, old: &RelPath, key: &StatKey) -> bool {
        let gone = match std::fs::symlink_metadata(self.on_disk(old)) {
            Ok(m) => (m.dev(), m.ino()) != (key.dev, key.ino),
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ),
        };
        if gone && !self.tops.iter().any(|t| old == t || old.is_below(t)) {
            let witness = self.witness_on_disk(old);
            self.outside_vanished.insert(old.clone(), witness);
        }
        gone
    }

    fn on_disk(&self, path: &RelPath) -> PathBuf {
        self.root.join(OsStr::from_bytes(path.as_bytes()))
    }

    /// The ctime of the nearest ancestor of `path` seen by the walk.
    fn witness(&self, path: &RelPath) -> Timestamp {
        path.ancestors()
            .find_map(|a| self.dir_ctimes.get(&a).copied())
            .unwrap_or_default()
    }

    /// As [`Walker::witness`], asking the disk about ancestors the walk did
    /// not see.
    fn witness_on_disk(&self, path: &RelPath) -> Timestamp {
        for a in path.ancestors() {
            if let Some(t) = self.dir_ctimes.get(&a) {
                return *t;
            }
            if let Ok(m) = std::fs::symlink_metadata(self.on_disk(&a)) {
                if m.is_dir() {
                    let ns = i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec());
                    return Timestamp(u64::try_from(ns).unwrap_or(0));
                }
            }
        }
        Timestamp::default()
    }

    /// Whether the scan must not judge `path`: it, or an ancestor, is
    /// excluded or could not be established.
    fn blocked(&self, path: &RelPath) -> bool {
        let lineage = || std::iter::once(path.clone()).chain(path.ancestors());
        // The cheap check first; it also spares `exclude` from being asked
        // about paths below a directory it already excluded.
        lineage().any(|p| self.unsure.contains(&p))
            || lineage().any(|p| !p.is_root() && (self.exclude)(&p))
    }

    /// Fills `report.vanished`: what the baseline knew under the tops that
    /// the walk did not find.
    fn vanished(&mut self) -> Result<(), ScanError> {
        let mut missing: Vec<RelPath> = Vec::new();
        {
            let seen: HashSet<&RelPath> = self.report.found.iter().map(|f| &f.path).collect();
            for top in self.tops {
                if self.blocked(top) {
                    continue;
                }
                let live = self
                    .baseline
                    .is_live(top)
                    .map_err(|source| ScanError::Baseline {
                        path: top.clone(),
                        source,
                    })?;
                if !top.is_root() && !seen.contains(top) && live {
                    missing.push(top.clone());
                }
                self.baseline
                    .for_each_below(top, &mut |p| {
                        if !seen.contains(p) {
                            missing.push(p.clone());
                        }
                    })
                    .map_err(|source| ScanError::Baseline {
                        path: top.clone(),
                        source,
                    })?;
            }
        }
        let mut out = std::mem::take(&mut self.outside_vanished);
        for p in missing {
            if !self.blocked(&p) {
                let witness = self.witness(&p);
                out.insert(p, witness);
            }
        }
        self.report.vanished = out
            .into_iter()
            .map(|(path, witness)| Vanished { path, witness })
            .collect();
        Ok(())
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The names in the open directory `fd`, without `.` and `..`.
fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in Dir::read_from(fd)? {
        let entry = entry?;
        let name: &CStr = entry.file_name();
        let name = name.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Hashes the first `size` bytes of `r` (fewer if it ends first) through
/// `buf`: memory stays at the buffer's size whatever the file's. Returns
/// the hash and the length read, which exceeds `size` only if the file
/// grew. Not reading up to end of file spares a read call per small
/// file; the caller's fstat catches a file that grew.
fn hash_stream(r: &mut impl io::Read, size: u64, buf: &mut [u8]) -> io::Result<(Hash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut len = 0u64;
    while len < size {
        match r.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((*hasher.finalize().as_bytes(), len))
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

// The field types of `Stat` differ between architectures (and are equal to
// the target types on some), hence the casts.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn key_of(st: &rustix::fs::Stat) -> StatKey {
    StatKey {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        size: u64::try_from(st.st_size).unwrap_or(0),
        mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
        ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
    }
}

fn ctime_of(st: &rustix::fs::Stat) -> Timestamp {
    Timestamp(u64::try_from(key_of(st).ctime_ns).unwrap_or(0))
}

/// The metadata of what `st` describes, with this host's names for its
/// owner and group.
fn meta_of(st: &rustix::fs::Stat) -> Meta {
    crate::owners::with_names(Meta {
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime_ns: key_of(st).mtime_ns,
        ..Meta::default()
    })
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "file of unknown type",
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn p(s: &str) -> RelPath {
        RelPath::new(s.as_bytes()).expect("valid path")
    }

    fn put(root: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        fs::write(&path, bytes).expect("write");
        path
    }

    fn scan_all(root: &Path, baseline: &dyn ScanBaseline) -> ScanReport {
        scan(root, &[RelPath::root()], &|_| false, baseline).expect("scan")
    }

    /// A baseline that trusts every key in `report`, as the index would
    /// for files older than the racy window (test files are all new).
    fn trusted(report: &ScanReport) -> MemBaseline {
        let mut b = MemBaseline::new();
        for f in &report.found {
            b.insert(
                f.path.clone(),
                Known {
                    racy: false,
                    ..f.known()
                },
            );
        }
        b
    }

    fn paths(report: &ScanReport) -> Vec<String> {
        report.found.iter().map(|f| f.path.to_string()).collect()
    }

    fn file_hash(f: &Found) -> Hash {
        match f.node.content {
            Content::File { hash, .. } => hash,
            ref other => panic!("{} is a {}, not a file", f.path, other.kind()),
        }
    }

    fn ctime_ns(path: &Path) -> u64 {
        let m = fs::symlink_metadata(path).expect("lstat");
        u64::try_from(m.ctime() * 1_000_000_000 + m.ctime_nsec()).expect("after 1970")
    }

    const FAKE: Hash = [7; 32];

    #[test]
    fn basic_tree_reports_files_dirs_symlinks_with_meta() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let index = put(root, "srv/www/index.html", b"hello");
        fs::set_permissions(&index, fs::Permissions::from_mode(0o640)).expect("chmod");
        let mtime = filetime::FileTime::from_unix_time(1_000_000_000, 123_456_789);
        filetime::set_file_mtime(&index, mtime).expect("utimes");
        let tool = put(root, "srv/www/sub/tool", b"#!/bin/sh\n");
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755)).expect("chmod");
        fs::set_permissions(root.join("srv/www/sub"), fs::Permissions::from_mode(0o750))
            .expect("chmod");
        symlink("index.html", root.join("srv/www/link")).expect("symlink");
        put(root, "other/not-scanned", b"x");

        let r = scan(root, &[p("srv/www")], &|_| false, &MemBaseline::new()).expect("scan");

        assert_eq!(
            paths(&r),
            [
                "srv/www",
                "srv/www/index.html",
                "srv/www/link",
                "srv/www/sub",
                "srv/www/sub/tool"
            ]
        );
        assert!(r.issues.is_empty(), "{:?}", r.issues);
        assert!(r.vanished.is_empty());

        let md = fs::metadata(&index).expect("stat");
        let f = r.get(&p("srv/www/index.html")).expect("index found");
        assert_eq!(
            f.node,
            Node {
                content: Content::File {
                    size: 5,
                    hash: *blake3::hash(b"hello").as_bytes()
                },
                meta: crate::owners::with_names(Meta {
                    mode: 0o640,
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime_ns: 1_000_000_000_123_456_789,
                    ..Default::default()
                }),
            }
        );
        assert_eq!((f.key.dev, f.key.ino, f.key.size), (md.dev(), md.ino(), 5));
        assert_eq!(f.key.mtime_ns, 1_000_000_000_123_456_789);
        assert_eq!(f.ctime, Timestamp(ctime_ns(&index)));
        assert_eq!(
            f.when(Timestamp(9)),
            When::Scanned {
                ctime: f.ctime,
                floor: Timestamp(9)
            }
        );
        assert!(f.hashed);
        assert!(f.racy, "a file written just now is racy");
        assert_eq!(f.renamed_from, None);

        let tool = r.get(&p("srv/www/sub/tool")).expect("tool found");
        assert_eq!(
            tool.node.meta.mode, 0o4755,
            "setuid bit kept, file type dropped"
        );
        let sub = r.get(&p("srv/www/sub")).expect("sub found");
        assert_eq!(sub.node.content, Content::Dir);
        assert_eq!(sub.node.meta.mode, 0o750);
        let link = r.get(&p("srv/www/link")).expect("link found");
        assert_eq!(
            link.node.content,
            Content::Symlink {
                target: b"index.html".to_vec()
            }
        );
        assert_eq!(link.node.meta.mode, 0o777);
        assert!(!link.hashed);

        assert_eq!(
            r.stats,
            ScanStats {
                files: 2,
                dirs: 2,
                symlinks: 1,
                hashed_files: 2,
                hashed_bytes: 15,
            }
        );
    }

    #[test]
    fn excluded_dir_is_not_descended_nor_vanished() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        put(root, "keep/a", b"a");
        put(root, "cache/deep/b", b"b");
        let mut base = MemBaseline::new();
        let k = Known {
            key: StatKey::default(),
            content: Content::File {
                size: 1,
                hash: FAKE,
            },
            racy: false,
        };
        base.insert(p("cache/deep/gone"), k.clone());
        base.insert(p("cache/gone-too"), k);

        let asked = RefCell::new(Vec::new());
        let exclude = |path: &RelPath| {
            asked.borrow_mut().push(path.to_string());
            path.as_bytes() == b"cache"
        };
        let r = scan(root, &[RelPath::root()], &exclude, &base).expect("scan");
        assert_eq!(paths(&r), ["keep", "keep/a"]);
        assert!(
            !asked.borrow().iter().any(|a| a.starts_with("cache/")),
            "looked inside an excluded directory: {:?}",
            asked.borrow()
        );
        assert!(
            r.vanished.is_empty(),
            "excluded paths are not judged: {:?}",
            r.vanished
        );
    }

    #[test]
    fn symlink_to_directory_is_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        put(root, "real/inside", b"x");
        symlink("real", root.join("alias")).expect("symlink");
        symlink("/", root.join("escape")).expect("symlink");

        let r = scan_all(root, &MemBaseline::new());
        assert_eq!(paths(&r), ["alias", "escape", "real", "real/inside"]);
        assert_eq!(
            r.get(&p("alias")).expect("alias").node.content,
            Content::Symlink {
                target: b"real".to_vec()
            }
        );
        assert_eq!(r.stats.symlinks, 2);

        // A top reached through a symlink is refused, not followed.
        let r = scan(root, &[p("escape/etc")], &|_| false, &MemBaseline::new()).expect("scan");
        assert!(r.found.is_empty());
        assert!(
            matches!(&r.issues[..], [ScanIssue::SymlinkAncestor { path, .. }] if *path == p("escape")),
            "{:?}",
            r.issues
        );
    }

    #[test]
    fn non_utf8_and_newline_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let dir = root.join(OsStr::from_bytes(b"new\nline"));
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join(OsStr::from_bytes(b"bad\xff\xfe")), b"bytes").expect("write");
        symlink(OsStr::from_bytes(b"\xffx\ny"), root.join("l")).expect("symlink");

        let r = scan_all(root, &MemBaseline::new());
        let got: Vec<&[u8]> = r.found.iter().map(|f| f.path.as_bytes()).collect();
        assert_eq!(got, [&b"l"[..], b"new\nline", b"new\nline/bad\xff\xfe"]);
        let f = r
            .get(&RelPath::new(&b"new\nline/bad\xff\xfe"[..]).expect("path"))
            .expect("found");
        assert_eq!(file_hash(f), *blake3::hash(b"bytes").as_bytes());
        assert_eq!(
            r.get(&p("l")).expect("l").node.content,
            Content::Symlink {
                target: b"\xffx\ny".to_vec()
            }
        );
        assert!(r.issues.is_empty(), "{:?}", r.issues);
    }

    #[test]
    fn unchanged_file_is_not_reread() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        put(root, "a", b"content");
        let first = scan_all(root, &MemBaseline::new());
        let mut base = trusted(&first);
        // A hash nobody could compute from the file: finding it in the
        // report proves the file was not read.
        let mut k = base.known(&p("a")).expect("ok").expect("known");
        k.content = Content::File {
            size: 7,
            hash: FAKE,
        };
        base.insert(p("a"), k);

        let r = scan_all(root, &base);
        let f = r.get(&p("a")).expect("a");
        assert_eq!(file_hash(f), FAKE);
        assert!(!f.hashed);
        assert_eq!(r.stats.hashed_files, 0);
        assert!(r.vanished.is_empty());
    }

    #[test]
    fn racy_baseline_key_is_not_trusted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        put(root, "a", b"content");
        let first = scan_all(root, &MemBaseline::new());
        let mut base = MemBaseline::from_report(&first);
        let mut k = base.known(&p("a")).expect("ok").expect("known");
        assert!(k.racy, "recorded within the racy window");
        k.content = Content::File {
            size: 7,
            hash: FAKE,
        };
        base.insert(p("a"), k);

        let f = scan_all(root, &base).found.remove(0);
        assert!(f.hashed);
        assert_eq!(file_hash(&f), *blake3::hash(b"content").as_bytes());
    }

    #[test]
    fn changed_mtime_is_rehashed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let a = put(root, "a", b"content");
        let first = scan_all(root, &MemBaseline::new());
        let mut base = trusted(&first);
        let mut k = base.known(&p("a")).expect("ok").expect("known");
        k.content = Content::File {
            size: 7,
            hash: FAKE,
        };
        base.insert(p("a"), k);
        filetime::set_file_mtime(&a, filetime::FileTime::from_unix_time(1_234_567_890, 0))
            .expect("utimes");

        let f = scan_all(root, &base).found.remove(0);
        assert!(f.hashed);
        assert_eq!(file_hash(&f), *blake3::hash(b"content").as_bytes());
        assert_eq!(f.node.meta.mtime_ns, 1_234_567_890_000_000_000);
    }

    #[test]
    fn rename_while_down_is_detected_without_hashing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        put(root, "d/old", b"content");
        put(root, "d/other", b"x");
        let mut base = trusted(&scan_all(root, &MemBaseline::new()));
        let mut k = base.known(&p("d/old")).expect("ok").expect("known");
        k.content = Content::File {
            size: 7,
            hash: FAKE,
        };
        base.insert(p("d/old"), k);

        fs::rename(root.join("d/old"), root.join("d/new")).expect("rename");
        let r = scan_all(root, &base);
        let f = r.get(&p("d/new")).expect("new");
        assert_eq!(f.renamed_from, Some(p("d/old")));
        assert!(!f.hashed);
        assert_eq!(file_hash(f), FAKE, "hash carried over from the old path");
        assert_eq!(
            r.renames().collect::<Vec<_>>(),
            [(&p("d/old"), &p("d/new"))]
        );
        assert_eq!(
            r.vanished,
            [Vanished {
                path: p("d/old"),
                witness: Timestamp(ctime_ns(&root.join("d"))),
            }]
        );
        assert_eq!(r.stats.hashed_files, 0);
    }

    #[test]
    fn modified_then_renamed_is_rehashed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let old = put(root, "old", b"content");
        let base = trusted(&scan_all(root, &MemBaseline::new()));
        fs::write(&old, b"longer content").expect("write");
        fs::rename(&old, root.join("new")).expect("rename");

        let r = scan_all(root, &base);
        let f = r.get(&p("new")).expect("new");
        assert!(f.hashed);
        assert_eq!(f.renamed_from, None, "not provably the same content");
        assert_eq!(file_hash(f), *blake3::hash(b"longer content").as_bytes());
        assert_eq!(r.vanished.len(), 1);
    }

    #[test]
    fn directory_rename_while_down_rehashes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        for i in 0..5 {
            put(
                root,
                &format!("top/before/f{i}"),
                format!("file {i}").as_bytes(),
            );
        }
        let base = trusted(&scan_all(root, &MemBaseline::new()));
        fs::rename(root.join("top/before"), root.join("top/after")).expect("rename");

        let r = scan_all(root, &base);
        assert_eq!(r.stats.hashed_files, 0);
        let renames: Vec<(String, String)> = r
            .renames()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(renames.len(), 6, "{renames:?}");
        assert!(renames.contains(&("top/before".into(), "top/after".into())));
        assert!(renames.contains(&("top/before/f3".into(), "top/after/f3".into())));
        let witness = Timestamp(ctime_ns(&root.join("top")));
        assert_eq!(r.vanished.len(), 6);
        assert!(r
            .vanished
            .iter()
            .all(|v| v.witness == witness && v.path.is_below(&p("top"))));
    }

    #[test]
    fn hard_links_are_hashed_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let a = put(root, "a", b"shared");
        fs::hard_link(&a, root.join("b")).expect("link");
        put(root, "c", b"single");

        let r = scan_all(root, &MemBaseline::new());
        assert_eq!(
            r.stats.hashed_files, 2,
            "a and b share one read, c has its own"
        );
        let (fa, fb) = (r.get(&p("a")).expect("a"), r.get(&p("b")).expect("b"));
        assert!(fa.hashed && !fb.hashed);
        assert_eq!(file_hash(fa), *blake3::hash(b"shared").as_bytes());
        assert_eq!(fa.node.content, fb.node.content);
        // a leads (the smaller name), b names it.
        assert_eq!(fa.node.meta.link, None);
        assert_eq!(fb.node.meta.link.as_deref(), Some(&p("a")));
        assert_eq!(r.get(&p("c")).expect("c").node.meta.link, None);
        assert_eq!(fb.renamed_from, None);
    }

    #[test]
    fn new_hard_link_to_a_known_file_is_not_a_rename() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let a = put(root, "a", b"shared");
        let base = trusted(&scan_all(root, &MemBaseline::new()));
        fs::hard_link(&a, root.join("b")).expect("link");

        let r = scan_all(root, &base);
        assert_eq!(r.renames().count(), 0);
        assert!(r.vanished.is_empty());
        let fb = r.get(&p("b")).expect("b");
        assert_eq!(file_hash(fb), *blake3::hash(b"shared").as_bytes());
        // The link changed a's ctime, so a is read; b then shares it.
        assert_eq!(r.stats.hashed_files, 1);
    }

    #[test]
    fn missing_top_is_absent_not_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        put(root, "here/x", b"x");
        put(root, "file", b"f");
        let tops = [p("nowhere/deeper"), p("here"), p("file/below"), p("gone")];
        let r = scan(root, &tops, &|_| false, &MemBaseline::new()).expect("scan");
        assert_eq!(paths(&r), ["here", "here/x"]);
        assert!(r.issues.is_empty(), "{:?}", r.issues);

        let err = scan(
            &root.join("no-root"),
            &tops,
            &|_| false,
            &MemBaseline::new(),
        )
        .expect_err("the root itself must exist");
        assert!(err.to_string().contains("no-root"), "{err}");
    }

    #[test]
    fn file_larger_than_the_buffer_hashes_correctly() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let mut data = Vec::with_capacity(3 * BUF_SIZE + 12_345);
        let mut x: u32 = 1;
        while data.len() < 3 * BUF_SIZE + 12_345 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data.push(x as u8);
        }
        put(root, "big", &data);
        let r = scan_all(root, &MemBaseline::new());
        let f = r.get(&p("big")).expect("big");
        assert_eq!(file_hash(f), *blake3::hash(&data).as_bytes());
        assert_eq!(f.key.size, data.len() as u64);
        assert_eq!(r.stats.hashed_bytes, data.len() as u64);
    }

    #[test]
    fn read_buffer_is_page_aligned() {
        for _ in 0..4 {
            let mut b = AlignedBuf::new(BUF_SIZE);
            let buf = b.get();
            assert_eq!(buf.len(), BUF_SIZE);
            assert_eq!(
                buf.as_ptr() as usize % BUF_ALIGN,
                0,
                "half-speed copies otherwise"
            );
        }
    }

    #[test]
    fn vanished_paths_carry_their_nearest_parents_ctime() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        put(root, "top/keep", b"k");
        put(root, "top/lost", b"l");
        put(root, "top/sub/deep/x", b"x");
        put(root, "elsewhere/y", b"y");
        let base = trusted(&scan_all(root, &MemBaseline::new()));
        fs::remove_file(root.join("top/lost")).expect("rm");
        fs::remove_dir_all(root.join("top/sub")).expect("rm -r");
        fs::remove_dir_all(root.join("elsewhere")).expect("rm -r");

        let r = scan(root, &[p("top")], &|_| false, &base).expect("scan");
        let witness = Timestamp(ctime_ns(&root.join("top")));
        let got: Vec<(String, Timestamp)> = r
            .vanished
            .iter()
            .map(|v| (v.path.to_string(), v.witness))
            .collect();
        let want: Vec<(String, Timestamp)> =
            ["top/lost", "top/sub", "top/sub/deep", "top/sub/deep/x"]
                .iter()
                .map(|s| (s.to_string(), witness))
                .collect();
        assert_eq!(got, want, "elsewhere/ is not under the scanned top");
        assert_eq!(
            r.vanished[0].when(Timestamp(9)),
            When::Scanned {
                ctime: witness,
                floor: Timestamp(9)
            }
        );

        // A whole top gone: witnessed by the root.
        let r = scan(root, &[p("elsewhere")], &|_| false, &base).expect("scan");
        let witness = Timestamp(ctime_ns(root));
        let got: Vec<(String, Timestamp)> = r
            .vanished
            .iter()
            .map(|v| (v.path.to_string(), v.witness))
            .collect();
        assert_eq!(
            got,
            [
                ("elsewhere".to_string(), witness),
                ("elsewhere/y".to_string(), witness)
            ]
        );
    }

    #[test]
    fn sockets_are_issues_and_not_vanished_and_fifos_are_found() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        put(root, "sock", b"was a file");
        put(root, "fifo", b"was a file");
        let base = trusted(&scan_all(root, &MemBaseline::new()));
        fs::remove_file(root.join("sock")).expect("rm");
        let _listener = std::os::unix::net::UnixListener::bind(root.join("sock")).expect("bind");
        fs::remove_file(root.join("fifo")).expect("rm");
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .expect("mkfifo");

        let r = scan_all(root, &base);
        assert!(r.vanished.is_empty());
        assert!(
            matches!(
                &r.issues[..],
                [ScanIssue::Unsupported { kind: "socket", .. }]
            ),
            "{:?}",
            r.issues
        );
        let fifo = r.get(&p("fifo")).expect("the FIFO");
        assert_eq!(fifo.node.content, Content::Fifo);
        assert_eq!(fifo.node.meta.mode, 0o640);
        assert_eq!(r.found.len(), 1, "{:?}", r.found);
        // Said once per path, however often it is met.
        assert!(r.issues[0].worth_logging());
        assert!(!r.issues[0].worth_logging());
    }

    #[test]
    fn overlapping_tops_are_scanned_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        put(root, "a/b/c", b"c");
        let r = scan(
            root,
            &[p("a/b"), p("a"), p("a")],
            &|_| false,
            &MemBaseline::new(),
        )
        .expect("scan");
        assert_eq!(paths(&r), ["a", "a/b", "a/b/c"]);
    }

    #[test]
    fn a_file_that_changed_since_its_stat_is_read_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let a = put(root, "a", b"before");
        let md = fs::symlink_metadata(&a).expect("lstat");
        let mut key = StatKey {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        };
        let tops = [RelPath::root()];
        let base = MemBaseline::new();
        let mut w = Walker::new(root, &tops, &|_| false, &base);
        let dir = File::open(root).expect("open root");
        let dir = dir.as_fd();
        assert!(
            matches!(w.read(dir, b"a", &p("a"), &key), Reading::Hashed(h) if h == *blake3::hash(b"before").as_bytes())
        );
        // What a write between the lstat and the read looks like.
        key.ctime_ns -= 1;
        assert!(matches!(w.read(dir, b"a", &p("a"), &key), Reading::Changed));
        key.ctime_ns += 1;
        key.size += 1;
        assert!(
            matches!(w.read(dir, b"a", &p("a"), &key), Reading::Changed),
            "a torn read is not a hash"
        );
        // Replaced by another inode.
        fs::remove_file(&a).expect("rm");
        put(root, "a", b"before");
        key.size -= 1;
        assert!(matches!(w.read(dir, b"a", &p("a"), &key), Reading::Changed));
        assert!(w.report.issues.is_empty());
    }

    /// Runs `f` in this thread with filesystem permissions checked as
    /// `nobody` when running as root (root reads everything otherwise).
    /// The fsuid is per thread, so other tests are unaffected.
    fn without_privilege<T>(f: impl FnOnce() -> T) -> T {
        let root = nix::unistd::geteuid().is_root();
        if root {
            nix::unistd::setfsuid(nix::unistd::Uid::from_raw(65534));
        }
        let out = f();
        if root {
            nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0));
        }
        out
    }

    #[test]
    fn unreadable_paths_are_issues_not_vanished() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
        put(root, "locked/inside", b"secret");
        let secret = put(root, "secret", b"s");
        put(root, "open", b"o");
        let base = trusted(&scan_all(root, &MemBaseline::new()));
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).expect("chmod");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).expect("chmod");

        let r = without_privilege(|| scan_all(root, &base));
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755)).expect("chmod");

        assert_eq!(
            paths(&r),
            ["locked", "open"],
            "the locked directory itself is there"
        );
        let mut failed: Vec<(String, &str)> = r
            .issues
            .iter()
            .map(|i| match i {
                ScanIssue::Io { path, op, source } => {
                    assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
                    (path.to_string(), *op)
                }
                other => panic!("unexpected issue {other}"),
            })
            .collect();
        failed.sort();
        assert_eq!(
            failed,
            [
                ("locked".to_string(), "open directory"),
                ("secret".to_string(), "open")
            ]
        );
        assert!(
            r.vanished.is_empty(),
            "unknown is not gone: {:?}",
            r.vanished
        );
        assert!(r.issues[0].to_string().contains("locked"));
    }
}
