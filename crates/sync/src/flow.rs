//! One session's stream of changes, both ways, as a state machine.
//!
//! Outgoing, the peer's `Pull` says where to start; the driver reads the
//! index when [`PeerFlow::read_from`] asks and hands the pages over
//! ([`PeerFlow::on_read`]); [`PeerFlow::next_page`] gives the pages to
//! send, never more than the window of [`Limits`] unacknowledged, and
//! marks a page `done` when the window would have no room for another, so
//! that the receiver never waits for a page that needs its own `Ack`.
//!
//! Incoming, every `Changes` page is checked (sequences follow each other
//! and the `Pull`, the peer stays within the window) and queued;
//! [`PeerFlow::next_batch`] gives the pages that arrived back to back as
//! one batch, and [`PeerFlow::applied`] gives the `Ack` once it is
//! durable. Content, requests and keepalives are not its business.

use omirr_core::{Change, Seq};
use omirr_proto::Message;
use std::collections::VecDeque;

/// The most requests of the peer's waiting to be served, or being served.
pub const MAX_QUEUED_REQUESTS: usize = 4096;

/// The bounds of a session. Both sides must use the same window; the
/// other numbers are each side's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most `Changes` pages sent and not yet acknowledged.
    pub window_pages: usize,
    /// The most changes sent and not yet acknowledged.
    pub window_changes: usize,
    /// The most changes read from the index at a time: the largest page
    /// this side sends.
    pub page: usize,
    /// The most changes applied as one batch. A batch is resolved,
    /// staged and recorded as a whole, so this bounds the receiver's
    /// working set: 65,536 made a receiver of a million small files peak
    /// at 334 MiB, 16,384 at 166 MiB, no slower (docs/benchmarks.md).
    pub batch_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            window_pages: 16,
            window_changes: 65_536,
            page: 4096,
            batch_max: 16_384,
        }
    }
}

/// Why a peer's message breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

fn violation(s: impl Into<String>) -> Violation {
    Violation(s.into())
}

/// Change pages in flight: sent (or received) and not yet acknowledged.
/// Both sides count the same way.
#[derive(Debug, Clone)]
struct Window {
    pages: VecDeque<(Seq, usize)>,
    changes: usize,
    max_pages: usize,
    max_changes: usize,
}

impl Window {
    pub fn new(limits: &Limits) -> Window {
        Window {
            pages: VecDeque::new(),
            changes: 0,
            max_pages: limits.window_pages,
            max_changes: limits.window_changes,
        }
    }

    /// Forgets the pages an `Ack { upto }` covers.
    pub fn acked(&mut self, upto: Seq) {
        while let Some(&(u, n)) = self.pages.front() {
            if u > upto {
                break;
            }
            self.pages.pop_front();
            self.changes -= n;
        }
    }

    /// Whether a page of `n` changes may be sent now. An empty window
    /// takes any page.
    pub fn fits(&self, n: usize) -> bool {
        self.pages.is_empty() || self.room_for(n)
    }

    /// Whether one more page of up to `n` changes would fit.
    pub fn room_for(&self, n: usize) -> bool {
        self.pages.len() < self.max_pages && self.changes + n <= self.max_changes
    }

    pub fn add(&mut self, upto: Seq, n: usize) {
        self.pages.push_back((upto, n));
        self.changes += n;
    }

    /// Past the window: the peer did not keep to it. A single page over
    /// the change limit is allowed into an empty window.
    pub fn is_over(&self) -> bool {
        self.pages.len() > self.max_pages
            || (self.pages.len() > 1 && self.changes > self.max_changes)
    }

    /// (pages, changes) in flight.
    pub fn len(&self) -> (usize, usize) {
        (self.pages.len(), self.changes)
    }
}

/// A `Changes` page.
#[derive(Debug, Clone)]
struct Page {
    changes: Vec<(Seq, Change)>,
    upto: Seq,
    done: bool,
}

/// One session's change stream; see the module documentation.
#[derive(Debug)]
pub struct PeerFlow {
    limits: Limits,
    // Outgoing.
    /// Where the next index read starts; `None` until the peer's `Pull`.
    after: Option<Seq>,
    /// The last page read from the index said it was all there was.
    told_done: bool,
    /// Pages read and not yet sent.
    held: VecDeque<Page>,
    out: Window,
    sent_upto: Seq,
    acked_by_peer: Seq,
    // Incoming.
    /// The greatest `upto` received (at first, our `Pull`'s cursor).
    last_upto: Seq,
    incoming: Window,
    pending: VecDeque<Page>,
    /// A batch is with the applier.
    applying: bool,
    acked: Seq,
}

impl PeerFlow {
    /// A session whose `Pull` (returned, to send first) asks the peer for
    /// what follows `cursor`. Its `own_after` is 0: which of its own
    /// changes a host lacks is for the caller, which knows the index, to
    /// say.
    pub fn new(cursor: Seq, limits: Limits) -> (PeerFlow, Message) {
        let flow = PeerFlow {
            limits,
            after: None,
            told_done: false,
            held: VecDeque::new(),
            out: Window::new(&limits),
            sent_upto: 0,
            acked_by_peer: 0,
            last_upto: cursor,
            incoming: Window::new(&limits),
            pending: VecDeque::new(),
            applying: false,
            acked: cursor,
        };
        let pull = Message::Pull {
            after: cursor,
            own_after: omirr_core::Timestamp(0),
        };
        (flow, pull)
    }

    /// The bounds this session runs with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The peer's `Pull`.
    pub fn on_pull(&mut self, after: Seq) -> Result<(), Violation> {
        if self.after.is_some() {
            return Err(violation("a second Pull"));
        }
        self.after = Some(after);
        Ok(())
    }

    /// A `Changes` page from the peer. The message itself was validated
    /// at decode (sequences increasing within the page, none above
    /// `upto`).
    pub fn on_changes(
        &mut self,
        changes: Vec<(Seq, Change)>,
        upto: Seq,
        done: bool,
    ) -> Result<(), Violation> {
        if let Some(&(first, _)) = changes.first() {
            if first <= self.last_upto {
                return Err(violation(format!(
                    "a page starts at sequence {first}, not after {}",
                    self.last_upto
                )));
            }
        }
        if upto < self.last_upto {
            return Err(violation(format!(
                "a page ends at sequence {upto}, before the previous page's {}",
                self.last_upto
            )));
        }
        self.last_upto = upto;
        self.incoming.acked(self.acked);
        self.incoming.add(upto, changes.len());
        if self.incoming.is_over() {
            let (pages, n) = self.incoming.len();
            return Err(violation(format!(
                "{pages} pages with {n} changes sent without an Ack (the window is {} pages, {} changes)",
                self.limits.window_pages, self.limits.window_changes
            )));
        }
        self.pending.push_back(Page {
            changes,
            upto,
            done,
        });
        Ok(())
    }

    /// An `Ack` from the peer.
    pub fn on_ack(&mut self, upto: Seq) -> Result<(), Violation> {
        if upto < self.acked_by_peer {
            return Err(violation(format!(
                "Ack {upto} goes back from {}",
                self.acked_by_peer
            )));
        }
        if upto > self.sent_upto {
            return Err(violation(format!(
                "Ack {upto} for more than was sent ({})",
                self.sent_upto
            )));
        }
        self.acked_by_peer = upto;
        self.out.acked(upto);
        Ok(())
    }

    /// Where to read the index from next, if a read is wanted now: the
    /// peer has pulled, everything read before is sent, and the window
    /// has room.
    pub fn read_from(&self) -> Option<Seq> {
        let after = self.after?;
        (self.held.is_empty() && self.out.fits(self.limits.page)).then_some(after)
    }

    /// The index read that [`PeerFlow::read_from`] asked for: `raw_upto`
    /// is the last sequence read (`None` if nothing follows), `changes`
    /// those of them for the peer (at most [`Limits::page`], in order),
    /// `last` whether `raw_upto` is the index's last sequence.
    pub fn on_read(
        &mut self,
        raw_upto: Option<Seq>,
        changes: Vec<(Seq, Change)>,
        last: bool,
    ) -> Result<(), omirr_proto::EncodeError> {
        let Some(after) = self.after else {
            return Ok(());
        };
        let Some(upto) = raw_upto else {
            // Nothing new: say so once.
            if !self.told_done {
                self.held.push_back(Page {
                    changes: Vec::new(),
                    upto: after,
                    done: true,
                });
                self.told_done = true;
            }
            return Ok(());
        };
        for m in omirr_proto::paginate(changes, upto, last)? {
            if let Message::Changes {
                changes,
                upto,
                done,
            } = m
            {
                self.held.push_back(Page {
                    changes,
                    upto,
                    done,
                });
            }
        }
        self.told_done = last;
        self.after = Some(upto);
        Ok(())
    }

    /// Whether the last read found nothing new (the driver then waits for
    /// the index to move).
    pub fn caught_up(&self) -> bool {
        self.told_done && self.held.is_empty()
    }

    /// The next page to send, if the window takes it.
    pub fn next_page(&mut self) -> Option<Message> {
        let n = self.held.front()?.changes.len();
        if !self.out.fits(n) {
            return None;
        }
        let page = self.held.pop_front()?;
        self.out.add(page.upto, n);
        self.sent_upto = page.upto;
        // Done too when the window would have no room for another page:
        // the receiver then applies and acknowledges what it has.
        let done = page.done || !self.out.room_for(self.limits.page);
        Some(Message::Changes {
            changes: page.changes,
            upto: page.upto,
            done,
        })
    }

    /// Pages read and waiting for the window.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The pages sent and not yet acknowledged: (pages, changes).
    pub fn in_flight(&self) -> (usize, usize) {
        self.out.len()
    }

    /// The next batch to apply, if one is complete and none is being
    /// applied: pages that arrived back to back (each but the last with
    /// `done: false`), up to [`Limits::batch_max`] changes, and the
    /// `upto` the cursor moves to once it is applied.
    pub fn next_batch(&mut self) -> Option<(Vec<Change>, Seq)> {
        if self.applying {
            return None;
        }
        // Complete: a page that says done, or enough changes.
        let mut count = 0;
        let mut take = None;
        for (i, p) in self.pending.iter().enumerate() {
            count += p.changes.len();
            if p.done || count >= self.limits.batch_max {
                take = Some(i + 1);
                break;
            }
        }
        let take = take?;
        let mut changes = Vec::with_capacity(count);
        let mut upto = self.acked;
        for p in self.pending.drain(..take) {
            changes.extend(p.changes.into_iter().map(|(_, c)| c));
            upto = p.upto;
        }
        self.applying = true;
        Some((changes, upto))
    }

    /// The batch up to `upto` is applied and durable (the cursor moved):
    /// the `Ack` to send.
    pub fn applied(&mut self, upto: Seq) -> Message {
        self.applying = false;
        self.acked = self.acked.max(upto);
        Message::Ack { upto: self.acked }
    }

    /// Whether pages wait to be applied.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Checks the peer's count of unanswered requests, this one included.
pub fn check_requests(queued: usize) -> Result<(), Violation> {
    if queued > MAX_QUEUED_REQUESTS {
        return Err(violation(format!(
            "more than {MAX_QUEUED_REQUESTS} requests outstanding"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_core::{Content, Entry, HostId, Meta, RelPath, Timestamp, Version};

    fn change(seq: Seq) -> (Seq, Change) {
        let path = RelPath::new(format!("f{seq}").into_bytes()).expect("path");
        let entry = Entry {
            content: Content::Dir,
            meta: Meta::default(),
            version: Version {
                ts: Timestamp(seq),
                host: HostId::new("a"),
            },
            base: None,
        };
        (seq, Change { path, entry })
    }

    fn page(from: Seq, n: usize) -> Vec<(Seq, Change)> {
        (from..from + n as Seq).map(change).collect()
    }

    fn small() -> Limits {
        Limits {
            window_pages: 3,
            window_changes: 10,
            page: 4,
            batch_max: 100,
        }
    }

    /// Runs a sender and a receiver flow against each other over an
    /// in-order link until the receiver has everything the sender's
    /// index holds; fails on a stall.
    fn transfer(limits: Limits, total: Seq) {
        let (mut a, pull_a) = PeerFlow::new(0, limits);
        let (mut b, _pull_b) = PeerFlow::new(0, limits);
        let Message::Pull { after, .. } = pull_a else {
            panic!("a Pull first")
        };
        b.on_pull(after).expect("pull");
        let mut link: VecDeque<Message> = VecDeque::new();
        let mut back: VecDeque<Message> = VecDeque::new();
        let mut applied = 0;
        for _ in 0..100_000 {
            if applied == total {
                return;
            }
            let mut moved = false;
            if let Some(from) = b.read_from() {
                let raw: Vec<(Seq, Change)> = (from + 1..=total.min(from + limits.page as Seq))
                    .map(change)
                    .collect();
                let upto = raw.last().map(|(s, _)| *s);
                b.on_read(upto, raw, upto.unwrap_or(from) == total)
                    .expect("read");
                moved = true;
            }
            while let Some(m) = b.next_page() {
                link.push_back(m);
                moved = true;
            }
            if let Some(Message::Changes {
                changes,
                upto,
                done,
            }) = link.pop_front()
            {
                a.on_changes(changes, upto, done).expect("within the rules");
                moved = true;
            }
            if let Some((changes, upto)) = a.next_batch() {
                applied += changes.len() as Seq;
                back.push_back(a.applied(upto));
                moved = true;
            }
            if let Some(Message::Ack { upto }) = back.pop_front() {
                b.on_ack(upto).expect("ack");
                moved = true;
            }
            assert!(moved, "stalled after {applied} of {total}");
        }
        panic!("no end after 100,000 steps");
    }

    #[test]
    fn any_window_moves_everything_without_a_stall() {
        for pages in 1..4 {
            for changes in 1..12 {
                for page in 1..6 {
                    for batch_max in [1, 3, 100] {
                        let l = Limits {
                            window_pages: pages,
                            window_changes: changes,
                            page,
                            batch_max,
                        };
                        transfer(l, 40);
                    }
                }
            }
        }
        transfer(Limits::default(), 100_000);
    }

    #[test]
    fn a_peer_past_the_window_is_refused() {
        let (mut a, _) = PeerFlow::new(0, small());
        for s in 1..=3 {
            a.on_changes(page(s, 1), s, false).expect("fits");
        }
        let e = a.on_changes(page(4, 1), 4, false).unwrap_err();
        assert!(e.0.contains("without an Ack"), "{e}");
        let (mut a, _) = PeerFlow::new(0, small());
        a.on_changes(page(1, 6), 6, false)
            .expect("a page alone may be large");
        assert!(a.on_changes(page(7, 5), 11, false).is_err(), "11 changes");
        // Acknowledged pages make room.
        let (mut a, _) = PeerFlow::new(0, small());
        a.on_changes(page(1, 4), 4, true).expect("page");
        let (_, upto) = a.next_batch().expect("batch");
        assert!(matches!(a.applied(upto), Message::Ack { upto: 4 }));
        a.on_changes(page(5, 4), 8, false).expect("page");
        a.on_changes(page(9, 4), 12, false).expect("page");
        a.on_changes(page(13, 2), 14, true).expect("page");
    }

    #[test]
    fn pages_must_follow_each_other_and_the_pull() {
        let (mut a, _) = PeerFlow::new(10, small());
        assert!(
            a.on_changes(page(10, 1), 10, true).is_err(),
            "at the cursor"
        );
        let (mut a, _) = PeerFlow::new(10, small());
        a.on_changes(page(11, 2), 20, true).expect("page");
        assert!(a.on_changes(page(20, 1), 20, true).is_err(), "overlaps");
        assert!(a.on_changes(vec![], 19, true).is_err(), "upto goes back");
    }

    #[test]
    fn pulls_acks_and_requests_are_checked() {
        let (mut b, _) = PeerFlow::new(0, small());
        assert!(b.on_ack(1).is_err(), "nothing was sent");
        b.on_pull(0).expect("first");
        assert!(b.on_pull(0).is_err());
        b.on_read(Some(3), page(1, 3), true).expect("read");
        assert!(b.next_page().is_some());
        b.on_ack(3).expect("ack");
        assert!(b.on_ack(2).is_err(), "backwards");
        check_requests(MAX_QUEUED_REQUESTS).expect("at the bound");
        assert!(check_requests(MAX_QUEUED_REQUESTS + 1).is_err());
    }

    #[test]
    fn a_batch_waits_for_the_page_that_says_done_and_one_at_a_time() {
        let (mut a, _) = PeerFlow::new(0, small());
        a.on_changes(page(1, 2), 2, false).expect("page");
        assert!(a.next_batch().is_none(), "more follows");
        a.on_changes(page(3, 2), 4, true).expect("page");
        a.on_changes(page(5, 1), 5, true).expect("page");
        let (batch, upto) = a.next_batch().expect("batch");
        assert_eq!((batch.len(), upto), (4, 4));
        assert!(a.next_batch().is_none(), "one batch at a time");
        a.applied(upto);
        assert_eq!(a.next_batch().map(|(b, u)| (b.len(), u)), Some((1, 5)));
    }
}
