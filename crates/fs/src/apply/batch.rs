//! The state of one [`Applier::apply`] call ([`Batch`]), what sends each
//! action to the code that carries it out, and the rule that keeps the
//! batch's order while file writes are staged (see
//! [`Batch::must_commit_before`]). Also the
//! [`LocalGuard`](super::LocalGuard) check made before anything recorded
//! is replaced or removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::OwnedFd;

use super::open::lstat;
use super::stage::{MAX_STAGED, MAX_STAGED_DIRS, MAX_STAGED_FSYNC};
use super::{Applier, ApplyError, Barrier, Batch, ContentSource};
use omirr_core::{Action, RelPath, Source};
use rustix::fs::FileType;

impl<'a> Batch<'a> {
    pub(super) fn new(ap: &'a Applier) -> Self {
        Batch {
            ap,
            guard: None,
            changed_here: BTreeSet::new(),
            staged: Vec::new(),
            staged_paths: BTreeSet::new(),
            dirs: HashMap::new(),
            touched: BTreeSet::new(),
            meta_changed: BTreeSet::new(),
            dir_times: BTreeMap::new(),
            kept_times: BTreeMap::new(),
            barrier: ap.options.barrier,
            buf: None,
        }
    }

    /// Whether staged files must be committed before `action` runs, to
    /// keep the batch's order (see [`Applier::apply`]) or bound the
    /// resources staged files hold.
    pub(super) fn must_commit_before(&self, action: &Action) -> bool {
        if self.staged.is_empty() {
            return false;
        }
        if matches!(action, Action::WriteFile { .. }) {
            let cap = match self.barrier {
                Barrier::Syncfs => MAX_STAGED,
                Barrier::Fsync => MAX_STAGED_FSYNC,
            };
            if self.staged.len() >= cap || self.dirs.len() >= MAX_STAGED_DIRS {
                return true;
            }
        }
        // Fixing a directory's metadata leaves the files staged in it be.
        let meta_only = matches!(action, Action::SetMeta { .. } | Action::MakeDir { .. });
        let mut paths: Vec<&RelPath> = vec![action.path()];
        match action {
            Action::Rename { from, .. } | Action::Link { from, .. } => paths.push(from),
            Action::WriteFile {
                source: Source::CopyFrom(from),
                ..
            } => paths.push(from),
            _ => {}
        }
        let saves = matches!(action, Action::SaveOld { .. });
        paths.iter().any(|p| {
            // The path itself or an ancestor of it is staged.
            self.staged_paths.contains(*p)
                || p.ancestors().any(|a| self.staged_paths.contains(&a))
                // Staged paths that start with its bytes: those below it,
                // and, for SaveOld, its NAME.OLD* siblings.
                || self
                    .staged_paths
                    .range::<RelPath, _>(*p..)
                    .take_while(|s| s.as_bytes().starts_with(p.as_bytes()))
                    .any(|s| {
                        (s.is_below(p) && !meta_only)
                            || (saves
                                && s.parent() == p.parent()
                                && s.file_name().starts_with(p.file_name()))
                    })
        })
    }

    pub(super) fn run(
        &mut self,
        index: usize,
        action: &Action,
        source: &mut dyn ContentSource,
    ) -> Result<(), ApplyError> {
        if let Some(done) = self.above_tops(action) {
            return done;
        }
        match action {
            Action::SaveOld { path } => self.save_old(path),
            Action::Rename { from, to, meta } => self.rename(index, from, to, meta),
            Action::Remove { path, was } => self.remove(path, was),
            Action::MakeDir { path, meta } => self.make_dir(index, path, meta),
            Action::WriteFile {
                path,
                size,
                hash,
                meta,
                source: from,
            } => self.stage_write(index, path, *size, hash, meta, from, source),
            Action::MakeSymlink { path, target, meta } => self.make_symlink(path, target, meta),
            Action::MakeFifo { path, meta } => self.make_fifo(index, path, meta),
            Action::Link { from, to, meta } => self.link(index, from, to, meta),
            Action::SetMeta { path, meta } => self.set_meta(index, path, meta),
            Action::KeepConflictCopy {
                path,
                copy,
                size,
                hash,
                meta,
                prune,
            } => self.keep_conflict_copy(index, path, copy, (*size, hash), meta, prune, source),
        }
    }

    /// With a guard, fails if the non-directory `name` in `dir` changed
    /// since the index recorded it (see [`LocalGuard`]).
    pub(super) fn check_unchanged(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        path: &RelPath,
    ) -> Result<(), ApplyError> {
        let Some(guard) = self.guard else {
            return Ok(());
        };
        if self.changed_here.contains(path) {
            return Ok(());
        }
        match lstat(dir, name, path)? {
            Some(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {
                if guard.unchanged(path, &crate::scan::key_of(&st)) {
                    Ok(())
                } else {
                    Err(ApplyError::ChangedLocally { path: path.clone() })
                }
            }
            _ => Ok(()),
        }
    }

    pub(super) fn touch_parent(&mut self, path: &RelPath) {
        if let Some(parent) = path.parent() {
            self.touched.insert(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;
    use crate::apply::LocalGuard;
    use omirr_core::Content;
    use std::fs;
    use std::path::Path;

    #[test]
    fn staged_writes_keep_the_batch_order() {
        // The rename of a staged file is deferred; an action on the same
        // path must still see it in place.
        let (dir, ap) = default_setup();
        ap.apply(
            &[
                write("f", b"v1", meta(0o644, T)),
                Action::SaveOld { path: p("f") },
                write("f", b"v2", meta(0o644, T)),
                write("g", b"v1", meta(0o644, T)),
                Action::Rename {
                    from: p("g"),
                    to: p("h"),
                    meta: meta(0o600, T),
                },
            ],
            &mut Mem::with(&[b"v1", b"v2"]),
        )
        .expect("apply");
        assert_eq!(names(dir.path()), ["f", "f.OLD", "h"]);
        assert_eq!(fs::read(dir.path().join("f.OLD")).expect("old"), b"v1");
        assert_eq!(fs::read(dir.path().join("f")).expect("f"), b"v2");
        assert_eq!(fs::read(dir.path().join("h")).expect("h"), b"v1");
    }

    /// A guard that knows one file's stat, taken before the batch.
    struct KnownStat(RelPath, omirr_core::StatKey);

    impl LocalGuard for KnownStat {
        fn unchanged(&self, path: &RelPath, now: &omirr_core::StatKey) -> bool {
            *path != self.0 || self.1.unchanged(now)
        }
    }

    fn key(path: &Path) -> omirr_core::StatKey {
        crate::scan::lstat_key(path).expect("lstat")
    }

    #[test]
    fn the_guard_refuses_to_replace_or_remove_a_file_changed_since_it_was_recorded() {
        let (dir, ap) = default_setup();
        let mut src = Mem::with(&[b"v1", b"v2"]);
        ap.apply(&[write("f", b"v1", meta(0o644, T))], &mut src)
            .expect("v1");
        let recorded = KnownStat(p("f"), key(&dir.path().join("f")));
        // Keeping the old version links it (a new ctime, by our doing):
        // not a local change.
        ap.apply_guarded(
            &[
                Action::SaveOld { path: p("f") },
                write("f", b"v2", meta(0o644, T)),
            ],
            &mut src,
            &recorded,
        )
        .expect("unchanged since recorded");
        assert_eq!(fs::read(dir.path().join("f")).expect("f"), b"v2");
        // Written locally since: neither replaced nor removed.
        let recorded = KnownStat(p("f"), key(&dir.path().join("f")));
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(dir.path().join("f"), b"local").expect("write");
        let mut src = Mem::with(&[b"v3"]);
        let err = ap
            .apply_guarded(&[write("f", b"v3", meta(0o644, T))], &mut src, &recorded)
            .expect_err("changed locally");
        assert!(
            matches!(err.error, ApplyError::ChangedLocally { .. }),
            "{err:?}"
        );
        let remove = Action::Remove {
            path: p("f"),
            was: Content::File {
                size: 2,
                hash: h(b"v2"),
            },
        };
        let err = ap
            .apply_guarded(std::slice::from_ref(&remove), &mut src, &recorded)
            .expect_err("changed locally");
        assert!(
            matches!(err.error, ApplyError::ChangedLocally { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(dir.path().join("f")).expect("f"), b"local");
        assert!(temps(dir.path()).is_empty(), "no temporary file left");
    }
}
