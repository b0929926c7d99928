//! Reading, one read transaction per call: the feed peers resume from,
//! the counters, the stat and inode caches, and [`IndexView`] for the
//! core's rules. [`crate::IndexReader`] answers the same from one
//! transaction for many lookups.

use crate::error::Ctx;
use crate::error::IndexError;
use crate::index::{counter, Index};
use crate::reader::{
    read_below, read_entry, read_holder_of, read_inode_paths, read_since, read_stat,
    read_stats_below,
};
use crate::schema::{BY_SEQ, COUNTERS, ENTRIES, HLC_LAST, HOLDERS, INODES, LAST_SEQ, STATS};
use omirr_core::StatKey;
use omirr_core::{Change, Entry, Hash, IndexView, RelPath, Seq, Timestamp};
use redb::ReadableTableMetadata;

impl Index {
    /// At most `limit` entries recorded after `seq`, in sequence order:
    /// call again from the last sequence returned for the next page. Only
    /// each path's latest sequence is kept, so a path appears once, at
    /// its latest change.
    pub fn since(&self, seq: Seq, limit: usize) -> Result<Vec<(Seq, Change)>, IndexError> {
        let txn = self.read()?;
        let by_seq = self.table(&txn, BY_SEQ)?;
        let entries = self.table(&txn, ENTRIES)?;
        read_since(&self.path, &entries, &by_seq, seq, limit)
    }

    /// [`Index::since`] and [`Index::last_seq`] read in one transaction,
    /// so that both describe the same moment: with the page empty, a last
    /// sequence above `seq` means the sequences between are gone (each
    /// path keeps only its latest, and expiry forgets), never that they
    /// were committed between two reads.
    pub fn since_and_last(
        &self,
        seq: Seq,
        limit: usize,
    ) -> Result<(Vec<(Seq, Change)>, Seq), IndexError> {
        let txn = self.read()?;
        let by_seq = self.table(&txn, BY_SEQ)?;
        let entries = self.table(&txn, ENTRIES)?;
        let page = read_since(&self.path, &entries, &by_seq, seq, limit)?;
        let last = counter(&self.path, &self.table(&txn, COUNTERS)?, LAST_SEQ)?;
        Ok((page, last))
    }

    /// The last local sequence issued; 0 for a new index.
    pub fn last_seq(&self) -> Result<Seq, IndexError> {
        let txn = self.read()?;
        counter(&self.path, &self.table(&txn, COUNTERS)?, LAST_SEQ)
    }

    /// How many paths have an entry, tombstones included.
    pub fn len(&self) -> Result<u64, IndexError> {
        let txn = self.read()?;
        self.table(&txn, ENTRIES)?
            .len()
            .at(&self.path, "counting entries")
    }

    /// Whether no path has an entry, tombstones included.
    pub fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self.len()? == 0)
    }

    /// The greatest timestamp the clock has issued or seen, as far as the
    /// index knows: at or above every version ever passed to a record
    /// method, and every value given to [`Index::set_hlc_last`]. Restart
    /// the clock with `Hlc::starting_at(index.hlc_last()?)`.
    pub fn hlc_last(&self) -> Result<Timestamp, IndexError> {
        let txn = self.read()?;
        counter(&self.path, &self.table(&txn, COUNTERS)?, HLC_LAST).map(Timestamp)
    }

    /// `path`'s cached stat.
    pub fn stat(&self, path: &RelPath) -> Result<Option<StatKey>, IndexError> {
        let txn = self.read()?;
        let entries = self.table(&txn, ENTRIES)?;
        let stats = self.table(&txn, STATS)?;
        read_stat(&self.path, &entries, &stats, path.as_bytes())
    }

    /// Every cached stat strictly below `dir` (everything but the root's
    /// own for the root), in path order: one range scan.
    pub fn stats_below(&self, dir: &RelPath) -> Result<Vec<(RelPath, StatKey)>, IndexError> {
        let txn = self.read()?;
        let entries = self.table(&txn, ENTRIES)?;
        let stats = self.table(&txn, STATS)?;
        read_stats_below(&self.path, &entries, &stats, dir)
    }

    /// A path whose cached stat has this inode: the first in path order
    /// if several do (hard links). The inode cache holds every path with
    /// a cached stat, so it is exactly the stat cache seen by inode.
    pub fn path_of_inode(&self, dev: u64, ino: u64) -> Result<Option<RelPath>, IndexError> {
        Ok(self.inode_paths(dev, ino, 1)?.into_iter().next())
    }

    /// Every path whose cached stat has this inode, in path order: more
    /// than one for hard links.
    pub fn paths_of_inode(&self, dev: u64, ino: u64) -> Result<Vec<RelPath>, IndexError> {
        self.inode_paths(dev, ino, usize::MAX)
    }

    fn inode_paths(&self, dev: u64, ino: u64, limit: usize) -> Result<Vec<RelPath>, IndexError> {
        let txn = self.read()?;
        let entries = self.table(&txn, ENTRIES)?;
        let by_seq = self.table(&txn, BY_SEQ)?;
        let stats = self.table(&txn, STATS)?;
        let inodes = self.table(&txn, INODES)?;
        let tables = (&entries, &by_seq, &stats, &inodes);
        read_inode_paths(&self.path, tables, dev, ino, limit)
    }
}

impl IndexView for Index {
    type Error = IndexError;

    fn entry(&self, path: &RelPath) -> Result<Option<Entry>, IndexError> {
        let txn = self.read()?;
        read_entry(&self.path, &self.table(&txn, ENTRIES)?, path)
    }

    fn below(&self, dir: &RelPath) -> Result<Vec<(RelPath, Entry)>, IndexError> {
        let txn = self.read()?;
        read_below(&self.path, &self.table(&txn, ENTRIES)?, dir)
    }

    /// The first holder in path order, as [`omirr_core::mem::MemIndex`]
    /// answers.
    fn holder_of(&self, hash: &Hash) -> Result<Option<RelPath>, IndexError> {
        let txn = self.read()?;
        let entries = self.table(&txn, ENTRIES)?;
        let by_seq = self.table(&txn, BY_SEQ)?;
        let holders = self.table(&txn, HOLDERS)?;
        read_holder_of(&self.path, &entries, &by_seq, &holders, hash)
    }
}
