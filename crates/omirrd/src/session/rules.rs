//! The protocol's rules for one session, without I/O: what a peer may
//! send us, and how much of it, decided from the messages alone (see
//! `proto/PROTOCOL.md`, "Flow control" and "Limits"). The driver feeds
//! every incoming message through [`Rules`]; a [`Violation`] ends the
//! session with `Error BadMessage` and the reason.
//!
//! Both directions count change pages the same way, with a [`Window`]: the
//! sender stops when its window is full and waits for an `Ack`; the
//! receiver checks that the peer never exceeds it. That is what bounds the
//! pages a receiver buffers while its applier works, so the socket reader
//! never has to wait for the applier.

use omirr_core::{Change, Seq};
use std::collections::VecDeque;

/// The most changes sent and not yet acknowledged.
pub const WINDOW_CHANGES: usize = 65_536;
/// The most `Changes` pages sent and not yet acknowledged (each at most
/// one frame, `MAX_FRAME`).
pub const WINDOW_PAGES: usize = 16;
/// The most requests of the peer's waiting to be served, or being served.
/// Our own side never has more than [`crate::session::fetch::MAX_REQUESTS`]
/// outstanding.
pub const MAX_QUEUED_REQUESTS: usize = 4096;

/// Why a peer's message breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

fn violation(s: impl Into<String>) -> Violation {
    Violation(s.into())
}

/// Change pages in flight: sent (or received) and not yet acknowledged.
#[derive(Debug, Default, Clone)]
pub struct Window {
    pages: VecDeque<(Seq, usize)>,
    changes: usize,
}

impl Window {
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
    /// takes any page (a page holds at most `MAX_CHANGES_PER_PAGE`, less
    /// than the window).
    pub fn fits(&self, n: usize) -> bool {
        self.pages.is_empty() || self.room_for(n)
    }

    /// Whether, after what is in flight, one more page of up to `n`
    /// changes would still fit.
    pub fn room_for(&self, n: usize) -> bool {
        self.pages.len() < WINDOW_PAGES && self.changes + n <= WINDOW_CHANGES
    }

    pub fn add(&mut self, upto: Seq, n: usize) {
        self.pages.push_back((upto, n));
        self.changes += n;
    }

    pub fn is_over(&self) -> bool {
        self.pages.len() > WINDOW_PAGES || self.changes > WINDOW_CHANGES
    }

    pub fn len(&self) -> (usize, usize) {
        (self.pages.len(), self.changes)
    }
}

/// What the peer has sent us so far, as far as the rules care.
#[derive(Debug)]
pub struct Rules {
    pulled: bool,
    /// The greatest `upto` of the peer's pages (at first, our `Pull`'s
    /// cursor): the next page's sequences must lie above it.
    last_upto: Seq,
    incoming: Window,
    /// The greatest `Ack` the peer sent us.
    acked_by_peer: Seq,
}

impl Rules {
    /// A session whose `Pull` asked the peer for what follows `after`.
    pub fn new(after: Seq) -> Rules {
        Rules {
            pulled: false,
            last_upto: after,
            incoming: Window::default(),
            acked_by_peer: 0,
        }
    }

    pub fn on_pull(&mut self) -> Result<(), Violation> {
        if std::mem::replace(&mut self.pulled, true) {
            return Err(violation("a second Pull"));
        }
        Ok(())
    }

    /// A `Changes` page. `acked` is the greatest `Ack` we have sent (the
    /// applier's, read just now). The message itself was validated at
    /// decode (sequences increasing within the page, none above `upto`).
    pub fn on_changes(
        &mut self,
        changes: &[(Seq, Change)],
        upto: Seq,
        acked: Seq,
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
        self.incoming.acked(acked);
        self.incoming.add(upto, changes.len());
        if self.incoming.is_over() {
            let (pages, changes) = self.incoming.len();
            return Err(violation(format!(
                "{pages} pages with {changes} changes sent without an Ack (the window is {WINDOW_PAGES} pages, {WINDOW_CHANGES} changes)"
            )));
        }
        Ok(())
    }

    /// An `Ack` from the peer; `sent` is the greatest `upto` we have sent.
    pub fn on_ack(&mut self, upto: Seq, sent: Seq) -> Result<(), Violation> {
        if upto < self.acked_by_peer {
            return Err(violation(format!(
                "Ack {upto} goes back from {}",
                self.acked_by_peer
            )));
        }
        if upto > sent {
            return Err(violation(format!(
                "Ack {upto} for more than was sent ({sent})"
            )));
        }
        self.acked_by_peer = upto;
        Ok(())
    }

    /// A request for content; `queued` counts the peer's requests not yet
    /// answered, this one included.
    pub fn on_request(&self, queued: usize) -> Result<(), Violation> {
        if queued > MAX_QUEUED_REQUESTS {
            return Err(violation(format!(
                "more than {MAX_QUEUED_REQUESTS} requests outstanding"
            )));
        }
        Ok(())
    }
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
        };
        (seq, Change { path, entry })
    }

    fn page(from: Seq, n: usize) -> Vec<(Seq, Change)> {
        (from..from + n as Seq).map(change).collect()
    }

    #[test]
    fn a_sender_that_keeps_its_window_is_never_refused() {
        let mut sender = Window::default();
        let mut rules = Rules::new(0);
        let mut next = 1;
        let mut acked = 0;
        for round in 0..200 {
            let n = 1 + (round * 7919) % 4096;
            if !sender.fits(n) {
                // The receiver applies everything so far and acks it.
                acked = next - 1;
                sender.acked(acked);
            }
            assert!(sender.fits(n));
            let p = page(next, n);
            next += n as Seq;
            sender.add(next - 1, n);
            rules
                .on_changes(&p, next - 1, acked)
                .expect("within the window");
        }
    }

    #[test]
    fn a_peer_past_the_window_is_refused() {
        let mut rules = Rules::new(0);
        let mut next = 1;
        for _ in 0..WINDOW_PAGES {
            rules.on_changes(&page(next, 1), next, 0).expect("fits");
            next += 1;
        }
        let e = rules.on_changes(&page(next, 1), next, 0).unwrap_err();
        assert!(e.0.contains("without an Ack"), "{e}");
        // Had we acked, it would have fitted.
        let mut rules = Rules::new(0);
        for s in 1..=WINDOW_PAGES as Seq {
            rules.on_changes(&page(s, 1), s, 0).expect("fits");
        }
        let s = WINDOW_PAGES as Seq + 1;
        rules.on_changes(&page(s, 1), s, 1).expect("one acked");
    }

    #[test]
    fn too_many_changes_unacknowledged_are_refused() {
        let mut rules = Rules::new(0);
        rules.on_changes(&page(1, 16384), 16384, 0).expect("page");
        rules
            .on_changes(&page(16385, 16384), 32768, 0)
            .expect("page");
        rules
            .on_changes(&page(32769, 16384), 49152, 0)
            .expect("page");
        rules
            .on_changes(&page(49153, 16384), 65536, 0)
            .expect("page");
        assert!(rules.on_changes(&page(65537, 1), 65537, 0).is_err());
    }

    #[test]
    fn pages_must_follow_each_other_and_the_pull() {
        let mut rules = Rules::new(10);
        assert!(
            rules.on_changes(&page(10, 1), 10, 0).is_err(),
            "at the cursor"
        );
        let mut rules = Rules::new(10);
        rules.on_changes(&page(11, 5), 20, 0).expect("page");
        assert!(rules.on_changes(&page(20, 1), 20, 0).is_err(), "overlaps");
        assert!(rules.on_changes(&[], 19, 0).is_err(), "upto goes back");
        rules.on_changes(&[], 25, 0).expect("empty page moves upto");
        rules.on_changes(&page(26, 1), 26, 0).expect("page");
    }

    #[test]
    fn pulls_acks_and_requests_are_checked() {
        let mut rules = Rules::new(0);
        rules.on_pull().expect("first");
        assert!(rules.on_pull().is_err());
        rules.on_ack(5, 10).expect("ack");
        assert!(rules.on_ack(4, 10).is_err(), "backwards");
        assert!(rules.on_ack(11, 10).is_err(), "beyond what was sent");
        rules.on_request(MAX_QUEUED_REQUESTS).expect("at the bound");
        assert!(rules.on_request(MAX_QUEUED_REQUESTS + 1).is_err());
    }
}
