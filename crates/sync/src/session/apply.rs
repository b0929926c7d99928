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

use super::fetch::{self, NotStaged, SessionEnded, Staged, Transfers};
use crate::admit::Admission;
use crate::engine::Engine;
use crate::record::ApplyRemoteError;
use crate::SessionError;
use omirr_core::resolve::Action;
use omirr_core::{Change, HostId, IndexView, RelPath, Seq};
use omirr_fs::apply::{ApplyError, Wanted};
use omirr_index::{Aside, Batch};
use omirr_proto::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

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

/// A group's resolution, made before staging.
struct Resolved {
    res: omirr_core::resolve::Resolution,
    at: Seq,
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

/// What a group's apply came to.
#[derive(Default)]
struct Outcome {
    recorded: usize,
    actions: Vec<Action>,
    /// Changes set aside, with their reasons.
    aside: Vec<(Change, String)>,
    /// Changes whose content must be staged for another round.
    unstaged: Vec<Change>,
    /// The conflicts met (see [`omirr_core::conflict`]).
    conflicts: Vec<omirr_core::resolve::Conflict>,
    /// The group's [`Tail`] committed with its last changes.
    tail_committed: bool,
}

/// What commits with a batch's last group if all of it is applied: the
/// changes set aside (with those of the group that failed on their own)
/// and the peer's cursor. In the group's transaction, a crash leaves
/// either the group recorded and the cursor past it, or neither: the
/// batch is neither applied twice nor skipped.
#[derive(Clone)]
struct Tail {
    peer: HostId,
    /// The batch's changes set aside before this group, with reasons.
    before: Vec<(Change, String)>,
    /// The records of the set-aside changes being retried.
    retried: Vec<Aside>,
    cursor: Option<Seq>,
    /// Unix seconds: when a change first set aside now was set aside.
    now: u64,
}

impl Tail {
    /// The tail as a batch, with `more` changes of the group set aside.
    fn batch(&self, more: &[(Change, String)]) -> Batch {
        tail_batch(
            &self.peer,
            &self.before,
            more,
            &self.retried,
            self.cursor,
            self.now,
        )
    }
}

/// The changes set aside (`before`, then `more`; of those being retried,
/// `retried` are the records, and those no longer set aside are
/// dropped), and the peer's cursor, as one batch.
fn tail_batch(
    peer: &HostId,
    before: &[(Change, String)],
    more: &[(Change, String)],
    retried: &[Aside],
    cursor: Option<Seq>,
    now: u64,
) -> Batch {
    let mut batch = Batch::new();
    for (c, reason) in before.iter().chain(more) {
        let was = retried.iter().find(|a| a.change == *c);
        batch.set_aside(
            peer.clone(),
            Aside {
                change: c.clone(),
                reason: reason.clone(),
                attempts: was.map_or(1, |a| a.attempts.saturating_add(1)),
                since: was.map_or(now, |a| a.since),
            },
        );
    }
    for a in retried {
        if !before.iter().chain(more).any(|(c, _)| *c == a.change) {
            batch.clear_aside(peer.clone(), a.change.path.clone());
        }
    }
    if let Some(seq) = cursor {
        batch.set_cursor(peer.clone(), seq);
    }
    batch
}

/// Resolves `changes` from a peer against the index under the engine's
/// policy: `savetargets`, and conflicts told by this host's name with
/// each set's bound on conflict copies.
pub(crate) fn resolve(
    engine: &Engine,
    changes: &[Change],
) -> Result<omirr_core::resolve::Resolution, omirr_index::IndexError> {
    let plan = engine.policy();
    let host = HostId::new(plan.host());
    let rules = omirr_core::resolve::Rules {
        savetargets: &|p| plan.savetargets(p),
        conflicts: Some(omirr_core::resolve::ConflictRules {
            host: &host,
            keep: &|p| plan.conflict_copies(p),
        }),
    };
    omirr_core::resolve::resolve_with(&engine.store.index, changes, &rules, &mut |d| {
        tracing::trace!("decided {d}")
    })
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

/// Applies `group` with the write lock held, setting aside the changes
/// whose own action fails and applying the rest; `tail` commits with the
/// group's last changes if nothing is left for a second round. `Err` for
/// a failure of the host as a whole.
fn apply_isolated(
    engine: &Engine,
    group: Vec<Change>,
    staged: &Staged,
    resolved: Option<Resolved>,
    tail: Option<&Tail>,
) -> Result<Outcome, ApplyRemoteError> {
    let mut out = Outcome::default();
    let mut rest = group;
    let mut w = engine.disk.lock();
    let w = &mut *w;
    // The resolution made before staging still holds if nothing was
    // recorded since.
    let mut resolved = match (resolved, engine.store.index.last_seq()) {
        (Some(r), Ok(now)) if r.at == now => Some(r.res),
        _ => None,
    };
    loop {
        let mut source = staged;
        let index = &engine.store.index;
        // Committed with this try if it applies everything; content left
        // for a second round keeps the cursor back.
        let tail = tail.filter(|_| out.unstaged.is_empty());
        let mut with = tail.map_or_else(Batch::new, |t| t.batch(&out.aside));
        let result = match resolved.take().map_or_else(|| resolve(engine, &rest), Ok) {
            Ok(res) => crate::record::apply_resolved(
                index,
                &w.applier,
                &mut w.hlc,
                &rest,
                res,
                &mut source,
                &mut with,
            ),
            Err(e) => Err(e.into()),
        };
        let (error, recorded, action) = match result {
            Ok(applied) => {
                out.recorded += applied.recorded;
                out.actions.extend(applied.actions);
                out.conflicts.extend(applied.conflicts);
                out.tail_committed = tail.is_some();
                return Ok(out);
            }
            Err(e) if e.is_host_fault() => return Err(e),
            Err(ApplyRemoteError::Apply {
                error,
                recorded,
                action: Some(action),
                conflicts,
            }) => {
                out.conflicts.extend(conflicts);
                (error, recorded, action)
            }
            Err(e) => return Err(e),
        };
        out.recorded += recorded;
        let paths = action.paths();
        // Changes the actions before the failure recorded are done.
        let recorded = |c: &Change| {
            engine
                .store
                .index
                .entry(&c.path)
                .ok()
                .flatten()
                .is_some_and(|e| e.version >= c.entry.version)
        };
        let Some((failed, kept)) = crate::isolate(rest, &paths, recorded) else {
            // Nothing to blame: no change is to be set aside, so the same
            // batch would fail again.
            return Err(ApplyRemoteError::Apply {
                error,
                recorded: 0,
                action: Some(action),
                conflicts: Vec::new(),
            });
        };
        let not_staged =
            matches!(&error.error, ApplyError::Source { error, .. } if error.is::<NotStaged>());
        if not_staged {
            out.unstaged.extend(failed);
        } else {
            let reason = error.error.to_string();
            out.aside
                .extend(failed.into_iter().map(|c| (c, reason.clone())));
        }
        rest = kept;
        if rest.is_empty() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Disk, Policy, Store, WriteSide};
    use omirr_core::{Content, Entry, Hlc, Meta, Timestamp, Version};
    use omirr_fs::apply::{Applier, ApplyOptions};
    use omirr_index::Index;
    use std::path::Path;
    use std::sync::Mutex;

    /// Every path mirrored both ways with one peer, `there`.
    struct Everything;

    impl crate::engine::Policy for Everything {
        fn host(&self) -> &str {
            "here"
        }
        fn authorised(&self, _: &str, _: &RelPath) -> bool {
            true
        }
        fn unshared_below(&self, _: &str, _: &RelPath) -> Option<RelPath> {
            None
        }
        fn excluded(&self, _: &RelPath) -> bool {
            false
        }
        fn savetargets(&self, _: &RelPath) -> bool {
            false
        }
        fn conflict_copies(&self, _: &RelPath) -> u32 {
            0
        }
        fn after_batch(&self, _: &str, _: &[Action]) {}
    }

    fn engine(dir: &Path) -> Engine {
        let (root, state) = (dir.join("root"), dir.join("state"));
        std::fs::create_dir(&root).expect("root");
        std::fs::create_dir(&state).expect("state");
        let options = ApplyOptions {
            set_owner: false,
            ..ApplyOptions::default()
        };
        let policy: Arc<dyn Policy> = Arc::new(Everything);
        Engine::new(
            Store::new(Index::open(&state).expect("index")).expect("store"),
            Disk {
                write: Mutex::new(WriteSide {
                    hlc: Hlc::starting_at(Timestamp(0)),
                    applier: Applier::open(&root, options).expect("applier"),
                }),
                root,
                tops: vec![RelPath::root()],
                stage_dir: state.join("stage"),
            },
            policy,
            &["there".to_string()],
            1 << 20,
        )
    }

    fn change(path: &str, content: Content) -> Change {
        Change {
            path: RelPath::new(path.as_bytes().to_vec()).expect("path"),
            entry: Entry {
                content,
                meta: Meta {
                    mode: 0o755,
                    mtime_ns: 1_000_000_000,
                    ..Meta::default()
                },
                version: Version {
                    ts: Timestamp(1_000),
                    host: HostId::new("there"),
                },
                base: None,
            },
        }
    }

    fn tail(cursor: Seq) -> Tail {
        Tail {
            peer: HostId::new("there"),
            before: vec![(change("x", Content::Dir), "in the way".to_string())],
            retried: Vec::new(),
            cursor: Some(cursor),
            now: 7,
        }
    }

    /// A batch's last group that applies whole commits the cursor and the
    /// changes set aside in its own transaction: no second commit after
    /// it, which a crash could separate from the group's.
    #[test]
    fn the_cursor_commits_with_the_group_that_applies_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let group = vec![change("a", Content::Dir), change("b", Content::Dir)];
        let tail = tail(42);
        let out =
            apply_isolated(&engine, group, &Staged::default(), None, Some(&tail)).expect("applied");
        assert!(out.tail_committed);
        let index = &engine.store.index;
        let peer = HostId::new("there");
        assert_eq!(index.cursor(&peer).expect("cursor"), 42);
        let kept = index.aside(Some(&peer)).expect("aside");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].1.change.path.to_string(), "x");
        assert_eq!((kept[0].1.attempts, kept[0].1.since), (1, 7));
        assert_eq!(index.last_seq().expect("last_seq"), 2, "a and b recorded");
    }

    /// A group that leaves content for a second round records what it
    /// applied but not the cursor: the batch is not done.
    #[test]
    fn content_left_for_another_round_keeps_the_cursor_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let file = Content::File {
            size: 5,
            hash: [1; 32],
        };
        let group = vec![change("a", Content::Dir), change("f", file)];
        let tail = tail(42);
        let out =
            apply_isolated(&engine, group, &Staged::default(), None, Some(&tail)).expect("applied");
        assert!(!out.tail_committed);
        assert_eq!(out.unstaged.len(), 1, "f waits for its content");
        let index = &engine.store.index;
        let peer = HostId::new("there");
        assert_eq!(index.cursor(&peer).expect("cursor"), 0);
        assert!(index.aside(Some(&peer)).expect("aside").is_empty());
        let a = RelPath::new(b"a".to_vec()).expect("path");
        assert!(index.entry(&a).expect("entry").is_some(), "a recorded");
    }
}
