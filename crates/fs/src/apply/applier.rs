//! The [`Applier`]'s own methods: opening one mirror root with its
//! settings and rules, and [`Applier::apply`], which runs a batch of
//! actions and makes it durable.
//! The actions themselves are carried out by the batch (`batch.rs` and
//! the modules named after each job).

use std::path::Path;
use std::sync::Arc;

use super::barrier::FSYNC_BATCH_MAX;
use super::{
    Applier, ApplyError, ApplyOptions, Barrier, Batch, BatchError, ContentSource, LocalGuard,
};
use crate::owners::{self, MetaRules, Rules};
use omirr_core::{Action, RelPath};
use rustix::fs::{self as rfs, Mode, OFlags};

impl Applier {
    /// Opens the mirror root `root` (which must be a directory; symlinks
    /// in `root` itself are the administrator's and are followed).
    ///
    /// Stale temporary files are not removed here: call
    /// [`Applier::cleanup_stale_temps_tree`] once at startup, before the
    /// first batch.
    pub fn open(root: &Path, options: ApplyOptions) -> Result<Applier, ApplyError> {
        let fd = rfs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ApplyError::OpenRoot {
            root: root.to_path_buf(),
            error: e.into(),
        })?;
        // Until `set_rules`: rdist's defaults (owners by name, modes
        // mirrored, one `NAME.OLD`).
        let rules = Arc::new(owners::Uniform(MetaRules::default()));
        Ok(Applier {
            root_path: root.to_path_buf(),
            root: fd,
            options,
            tops: None,
            rules,
        })
    }

    /// Puts `rules` in force for the next batches: which owners, groups
    /// and modes are mirrored, and how many old versions are kept (the
    /// Distfile's install options; see [`crate::owners`]).
    pub fn set_rules(&mut self, rules: Arc<dyn Rules>) {
        self.rules = rules;
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<dyn Rules> {
        self.rules.clone()
    }

    /// Says which trees of the root are mirrored (the tops of the mirror
    /// sets); without it, all of the root is. The directories above a top
    /// belong to the host, not to the mirror: the applier never changes,
    /// removes or replaces one (the tree rule only implies them, with
    /// [`Meta::IMPLIED_DIR`](omirr_core::Meta::IMPLIED_DIR)), and makes a
    /// missing one with the mode and owner of its nearest existing
    /// ancestor, saying so in the log.
    pub fn with_tops(mut self, tops: Vec<RelPath>) -> Applier {
        self.tops = Some(tops);
        self
    }

    /// The mirror root's path, as given to [`Applier::open`].
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// The settings the applier was opened with.
    pub fn options(&self) -> &ApplyOptions {
        &self.options
    }

    /// Carries out `actions` in order, stopping at the first failure.
    ///
    /// Durability scheme, per batch rather than per file:
    ///
    /// 1. Each `WriteFile` is *staged*: its content is streamed into a
    ///    temporary file next to the target, checked, and given its mode,
    ///    owner and mtime; the rename is deferred. Other actions are
    ///    carried out at once, except that staged files are first
    ///    committed (steps 2–3) when an action touches a staged path, one
    ///    of its ancestors (other than fixing a directory's metadata) or
    ///    something below it, so the order of the batch is kept; also
    ///    when too many files are staged.
    /// 2. Barrier 1: the staged files' content and metadata are flushed
    ///    (`syncfs` on the root, or `fsync` of each temporary file).
    /// 3. The staged files are renamed over their targets, in order.
    /// 4. At the end of the batch, directories whose times the batch set
    ///    get them again: creating and renaming entries inside a
    ///    directory changes its mtime.
    /// 5. Barrier 2: the directories whose entries changed (and, with
    ///    [`Barrier::Fsync`], the directories and files whose metadata
    ///    changed) are flushed (`syncfs`, or `fsync` of each).
    ///
    /// Only then is `Ok` returned and may the caller commit its index.
    /// A crash before barrier 2 leaves each target either old or new,
    /// never half written, and possibly temporary files, which
    /// [`Applier::cleanup_stale_temps_tree`] removes at the next start.
    ///
    /// On failure, no temporary file is left behind; staged files of
    /// earlier actions are still committed and barrier 2 is still made,
    /// so that the actions before the failed one are durable
    /// ([`BatchError::durable`]).
    pub fn apply(
        &self,
        actions: &[Action],
        source: &mut dyn ContentSource,
    ) -> Result<(), BatchError> {
        self.apply_with(actions, source, None)
    }

    /// [`Applier::apply`], refusing to replace or remove a file that
    /// `guard` says changed locally since it was recorded: that action
    /// fails with [`ApplyError::ChangedLocally`]. The check is made just
    /// before the file is renamed over or removed, so that only a write in
    /// that moment can still be lost.
    pub fn apply_guarded(
        &self,
        actions: &[Action],
        source: &mut dyn ContentSource,
        guard: &dyn LocalGuard,
    ) -> Result<(), BatchError> {
        self.apply_with(actions, source, Some(guard))
    }

    fn apply_with(
        &self,
        actions: &[Action],
        source: &mut dyn ContentSource,
        guard: Option<&dyn LocalGuard>,
    ) -> Result<(), BatchError> {
        let mut batch = Batch::new(self);
        batch.guard = guard;
        // A few actions are flushed file by file even in syncfs mode: a
        // syncfs would also wait for every other writer's dirty data on
        // the filesystem, which on a busy host costs far more than a few
        // fsyncs of our own.
        if actions.len() <= FSYNC_BATCH_MAX {
            batch.barrier = Barrier::Fsync;
        }
        batch.keep_dir_times(actions);
        let mut failure: Option<(usize, ApplyError)> = None;
        for (i, action) in actions.iter().enumerate() {
            if batch.must_commit_before(action) {
                if let Err(f) = batch.commit_staged() {
                    failure = Some(f);
                    break;
                }
            }
            if let Err(e) = batch.run(i, action, source) {
                failure = Some((i, e));
                break;
            }
        }
        // Whatever is staged belongs to actions before any failure.
        if let Err(f) = batch.commit_staged() {
            failure = earliest(failure, f);
        }
        if let Err(f) = batch.reapply_dir_times() {
            failure = earliest(failure, f);
        }
        let synced = batch.final_barrier();
        match (failure, synced) {
            (None, Ok(())) => Ok(()),
            (Some((i, error)), Ok(())) => Err(BatchError {
                index: Some(i),
                durable: i,
                error,
                sync_error: None,
            }),
            (Some((i, error)), Err(sync)) => Err(BatchError {
                index: Some(i),
                durable: 0,
                error,
                sync_error: Some(Box::new(sync)),
            }),
            (None, Err(error)) => Err(BatchError {
                index: None,
                durable: 0,
                error,
                sync_error: None,
            }),
        }
    }
}

fn earliest(
    prev: Option<(usize, ApplyError)>,
    new: (usize, ApplyError),
) -> Option<(usize, ApplyError)> {
    match prev {
        Some(p) if p.0 <= new.0 => Some(p),
        _ => Some(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;

    #[test]
    fn a_failure_reports_its_index_and_keeps_earlier_actions() {
        let (dir, ap) = default_setup();
        let mut src = Mem::with(&[b"a", b"b"]);
        let actions = [
            write("a", b"a", meta(0o644, T)),
            Action::MakeDir {
                path: p("d"),
                meta: meta(0o755, T),
            },
            write("b", b"b", meta(0o644, T)),
            write("c", b"missing", meta(0o644, T)),
            write("e", b"a", meta(0o644, T)),
        ];
        let err = ap.apply(&actions, &mut src).expect_err("c fails");
        assert_eq!(err.index, Some(3));
        assert_eq!(err.durable, 3);
        assert!(err.sync_error.is_none());
        assert!(
            err.to_string().starts_with("action 3 of the batch failed"),
            "{err}"
        );
        // The staged writes before the failure were still renamed into
        // place; nothing after it was attempted.
        assert_eq!(names(dir.path()), ["a", "b", "d"]);
    }
}
