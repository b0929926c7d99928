//! Tombstone expiry as the index carries it out (the rules are
//! [`omirr_core::expiry`]'s): forgetting old tombstones and burying what
//! they hide, the watermark of what was forgotten, and the pending
//! reconciliations with peers that are behind it.

use crate::batch::StatUpdate;
use crate::error::{bad_record, corrupt, decode_path, Ctx, IndexError};
use crate::index::Index;
use crate::reader::read_entry;
use crate::record;
use crate::schema::{
    decode_forgotten, split_key, ENTRIES, META, META_FORGOTTEN, RECONCILE, TOMBSTONES,
};
use omirr_core::expiry::{Forgotten, Held};
use omirr_core::{Change, Entry, HostId, RelPath, Timestamp, Version};
use redb::{ReadableTable, TableError};

/// What [`Index::expire`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// How many tombstones it forgot.
    pub forgotten: usize,
    /// The tombstones it recorded to bury what an expired one hides
    /// (see [`omirr_core::expiry::Plan::bury`]).
    pub buried: Vec<Change>,
}

impl Index {
    /// Forgets tombstones older than `horizon_ns` before `now` (see
    /// [`Entry::is_expired_tombstone`]) that hide nothing, and buries
    /// what the others hide, as [`omirr_core::expiry::plan`] says;
    /// returns how many tombstones it forgot. See [`Index::expire`].
    pub fn expire_tombstones(&self, now: Timestamp, horizon_ns: u64) -> Result<usize, IndexError> {
        Ok(self.expire(now, horizon_ns)?.forgotten)
    }

    /// [`Index::expire_tombstones`], saying also which tombstones it
    /// recorded to bury what an expired one hides (new changes, for the
    /// peers). The expired tombstones are one range scan over the
    /// tombstones, not over every entry; the plan reads below each. The
    /// forgetting raises the watermark ([`Index::forgotten`]) in the
    /// same transaction.
    ///
    /// The plan is made in a read transaction and carried out in a write
    /// transaction: a caller that records changes concurrently must hold
    /// off while it runs (the daemon holds its write lock), or a change
    /// recorded in between below a forgotten tombstone could come into
    /// view.
    pub fn expire(&self, now: Timestamp, horizon_ns: u64) -> Result<Expired, IndexError> {
        let expired = self.expired_tombstones(now, horizon_ns)?;
        if expired.is_empty() {
            return Ok(Expired::default());
        }
        let plan = omirr_core::expiry::plan(&self.reader()?, &expired)?;
        let forgotten = self.write(|t| {
            for c in &plan.bury {
                t.record(c, StatUpdate::Keep)?;
            }
            t.forget(&plan.forget)
        })?;
        Ok(Expired {
            forgotten,
            buried: plan.bury,
        })
    }

    /// The tombstones older than `horizon_ns` before `now`, in the order
    /// of their timestamps.
    fn expired_tombstones(
        &self,
        now: Timestamp,
        horizon_ns: u64,
    ) -> Result<Vec<(RelPath, Entry)>, IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let tombstones = self.table(&txn, TOMBSTONES)?;
        let entries = self.table(&txn, ENTRIES)?;
        let mut out = Vec::new();
        // Tombstone keys start with their timestamp, big-endian, so the
        // expired ones are a prefix of the table.
        for row in tombstones.iter().at(p, "scanning tombstones")? {
            let (k, _) = row.at(p, "scanning tombstones")?;
            let (ts, path) = split_key(k.value(), 8)
                .ok_or_else(|| corrupt(p, "a tombstone key is too short"))?;
            let ts = u64::from_be_bytes(ts.try_into().unwrap_or_default());
            if ts.saturating_add(horizon_ns) >= now.0 {
                break;
            }
            let path = decode_path(p, "tombstones", path)?;
            match read_entry(p, &entries, &path)? {
                Some(e) if omirr_core::expiry::expirable(&e, now, horizon_ns) => {
                    out.push((path, e));
                }
                // A stray row (verify reports those); the entry stays.
                _ => {}
            }
        }
        Ok(out)
    }

    /// Forgets each path that still holds the given version (a newer one
    /// recorded meanwhile stays), and raises the watermark by it; returns
    /// how many it forgot. For a host that reconciles with a peer, and
    /// for expiry.
    pub fn forget(&self, paths: &[(RelPath, Version)]) -> Result<usize, IndexError> {
        if paths.is_empty() {
            return Ok(0);
        }
        self.write(|t| t.forget(paths))
    }

    /// What this index has forgotten: its expiry watermark (zero if
    /// nothing), which its peers compare their cursors with.
    pub fn forgotten(&self) -> Result<Forgotten, IndexError> {
        let txn = self.read()?;
        let meta = self.table(&txn, META)?;
        let got = meta
            .get(META_FORGOTTEN)
            .at(&self.path, "reading the watermark")?;
        match got {
            None => Ok(Forgotten::default()),
            Some(v) => decode_forgotten(v.value())
                .ok_or_else(|| corrupt(&self.path, "the expiry watermark is not 16 bytes")),
        }
    }

    /// Every entry with its sequence, in path order, of the paths `keep`
    /// takes: what a host that reconciles with a peer holds in the sets
    /// they share (see [`omirr_core::expiry::reconcile`]).
    pub fn held(&self, keep: &dyn Fn(&RelPath) -> bool) -> Result<Vec<Held>, IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let entries = self.table(&txn, ENTRIES)?;
        let mut out = Vec::new();
        for row in entries.iter().at(p, "reading entries")? {
            let (k, v) = row.at(p, "reading entries")?;
            let path = decode_path(p, "entries", k.value())?;
            if !keep(&path) {
                continue;
            }
            let (seq, entry, _) =
                record::decode(v.value()).map_err(|e| bad_record(p, k.value(), e))?;
            out.push(Held { path, entry, seq });
        }
        Ok(out)
    }

    /// Whether this host must reconcile with `peer` (see
    /// [`omirr_core::expiry`]): set when it found its cursor below what
    /// the peer forgot, cleared when a reconciliation is complete. Kept
    /// across sessions and restarts, as an interrupted reconciliation
    /// starts again from the beginning.
    pub fn must_reconcile(&self, peer: &HostId) -> Result<bool, IndexError> {
        let txn = self.read()?;
        let table = match txn.open_table(RECONCILE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(e).at(&self.path, "opening a table"),
        };
        let got = table
            .get(peer.as_str())
            .at(&self.path, "reading a pending reconciliation")?;
        Ok(got.is_some())
    }

    /// Sets or clears [`Index::must_reconcile`] for `peer`.
    pub fn set_must_reconcile(&self, peer: &HostId, pending: bool) -> Result<(), IndexError> {
        self.write(|t| {
            let mut table = t.txn.open_table(RECONCILE).at(t.path, "opening a table")?;
            if pending {
                table
                    .insert(peer.as_str(), ())
                    .at(t.path, "writing a pending reconciliation")?;
            } else {
                table
                    .remove(peer.as_str())
                    .at(t.path, "clearing a pending reconciliation")?;
            }
            Ok(())
        })
    }
}
