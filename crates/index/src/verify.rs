//! [`Index::verify`]: whether the tables agree with each other, for
//! tests and `omirrd check`.

use crate::error::{corrupt, decode_path, Ctx, IndexError};
use crate::index::{counter, Index};
use crate::record;
use crate::schema::{
    entry_inode_key, holder_key, loose_inode_key, tombstone_key, BY_SEQ, COUNTERS, ENTRIES,
    HLC_LAST, HOLDERS, INODES, LAST_SEQ, STATS, TOMBSTONES,
};
use crate::stat::StatKey;
use omirr_core::{Content, RelPath};
use redb::{ReadableTable, ReadableTableMetadata};

impl Index {
    /// Checks that the tables agree with each other: every entry has its
    /// sequence row and its hash or tombstone row and nothing else does,
    /// sequences and the clock are at or above what the entries hold, and
    /// the inode table is exactly the stat table by inode. Reads all of
    /// the database; for tests and `omirrd check`, not for every start.
    pub fn verify(&self) -> Result<(), IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let entries = self.table(&txn, ENTRIES)?;
        let by_seq = self.table(&txn, BY_SEQ)?;
        let holders = self.table(&txn, HOLDERS)?;
        let tombstones = self.table(&txn, TOMBSTONES)?;
        let counters = self.table(&txn, COUNTERS)?;
        let stats = self.table(&txn, STATS)?;
        let inodes = self.table(&txn, INODES)?;
        let last_seq = counter(p, &counters, LAST_SEQ)?;
        let hlc = counter(p, &counters, HLC_LAST)?;

        let mut problems: Vec<String> = Vec::new();
        let mut files = 0u64;
        let mut deleted = 0u64;
        let mut stat_count = 0u64;
        let mut has_inode = |path: &RelPath, s: &StatKey, ik: Vec<u8>| -> Result<(), IndexError> {
            stat_count += 1;
            if inodes.get(ik.as_slice()).at(p, "reading inodes")?.is_none() {
                problems.push(format!(
                    "{path}'s inode {}:{} is not in the inode table",
                    s.dev, s.ino
                ));
            }
            Ok(())
        };
        let mut entry_problems = Vec::new();
        for row in entries.iter().at(p, "scanning entries")? {
            let (k, v) = row.at(p, "scanning entries")?;
            let path = decode_path(p, "entries", k.value())?;
            let (seq, entry, stat) = match record::decode(v.value()) {
                Ok(st) => st,
                Err(e) => {
                    entry_problems.push(format!("the entry for {path} does not decode: {e}"));
                    continue;
                }
            };
            if seq > last_seq {
                entry_problems.push(format!("{path} is at {seq} above last_seq {last_seq}"));
            }
            if entry.version.ts.0 > hlc {
                entry_problems.push(format!(
                    "{path}'s version {} is above the clock {hlc}",
                    entry.version
                ));
            }
            let back = by_seq.get(seq).at(p, "reading sequences")?;
            if back.as_ref().map(|g| g.value()) != Some(path.as_bytes()) {
                entry_problems.push(format!("{path} is at {seq} but by_seq does not say so"));
            }
            match &entry.content {
                Content::File { hash, .. } => {
                    files += 1;
                    let k = holder_key(hash, seq);
                    if holders
                        .get(k.as_slice())
                        .at(p, "reading holders")?
                        .is_none()
                    {
                        entry_problems.push(format!("{path} is not among its hash's holders"));
                    }
                }
                Content::Deleted => {
                    deleted += 1;
                    let k = tombstone_key(entry.version.ts.0, &path);
                    if tombstones
                        .get(k.as_slice())
                        .at(p, "reading tombstones")?
                        .is_none()
                    {
                        entry_problems
                            .push(format!("{path} is deleted but not among the tombstones"));
                    }
                }
                Content::Dir | Content::Symlink { .. } | Content::Fifo => {}
            }
            if let Some(s) = stat {
                has_inode(&path, &s, entry_inode_key(s.ino, seq))?;
            }
        }
        for row in stats.iter().at(p, "scanning stats")? {
            let (k, v) = row.at(p, "scanning stats")?;
            let path = decode_path(p, "stats", k.value())?;
            if entries.get(k.value()).at(p, "reading an entry")?.is_some() {
                entry_problems.push(format!("{path} has a stat both in its entry and apart"));
            }
            let s = StatKey::from(v.value());
            has_inode(&path, &s, loose_inode_key(s.ino, &path))?;
        }
        problems.splice(0..0, entry_problems);
        // Each entry found its own row above; equal counts mean there are
        // no rows without an entry.
        let n = entries.len().at(p, "counting entries")?;
        let counts = [
            ("by_seq", by_seq.len().at(p, "counting")?, n),
            ("holders", holders.len().at(p, "counting")?, files),
            ("tombstones", tombstones.len().at(p, "counting")?, deleted),
        ];
        for (table, rows, want) in counts {
            if rows != want {
                problems.push(format!("{table} has {rows} rows for {want} entries"));
            }
        }
        let inode_count = inodes.len().at(p, "counting")?;
        if inode_count != stat_count {
            problems.push(format!(
                "inodes has {inode_count} rows for {stat_count} stats"
            ));
        }
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
