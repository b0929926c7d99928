//! `MakeDir`, `MakeSymlink`, `MakeFifo` and `Link`: everything but file
//! content that an action makes. What replaces a symlink, FIFO or hard
//! link is made under a temporary name with its metadata and renamed
//! over the target.

use super::error::{io_error, unexpected};
use super::meta::Was;
use super::open::lstat;
use super::temp::{temp_symlink, with_temp_name};
use super::ApplyError;
use super::Batch;
use omirr_core::{Meta, RelPath};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode};
use rustix::io::Errno;

impl Batch<'_> {
    pub(super) fn make_dir(
        &mut self,
        index: usize,
        path: &RelPath,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        if path.is_root() {
            return self.set_root_meta(index, meta);
        }
        let (dir, name) = self.ap.parent(path, "make a directory at", None)?;
        let existing = lstat(&dir, name, path)?.map(|st| FileType::from_raw_mode(st.st_mode));
        let was = if existing == Some(FileType::Directory) {
            Was::Itself
        } else {
            Was::Replacing(None)
        };
        if existing != Some(FileType::Directory) {
            if existing.is_some() {
                rfs::unlinkat(&dir, name, AtFlags::empty())
                    .map_err(|e| io_error(path, "remove (to make a directory)", e))?;
            }
            // 0700 until owner and mode are set: never wider than asked.
            rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                .map_err(|e| io_error(path, "create directory", e))?;
            self.touch_parent(path);
        }
        let kind = self
            .ap
            .set_meta_at(&dir, name, path, meta, Some(FileType::Directory), was)?;
        self.meta_set(index, path, kind, meta);
        Ok(())
    }

    pub(super) fn make_symlink(
        &mut self,
        path: &RelPath,
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        let reason = if target.is_empty() {
            Some("is empty")
        } else if target.contains(&0) {
            Some("holds a NUL byte")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ApplyError::BadSymlinkTarget {
                path: path.clone(),
                reason,
            });
        }
        let (dir, name) = self.ap.parent(path, "make a symbolic link at", None)?;
        let old = lstat(&dir, name, path)?;
        let tmp = temp_symlink(target, &dir, name, path)?;
        let set = self
            .ap
            .set_symlink_meta(&dir, &tmp, path, meta, Was::Replacing(old));
        self.put_in_place(
            &dir,
            &tmp,
            name,
            path,
            set,
            "rename symbolic link into place",
        )?;
        self.touch_parent(path);
        Ok(())
    }

    /// Makes `path` a named pipe: made under a temporary name with its
    /// metadata, then renamed into place, as a symlink is.
    pub(super) fn make_fifo(
        &mut self,
        index: usize,
        path: &RelPath,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        let (dir, name) = self.ap.parent(path, "make a FIFO at", None)?;
        let old = lstat(&dir, name, path)?;
        let (tmp, ()) = with_temp_name(name, path, "create a temporary FIFO for", |tmp| {
            // 0600 until owner and mode are set: never wider than asked.
            rfs::mknodat(&dir, tmp, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
        })?;
        let set = self
            .ap
            .set_meta_at(
                &dir,
                &tmp,
                path,
                meta,
                Some(FileType::Fifo),
                Was::Replacing(old),
            )
            .map(|_| ());
        self.put_in_place(&dir, &tmp, name, path, set, "rename FIFO into place")?;
        self.touch_parent(path);
        self.meta_set(index, path, FileType::Fifo, meta);
        Ok(())
    }

    /// Makes `to` another name of the regular file at `from` (a hard
    /// link made under a temporary name, given `meta`, renamed into
    /// place). If `to` is that inode already, only `meta` is set.
    pub(super) fn link(
        &mut self,
        index: usize,
        from: &RelPath,
        to: &RelPath,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        let (fdir, fname) = self.ap.parent(from, "make a hard link to", None)?;
        let leader = lstat(&fdir, fname, from)?
            .ok_or_else(|| io_error(from, "make a hard link to", Errno::NOENT))?;
        let kind = FileType::from_raw_mode(leader.st_mode);
        if kind != FileType::RegularFile {
            return Err(unexpected(from, "file", kind));
        }
        let (dir, name) = self.ap.parent(to, "make a hard link at", None)?;
        let old = lstat(&dir, name, to)?;
        if old
            .as_ref()
            .is_some_and(|o| (o.st_dev, o.st_ino) == (leader.st_dev, leader.st_ino))
        {
            return self.set_meta(index, to, meta);
        }
        let (tmp, ()) = with_temp_name(name, to, "link a temporary name to", |tmp| {
            rfs::linkat(&fdir, fname, &dir, tmp, AtFlags::empty())
        })?;
        let set = self
            .ap
            .set_meta_at(
                &dir,
                &tmp,
                to,
                meta,
                Some(FileType::RegularFile),
                Was::Replacing(old),
            )
            .map(|_| ());
        self.put_in_place(&dir, &tmp, name, to, set, "rename hard link into place")?;
        // The first name's inode changed too (its link count, its ctime),
        // by our doing.
        self.changed_here.insert(from.clone());
        self.touch_parent(to);
        self.meta_set(index, to, FileType::RegularFile, meta);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;
    use omirr_core::Action;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    #[test]
    fn make_dir_creates_fixes_and_replaces() {
        let (dir, ap) = default_setup();
        fs::create_dir(dir.path().join("exists")).expect("mkdir");
        fs::set_permissions(dir.path().join("exists"), fs::Permissions::from_mode(0o700))
            .expect("chmod");
        fs::write(dir.path().join("file"), b"x").expect("write");
        std::os::unix::fs::symlink("/", dir.path().join("link")).expect("symlink");
        let actions: Vec<Action> = ["new", "exists", "file", "link"]
            .iter()
            .map(|n| Action::MakeDir {
                path: p(n),
                meta: meta(0o2750, T),
            })
            .collect();
        ap.apply(&actions, &mut Mem::default()).expect("apply");
        for n in ["new", "exists", "file", "link"] {
            let d = dir.path().join(n);
            assert!(fs::symlink_metadata(&d).expect("stat").is_dir(), "{n}");
            assert_eq!(mode_of(&d), 0o2750, "{n}");
            assert_eq!(mtime_ns(&d), T, "{n}");
        }
    }

    #[test]
    fn make_symlink_creates_and_replaces_atomically() {
        let (dir, ap) = default_setup();
        let l = dir.path().join("l");
        ap.apply(
            &[Action::MakeSymlink {
                path: p("l"),
                target: b"one".to_vec(),
                meta: meta(0o777, T),
            }],
            &mut Mem::default(),
        )
        .expect("create");
        assert_eq!(fs::read_link(&l).expect("readlink"), Path::new("one"));
        assert_eq!(mtime_ns(&l), T);
        fs::write(dir.path().join("f"), b"file").expect("write");
        fs::create_dir(dir.path().join("emptydir")).expect("mkdir");
        ap.apply(
            &[
                Action::MakeSymlink {
                    path: p("l"),
                    target: b"/elsewhere/two".to_vec(),
                    meta: meta(0o777, T + 1),
                },
                Action::MakeSymlink {
                    path: p("f"),
                    target: b"l".to_vec(),
                    meta: meta(0o777, T + 2),
                },
                Action::MakeSymlink {
                    path: p("emptydir"),
                    target: b"f".to_vec(),
                    meta: meta(0o777, T + 3),
                },
            ],
            &mut Mem::default(),
        )
        .expect("replace");
        assert_eq!(
            fs::read_link(&l).expect("readlink"),
            Path::new("/elsewhere/two")
        );
        assert_eq!(mtime_ns(&l), T + 1);
        assert_eq!(
            fs::read_link(dir.path().join("f")).expect("readlink"),
            Path::new("l")
        );
        assert_eq!(
            fs::read_link(dir.path().join("emptydir")).expect("readlink"),
            Path::new("f")
        );
        assert!(temps(dir.path()).is_empty());

        let err = ap
            .apply(
                &[Action::MakeSymlink {
                    path: p("bad"),
                    target: b"a\0b".to_vec(),
                    meta: meta(0o777, T),
                }],
                &mut Mem::default(),
            )
            .expect_err("NUL");
        assert!(
            matches!(err.error, ApplyError::BadSymlinkTarget { .. }),
            "{err:?}"
        );
    }
}
