//! `Rename`: moving a file or a whole directory within the root, never
//! over something the index does not know about.

use std::collections::BTreeSet;

use super::error::io_error;
use super::meta::Was;
use super::open::lstat;
use super::ApplyError;
use super::Batch;
use omirr_core::{Meta, RelPath};
use rustix::fs::{self as rfs, RenameFlags};
use rustix::io::Errno;

impl Batch<'_> {
    pub(super) fn rename(
        &mut self,
        index: usize,
        from: &RelPath,
        to: &RelPath,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        let (fdir, fname) = self.ap.parent(from, "rename", None)?;
        let mut created = BTreeSet::new();
        let (tdir, tname) = self.ap.parent(to, "rename onto", Some(&mut created))?;
        self.touched.append(&mut created);
        // RENAME_NOREPLACE: what is at `to` is unknown to the index, and a
        // plain rename would silently destroy it.
        match rfs::renameat_with(&fdir, fname, &tdir, tname, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(ApplyError::TargetExists { path: to.clone() }),
            // Filesystems without RENAME_NOREPLACE: check, then rename.
            Err(Errno::INVAL | Errno::NOSYS) => {
                if lstat(&tdir, tname, to)?.is_some() {
                    return Err(ApplyError::TargetExists { path: to.clone() });
                }
                rfs::renameat(&fdir, fname, &tdir, tname)
                    .map_err(|e| io_error(from, "rename", e))?;
            }
            Err(e) => return Err(io_error(from, "rename", e)),
        }
        self.touch_parent(from);
        self.touch_parent(to);
        // What the batch recorded below `from` now lives below `to`.
        self.dir_times = std::mem::take(&mut self.dir_times)
            .into_iter()
            .map(|(p, v)| (p.rebase(from, to).unwrap_or(p), v))
            .collect();
        self.touched = std::mem::take(&mut self.touched)
            .into_iter()
            .map(|p| p.rebase(from, to).unwrap_or(p))
            .collect();
        // The file moved is the one this host had: kept fields stay.
        let kind = self
            .ap
            .set_meta_at(&tdir, tname, to, meta, None, Was::Itself)?;
        self.meta_set(index, to, kind, meta);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;
    use omirr_core::Action;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn rename_moves_a_file_making_missing_parents() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("f"), b"content").expect("write");
        let ino = fs::metadata(dir.path().join("f")).expect("stat").ino();
        ap.apply(
            &[Action::Rename {
                from: p("f"),
                to: p("x/y/z"),
                meta: meta(0o604, T),
            }],
            &mut Mem::default(),
        )
        .expect("apply");
        let z = dir.path().join("x/y/z");
        assert_eq!(fs::read(&z).expect("read"), b"content");
        assert_eq!(
            fs::metadata(&z).expect("stat").ino(),
            ino,
            "moved, not copied"
        );
        assert_eq!(mode_of(&z), 0o604);
        assert_eq!(mtime_ns(&z), T);
        assert_eq!(mode_of(&dir.path().join("x")), 0o755);
        assert_eq!(mode_of(&dir.path().join("x/y")), 0o755);
        assert!(!dir.path().join("f").exists());
    }

    #[test]
    fn rename_moves_a_non_empty_directory() {
        let (dir, ap) = default_setup();
        fs::create_dir_all(dir.path().join("d/sub")).expect("mkdir");
        fs::write(dir.path().join("d/f1"), b"1").expect("write");
        fs::write(dir.path().join("d/sub/f2"), b"2").expect("write");
        ap.apply(
            &[Action::Rename {
                from: p("d"),
                to: p("e"),
                meta: meta(0o750, T),
            }],
            &mut Mem::default(),
        )
        .expect("apply");
        assert_eq!(names(dir.path()), ["e"]);
        assert_eq!(fs::read(dir.path().join("e/f1")).expect("read"), b"1");
        assert_eq!(fs::read(dir.path().join("e/sub/f2")).expect("read"), b"2");
        assert_eq!(mode_of(&dir.path().join("e")), 0o750);
        assert_eq!(mtime_ns(&dir.path().join("e")), T);
    }

    #[test]
    fn rename_does_not_overwrite_what_the_index_does_not_know() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("a"), b"a").expect("write");
        fs::write(dir.path().join("b"), b"unknown").expect("write");
        let err = ap
            .apply(
                &[Action::Rename {
                    from: p("a"),
                    to: p("b"),
                    meta: meta(0o644, T),
                }],
                &mut Mem::default(),
            )
            .expect_err("refused");
        assert!(
            matches!(err.error, ApplyError::TargetExists { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(dir.path().join("b")).expect("kept"), b"unknown");
        assert_eq!(fs::read(dir.path().join("a")).expect("kept"), b"a");
    }
}
