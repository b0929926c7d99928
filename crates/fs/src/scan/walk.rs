//! The walk: opening the way to each top without following a symlink,
//! listing each directory, and looking at each entry (`lstat`, then by
//! kind: regular files in `hash.rs`, directories, symlinks and FIFOs
//! here), again if it changed between two system calls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use omirr_core::tree::Node;
use omirr_core::{Content, Hash, Meta, RelPath, StatKey, Timestamp, Xattrs};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::baseline::{Known, ScanBaseline};
use super::buf::{AlignedBuf, BUF_SIZE};
use super::report::{Found, ScanError, ScanIssue, ScanReport};
use super::stat::{ctime_of, key_of, kind_name, meta_of};
use super::TRIES;

/// What became of one look at an entry.
pub(super) enum Step {
    Done,
    /// The entry changed between two system calls: look again.
    Changed,
}

pub(super) struct Walker<'a> {
    pub(super) root: &'a Path,
    pub(super) tops: &'a [RelPath],
    pub(super) exclude: &'a dyn Fn(&RelPath) -> bool,
    pub(super) baseline: &'a dyn ScanBaseline,
    pub(super) buf: AlignedBuf,
    /// Files with several links hashed in this scan, so that the other
    /// links are not read again.
    pub(super) links: HashMap<(u64, u64), (StatKey, Hash)>,
    /// The files with several names met, by inode: their places in
    /// `report.found` (see [`Walker::assign_links`]).
    pub(super) linked: HashMap<(u64, u64), Vec<usize>>,
    /// The ctime of every directory seen (and of the tops' ancestors):
    /// witnesses for deletions below them.
    pub(super) dir_ctimes: HashMap<RelPath, Timestamp>,
    /// Paths the scan could not establish or was told to leave alone.
    pub(super) unsure: HashSet<RelPath>,
    /// Rename sources outside the scanned tops, found gone.
    pub(super) outside_vanished: BTreeMap<RelPath, Timestamp>,
    pub(super) report: ScanReport,
}

impl<'a> Walker<'a> {
    pub(super) fn new(
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

    pub(super) fn issue(&mut self, issue: ScanIssue) {
        self.unsure.insert(issue.path().clone());
        self.report.issues.push(issue);
    }

    pub(super) fn io_issue(&mut self, path: &RelPath, op: &'static str, e: impl Into<io::Error>) {
        self.issue(ScanIssue::Io {
            path: path.clone(),
            op,
            source: e.into(),
        });
    }

    pub(super) fn known(&self, path: &RelPath) -> Result<Option<Known>, ScanError> {
        self.baseline
            .known(path)
            .map_err(|source| ScanError::Baseline {
                path: path.clone(),
                source,
            })
    }

    /// Opens the way to `top` without following symlinks and visits it.
    pub(super) fn top(&mut self, root_fd: &OwnedFd, top: &RelPath) -> Result<(), ScanError> {
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
        // Read through the descriptor already open, with no path walk:
        // cheap enough not to be taken from the baseline.
        self.report.stats.xattr_reads += 1;
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

    /// The extended attributes of `name` in `dir` (see [`crate::xattrs`]);
    /// `None`, with an issue reported, if they cannot be read.
    pub(super) fn xattrs(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &RelPath,
    ) -> Option<Xattrs> {
        self.report.stats.xattr_reads += 1;
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

    pub(super) fn on_disk(&self, path: &RelPath) -> PathBuf {
        self.root.join(OsStr::from_bytes(path.as_bytes()))
    }
}

pub(super) const DIR_FLAGS: OFlags = OFlags::RDONLY
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
