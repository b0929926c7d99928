//! [`Index`]: the redb database and every operation on it.

use crate::batch::{Batch, StatUpdate};
use crate::codec;
use crate::error::IndexError;
use crate::schema::{
    aside_key, holder_key, inode_key, inode_prefix, split_key, tombstone_key, StatTuple, ASIDE,
    BY_SEQ, CHUNK_LISTS, COUNTERS, CURSORS, ENTRIES, HLC_LAST, HOLDERS, INODES, LAST_SEQ, LATEST,
    MAGIC, META, META_FORMAT, META_ID, META_MAGIC, PEER_INDEXES, STATS, TOMBSTONES,
};
use crate::stat::StatKey;
use omirr_core::{Change, Content, Entry, Hash, HostId, IndexView, RelPath, Seq, Timestamp};
use redb::{
    Database, DatabaseError, ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata,
    StorageError, Table, TableDefinition, TableError, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// The layout version of the database. Bump it whenever a table, a key or
/// an encoded value changes shape; an omirrd refuses a format it does not
/// know rather than misread it.
///
/// - 1: the first.
/// - 2: an entry's metadata holds its owner's and group's names too.
///   A format-1 index is converted when opened (`Index::convert_from_1`).
pub const FORMAT: u32 = 2;

/// The database file's name in the state directory.
pub const FILE_NAME: &str = "index.redb";

/// The first bytes of every redb file (redb's own magic number).
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// What [`ENTRIES`] holds per path, as encoded.
#[derive(Serialize)]
pub(crate) struct StoredRef<'a> {
    pub(crate) seq: Seq,
    pub(crate) entry: &'a Entry,
}

/// What [`ENTRIES`] holds per path, as decoded. Same field order as
/// [`StoredRef`].
#[derive(Deserialize)]
pub(crate) struct Stored {
    pub(crate) seq: Seq,
    pub(crate) entry: Entry,
}

/// A host's persisted index: the winning entry per path with its local
/// sequence, the peers' cursors, the clock, and the stat/inode cache.
///
/// It answers like [`omirr_core::mem::MemIndex`], which is its model, and
/// adds the persistence: every write method is one redb transaction, so
/// it lands whole or not at all, and pays one durable commit. Methods
/// take `&self`; redb serialises writers and lets readers run alongside.
pub struct Index {
    pub(crate) db: Database,
    path: PathBuf,
    /// See [`Index::id`].
    id: u64,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index").field("path", &self.path).finish()
    }
}

/// Adds the database path and what was being done to a redb error.
trait Ctx<T> {
    fn at(self, path: &Path, what: &'static str) -> Result<T, IndexError>;
}

impl<T, E: Into<redb::Error>> Ctx<T> for Result<T, E> {
    fn at(self, path: &Path, what: &'static str) -> Result<T, IndexError> {
        self.map_err(|e| IndexError::Db {
            path: path.to_path_buf(),
            what,
            source: Box::new(e.into()),
        })
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> IndexError {
    IndexError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn decode_path(db: &Path, table: &str, bytes: &[u8]) -> Result<RelPath, IndexError> {
    RelPath::new(bytes).map_err(|e| corrupt(db, format!("{table} holds a bad path: {e}")))
}

fn get_stored(
    db: &Path,
    entries: &impl ReadableTable<&'static [u8], &'static [u8]>,
    path: &RelPath,
) -> Result<Option<Stored>, IndexError> {
    match entries.get(path.as_bytes()).at(db, "reading an entry")? {
        None => Ok(None),
        Some(g) => codec::decode(g.value())
            .map(Some)
            .map_err(|e| corrupt(db, format!("the entry for {path} does not decode: {e}"))),
    }
}

fn counter(
    db: &Path,
    counters: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<u64, IndexError> {
    Ok(counters
        .get(name)
        .at(db, "reading a counter")?
        .map_or(0, |g| g.value()))
}

/// Keys of `table` that start with `prefix`, in order, at most `limit`.
fn with_prefix<V: redb::Value + 'static>(
    db: &Path,
    table: &impl ReadableTable<&'static [u8], V>,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<Vec<u8>>, IndexError> {
    let mut out = Vec::new();
    for row in table.range(prefix..).at(db, "scanning a table")? {
        if out.len() >= limit {
            break;
        }
        let (k, _) = row.at(db, "scanning a table")?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(k.value().to_vec());
    }
    Ok(out)
}

fn bytes_range(r: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (
        r.0.as_ref().map(Vec::as_slice),
        r.1.as_ref().map(Vec::as_slice),
    )
}

/// redb's page cache. Its default, 1 GiB, would let the cache of a
/// million-entry index hold the daemon's whole resident size; the
/// kernel's page cache keeps the file's hot pages anyway, so a small
/// cache costs a `pread` per miss, not a disk read.
const CACHE_BYTES: usize = 64 << 20;

impl Index {
    /// Opens the index in `state_dir`, creating it if there is none. The
    /// directory must exist. Refuses, with an error saying what to do, a
    /// file that is not an omirr index, one of another format, and one
    /// that another process has open.
    pub fn open(state_dir: &Path) -> Result<Index, IndexError> {
        let path = state_dir.join(FILE_NAME);
        // redb would say only "invalid data" about a stranger's file.
        if let Some(why) = not_redb(&path) {
            return Err(IndexError::NotAnIndex { path, why });
        }
        // redb asserts on some damaged files (one cut short, say) instead
        // of returning an error; at open, where the file is still
        // untrusted, that is an unusable index, not a reason to die.
        let created = std::panic::catch_unwind(|| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
        });
        let created = created.map_err(|panic| IndexError::NotAnIndex {
            path: path.clone(),
            why: format!(
                "redb cannot read it; it looks cut short or damaged: {}",
                panic_message(&*panic)
            ),
        })?;
        let db = match created {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(IndexError::InUse { path }),
            Err(DatabaseError::Storage(StorageError::Io(e)))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Err(IndexError::NotAnIndex {
                    path,
                    why: format!("redb cannot read it: {e}"),
                })
            }
            Err(source) => return Err(IndexError::Open { path, source }),
        };
        let mut ix = Index { db, path, id: 0 };
        ix.check_or_init()?;
        ix.id = ix.id_or_init()?;
        Ok(ix)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_or_init(&self) -> Result<(), IndexError> {
        let p = &self.path;
        let not_ours = |why: &str| IndexError::NotAnIndex {
            path: p.clone(),
            why: why.into(),
        };
        let txn = self.read()?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(TableError::TableDoesNotExist(_)) => {
                let has_tables = txn.list_tables().at(p, "listing tables")?.next().is_some()
                    || (txn.list_multimap_tables())
                        .at(p, "listing tables")?
                        .next()
                        .is_some();
                if has_tables {
                    return Err(not_ours("a redb database without omirr's meta table"));
                }
                drop(txn);
                return self.init();
            }
            Err(
                TableError::TableTypeMismatch { .. }
                | TableError::TableIsMultimap(_)
                | TableError::TypeDefinitionChanged { .. },
            ) => return Err(not_ours("a redb database whose meta table is not omirr's")),
            Err(e) => return Err(e).at(p, "opening the meta table"),
        };
        let magic = meta.get(META_MAGIC).at(p, "reading the magic")?;
        if magic.as_ref().map(|g| g.value()) != Some(MAGIC) {
            return Err(not_ours("a redb database without omirr's magic"));
        }
        let format = meta.get(META_FORMAT).at(p, "reading the format")?;
        let format = format
            .as_ref()
            .and_then(|g| <[u8; 4]>::try_from(g.value()).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| corrupt(p, "its format version is missing or malformed"))?;
        if format == 1 {
            drop(meta);
            drop(txn);
            return self.convert_from_1();
        }
        if format != FORMAT {
            let advice = if format > FORMAT {
                "it was written by a newer omirrd; run that one, or move the file \
                 aside and restart to rebuild the index with a full scan (peers \
                 then resend everything once)"
            } else {
                "it was written by an older omirrd; move the file aside and \
                 restart to rebuild the index with a full scan (peers then \
                 resend everything once)"
            };
            return Err(IndexError::Format {
                path: p.clone(),
                found: format,
                expected: FORMAT,
                advice,
            });
        }
        // Every table exists from init on; check them now for a clear
        // error at start rather than a strange one at first use.
        check_table(p, &txn, ENTRIES)?;
        check_table(p, &txn, BY_SEQ)?;
        check_table(p, &txn, HOLDERS)?;
        check_table(p, &txn, TOMBSTONES)?;
        check_table(p, &txn, COUNTERS)?;
        check_table(p, &txn, CURSORS)?;
        check_table(p, &txn, STATS)?;
        check_table(p, &txn, INODES)?;
        Ok(())
    }

    /// Converts a format-1 index to format 2 in one transaction: each
    /// entry and set-aside change gets empty owner and group names (which
    /// receivers read as "use the number", format 1's only way). A crash
    /// leaves format 1, converted again at the next start.
    fn convert_from_1(&self) -> Result<(), IndexError> {
        let p = &self.path;
        let txn = self
            .db
            .begin_write()
            .at(p, "starting to convert the index")?;
        {
            let mut entries = txn.open_table(ENTRIES).at(p, "opening a table")?;
            convert_table(p, &mut entries, "entries", |bytes| {
                let old: v1::Stored = codec::decode(bytes)?;
                let entry = old.entry.into_entry();
                codec::encode(&StoredRef {
                    seq: old.seq,
                    entry: &entry,
                })
            })?;
            let mut aside = txn.open_table(ASIDE).at(p, "opening a table")?;
            convert_table(p, &mut aside, "aside", |bytes| {
                let old: v1::Aside = codec::decode(bytes)?;
                codec::encode(&Aside {
                    change: Change {
                        path: old.change.path,
                        entry: old.change.entry.into_entry(),
                    },
                    reason: old.reason,
                    attempts: old.attempts,
                    since: old.since,
                })
            })?;
            let mut meta = txn.open_table(META).at(p, "opening the meta table")?;
            meta.insert(META_FORMAT, &FORMAT.to_le_bytes()[..])
                .at(p, "writing the format")?;
        }
        txn.commit().at(p, "committing the converted index")
    }

    /// Writes the meta table and creates every table, in one transaction:
    /// a crash during init leaves an empty database, which is initialised
    /// again at the next start.
    fn init(&self) -> Result<(), IndexError> {
        let p = &self.path;
        let txn = self.db.begin_write().at(p, "starting to initialise")?;
        {
            let mut meta = txn.open_table(META).at(p, "creating the meta table")?;
            meta.insert(META_MAGIC, MAGIC).at(p, "writing the magic")?;
            meta.insert(META_FORMAT, &FORMAT.to_le_bytes()[..])
                .at(p, "writing the format")?;
            Tables::open(p, &txn)?;
        }
        txn.commit().at(p, "committing the new index")
    }

    /// The index's id, made now if it has none.
    fn id_or_init(&self) -> Result<u64, IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let meta = self.table(&txn, META)?;
        if let Some(g) = meta.get(META_ID).at(p, "reading the id")? {
            return <[u8; 8]>::try_from(g.value())
                .map(u64::from_le_bytes)
                .ok()
                .filter(|&id| id != 0)
                .ok_or_else(|| corrupt(p, "its id is malformed"));
        }
        drop(meta);
        drop(txn);
        let id = new_id();
        let txn = self
            .db
            .begin_write()
            .at(p, "starting a write transaction")?;
        {
            let mut meta = txn.open_table(META).at(p, "opening the meta table")?;
            meta.insert(META_ID, &id.to_le_bytes()[..])
                .at(p, "writing the id")?;
        }
        txn.commit().at(p, "committing the id")?;
        Ok(id)
    }

    /// This index's id: random, made with it, never 0. A peer's cursor
    /// for this host counts in the index with this id; an index made anew
    /// (the state directory was lost) or restored from a backup has
    /// another id or an older sequence, and peers start over from it
    /// ([`Index::meet_peer_index`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The id of `peer`'s index that its cursor counts in; 0 if unknown.
    pub fn peer_index(&self, peer: &HostId) -> Result<u64, IndexError> {
        let txn = self.read()?;
        let table = match txn.open_table(PEER_INDEXES) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e).at(&self.path, "opening a table"),
        };
        let got = table
            .get(peer.as_str())
            .at(&self.path, "reading a peer's index id")?;
        Ok(got.map_or(0, |g| g.value()))
    }

    /// `peer` says its index has id `id`. If the cursor kept for it
    /// counts in another index of that peer, the cursor goes back to 0
    /// (one transaction with the new id) and this returns `true`: the
    /// peer lost or replaced its index, and everything it has is to be
    /// asked for again. A cursor kept before ids existed (no id known)
    /// is trusted.
    pub fn meet_peer_index(&self, peer: &HostId, id: u64) -> Result<bool, IndexError> {
        if self.peer_index(peer)? == id {
            return Ok(false);
        }
        self.write(|t| {
            let mut table = t
                .txn
                .open_table(PEER_INDEXES)
                .at(t.path, "opening a table")?;
            let known = table
                .get(peer.as_str())
                .at(t.path, "reading a peer's index id")?
                .map_or(0, |g| g.value());
            table
                .insert(peer.as_str(), id)
                .at(t.path, "writing a peer's index id")?;
            drop(table);
            let replaced = known != 0 && known != id;
            if replaced {
                t.set_cursor(peer, 0)?;
            }
            Ok(replaced)
        })
    }

    fn read(&self) -> Result<ReadTransaction, IndexError> {
        self.db
            .begin_read()
            .at(&self.path, "starting a read transaction")
    }

    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        txn: &ReadTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<K, V>, IndexError> {
        txn.open_table(def).at(&self.path, "opening a table")
    }

    /// Runs `f` on the tables in one write transaction and commits it.
    /// An error anywhere drops the transaction, which aborts it.
    fn write<R>(
        &self,
        f: impl FnOnce(&mut Tables<'_>) -> Result<R, IndexError>,
    ) -> Result<R, IndexError> {
        let p = &self.path;
        let txn = self
            .db
            .begin_write()
            .at(p, "starting a write transaction")?;
        let r = {
            let mut t = Tables::open(p, &txn)?;
            let r = f(&mut t)?;
            t.finish()?;
            r
        };
        txn.commit().at(p, "committing")?;
        Ok(r)
    }

    /// Records each change that is newer than what the index holds for
    /// its path, giving it the next local sequence; all in one
    /// transaction. Returns, per change, its sequence or `None` if the
    /// index already had that version or a newer one. Also raises the
    /// persisted clock to every version seen (see [`Index::hlc_last`]).
    pub fn record(&self, changes: &[Change]) -> Result<Vec<Option<Seq>>, IndexError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|t| {
            changes
                .iter()
                .map(|c| t.record(c, StatUpdate::Keep))
                .collect()
        })
    }

    /// [`Index::record`], with the stat of each change's file on disk
    /// now (`None`: nothing is there), as a scan finds them; see
    /// [`Index::commit`] for when a stat is kept.
    pub fn record_with_stats(
        &self,
        changes: &[(Change, Option<StatKey>)],
    ) -> Result<Vec<Option<Seq>>, IndexError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|t| {
            changes
                .iter()
                .map(|(c, s)| t.record(c, StatUpdate::from(*s)))
                .collect()
        })
    }

    /// Commits a [`Batch`] in one transaction. Returns, per change, its
    /// new sequence or `None` if the index already had that version or a
    /// newer one.
    ///
    /// A change's [`StatUpdate`] applies if the change is recorded, or if
    /// the index already holds exactly that entry (a repeat). If the
    /// index holds something else that wins, the path's stat is dropped
    /// instead (unless the update is [`StatUpdate::Keep`]): the file on
    /// disk is then not what the index describes, and the next scan must
    /// hash it rather than trust its stat.
    pub fn commit(&self, batch: &Batch) -> Result<Vec<Option<Seq>>, IndexError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|t| {
            let seqs = batch
                .changes
                .iter()
                .map(|(c, s)| t.record(c, *s))
                .collect::<Result<Vec<_>, _>>()?;
            for (path, stat) in &batch.stats {
                t.update_stat(path, *stat)?;
            }
            for (peer, seq) in &batch.cursors {
                t.set_cursor(peer, *seq)?;
            }
            if let Some(ts) = batch.hlc_last {
                t.hlc = t.hlc.max(ts.0);
            }
            if !batch.aside.is_empty() {
                let mut table = t.txn.open_table(ASIDE).at(t.path, "opening a table")?;
                for (peer, path, aside) in &batch.aside {
                    let key = aside_key(peer.as_str(), path);
                    match aside {
                        Some(a) => {
                            let value = codec::encode(a).map_err(|e| {
                                corrupt(t.path, format!("cannot encode a set-aside change: {e}"))
                            })?;
                            table
                                .insert(&key[..], &value[..])
                                .at(t.path, "setting a change aside")?;
                        }
                        None => {
                            table
                                .remove(&key[..])
                                .at(t.path, "dropping a set-aside change")?;
                        }
                    }
                }
            }
            Ok(seqs)
        })
    }

    /// At most `limit` entries recorded after `seq`, in sequence order:
    /// call again from the last sequence returned for the next page. Only
    /// each path's latest sequence is kept, so a path appears once, at
    /// its latest change.
    pub fn since(&self, seq: Seq, limit: usize) -> Result<Vec<(Seq, Change)>, IndexError> {
        let p = &self.path;
        let Some(from) = seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        let txn = self.read()?;
        let by_seq = self.table(&txn, BY_SEQ)?;
        let entries = self.table(&txn, ENTRIES)?;
        let mut out = Vec::new();
        for row in by_seq.range(from..).at(p, "reading sequences")? {
            if out.len() >= limit {
                break;
            }
            let (s, path) = row.at(p, "reading sequences")?;
            let (s, path) = (s.value(), decode_path(p, "by_seq", path.value())?);
            let stored = get_stored(p, &entries, &path)?
                .filter(|st| st.seq == s)
                .ok_or_else(|| {
                    corrupt(p, format!("sequence {s} names {path}, which is not at {s}"))
                })?;
            out.push((
                s,
                Change {
                    path,
                    entry: stored.entry,
                },
            ));
        }
        Ok(out)
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

    pub fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self.len()? == 0)
    }

    /// The highest sequence received from `peer`; 0 if none.
    pub fn cursor(&self, peer: &HostId) -> Result<Seq, IndexError> {
        let txn = self.read()?;
        let cursors = self.table(&txn, CURSORS)?;
        let got = cursors
            .get(peer.as_str())
            .at(&self.path, "reading a cursor")?;
        Ok(got.map_or(0, |g| g.value()))
    }

    /// Sets `peer`'s cursor, down as well as up (a peer that lost its
    /// index starts again from 0).
    pub fn set_cursor(&self, peer: &HostId, seq: Seq) -> Result<(), IndexError> {
        self.write(|t| t.set_cursor(peer, seq))
    }

    /// Every peer's cursor, by host name.
    pub fn cursors(&self) -> Result<Vec<(HostId, Seq)>, IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let cursors = self.table(&txn, CURSORS)?;
        let mut out = Vec::new();
        for row in cursors.iter().at(p, "reading cursors")? {
            let (k, v) = row.at(p, "reading cursors")?;
            out.push((HostId::new(k.value()), v.value()));
        }
        Ok(out)
    }

    /// The greatest timestamp the clock has issued or seen, as far as the
    /// index knows: at or above every version ever passed to a record
    /// method, and every value given to [`Index::set_hlc_last`]. Restart
    /// the clock with `Hlc::starting_at(index.hlc_last()?)`.
    pub fn hlc_last(&self) -> Result<Timestamp, IndexError> {
        let txn = self.read()?;
        counter(&self.path, &self.table(&txn, COUNTERS)?, HLC_LAST).map(Timestamp)
    }

    /// Raises the persisted clock to `ts`. Never lowers it: a clock that
    /// went back across a restart could stamp a live change below one it
    /// had already seen.
    pub fn set_hlc_last(&self, ts: Timestamp) -> Result<(), IndexError> {
        self.write(|t| {
            t.hlc = t.hlc.max(ts.0);
            Ok(())
        })
    }

    /// Forgets tombstones older than `horizon_ns` before `now` (see
    /// [`Entry::is_expired_tombstone`]); returns how many. One range scan
    /// over the tombstones, not over every entry.
    pub fn expire_tombstones(&self, now: Timestamp, horizon_ns: u64) -> Result<usize, IndexError> {
        self.write(|t| t.expire(now, horizon_ns))
    }

    /// The changes set aside (see [`Aside`]), from `peer` or from every
    /// peer, with the peer's name, in (peer, path) order.
    pub fn aside(&self, peer: Option<&HostId>) -> Result<Vec<(HostId, Aside)>, IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let table = match txn.open_table(ASIDE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e).at(p, "opening a table"),
        };
        // One peer's keys are `name NUL path`: the range from `name NUL`
        // up to `name \x01`.
        let rows = match peer {
            Some(h) => {
                let (mut from, mut to) = (
                    h.as_str().as_bytes().to_vec(),
                    h.as_str().as_bytes().to_vec(),
                );
                from.push(0);
                to.push(1);
                table.range(&from[..]..&to[..])
            }
            None => table.iter(),
        };
        let mut out = Vec::new();
        for row in rows.at(p, "reading set-aside changes")? {
            let (k, v) = row.at(p, "reading set-aside changes")?;
            let key = k.value();
            let Some(nul) = key.iter().position(|b| *b == 0) else {
                return Err(corrupt(p, "a set-aside key without a host name"));
            };
            let host = std::str::from_utf8(&key[..nul])
                .map_err(|_| corrupt(p, "a set-aside key whose host name is not UTF-8"))?;
            let aside: Aside = codec::decode(v.value())
                .map_err(|e| corrupt(p, format!("a set-aside change: {e}")))?;
            out.push((HostId::new(host), aside));
        }
        Ok(out)
    }

    /// The greatest timestamp of a version made by `host` that this index
    /// ever recorded (0 if none): what a host that lost its index lacks
    /// of its own changes lies above this.
    pub fn latest_of(&self, host: &HostId) -> Result<Timestamp, IndexError> {
        let txn = self.read()?;
        let table = match txn.open_table(LATEST) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Timestamp(0)),
            Err(e) => return Err(e).at(&self.path, "opening a table"),
        };
        let got = table
            .get(host.as_str())
            .at(&self.path, "reading a host's latest version")?;
        Ok(Timestamp(got.map_or(0, |g| g.value())))
    }

    /// The chunk list cached for the content with `hash` (opaque bytes;
    /// `omirr-chunk` defines them), if any.
    pub fn chunk_list(&self, hash: &Hash) -> Result<Option<Vec<u8>>, IndexError> {
        let txn = self.read()?;
        let table = match txn.open_table(CHUNK_LISTS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e).at(&self.path, "opening a table"),
        };
        let got = table
            .get(&hash[..])
            .at(&self.path, "reading a chunk list")?;
        Ok(got.map(|g| g.value().to_vec()))
    }

    /// Caches the chunk list of the content with `hash`.
    pub fn set_chunk_list(&self, hash: &Hash, list: &[u8]) -> Result<(), IndexError> {
        let p = &self.path;
        let txn = self
            .db
            .begin_write()
            .at(p, "starting a write transaction")?;
        {
            let mut t = txn.open_table(CHUNK_LISTS).at(p, "opening a table")?;
            t.insert(&hash[..], list).at(p, "caching a chunk list")?;
        }
        txn.commit().at(p, "committing")
    }

    /// Caches `path`'s stat.
    pub fn set_stat(&self, path: &RelPath, key: StatKey) -> Result<(), IndexError> {
        self.write(|t| t.update_stat(path, Some(key)))
    }

    /// Drops `path`'s stat, if any.
    pub fn forget_stat(&self, path: &RelPath) -> Result<(), IndexError> {
        self.write(|t| t.update_stat(path, None))
    }

    /// Sets (`Some`) or drops (`None`) many stats in one transaction.
    pub fn update_stats(&self, updates: &[(RelPath, Option<StatKey>)]) -> Result<(), IndexError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.write(|t| {
            for (path, stat) in updates {
                t.update_stat(path, *stat)?;
            }
            Ok(())
        })
    }

    /// `path`'s cached stat.
    pub fn stat(&self, path: &RelPath) -> Result<Option<StatKey>, IndexError> {
        let txn = self.read()?;
        let stats = self.table(&txn, STATS)?;
        let got = stats
            .get(path.as_bytes())
            .at(&self.path, "reading a stat")?;
        Ok(got.map(|g| StatKey::from(g.value())))
    }

    /// Every cached stat strictly below `dir` (everything but the root's
    /// own for the root), in path order: one range scan.
    pub fn stats_below(&self, dir: &RelPath) -> Result<Vec<(RelPath, StatKey)>, IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let stats = self.table(&txn, STATS)?;
        let range = dir.below_range();
        let mut out = Vec::new();
        for row in stats
            .range::<&[u8]>(bytes_range(&range))
            .at(p, "scanning stats")?
        {
            let (k, v) = row.at(p, "scanning stats")?;
            out.push((
                decode_path(p, "stats", k.value())?,
                StatKey::from(v.value()),
            ));
        }
        Ok(out)
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
        let inodes = self.table(&txn, INODES)?;
        with_prefix(&self.path, &inodes, &inode_prefix(dev, ino), limit)?
            .iter()
            .map(|k| decode_path(&self.path, "inodes", &k[16..]))
            .collect()
    }

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
        for row in entries.iter().at(p, "scanning entries")? {
            let (k, v) = row.at(p, "scanning entries")?;
            let path = decode_path(p, "entries", k.value())?;
            let st: Stored = match codec::decode(v.value()) {
                Ok(st) => st,
                Err(e) => {
                    problems.push(format!("the entry for {path} does not decode: {e}"));
                    continue;
                }
            };
            if st.seq > last_seq {
                problems.push(format!("{path} is at {} above last_seq {last_seq}", st.seq));
            }
            if st.entry.version.ts.0 > hlc {
                problems.push(format!(
                    "{path}'s version {} is above the clock {hlc}",
                    st.entry.version
                ));
            }
            let back = by_seq.get(st.seq).at(p, "reading sequences")?;
            if back.as_ref().map(|g| g.value()) != Some(path.as_bytes()) {
                problems.push(format!(
                    "{path} is at {} but by_seq does not say so",
                    st.seq
                ));
            }
            match &st.entry.content {
                Content::File { hash, .. } => {
                    files += 1;
                    let k = holder_key(hash, &path);
                    if holders
                        .get(k.as_slice())
                        .at(p, "reading holders")?
                        .is_none()
                    {
                        problems.push(format!("{path} is not among its hash's holders"));
                    }
                }
                Content::Deleted => {
                    deleted += 1;
                    let k = tombstone_key(st.entry.version.ts.0, &path);
                    if tombstones
                        .get(k.as_slice())
                        .at(p, "reading tombstones")?
                        .is_none()
                    {
                        problems.push(format!("{path} is deleted but not among the tombstones"));
                    }
                }
                Content::Dir | Content::Symlink { .. } => {}
            }
        }
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
        let mut stat_count = 0u64;
        for row in stats.iter().at(p, "scanning stats")? {
            let (k, v) = row.at(p, "scanning stats")?;
            let path = decode_path(p, "stats", k.value())?;
            let s = StatKey::from(v.value());
            stat_count += 1;
            let ik = inode_key(s.dev, s.ino, &path);
            if inodes.get(ik.as_slice()).at(p, "reading inodes")?.is_none() {
                problems.push(format!(
                    "{path}'s inode {}:{} is not in the inode table",
                    s.dev, s.ino
                ));
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

fn check_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    p: &Path,
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<(), IndexError> {
    match txn.open_table(def) {
        Ok(_) => Ok(()),
        Err(TableError::Storage(e)) => Err(e).at(p, "opening a table"),
        Err(e) => Err(corrupt(p, format!("table {def}: {e}"))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Why the file at `path` cannot be a redb database, if it cannot: it
/// exists, is not empty (redb initialises an empty file) and does not
/// start with redb's magic number. Unreadable files are left to redb,
/// whose error says more.
fn not_redb(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = Vec::with_capacity(REDB_MAGIC.len());
    f.by_ref()
        .take(REDB_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .ok()?;
    if head.is_empty() || head == REDB_MAGIC {
        return None;
    }
    Some("it does not start with redb's magic number".into())
}

/// Re-encodes every value of `table` with `convert`, a slice of keys at a
/// time (a table cannot change while it is iterated).
fn convert_table(
    p: &Path,
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    name: &str,
    convert: impl Fn(&[u8]) -> Result<Vec<u8>, codec::CodecError>,
) -> Result<(), IndexError> {
    let mut from: Bound<Vec<u8>> = Bound::Unbounded;
    loop {
        let mut slice = Vec::new();
        let range = (from.as_ref().map(Vec::as_slice), Bound::Unbounded);
        for item in table.range::<&[u8]>(range).at(p, "converting the index")? {
            let (k, v) = item.at(p, "converting the index")?;
            let new = convert(v.value()).map_err(|e| {
                corrupt(
                    p,
                    format!("a format-1 value of {name} does not decode: {e}"),
                )
            })?;
            slice.push((k.value().to_vec(), new));
            if slice.len() == 10_000 {
                break;
            }
        }
        let Some((last, _)) = slice.last() else {
            return Ok(());
        };
        from = Bound::Excluded(last.clone());
        for (k, v) in &slice {
            table
                .insert(k.as_slice(), v.as_slice())
                .at(p, "converting the index")?;
        }
    }
}

/// Format 1's values, for [`Index::convert_from_1`].
mod v1 {
    use omirr_core::{Content, Meta, RelPath, Seq, Version};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Stored {
        pub seq: Seq,
        pub entry: Entry,
    }

    #[derive(Deserialize)]
    pub struct Entry {
        content: Content,
        meta: OldMeta,
        version: Version,
    }

    #[derive(Deserialize)]
    struct OldMeta {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: i64,
    }

    #[derive(Deserialize)]
    pub struct Change {
        pub path: RelPath,
        pub entry: Entry,
    }

    #[derive(Deserialize)]
    pub struct Aside {
        pub change: Change,
        pub reason: String,
        pub attempts: u32,
        pub since: u64,
    }

    impl Entry {
        pub fn into_entry(self) -> omirr_core::Entry {
            let m = self.meta;
            omirr_core::Entry {
                content: self.content,
                meta: Meta {
                    mode: m.mode,
                    uid: m.uid,
                    gid: m.gid,
                    mtime_ns: m.mtime_ns,
                    ..Meta::default()
                },
                version: self.version,
            }
        }
    }
}

/// A new index id: random (the standard library's hasher keys come from
/// the operating system's random source), mixed with the time; never 0.
fn new_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// A peer's change this host could not apply, kept with its reason until
/// a retry applies it or a newer version of its path supersedes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aside {
    pub change: Change,
    /// Why it could not be applied, the last time it was tried.
    pub reason: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// Unix seconds of the first failure.
    pub since: u64,
}

/// Every table, open in one write transaction, and the counters as the
/// transaction changes them (written back by [`Tables::finish`]).
struct Tables<'t> {
    path: &'t Path,
    txn: &'t WriteTransaction,
    entries: Table<'t, &'static [u8], &'static [u8]>,
    by_seq: Table<'t, u64, &'static [u8]>,
    holders: Table<'t, &'static [u8], ()>,
    tombstones: Table<'t, &'static [u8], ()>,
    counters: Table<'t, &'static str, u64>,
    cursors: Table<'t, &'static str, u64>,
    stats: Table<'t, &'static [u8], StatTuple>,
    inodes: Table<'t, &'static [u8], ()>,
    last_seq: Seq,
    hlc: u64,
    /// The counters as read, to write back only what changed.
    was: (Seq, u64),
    /// Per host, the greatest timestamp of its versions recorded in this
    /// transaction (merged into [`LATEST`] by [`Tables::finish`]).
    latest: std::collections::HashMap<omirr_core::HostId, u64>,
}

impl<'t> Tables<'t> {
    fn open(p: &'t Path, txn: &'t WriteTransaction) -> Result<Tables<'t>, IndexError> {
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
            last_seq,
            hlc,
            was: (last_seq, hlc),
            latest: std::collections::HashMap::new(),
        })
    }

    fn finish(&mut self) -> Result<(), IndexError> {
        let p = self.path;
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

    fn record(&mut self, change: &Change, stat: StatUpdate) -> Result<Option<Seq>, IndexError> {
        let p = self.path;
        let (path, entry) = (&change.path, &change.entry);
        self.hlc = self.hlc.max(entry.version.ts.0);
        let old = get_stored(p, &self.entries, path)?;
        if let Some(old) = &old {
            if old.entry.version >= entry.version {
                if old.entry == *entry {
                    self.stat_update(path, stat)?;
                } else if stat != StatUpdate::Keep {
                    self.update_stat(path, None)?;
                }
                return Ok(None);
            }
            // A missing row is tolerated here (verify reports it): failing
            // would wedge every later batch that touches this path.
            self.by_seq
                .remove(old.seq)
                .at(p, "removing an old sequence")?;
            self.unindex(path, &old.entry)?;
        }
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
        let bytes = codec::encode(&StoredRef { seq, entry }).map_err(|e| IndexError::Encode {
            path: p.to_path_buf(),
            what: "an entry",
            detail: format!("{path}: {e}"),
        })?;
        self.entries
            .insert(path.as_bytes(), bytes.as_slice())
            .at(p, "writing an entry")?;
        self.by_seq
            .insert(seq, path.as_bytes())
            .at(p, "writing a sequence")?;
        match &entry.content {
            Content::File { hash, .. } => {
                self.holders
                    .insert(holder_key(hash, path).as_slice(), ())
                    .at(p, "writing a holder")?;
            }
            Content::Deleted => {
                self.tombstones
                    .insert(tombstone_key(entry.version.ts.0, path).as_slice(), ())
                    .at(p, "writing a tombstone")?;
            }
            Content::Dir | Content::Symlink { .. } => {}
        }
        self.stat_update(path, stat)?;
        Ok(Some(seq))
    }

    /// Removes the secondary rows of `old`, the entry being replaced.
    fn unindex(&mut self, path: &RelPath, old: &Entry) -> Result<(), IndexError> {
        let p = self.path;
        match &old.content {
            Content::File { hash, .. } => {
                self.holders
                    .remove(holder_key(hash, path).as_slice())
                    .at(p, "removing a holder")?;
            }
            Content::Deleted => {
                self.tombstones
                    .remove(tombstone_key(old.version.ts.0, path).as_slice())
                    .at(p, "removing a tombstone")?;
            }
            Content::Dir | Content::Symlink { .. } => {}
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
    fn update_stat(&mut self, path: &RelPath, stat: Option<StatKey>) -> Result<(), IndexError> {
        let p = self.path;
        let old = match stat {
            Some(k) => self
                .stats
                .insert(path.as_bytes(), StatTuple::from(k))
                .at(p, "writing a stat")?
                .map(|g| StatKey::from(g.value())),
            None => self
                .stats
                .remove(path.as_bytes())
                .at(p, "removing a stat")?
                .map(|g| StatKey::from(g.value())),
        };
        let same_inode = |a: &StatKey, b: &StatKey| (a.dev, a.ino) == (b.dev, b.ino);
        if let Some(old) = old {
            if stat.is_some_and(|new| same_inode(&old, &new)) {
                return Ok(());
            }
            self.inodes
                .remove(inode_key(old.dev, old.ino, path).as_slice())
                .at(p, "removing an inode")?;
        }
        if let Some(new) = stat {
            self.inodes
                .insert(inode_key(new.dev, new.ino, path).as_slice(), ())
                .at(p, "writing an inode")?;
        }
        Ok(())
    }

    fn set_cursor(&mut self, peer: &HostId, seq: Seq) -> Result<(), IndexError> {
        self.cursors
            .insert(peer.as_str(), seq)
            .at(self.path, "writing a cursor")?;
        Ok(())
    }

    fn expire(&mut self, now: Timestamp, horizon_ns: u64) -> Result<usize, IndexError> {
        let p = self.path;
        // Tombstone keys start with their timestamp, big-endian, so the
        // expired ones are a prefix of the table.
        let mut expired = Vec::new();
        for row in self.tombstones.iter().at(p, "scanning tombstones")? {
            let (k, _) = row.at(p, "scanning tombstones")?;
            let (ts, path) = split_key(k.value(), 8)
                .ok_or_else(|| corrupt(p, "a tombstone key is too short"))?;
            let ts = u64::from_be_bytes(ts.try_into().unwrap_or_default());
            if ts.saturating_add(horizon_ns) >= now.0 {
                break;
            }
            expired.push((k.value().to_vec(), decode_path(p, "tombstones", path)?));
        }
        let mut n = 0;
        for (key, path) in expired {
            self.tombstones
                .remove(key.as_slice())
                .at(p, "removing a tombstone")?;
            let old = match get_stored(p, &self.entries, &path)? {
                Some(old) if old.entry.is_expired_tombstone(now, horizon_ns) => old,
                // A stray row (verify reports those); the entry stays.
                _ => continue,
            };
            self.entries
                .remove(path.as_bytes())
                .at(p, "removing an entry")?;
            self.by_seq.remove(old.seq).at(p, "removing a sequence")?;
            n += 1;
        }
        Ok(n)
    }
}

impl IndexView for Index {
    type Error = IndexError;

    fn entry(&self, path: &RelPath) -> Result<Option<Entry>, IndexError> {
        let txn = self.read()?;
        let entries = self.table(&txn, ENTRIES)?;
        Ok(get_stored(&self.path, &entries, path)?.map(|st| st.entry))
    }

    fn below(&self, dir: &RelPath) -> Result<Vec<(RelPath, Entry)>, IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let entries = self.table(&txn, ENTRIES)?;
        let range = dir.below_range();
        let mut out = Vec::new();
        for row in entries
            .range::<&[u8]>(bytes_range(&range))
            .at(p, "scanning entries")?
        {
            let (k, v) = row.at(p, "scanning entries")?;
            let path = decode_path(p, "entries", k.value())?;
            let st: Stored = codec::decode(v.value())
                .map_err(|e| corrupt(p, format!("the entry for {path} does not decode: {e}")))?;
            out.push((path, st.entry));
        }
        Ok(out)
    }

    /// The first holder in path order, as [`omirr_core::mem::MemIndex`]
    /// answers.
    fn holder_of(&self, hash: &Hash) -> Result<Option<RelPath>, IndexError> {
        let txn = self.read()?;
        let holders = self.table(&txn, HOLDERS)?;
        match with_prefix(&self.path, &holders, hash, 1)?.first() {
            Some(k) => decode_path(&self.path, "holders", &k[hash.len()..]).map(Some),
            None => Ok(None),
        }
    }
}
