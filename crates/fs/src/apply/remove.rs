//! `Remove`: deleting what the index believed was there, and nothing
//! else (never a directory that is not empty, never another kind).

use std::os::fd::OwnedFd;

use super::error::{io_error, unexpected};
use super::open::lstat;
use super::ApplyError;
use super::Batch;
use omirr_core::{Content, RelPath};
use rustix::fs::{self as rfs, AtFlags, FileType};
use rustix::io::Errno;

impl Batch<'_> {
    /// Removes `path`, which the index believed to be `was`. Already gone
    /// is success (a batch may be replayed after a crash); another kind
    /// than expected, or a directory that is not empty, is refused.
    pub(super) fn remove(&mut self, path: &RelPath, was: &Content) -> Result<(), ApplyError> {
        let (dir, name) = match self.ap.parent(path, "remove", None) {
            Ok(found) => found,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let kind = match lstat(&dir, name, path)? {
            None => return Ok(()),
            Some(st) => FileType::from_raw_mode(st.st_mode),
        };
        let expected = match was {
            Content::File { .. } => Some(FileType::RegularFile),
            Content::Dir => Some(FileType::Directory),
            Content::Symlink { .. } => Some(FileType::Symlink),
            Content::Fifo => Some(FileType::Fifo),
            Content::Deleted => None,
        };
        if expected.is_some_and(|want| want != kind) {
            return Err(unexpected(path, was.kind(), kind));
        }
        self.check_unchanged(&dir, name, path)?;
        if kind == FileType::Directory {
            remove_empty_dir(&dir, name, path)?;
        } else {
            rfs::unlinkat(&dir, name, AtFlags::empty()).map_err(|e| io_error(path, "remove", e))?;
        }
        self.touch_parent(path);
        Ok(())
    }
}

/// Removes the directory `name` in `dir` if it is empty; one that is not
/// holds what the index does not know about, and is refused.
pub(super) fn remove_empty_dir(
    dir: &OwnedFd,
    name: &[u8],
    path: &RelPath,
) -> Result<(), ApplyError> {
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(|e| match e {
        Errno::NOTEMPTY | Errno::EXIST => ApplyError::DirNotEmpty { path: path.clone() },
        e => io_error(path, "remove directory", e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;
    use omirr_core::Action;
    use std::fs;

    #[test]
    fn remove_takes_files_symlinks_and_empty_directories() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("f"), b"x").expect("write");
        std::os::unix::fs::symlink("f", dir.path().join("l")).expect("symlink");
        fs::create_dir(dir.path().join("d")).expect("mkdir");
        ap.apply(
            &[
                Action::Remove {
                    path: p("f"),
                    was: Content::File {
                        size: 1,
                        hash: h(b"x"),
                    },
                },
                Action::Remove {
                    path: p("l"),
                    was: Content::Symlink {
                        target: b"f".to_vec(),
                    },
                },
                Action::Remove {
                    path: p("d"),
                    was: Content::Dir,
                },
                // Already gone, or its parent is: nothing to do.
                Action::Remove {
                    path: p("gone"),
                    was: Content::Dir,
                },
                Action::Remove {
                    path: p("gone/too"),
                    was: Content::Dir,
                },
            ],
            &mut Mem::default(),
        )
        .expect("apply");
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn remove_of_a_non_empty_directory_is_an_error() {
        let (dir, ap) = default_setup();
        fs::create_dir(dir.path().join("d")).expect("mkdir");
        fs::write(dir.path().join("d/unknown"), b"data").expect("write");
        let err = ap
            .apply(
                &[Action::Remove {
                    path: p("d"),
                    was: Content::Dir,
                }],
                &mut Mem::default(),
            )
            .expect_err("refused");
        assert!(
            matches!(&err.error, ApplyError::DirNotEmpty { path } if *path == p("d")),
            "{err:?}"
        );
        assert_eq!(
            fs::read(dir.path().join("d/unknown")).expect("kept"),
            b"data"
        );
    }

    #[test]
    fn remove_refuses_another_kind_than_expected() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("f"), b"x").expect("write");
        let err = ap
            .apply(
                &[Action::Remove {
                    path: p("f"),
                    was: Content::Symlink {
                        target: b"t".to_vec(),
                    },
                }],
                &mut Mem::default(),
            )
            .expect_err("refused");
        assert!(
            matches!(
                err.error,
                ApplyError::Unexpected {
                    expected: "symlink",
                    found: "file",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(dir.path().join("f").exists());
    }
}
