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

/// One page of the index for the pusher.
#[derive(Debug)]
pub(crate) struct Page {
    /// The changes recorded after the cursor, in sequence order.
    pub(crate) read: Vec<(Seq, Change)>,
    /// How far the peer's cursor may move once the page is sent: the
    /// page's last sequence, or, if the page is empty, the index's last
    /// sequence (those between are gone); `None` if nothing is after
    /// the cursor.
    pub(crate) raw_upto: Option<Seq>,
    /// The page reaches the index's last sequence.
    pub(crate) last: bool,
}

/// Reads the page after `after`. The page and the last sequence come
/// from one read transaction: read apart, a batch committed between the
/// two reads would look like sequences forgotten, and the cursor would
/// move past changes never sent (a `cp -a` into a live tree lost a
/// thousand files to the peer that way).
pub(crate) fn read_page(
    index: &omirr_index::Index,
    after: Seq,
    page: usize,
) -> Result<Page, omirr_index::IndexError> {
    let (read, last_seq) = index.since_and_last(after, page)?;
    let mut raw_upto = read.last().map(|(s, _)| *s);
    // The last sequences may be gone (each path keeps only its latest;
    // expiry forgets): the peer's cursor still moves up to the last one,
    // or it would stay below what this host forgot and the peer reconcile
    // at every session.
    if raw_upto.is_none() && last_seq > after {
        raw_upto = Some(last_seq);
    }
    let last = match raw_upto {
        Some(u) => last_seq == u,
        None => true,
    };
    Ok(Page {
        read,
        raw_upto,
        last,
    })
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
            let Page {
                read,
                raw_upto,
                last,
            } = read_page(&engine.store.index, after, page)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_core::{Content, Entry, HostId, Meta, RelPath, Timestamp, Version};
    use omirr_index::Index;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn change(path: &str, ts: u64) -> Change {
        Change {
            path: RelPath::new(path.as_bytes().to_vec()).expect("path"),
            entry: Entry {
                content: Content::Dir,
                meta: Meta {
                    mode: 0o755,
                    ..Meta::default()
                },
                version: Version {
                    ts: Timestamp(ts),
                    host: HostId::new("here"),
                },
                base: None,
            },
        }
    }

    /// A reader that follows the pusher's rule (send the page, move the
    /// cursor to `raw_upto`) while batches are committed sees every
    /// change: a batch committed while a page is read is never taken for
    /// sequences forgotten.
    #[test]
    fn a_batch_committed_while_a_page_is_read_is_never_skipped() {
        const BATCHES: u64 = 300;
        const PER_BATCH: u64 = 20;
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Arc::new(Index::open(dir.path()).expect("index"));
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (index, done) = (index.clone(), done.clone());
            std::thread::spawn(move || {
                for b in 0..BATCHES {
                    let batch: Vec<Change> = (0..PER_BATCH)
                        .map(|i| change(&format!("d{b}-{i}"), 1 + b * PER_BATCH + i))
                        .collect();
                    index.record(&batch).expect("record");
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut seen = BTreeSet::new();
        let mut cursor = 0;
        loop {
            // Read before the page: once the writer is done, a page that
            // reaches the last sequence is the end.
            let finished = done.load(Ordering::SeqCst);
            let page = read_page(&index, cursor, 7).expect("page");
            seen.extend(page.read.iter().map(|(_, c)| c.path.clone()));
            if let Some(u) = page.raw_upto {
                cursor = u;
            }
            if finished && page.last {
                break;
            }
        }
        writer.join().expect("writer");
        assert_eq!(seen.len() as u64, BATCHES * PER_BATCH, "changes skipped");
    }
}
