//! Directory times kept: creating, renaming and removing entries moves a
//! directory's mtime. The directories a batch writes in get theirs back
//! at the end, the batch's own or those they had before (step 4 of
//! [`Applier::apply`](super::Applier::apply)).

use std::collections::BTreeSet;

use super::error::io_error;
use super::meta::mtime;
use super::open::lstat;
use super::ApplyError;
use super::Batch;
use omirr_core::{Action, RelPath};
use rustix::fs::{self as rfs, AtFlags, FileType};
use rustix::io::Errno;

impl Batch<'_> {
    /// Notes the mtimes of the directories `actions` write in (see
    /// [`Batch::kept_times`]): one `lstat` per directory.
    pub(super) fn keep_dir_times(&mut self, actions: &[Action]) {
        let parents: BTreeSet<RelPath> = actions
            .iter()
            .flat_map(|a| match a {
                Action::Rename { from, to, .. } => vec![from.parent(), to.parent()],
                other => vec![other.path().parent()],
            })
            .flatten()
            .filter(|p| !p.is_root())
            .collect();
        for p in parents {
            let Ok((dir, name)) = self.ap.parent(&p, "look at", None) else {
                continue;
            };
            if let Ok(Some(st)) = lstat(&dir, name, &p) {
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    self.kept_times.insert(p, crate::scan::key_of(&st).mtime_ns);
                }
            }
        }
    }

    /// Step 4: gives directories the mtimes the batch set, which later
    /// entries created or renamed inside them have moved. Directories
    /// gone or replaced since are skipped.
    pub(super) fn reapply_dir_times(&mut self) -> Result<(), (usize, ApplyError)> {
        // Best effort: a directory that could not be given its old mtime
        // back costs one needless change record, nothing else.
        for (path, &ns) in &self.kept_times {
            if !self.dir_times.contains_key(path) {
                let _ = self.set_dir_mtime(path, ns);
            }
        }
        for (path, &(index, ns)) in &self.dir_times {
            self.set_dir_mtime(path, ns)
                .map_err(|e| (index, io_error(path, "set the mtime of", e)))?;
        }
        Ok(())
    }

    /// Sets the mtime of the directory at `path`, if one is still there.
    fn set_dir_mtime(&self, path: &RelPath, ns: i64) -> Result<(), Errno> {
        if path.is_root() {
            return rfs::futimens(&self.ap.root, &mtime(ns));
        }
        let Ok((dir, name)) = self.ap.parent(path, "set the mtime of", None) else {
            return Ok(());
        };
        match lstat(&dir, name, path) {
            Ok(Some(st)) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                rfs::utimensat(&dir, name, &mtime(ns), AtFlags::SYMLINK_NOFOLLOW)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;

    #[test]
    fn directory_mtimes_survive_writes_inside_them() {
        let (dir, ap) = default_setup();
        ap.apply(
            &[
                Action::MakeDir {
                    path: p("d"),
                    meta: meta(0o755, T),
                },
                write("d/f", b"f", meta(0o644, T + 1)),
                Action::MakeSymlink {
                    path: p("d/l"),
                    target: b"f".to_vec(),
                    meta: meta(0o777, T + 2),
                },
            ],
            &mut Mem::with(&[b"f"]),
        )
        .expect("apply");
        assert_eq!(mtime_ns(&dir.path().join("d")), T);
        assert_eq!(mtime_ns(&dir.path().join("d/f")), T + 1);
        assert_eq!(mtime_ns(&dir.path().join("d/l")), T + 2);
    }
}
