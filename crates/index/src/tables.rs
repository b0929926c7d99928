//! [`Tables`]: every table open in one write transaction, and the
//! bookkeeping that keeps them in step (an entry's sequence, holder,
//! tombstone and inode rows; the counters; each host's latest version).

use crate::batch::StatUpdate;
use crate::error::{bad_record, corrupt, Ctx, IndexError};
use crate::index::counter;
use crate::pending::{Pending, PENDING_ROWS};
use crate::record;
use crate::schema::{
    decode_forgotten, encode_forgotten, entry_inode_key, holder_key, loose_inode_key,
    tombstone_key, StatTuple, BY_SEQ, COUNTERS, CURSORS, ENTRIES, HLC_LAST, HOLDERS, INODES,
    LAST_SEQ, LATEST, META, META_FORGOTTEN, STATS, TOMBSTONES,
};
use omirr_core::expiry::Forgotten;
use omirr_core::StatKey;
use omirr_core::{Change, Content, Entry, HostId, RelPath, Seq, Version};
use redb::{ReadableTable, Table, WriteTransaction};
use std::path::Path;

/// Every table, open in one write transaction, and the counters as the
/// transaction changes them (written back by [`Tables::finish`]).
pub(crate) struct Tables<'t> {
    pub(crate) path: &'t Path,
    pub(crate) txn: &'t WriteTransaction,
    entries: Table<'t, &'static [u8], &'static [u8]>,
    by_seq: Table<'t, u64, &'static [u8]>,
    holders: Table<'t, &'static [u8], ()>,
    tombstones: Table<'t, &'static [u8], ()>,
    counters: Table<'t, &'static str, u64>,
    cursors: Table<'t, &'static str, u64>,
    stats: Table<'t, &'static [u8], StatTuple>,
    inodes: Table<'t, &'static [u8], ()>,
    pending_entries: Pending<Vec<u8>, Vec<u8>>,
    pending_by_seq: Pending<u64, Vec<u8>>,
    pending_holders: Pending<Vec<u8>, ()>,
    pending_stats: Pending<Vec<u8>, StatKey>,
    pending_inodes: Pending<Vec<u8>, ()>,
    last_seq: Seq,
    pub(crate) hlc: u64,
    /// The counters as read, to write back only what changed.
    was: (Seq, u64),
    /// Per host, the greatest timestamp of its versions recorded in this
    /// transaction (merged into [`LATEST`] by [`Tables::finish`]).
    latest: std::collections::HashMap<omirr_core::HostId, u64>,
}

/// A path's entry value, decoded.
type Record = (Seq, Entry, Option<StatKey>);

impl<'t> Tables<'t> {
    pub(crate) fn open(p: &'t Path, txn: &'t WriteTransaction) -> Result<Tables<'t>, IndexError> {
        let what = "opening a table";
        let counters = txn.open_table(COUNTERS).at(p, what)?;
        let last_seq = counter(p, &counters, LAST_SEQ)?;
        let hlc = counter(p, &counters, HLC_LAST)?;
        Ok(Tables {
            path: p,
            txn,
            entries: txn.open_table(ENTRIES).at(p, what)?,
            by_seq: txn.open_table(BY_SEQ).at(p, what)?,
            holders: txn.open_table(HOLDERS).at(p, what)?,
            tombstones: txn.open_table(TOMBSTONES).at(p, what)?,
            counters,
            cursors: txn.open_table(CURSORS).at(p, what)?,
            stats: txn.open_table(STATS).at(p, what)?,
            inodes: txn.open_table(INODES).at(p, what)?,
            pending_entries: Pending::new(),
            pending_by_seq: Pending::new(),
            pending_holders: Pending::new(),
            pending_stats: Pending::new(),
            pending_inodes: Pending::new(),
            last_seq,
            hlc,
            was: (last_seq, hlc),
            latest: std::collections::HashMap::new(),
        })
    }

    /// Applies the held-back writes to the tables.
    fn flush(&mut self) -> Result<(), IndexError> {
        let p = self.path;
        let (gone, put) = self.pending_entries.drain();
        for k in gone {
            self.entries.remove(&k[..]).at(p, "removing an entry")?;
        }
        for (k, v) in put {
            self.entries
                .insert(&k[..], &v[..])
                .at(p, "writing an entry")?;
        }
        let (gone, put) = self.pending_by_seq.drain();
        for k in gone {
            // A missing row is tolerated (verify reports it): failing
            // would wedge every later batch that touches its path.
            self.by_seq.remove(k).at(p, "removing an old sequence")?;
        }
        for (k, v) in put {
            self.by_seq.insert(k, &v[..]).at(p, "writing a sequence")?;
        }
        let (gone, put) = self.pending_holders.drain();
        for k in gone {
            self.holders.remove(&k[..]).at(p, "removing a holder")?;
        }
        for (k, ()) in put {
            self.holders.insert(&k[..], ()).at(p, "writing a holder")?;
        }
        let (gone, put) = self.pending_stats.drain();
        for k in gone {
            self.stats.remove(&k[..]).at(p, "removing a stat")?;
        }
        for (k, v) in put {
            self.stats
                .insert(&k[..], StatTuple::from(v))
                .at(p, "writing a stat")?;
        }
        let (gone, put) = self.pending_inodes.drain();
        for k in gone {
            self.inodes.remove(&k[..]).at(p, "removing an inode")?;
        }
        for (k, ()) in put {
            self.inodes.insert(&k[..], ()).at(p, "writing an inode")?;
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self) -> Result<(), IndexError> {
        let p = self.path;
        self.flush()?;
        if self.last_seq != self.was.0 {
            self.counters
                .insert(LAST_SEQ, self.last_seq)
                .at(p, "writing last_seq")?;
        }
        if self.hlc != self.was.1 {
            self.counters
                .insert(HLC_LAST, self.hlc)
                .at(p, "writing the clock")?;
        }
        if !self.latest.is_empty() {
            let mut table = self.txn.open_table(LATEST).at(p, "opening a table")?;
            for (host, ts) in self.latest.drain() {
                let was = table
                    .get(host.as_str())
                    .at(p, "reading a host's latest version")?
                    .map_or(0, |g| g.value());
                if ts > was {
                    table
                        .insert(host.as_str(), ts)
                        .at(p, "writing a host's latest version")?;
                }
            }
        }
        Ok(())
    }

    /// `path`'s entry value as this transaction has it.
    fn record_of(&self, path: &[u8]) -> Result<Option<Record>, IndexError> {
        let p = self.path;
        if let Some(v) = self.pending_entries.rows.get(path) {
            return v
                .as_deref()
                .map(|b| record::decode(b).map_err(|e| bad_record(p, path, e)))
                .transpose();
        }
        match self.entries.get(path).at(p, "reading an entry")? {
            None => Ok(None),
            Some(g) => record::decode(g.value())
                .map(Some)
                .map_err(|e| bad_record(p, path, e)),
        }
    }

    fn put_record(&mut self, path: &RelPath, seq: Seq, entry: &Entry, stat: Option<&StatKey>) {
        self.pending_entries
            .put(path.as_bytes().to_vec(), record::encode(seq, entry, stat));
    }

    /// The stat of `path` kept apart because it has no entry.
    fn loose_stat(&self, path: &[u8]) -> Result<Option<StatKey>, IndexError> {
        if let Some(v) = self.pending_stats.rows.get(path) {
            return Ok(*v);
        }
        let got = self.stats.get(path).at(self.path, "reading a stat")?;
        Ok(got.map(|g| StatKey::from(g.value())))
    }

    pub(crate) fn record(
        &mut self,
        change: &Change,
        stat: StatUpdate,
    ) -> Result<Option<Seq>, IndexError> {
        let p = self.path;
        let (path, entry) = (&change.path, &change.entry);
        self.hlc = self.hlc.max(entry.version.ts.0);
        let old = self.record_of(path.as_bytes())?;
        if let Some((_, old_entry, _)) = &old {
            if old_entry.version >= entry.version {
                if old_entry == entry {
                    self.stat_update(path, stat)?;
                } else if stat != StatUpdate::Keep {
                    self.update_stat(path, None)?;
                }
                return Ok(None);
            }
        }
        // The stat the path has now: in the entry replaced, or kept apart
        // while the path had no entry (it moves into the new entry).
        // Its rows keyed by the old sequence (or by the path) go.
        let had_stat = match &old {
            Some((old_seq, old_entry, old_stat)) => {
                self.pending_by_seq.remove(*old_seq);
                self.unindex(path, *old_seq, old_entry)?;
                if let Some(s) = old_stat {
                    self.pending_inodes.remove(entry_inode_key(s.ino, *old_seq));
                }
                *old_stat
            }
            None => {
                let loose = self.loose_stat(path.as_bytes())?;
                if let Some(s) = loose {
                    self.pending_stats.remove(path.as_bytes().to_vec());
                    self.pending_inodes.remove(loose_inode_key(s.ino, path));
                }
                loose
            }
        };
        let seq = self
            .last_seq
            .checked_add(1)
            .ok_or_else(|| corrupt(p, "last_seq is at its maximum"))?;
        self.last_seq = seq;
        let ts = entry.version.ts.0;
        match self.latest.get_mut(&entry.version.host) {
            Some(t) => *t = (*t).max(ts),
            None => {
                self.latest.insert(entry.version.host.clone(), ts);
            }
        }
        let new_stat = match stat {
            StatUpdate::Keep => had_stat,
            StatUpdate::Set(k) => Some(k),
            StatUpdate::Forget => None,
        };
        self.put_record(path, seq, entry, new_stat.as_ref());
        self.pending_by_seq.put(seq, path.as_bytes().to_vec());
        match &entry.content {
            Content::File { hash, .. } => self.pending_holders.put(holder_key(hash, seq), ()),
            Content::Deleted => {
                self.tombstones
                    .insert(tombstone_key(entry.version.ts.0, path).as_slice(), ())
                    .at(p, "writing a tombstone")?;
            }
            Content::Dir | Content::Symlink { .. } | Content::Fifo => {}
        }
        if let Some(s) = new_stat {
            self.pending_inodes.put(entry_inode_key(s.ino, seq), ());
        }
        if self.pending_entries.rows.len() >= PENDING_ROWS {
            self.flush()?;
        }
        Ok(Some(seq))
    }

    /// Removes the secondary rows of `old`, the entry being replaced.
    fn unindex(&mut self, path: &RelPath, seq: Seq, old: &Entry) -> Result<(), IndexError> {
        match &old.content {
            Content::File { hash, .. } => self.pending_holders.remove(holder_key(hash, seq)),
            Content::Deleted => {
                // Tombstones are few: written through, not held back.
                self.tombstones
                    .remove(tombstone_key(old.version.ts.0, path).as_slice())
                    .at(self.path, "removing a tombstone")?;
            }
            Content::Dir | Content::Symlink { .. } | Content::Fifo => {}
        }
        Ok(())
    }

    fn stat_update(&mut self, path: &RelPath, stat: StatUpdate) -> Result<(), IndexError> {
        match stat {
            StatUpdate::Keep => Ok(()),
            StatUpdate::Set(k) => self.update_stat(path, Some(k)),
            StatUpdate::Forget => self.update_stat(path, None),
        }
    }

    /// Sets or drops `path`'s stat, keeping the inode table in step.
    pub(crate) fn update_stat(
        &mut self,
        path: &RelPath,
        stat: Option<StatKey>,
    ) -> Result<(), IndexError> {
        let ino = |s: Option<StatKey>| s.map(|k| k.ino);
        match self.record_of(path.as_bytes())? {
            Some((seq, entry, old)) => {
                if old != stat {
                    self.put_record(path, seq, &entry, stat.as_ref());
                }
                if ino(old) != ino(stat) {
                    if let Some(o) = old {
                        self.pending_inodes.remove(entry_inode_key(o.ino, seq));
                    }
                    if let Some(n) = stat {
                        self.pending_inodes.put(entry_inode_key(n.ino, seq), ());
                    }
                }
            }
            None => {
                let old = self.loose_stat(path.as_bytes())?;
                match stat {
                    Some(k) => self.pending_stats.put(path.as_bytes().to_vec(), k),
                    None if old.is_some() => self.pending_stats.remove(path.as_bytes().to_vec()),
                    None => {}
                }
                if ino(old) != ino(stat) {
                    if let Some(o) = old {
                        self.pending_inodes.remove(loose_inode_key(o.ino, path));
                    }
                    if let Some(n) = stat {
                        self.pending_inodes.put(loose_inode_key(n.ino, path), ());
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn set_cursor(&mut self, peer: &HostId, seq: Seq) -> Result<(), IndexError> {
        self.cursors
            .insert(peer.as_str(), seq)
            .at(self.path, "writing a cursor")?;
        Ok(())
    }

    /// Forgets each path that still holds the given version, and raises
    /// the watermark in [`META`] by each; returns how many.
    pub(crate) fn forget(&mut self, paths: &[(RelPath, Version)]) -> Result<usize, IndexError> {
        let p = self.path;
        let mut n = 0;
        let mut forgot = Forgotten::default();
        for (path, version) in paths {
            let (seq, entry, stat) = match self.record_of(path.as_bytes())? {
                Some(r) if r.1.version == *version => r,
                // A newer version since, or gone: it stays.
                _ => continue,
            };
            if !entry.is_live() {
                self.tombstones
                    .remove(tombstone_key(entry.version.ts.0, path).as_slice())
                    .at(p, "removing a tombstone")?;
            }
            if let Content::File { hash, .. } = &entry.content {
                self.pending_holders.remove(holder_key(hash, seq));
            }
            forgot.add(seq, version);
            self.pending_entries.remove(path.as_bytes().to_vec());
            self.pending_by_seq.remove(seq);
            // The stat outlives the entry, kept apart from now on.
            if let Some(stat) = stat {
                self.pending_stats.put(path.as_bytes().to_vec(), stat);
                self.pending_inodes.remove(entry_inode_key(stat.ino, seq));
                self.pending_inodes.put(loose_inode_key(stat.ino, path), ());
            }
            n += 1;
        }
        if n > 0 {
            let mut meta = self.txn.open_table(META).at(p, "opening a table")?;
            let was = match meta.get(META_FORGOTTEN).at(p, "reading the watermark")? {
                None => Forgotten::default(),
                Some(v) => decode_forgotten(v.value())
                    .ok_or_else(|| corrupt(p, "the expiry watermark is not 16 bytes"))?,
            };
            let now = encode_forgotten(&was.max(forgot));
            meta.insert(META_FORGOTTEN, &now[..])
                .at(p, "writing the watermark")?;
        }
        Ok(n)
    }
}
