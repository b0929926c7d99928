//! Path safety: opening the parent directory of a path of the tree from
//! the root's descriptor, one component at a time, never through a
//! symlink ([`ApplyError::SymlinkInPath`]), making missing directories
//! when asked; and the small `*at` helpers the actions share. What the
//! directories above the mirrored trees get when made is `tops.rs`'s.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::OwnedFd;

use super::error::{io_error, unexpected};
use super::Applier;
use super::ApplyError;
use omirr_core::RelPath;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

impl Applier {
    /// Opens the directory `dir`, one component at a time, refusing
    /// symlinks. With `create`, missing components are made (mode 0755,
    /// owned by us; above the mirrored trees, with the mode and owner of
    /// their parent) and their parents recorded in it.
    pub(super) fn open_dir(
        &self,
        dir: &RelPath,
        mut create: Option<&mut BTreeSet<RelPath>>,
    ) -> Result<OwnedFd, ApplyError> {
        // Most directories exist: one call resolves them beneath the root
        // ([`omirr_open::beneath`]); the walk below makes what is missing and
        // says why a path cannot be opened.
        if let Ok(fd) = omirr_open::beneath::open_dir(&self.root, dir) {
            return Ok(fd);
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut cur = rfs::openat(&self.root, ".", flags, Mode::empty())
            .map_err(|e| io_error(&RelPath::root(), "open", e))?;
        for (depth, comp) in dir.components().enumerate() {
            let next = match rfs::openat(&cur, comp, flags, Mode::empty()) {
                Err(Errno::NOENT) if create.is_some() => {
                    let here = prefix(dir, depth + 1);
                    let made = match rfs::mkdirat(&cur, comp, Mode::from_raw_mode(0o700)) {
                        Ok(()) => true,
                        // Someone made it meanwhile: use theirs.
                        Err(Errno::EXIST) => false,
                        Err(e) => return Err(io_error(&here, "create directory", e)),
                    };
                    if let Some(touched) = create.as_deref_mut() {
                        touched.insert(prefix(dir, depth));
                    }
                    let fd = rfs::openat(&cur, comp, flags, Mode::empty())
                        .map_err(|e| self.walk_error(&cur, comp, dir, depth, e))?;
                    // Created 0700 so it is never wider than intended;
                    // then what an implied directory gets, or, above the
                    // mirrored trees, what its parent has.
                    if !self.outside_tops(&here) {
                        rfs::fchmod(&fd, Mode::from_raw_mode(0o755))
                            .map_err(|e| io_error(&here, "set the mode of", e))?;
                    } else if made {
                        self.like_parent(&cur, &fd, &here)?;
                    }
                    Ok(fd)
                }
                other => other,
            };
            cur = next.map_err(|e| self.walk_error(&cur, comp, dir, depth, e))?;
        }
        Ok(cur)
    }

    /// Explains why component `depth` of `dir` could not be opened.
    fn walk_error(
        &self,
        parent: &OwnedFd,
        comp: &[u8],
        dir: &RelPath,
        depth: usize,
        e: Errno,
    ) -> ApplyError {
        let component = prefix(dir, depth + 1);
        if matches!(e, Errno::LOOP | Errno::NOTDIR) {
            if let Ok(st) = rfs::statat(parent, comp, AtFlags::SYMLINK_NOFOLLOW) {
                return if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                    ApplyError::SymlinkInPath {
                        path: dir.clone(),
                        component,
                    }
                } else {
                    ApplyError::NotADirectory {
                        path: dir.clone(),
                        component,
                    }
                };
            }
        }
        io_error(&component, "open directory", e)
    }

    /// The parent directory of `path`, opened safely, and the last
    /// component's name.
    pub(super) fn parent<'p>(
        &self,
        path: &'p RelPath,
        op: &'static str,
        create: Option<&mut BTreeSet<RelPath>>,
    ) -> Result<(OwnedFd, &'p [u8]), ApplyError> {
        let parent = path.parent().ok_or(ApplyError::RootPath { op })?;
        let fd = self.open_dir(&parent, create).map_err(|e| match e {
            // Name the path being worked on, not only its parent.
            ApplyError::SymlinkInPath { component, .. } => ApplyError::SymlinkInPath {
                path: path.clone(),
                component,
            },
            ApplyError::NotADirectory { component, .. } => ApplyError::NotADirectory {
                path: path.clone(),
                component,
            },
            e => e,
        })?;
        Ok((fd, path.file_name()))
    }

    /// Opens a regular file of the tree for reading (`Source::CopyFrom`).
    pub(super) fn open_local_file(&self, path: &RelPath) -> Result<File, ApplyError> {
        let (dir, name) = self.parent(path, "read", None)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = rfs::openat(&dir, name, flags | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
            if e == Errno::LOOP {
                unexpected(path, "file", FileType::Symlink)
            } else {
                io_error(path, "open", e)
            }
        })?;
        let st = rfs::fstat(&fd).map_err(|e| io_error(path, "inspect", e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(unexpected(path, "file", kind));
        }
        Ok(File::from(fd))
    }
}

/// lstat relative to `dir`; `None` if nothing is there.
pub(super) fn lstat(
    dir: &OwnedFd,
    name: &[u8],
    path: &RelPath,
) -> Result<Option<rfs::Stat>, ApplyError> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(io_error(path, "inspect", e)),
    }
}

/// Whether the directory `name` in `dir` has no entries.
pub(super) fn dir_is_empty(dir: &OwnedFd, name: &[u8], path: &RelPath) -> Result<bool, ApplyError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::empty()).map_err(|e| io_error(path, "open", e))?;
    let mut entries = rfs::Dir::new(fd).map_err(|e| io_error(path, "list", e))?;
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| io_error(path, "list", e))?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The first `depth` components of `path`.
fn prefix(path: &RelPath, depth: usize) -> RelPath {
    std::iter::once(path.clone())
        .chain(path.ancestors())
        .find(|a| a.components().count() <= depth)
        .unwrap_or_else(RelPath::root)
}

/// `dir/name` for messages; `dir` itself if that is not a valid path.
pub(super) fn join_lossy(dir: &RelPath, name: &[u8]) -> RelPath {
    dir.join(name).unwrap_or_else(|_| dir.clone())
}

/// A sibling of `path` named `name`, for messages.
pub(super) fn join_lossy_parent(path: &RelPath, name: &[u8]) -> RelPath {
    join_lossy(&path.parent().unwrap_or_else(RelPath::root), name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;
    use omirr_core::{Action, Content, Source};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_symlinked_parent_is_refused() {
        let (dir, ap) = default_setup();
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("a")).expect("symlink");
        fs::write(dir.path().join("x"), b"x").expect("write");
        let attempts = [
            write("a/x", b"x", meta(0o644, T)),
            write("a/b/x", b"x", meta(0o644, T)),
            Action::MakeDir {
                path: p("a/d"),
                meta: meta(0o755, T),
            },
            Action::MakeSymlink {
                path: p("a/l"),
                target: b"/etc/passwd".to_vec(),
                meta: meta(0o777, T),
            },
            Action::Rename {
                from: p("x"),
                to: p("a/x"),
                meta: meta(0o644, T),
            },
            Action::Remove {
                path: p("a/y"),
                was: Content::Dir,
            },
            Action::SetMeta {
                path: p("a/y"),
                meta: meta(0o777, T),
            },
            Action::SaveOld { path: p("a/y") },
        ];
        fs::write(elsewhere.path().join("y"), b"outside").expect("write");
        for action in attempts {
            let err = ap
                .apply(std::slice::from_ref(&action), &mut Mem::with(&[b"x"]))
                .expect_err("must be refused");
            match &err.error {
                ApplyError::SymlinkInPath { component, .. } => assert_eq!(*component, p("a")),
                other => panic!("{action:?}: wrong error {other:?}"),
            }
            assert!(err.to_string().contains("is a symbolic link"), "{err}");
        }
        assert_eq!(names(elsewhere.path()), ["y"]);
        assert_eq!(mode_of(&elsewhere.path().join("y")), 0o644);
        assert_eq!(fs::read(dir.path().join("x")).expect("x stays"), b"x");
    }

    #[test]
    fn a_file_as_parent_is_not_a_directory() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("f"), b"x").expect("write");
        let err = ap
            .apply(
                &[write("f/x", b"x", meta(0o644, T))],
                &mut Mem::with(&[b"x"]),
            )
            .expect_err("refused");
        assert!(
            matches!(&err.error, ApplyError::NotADirectory { component, .. } if *component == p("f")),
            "{err:?}"
        );
    }

    #[test]
    fn a_symlink_as_last_component_is_replaced_not_followed() {
        let (dir, ap) = default_setup();
        let outside = tempfile::tempdir().expect("tempdir");
        let victim = outside.path().join("victim");
        fs::write(&victim, b"precious").expect("write");
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink(&victim, dir.path().join("l")).expect("symlink");
        std::os::unix::fs::symlink(&victim, dir.path().join("l2")).expect("symlink");

        ap.apply(
            &[
                write("l", b"mirrored", meta(0o666, T)),
                // SetMeta on a symlink: owner and mtime of the link only.
                Action::SetMeta {
                    path: p("l2"),
                    meta: meta(0o777, T + 5),
                },
            ],
            &mut Mem::with(&[b"mirrored"]),
        )
        .expect("apply");
        let l = dir.path().join("l");
        assert!(fs::symlink_metadata(&l).expect("stat").is_file());
        assert_eq!(fs::read(&l).expect("read"), b"mirrored");
        assert_eq!(fs::read(&victim).expect("read"), b"precious");
        assert_eq!(mode_of(&victim), 0o600);
        let l2 = dir.path().join("l2");
        assert!(fs::symlink_metadata(&l2).expect("stat").is_symlink());
        assert_eq!(mtime_ns(&l2), T + 5);
        assert_ne!(mtime_ns(&victim), T + 5);
    }

    #[test]
    fn root_path_is_refused_where_a_name_is_needed() {
        let (_dir, ap) = default_setup();
        for action in [
            write("", b"x", meta(0o644, T)),
            Action::Remove {
                path: RelPath::root(),
                was: Content::Dir,
            },
            Action::SaveOld {
                path: RelPath::root(),
            },
        ] {
            let err = ap
                .apply(&[action], &mut Mem::with(&[b"x"]))
                .expect_err("refused");
            assert!(matches!(err.error, ApplyError::RootPath { .. }), "{err:?}");
        }
    }

    #[test]
    fn copy_from_reads_a_local_file_but_never_a_symlink() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("src"), b"local").expect("write");
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("secret"), b"local").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link"))
            .expect("symlink");
        let copy = |from: &str, to: &str| Action::WriteFile {
            path: p(to),
            size: 5,
            hash: h(b"local"),
            meta: meta(0o644, T),
            source: Source::CopyFrom(p(from)),
        };
        // No content source is consulted.
        ap.apply(&[copy("src", "dst")], &mut Mem::default())
            .expect("copy");
        assert_eq!(fs::read(dir.path().join("dst")).expect("read"), b"local");
        let err = ap
            .apply(&[copy("link", "dst2")], &mut Mem::default())
            .expect_err("refused");
        assert!(
            matches!(
                err.error,
                ApplyError::Unexpected {
                    found: "symlink",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!dir.path().join("dst2").exists());
    }
}
