//! Tombstone expiry, and how a host that was away for longer than a
//! peer's horizon comes back without bringing deleted files back.
//!
//! A host forgets a tombstone once it is older than its horizon
//! ([`expirable`]), together with the older entries below it that the
//! tombstone hid ([`plan`]): what `tree::present` says is unchanged, so
//! the disk needs nothing. What it forgot it records as a watermark,
//! [`Forgotten`]: the greatest local sequence and (just above) the
//! greatest timestamp of an entry it forgot.
//!
//! A peer whose cursor for that host is below the watermark's sequence
//! may have missed a tombstone that is now gone ([`must_reconcile`]): its
//! cursor is older than the forgetting. It then asks for the host's
//! whole index, as a new host would, and at the end of that answer
//! [`forget_unknown`] says which of its own entries the host no longer
//! has because the set deleted them: those older than the host's
//! watermark that the host did not send. It forgets them (and removes
//! them from its disk) rather than recording a deletion, so that a copy
//! another host still holds legitimately is not deleted with them. Its
//! own changes that the host never acknowledged (made while it was away)
//! are kept and sent: they lose nothing.
//!
//! Why the sequence, not a time: the cursor is exactly what the peer has
//! received from the host, and the watermark's sequence is exactly where
//! the host's forgetting began in that numbering, so the test needs no
//! clock. The timestamp half of the watermark bounds what forgetting can
//! have deleted: an entry at or above it is newer than every tombstone
//! the host forgot, so none of them deleted it.

use crate::entry::{Change, Entry};
use crate::tree::{present, IndexView};
use crate::version::{HostId, Timestamp, Version};
use crate::{RelPath, Seq};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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
/// whole index and [`forget_unknown`]).
pub fn must_reconcile(cursor: Seq, peer: &Forgotten) -> bool {
    cursor < peer.seq
}

/// Whether `entry` is a tombstone old enough to forget at `now`.
pub fn expirable(entry: &Entry, now: Timestamp, horizon_ns: u64) -> bool {
    entry.is_expired_tombstone(now, horizon_ns)
}

/// What to forget with the expired tombstones `expired` (each a path and
/// its tombstone, as the index holds them): each tombstone, and every
/// entry below it that is older and not present (the tombstone hid it).
/// Forgetting exactly these leaves `present` unchanged for every path.
/// Each path once, with the version it must still hold when it is
/// forgotten (a newer one arriving meanwhile is kept).
pub fn plan<V: IndexView>(
    view: &V,
    expired: &[(RelPath, Entry)],
) -> Result<Vec<(RelPath, Version)>, V::Error> {
    let mut out: BTreeMap<RelPath, Version> = BTreeMap::new();
    for (path, tomb) in expired {
        if tomb.is_live() {
            continue;
        }
        out.insert(path.clone(), tomb.version.clone());
        for (below, e) in view.below(path)? {
            if e.version < tomb.version
                && !out.contains_key(&below)
                && present(view, &below)?.is_none()
            {
                out.insert(below, e.version);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// One entry of the returning host's index, for [`forget_unknown`].
#[derive(Debug, Clone)]
pub struct Held {
    pub path: RelPath,
    pub entry: Entry,
    /// The sequence the host recorded it under.
    pub seq: Seq,
}

/// The end of a reconciliation with a peer that forgot entries
/// (`peer_forgot`): which of this host's (`host`) entries to forget.
///
/// `ours`: this host's entries in the sets it shares with the peer, in
/// path order. `sent`: every path the peer sent in its answer to a full
/// `Pull` (its whole index), and whether that entry was live.
/// `peer_cursor`: the peer's cursor for this host (the `after` of its
/// `Pull`): it has received everything this host recorded up to it.
///
/// A live entry the peer did not send is forgotten when it is older
/// than the peer's watermark (a tombstone the peer forgot may have
/// deleted it), unless it is this host's own change that the peer never
/// received from it (recorded after `peer_cursor`): that one was made
/// while the two were apart, and is kept (and sent). A directory is
/// kept if anything live below it is kept or was sent.
pub fn forget_unknown(
    host: &HostId,
    ours: &[Held],
    sent: &BTreeMap<RelPath, bool>,
    peer_forgot: &Forgotten,
    peer_cursor: Seq,
) -> Vec<Change> {
    let doomed = |h: &Held| {
        h.entry.is_live()
            && !sent.contains_key(&h.path)
            && h.entry.version.ts < peer_forgot.below
            && !(h.entry.version.host == *host && h.seq > peer_cursor)
    };
    let mut forget: BTreeSet<&RelPath> = ours
        .iter()
        .filter(|h| doomed(h))
        .map(|h| &h.path)
        .collect();
    // Live paths that stay: what we keep and what the peer sent.
    let staying: BTreeSet<&RelPath> = ours
        .iter()
        .filter(|h| h.entry.is_live() && !forget.contains(&h.path))
        .map(|h| &h.path)
        .chain(sent.iter().filter(|(_, live)| **live).map(|(p, _)| p))
        .collect();
    let dirs: Vec<&RelPath> = forget
        .iter()
        .copied()
        .filter(|p| {
            ours.iter()
                .any(|h| h.path == **p && h.entry.content.is_dir())
        })
        .collect();
    for d in dirs {
        if staying.range::<RelPath, _>(d.below_path_range()).next().is_some() {
            forget.remove(d);
        }
    }
    ours.iter()
        .filter(|h| forget.contains(&h.path))
        .map(|h| Change {
            path: h.path.clone(),
            entry: h.entry.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Content, Meta};
    use crate::mem::MemIndex;

    fn entry(ts: u64, host: &str, content: Content) -> Entry {
        Entry {
            content,
            meta: Meta::default(),
            version: Version {
                ts: Timestamp(ts),
                host: HostId::new(host),
            },
        }
    }

    fn p(s: &str) -> RelPath {
        RelPath::new(s.as_bytes()).expect("path")
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
    fn expiry_forgets_what_the_tombstone_hid_and_keeps_the_tree() {
        let mut ix = MemIndex::default();
        let rec = |ix: &mut MemIndex, path: &str, e: Entry| {
            ix.record(Change { path: p(path), entry: e });
        };
        rec(&mut ix, "d", entry(1, "a", Content::Dir));
        rec(&mut ix, "d/old", entry(2, "a", file()));
        rec(&mut ix, "d/new", entry(9, "b", file()));
        rec(&mut ix, "d", entry(5, "a", Content::Deleted));
        let tomb = ix.entry(&p("d")).expect("infallible").expect("d");
        let planned = plan(&ix, &[(p("d"), tomb)]).expect("infallible");
        let paths: Vec<String> = planned.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(paths, ["d", "d/old"], "the newer d/new is present");
        assert!(present(&ix, &p("d/new")).expect("infallible").is_some());
    }

    #[test]
    fn the_returning_host_forgets_what_the_peer_deleted_and_keeps_its_own() {
        let me = HostId::new("r");
        let held = |path: &str, ts: u64, host: &str, seq: Seq, c: Content| Held {
            path: p(path),
            entry: entry(ts, host, c),
            seq,
        };
        let ours = vec![
            // Deleted on the set long ago: forgotten.
            held("gone", 10, "q", 1, file()),
            // Our own, received by the peer, deleted since: forgotten.
            held("mine-sent", 11, "r", 2, file()),
            // Our own, written while away: kept.
            held("mine-away", 12, "r", 9, file()),
            // Newer than anything the peer forgot: kept.
            held("recent", 60, "q", 3, file()),
            // The peer has it.
            held("shared", 10, "q", 4, file()),
            // A directory holding something kept stays.
            held("dir", 5, "q", 5, Content::Dir),
            held("dir/kept", 13, "r", 10, file()),
            held("dir2", 5, "q", 6, Content::Dir),
        ];
        let sent = BTreeMap::from([(p("shared"), true)]);
        let forgot = Forgotten {
            seq: 40,
            below: Timestamp(50),
        };
        let out: Vec<String> = forget_unknown(&me, &ours, &sent, &forgot, 8)
            .iter()
            .map(|c| c.path.to_string())
            .collect();
        assert_eq!(out, ["gone", "mine-sent", "dir2"]);
    }
}
