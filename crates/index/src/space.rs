//! redb's account of the database's space, and compaction: for
//! measuring the layout (`examples/density.rs`), not for the daemon.

use crate::error::{corrupt, Ctx, IndexError};
use crate::index::Index;
use redb::ReadableTableMetadata;

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
