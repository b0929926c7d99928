//! Converting an index of an older format to [`crate::FORMAT`] when it is
//! opened, each step in one transaction: a crash leaves the older format,
//! converted again at the next start. The older formats' values are in
//! [`crate::old_formats`].

use crate::aside::Aside;
use crate::codec;
use crate::error::{corrupt, decode_path, Ctx, IndexError};
use crate::index::{Index, FORMAT};
use crate::old_formats::{v1, v3, EntryV3Ref, Stored, StoredRef};
use crate::pending::{fill_order, PENDING_ROWS};
use crate::record;
use crate::schema::{
    entry_inode_key, holder_key, loose_inode_key, ASIDE, BY_SEQ, BY_SEQ_V2, ENTRIES, ENTRIES_V2,
    HOLDERS, INODES, META, META_FORMAT, STATS,
};
use crate::stat::StatKey;
use omirr_core::{Change, Content};
use redb::{ReadableTable, Table};
use std::ops::Bound;
use std::path::Path;

impl Index {
    /// Converts a format-1 index to format 2 in one transaction: each
    /// entry and set-aside change gets empty owner and group names (which
    /// receivers read as "use the number", format 1's only way). A crash
    /// leaves format 1, converted again at the next start.
    pub(crate) fn convert_from_1(&self) -> Result<(), IndexError> {
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
    pub(crate) fn convert_from_2(&self) -> Result<(), IndexError> {
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
    pub(crate) fn convert_from_3(&self) -> Result<(), IndexError> {
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
