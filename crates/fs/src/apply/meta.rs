//! Metadata: owner, group, mode, extended attributes and mtime, set on
//! what the actions make (and by `SetMeta` on what is there), as the
//! rules of each path say ([`crate::owners`]); never a symlink's mode,
//! never through a symlink.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::error::{io_error, unexpected};
use super::open::lstat;
use super::Applier;
use super::ApplyError;
use super::Batch;
use crate::owners::{self, Check, MetaRules};
use crate::scan::kind_name;
use omirr_core::{Meta, RelPath};
use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::fs::{Timespec, Timestamps};
use rustix::io::Errno;

/// Where the owner, group or mode that the rules keep comes from.
#[derive(Clone, Copy)]
pub(super) enum Was {
    /// The object being changed, which is there already: kept fields stay
    /// as they are.
    Itself,
    /// A new object that replaces what `lstat` found (nothing: `None`):
    /// kept fields are copied from it, or, for something new, come from
    /// the entry.
    Replacing(Option<rfs::Stat>),
}

impl Applier {
    /// Owner, mode and mtime on an open file or directory, as the rules
    /// for `path` say (`was`: where kept fields come from). Owner first:
    /// chown clears the set-id bits, so chmod must come after it.
    pub(super) fn set_meta_fd(
        &self,
        fd: BorrowedFd<'_>,
        path: &RelPath,
        meta: &Meta,
        was: Was,
    ) -> Result<(), ApplyError> {
        let rules = self.rules.rules(path);
        let (uid, gid) = self.owner(path, meta, &rules, was)?;
        let mode = match (rules.keep_mode, was) {
            (false, _) | (true, Was::Replacing(None)) => Some(meta.mode & 0o7777),
            (true, Was::Replacing(Some(old))) => {
                let now = rfs::fstat(fd).map_err(|e| io_error(path, "inspect", e))?;
                // Only a file's mode is a file's, a directory's a
                // directory's.
                if FileType::from_raw_mode(now.st_mode) == FileType::from_raw_mode(old.st_mode) {
                    Some(old.st_mode & 0o7777)
                } else {
                    Some(meta.mode & 0o7777)
                }
            }
            // Kept as it is; but a chown below clears the set-id bits,
            // which are then put back.
            (true, Was::Itself) if uid.is_some() || gid.is_some() => Some(
                rfs::fstat(fd)
                    .map_err(|e| io_error(path, "inspect", e))?
                    .st_mode
                    & 0o7777,
            ),
            (true, Was::Itself) => None,
        };
        if uid.is_some() || gid.is_some() {
            rfs::fchown(fd, uid, gid).map_err(|e| io_error(path, "set the owner of", e))?;
        }
        if let Some(mode) = mode {
            rfs::fchmod(fd, Mode::from_raw_mode(mode))
                .map_err(|e| io_error(path, "set the mode of", e))?;
        }
        // After the mode: an access ACL sets the group bits as it needs.
        crate::xattrs::set_fd(fd, &meta.xattrs, &|n| rules.mirrors_xattr(n)).map_err(|e| {
            ApplyError::Io {
                path: path.clone(),
                op: "set the extended attributes of",
                error: e,
            }
        })?;
        rfs::futimens(fd, &mtime(meta.mtime_ns)).map_err(|e| io_error(path, "set the mtime of", e))
    }

    /// Owner and mtime of the symlink `name` in `dir` (never its mode).
    pub(super) fn set_symlink_meta(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        path: &RelPath,
        meta: &Meta,
        was: Was,
    ) -> Result<(), ApplyError> {
        let rules = self.rules.rules(path);
        let (uid, gid) = self.owner(path, meta, &rules, was)?;
        if uid.is_some() || gid.is_some() {
            rfs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_error(path, "set the owner of", e))?;
        }
        rfs::utimensat(dir, name, &mtime(meta.mtime_ns), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_error(path, "set the mtime of", e))
    }

    /// The owner and group to set, if we set owners: this host's rendering
    /// of the entry's (see [`crate::owners`]); for a kept one, nothing on
    /// the object itself, the old object's on a replacement, and the
    /// entry's (by name) on something new.
    fn owner(
        &self,
        path: &RelPath,
        meta: &Meta,
        rules: &MetaRules,
        was: Was,
    ) -> Result<(Option<Uid>, Option<Gid>), ApplyError> {
        if !self.options.set_owner {
            return Ok((None, None));
        }
        let by_name = MetaRules {
            owner: Check::ByName,
            group: Check::ByName,
            ..rules.clone()
        };
        let uid = match (owners::local_uid(path, meta, rules), was) {
            (Some(uid), _) => Some(uid),
            (None, Was::Itself) => None,
            (None, Was::Replacing(Some(old))) => Some(old.st_uid),
            (None, Was::Replacing(None)) => owners::local_uid(path, meta, &by_name),
        };
        let gid = match (owners::local_gid(path, meta, rules), was) {
            (Some(gid), _) => Some(gid),
            (None, Was::Itself) => None,
            (None, Was::Replacing(Some(old))) => Some(old.st_gid),
            (None, Was::Replacing(None)) => owners::local_gid(path, meta, &by_name),
        };
        // -1 means "leave unchanged" to chown; from a peer it is garbage.
        if uid == Some(u32::MAX) || gid == Some(u32::MAX) {
            return Err(ApplyError::InvalidOwner {
                path: path.clone(),
                uid: meta.uid,
                gid: meta.gid,
            });
        }
        Ok((uid.map(Uid::from_raw), gid.map(Gid::from_raw)))
    }

    /// Sets `meta` on whatever is at `name` in `dir` (a symlink gets owner
    /// and mtime only) and returns its kind; `expect` refuses other kinds.
    pub(super) fn set_meta_at(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        path: &RelPath,
        meta: &Meta,
        expect: Option<FileType>,
        was: Was,
    ) -> Result<FileType, ApplyError> {
        let kind = match lstat(dir, name, path)? {
            Some(st) => FileType::from_raw_mode(st.st_mode),
            None => return Err(io_error(path, "set the metadata of", Errno::NOENT)),
        };
        if let Some(want) = expect {
            if kind != want {
                return Err(unexpected(path, kind_name(want), kind));
            }
        }
        match kind {
            FileType::Symlink => self.set_symlink_meta(dir, name, path, meta, was)?,
            FileType::RegularFile | FileType::Directory | FileType::Fifo => {
                // O_NOFOLLOW: if it was swapped for a symlink since the
                // lstat, this fails rather than following it.
                // O_NONBLOCK: nor may a FIFO planted there hang us.
                let flags = OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC;
                let fd = rfs::openat(dir, name, flags, Mode::empty())
                    .map_err(|e| io_error(path, "open", e))?;
                let st = rfs::fstat(&fd).map_err(|e| io_error(path, "inspect", e))?;
                let now = FileType::from_raw_mode(st.st_mode);
                if now != kind {
                    return Err(unexpected(path, kind_name(kind), now));
                }
                self.set_meta_fd(fd.as_fd(), path, meta, was)?;
            }
            other => return Err(unexpected(path, "file, directory, symlink or FIFO", other)),
        }
        Ok(kind)
    }
}

impl Batch<'_> {
    pub(super) fn set_meta(
        &mut self,
        index: usize,
        path: &RelPath,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        if path.is_root() {
            return self.set_root_meta(index, meta);
        }
        let (dir, name) = self.ap.parent(path, "set the metadata of", None)?;
        self.changed_here.insert(path.clone());
        let kind = self
            .ap
            .set_meta_at(&dir, name, path, meta, None, Was::Itself)?;
        self.meta_set(index, path, kind, meta);
        Ok(())
    }

    pub(super) fn set_root_meta(&mut self, index: usize, meta: &Meta) -> Result<(), ApplyError> {
        self.ap
            .set_meta_fd(self.ap.root.as_fd(), &RelPath::root(), meta, Was::Itself)?;
        self.dir_times
            .insert(RelPath::root(), (index, meta.mtime_ns));
        self.touched.insert(RelPath::root());
        Ok(())
    }

    /// Records what a metadata change on `path` (of `kind`) needs later.
    pub(super) fn meta_set(&mut self, index: usize, path: &RelPath, kind: FileType, meta: &Meta) {
        if kind == FileType::Directory {
            self.dir_times.insert(path.clone(), (index, meta.mtime_ns));
            self.touched.insert(path.clone());
        } else if kind == FileType::RegularFile {
            self.meta_changed.insert(path.clone());
        } else {
            // A symlink cannot be opened to fsync; its directory's
            // barrier carries it.
            self.touch_parent(path);
        }
    }
}

/// Only the mtime; the access time is left alone (UTIME_OMIT).
pub(super) fn mtime(ns: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: ns.div_euclid(1_000_000_000),
            tv_nsec: ns.rem_euclid(1_000_000_000),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;
    use crate::apply::ApplyOptions;
    use omirr_core::Action;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn set_meta_changes_mode_owner_and_mtime_but_not_content() {
        let (dir, ap) = default_setup();
        let f = dir.path().join("f");
        fs::write(&f, b"content").expect("write");
        let ino = fs::metadata(&f).expect("stat").ino();
        let mut m = meta(0o4710, T);
        if is_root() {
            m.uid = 12345;
            m.gid = 23456;
        }
        ap.apply(
            &[Action::SetMeta {
                path: p("f"),
                meta: m,
            }],
            &mut Mem::default(),
        )
        .expect("apply");
        let st = fs::metadata(&f).expect("stat");
        assert_eq!(st.ino(), ino);
        assert_eq!(fs::read(&f).expect("read"), b"content");
        // Set-id bits survive because the owner is set before the mode.
        assert_eq!(mode_of(&f), 0o4710);
        assert_eq!(mtime_ns(&f), T);
        if is_root() {
            assert_eq!((st.uid(), st.gid()), (12345, 23456));
        } else {
            eprintln!("not root: owner not checked");
        }
    }

    #[test]
    fn owners_are_set_on_files_directories_and_symlinks_when_root() {
        if !is_root() {
            eprintln!("not root: skipped");
            return;
        }
        let (dir, ap) = default_setup();
        let m = Meta {
            mode: 0o2755,
            uid: 12345,
            gid: 23456,
            mtime_ns: T,
            ..Default::default()
        };
        ap.apply(
            &[
                Action::MakeDir {
                    path: p("d"),
                    meta: m.clone(),
                },
                write("d/f", b"f", m.clone()),
                Action::MakeSymlink {
                    path: p("d/l"),
                    target: b"f".to_vec(),
                    meta: m.clone(),
                },
            ],
            &mut Mem::with(&[b"f"]),
        )
        .expect("apply");
        for n in ["d", "d/f", "d/l"] {
            let st = fs::symlink_metadata(dir.path().join(n)).expect("stat");
            assert_eq!((st.uid(), st.gid()), (12345, 23456), "{n}");
        }
        assert_eq!(mode_of(&dir.path().join("d/f")), 0o2755);

        // Without set_owner the owner is left as made.
        let (dir, ap) = setup(ApplyOptions {
            set_owner: false,
            ..ApplyOptions::default()
        });
        ap.apply(&[write("f", b"f", m.clone())], &mut Mem::with(&[b"f"]))
            .expect("apply");
        assert_eq!(fs::metadata(dir.path().join("f")).expect("stat").uid(), 0);
    }

    #[test]
    fn invalid_owner_is_refused() {
        let (dir, ap) = setup(ApplyOptions {
            set_owner: true,
            ..ApplyOptions::default()
        });
        let mut m = meta(0o644, T);
        m.uid = u32::MAX;
        let err = ap
            .apply(&[write("f", b"f", m)], &mut Mem::with(&[b"f"]))
            .expect_err("refused");
        assert!(
            matches!(err.error, ApplyError::InvalidOwner { .. }),
            "{err:?}"
        );
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }
}
