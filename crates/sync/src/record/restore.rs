//! Where this host only receives (`receiveonly`), a local change is not
//! recorded (the scans hold it back,
//! [`omirr_fs::owners::Rules::undoes_local_changes`]) but undone: the
//! set's version, as the index holds it, put back on disk
//! ([`plan_restore`], then [`apply_restore`]).

use omirr_core::resolve::Action;
use omirr_core::{Change, Hlc, HostId, RelPath, StatKey, Timestamp};
use omirr_fs::apply::{Applier, ContentSource};
use omirr_fs::owners::Rules;
use omirr_index::{Batch, Index};
use std::collections::HashMap;
use std::path::Path;

use super::changes::{record_scan, LocalScanError, Stamp};
use super::remote::{stat_keys_after, ApplyRemoteError};
use super::stat_key_at;

/// How a receive-only host undoes its local changes at some paths: the
/// changes as found, the actions that put the set's version back
/// ([`omirr_core::resolve::restore`]), and what lay at each path those
/// actions touch when this was planned.
#[derive(Debug, Default)]
pub struct Restore {
    /// The local changes found (never recorded).
    pub local: Vec<Change>,
    /// The actions that put the set's version back, in order.
    pub actions: Vec<Action>,
    /// `lstat` of each path the actions touch, as planned (`None`:
    /// nothing there). Carrying the actions out stops at a path that
    /// changed since: a newer local write, undone on the next round.
    pub seen: HashMap<RelPath, Option<StatKey>>,
}

/// Looks at `paths` (inside `tops`, where `rules` says this host only
/// receives) and plans how to undo the local changes found there. Reads
/// the disk and the index; writes neither.
#[allow(clippy::too_many_arguments)]
pub fn plan_restore(
    index: &Index,
    hlc: &mut Hlc,
    host: &HostId,
    root: &Path,
    tops: &[RelPath],
    paths: &[RelPath],
    exclude: &dyn Fn(&RelPath) -> bool,
    rules: &dyn Rules,
    savetargets: &dyn Fn(&RelPath) -> bool,
    wall: Timestamp,
) -> Result<Restore, LocalScanError> {
    let paths: Vec<RelPath> = paths
        .iter()
        .filter(|d| d.is_within_any(tops))
        .cloned()
        .collect();
    // The changes other than those to undo are the watcher's business:
    // this batch is dropped.
    let mut scratch = Batch::new();
    let r = record_scan(
        index,
        hlc,
        host,
        root,
        tops,
        &paths,
        exclude,
        rules,
        Stamp::Live { wall },
        None,
        &mut scratch,
    )?;
    let view = index.reader()?;
    let actions = omirr_core::resolve::restore(&view, &r.undone, savetargets)?;
    let seen = actions
        .iter()
        .flat_map(Action::paths)
        .map(|p| (p.clone(), stat_key_at(root, p)))
        .collect();
    Ok(Restore {
        local: r.undone,
        actions,
        seen,
    })
}

/// Carries out a [`Restore`] with `applier` and records the stat keys of
/// what it left on disk (the index's entries are the set's already).
/// Returns how many actions were done; an error as
/// [`apply_resolved`](super::apply_resolved)'s.
pub fn apply_restore(
    index: &Index,
    applier: &Applier,
    restore: &Restore,
    source: &mut dyn ContentSource,
) -> Result<usize, ApplyRemoteError> {
    let guard = SeenGuard(&restore.seen);
    let (done, failure) = match applier.apply_guarded(&restore.actions, source, &guard) {
        Ok(()) => (restore.actions.len(), None),
        Err(e) => (e.durable, Some(e)),
    };
    let mut out = Batch::new();
    stat_keys_after(applier.root(), &restore.actions[..done], &mut out);
    if !out.is_empty() {
        index.commit(&out)?;
    }
    match failure {
        None => Ok(done),
        Some(error) => {
            let action = error
                .index
                .and_then(|i| restore.actions.get(i).cloned())
                .map(Box::new);
            Err(ApplyRemoteError::Apply {
                error: Box::new(error),
                recorded: 0,
                action,
                // An undo meets no conflict: it puts the set's version back.
                conflicts: Vec::new(),
            })
        }
    }
}

/// What a restore planned to replace, as the applier's guard: a file
/// written since is left alone.
struct SeenGuard<'s>(&'s HashMap<RelPath, Option<StatKey>>);

impl omirr_fs::apply::LocalGuard for SeenGuard<'_> {
    fn unchanged(&self, path: &RelPath, now: &StatKey) -> bool {
        matches!(self.0.get(path), Some(Some(key)) if key.unchanged(now))
    }
}
