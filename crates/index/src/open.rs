//! Opening the index: creating a new one, recognising an older format
//! (converted by [`crate::convert`]), and refusing, with an error that
//! says what to do, a file that is not an omirr index, one of an unknown
//! format, and one that another process has open.

use crate::convert::set_format;
use crate::error::{corrupt, panic_message, Ctx, IndexError};
use crate::file_format::upgrade_v2;
use crate::index::{Index, FILE_NAME, FORMAT};
use crate::schema::{
    BY_SEQ, COUNTERS, CURSORS, ENTRIES, HOLDERS, INODES, MAGIC, META, META_FORMAT, META_ID,
    META_MAGIC, STATS, TOMBSTONES,
};
use crate::tables::Tables;
use redb::{Database, DatabaseError, ReadTransaction, StorageError, TableDefinition, TableError};
use std::io::Read;
use std::path::Path;

/// The first bytes of every redb file (redb's own magic number).
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

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
        let (db, upgraded) = match create(&path) {
            Err(IndexError::Open {
                source: DatabaseError::UpgradeRequired(2),
                ..
            }) => {
                upgrade_v2(&path, CACHE_BYTES)?;
                (create(&path)?, true)
            }
            created => (created?, false),
        };
        let mut ix = Index { db, path, id: 0 };
        if ix.check_or_init()? == Opened::Converted || upgraded {
            // The conversion rewrote every entry: the file holds the old
            // layout's pages as free space (a million entries: 1 GiB for
            // 250 MB of data); redb's file format v2 kept 2.5 MiB at the
            // least, v3 50 KiB. Compacting is worth its seconds once; if
            // it cannot be done the index is still whole, only larger.
            let _ = ix.db.compact();
        }
        ix.id = ix.id_or_init()?;
        Ok(ix)
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
        // No guard outlives its statement: one still held when a
        // conversion below commits would name pages the commit frees.
        let magic = meta.get(META_MAGIC).at(p, "reading the magic")?;
        if magic.is_none_or(|g| g.value() != MAGIC) {
            return Err(not_ours("a redb database without omirr's magic"));
        }
        let format = (meta.get(META_FORMAT).at(p, "reading the format")?)
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

    /// Writes the meta table and creates every table, in one transaction:
    /// a crash during init leaves an empty database, which is initialised
    /// again at the next start.
    fn init(&self) -> Result<(), IndexError> {
        let p = &self.path;
        let txn = self.db.begin_write().at(p, "starting to initialise")?;
        {
            let mut meta = txn.open_table(META).at(p, "creating the meta table")?;
            meta.insert(META_MAGIC, MAGIC).at(p, "writing the magic")?;
        }
        set_format(p, &txn, FORMAT)?;
        Tables::open(p, &txn)?;
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
}

/// Creates or opens the redb database at `path`, refusing a file that is
/// not one, or that another process has open.
fn create(path: &Path) -> Result<Database, IndexError> {
    // redb asserts on some damaged files (one cut short, say) instead
    // of returning an error; at open, where the file is still
    // untrusted, that is an unusable index, not a reason to die.
    let created =
        std::panic::catch_unwind(|| Database::builder().set_cache_size(CACHE_BYTES).create(path));
    let path = path.to_path_buf();
    let created = created.map_err(|panic| IndexError::NotAnIndex {
        path: path.clone(),
        why: format!(
            "redb cannot read it; it looks cut short or damaged: {}",
            panic_message(&*panic)
        ),
    })?;
    match created {
        Ok(db) => Ok(db),
        Err(DatabaseError::DatabaseAlreadyOpen) => Err(IndexError::InUse { path }),
        Err(DatabaseError::Storage(StorageError::Io(e)))
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            Err(IndexError::NotAnIndex {
                path,
                why: format!("redb cannot read it: {e}"),
            })
        }
        Err(source) => Err(IndexError::Open { path, source }),
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
