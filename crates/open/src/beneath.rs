//! Opening a path of the mirrored tree by descriptor, beneath the root,
//! never through a symbolic link: the one way both the applier and the
//! server reach a file on a peer's behalf.
//!
//! The kernel does it in one call where it can: `openat2(2)` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` (Linux
//! 5.6 and later) resolves the whole path relative to the root's
//! descriptor and fails, rather than follows, at any symlink or any step
//! outside. Where `openat2` is missing (an older kernel, or a seccomp
//! filter that refuses it), each component is opened in turn from the one
//! before with `O_NOFOLLOW | O_DIRECTORY`. Either way nothing is checked
//! first and used later by path: what is opened is what was checked.

use omirr_core::RelPath;
use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once `openat2` is found missing, so that it is not tried again.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Opens `path` below the directory `root` with `flags` (`O_NOFOLLOW` and
/// `O_CLOEXEC` are added). A symbolic link anywhere on the way, the last
/// component included, fails with `ELOOP`; a non-directory on the way
/// with `ENOTDIR`. The root path opens `root` itself again.
pub fn open(root: impl AsFd, path: &RelPath, flags: OFlags) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let name: &[u8] = if path.is_root() {
        b"."
    } else {
        path.as_bytes()
    };
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match rfs::openat2(root.as_fd(), name, flags, Mode::empty(), RESOLVE) {
            // ENOSYS: no openat2; EPERM: a seccomp filter refuses it
            // (openat2 itself never fails with EPERM for these flags on
            // a directory we may read).
            Err(Errno::NOSYS) | Err(Errno::PERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            // EAGAIN: a rename raced the lookup; the walk below does not
            // mind.
            Err(Errno::AGAIN) => {}
            // EXDEV: the path crossed a mount point, which
            // RESOLVE_BENEATH allows only from the root; walk it.
            Err(Errno::XDEV) => {}
            other => return other,
        }
    }
    walk(root, path, flags)
}

/// Opens the directory `dir` below `root` (see [`open`]).
pub fn open_dir(root: impl AsFd, dir: &RelPath) -> Result<OwnedFd, Errno> {
    open(root, dir, OFlags::RDONLY | OFlags::DIRECTORY)
}

/// Why [`read_file`] could not open a file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The mirror root itself could not be opened.
    #[error("cannot open the mirror root {root}: {errno}")]
    Root {
        /// The mirror root.
        root: PathBuf,
        /// What the kernel said.
        errno: Errno,
    },
    /// A component of the path, or the file itself, is a symbolic link;
    /// following it could lead out of the tree.
    #[error("a symbolic link is on the way to {0}")]
    Symlink(RelPath),
    /// The path names something other than a regular file.
    #[error("{0} is not a regular file")]
    NotAFile(RelPath),
    /// Opening the file failed for another reason.
    #[error("cannot open {path}: {errno}")]
    Open {
        /// The file, relative to the root.
        path: RelPath,
        /// What the kernel said.
        errno: Errno,
    },
}

/// Opens the regular file `path` of the tree at `root` for reading,
/// beneath the root and never through a symlink (see [`open`]).
pub fn read_file(root: &Path, path: &RelPath) -> Result<File, OpenError> {
    let root_fd = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| OpenError::Root {
        root: root.to_path_buf(),
        errno,
    })?;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = open(&root_fd, path, flags).map_err(|errno| match errno {
        Errno::LOOP => OpenError::Symlink(path.clone()),
        errno => OpenError::Open {
            path: path.clone(),
            errno,
        },
    })?;
    let st = rfs::fstat(&fd).map_err(|errno| OpenError::Open {
        path: path.clone(),
        errno,
    })?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        return Err(OpenError::NotAFile(path.clone()));
    }
    Ok(File::from(fd))
}

/// The fallback: one component at a time, each from its parent's
/// descriptor, none followed if it is a symlink.
fn walk(root: impl AsFd, path: &RelPath, flags: OFlags) -> Result<OwnedFd, Errno> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut cur = rfs::openat(root.as_fd(), ".", dir_flags, Mode::empty())?;
    let comps: Vec<&[u8]> = path.components().collect();
    let Some((last, parents)) = comps.split_last() else {
        return rfs::openat(root.as_fd(), ".", flags, Mode::empty());
    };
    for comp in parents {
        cur = match rfs::openat(&cur, *comp, dir_flags, Mode::empty()) {
            // O_DIRECTORY | O_NOFOLLOW on a symlink says ENOTDIR; say
            // ELOOP, as openat2 does.
            Err(Errno::NOTDIR) => match rfs::statat(&cur, *comp, rfs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Symlink => {
                    return Err(Errno::LOOP)
                }
                _ => return Err(Errno::NOTDIR),
            },
            other => other?,
        };
    }
    rfs::openat(&cur, *last, flags, Mode::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_testkit::p;
    use std::os::unix::fs::symlink;

    fn both(test: impl Fn()) {
        test();
        // The same through the component walk.
        NO_OPENAT2.store(true, Ordering::Relaxed);
        test();
        NO_OPENAT2.store(false, Ordering::Relaxed);
    }

    #[test]
    fn opens_files_and_directories_but_never_through_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/b/f"), b"data").expect("write");
        std::fs::create_dir(dir.path().join("outside")).expect("mkdir");
        std::fs::write(dir.path().join("outside/secret"), b"secret").expect("write");
        symlink("../outside", root.join("a/out")).expect("symlink");
        symlink("b", root.join("a/inner")).expect("symlink");
        symlink("b/f", root.join("a/flink")).expect("symlink");
        std::fs::write(root.join("a/plain"), b"").expect("write");
        let root_fd =
            rfs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("open root");
        both(|| {
            let f = open(&root_fd, &p("a/b/f"), OFlags::RDONLY).expect("a file");
            assert_eq!(rfs::fstat(&f).expect("stat").st_size, 4);
            open_dir(&root_fd, &p("a/b")).expect("a directory");
            open_dir(&root_fd, &RelPath::root()).expect("the root");
            read_file(&root, &p("a/b/f")).expect("a file to read");
            assert!(matches!(
                read_file(&root, &p("a/out/secret")),
                Err(OpenError::Symlink(_))
            ));
            assert!(matches!(
                read_file(&root, &p("a/b")),
                Err(OpenError::NotAFile(_))
            ));
            for bad in ["a/out/secret", "a/inner/f", "a/flink"] {
                assert_eq!(
                    open(&root_fd, &p(bad), OFlags::RDONLY).err(),
                    Some(Errno::LOOP),
                    "{bad}"
                );
            }
            assert_eq!(
                open(&root_fd, &p("a/plain/x"), OFlags::RDONLY).err(),
                Some(Errno::NOTDIR)
            );
            assert_eq!(
                open(&root_fd, &p("a/none"), OFlags::RDONLY).err(),
                Some(Errno::NOENT)
            );
        });
    }
}
