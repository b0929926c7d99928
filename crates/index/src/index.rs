//! [`Index`]: the redb database and every operation on it.

use crate::batch::{Batch, StatUpdate};
use crate::codec;
use crate::error::IndexError;
use crate::reader::{
    bad_record, read_below, read_entry, read_holder_of, read_inode_paths, read_since, read_stat,
    read_stats_below,
};
use crate::record;
use crate::schema::{
    aside_key, entry_inode_key, holder_key, loose_inode_key, split_key, tombstone_key, StatTuple,
    ASIDE, BY_SEQ, BY_SEQ_V2, CHUNK_LISTS, COUNTERS, CURSORS, ENTRIES, ENTRIES_V2, HLC_LAST,
    HOLDERS, INODES, LAST_SEQ, LATEST, MAGIC, META, META_FORGOTTEN, META_FORMAT, META_ID,
    META_MAGIC, PEER_INDEXES, RECONCILE, STATS, TOMBSTONES,
};
use omirr_core::expiry::{Forgotten, Held};
use omirr_core::StatKey;
use omirr_core::{
    Change, Content, Entry, Hash, HostId, IndexView, RelPath, Seq, Timestamp, Version,
};
use redb::{
    Database, DatabaseError, ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata,
    StorageError, Table, TableDefinition, TableError, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
/// - 3: a third of the bytes per entry: an entry value is hand-encoded
///   (`record`) and holds the path's cached stat (the stats table keeps
///   only paths without an entry); holders are keyed by 8 bytes of the
///   hash and the holder's sequence, inodes by the inode number and the
///   sequence of the entry with the stat (or the path of a stat without
///   one). A format-2 index is converted when opened
///   (`Index::convert_from_2`).
/// - 4: a second flags byte in an entry's value (see `record`) for what
///   format 3 could not hold: an entry's base (the version it replaced),
///   FIFOs, extended attributes and hard links. A format-3 entry value is
///   a format-4 value as it is; the set-aside changes (serde-encoded
///   changes, whose `Entry` and `Meta` gained fields) are re-encoded when
///   a format-3 index is opened (`Index::convert_from_3`).
pub const FORMAT: u32 = 4;

/// The database file's name in the state directory.
pub const FILE_NAME: &str = "index.redb";

/// The first bytes of every redb file (redb's own magic number).
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// What [`ENTRIES`] held per path in format 2, as encoded (by
/// [`Index::convert_from_1`]).
#[derive(Serialize)]
pub(crate) struct StoredRef<'a> {
    pub(crate) seq: Seq,
    pub(crate) entry: EntryV3Ref<'a>,
}

/// What [`ENTRIES`] held per path in format 2, as decoded (by
/// [`Index::convert_from_2`]). Same field order as [`StoredRef`].
#[derive(Deserialize)]
pub(crate) struct Stored {
    pub(crate) seq: Seq,
    pub(crate) entry: EntryV3,
}

/// An entry as formats 2 and 3 encoded it with serde: without a base,
/// and with format 3's [`v3::Meta`] (no extended attributes, no link).
#[derive(Deserialize)]
pub(crate) struct EntryV3 {
    content: Content,
    meta: v3::Meta,
    version: omirr_core::Version,
}

impl EntryV3 {
    fn into_entry(self) -> Entry {
        Entry {
            content: self.content,
            meta: self.meta.into(),
            version: self.version,
            base: None,
        }
    }
}

/// [`EntryV3`], to encode.
#[derive(Serialize)]
pub(crate) struct EntryV3Ref<'a> {
    content: &'a Content,
    meta: v3::Meta,
    version: &'a omirr_core::Version,
}

impl<'a> EntryV3Ref<'a> {
    fn of(e: &'a Entry) -> EntryV3Ref<'a> {
        EntryV3Ref {
            content: &e.content,
            meta: v3::Meta::from(&e.meta),
            version: &e.version,
        }
    }
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
pub(crate) trait Ctx<T> {
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

pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> IndexError {
    IndexError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

pub(crate) fn decode_path(db: &Path, table: &str, bytes: &[u8]) -> Result<RelPath, IndexError> {
    RelPath::new(bytes).map_err(|e| corrupt(db, format!("{table} holds a bad path: {e}")))
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

/// What [`Index::expire`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// How many tombstones it forgot.
    pub forgotten: usize,
    /// The tombstones it recorded to bury what an expired one hides
    /// (see [`omirr_core::expiry::Plan::bury`]).
    pub buried: Vec<Change>,
}

/// The watermark as [`META_FORGOTTEN`] holds it: the sequence, then the
/// timestamp, 8 bytes each, little-endian.
fn encode_forgotten(f: &Forgotten) -> [u8; 16] {
    let mut b = [0; 16];
    b[..8].copy_from_slice(&f.seq.to_le_bytes());
    b[8..].copy_from_slice(&f.below.0.to_le_bytes());
    b
}

fn decode_forgotten(b: &[u8]) -> Option<Forgotten> {
    let seq: [u8; 8] = b.get(..8)?.try_into().ok()?;
    let below: [u8; 8] = b.get(8..16)?.try_into().ok()?;
    (b.len() == 16).then(|| Forgotten {
        seq: u64::from_le_bytes(seq),
        below: Timestamp(u64::from_le_bytes(below)),
    })
}

/// What [`Index::open`] found.
#[derive(Debug, PartialEq, Eq)]
enum Opened {
    /// A new index, or one of this format.
    AsIs,
    /// An index of an older format, now converted.
    Converted,
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
        if ix.check_or_init()? == Opened::Converted {
            // The conversion rewrote every entry: the file holds the old
            // layout's pages as free space (a million entries: 1 GiB for
            // 250 MB of data). Compacting is worth its seconds once; if it
            // cannot be done the index is still whole, only larger.
            let _ = ix.db.compact();
        }
        ix.id = ix.id_or_init()?;
        Ok(ix)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_or_init(&self) -> Result<Opened, IndexError> {
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
                return self.init().map(|()| Opened::AsIs);
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
        if (1..=3).contains(&format) {
            drop(meta);
            drop(txn);
            if format == 1 {
                self.convert_from_1()?;
            }
            if format <= 2 {
                self.convert_from_2()?;
            }
            return self.convert_from_3().map(|()| Opened::Converted);
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
        Ok(Opened::AsIs)
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
                    entry: EntryV3Ref::of(&entry),
                })
            })?;
            let mut aside = txn.open_table(ASIDE).at(p, "opening a table")?;
            convert_table(p, &mut aside, "aside", |bytes| {
                let old: v1::Aside = codec::decode(bytes)?;
                // Laid out as formats 2 and 3 have it; format 4's
                // conversion takes it from there.
                codec::encode(&v3::Aside::from(Aside {
                    change: Change {
                        path: old.change.path,
                        entry: old.change.entry.into_entry(),
                    },
                    reason: old.reason,
                    attempts: old.attempts,
                    since: old.since,
                }))
            })?;
            let mut meta = txn.open_table(META).at(p, "opening the meta table")?;
            meta.insert(META_FORMAT, &2u32.to_le_bytes()[..])
                .at(p, "writing the format")?;
        }
        txn.commit().at(p, "committing the converted index")
    }

    /// Converts a format-2 index to format 3 in one transaction: each
    /// entry is re-encoded with its path's stat, the stats of paths with
    /// an entry leave the stats table, and the holders and inodes tables
    /// are rebuilt with their shorter keys from the entries and stats. A
    /// crash leaves format 2, converted again at the next start.
    fn convert_from_2(&self) -> Result<(), IndexError> {
        let p = &self.path;
        let what = "converting the index";
        let txn = self
            .db
            .begin_write()
            .at(p, "starting to convert the index")?;
        txn.rename_table(ENTRIES, ENTRIES_V2).at(p, what)?;
        txn.rename_table(BY_SEQ, BY_SEQ_V2).at(p, what)?;
        txn.delete_table(HOLDERS).at(p, what)?;
        txn.delete_table(INODES).at(p, what)?;
        {
            let old = txn.open_table(ENTRIES_V2).at(p, what)?;
            let mut entries = txn.open_table(ENTRIES).at(p, what)?;
            let mut holders = txn.open_table(HOLDERS).at(p, what)?;
            let mut stats = txn.open_table(STATS).at(p, what)?;
            let mut inodes = txn.open_table(INODES).at(p, what)?;
            // The sequences as they were, copied in fill order (format 2
            // left its leaves half full).
            {
                let old_seqs = txn.open_table(BY_SEQ_V2).at(p, what)?;
                let mut by_seq = txn.open_table(BY_SEQ).at(p, what)?;
                let mut rows = Vec::new();
                for row in old_seqs.iter().at(p, what)? {
                    let (k, v) = row.at(p, what)?;
                    rows.push((k.value(), v.value().to_vec()));
                    if rows.len() == PENDING_ROWS {
                        for (k, v) in fill_order(std::mem::take(&mut rows)) {
                            by_seq.insert(k, &v[..]).at(p, what)?;
                        }
                    }
                }
                for (k, v) in fill_order(rows) {
                    by_seq.insert(k, &v[..]).at(p, what)?;
                }
            }
            // Entries, a slice at a time: each with its stat, and its holder.
            let mut rows = Vec::new();
            let mut flush = |rows: &mut Vec<(Vec<u8>, Vec<u8>)>| -> Result<(), IndexError> {
                for (k, v) in fill_order(std::mem::take(rows)) {
                    entries.insert(&k[..], &v[..]).at(p, what)?;
                }
                Ok(())
            };
            for row in old.iter().at(p, what)? {
                let (k, v) = row.at(p, what)?;
                let path = decode_path(p, "entries", k.value())?;
                let st: Stored = codec::decode(v.value()).map_err(|e| {
                    corrupt(
                        p,
                        format!("a format-2 entry for {path} does not decode: {e}"),
                    )
                })?;
                let stat = stats
                    .get(k.value())
                    .at(p, what)?
                    .map(|g| StatKey::from(g.value()));
                let entry = st.entry.into_entry();
                if let Content::File { hash, .. } = &entry.content {
                    holders
                        .insert(holder_key(hash, st.seq).as_slice(), ())
                        .at(p, what)?;
                }
                if let Some(s) = &stat {
                    inodes
                        .insert(entry_inode_key(s.ino, st.seq).as_slice(), ())
                        .at(p, what)?;
                }
                rows.push((
                    k.value().to_vec(),
                    record::encode(st.seq, &entry, stat.as_ref()),
                ));
                if rows.len() == PENDING_ROWS {
                    flush(&mut rows)?;
                }
            }
            flush(&mut rows)?;
            // The stats of paths with an entry now live there; the others
            // stay, with their inode rows.
            let mut from: Bound<Vec<u8>> = Bound::Unbounded;
            loop {
                let mut slice = Vec::new();
                let range = (from.as_ref().map(Vec::as_slice), Bound::Unbounded);
                for row in stats.range::<&[u8]>(range).at(p, what)? {
                    let (k, v) = row.at(p, what)?;
                    let has_entry = old.get(k.value()).at(p, what)?.is_some();
                    slice.push((k.value().to_vec(), StatKey::from(v.value()), has_entry));
                    if slice.len() == 10_000 {
                        break;
                    }
                }
                let Some((last, _, _)) = slice.last() else {
                    break;
                };
                from = Bound::Excluded(last.clone());
                for (k, stat, has_entry) in &slice {
                    if *has_entry {
                        stats.remove(&k[..]).at(p, what)?;
                    } else {
                        let path = decode_path(p, "stats", k)?;
                        inodes
                            .insert(loose_inode_key(stat.ino, &path).as_slice(), ())
                            .at(p, what)?;
                    }
                }
            }
        }
        txn.delete_table(ENTRIES_V2).at(p, what)?;
        txn.delete_table(BY_SEQ_V2).at(p, what)?;
        {
            let mut meta = txn.open_table(META).at(p, "opening the meta table")?;
            meta.insert(META_FORMAT, &3u32.to_le_bytes()[..])
                .at(p, "writing the format")?;
        }
        txn.commit().at(p, "committing the converted index")
    }

    /// Converts a format-3 index to format 4, in one transaction. Format
    /// 4 added a second flags byte to an entry's value for what format 3
    /// could not hold (an entry's base, FIFOs, extended attributes, hard
    /// links; see [`crate::record`]); a value without them is encoded as
    /// format 3 encoded it, so the entries stay as they are. The set-aside
    /// changes hold [`Entry`] and [`Meta`] as encoded by serde, which
    /// gained fields: they are re-encoded (with no base). A crash leaves
    /// format 3, converted again at the next start.
    fn convert_from_3(&self) -> Result<(), IndexError> {
        let p = &self.path;
        let txn = self
            .db
            .begin_write()
            .at(p, "starting to convert the index")?;
        {
            let mut aside = txn.open_table(ASIDE).at(p, "opening a table")?;
            convert_table(p, &mut aside, "aside", |bytes| {
                let old: v3::Aside = codec::decode(bytes)?;
                codec::encode(&Aside::from(old))
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

    pub(crate) fn read(&self) -> Result<ReadTransaction, IndexError> {
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
        let txn = self.read()?;
        let by_seq = self.table(&txn, BY_SEQ)?;
        let entries = self.table(&txn, ENTRIES)?;
        read_since(&self.path, &entries, &by_seq, seq, limit)
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
                base: None,
            }
        }
    }
}

/// Format 3's set-aside changes (formats 2 and 3 store them alike), for
/// [`Index::convert_from_3`]: [`Meta`] without extended attributes and
/// hard links.
mod v3 {
    use omirr_core::{Content, Name, RelPath, Version};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Aside {
        change: Change,
        reason: String,
        attempts: u32,
        since: u64,
    }

    #[derive(Serialize, Deserialize)]
    struct Change {
        path: RelPath,
        entry: Entry,
    }

    #[derive(Serialize, Deserialize)]
    struct Entry {
        content: Content,
        meta: Meta,
        version: Version,
    }

    /// Format 3's `Meta`: no extended attributes, no hard link.
    #[derive(Serialize, Deserialize)]
    pub(crate) struct Meta {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: i64,
        owner: Name,
        group: Name,
    }

    impl From<&omirr_core::Meta> for Meta {
        fn from(m: &omirr_core::Meta) -> Meta {
            Meta {
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                mtime_ns: m.mtime_ns,
                owner: m.owner,
                group: m.group,
            }
        }
    }

    impl From<Meta> for omirr_core::Meta {
        fn from(m: Meta) -> omirr_core::Meta {
            omirr_core::Meta {
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                mtime_ns: m.mtime_ns,
                owner: m.owner,
                group: m.group,
                ..omirr_core::Meta::default()
            }
        }
    }

    impl From<super::Aside> for Aside {
        fn from(a: super::Aside) -> Aside {
            let (path, e) = (a.change.path, a.change.entry);
            let m = e.meta;
            Aside {
                change: Change {
                    path,
                    entry: Entry {
                        content: e.content,
                        meta: Meta {
                            mode: m.mode,
                            uid: m.uid,
                            gid: m.gid,
                            mtime_ns: m.mtime_ns,
                            owner: m.owner,
                            group: m.group,
                        },
                        version: e.version,
                    },
                },
                reason: a.reason,
                attempts: a.attempts,
                since: a.since,
            }
        }
    }

    impl From<Aside> for super::Aside {
        fn from(a: Aside) -> super::Aside {
            let (path, e) = (a.change.path, a.change.entry);
            let m = e.meta;
            super::Aside {
                change: omirr_core::Change {
                    path,
                    entry: omirr_core::Entry {
                        content: e.content,
                        meta: omirr_core::Meta {
                            mode: m.mode,
                            uid: m.uid,
                            gid: m.gid,
                            mtime_ns: m.mtime_ns,
                            owner: m.owner,
                            group: m.group,
                            ..omirr_core::Meta::default()
                        },
                        version: e.version,
                        base: None,
                    },
                },
                reason: a.reason,
                attempts: a.attempts,
                since: a.since,
            }
        }
    }
}

#[cfg(test)]
mod v3_tests {
    use super::*;

    /// A set-aside change as format 3 stored it (crates/index/tests/
    /// golden.rs had these bytes then) reads back through the
    /// conversion, its metadata whole.
    #[test]
    fn a_format_3_aside_converts() {
        const V3: &str = "127372762f7777772f696e6465782e68746d6c00fb3331000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1ffba40121fbe803fd2a9a27dcd179fa30087777772d64617461057374616666fdb1689621e93c7d1805616c7068613863616e6e6f74207772697465207372762f7777772f696e6465782e68746d6c3a204e6f207370616365206c656674206f6e2064657669636503fc002c2e69";
        let bytes: Vec<u8> = (0..V3.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&V3[i..i + 2], 16).expect("hex"))
            .collect();
        assert!(
            codec::decode::<Aside>(&bytes).is_err(),
            "format 4 cannot read it as it is"
        );
        let old: v3::Aside = codec::decode(&bytes).expect("format 3's layout");
        let aside = Aside::from(old);
        let m = &aside.change.entry.meta;
        assert_eq!((m.mode, m.uid, m.gid), (0o644, 33, 1000));
        assert_eq!(m.owner.as_bytes(), b"www-data");
        assert_eq!(m.group.as_bytes(), b"staff");
        assert!(m.xattrs.is_empty() && m.link.is_none());
        assert_eq!(aside.attempts, 3);
        // And back: the layout is format 3's exactly.
        assert_eq!(
            codec::encode(&v3::Aside::from(aside)).expect("encode"),
            bytes
        );
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

/// Writes to one table held back until the transaction's rows are known,
/// so that they can be applied in [`fill_order`]. `None` removes the key.
/// Reads in the same transaction look here first.
struct Pending<K: Ord, V> {
    rows: BTreeMap<K, Option<V>>,
}

impl<K: Ord, V> Pending<K, V> {
    fn new() -> Self {
        Pending {
            rows: BTreeMap::new(),
        }
    }

    fn put(&mut self, k: K, v: V) {
        self.rows.insert(k, Some(v));
    }

    fn remove(&mut self, k: K) {
        self.rows.insert(k, None);
    }

    /// The removals, then the insertions in [`fill_order`].
    fn drain(&mut self) -> (Vec<K>, Vec<(K, V)>) {
        let mut removed = Vec::new();
        let mut put = Vec::new();
        for (k, v) in std::mem::take(&mut self.rows) {
            match v {
                None => removed.push(k),
                Some(v) => put.push((k, v)),
            }
        }
        (removed, fill_order(put))
    }
}

/// The order to insert rows sorted by key in so that redb's leaves end up
/// about 5/6 full rather than half. redb splits a full leaf into two
/// halves, so ascending inserts (a scan's paths, sequences, inode
/// numbers) leave every leaf behind them half full for good, and the
/// file twice the size of its data. Inserting 3 rows in 5 first leaves
/// half-full leaves with room for the other 2, inserted next. Fuller is
/// worse: a receiver records entries first and their stats later, and
/// the 6-10 bytes a stat adds split leaves filled to 9/10 (measured on a
/// million entries, examples/density.rs with DENSITY_RESTAT: the entries
/// table took 161 B/entry with 5 rows in 9 first, 110 with 3 in 5).
fn fill_order<T>(sorted: Vec<T>) -> Vec<T> {
    let (mut first, mut second) = (Vec::with_capacity(sorted.len()), Vec::new());
    for (i, row) in sorted.into_iter().enumerate() {
        if i % 5 < 3 {
            first.push(row);
        } else {
            second.push(row);
        }
    }
    first.extend(second);
    first
}

/// How many entry writes [`Tables`] holds back before applying them: a
/// bound on memory in a large transaction (a start-up scan's).
const PENDING_ROWS: usize = 16_384;

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
    pending_entries: Pending<Vec<u8>, Vec<u8>>,
    pending_by_seq: Pending<u64, Vec<u8>>,
    pending_holders: Pending<Vec<u8>, ()>,
    pending_stats: Pending<Vec<u8>, StatKey>,
    pending_inodes: Pending<Vec<u8>, ()>,
    last_seq: Seq,
    hlc: u64,
    /// The counters as read, to write back only what changed.
    was: (Seq, u64),
    /// Per host, the greatest timestamp of its versions recorded in this
    /// transaction (merged into [`LATEST`] by [`Tables::finish`]).
    latest: std::collections::HashMap<omirr_core::HostId, u64>,
}

/// A path's entry value, decoded.
type Record = (Seq, Entry, Option<StatKey>);

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

    fn finish(&mut self) -> Result<(), IndexError> {
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

    fn record(&mut self, change: &Change, stat: StatUpdate) -> Result<Option<Seq>, IndexError> {
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
    fn update_stat(&mut self, path: &RelPath, stat: Option<StatKey>) -> Result<(), IndexError> {
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

    fn set_cursor(&mut self, peer: &HostId, seq: Seq) -> Result<(), IndexError> {
        self.cursors
            .insert(peer.as_str(), seq)
            .at(self.path, "writing a cursor")?;
        Ok(())
    }

    /// Forgets each path that still holds the given version, and raises
    /// the watermark in [`META`] by each; returns how many.
    fn forget(&mut self, paths: &[(RelPath, Version)]) -> Result<usize, IndexError> {
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

/// redb's account of one table's space, for measuring the layout (see
/// `examples/density.rs`).
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct TableSpace {
    pub name: String,
    pub rows: u64,
    pub stored_bytes: u64,
    pub metadata_bytes: u64,
    pub fragmented_bytes: u64,
    pub leaf_pages: u64,
    pub branch_pages: u64,
}

impl Index {
    /// Every table's space as redb counts it, then the database's
    /// (named "(database)", with allocated pages as its leaf pages).
    /// For measurements, not for the daemon.
    #[doc(hidden)]
    pub fn space_report(&self) -> Result<Vec<TableSpace>, IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let mut out = Vec::new();
        let handles: Vec<_> = txn.list_tables().at(p, "listing tables")?.collect();
        for handle in handles {
            let name = redb::TableHandle::name(&handle).to_string();
            let table = txn.open_untyped_table(handle).at(p, "opening a table")?;
            let stats = table.stats().at(p, "table stats")?;
            out.push(TableSpace {
                name,
                rows: table.len().at(p, "counting")?,
                stored_bytes: stats.stored_bytes(),
                metadata_bytes: stats.metadata_bytes(),
                fragmented_bytes: stats.fragmented_bytes(),
                leaf_pages: stats.leaf_pages(),
                branch_pages: stats.branch_pages(),
            });
        }
        drop(txn);
        let txn = self
            .db
            .begin_write()
            .at(p, "starting a write transaction")?;
        let s = txn.stats().at(p, "database stats")?;
        out.push(TableSpace {
            name: "(database)".into(),
            rows: s.page_size() as u64,
            stored_bytes: s.stored_bytes(),
            metadata_bytes: s.metadata_bytes(),
            fragmented_bytes: s.fragmented_bytes(),
            leaf_pages: s.allocated_pages(),
            branch_pages: s.branch_pages(),
        });
        txn.abort().at(p, "aborting")?;
        Ok(out)
    }

    /// Compacts the database file (redb's `compact`): frees the pages
    /// no table uses and truncates the file. For measurements.
    #[doc(hidden)]
    pub fn compact(&mut self) -> Result<bool, IndexError> {
        let p = self.path.clone();
        self.db
            .compact()
            .map_err(|e| corrupt(&p, format!("compaction failed: {e}")))
    }
}
