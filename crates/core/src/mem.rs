//! An in-memory index: the reference model of what a host's index holds
//! and answers. The persisted index follows the same rules; the simulation
//! tests drive this one.

use crate::entry::{Change, Entry, Hash};
use crate::expiry::{self, Forgotten, Held};
use crate::tree::IndexView;
use crate::version::{HostId, Timestamp, Version};
use crate::{Content, RelPath, Seq};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;

/// An index held in memory: each path's newest entry with the local
/// sequence it was recorded under, the peers' cursors, which paths hold
/// which content, and the expiry watermark. Reads go through
/// [`IndexView`] and [`EntrySource`](crate::verify::EntrySource).
#[derive(Debug, Clone, Default)]
pub struct MemIndex {
    entries: BTreeMap<RelPath, (Entry, Seq)>,
    /// Only each path's latest sequence: "everything after S" is a range.
    by_seq: BTreeMap<Seq, RelPath>,
    last_seq: Seq,
    cursors: HashMap<HostId, Seq>,
    holders: HashMap<Hash, BTreeSet<RelPath>>,
    forgotten: Forgotten,
}

impl MemIndex {
    /// Records `change` if it is newer than what the index holds for its
    /// path, giving it the next local sequence. Returns that sequence, or
    /// `None` if the index already had this version or a newer one.
    pub fn record(&mut self, change: Change) -> Option<Seq> {
        if let Some((old, seq)) = self.entries.get(&change.path) {
            if old.version >= change.entry.version {
                return None;
            }
            let (old, seq) = (old.clone(), *seq);
            self.by_seq.remove(&seq);
            self.unhold(&change.path, &old);
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        if let Content::File { hash, .. } = &change.entry.content {
            self.holders
                .entry(*hash)
                .or_default()
                .insert(change.path.clone());
        }
        self.by_seq.insert(seq, change.path.clone());
        self.entries.insert(change.path, (change.entry, seq));
        Some(seq)
    }

    fn unhold(&mut self, path: &RelPath, old: &Entry) {
        if let Content::File { hash, .. } = &old.content {
            if let Some(set) = self.holders.get_mut(hash) {
                set.remove(path);
                if set.is_empty() {
                    self.holders.remove(hash);
                }
            }
        }
    }

    /// Every entry recorded after `seq`, in sequence order.
    pub fn since(&self, seq: Seq) -> Vec<(Seq, Change)> {
        self.by_seq
            .range(seq + 1..)
            .filter_map(|(s, p)| {
                self.entries.get(p).map(|(e, _)| {
                    (
                        *s,
                        Change {
                            path: p.clone(),
                            entry: e.clone(),
                        },
                    )
                })
            })
            .collect()
    }

    /// The sequence of the latest recorded change (0: none yet).
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// The highest sequence received from `peer`.
    pub fn cursor(&self, peer: &HostId) -> Seq {
        self.cursors.get(peer).copied().unwrap_or(0)
    }

    /// Sets [`MemIndex::cursor`] for `peer` to `seq`, as it is, even if
    /// lower.
    pub fn set_cursor(&mut self, peer: &HostId, seq: Seq) {
        self.cursors.insert(peer.clone(), seq);
    }

    /// Forgets tombstones older than `horizon_ns` before `now` that hide
    /// nothing, and buries what the others hide ([`expiry::plan`]);
    /// returns how many tombstones it forgot.
    pub fn expire_tombstones(&mut self, now: Timestamp, horizon_ns: u64) -> usize {
        self.expire(now, horizon_ns).0
    }

    /// [`MemIndex::expire_tombstones`], returning also the tombstones it
    /// recorded to bury what an expired one hides (new changes, which the
    /// peers are to get).
    pub fn expire(&mut self, now: Timestamp, horizon_ns: u64) -> (usize, Vec<Change>) {
        let old: Vec<(RelPath, Entry)> = self
            .entries
            .iter()
            .filter(|(_, (e, _))| expiry::expirable(e, now, horizon_ns))
            .map(|(p, (e, _))| (p.clone(), e.clone()))
            .collect();
        let Ok(plan) = expiry::plan(self, &old);
        for c in &plan.bury {
            self.record(c.clone());
        }
        (self.forget(&plan.forget), plan.bury)
    }

    /// Forgets each path that still holds the given version, and raises
    /// the watermark ([`MemIndex::forgotten`]) by it; returns how many.
    pub fn forget(&mut self, paths: &[(RelPath, Version)]) -> usize {
        let mut n = 0;
        for (p, v) in paths {
            let Some((e, s)) = self.entries.get(p) else {
                continue;
            };
            if e.version != *v {
                continue;
            }
            let (e, s) = (e.clone(), *s);
            self.entries.remove(p);
            self.by_seq.remove(&s);
            self.unhold(p, &e);
            self.forgotten.add(s, v);
            n += 1;
        }
        n
    }

    /// What this index has forgotten: its expiry watermark.
    pub fn forgotten(&self) -> Forgotten {
        self.forgotten
    }

    /// Every entry with its sequence, in path order.
    pub fn held(&self) -> Vec<Held> {
        self.entries
            .iter()
            .map(|(p, (e, s))| Held {
                path: p.clone(),
                entry: e.clone(),
                seq: *s,
            })
            .collect()
    }

    /// Every entry, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&RelPath, &Entry)> {
        self.entries.iter().map(|(p, (e, _))| (p, e))
    }

    /// How many entries the index holds, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl IndexView for MemIndex {
    type Error = Infallible;

    fn entry(&self, path: &RelPath) -> Result<Option<Entry>, Infallible> {
        Ok(self.entries.get(path).map(|(e, _)| e.clone()))
    }

    fn below(&self, dir: &RelPath) -> Result<Vec<(RelPath, Entry)>, Infallible> {
        Ok(self
            .entries
            .range(dir.below_path_range())
            .map(|(p, (e, _))| (p.clone(), e.clone()))
            .collect())
    }

    fn holder_of(&self, hash: &Hash) -> Result<Option<RelPath>, Infallible> {
        Ok(self
            .holders
            .get(hash)
            .and_then(|s| s.iter().next().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Meta;
    use crate::version::Version;

    fn change(path: &str, ts: u64, content: Content) -> Change {
        Change {
            path: RelPath::new(path.as_bytes()).expect("path"),
            entry: Entry {
                content,
                meta: Meta::default(),
                version: Version {
                    ts: Timestamp(ts),
                    host: HostId::new("h"),
                },
                base: None,
            },
        }
    }

    #[test]
    fn since_returns_only_the_latest_per_path_in_order() {
        let mut ix = MemIndex::default();
        assert_eq!(ix.record(change("a", 1, Content::Dir)), Some(1));
        assert_eq!(ix.record(change("b", 1, Content::Dir)), Some(2));
        assert_eq!(ix.record(change("a", 2, Content::Deleted)), Some(3));
        assert_eq!(
            ix.record(change("a", 2, Content::Dir)),
            None,
            "same version"
        );
        assert_eq!(ix.record(change("a", 1, Content::Dir)), None, "older");
        let s: Vec<(Seq, String)> = ix
            .since(0)
            .into_iter()
            .map(|(s, c)| (s, c.path.to_string()))
            .collect();
        assert_eq!(s, [(2, "b".to_string()), (3, "a".to_string())]);
        assert_eq!(ix.since(2).len(), 1);
        assert!(ix.since(3).is_empty());
    }

    #[test]
    fn cursors_and_holders() {
        let mut ix = MemIndex::default();
        let peer = HostId::new("p");
        assert_eq!(ix.cursor(&peer), 0);
        ix.set_cursor(&peer, 7);
        assert_eq!(ix.cursor(&peer), 7);
        let h = [7u8; 32];
        ix.record(change("f", 1, Content::File { size: 1, hash: h }));
        assert_eq!(
            ix.holder_of(&h),
            Ok(Some(RelPath::new(&b"f"[..]).expect("p")))
        );
        ix.record(change("f", 2, Content::Deleted));
        assert_eq!(ix.holder_of(&h), Ok(None));
    }

    #[test]
    fn expiry_forgets_old_tombstones_only() {
        let mut ix = MemIndex::default();
        ix.record(change("gone", 10, Content::Deleted));
        ix.record(change("recent", 95, Content::Deleted));
        ix.record(change("live", 1, Content::Dir));
        assert_eq!(ix.expire_tombstones(Timestamp(100), 50), 1);
        assert_eq!(ix.len(), 2);
        assert!(ix
            .entry(&RelPath::new(&b"gone"[..]).expect("p"))
            .expect("infallible")
            .is_none());
        assert_eq!(ix.since(0).len(), 2);
    }
}
