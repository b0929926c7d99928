//! What this host sends the peer: its changes after the peer's `Pull`,
//! then the index live as it moves, within the window the peer's `Ack`s
//! open ([`push`]); and the count of what that answer holds, for the
//! peer's catch-up ([`send_backlog`]). One rule says which change is sent
//! ([`Returning::not_sent`]).

use super::{progress, Flow};
use crate::engine::Engine;
use crate::SessionError;
use omirr_core::{Change, Seq};
use omirr_fs::shown::Shown;
use omirr_proto::Message;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Which of the peer's own changes go back to it: those we recorded
/// before its `Pull` (at or below `recorded_by`) with a timestamp above
/// the latest of its own its index holds (`own_after`). A host with its
/// index intact has them all; one whose index is new or restored gets
/// back what it wrote. Those recorded later came from it, or through a
/// host that had them from it, during this session.
#[derive(Debug, Clone, Copy)]
pub(super) struct Returning {
    pub(super) own_after: omirr_core::Timestamp,
    pub(super) recorded_by: Seq,
}

impl Returning {
    fn wanted(&self, seq: Seq, change: &Change, peer: &str) -> bool {
        change.entry.version.host.as_str() != peer
            || (seq <= self.recorded_by && change.entry.version.ts > self.own_after)
    }

    /// Why the change recorded at `seq` is not sent to `peer`, or `None`
    /// if it is: the one rule for what the pusher sends and what the
    /// `Backlog` counts.
    fn not_sent(
        &self,
        plan: &dyn crate::Policy,
        peer: &str,
        seq: Seq,
        change: &Change,
    ) -> Option<&'static str> {
        if !self.wanted(seq, change, peer) {
            Some("the peer wrote it, and has it")
        } else if !plan.authorised(peer, &change.path) {
            Some("not in a mirror set this host shares with the peer")
        } else {
            None
        }
    }
}

/// Sends the peer everything after its `Pull` that it shares with us,
/// then follows the index as it moves, as far as the window allows.
pub(super) async fn push(
    engine: Arc<Engine>,
    peer: String,
    out: mpsc::Sender<Message>,
    flow: Arc<Flow>,
    returning: Returning,
    progress: Arc<progress::Progress>,
) -> Result<(), SessionError> {
    let mut moved = engine.store.last_seq.subscribe();
    let page = flow.lock().limits().page;
    loop {
        let from = flow.lock().read_from();
        if let Some(after) = from {
            moved.mark_unchanged();
            let read = engine.store.index.since(after, page)?;
            let mut raw_upto = read.last().map(|(s, _)| *s);
            let last_seq = engine.store.index.last_seq()?;
            // The last sequences may be gone (forgotten by expiry): the
            // peer's cursor still moves up to the last one, or it would
            // stay below what this host forgot and the peer reconcile
            // at every session.
            if raw_upto.is_none() && last_seq > after {
                raw_upto = Some(last_seq);
            }
            let last = match raw_upto {
                Some(u) => last_seq == u,
                None => true,
            };
            // Only what the peer may have, and not its own changes back
            // unless it lacks them.
            let plan = engine.policy();
            let changes: Vec<(Seq, Change)> = read
                .into_iter()
                .filter(|(s, c)| {
                    let why_not = returning.not_sent(plan.as_ref(), &peer, *s, c);
                    match why_not {
                        Some(why) => tracing::trace!("not sent {}: {why}", Shown(c)),
                        None => tracing::debug!("change out {}", Shown(c)),
                    }
                    why_not.is_none()
                })
                .collect();
            let n = changes.len() as u64;
            engine.counters.peer(&peer, |p| p.changes_sent += n);
            if let Some(u) = raw_upto {
                let amount = crate::counters::Backlog::of(changes.iter().map(|(_, c)| c));
                let initial = crate::counters::Backlog::of(
                    changes
                        .iter()
                        .filter(|(s, _)| *s <= returning.recorded_by)
                        .map(|(_, c)| c),
                );
                progress.on_read(u, amount, initial);
            }
            flow.lock().on_read(raw_upto, changes, last)?;
        }
        loop {
            let next = flow.lock().next_page();
            let Some(m) = next else { break };
            out.send(m).await?;
        }
        let (can_read, caught_up) = {
            let f = flow.lock();
            (f.read_from().is_some(), f.caught_up())
        };
        if caught_up {
            tokio::select! {
                r = moved.changed() => r?,
                _ = flow.pusher.notified() => {}
            }
        } else if !can_read {
            // The window is full: an Ack opens it.
            flow.pusher.notified().await;
        }
    }
}

/// Counts what the answer to the peer's `Pull { after }` holds (what the
/// pusher sends of what we had recorded by then), for the status, and
/// tells the peer if it speaks `backlog`. One read of those changes, on a
/// blocking thread, while the pusher sends them.
pub(super) async fn send_backlog(
    engine: Arc<Engine>,
    peer: String,
    out: mpsc::Sender<Message>,
    after: Seq,
    returning: Returning,
    progress: Arc<progress::Progress>,
    tell: bool,
) -> Result<(), SessionError> {
    let upto = returning.recorded_by;
    let e = engine.clone();
    let counted = tokio::task::spawn_blocking(move || {
        let page = crate::Limits::default().page;
        let plan = e.policy();
        progress::count(&e, after, upto, page, |seq, c| {
            returning.not_sent(plan.as_ref(), &peer, seq, c).is_none()
        })
    })
    .await?;
    let total = counted?;
    progress.on_total_out(upto, total);
    if tell {
        out.send(Message::Backlog {
            upto,
            changes: total.changes,
            files: total.files,
            bytes: total.bytes,
        })
        .await?;
    }
    Ok(())
}
