//! [`Index`]: the handle on the redb database, and what every operation
//! on it shares. The operations themselves are grouped by job in the
//! sibling modules: opening (`open`, and `convert` for older formats),
//! writing (`write`, with one transaction's tables in `tables`), reading
//! (`reads`, and `reader` for many lookups in one transaction), peers
//! (`peers`), tombstone expiry (`expiry`), the changes set aside
//! (`aside`), the chunk-list cache (`chunk_lists`), the consistency check
//! (`verify`) and the space report (`space`).

use crate::error::{Ctx, IndexError};
use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
};
use std::fmt;
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

/// A host's persisted index: the winning entry per path with its local
/// sequence, the peers' cursors, the clock, and the stat/inode cache.
///
/// It answers like [`omirr_core::mem::MemIndex`], which is its model, and
/// adds the persistence: every write method is one redb transaction, so
/// it lands whole or not at all, and pays one durable commit. Methods
/// take `&self`; redb serialises writers and lets readers run alongside.
pub struct Index {
    pub(crate) db: Database,
    pub(crate) path: PathBuf,
    /// See [`Index::id`].
    pub(crate) id: u64,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index").field("path", &self.path).finish()
    }
}

pub(crate) fn counter(
    db: &Path,
    counters: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<u64, IndexError> {
    Ok(counters
        .get(name)
        .at(db, "reading a counter")?
        .map_or(0, |g| g.value()))
}

impl Index {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This index's id: random, made with it, never 0. A peer's cursor
    /// for this host counts in the index with this id; an index made anew
    /// (the state directory was lost) or restored from a backup has
    /// another id or an older sequence, and peers start over from it
    /// ([`Index::meet_peer_index`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn read(&self) -> Result<ReadTransaction, IndexError> {
        self.db
            .begin_read()
            .at(&self.path, "starting a read transaction")
    }

    pub(crate) fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        txn: &ReadTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<K, V>, IndexError> {
        txn.open_table(def).at(&self.path, "opening a table")
    }
}
