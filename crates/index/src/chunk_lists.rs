//! The chunk-list cache: each content's chunk list (as `omirr-chunk`
//! encodes it) by content hash. Content-addressed, so never stale.

use crate::error::{Ctx, IndexError};
use crate::index::Index;
use crate::schema::CHUNK_LISTS;
use omirr_core::Hash;
use redb::TableError;

impl Index {
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
}
