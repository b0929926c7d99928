//! Converting an index of an older format to [`crate::FORMAT`] when it is
//! opened, one step per format, each in one transaction that also
//! records the format it reached: a crash leaves the older format,
//! converted again at the next start. The older formats' values are in
//! [`crate::old_formats`].

use crate::aside::Aside;
use crate::codec;
use crate::error::{corrupt, decode_path, Ctx, IndexError};
use crate::index::Index;
use crate::old_formats::{v1, v3, EntryV3Ref, Stored, StoredRef};
use crate::pending::{fill_order, PENDING_ROWS};
use crate::record;
use crate::schema::{
    entry_inode_key, holder_key, loose_inode_key, ASIDE, BY_SEQ, BY_SEQ_V2, ENTRIES, ENTRIES_V2,
    HOLDERS, INODES, META, META_FORMAT, STATS,
};
use omirr_core::StatKey;
use omirr_core::{Change, Content};
use redb::{ReadableTable, Table, WriteTransaction};
use std::ops::Bound;
use std::path::Path;

/// What a failed step of a conversion was doing.
const WHAT: &str = "converting the index";

impl Index {
    /// Converts a format-1 index to format 2: each entry and set-aside
    /// change gets empty owner and group names (which receivers read as
    /// "use the number", format 1's only way).
    pub(crate) fn convert_from_1(&self) -> Result<(), IndexError> {
        self.convert_to(2, |p, txn| {
            let mut entries = txn.open_table(ENTRIES).at(p, "opening a table")?;
            convert_table(p, &mut entries, "entries", 1, |bytes| {
                let old: v1::Stored = codec::decode(bytes)?;
                let entry = old.entry.into_entry();
                codec::encode(&StoredRef {
                    seq: old.seq,
                    entry: EntryV3Ref::of(&entry),
                })
            })?;
            convert_aside(p, txn, 1, |bytes| {
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
            })
        })
    }

    /// Converts a format-2 index to format 3: each entry is re-encoded
    /// with its path's stat, the stats of paths with an entry leave the
    /// stats table, and the holders and inodes tables are rebuilt with
    /// their shorter keys from the entries and stats.
    pub(crate) fn convert_from_2(&self) -> Result<(), IndexError> {
        self.convert_to(3, |p, txn| {
            txn.rename_table(ENTRIES, ENTRIES_V2).at(p, WHAT)?;
            txn.rename_table(BY_SEQ, BY_SEQ_V2).at(p, WHAT)?;
            txn.delete_table(HOLDERS).at(p, WHAT)?;
            txn.delete_table(INODES).at(p, WHAT)?;
            sequences_from_2(p, txn)?;
            entries_from_2(p, txn)?;
            stats_from_2(p, txn)?;
            txn.delete_table(ENTRIES_V2).at(p, WHAT)?;
            txn.delete_table(BY_SEQ_V2).at(p, WHAT)?;
            Ok(())
        })
    }

    /// Converts a format-3 index to format 4. Format 4 added a second
    /// flags byte to an entry's value for what format 3 could not hold
    /// (an entry's base, FIFOs, extended attributes, hard links; see
    /// [`crate::record`]); a value without them is encoded as format 3
    /// encoded it, so the entries stay as they are. The set-aside changes
    /// hold [`omirr_core::Entry`] and [`omirr_core::Meta`] as encoded by
    /// serde, which gained fields: they are re-encoded (with no base).
    pub(crate) fn convert_from_3(&self) -> Result<(), IndexError> {
        self.convert_to(4, |p, txn| {
            convert_aside(p, txn, 3, |bytes| {
                let old: v3::Aside = codec::decode(bytes)?;
                codec::encode(&Aside::from(old))
            })
        })
    }

    /// Runs `convert` in one write transaction and records format `to`
    /// in it before committing.
    fn convert_to(
        &self,
        to: u32,
        convert: impl FnOnce(&Path, &WriteTransaction) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        let p = &self.path;
        let txn = self
            .db
            .begin_write()
            .at(p, "starting to convert the index")?;
        convert(p, &txn)?;
        set_format(p, &txn, to)?;
        txn.commit().at(p, "committing the converted index")
    }
}

/// Writes `format` as the index's format, in `txn`.
pub(crate) fn set_format(p: &Path, txn: &WriteTransaction, format: u32) -> Result<(), IndexError> {
    let mut meta = txn.open_table(META).at(p, "opening the meta table")?;
    meta.insert(META_FORMAT, &format.to_le_bytes()[..])
        .at(p, "writing the format")?;
    Ok(())
}

/// Re-encodes every set-aside change, as [`convert_table`] does.
fn convert_aside(
    p: &Path,
    txn: &WriteTransaction,
    from: u32,
    convert: impl Fn(&[u8]) -> Result<Vec<u8>, codec::CodecError>,
) -> Result<(), IndexError> {
    let mut aside = txn.open_table(ASIDE).at(p, "opening a table")?;
    convert_table(p, &mut aside, "aside", from, convert)
}

/// Re-encodes every value of `table`, of format `from`, with `convert`,
/// a slice of keys at a time (a table cannot change while it is
/// iterated).
fn convert_table(
    p: &Path,
    table: &mut Table<'_, &'static [u8], &'static [u8]>,
    name: &str,
    from: u32,
    convert: impl Fn(&[u8]) -> Result<Vec<u8>, codec::CodecError>,
) -> Result<(), IndexError> {
    let mut after: Bound<Vec<u8>> = Bound::Unbounded;
    loop {
        let mut slice = Vec::new();
        let range = (after.as_ref().map(Vec::as_slice), Bound::Unbounded);
        for item in table.range::<&[u8]>(range).at(p, WHAT)? {
            let (k, v) = item.at(p, WHAT)?;
            let new = convert(v.value()).map_err(|e| {
                corrupt(
                    p,
                    format!("a format-{from} value of {name} does not decode: {e}"),
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
        after = Bound::Excluded(last.clone());
        for (k, v) in &slice {
            table.insert(k.as_slice(), v.as_slice()).at(p, WHAT)?;
        }
    }
}

/// Format 2's sequences as they were, copied in fill order (format 2
/// left its leaves half full).
fn sequences_from_2(p: &Path, txn: &WriteTransaction) -> Result<(), IndexError> {
    let old_seqs = txn.open_table(BY_SEQ_V2).at(p, WHAT)?;
    let mut by_seq = txn.open_table(BY_SEQ).at(p, WHAT)?;
    let mut rows = Vec::new();
    for row in old_seqs.iter().at(p, WHAT)? {
        let (k, v) = row.at(p, WHAT)?;
        rows.push((k.value(), v.value().to_vec()));
        if rows.len() == PENDING_ROWS {
            for (k, v) in fill_order(std::mem::take(&mut rows)) {
                by_seq.insert(k, &v[..]).at(p, WHAT)?;
            }
        }
    }
    for (k, v) in fill_order(rows) {
        by_seq.insert(k, &v[..]).at(p, WHAT)?;
    }
    Ok(())
}

/// Format 2's entries, a slice at a time: each re-encoded with its
/// path's stat, and its holder and inode rows.
fn entries_from_2(p: &Path, txn: &WriteTransaction) -> Result<(), IndexError> {
    let old = txn.open_table(ENTRIES_V2).at(p, WHAT)?;
    let mut entries = txn.open_table(ENTRIES).at(p, WHAT)?;
    let mut holders = txn.open_table(HOLDERS).at(p, WHAT)?;
    let stats = txn.open_table(STATS).at(p, WHAT)?;
    let mut inodes = txn.open_table(INODES).at(p, WHAT)?;
    let mut rows = Vec::new();
    let mut flush = |rows: &mut Vec<(Vec<u8>, Vec<u8>)>| -> Result<(), IndexError> {
        for (k, v) in fill_order(std::mem::take(rows)) {
            entries.insert(&k[..], &v[..]).at(p, WHAT)?;
        }
        Ok(())
    };
    for row in old.iter().at(p, WHAT)? {
        let (k, v) = row.at(p, WHAT)?;
        let path = decode_path(p, "entries", k.value())?;
        let st: Stored = codec::decode(v.value()).map_err(|e| {
            corrupt(
                p,
                format!("a format-2 entry for {path} does not decode: {e}"),
            )
        })?;
        let stat = stats
            .get(k.value())
            .at(p, WHAT)?
            .map(|g| StatKey::from(g.value()));
        let entry = st.entry.into_entry();
        if let Content::File { hash, .. } = &entry.content {
            holders
                .insert(holder_key(hash, st.seq).as_slice(), ())
                .at(p, WHAT)?;
        }
        if let Some(s) = &stat {
            inodes
                .insert(entry_inode_key(s.ino, st.seq).as_slice(), ())
                .at(p, WHAT)?;
        }
        rows.push((
            k.value().to_vec(),
            record::encode(st.seq, &entry, stat.as_ref()),
        ));
        if rows.len() == PENDING_ROWS {
            flush(&mut rows)?;
        }
    }
    flush(&mut rows)
}

/// The stats of paths with an entry now live in it and leave the stats
/// table; the others stay, with their inode rows.
fn stats_from_2(p: &Path, txn: &WriteTransaction) -> Result<(), IndexError> {
    let old = txn.open_table(ENTRIES_V2).at(p, WHAT)?;
    let mut stats = txn.open_table(STATS).at(p, WHAT)?;
    let mut inodes = txn.open_table(INODES).at(p, WHAT)?;
    let mut after: Bound<Vec<u8>> = Bound::Unbounded;
    loop {
        let mut slice = Vec::new();
        let range = (after.as_ref().map(Vec::as_slice), Bound::Unbounded);
        for row in stats.range::<&[u8]>(range).at(p, WHAT)? {
            let (k, v) = row.at(p, WHAT)?;
            let has_entry = old.get(k.value()).at(p, WHAT)?.is_some();
            slice.push((k.value().to_vec(), StatKey::from(v.value()), has_entry));
            if slice.len() == 10_000 {
                break;
            }
        }
        let Some((last, _, _)) = slice.last() else {
            return Ok(());
        };
        after = Bound::Excluded(last.clone());
        for (k, stat, has_entry) in &slice {
            if *has_entry {
                stats.remove(&k[..]).at(p, WHAT)?;
            } else {
                let path = decode_path(p, "stats", k)?;
                inodes
                    .insert(loose_inode_key(stat.ino, &path).as_slice(), ())
                    .at(p, WHAT)?;
            }
        }
    }
}
