//! A peer's changes onto this host's disk, then into the index:
//! [`apply_remote`], or [`apply_resolved`] when the caller has resolved
//! them already; and the stat keys of what the applier left, so that the
//! next scan and the watcher know these writes as the index's own.

use omirr_core::resolve::{resolve_with, Action};
use omirr_core::{Change, Hlc, RelPath, StatKey};
use omirr_fs::apply::{Applier, ContentSource};
use omirr_fs::owners::Rules;
use omirr_index::{Batch, Index, IndexError, StatUpdate};
use std::path::Path;

use super::stat_key_at;

/// Why a peer's batch was not wholly applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyRemoteError {
    /// Reading or committing the index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Part of the batch was applied and recorded; the rest was not.
    #[error("{error}")]
    Apply {
        /// What the applier reported.
        #[source]
        error: Box<omirr_fs::apply::BatchError>,
        /// How many of the accepted changes were recorded.
        recorded: usize,
        /// The action that failed, if one did (not the final barrier).
        action: Option<Box<Action>>,
        /// The conflicts of the changes that were recorded (their
        /// conflict copies are made).
        conflicts: Vec<omirr_core::resolve::Conflict>,
    },
}

impl ApplyRemoteError {
    /// Whether the failure lies with this host as a whole (a full or
    /// read-only disk, an I/O error, the index, a barrier) rather than
    /// with the one change being applied: then every later change would
    /// fail the same way, and setting them aside one by one would only
    /// churn.
    pub fn is_host_fault(&self) -> bool {
        let e = match self {
            ApplyRemoteError::Index(_) => return true,
            ApplyRemoteError::Apply { action: None, .. } => return true,
            ApplyRemoteError::Apply { error, .. } => error,
        };
        if e.sync_error.is_some() {
            return true;
        }
        let io = match &e.error {
            omirr_fs::apply::ApplyError::Io { error, .. }
            | omirr_fs::apply::ApplyError::ContentRead { error, .. }
            | omirr_fs::apply::ApplyError::OpenRoot { error, .. } => error,
            _ => return false,
        };
        matches!(
            io.raw_os_error(),
            Some(nix::libc::ENOSPC)
                | Some(nix::libc::EDQUOT)
                | Some(nix::libc::EROFS)
                | Some(nix::libc::EIO)
                | Some(nix::libc::ENOMEM)
                | Some(nix::libc::EMFILE)
                | Some(nix::libc::ENFILE)
        )
    }
}

/// What applying a peer's batch did.
#[derive(Debug)]
pub struct Applied {
    /// The accepted changes, recorded in the index.
    pub recorded: usize,
    /// The actions carried out on disk.
    pub actions: Vec<Action>,
    /// The conflicts the batch met (see [`omirr_core::conflict`]).
    pub conflicts: Vec<omirr_core::resolve::Conflict>,
}

/// Resolves a peer's `batch` against the index, carries the actions out
/// with `applier`, and records the accepted changes with the stat keys of
/// what now lies on disk, in one transaction, so that the next scan (and
/// the watcher) sees these writes as already known: they are not sent
/// back. If the applier fails part-way, only the changes whose paths the
/// completed actions fully covered are recorded; the rest stays unknown to
/// the index and is asked for again.
pub fn apply_remote(
    index: &Index,
    applier: &Applier,
    hlc: &mut Hlc,
    batch: &[Change],
    rules: &omirr_core::resolve::Rules<'_>,
    source: &mut dyn ContentSource,
) -> Result<Applied, ApplyRemoteError> {
    let res = resolve_with(index, batch, rules, &mut |d| tracing::trace!("decided {d}"))?;
    apply_resolved(index, applier, hlc, batch, res, source, &mut Batch::new())
}

/// [`apply_remote`] with `batch` already resolved against `index` as it
/// is now (the caller knows nothing was recorded since): resolving a
/// batch that touches a large directory looks at everything below it,
/// which is worth doing once.
///
/// If every action is carried out, `tail` (the peer's cursor and the
/// changes set aside below it, say) commits in the same transaction as
/// the changes, and is left empty; otherwise it is left as it is, for
/// the caller to commit once it knows what failed.
pub fn apply_resolved(
    index: &Index,
    applier: &Applier,
    hlc: &mut Hlc,
    batch: &[Change],
    res: omirr_core::resolve::Resolution,
    source: &mut dyn ContentSource,
    tail: &mut Batch,
) -> Result<Applied, ApplyRemoteError> {
    for c in batch {
        hlc.observe(c.entry.version.ts);
    }
    // Conflict copies are stamped above the batch: the clock follows.
    for c in &res.accepted {
        hlc.observe(c.entry.version.ts);
    }
    let rules = applier.rules();
    let guard = IndexGuard {
        index,
        rules: &*rules,
    };
    let (done, failure) = match applier.apply_guarded(&res.actions, source, &guard) {
        Ok(()) => (res.actions.len(), None),
        Err(e) => (e.durable, Some(e)),
    };
    // A change is recorded only if no action left undone touches its
    // path, an ancestor, or something below it.
    let undone: std::collections::BTreeSet<RelPath> = res.actions[done..]
        .iter()
        .flat_map(Action::paths)
        .cloned()
        .collect();
    let mut out = Batch::new();
    let mut recorded = 0;
    for c in &res.accepted {
        if omirr_core::resolve::held_back(&undone, &c.path) {
            continue;
        }
        out.record(c.clone(), StatUpdate::Keep);
        recorded += 1;
    }
    stat_keys_after(applier.root(), &res.actions[..done], &mut out);
    out.observe_hlc(hlc.last());
    if failure.is_none() {
        out.append(tail);
    }
    index.commit(&out)?;
    match failure {
        None => Ok(Applied {
            recorded,
            actions: res.actions,
            conflicts: res.conflicts,
        }),
        Some(error) => {
            let action = error
                .index
                .and_then(|i| res.actions.get(i).cloned())
                .map(Box::new);
            let conflicts = res
                .conflicts
                .into_iter()
                .filter(|c| !omirr_core::resolve::held_back(&undone, &c.path))
                .collect();
            Err(ApplyRemoteError::Apply {
                error: Box::new(error),
                recorded,
                action,
                conflicts,
            })
        }
    }
}

/// Puts in `out` the stat keys of what the completed `actions` left on
/// disk under `root`.
pub(super) fn stat_keys_after(root: &Path, actions: &[Action], out: &mut Batch) {
    for a in actions {
        match a {
            Action::Remove { path, .. } => {
                out.forget_stat(path.clone());
            }
            Action::Rename { from, to, .. } => {
                out.forget_stat(from.clone());
                if let Some(key) = stat_key_at(root, to) {
                    out.set_stat(to.clone(), key);
                }
            }
            Action::SaveOld { .. } => {}
            Action::KeepConflictCopy { copy, prune, .. } => {
                for old in prune {
                    out.forget_stat(old.clone());
                }
                match stat_key_at(root, copy) {
                    Some(key) => out.set_stat(copy.clone(), key),
                    None => out.forget_stat(copy.clone()),
                };
            }
            other => {
                let path = other.path();
                match stat_key_at(root, path) {
                    Some(key) => out.set_stat(path.clone(), key),
                    None => out.forget_stat(path.clone()),
                };
            }
        }
    }
}

/// The index's stat keys, as the applier's guard against replacing a
/// local write the watcher has not recorded yet; except where this host
/// only receives, where a local write is to be undone anyway (waiting for
/// the undo would hold the peer's newer change back for as long as the
/// undo waits for the set's older content).
struct IndexGuard<'i> {
    index: &'i Index,
    rules: &'i dyn Rules,
}

impl omirr_fs::apply::LocalGuard for IndexGuard<'_> {
    fn unchanged(&self, path: &RelPath, now: &StatKey) -> bool {
        if self.rules.undoes_local_changes(path) {
            return true;
        }
        match self.index.stat(path) {
            // Nothing to compare: as before.
            Ok(Some(key)) => key.unchanged(now),
            _ => true,
        }
    }
}
