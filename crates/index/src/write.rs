//! Writing: every write method is one transaction over
//! [`crate::tables::Tables`]; [`Index::commit`] lands a whole
//! [`Batch`] (changes, stats, a peer's cursor, set-aside changes and the
//! clock) at once.

use crate::batch::{Batch, StatUpdate};
use crate::codec;
use crate::error::{Ctx, IndexError};
use crate::index::Index;
use crate::schema::{aside_key, ASIDE};
use crate::tables::Tables;
use omirr_core::StatKey;
use omirr_core::{Change, RelPath, Seq, Timestamp};

impl Index {
    /// Runs `f` on the tables in one write transaction and commits it.
    /// An error anywhere drops the transaction, which aborts it.
    pub(crate) fn write<R>(
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
                            let value = codec::encode(a).map_err(|e| IndexError::Encode {
                                path: t.path.to_path_buf(),
                                what: "a set-aside change",
                                detail: e.to_string(),
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

    /// Raises the persisted clock to `ts`. Never lowers it: a clock that
    /// went back across a restart could stamp a live change below one it
    /// had already seen.
    pub fn set_hlc_last(&self, ts: Timestamp) -> Result<(), IndexError> {
        self.write(|t| {
            t.hlc = t.hlc.max(ts.0);
            Ok(())
        })
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
}
