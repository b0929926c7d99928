//! `WriteFile`: a file's content streamed into a temporary file next to
//! the target, its size and BLAKE3 hash checked and its metadata set
//! (*staged*), then renamed over the target after barrier 1 (steps 1 to 3
//! of [`Applier::apply`](super::Applier::apply)).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use super::error::io_error;
use super::meta::Was;
use super::open::{dir_is_empty, lstat};
use super::temp::{temp_file, with_temp_name};
use super::Batch;
use super::{ApplyError, Barrier, ContentSource};
use omirr_core::{Hash, Meta, RelPath, Source};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags};

/// Files staged before a barrier is forced: bounds memory and, with
/// [`Barrier::Fsync`], open descriptors (one per staged file).
pub(super) const MAX_STAGED: usize = 4096;
pub(super) const MAX_STAGED_FSYNC: usize = 256;

/// Directories held open for staged files before a barrier is forced.
pub(super) const MAX_STAGED_DIRS: usize = 256;

/// The copy buffer: content is streamed, never held whole. As large as the
/// largest chunk (`omirr_chunk::MAX`), so that a rebuilt file's reused
/// chunks are read straight into it; page-aligned (see `scan::AlignedBuf`).
const COPY_BUF: usize = 256 * 1024;

/// A staged file: content written, checked and synced-to-be, waiting for
/// its rename.
pub(super) struct Staged {
    pub(super) index: usize,
    pub(super) path: RelPath,
    pub(super) dir: Rc<OwnedFd>,
    pub(super) tmp: Vec<u8>,
    /// Kept open for [`Barrier::Fsync`] only.
    pub(super) file: Option<File>,
}

impl Batch<'_> {
    /// The parent of `path`, from the segment's cache.
    fn staging_dir(&mut self, path: &RelPath) -> Result<Rc<OwnedFd>, ApplyError> {
        let parent = path.parent().ok_or(ApplyError::RootPath {
            op: "write a file at",
        })?;
        if let Some(fd) = self.dirs.get(&parent) {
            return Ok(fd.clone());
        }
        let (fd, _) = self.ap.parent(path, "write a file at", None)?;
        let fd = Rc::new(fd);
        self.dirs.insert(parent, fd.clone());
        Ok(fd)
    }

    /// Step 1 of the scheme in [`Applier::apply`]: content into a checked
    /// temporary file with its metadata; the rename waits for a barrier.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_write(
        &mut self,
        index: usize,
        path: &RelPath,
        size: u64,
        hash: &Hash,
        meta: &Meta,
        from: &Source,
        source: &mut dyn ContentSource,
    ) -> Result<(), ApplyError> {
        let dir = self.staging_dir(path)?;
        let name = path.file_name();
        // Refuse a doomed write before any content moves.
        let old = lstat(&dir, name, path)?;
        if let Some(st) = &old {
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory
                && !dir_is_empty(&dir, name, path)?
            {
                return Err(ApplyError::DirNotEmpty { path: path.clone() });
            }
        }
        let was = Was::Replacing(old);
        if let Source::Fetch = from {
            if let Some(moved) =
                self.take_staged(&dir, name, path, size, hash, meta, was, source)?
            {
                self.push_staged(index, path, dir, moved);
                return Ok(());
            }
        }
        let mut reader: Box<dyn Read + '_> = match from {
            Source::Fetch => source
                .open(path, hash, size)
                .map_err(|error| ApplyError::Source {
                    path: path.clone(),
                    error,
                })?,
            Source::CopyFrom(local) => Box::new(self.ap.open_local_file(local)?),
        };
        let (tmp, file) = temp_file(&dir, name, path)?;
        let buf = self
            .buf
            .get_or_insert_with(|| crate::scan::AlignedBuf::new(COPY_BUF))
            .get();
        let filled = fill(&file, &mut reader, buf, path, size, hash)
            .and_then(|()| self.ap.set_meta_fd(file.as_fd(), path, meta, was));
        if let Err(e) = filled {
            let _ = rfs::unlinkat(&*dir, tmp.as_slice(), AtFlags::empty());
            return Err(e);
        }
        self.push_staged(index, path, dir, (tmp, file));
        Ok(())
    }

    /// Adds the temporary file `tmp` for `path` to the staged files; its
    /// descriptor is kept open for a [`Barrier::Fsync`] only.
    fn push_staged(
        &mut self,
        index: usize,
        path: &RelPath,
        dir: Rc<OwnedFd>,
        (tmp, file): (Vec<u8>, File),
    ) {
        let file = match self.barrier {
            Barrier::Fsync => Some(file),
            Barrier::Syncfs => None,
        };
        self.staged_paths.insert(path.clone());
        self.staged.push(Staged {
            index,
            path: path.clone(),
            dir,
            tmp,
            file,
        });
    }

    /// A file the source holds ready ([`ContentSource::take_file`]),
    /// moved into `dir` under a temporary name and given `meta`: no copy.
    /// `None` if the source has none or it cannot be moved here (another
    /// filesystem): then the content is copied.
    #[allow(clippy::too_many_arguments)]
    fn take_staged(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        path: &RelPath,
        size: u64,
        hash: &Hash,
        meta: &Meta,
        was: Was,
        source: &mut dyn ContentSource,
    ) -> Result<Option<(Vec<u8>, File)>, ApplyError> {
        let Some(from) = source.take_file(hash, size) else {
            return Ok(None);
        };
        let moved = with_temp_name(name, path, "move fetched content to", |tmp| {
            rfs::renameat_with(rfs::CWD, &from, dir, tmp, RenameFlags::NOREPLACE)
        });
        let Ok((tmp, ())) = moved else {
            return Ok(None);
        };
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let placed = rfs::openat(dir, tmp.as_slice(), flags, Mode::empty())
            .map(File::from)
            .map_err(|e| io_error(path, "open fetched content at", e))
            .and_then(|file| {
                let got = file
                    .metadata()
                    .map_err(|e| ApplyError::ContentRead {
                        path: path.clone(),
                        error: e,
                    })?
                    .len();
                if got != size {
                    return Err(ApplyError::SizeMismatch {
                        path: path.clone(),
                        expected: size,
                        got,
                    });
                }
                self.ap.set_meta_fd(file.as_fd(), path, meta, was)?;
                Ok(file)
            });
        match placed {
            Ok(file) => Ok(Some((tmp, file))),
            Err(e) => {
                let _ = rfs::unlinkat(dir, tmp.as_slice(), AtFlags::empty());
                Err(e)
            }
        }
    }

    /// Steps 2 and 3: barrier 1, then the renames. On failure, every
    /// staged file not yet renamed is deleted, and the failing action's
    /// index is returned.
    pub(super) fn commit_staged(&mut self) -> Result<(), (usize, ApplyError)> {
        self.dirs.clear();
        self.staged_paths.clear();
        let staged = std::mem::take(&mut self.staged);
        let Some(first) = staged.first().map(|s| s.index) else {
            return Ok(());
        };
        if let Err(e) = self.barrier_files(&staged) {
            staged.iter().for_each(discard);
            return Err((first, e));
        }
        let mut rest = staged.iter();
        while let Some(s) = rest.next() {
            let name = s.path.file_name();
            let placed =
                self.put_in_place(&s.dir, &s.tmp, name, &s.path, Ok(()), "rename into place");
            if let Err(e) = placed {
                rest.for_each(discard);
                return Err((s.index, e));
            }
            self.touch_parent(&s.path);
        }
        Ok(())
    }
}

/// Deletes a staged file that will not be renamed.
fn discard(s: &Staged) {
    let _ = rfs::unlinkat(&*s.dir, s.tmp.as_slice(), AtFlags::empty());
}

/// Streams `reader` into `file` through `buf`, checking size and hash.
fn fill(
    mut file: &File,
    reader: &mut dyn Read,
    buf: &mut [u8],
    path: &RelPath,
    size: u64,
    hash: &Hash,
) -> Result<(), ApplyError> {
    let mut hasher = blake3::Hasher::new();
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(ApplyError::ContentRead {
                    path: path.clone(),
                    error,
                })
            }
        };
        total = total.saturating_add(n as u64);
        // Checked as it arrives: a source must not fill the disk.
        if total > size {
            return Err(ApplyError::TooLong {
                path: path.clone(),
                expected: size,
            });
        }
        let chunk = &buf[..n];
        hasher.update(chunk);
        file.write_all(chunk).map_err(|error| ApplyError::Io {
            path: path.clone(),
            op: "write the temporary file for",
            error,
        })?;
    }
    if total != size {
        return Err(ApplyError::SizeMismatch {
            path: path.clone(),
            expected: size,
            got: total,
        });
    }
    let got = *hasher.finalize().as_bytes();
    if &got != hash {
        return Err(ApplyError::HashMismatch {
            path: path.clone(),
            expected: *hash,
            got,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;
    use crate::apply::SourceError;
    use std::collections::HashMap;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    /// Serves `good` bytes, then `fill` bytes forever, or fails after
    /// `fail_after` bytes.
    struct Rogue {
        served: usize,
        fail_after: Option<usize>,
    }

    impl Read for Rogue {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if let Some(limit) = self.fail_after {
                if self.served >= limit {
                    return Err(io::Error::other("peer went away"));
                }
            }
            let n = buf.len().min(1000);
            buf[..n].fill(b'x');
            self.served += n;
            Ok(n)
        }
    }

    struct RogueSource {
        fail_after: Option<usize>,
    }

    impl ContentSource for RogueSource {
        fn open(
            &mut self,
            _: &RelPath,
            _: &Hash,
            _: u64,
        ) -> Result<Box<dyn Read + '_>, SourceError> {
            Ok(Box::new(Rogue {
                served: 0,
                fail_after: self.fail_after,
            }))
        }
    }

    #[test]
    fn writes_a_new_file_with_content_mode_and_mtime_to_the_ns() {
        let (dir, ap) = default_setup();
        let content = b"hello, mirror\n";
        ap.apply(
            &[write("f", content, meta(0o640, T))],
            &mut Mem::with(&[content]),
        )
        .expect("apply");
        let f = dir.path().join("f");
        assert_eq!(fs::read(&f).expect("read"), content);
        assert_eq!(mode_of(&f), 0o640);
        assert_eq!(mtime_ns(&f), T);
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn negative_mtimes_are_set_exactly() {
        let (dir, ap) = default_setup();
        let t = -1_500_000_001; // 1.5 s before the epoch, plus a ns
        ap.apply(
            &[write("old", b"x", meta(0o644, t))],
            &mut Mem::with(&[b"x"]),
        )
        .expect("apply");
        assert_eq!(mtime_ns(&dir.path().join("old")), t);
    }

    #[test]
    fn overwrite_replaces_the_file_atomically() {
        let (dir, ap) = default_setup();
        let mut src = Mem::with(&[b"one", b"two, longer"]);
        ap.apply(&[write("f", b"one", meta(0o644, T))], &mut src)
            .expect("first");
        let f = dir.path().join("f");
        // A reader holding the old file keeps the old content: the new one
        // is a different inode renamed over it, not a rewrite in place.
        let before = fs::File::open(&f).expect("open");
        let old_ino = fs::metadata(&f).expect("stat").ino();
        ap.apply(&[write("f", b"two, longer", meta(0o600, T + 1))], &mut src)
            .expect("second");
        assert_eq!(fs::read(&f).expect("read"), b"two, longer");
        assert_ne!(fs::metadata(&f).expect("stat").ino(), old_ino);
        let mut old = String::new();
        (&before).read_to_string(&mut old).expect("read old");
        assert_eq!(old, "one");
        assert_eq!(mode_of(&f), 0o600);
        assert_eq!(mtime_ns(&f), T + 1);
        assert!(temps(dir.path()).is_empty());
    }

    #[test]
    fn hash_mismatch_is_refused_and_leaves_no_temp() {
        let (dir, ap) = default_setup();
        // The source serves other bytes of the same length.
        let mut src = Mem(HashMap::from([(h(b"good"), b"evil".to_vec())]));
        let err = ap
            .apply(&[write("f", b"good", meta(0o644, T))], &mut src)
            .expect_err("must be refused");
        assert_eq!(err.index, Some(0));
        assert_eq!(err.durable, 0);
        assert!(
            matches!(&err.error, ApplyError::HashMismatch { path, .. } if *path == p("f")),
            "{err:?}"
        );
        assert!(err.to_string().contains("BLAKE3"), "{err}");
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn oversized_content_is_cut_off_and_leaves_no_temp() {
        let (dir, ap) = default_setup();
        // A source that never stops: refused as soon as it passes the size.
        let err = ap
            .apply(
                &[write("f", &[b'x'; 5000], meta(0o644, T))],
                &mut RogueSource { fail_after: None },
            )
            .expect_err("must be refused");
        assert!(
            matches!(err.error, ApplyError::TooLong { expected: 5000, .. }),
            "{err:?}"
        );
        assert_eq!(names(dir.path()), Vec::<String>::new());

        // Short content is refused too.
        let mut src = Mem(HashMap::from([(h(b"long"), b"lo".to_vec())]));
        let err = ap
            .apply(&[write("f", b"long", meta(0o644, T))], &mut src)
            .expect_err("short");
        assert!(
            matches!(
                err.error,
                ApplyError::SizeMismatch {
                    expected: 4,
                    got: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn source_error_mid_stream_leaves_no_temp() {
        let (dir, ap) = default_setup();
        fs::create_dir(dir.path().join("d")).expect("mkdir");
        let big = vec![b'x'; 300_000];
        let err = ap
            .apply(
                &[write("d/f", &big, meta(0o644, T))],
                &mut RogueSource {
                    fail_after: Some(150_000),
                },
            )
            .expect_err("must fail");
        assert!(
            matches!(&err.error, ApplyError::ContentRead { path, .. } if *path == p("d/f")),
            "{err:?}"
        );
        assert!(err.to_string().contains("peer went away"), "{err}");
        assert!(temps(dir.path()).is_empty());
        assert_eq!(names(&dir.path().join("d")), Vec::<String>::new());

        // A source that cannot even start is reported the same way.
        let err = ap
            .apply(&[write("d/g", b"zz", meta(0o644, T))], &mut Mem::default())
            .expect_err("no content");
        assert!(matches!(err.error, ApplyError::Source { .. }), "{err:?}");
        assert!(temps(dir.path()).is_empty());
    }

    #[test]
    fn write_over_a_directory_only_if_it_is_empty() {
        let (dir, ap) = default_setup();
        fs::create_dir(dir.path().join("empty")).expect("mkdir");
        fs::create_dir(dir.path().join("full")).expect("mkdir");
        fs::write(dir.path().join("full/x"), b"x").expect("write");
        let mut src = Mem::with(&[b"f"]);
        ap.apply(&[write("empty", b"f", meta(0o644, T))], &mut src)
            .expect("empty dir replaced");
        assert_eq!(fs::read(dir.path().join("empty")).expect("read"), b"f");
        let err = ap
            .apply(&[write("full", b"f", meta(0o644, T))], &mut src)
            .expect_err("refused");
        assert!(
            matches!(err.error, ApplyError::DirNotEmpty { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(dir.path().join("full/x")).expect("kept"), b"x");
        assert!(temps(dir.path()).is_empty());
    }
}
