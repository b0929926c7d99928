//! Tombstone expiry, and how a host that was away for longer than a
//! peer's horizon comes back without bringing deleted files back.
//!
//! A host forgets a tombstone once it is older than its horizon
//! ([`expirable`]) and hides no older live entry below it; the entries a
//! tombstone hides are buried first under tombstones of their own
//! ([`plan`]), which reach the peers like any change. What
//! `tree::present` says is unchanged, so the disk needs nothing. What it forgot it records as a watermark,
//! [`Forgotten`]: the greatest local sequence and (just above) the
//! greatest timestamp of an entry it forgot.
//!
//! A peer whose cursor for that host is below the watermark's sequence
//! may have missed a tombstone that is now gone ([`must_reconcile`]): its
//! cursor is older than the forgetting. It then asks for the host's
//! whole index, as a new host would, and at the end of that answer
//! [`reconcile`] says what becomes of its entries that the host no
//! longer has: those older than the host's watermark were deleted on the
//! set, and get a tombstone just above them (which never beats a later
//! write, and expires soon); its own changes that the host never received
//! from it (made while it was away) are stamped anew, so they win over a
//! deletion they never knew of, everywhere: nothing is lost.
//!
//! Why the sequence, not a time: the cursor is exactly what the peer has
//! received from the host, and the watermark's sequence is exactly where
//! the host's forgetting began in that numbering, so the test needs no
//! clock. The timestamp half of the watermark bounds what forgetting can
//! have deleted: an entry at or above it is newer than every tombstone
//! the host forgot, so none of them deleted it.

use crate::entry::{Change, Content, Entry};
use crate::tree::{present, IndexView};
use crate::version::{HostId, Timestamp, Version};
use crate::{RelPath, Seq};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a host has forgotten, as it tells its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Forgotten {
    /// The greatest local sequence of an entry this host forgot (0:
    /// none).
    pub seq: Seq,
    /// Above the timestamp of every entry this host forgot (0: none).
    pub below: Timestamp,
}

impl Forgotten {
    /// Raises the watermark by an entry forgotten at `seq`.
    pub fn add(&mut self, seq: Seq, version: &Version) {
        self.seq = self.seq.max(seq);
        self.below = self.below.max(Timestamp(version.ts.0.saturating_add(1)));
    }

    /// The greater of two watermarks, field by field.
    pub fn max(self, other: Forgotten) -> Forgotten {
        Forgotten {
            seq: self.seq.max(other.seq),
            below: self.below.max(other.below),
        }
    }
}

/// Whether a host whose cursor for a peer is `cursor` may have missed
/// something the peer forgot, and must reconcile with it (ask for its
/// whole index and [`reconcile`]).
pub fn must_reconcile(cursor: Seq, peer: &Forgotten) -> bool {
    cursor < peer.seq
}

/// Whether a change from a peer must wait (be set aside) until the peer
/// has reconciled with this host: the peer's cursor for this host
/// (`their_cursor`) is below what this host forgot (`ours`), and the
/// change is live, older than this host's watermark and for a path this
/// host has no entry for (`known`). Such a change may be one that a
/// tombstone this host forgot deleted, and the peer never saw that
/// tombstone; its reconciliation deletes it (or renews it, if it was
/// the peer's own change made while away). Anything else is decided as
/// usual, by its version.
pub fn must_wait(ours: &Forgotten, their_cursor: Seq, known: bool, entry: &Entry) -> bool {
    must_reconcile(their_cursor, ours) && !known && entry.is_live() && entry.version.ts < ours.below
}

/// Whether `entry` is a tombstone old enough to forget at `now`.
pub fn expirable(entry: &Entry, now: Timestamp, horizon_ns: u64) -> bool {
    entry.is_expired_tombstone(now, horizon_ns)
}

/// What expiry does (see [`plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Tombstones to forget, each with the version it must still hold
    /// when it is forgotten (a newer one arriving meanwhile stays).
    pub forget: Vec<(RelPath, Version)>,
    /// Tombstones to record, at the version of the expired tombstone
    /// above them, for the older live entries it hides: such an entry
    /// would come back into view if the tombstone went, so it is buried
    /// first (as a new change, which reaches the peers), and the
    /// tombstone goes at a later expiry.
    pub bury: Vec<Change>,
}

/// What to do with the expired tombstones `expired` (each a path and its
/// tombstone, as the index holds them). A tombstone that hides no older
/// live entry below it is forgotten. One that does is kept for now, and
/// the entries it hides (not present: nothing of them is on disk) are
/// buried under tombstones of its version. A live directory below it
/// that is present for what it holds keeps it too. Neither step changes
/// what `tree::present` says for any path.
pub fn plan<V: IndexView>(view: &V, expired: &[(RelPath, Entry)]) -> Result<Plan, V::Error> {
    let mut out = Plan::default();
    let mut buried = std::collections::BTreeSet::new();
    for (path, tomb) in expired {
        if tomb.is_live() {
            continue;
        }
        let mut shadows = false;
        for (below, e) in view.below(path)? {
            if !e.is_live() || e.version >= tomb.version {
                continue;
            }
            shadows = true;
            if present(view, &below)?.is_none() && buried.insert(below.clone()) {
                out.bury.push(Change {
                    path: below,
                    entry: Entry {
                        content: Content::Deleted,
                        meta: e.meta,
                        version: tomb.version.clone(),
                        base: Some(e.version.clone()),
                    },
                });
            }
        }
        if !shadows {
            out.forget.push((path.clone(), tomb.version.clone()));
        }
    }
    Ok(out)
}

/// One entry of the returning host's index, for [`reconcile`].
#[derive(Debug, Clone)]
pub struct Held {
    /// The path the entry is held at.
    pub path: RelPath,
    /// The entry, as the index holds it.
    pub entry: Entry,
    /// The sequence the host recorded it under.
    pub seq: Seq,
}

/// What a returning host does at the end of a reconciliation (see
/// [`reconcile`]): changes to apply as if a peer had sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// The set's forgotten deletions, reconstructed: a tombstone just
    /// above each entry the peer deleted and forgot (its timestamp + 1,
    /// this host's name). It never beats anything written after the
    /// entry it deletes, and it expires like any old tombstone.
    pub deleted: Vec<Change>,
    /// This host's own changes made while it was away from the peer,
    /// stamped anew (`now`, this host): a write the set did not know of
    /// wins over a deletion it may have forgotten, so nothing is lost,
    /// and every host (one that still holds that deletion too) agrees.
    pub renewed: Vec<Change>,
}

/// The end of a reconciliation with a peer that forgot entries
/// (`peer_forgot`): what becomes of this host's (`host`) entries that
/// the peer no longer has.
///
/// `ours`: this host's entries in the sets it shares with the peer, in
/// path order. `sent`: every path the peer sent in its answer to a full
/// `Pull` (its whole index), and whether that entry was live.
/// `peer_cursor`: the peer's cursor for this host: it has received
/// everything this host recorded up to it.
///
/// A live entry the peer did not send, older than the peer's watermark
/// (a tombstone the peer forgot may have deleted it), is deleted, unless
/// it is this host's own change that the peer never received from it
/// (recorded after `peer_cursor`) and that is on disk here: that one was
/// made while the two were apart, and is renewed (and so sent), stamped
/// `now` or, if that is lower, the peer's watermark: above every
/// deletion the peer forgot. An entry
/// at or above the watermark is newer than anything the peer forgot:
/// it stays, and reaches the peer as usual.
pub fn reconcile<V: IndexView>(
    view: &V,
    host: &HostId,
    ours: &[Held],
    sent: &BTreeMap<RelPath, bool>,
    peer_forgot: &Forgotten,
    peer_cursor: Seq,
    now: Timestamp,
) -> Result<Reconciled, V::Error> {
    let mut out = Reconciled::default();
    // Above every tombstone the peer forgot, whatever the clocks say.
    let renewed_at = now.max(peer_forgot.below);
    for h in ours {
        if !h.entry.is_live()
            || sent.contains_key(&h.path)
            || h.entry.version.ts >= peer_forgot.below
        {
            continue;
        }
        let own_unsent = h.entry.version.host == *host && h.seq > peer_cursor;
        if own_unsent && present(view, &h.path)?.is_some() {
            out.renewed.push(Change {
                path: h.path.clone(),
                entry: Entry {
                    version: Version {
                        ts: renewed_at,
                        host: host.clone(),
                    },
                    ..h.entry.clone()
                },
            });
        } else {
            out.deleted.push(Change {
                path: h.path.clone(),
                entry: Entry {
                    content: Content::Deleted,
                    meta: h.entry.meta.clone(),
                    version: Version {
                        ts: Timestamp(h.entry.version.ts.0.saturating_add(1)),
                        host: host.clone(),
                    },
                    base: Some(h.entry.version.clone()),
                },
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Content, Meta};
    use crate::mem::MemIndex;
    use crate::testing::p;

    fn entry(ts: u64, host: &str, content: Content) -> Entry {
        Entry {
            content,
            meta: Meta::default(),
            version: Version {
                ts: Timestamp(ts),
                host: HostId::new(host),
            },
            base: None,
        }
    }

    fn file() -> Content {
        Content::File {
            size: 1,
            hash: [1; 32],
        }
    }

    #[test]
    fn a_cursor_below_the_forgetting_must_reconcile() {
        let f = Forgotten {
            seq: 10,
            below: Timestamp(5),
        };
        assert!(must_reconcile(9, &f));
        assert!(!must_reconcile(10, &f));
        assert!(!must_reconcile(0, &Forgotten::default()));
    }

    #[test]
    fn expiry_buries_what_a_tombstone_hides_before_forgetting_it() {
        let mut ix = MemIndex::default();
        let rec = |ix: &mut MemIndex, path: &str, e: Entry| {
            ix.record(Change {
                path: p(path),
                entry: e,
            });
        };
        rec(&mut ix, "d", entry(1, "a", Content::Dir));
        rec(&mut ix, "d/old", entry(2, "a", file()));
        rec(&mut ix, "d/new", entry(9, "b", file()));
        rec(&mut ix, "d", entry(5, "a", Content::Deleted));
        rec(&mut ix, "e", entry(6, "a", Content::Deleted));
        let tombs: Vec<(RelPath, Entry)> = ["d", "e"]
            .iter()
            .map(|s| (p(s), ix.entry(&p(s)).expect("infallible").expect("held")))
            .collect();
        let planned = plan(&ix, &tombs).expect("infallible");
        let forget: Vec<String> = planned.forget.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(forget, ["e"], "d still hides d/old");
        let bury: Vec<String> = planned.bury.iter().map(|c| c.path.to_string()).collect();
        assert_eq!(bury, ["d/old"], "d/new is newer and present");
        assert_eq!(planned.bury[0].entry.version, tombs[0].1.version);
        assert!(present(&ix, &p("d/new")).expect("infallible").is_some());
        // Buried, d hides nothing live any more and goes next time.
        for c in planned.bury {
            ix.record(c);
        }
        let again = plan(&ix, &tombs[..1]).expect("infallible");
        assert_eq!(again.forget.len(), 1);
        assert!(again.bury.is_empty());
    }

    #[test]
    fn the_returning_host_deletes_what_the_peer_deleted_and_renews_its_own() {
        let me = HostId::new("r");
        let mut ix = MemIndex::default();
        let mut ours = Vec::new();
        for (path, ts, host, c) in [
            // Deleted on the set long ago.
            ("gone", 10, "q", file()),
            // Our own, received by the peer, deleted since.
            ("mine-sent", 11, "r", file()),
            // Our own, written while away.
            ("mine-away", 12, "r", file()),
            // Newer than anything the peer forgot.
            ("recent", 60, "q", file()),
            // The peer has it.
            ("shared", 10, "q", file()),
            ("dir", 5, "q", Content::Dir),
            ("dir/away", 13, "r", file()),
        ] {
            let seq = ix
                .record(Change {
                    path: p(path),
                    entry: entry(ts, host, c),
                })
                .expect("new");
            let _ = seq;
        }
        for h in ix.held() {
            ours.push(h);
        }
        let sent = BTreeMap::from([(p("shared"), true)]);
        let forgot = Forgotten {
            seq: 40,
            below: Timestamp(50),
        };
        // The peer had our changes up to sequence 2 (mine-sent).
        let out =
            reconcile(&ix, &me, &ours, &sent, &forgot, 2, Timestamp(100)).expect("infallible");
        let names = |v: &[Change]| v.iter().map(|c| c.path.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&out.deleted), ["dir", "gone", "mine-sent"]);
        assert_eq!(names(&out.renewed), ["dir/away", "mine-away"]);
        for c in &out.deleted {
            assert!(!c.entry.is_live());
            let was = ix.entry(&c.path).expect("infallible").expect("held");
            assert_eq!(c.entry.version.ts.0, was.version.ts.0 + 1, "just above");
        }
        assert!(out
            .renewed
            .iter()
            .all(|c| c.entry.version.ts == Timestamp(100)));
    }
}
