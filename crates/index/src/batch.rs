//! A batch of index updates that commit together, in one transaction.

use omirr_core::StatKey;
use omirr_core::{Change, HostId, RelPath, Seq, Timestamp};

/// What to do with a path's stat-cache row when its change is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatUpdate {
    /// Leave it as it is (e.g. a remote change not yet on disk).
    Keep,
    /// The file on disk now has this stat.
    Set(StatKey),
    /// Nothing is on disk at the path any more.
    Forget,
}

impl From<Option<StatKey>> for StatUpdate {
    fn from(s: Option<StatKey>) -> StatUpdate {
        s.map_or(StatUpdate::Forget, StatUpdate::Set)
    }
}

/// Everything one step of the daemon wants durable at once: the changes
/// a scan found or an apply wrote, with their files' stats, stat-only
/// updates for files that were re-hashed and found unchanged, the peer
/// cursor that the applied changes advance, and the clock. Committed by
/// [`crate::Index::commit`] in one transaction, so a crash leaves all of
/// it or none of it, and pays one durable commit for the lot.
///
/// Operations apply in this order: changes (in order), then stat-only
/// updates (in order), then cursors, then the clock.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) changes: Vec<(Change, StatUpdate)>,
    pub(crate) stats: Vec<(RelPath, Option<StatKey>)>,
    pub(crate) cursors: Vec<(HostId, Seq)>,
    pub(crate) hlc_last: Option<crate::Timestamp>,
    /// Set-aside changes to keep (`Some`) or drop (`None`), by peer.
    pub(crate) aside: Vec<(HostId, RelPath, Option<crate::Aside>)>,
}

impl Batch {
    /// An empty batch; committing it does nothing.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Records `change` if newer than what the index holds, and does
    /// `stat` to its path's stat-cache row (see [`crate::Index::commit`]).
    pub fn record(&mut self, change: Change, stat: StatUpdate) -> &mut Batch {
        self.changes.push((change, stat));
        self
    }

    /// Caches `key` as `path`'s stat without recording a change: for a
    /// file re-hashed and found unchanged. Applied after the changes.
    pub fn set_stat(&mut self, path: RelPath, key: StatKey) -> &mut Batch {
        self.stats.push((path, Some(key)));
        self
    }

    /// Drops `path`'s cached stat, if any, so the next scan hashes the
    /// file rather than trust its stat. Applied after the changes.
    pub fn forget_stat(&mut self, path: RelPath) -> &mut Batch {
        self.stats.push((path, None));
        self
    }

    /// Sets `peer`'s cursor to `seq` (down as well as up), in the same
    /// transaction as the changes applied below it.
    pub fn set_cursor(&mut self, peer: HostId, seq: Seq) -> &mut Batch {
        self.cursors.push((peer, seq));
        self
    }

    /// Keeps `aside`, a change from `peer` that could not be applied
    /// (replacing one kept for the same path).
    pub fn set_aside(&mut self, peer: HostId, aside: crate::Aside) -> &mut Batch {
        self.aside
            .push((peer, aside.change.path.clone(), Some(aside)));
        self
    }

    /// Drops the change kept aside from `peer` for `path`, if any.
    pub fn clear_aside(&mut self, peer: HostId, path: RelPath) -> &mut Batch {
        self.aside.push((peer, path, None));
        self
    }

    /// Raises the persisted clock to at least `ts`.
    pub fn observe_hlc(&mut self, ts: Timestamp) -> &mut Batch {
        self.hlc_last = self.hlc_last.max(Some(ts));
        self
    }

    /// Moves everything `other` holds into this batch, leaving `other`
    /// empty, so that both commit in one transaction: what a step wrote
    /// and what must be durable with it (a peer's cursor and the changes
    /// set aside below it, say). Each kind of operation keeps its order,
    /// this batch's first: `other`'s changes are recorded after this
    /// batch's changes and before any stat-only update.
    pub fn append(&mut self, other: &mut Batch) {
        self.changes.append(&mut other.changes);
        self.stats.append(&mut other.stats);
        self.cursors.append(&mut other.cursors);
        self.hlc_last = self.hlc_last.max(other.hlc_last.take());
        self.aside.append(&mut other.aside);
    }

    /// Whether the batch holds nothing at all (no changes, stats,
    /// cursors, clock or set-aside changes); [`crate::Index::commit`]
    /// then opens no transaction.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.stats.is_empty()
            && self.cursors.is_empty()
            && self.hlc_last.is_none()
            && self.aside.is_empty()
    }

    /// How many changes the batch records (the length of
    /// [`crate::Index::commit`]'s result).
    pub fn changes(&self) -> usize {
        self.changes.len()
    }
}
