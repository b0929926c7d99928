//! Undoing local changes where this host only receives: the set's
//! version put back, path by path, with content fetched from the peer of
//! the session that does it (see [`crate::engine::Undo`] for what is
//! queued, and `omirr_core::resolve::restore` for the rule). Part of the
//! applying side of a session ([`PeerApplier`]), kept apart because it
//! takes no batch of the peer's.

use super::apply::PeerApplier;
use super::fetch;
use crate::record::ApplyRemoteError;
use crate::SessionError;
use omirr_core::RelPath;

/// What a round of undoing local changes came to.
enum Round {
    Done,
    /// These paths could not be undone; the others of the round are
    /// pending again.
    Stuck(Vec<RelPath>),
    /// Nothing could be done (the host as a whole); every path is pending
    /// again.
    Failed,
}

impl PeerApplier {
    /// Undoes local changes where this host only receives (see
    /// [`crate::engine::Undo`]), round after round while rounds succeed.
    /// Only once this session's catch-up is over, so that the index holds
    /// the set's versions (a file already here as the set has it is then
    /// no change at all, rather than removed and fetched again). Paths
    /// whose round fails wait for the retry timer (of any session).
    pub(super) async fn undo_local(&self) -> Result<(), SessionError> {
        // Paths whose undo failed in this call: the next rounds go on
        // without them; they wait for the retry timer.
        let mut stuck: std::collections::BTreeSet<RelPath> = Default::default();
        let mut result = Ok(());
        while self.progress.caught_up() && !self.engine.undo.is_empty() {
            let (round, skipped): (Vec<RelPath>, Vec<RelPath>) = self
                .engine
                .undo
                .take()
                .into_iter()
                .partition(|p| !stuck.contains(p));
            stuck.extend(skipped);
            if round.is_empty() {
                break;
            }
            match self.undo_round(round).await {
                Ok(Round::Done) => {}
                Ok(Round::Stuck(paths)) => stuck.extend(paths),
                Ok(Round::Failed) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.engine.undo.put_back(stuck);
        result
    }

    /// One round of [`PeerApplier::undo_local`]: `paths` looked at again,
    /// the set's version put back, content fetched from this peer. After
    /// an action that fails, the paths that go with it (the same, above or
    /// below) are returned as stuck and the others are put back for the
    /// next round.
    async fn undo_round(&self, paths: Vec<RelPath>) -> Result<Round, SessionError> {
        let engine = self.engine.clone();
        let looked_at = paths.clone();
        let span = tracing::Span::current();
        let planned = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let policy = engine.policy();
            let mut w = engine.disk.lock();
            let rules = w.applier.rules();
            crate::record::plan_restore(
                &engine.store.index,
                &mut w.hlc,
                &engine.host,
                &engine.disk.root,
                &engine.disk.tops,
                &looked_at,
                &|p| policy.excluded(p),
                &*rules,
                &|p| policy.savetargets(p),
                crate::engine::wall(),
            )
        })
        .await?;
        let restore = match planned {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot look at local changes to undo: {e}");
                self.engine.undo.put_back(paths);
                return Ok(Round::Failed);
            }
        };
        if restore.actions.is_empty() {
            return Ok(Round::Done);
        }
        let wanted = omirr_fs::apply::wanted(&restore.actions);
        let staged =
            match fetch::stage(self.engine.clone(), self.transfers.clone(), wanted, false).await {
                Ok(s) => s,
                Err(ended) => {
                    // Another session undoes them.
                    self.engine.undo.put_back(paths);
                    return Err(ended.into());
                }
            };
        let engine = self.engine.clone();
        let span = tracing::Span::current();
        let (result, restore) = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let w = engine.disk.lock();
            let mut source = &staged;
            let r = crate::record::apply_restore(
                &engine.store.index,
                &w.applier,
                &restore,
                &mut source,
            );
            (r, restore)
        })
        .await?;
        match result {
            Ok(_) => {
                for c in &restore.local {
                    tracing::info!(peer = %self.peer, "undid the local change to {}: the set's version is back", c.path);
                }
                let n = restore.local.len() as u64;
                self.engine
                    .counters
                    .undone_changes
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                Ok(Round::Done)
            }
            Err(e) => {
                // The paths of the action that failed, unless the host as
                // a whole is at fault.
                let failed: Option<Vec<RelPath>> = match &e {
                    ApplyRemoteError::Apply {
                        action: Some(a), ..
                    } if !e.is_host_fault() => Some(a.paths().into_iter().cloned().collect()),
                    _ => None,
                };
                let Some(failed) = failed else {
                    tracing::debug!(peer = %self.peer, "cannot undo local changes yet, trying again later: {e}");
                    self.engine.undo.put_back(paths);
                    return Ok(Round::Failed);
                };
                let related = |p: &RelPath| {
                    failed
                        .iter()
                        .any(|f| p == f || p.is_below(f) || f.is_below(p))
                };
                let (stuck, rest): (Vec<RelPath>, Vec<RelPath>) =
                    paths.into_iter().partition(|p| related(p));
                if stuck.is_empty() {
                    // Nothing to blame: the same round would fail again.
                    tracing::debug!(peer = %self.peer, "cannot undo local changes yet, trying again later: {e}");
                    self.engine.undo.put_back(rest);
                    return Ok(Round::Failed);
                }
                for p in &stuck {
                    tracing::debug!(peer = %self.peer, "cannot undo the local change to {p} yet, trying again later: {e}");
                }
                self.engine.undo.put_back(rest);
                Ok(Round::Stuck(stuck))
            }
        }
    }
}
