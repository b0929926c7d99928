//! [`Index::verify`]: whether the tables agree with each other, for
//! tests and `omirrd check`.

use crate::error::{corrupt, decode_path, Ctx, IndexError};
use crate::index::{counter, Index};
use crate::record;
use crate::schema::{
    entry_inode_key, holder_key, loose_inode_key, tombstone_key, StatTuple, BY_SEQ, COUNTERS,
    ENTRIES, HLC_LAST, HOLDERS, INODES, LAST_SEQ, STATS, TOMBSTONES,
};
use omirr_core::StatKey;
use omirr_core::{Content, RelPath};
use redb::{ReadOnlyTable, ReadableTable, ReadableTableMetadata};
use std::path::Path;

impl Index {
    /// Checks that the tables agree with each other: every entry has its
    /// sequence row and its hash or tombstone row and nothing else does,
    /// sequences and the clock are at or above what the entries hold, and
    /// the inode table is exactly the stat table by inode. Reads all of
    /// the database; for tests and `omirrd check`, not for every start.
    pub fn verify(&self) -> Result<(), IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let counters = self.table(&txn, COUNTERS)?;
        let t = Checked {
            p,
            entries: self.table(&txn, ENTRIES)?,
            by_seq: self.table(&txn, BY_SEQ)?,
            holders: self.table(&txn, HOLDERS)?,
            tombstones: self.table(&txn, TOMBSTONES)?,
            stats: self.table(&txn, STATS)?,
            inodes: self.table(&txn, INODES)?,
            last_seq: counter(p, &counters, LAST_SEQ)?,
            hlc: counter(p, &counters, HLC_LAST)?,
        };
        let mut found = Found::default();
        for row in t.entries.iter().at(p, "scanning entries")? {
            let (k, v) = row.at(p, "scanning entries")?;
            t.check_entry(&mut found, k.value(), v.value())?;
        }
        for row in t.stats.iter().at(p, "scanning stats")? {
            let (k, v) = row.at(p, "scanning stats")?;
            t.check_loose_stat(&mut found, k.value(), StatKey::from(v.value()))?;
        }
        let mut problems = found.entry_problems;
        problems.append(&mut found.inode_problems);
        problems.extend(t.count_problems(found.files, found.deleted, found.stats)?);
        if problems.is_empty() {
            return Ok(());
        }
        let more = problems.len().saturating_sub(10);
        problems.truncate(10);
        let mut detail = problems.join("; ");
        if more > 0 {
            detail.push_str(&format!("; and {more} more"));
        }
        Err(corrupt(p, detail))
    }
}

/// The tables [`Index::verify`] reads, from one read transaction, and
/// the counters as they were then.
struct Checked<'a> {
    p: &'a Path,
    entries: ReadOnlyTable<&'static [u8], &'static [u8]>,
    by_seq: ReadOnlyTable<u64, &'static [u8]>,
    holders: ReadOnlyTable<&'static [u8], ()>,
    tombstones: ReadOnlyTable<&'static [u8], ()>,
    stats: ReadOnlyTable<&'static [u8], StatTuple>,
    inodes: ReadOnlyTable<&'static [u8], ()>,
    last_seq: u64,
    hlc: u64,
}

/// What [`Index::verify`] found and counted so far.
#[derive(Default)]
struct Found {
    /// Problems of entries and their rows, reported first.
    entry_problems: Vec<String>,
    /// Stats whose inode row is missing.
    inode_problems: Vec<String>,
    files: u64,
    deleted: u64,
    stats: u64,
}

impl Checked<'_> {
    /// Checks the entry at `key` against the counters and its rows in the
    /// other tables.
    fn check_entry(&self, found: &mut Found, key: &[u8], value: &[u8]) -> Result<(), IndexError> {
        let p = self.p;
        let path = decode_path(p, "entries", key)?;
        let problems = &mut found.entry_problems;
        let (seq, entry, stat) = match record::decode(value) {
            Ok(st) => st,
            Err(e) => {
                problems.push(format!("the entry for {path} does not decode: {e}"));
                return Ok(());
            }
        };
        let (last_seq, hlc) = (self.last_seq, self.hlc);
        if seq > last_seq {
            problems.push(format!("{path} is at {seq} above last_seq {last_seq}"));
        }
        if entry.version.ts.0 > hlc {
            problems.push(format!(
                "{path}'s version {} is above the clock {hlc}",
                entry.version
            ));
        }
        let back = self.by_seq.get(seq).at(p, "reading sequences")?;
        if back.as_ref().map(|g| g.value()) != Some(path.as_bytes()) {
            problems.push(format!("{path} is at {seq} but by_seq does not say so"));
        }
        match &entry.content {
            Content::File { hash, .. } => {
                found.files += 1;
                let k = holder_key(hash, seq);
                if self
                    .holders
                    .get(k.as_slice())
                    .at(p, "reading holders")?
                    .is_none()
                {
                    problems.push(format!("{path} is not among its hash's holders"));
                }
            }
            Content::Deleted => {
                found.deleted += 1;
                let k = tombstone_key(entry.version.ts.0, &path);
                if self
                    .tombstones
                    .get(k.as_slice())
                    .at(p, "reading tombstones")?
                    .is_none()
                {
                    problems.push(format!("{path} is deleted but not among the tombstones"));
                }
            }
            Content::Dir | Content::Symlink { .. } | Content::Fifo => {}
        }
        if let Some(s) = stat {
            self.has_inode(found, &path, &s, entry_inode_key(s.ino, seq))?;
        }
        Ok(())
    }

    /// Checks the stat kept apart at `key`: its path has no entry, and
    /// its inode row is there.
    fn check_loose_stat(
        &self,
        found: &mut Found,
        key: &[u8],
        s: StatKey,
    ) -> Result<(), IndexError> {
        let p = self.p;
        let path = decode_path(p, "stats", key)?;
        if self.entries.get(key).at(p, "reading an entry")?.is_some() {
            (found.entry_problems).push(format!("{path} has a stat both in its entry and apart"));
        }
        self.has_inode(found, &path, &s, loose_inode_key(s.ino, &path))
    }

    fn has_inode(
        &self,
        found: &mut Found,
        path: &RelPath,
        s: &StatKey,
        key: Vec<u8>,
    ) -> Result<(), IndexError> {
        found.stats += 1;
        if (self.inodes.get(key.as_slice()))
            .at(self.p, "reading inodes")?
            .is_none()
        {
            found.inode_problems.push(format!(
                "{path}'s inode {}:{} is not in the inode table",
                s.dev, s.ino
            ));
        }
        Ok(())
    }

    /// Each entry found its own rows; equal counts mean there are no
    /// rows without an entry.
    fn count_problems(
        &self,
        files: u64,
        deleted: u64,
        stat_count: u64,
    ) -> Result<Vec<String>, IndexError> {
        let p = self.p;
        let mut problems = Vec::new();
        let n = self.entries.len().at(p, "counting entries")?;
        let counts = [
            ("by_seq", self.by_seq.len().at(p, "counting")?, n),
            ("holders", self.holders.len().at(p, "counting")?, files),
            (
                "tombstones",
                self.tombstones.len().at(p, "counting")?,
                deleted,
            ),
        ];
        for (table, rows, want) in counts {
            if rows != want {
                problems.push(format!("{table} has {rows} rows for {want} entries"));
            }
        }
        let inode_count = self.inodes.len().at(p, "counting")?;
        if inode_count != stat_count {
            problems.push(format!(
                "inodes has {inode_count} rows for {stat_count} stats"
            ));
        }
        Ok(problems)
    }
}
