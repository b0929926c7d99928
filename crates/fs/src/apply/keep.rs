//! Keeping what a batch replaces: `SaveOld`'s `NAME.OLD` (or numbered
//! generations, as the rules say) and the conflict copy of this host's
//! file that lost a conflict (`KeepConflictCopy`).

use std::os::fd::OwnedFd;

use super::error::{io_error, unexpected};
use super::open::{join_lossy_parent, lstat};
use super::temp::temp_link;
use super::Batch;
use super::{ApplyError, ContentSource};
use omirr_core::{Content, Hash, Meta, RelPath, Source};
use rustix::fs::{self as rfs, AtFlags, FileType};
use rustix::io::Errno;

/// `NAME.OLD` (generation 0) or `NAME.OLD.G`.
fn old_name(name: &[u8], generation: usize) -> Vec<u8> {
    let mut n = name.to_vec();
    n.extend_from_slice(b".OLD");
    if generation > 0 {
        n.extend_from_slice(format!(".{generation}").as_bytes());
    }
    n
}

impl Batch<'_> {
    /// Keeps the file at `path` as `NAME.OLD`, or as generation 1 of
    /// `NAME.OLD.1..N`. A hard link to a temporary name is renamed into
    /// place, so each step is atomic and the current file stays where it
    /// is. Nothing at `path` is nothing to keep.
    pub(super) fn save_old(&mut self, path: &RelPath) -> Result<(), ApplyError> {
        let (dir, name) = self.ap.parent(path, "keep an old version of", None)?;
        match lstat(&dir, name, path)? {
            None => return Ok(()),
            Some(st) => {
                let kind = FileType::from_raw_mode(st.st_mode);
                if kind != FileType::RegularFile {
                    return Err(unexpected(path, "file", kind));
                }
            }
        }
        // What is kept must be what was recorded; the link then changes
        // the file's ctime, by our doing.
        self.check_unchanged(&dir, name, path)?;
        self.changed_here.insert(path.clone());
        let tmp = temp_link(&dir, name, path)?;
        let result = self.shift_generations(&dir, name, path, &tmp);
        if result.is_err() {
            let _ = rfs::unlinkat(&dir, tmp.as_slice(), AtFlags::empty());
        }
        self.touch_parent(path);
        result
    }

    fn shift_generations(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        path: &RelPath,
        tmp: &[u8],
    ) -> Result<(), ApplyError> {
        let history = self.ap.rules.rules(path).history;
        let newest = if history == 0 {
            old_name(name, 0)
        } else {
            // OLD.(N-1) over OLD.N drops the oldest; a crash between two
            // steps loses at most a generation's place, never the file.
            for g in (1..history).rev() {
                let from = old_name(name, g);
                match rfs::renameat(dir, from.as_slice(), dir, old_name(name, g + 1)) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(io_error(&join_lossy_parent(path, &from), "rename", e)),
                }
            }
            old_name(name, 1)
        };
        rfs::renameat(dir, tmp, dir, newest.as_slice())
            .map_err(|e| io_error(&join_lossy_parent(path, &newest), "create", e))
    }

    /// Keeps this host's file at `path`, which lost a conflict, as
    /// `copy`: its content copied (and checked against `hash`) into a
    /// temporary file, flushed, renamed into place and the directory
    /// flushed, all before any later action of the batch may replace or
    /// remove `path`. Then the oldest copies, `prune`, go.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn keep_conflict_copy(
        &mut self,
        index: usize,
        path: &RelPath,
        copy: &RelPath,
        (size, hash): (u64, &Hash),
        meta: &Meta,
        prune: &[RelPath],
        source: &mut dyn ContentSource,
    ) -> Result<(), ApplyError> {
        let (dir, name) = self.ap.parent(path, "keep a conflict copy of", None)?;
        // What is kept must be what the index recorded.
        self.check_unchanged(&dir, name, path)?;
        let copy_dir = copy.parent().ok_or(ApplyError::RootPath {
            op: "keep a conflict copy at",
        })?;
        // A copy may go into a directory of its own (a copy of a directory
        // that gives way to a file): made as implied directories are.
        let copy_dir_fd = self.ap.open_dir(&copy_dir, Some(&mut self.touched))?;
        self.stage_write(
            index,
            copy,
            size,
            hash,
            meta,
            &Source::CopyFrom(path.clone()),
            source,
        )?;
        self.commit_staged().map_err(|(_, e)| e)?;
        rfs::fsync(&copy_dir_fd).map_err(|e| io_error(&copy_dir, "flush", e))?;
        for old in prune {
            self.remove(
                old,
                &Content::File {
                    size: 0,
                    hash: [0; 32],
                },
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;
    use crate::owners::{self, MetaRules};
    use omirr_core::Action;
    use std::fs;
    use std::sync::Arc;

    #[test]
    fn save_old_keeps_the_replaced_and_the_removed_file() {
        let (dir, ap) = default_setup();
        let mut src = Mem::with(&[b"v1", b"v2"]);
        ap.apply(&[write("f", b"v1", meta(0o644, T))], &mut src)
            .expect("v1");
        ap.apply(
            &[
                Action::SaveOld { path: p("f") },
                write("f", b"v2", meta(0o644, T)),
            ],
            &mut src,
        )
        .expect("v2");
        assert_eq!(fs::read(dir.path().join("f")).expect("f"), b"v2");
        assert_eq!(fs::read(dir.path().join("f.OLD")).expect("old"), b"v1");
        ap.apply(
            &[
                Action::SaveOld { path: p("f") },
                Action::Remove {
                    path: p("f"),
                    was: Content::File {
                        size: 2,
                        hash: h(b"v2"),
                    },
                },
            ],
            &mut src,
        )
        .expect("remove");
        assert_eq!(names(dir.path()), ["f.OLD"]);
        assert_eq!(fs::read(dir.path().join("f.OLD")).expect("old"), b"v2");
        // Nothing there: nothing to keep.
        ap.apply(&[Action::SaveOld { path: p("f") }], &mut src)
            .expect("nothing");
        assert_eq!(names(dir.path()), ["f.OLD"]);
    }

    #[test]
    fn save_old_history_keeps_n_generations() {
        let (dir, mut ap) = default_setup();
        ap.set_rules(Arc::new(owners::Uniform(MetaRules {
            history: 3,
            ..MetaRules::default()
        })));
        let versions: [&[u8]; 5] = [b"v0", b"v1", b"v2", b"v3", b"v4"];
        let mut src = Mem::with(&versions);
        ap.apply(&[write("f", b"v0", meta(0o644, T))], &mut src)
            .expect("v0");
        for v in &versions[1..] {
            ap.apply(
                &[
                    Action::SaveOld { path: p("f") },
                    write("f", v, meta(0o644, T)),
                ],
                &mut src,
            )
            .expect("overwrite");
        }
        assert_eq!(names(dir.path()), ["f", "f.OLD.1", "f.OLD.2", "f.OLD.3"]);
        let read = |n: &str| fs::read(dir.path().join(n)).expect(n);
        assert_eq!(read("f"), b"v4");
        assert_eq!(read("f.OLD.1"), b"v3");
        assert_eq!(read("f.OLD.2"), b"v2");
        assert_eq!(read("f.OLD.3"), b"v1");
    }
}
