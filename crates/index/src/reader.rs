//! Reading the tables: the lookups every read path shares, and
//! [`IndexReader`], many of them in one read transaction.

use crate::error::{bad_record, corrupt, decode_path, Ctx, IndexError};
use crate::index::Index;
use crate::record::RawRecord;
use crate::schema::{
    holder_seq, inode_of, inode_prefix, InodeOf, BY_SEQ, ENTRIES, HOLDERS, HOLDER_PREFIX, INODES,
    STATS,
};
use omirr_core::StatKey;
use omirr_core::{Change, Entry, Hash, IndexView, RelPath, Seq};
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable};
use std::ops::Bound;
use std::path::Path;

pub(crate) type EntriesTable = ReadOnlyTable<&'static [u8], &'static [u8]>;
pub(crate) type StatsTable = ReadOnlyTable<&'static [u8], crate::schema::StatTuple>;

/// Runs `f` on `path`'s parsed entry value, if it has one.
pub(crate) fn with_record<R>(
    db: &Path,
    entries: &impl ReadableTable<&'static [u8], &'static [u8]>,
    path: &[u8],
    f: impl FnOnce(RawRecord<'_>) -> R,
) -> Result<Option<R>, IndexError> {
    match entries.get(path).at(db, "reading an entry")? {
        None => Ok(None),
        Some(g) => {
            let raw = RawRecord::parse(g.value()).map_err(|e| bad_record(db, path, e))?;
            Ok(Some(f(raw)))
        }
    }
}

pub(crate) fn read_entry(
    db: &Path,
    entries: &impl ReadableTable<&'static [u8], &'static [u8]>,
    path: &RelPath,
) -> Result<Option<Entry>, IndexError> {
    with_record(db, entries, path.as_bytes(), |r| r.entry())
}

/// `path`'s cached stat: in its entry if it has one, else among the
/// stats of paths without an entry.
pub(crate) fn read_stat(
    db: &Path,
    entries: &impl ReadableTable<&'static [u8], &'static [u8]>,
    stats: &impl ReadableTable<&'static [u8], crate::schema::StatTuple>,
    path: &[u8],
) -> Result<Option<StatKey>, IndexError> {
    if let Some(s) = with_record(db, entries, path, |r| r.stat)? {
        return Ok(s);
    }
    let got = stats.get(path).at(db, "reading a stat")?;
    Ok(got.map(|g| StatKey::from(g.value())))
}

fn bytes_range(r: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (
        r.0.as_ref().map(Vec::as_slice),
        r.1.as_ref().map(Vec::as_slice),
    )
}

pub(crate) fn read_below(
    db: &Path,
    entries: &impl ReadableTable<&'static [u8], &'static [u8]>,
    dir: &RelPath,
) -> Result<Vec<(RelPath, Entry)>, IndexError> {
    let range = dir.below_range();
    let mut out = Vec::new();
    for row in entries
        .range::<&[u8]>(bytes_range(&range))
        .at(db, "scanning entries")?
    {
        let (k, v) = row.at(db, "scanning entries")?;
        let raw = RawRecord::parse(v.value()).map_err(|e| bad_record(db, k.value(), e))?;
        out.push((decode_path(db, "entries", k.value())?, raw.entry()));
    }
    Ok(out)
}

pub(crate) fn read_stats_below(
    db: &Path,
    entries: &impl ReadableTable<&'static [u8], &'static [u8]>,
    stats: &impl ReadableTable<&'static [u8], crate::schema::StatTuple>,
    dir: &RelPath,
) -> Result<Vec<(RelPath, StatKey)>, IndexError> {
    let range = dir.below_range();
    let mut in_entries = Vec::new();
    for row in entries
        .range::<&[u8]>(bytes_range(&range))
        .at(db, "scanning entries")?
    {
        let (k, v) = row.at(db, "scanning entries")?;
        let raw = RawRecord::parse(v.value()).map_err(|e| bad_record(db, k.value(), e))?;
        if let Some(s) = raw.stat {
            in_entries.push((decode_path(db, "entries", k.value())?, s));
        }
    }
    let mut loose = Vec::new();
    for row in stats
        .range::<&[u8]>(bytes_range(&range))
        .at(db, "scanning stats")?
    {
        let (k, v) = row.at(db, "scanning stats")?;
        loose.push((
            decode_path(db, "stats", k.value())?,
            StatKey::from(v.value()),
        ));
    }
    if loose.is_empty() {
        return Ok(in_entries);
    }
    // Both are in path order; the paths are distinct (a path with an
    // entry keeps its stat there), so a merge keeps the order.
    let mut out = Vec::with_capacity(in_entries.len() + loose.len());
    let (mut a, mut b) = (
        in_entries.into_iter().peekable(),
        loose.into_iter().peekable(),
    );
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.0 <= y.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.next() } else { b.next() };
        out.extend(next);
    }
    Ok(out)
}

/// Keys of `table` that start with `prefix`, in order.
fn with_prefix<V: redb::Value + 'static>(
    db: &Path,
    table: &impl ReadableTable<&'static [u8], V>,
    prefix: &[u8],
    mut each: impl FnMut(&[u8]) -> Result<bool, IndexError>,
) -> Result<(), IndexError> {
    for row in table.range(prefix..).at(db, "scanning a table")? {
        let (k, _) = row.at(db, "scanning a table")?;
        if !k.value().starts_with(prefix) || !each(k.value())? {
            break;
        }
    }
    Ok(())
}

/// The path at `seq`, if its entry is still there: `check` says whether
/// the entry is the one wanted.
fn path_at(
    db: &Path,
    entries: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_seq: &impl ReadableTable<u64, &'static [u8]>,
    seq: Seq,
    check: impl FnOnce(&RawRecord<'_>) -> bool,
) -> Result<Option<RelPath>, IndexError> {
    let Some(path) = by_seq.get(seq).at(db, "reading sequences")? else {
        return Ok(None);
    };
    let path = path.value();
    if with_record(db, entries, path, |r| r.seq == seq && check(&r))? == Some(true) {
        return decode_path(db, "by_seq", path).map(Some);
    }
    Ok(None)
}

/// The first path in path order whose entry is a live file with `hash`.
pub(crate) fn read_holder_of(
    db: &Path,
    entries: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_seq: &impl ReadableTable<u64, &'static [u8]>,
    holders: &impl ReadableTable<&'static [u8], ()>,
    hash: &Hash,
) -> Result<Option<RelPath>, IndexError> {
    let mut found: Option<RelPath> = None;
    with_prefix(db, holders, &hash[..HOLDER_PREFIX], |k| {
        let seq = holder_seq(k).ok_or_else(|| corrupt(db, "a holders key is malformed"))?;
        // Another hash with the same prefix is skipped by the check.
        let path = path_at(db, entries, by_seq, seq, |r| r.hash() == Some(&hash[..]))?;
        if let Some(path) = path {
            if found.as_ref().is_none_or(|f| path < *f) {
                found = Some(path);
            }
        }
        Ok(true)
    })?;
    Ok(found)
}

/// Paths whose cached stat has this device and inode, in path order, at
/// most `limit`.
pub(crate) fn read_inode_paths(
    db: &Path,
    tables: (
        &impl ReadableTable<&'static [u8], &'static [u8]>,
        &impl ReadableTable<u64, &'static [u8]>,
        &impl ReadableTable<&'static [u8], crate::schema::StatTuple>,
        &impl ReadableTable<&'static [u8], ()>,
    ),
    dev: u64,
    ino: u64,
    limit: usize,
) -> Result<Vec<RelPath>, IndexError> {
    let (entries, by_seq, stats, inodes) = tables;
    let mut out = Vec::new();
    let prefix = inode_prefix(ino);
    // The key holds the inode only: a file of another device with the
    // same inode number is skipped by the checks.
    let same = |s: &StatKey| s.dev == dev && s.ino == ino;
    with_prefix(db, inodes, &prefix, |k| {
        let rest = &k[prefix.len()..];
        match inode_of(rest).ok_or_else(|| corrupt(db, "an inodes key is malformed"))? {
            InodeOf::Entry(seq) => {
                let stat_is = |r: &RawRecord<'_>| r.stat.as_ref().is_some_and(same);
                out.extend(path_at(db, entries, by_seq, seq, stat_is)?);
            }
            InodeOf::Loose(path) => {
                let got = stats.get(path).at(db, "reading a stat")?;
                if got.is_some_and(|g| same(&StatKey::from(g.value()))) {
                    out.push(decode_path(db, "inodes", path)?);
                }
            }
        }
        Ok(true)
    })?;
    out.sort();
    out.dedup();
    out.truncate(limit);
    Ok(out)
}

pub(crate) fn read_since(
    db: &Path,
    entries: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_seq: &impl ReadableTable<u64, &'static [u8]>,
    seq: Seq,
    limit: usize,
) -> Result<Vec<(Seq, Change)>, IndexError> {
    let Some(from) = seq.checked_add(1) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for row in by_seq.range(from..).at(db, "reading sequences")? {
        if out.len() >= limit {
            break;
        }
        let (s, path) = row.at(db, "reading sequences")?;
        let (s, path) = (s.value(), decode_path(db, "by_seq", path.value())?);
        let entry = with_record(db, entries, path.as_bytes(), |r| {
            (r.seq == s).then(|| r.entry())
        })?
        .flatten()
        .ok_or_else(|| {
            corrupt(
                db,
                format!("sequence {s} names {path}, which is not at {s}"),
            )
        })?;
        out.push((s, Change { path, entry }));
    }
    Ok(out)
}

/// Many lookups in one read transaction: a consistent snapshot of the
/// index, and one transaction's cost instead of one per lookup. Made by
/// [`Index::reader`]; answers exactly as the [`Index`] methods of the same
/// names, as of when it was made (writes committed later are not seen).
///
/// Hold it for a batch of lookups, not for long: while it lives, redb
/// cannot reuse the pages that later writes free.
pub struct IndexReader<'a> {
    path: &'a Path,
    entries: EntriesTable,
    by_seq: ReadOnlyTable<u64, &'static [u8]>,
    holders: ReadOnlyTable<&'static [u8], ()>,
    stats: StatsTable,
    inodes: ReadOnlyTable<&'static [u8], ()>,
}

impl std::fmt::Debug for IndexReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexReader")
            .field("path", &self.path)
            .finish()
    }
}

impl<'a> IndexReader<'a> {
    pub(crate) fn new(path: &'a Path, txn: ReadTransaction) -> Result<IndexReader<'a>, IndexError> {
        let what = "opening a table";
        Ok(IndexReader {
            path,
            entries: txn.open_table(ENTRIES).at(path, what)?,
            by_seq: txn.open_table(BY_SEQ).at(path, what)?,
            holders: txn.open_table(HOLDERS).at(path, what)?,
            stats: txn.open_table(STATS).at(path, what)?,
            inodes: txn.open_table(INODES).at(path, what)?,
        })
    }

    /// See [`Index::stat`].
    pub fn stat(&self, path: &RelPath) -> Result<Option<StatKey>, IndexError> {
        read_stat(self.path, &self.entries, &self.stats, path.as_bytes())
    }

    /// See [`Index::stats_below`].
    pub fn stats_below(&self, dir: &RelPath) -> Result<Vec<(RelPath, StatKey)>, IndexError> {
        read_stats_below(self.path, &self.entries, &self.stats, dir)
    }

    /// Every entry below `dir` with its stat, in path order, handed to
    /// `f` one at a time: one pass, nothing held. Stats of paths without
    /// an entry are [`IndexReader::loose_stats_below`]'s.
    pub fn for_each_below(
        &self,
        dir: &RelPath,
        mut f: impl FnMut(RelPath, Entry, Option<StatKey>),
    ) -> Result<(), IndexError> {
        let db = self.path;
        let range = dir.below_range();
        for row in self
            .entries
            .range::<&[u8]>(bytes_range(&range))
            .at(db, "scanning entries")?
        {
            let (k, v) = row.at(db, "scanning entries")?;
            let raw = RawRecord::parse(v.value()).map_err(|e| bad_record(db, k.value(), e))?;
            f(
                decode_path(db, "entries", k.value())?,
                raw.entry(),
                raw.stat,
            );
        }
        Ok(())
    }

    /// The stats below `dir` of paths that have no entry, in path order.
    pub fn loose_stats_below(&self, dir: &RelPath) -> Result<Vec<(RelPath, StatKey)>, IndexError> {
        let db = self.path;
        let range = dir.below_range();
        let mut out = Vec::new();
        for row in self
            .stats
            .range::<&[u8]>(bytes_range(&range))
            .at(db, "scanning stats")?
        {
            let (k, v) = row.at(db, "scanning stats")?;
            out.push((
                decode_path(db, "stats", k.value())?,
                StatKey::from(v.value()),
            ));
        }
        Ok(out)
    }

    /// See [`Index::path_of_inode`].
    pub fn path_of_inode(&self, dev: u64, ino: u64) -> Result<Option<RelPath>, IndexError> {
        Ok(self.paths_of_inode_up_to(dev, ino, 1)?.into_iter().next())
    }

    /// See [`Index::paths_of_inode`].
    pub fn paths_of_inode(&self, dev: u64, ino: u64) -> Result<Vec<RelPath>, IndexError> {
        self.paths_of_inode_up_to(dev, ino, usize::MAX)
    }

    fn paths_of_inode_up_to(
        &self,
        dev: u64,
        ino: u64,
        limit: usize,
    ) -> Result<Vec<RelPath>, IndexError> {
        let tables = (&self.entries, &self.by_seq, &self.stats, &self.inodes);
        read_inode_paths(self.path, tables, dev, ino, limit)
    }

    /// See [`Index::since`].
    pub fn since(&self, seq: Seq, limit: usize) -> Result<Vec<(Seq, Change)>, IndexError> {
        read_since(self.path, &self.entries, &self.by_seq, seq, limit)
    }
}

/// A span's entries for `omirrd verify`'s summaries (see
/// [`omirr_core::verify`]): the top's own entry, then a range scan of what
/// lies below it.
impl omirr_core::verify::EntrySource for IndexReader<'_> {
    type Error = IndexError;

    fn scan(
        &self,
        span: &omirr_core::verify::Span,
        each: &mut dyn FnMut(&RelPath, &Entry) -> bool,
    ) -> Result<(), IndexError> {
        let db = self.path;
        if span.contains(&span.top) {
            if let Some(e) = read_entry(db, &self.entries, &span.top)? {
                if !each(&span.top, &e) {
                    return Ok(());
                }
            }
        }
        let Some(range) = span.below_bounds() else {
            return Ok(());
        };
        for row in self
            .entries
            .range::<&[u8]>(bytes_range(&range))
            .at(db, "scanning entries")?
        {
            let (k, v) = row.at(db, "scanning entries")?;
            let raw = RawRecord::parse(v.value()).map_err(|e| bad_record(db, k.value(), e))?;
            if !each(&decode_path(db, "entries", k.value())?, &raw.entry()) {
                break;
            }
        }
        Ok(())
    }
}

impl IndexView for IndexReader<'_> {
    type Error = IndexError;

    fn entry(&self, path: &RelPath) -> Result<Option<Entry>, IndexError> {
        read_entry(self.path, &self.entries, path)
    }

    fn below(&self, dir: &RelPath) -> Result<Vec<(RelPath, Entry)>, IndexError> {
        read_below(self.path, &self.entries, dir)
    }

    /// The first holder in path order, as [`omirr_core::mem::MemIndex`]
    /// answers.
    fn holder_of(&self, hash: &Hash) -> Result<Option<RelPath>, IndexError> {
        read_holder_of(self.path, &self.entries, &self.by_seq, &self.holders, hash)
    }
}

impl Index {
    /// A reader: many lookups in one read transaction (see
    /// [`IndexReader`]).
    pub fn reader(&self) -> Result<IndexReader<'_>, IndexError> {
        IndexReader::new(self.path(), self.read()?)
    }
}
