//! Applying the peer's pages: batches in, changes recorded, cursor moved,
//! `Ack` out.
//!
//! A batch is the pages that arrive back to back (up to
//! [`crate::Limits::batch_max`] changes; [`crate::PeerFlow`] makes them), so
//! that both halves of a large rename resolve together. It is
//! applied in groups of at most [`GROUP_BYTES`] of content to fetch: a
//! group's content is staged first, with no lock held ([`super::fetch`]),
//! while the group before it is applied; then the group is applied under
//! the daemon's write lock, reading only staged content.
//!
//! A change that cannot be applied (a local file in the way, content the
//! peer no longer has) is set aside with its reason, persisted in the
//! index with the cursor, and retried later; the batch goes on without it.
//! A failure of the host as a whole (a full or read-only disk) is retried,
//! with back-off, without moving the cursor: every change would fail the
//! same way. See docs/sync-model.md, "Changes set aside".
//!
//! What runs under the write lock (resolving a group again if the index
//! moved, applying it, setting aside what fails on its own, and the
//! batch's last group committed with the cursor) is `locked`; this module
//! keeps the flow of batches around it.

use super::fetch::{self, SessionEnded, Staged, Transfers};
use crate::admit::Admission;
use crate::engine::Engine;
use crate::SessionError;
use omirr_core::{Change, HostId, IndexView, RelPath, Seq};
use omirr_fs::apply::Wanted;
use omirr_index::{Aside, Batch};
use omirr_proto::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

mod locked;
use locked::{apply_isolated, resolve, tail_batch, Outcome, Resolved, Tail};

/// The most content a group of a batch stages before it is applied.
pub const GROUP_BYTES: u64 = 64 << 20;
/// Set-aside changes are retried this long after the last try at first,
/// then ever less often, up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(2);
/// The longest wait before a set-aside change, or a batch that failed
/// for the host as a whole, is tried again.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// How long a second round waits for content another session fetches.
const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// The first wait before a batch that failed for the host as a whole is
/// tried again; it doubles up to [`RETRY_MAX`].
const HOST_FAULT_FIRST: Duration = Duration::from_secs(1);

/// The applying side of one session.
#[derive(Clone)]
pub struct PeerApplier {
    /// The daemon's engine.
    pub engine: Arc<Engine>,
    /// The peer's host name.
    pub peer: String,
    /// The session's requests for content, through which the applier
    /// fetches what a batch needs.
    pub transfers: Arc<Transfers>,
    /// `Ack`s (and errors) for the writer; never waits.
    pub control: mpsc::UnboundedSender<Message>,
    /// The change stream: batches come from it, Acks go back to it.
    pub flow: Arc<super::Flow>,
    /// The catch-up, counted as batches are applied.
    pub progress: Arc<super::progress::Progress>,
    /// What the peer forgot, and a reconciliation with it, if any.
    pub expiry: Arc<super::reconcile::Expiry>,
}

/// A group of changes with its content staged, and its resolution with
/// the index's last sequence when it was made (reused if the index has
/// not moved since).
type StagedGroup = (Vec<Change>, Staged, Option<Resolved>);

/// Changes applied together, and their resolution if already made.
struct Group {
    changes: Vec<Change>,
    resolved: Option<Resolved>,
}

/// A peer's changes sorted by admission.
struct Admitted {
    /// To apply.
    allowed: Vec<Change>,
    /// Set aside, with their reasons.
    aside: Vec<(Change, String)>,
    /// Refused outright (logged and counted).
    refused: Vec<Change>,
}

impl PeerApplier {
    /// Applies batches as they come until the session ends, and retries
    /// the changes set aside from this peer now and then.
    pub async fn run(self) -> Result<(), SessionError> {
        let mut retry_every = RETRY_FIRST;
        let mut retry_at = Instant::now() + retry_every;
        loop {
            let batch = self.flow.lock().next_batch();
            let Some((changes, upto)) = batch else {
                tokio::select! {
                    _ = self.flow.applier.notified() => {}
                    _ = self.engine.undo.added.notified() => self.undo_local().await?,
                    _ = tokio::time::sleep_until(retry_at) => {
                        self.undo_local().await?;
                        let progress = self.retry_aside().await?;
                        retry_every = if progress {
                            RETRY_FIRST
                        } else {
                            (retry_every * 2).min(RETRY_MAX)
                        };
                        retry_at = Instant::now() + retry_every;
                    }
                }
                continue;
            };
            // Counted only during the catch-up: one pass over the batch.
            let amount =
                (!self.progress.caught_up()).then(|| crate::counters::Backlog::of(&changes));
            self.expiry.note(&changes);
            if self.apply(changes, Some(upto), &[]).await? > 0 {
                retry_every = RETRY_FIRST;
                retry_at = Instant::now() + retry_every;
            }
            if let Some(amount) = amount {
                let line = self.progress.on_applied(amount, upto);
                self.progress.settle(&self.engine, line);
            }
            let ack = self.flow.lock().applied(upto);
            if self.control.send(ack).is_err() {
                return Err(SessionEnded.into());
            }
            if let Some(r) = self.expiry.finished(upto) {
                self.finish_reconcile(r).await?;
            }
            // Perhaps the catch-up just ended, or a wake-up was missed.
            self.undo_local().await?;
        }
    }

    /// The end of a reconciliation: what the peer deleted and forgot is
    /// deleted here, this host's own changes made while away are renewed
    /// (and so sent), as `omirr_core::expiry::reconcile` says; then it is
    /// no longer pending.
    async fn finish_reconcile(&self, r: super::reconcile::Reconcile) -> Result<(), SessionError> {
        let engine = self.engine.clone();
        let peer = self.peer.clone();
        let out = tokio::task::spawn_blocking(move || {
            let plan = engine.policy();
            let held = engine.store.index.held(&|p| plan.authorised(&peer, p))?;
            let now = engine.disk.lock().hlc.now(crate::engine::wall());
            omirr_core::expiry::reconcile(
                &engine.store.index,
                &engine.host,
                &held,
                &r.sent,
                &r.peer_forgot,
                r.peer_cursor,
                now,
            )
        })
        .await??;
        let (deleted, renewed) = (out.deleted.len(), out.renewed.len());
        for c in &out.deleted {
            tracing::info!(peer = %self.peer, path = %c.path, "deleted here: {} deleted it and no longer remembers", self.peer);
        }
        for c in &out.renewed {
            tracing::info!(peer = %self.peer, path = %c.path, "kept and sent: changed on this host while it was away from {}", self.peer);
        }
        let changes: Vec<Change> = out.deleted.into_iter().chain(out.renewed).collect();
        if !changes.is_empty() {
            self.apply_checked(changes, None, &[], false).await?;
            self.engine.store.announce();
        }
        let peer_id = HostId::new(&self.peer);
        self.engine
            .store
            .index
            .set_must_reconcile(&peer_id, false)?;
        self.engine
            .counters
            .reconciliations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(peer = %self.peer, deleted, renewed, "reconciled with {}: {deleted} entries it deleted and no longer remembers are deleted here, {renewed} changes this host made while away are kept and sent", self.peer);
        Ok(())
    }

    /// Tries the changes set aside from this peer again; whether any of
    /// them was applied or dropped.
    async fn retry_aside(&self) -> Result<bool, SessionError> {
        let peer_id = HostId::new(&self.peer);
        let kept = self.engine.store.index.aside(Some(&peer_id))?;
        if kept.is_empty() {
            return Ok(false);
        }
        let mut superseded = Batch::new();
        let mut dropped = 0;
        let mut again = Vec::new();
        for (_, a) in kept {
            let newer = self
                .engine
                .store
                .index
                .entry(&a.change.path)?
                .is_some_and(|e| e.version >= a.change.entry.version);
            if newer {
                superseded.clear_aside(peer_id.clone(), a.change.path.clone());
                dropped += 1;
            } else {
                again.push(a);
            }
        }
        if dropped > 0 {
            self.engine.store.index.commit(&superseded)?;
        }
        if again.is_empty() {
            return Ok(dropped > 0);
        }
        let changes: Vec<Change> = again.iter().map(|a| a.change.clone()).collect();
        tracing::debug!(peer = %self.peer, changes = changes.len(), "retrying changes set aside");
        let applied = self.apply(changes, None, &again).await?;
        Ok(dropped > 0 || applied > 0)
    }

    /// Applies `changes` (a batch, or set-aside changes being retried, of
    /// which `retried` are the records); moves the cursor to `upto` and
    /// acknowledges it, if given. Returns how many changes were applied
    /// (or found already applied) rather than set aside. `Err` only when
    /// the session ends or the index fails.
    async fn apply(
        &self,
        changes: Vec<Change>,
        upto: Option<Seq>,
        retried: &[Aside],
    ) -> Result<usize, SessionError> {
        self.apply_checked(changes, upto, retried, true).await
    }

    /// [`PeerApplier::apply`]; `admit`: the changes come from the peer
    /// and pass the admission rules (not a reconciliation's own).
    async fn apply_checked(
        &self,
        changes: Vec<Change>,
        upto: Option<Seq>,
        retried: &[Aside],
        admit: bool,
    ) -> Result<usize, SessionError> {
        let plan = self.engine.policy();
        let now = crate::engine::wall();
        // A send-only host applies no peer's change in its send-only sets:
        // they are dropped, and the cursor moves past them all the same.
        let (changes, not_applied): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .partition(|c| plan.direction(&c.path) != crate::engine::Direction::SendOnly);
        if !not_applied.is_empty() {
            self.not_applied_here(&not_applied, now, upto.is_none())
                .await?;
        }
        let Admitted {
            allowed,
            mut aside,
            refused,
        } = self.admitted(changes, now, admit)?;
        let total = allowed.len() + aside.len();
        let peer_id = HostId::new(&self.peer);
        let cursor = upto.map(|u| self.expiry.cursor_after(u));
        let tail = |before: Vec<(Change, String)>| Tail {
            peer: peer_id.clone(),
            before,
            retried: retried.to_vec(),
            cursor,
            now: crate::counters::now_secs(),
        };
        // Whether the cursor and what was set aside committed with the
        // last group (see `Tail`).
        let mut tail_committed = false;
        let mut groups = self.groups(allowed).await?.into_iter();
        let stage = |g: Group| {
            let me = self.clone();
            tokio::spawn(async move { me.stage(g, true).await }.in_current_span())
        };
        let mut staging = groups.next().map(stage);
        while let Some(h) = staging.take() {
            let (group, staged, mut resolved) = h.await??;
            // The next group's content comes in while this one is applied.
            staging = groups.next().map(stage);
            let last = staging.is_none();
            // Changes whose content another session is fetching wait for
            // the second round.
            let (group, later): (Vec<Change>, Vec<Change>) =
                group.into_iter().partition(|c| match c.entry.content {
                    omirr_core::Content::File { size, hash } => {
                        !staged.deferred.contains(&(hash, size))
                    }
                    _ => true,
                });
            if !later.is_empty() {
                resolved = None;
            }
            // The last group, with nothing left for a second round: the
            // cursor can commit with it.
            let first = (last && later.is_empty()).then(|| tail(aside.clone()));
            let mut out = self.apply_group(group, staged, resolved, first).await?;
            tail_committed = out.tail_committed;
            out.unstaged.extend(later);
            if !out.unstaged.is_empty() {
                let second = last.then(|| tail(aside.iter().chain(&out.aside).cloned().collect()));
                tail_committed = self.second_round(&mut out, second).await?;
            }
            self.after_group(&out);
            aside.extend(out.aside);
        }
        self.log_aside(&aside, retried, &not_applied, &refused);
        // The cursor and what was set aside, in one transaction: the last
        // group's if it applied everything, else one of their own.
        if !tail_committed {
            let now = crate::counters::now_secs();
            let batch = tail_batch(&peer_id, &aside, &[], retried, cursor, now);
            if !batch.is_empty() {
                self.engine.store.index.commit(&batch)?;
            }
        }
        if let Some(u) = upto {
            self.engine.counters.peer(&self.peer, |p| p.cursor = u);
        }
        Ok(total - aside.len())
    }

    /// Sorts a peer's changes by admission (see [`crate::admit`]); with
    /// `admit` false (changes already admitted once) all are allowed.
    /// Refusals are logged and counted here.
    fn admitted(
        &self,
        changes: Vec<Change>,
        now: omirr_core::Timestamp,
        admit: bool,
    ) -> Result<Admitted, SessionError> {
        let plan = self.engine.policy();
        let peer = &self.peer;
        let mut allowed = Vec::with_capacity(changes.len());
        let mut aside: Vec<(Change, String)> = Vec::new();
        let mut refused: Vec<Change> = Vec::new();
        for c in changes {
            if !admit {
                allowed.push(c);
                continue;
            }
            match crate::admit::admit(&*plan, peer, &c, now, self.engine.max_clock_offset) {
                Admission::Apply => allowed.push(c),
                Admission::SetAside(why) => aside.push((c, why)),
                Admission::Refuse(why) => {
                    tracing::warn!(%peer, path = %c.path, version = %c.entry.version, "refused a change: {why}");
                    refused.push(c);
                }
            }
        }
        // From a peer that has not caught up with what this host forgot,
        // an old change for a path this host does not know waits for the
        // peer's reconciliation (`omirr_core::expiry::must_wait`).
        if admit && self.expiry.enabled {
            let ours = self.engine.store.index.forgotten()?;
            let theirs = self.expiry.their_cursor();
            if omirr_core::expiry::must_reconcile(theirs, &ours) {
                let mut kept = Vec::with_capacity(allowed.len());
                for c in allowed {
                    let known = self.engine.store.index.entry(&c.path)?.is_some();
                    if omirr_core::expiry::must_wait(&ours, theirs, known, &c.entry) {
                        aside.push((c, format!("older than the deletions this host no longer remembers, from a peer that has not received them all (its cursor {theirs} is below {}): waits for the peer to reconcile", ours.seq)));
                    } else {
                        kept.push(c);
                    }
                }
                allowed = kept;
            }
        }
        if !refused.is_empty() {
            let n = refused.len() as u64;
            self.engine.counters.peer(peer, |p| p.refused += n);
        }
        Ok(Admitted {
            allowed,
            aside,
            refused,
        })
    }

    /// One more round for what a group needed but did not stage (content
    /// another session was fetching, or that failed to arrive): staged
    /// again once those sessions are done, and whatever still fails is
    /// set aside in `out`. Returns whether `tail` committed with it.
    async fn second_round(
        &self,
        out: &mut Outcome,
        tail: Option<Tail>,
    ) -> Result<bool, SessionError> {
        let again = Group {
            changes: std::mem::take(&mut out.unstaged),
            resolved: None,
        };
        // Content another session was fetching: once it is applied, these
        // changes may need nothing more.
        let keys: Vec<(omirr_core::Hash, u64)> = again
            .changes
            .iter()
            .filter_map(|c| match c.entry.content {
                omirr_core::Content::File { size, hash } => Some((hash, size)),
                _ => None,
            })
            .collect();
        self.engine
            .claims
            .wait(self.transfers.owner, &keys, CLAIM_WAIT)
            .await;
        let (again, staged, resolved) = self.stage(again, false).await?;
        let more = self.apply_group(again, staged, resolved, tail).await?;
        out.recorded += more.recorded;
        out.actions.extend(more.actions);
        out.conflicts.extend(more.conflicts);
        out.aside.extend(more.aside);
        out.aside.extend(
            more.unstaged
                .into_iter()
                .map(|c| (c, "its content could not be fetched".to_string())),
        );
        Ok(more.tail_committed)
    }

    /// Says what became of the changes set aside: set aside now (or
    /// again), or, of those being retried, applied or dropped.
    fn log_aside(
        &self,
        aside: &[(Change, String)],
        retried: &[Aside],
        not_applied: &[Change],
        refused: &[Change],
    ) {
        let peer = &self.peer;
        for (c, reason) in aside {
            match retried.iter().find(|a| a.change == *c) {
                None => tracing::warn!(%peer, path = %c.path, "set a change aside: {reason}"),
                Some(before) => {
                    let attempts = before.attempts.saturating_add(1);
                    tracing::debug!(%peer, path = %c.path, attempts, "a change set aside failed again: {reason}");
                }
            }
        }
        for a in retried {
            if !aside.iter().any(|(c, _)| *c == a.change) {
                if not_applied.contains(&a.change) {
                    tracing::info!(%peer, path = %a.change.path, "a change set aside is dropped: this host only sends there (sendonly)");
                } else if refused.contains(&a.change) {
                    // Set aside before, refused now (the Distfile changed).
                    tracing::info!(%peer, path = %a.change.path, "a change set aside is dropped: the peer may not make it");
                } else {
                    tracing::info!(%peer, path = %a.change.path, "a change set aside is applied now");
                }
            }
        }
    }

    /// A send-only host's answer to `changes` from the peer in its
    /// send-only sets: nothing is applied; one line per batch says so
    /// (info for a batch, debug for a retry), not one per file. The
    /// clock still observes them (within the maximum clock offset), so
    /// that a later write here is stamped after what the peer wrote.
    async fn not_applied_here(
        &self,
        changes: &[Change],
        now: omirr_core::Timestamp,
        retry: bool,
    ) -> Result<(), SessionError> {
        let Some(first) = changes.first().map(|c| &c.path) else {
            return Ok(());
        };
        let n = changes.len();
        if retry {
            tracing::debug!(peer = %self.peer, changes = n, "not applied: this host only sends there (sendonly), e.g. {first}");
        } else {
            tracing::info!(peer = %self.peer, changes = n, "not applied: this host only sends there (sendonly), e.g. {first}");
        }
        self.engine
            .counters
            .peer(&self.peer, |p| p.not_applied += n as u64);
        let limit = now.0.saturating_add(
            u64::try_from(self.engine.max_clock_offset.as_nanos()).unwrap_or(u64::MAX),
        );
        let latest = changes
            .iter()
            .map(|c| c.entry.version.ts)
            .filter(|ts| ts.0 <= limit)
            .max();
        if let Some(ts) = latest {
            let engine = self.engine.clone();
            tokio::task::spawn_blocking(move || engine.disk.lock().hlc.observe(ts)).await?;
        }
        Ok(())
    }

    /// Splits `changes`, in order, into groups whose content to fetch is
    /// at most [`GROUP_BYTES`] each (at least one change each). A batch
    /// that is one group keeps the resolution made to find that out.
    async fn groups(&self, changes: Vec<Change>) -> Result<Vec<Group>, SessionError> {
        let (wanted, resolved) = self.wanted(&changes).await?;
        if wanted.iter().map(|w| w.size).sum::<u64>() <= GROUP_BYTES {
            return Ok(vec![Group { changes, resolved }]);
        }
        let size: std::collections::HashMap<&RelPath, u64> =
            wanted.iter().map(|w| (&w.path, w.size)).collect();
        let mut groups = Vec::new();
        let mut group = Vec::new();
        let mut bytes = 0;
        for c in &changes {
            let s = size.get(&c.path).copied().unwrap_or(0);
            if !group.is_empty() && bytes + s > GROUP_BYTES {
                groups.push(std::mem::take(&mut group));
                bytes = 0;
            }
            bytes += s;
            group.push(c.clone());
        }
        groups.push(group);
        Ok(groups
            .into_iter()
            .map(|changes| Group {
                changes,
                resolved: None,
            })
            .collect())
    }

    /// The files `changes` would fetch, resolved against the index now,
    /// and the resolution. A group of no file content needs neither.
    async fn wanted(
        &self,
        changes: &[Change],
    ) -> Result<(Vec<Wanted>, Option<Resolved>), SessionError> {
        if !changes
            .iter()
            .any(|c| matches!(c.entry.content, omirr_core::Content::File { size, .. } if size > 0))
        {
            return Ok((Vec::new(), None));
        }
        let engine = self.engine.clone();
        let changes = changes.to_vec();
        let span = tracing::Span::current();
        let (res, at) = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let at = engine.store.index.last_seq()?;
            let res = resolve(&engine, &changes)?;
            Ok::<_, omirr_index::IndexError>((res, at))
        })
        .await??;
        let wanted = omirr_fs::apply::wanted(&res.actions);
        Ok((wanted, Some(Resolved { res, at })))
    }

    /// Fetches the content `group` needs; no lock is held.
    async fn stage(&self, group: Group, defer: bool) -> Result<StagedGroup, SessionError> {
        let started = std::time::Instant::now();
        let (wanted, resolved) = match group.resolved {
            Some(r) => (omirr_fs::apply::wanted(&r.res.actions), Some(r)),
            None => self.wanted(&group.changes).await?,
        };
        let group = group.changes;
        let resolved_ms = started.elapsed().as_millis() as u64;
        let files = wanted.len();
        let bytes: u64 = wanted.iter().map(|w| w.size).sum();
        let staged =
            fetch::stage(self.engine.clone(), self.transfers.clone(), wanted, defer).await?;
        if files > 0 {
            tracing::debug!(peer = %self.peer, files, bytes, resolved_ms, ms = started.elapsed().as_millis() as u64, "staged");
        }
        Ok((group, staged, resolved))
    }

    /// Applies a staged group under the write lock, setting aside each
    /// change that fails on its own; a failure of the host as a whole is
    /// retried after a back-off, for as long as it lasts.
    async fn apply_group(
        &self,
        group: Vec<Change>,
        staged: Staged,
        resolved: Option<Resolved>,
        tail: Option<Tail>,
    ) -> Result<Outcome, SessionError> {
        let staged = Arc::new(staged);
        let tail = tail.map(Arc::new);
        let mut wait = HOST_FAULT_FIRST;
        let started = std::time::Instant::now();
        let mut resolved = resolved;
        loop {
            let (engine, group2, staged2) = (self.engine.clone(), group.clone(), staged.clone());
            let r = resolved.take();
            let tail2 = tail.clone();
            let span = tracing::Span::current();
            let result = tokio::task::spawn_blocking(move || {
                let _span = span.enter();
                apply_isolated(&engine, group2, &staged2, r, tail2.as_deref())
            })
            .await?;
            match result {
                Ok(out) => {
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        // Applied as one group, durable together: the
                        // time is the group's.
                        let took = omirr_fs::shown::Took(started.elapsed());
                        let n = out.actions.len();
                        for a in &out.actions {
                            tracing::debug!(
                                "applied {} (one of {n} in {took})",
                                omirr_fs::shown::Did(a)
                            );
                        }
                    }
                    tracing::debug!(peer = %self.peer, changes = group.len(), ms = started.elapsed().as_millis() as u64, "group applied");
                    return Ok(out);
                }
                Err(e) => {
                    tracing::error!(peer = %self.peer, "cannot apply the peer's changes, trying again in {}s: {e:#}", wait.as_secs());
                    self.engine
                        .counters
                        .peer(&self.peer, |p| p.last_error = Some(format!("{e:#}")));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                    if self.control.is_closed() {
                        return Err(SessionEnded.into());
                    }
                }
            }
        }
    }

    fn after_group(&self, out: &Outcome) {
        for c in &out.conflicts {
            tracing::warn!(peer = %self.peer, "{c}");
            self.engine
                .counters
                .add_conflict(&self.peer, !c.ours_won && c.copy.is_some());
        }
        if out.recorded >= crate::engine::LARGE_BATCH {
            crate::engine::release_freed_memory();
        }
        if !out.actions.is_empty() {
            tracing::debug!(peer = %self.peer, actions = out.actions.len(), recorded = out.recorded, "applied");
        }
        // Queues the Distfile's commands for what changed; never waits.
        self.engine.policy().after_batch(&self.peer, &out.actions);
        let n = out.recorded as u64;
        self.engine.counters.add_applied(n);
        self.engine
            .counters
            .peer(&self.peer, |p| p.changes_received += n);
        if out.recorded > 0 {
            self.engine.store.announce();
        }
    }
}
