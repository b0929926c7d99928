//! The tables of format 4 (format 3's, with a longer entry value; see
//! [`crate::record`]) and how their keys are built.
//!
//! Paths are stored as their raw bytes, so redb's byte order is
//! [`RelPath`]'s order and "everything below a directory" is one range
//! (see [`RelPath::below_range`]). An entry's value also holds its
//! path's stat; [`STATS`] keeps only the stats of paths without an entry.
//! Secondary indexes are sets of composite keys with unit values: a
//! prefix (8 bytes of a hash, an inode, a timestamp), then what names the
//! row (the entry's sequence, or a path where there is no entry). A lookup
//! is a prefix range that checks the full hash or the device in the
//! entry, and one key per row keeps several paths per hash or inode
//! without a read-modify-write of a list.

use omirr_core::expiry::Forgotten;
use omirr_core::{Hash, RelPath, Seq, Timestamp};
use redb::TableDefinition;

/// Magic string, format version. Its type must never change, so that any
/// future omirrd can read it and say what it found.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const META_MAGIC: &str = "magic";
pub const META_FORMAT: &str = "format";
/// A random id made with the index (8 bytes, little-endian; never 0): a
/// peer's cursor is a sequence of one index, and this says which. Added
/// to an index that lacks it when it is opened.
pub const META_ID: &str = "id";
/// The expiry watermark: what this index has forgotten (see
/// [`omirr_core::expiry::Forgotten`]); 16 bytes, the greatest sequence
/// then the timestamp above every forgotten entry, each little-endian.
/// Absent: nothing forgotten yet.
pub const META_FORGOTTEN: &str = "forgotten";
pub const MAGIC: &[u8] = b"omirr-index";

/// Counters: [`LAST_SEQ`], [`HLC_LAST`].
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// The last local sequence issued. Never lowered, even when the path that
/// holds it is expired, so a sequence is never reused.
pub const LAST_SEQ: &str = "last_seq";
/// The greatest timestamp the clock has issued or seen.
pub const HLC_LAST: &str = "hlc_last";

/// path -> the winning entry, its seq and the path's cached stat (see
/// [`crate::record`] for the bytes).
pub const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// Format 2's entries table, renamed while it is converted (within the
/// converting transaction only).
pub const ENTRIES_V2: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries_v2");
/// seq -> path, only each path's latest sequence.
pub const BY_SEQ: TableDefinition<u64, &[u8]> = TableDefinition::new("by_seq");
/// Format 2's by_seq, renamed while it is copied into a fuller one
/// (within the converting transaction only).
pub const BY_SEQ_V2: TableDefinition<u64, &[u8]> = TableDefinition::new("by_seq_v2");
/// [`holder_key`]: 8 bytes of the hash and the sequence, for every live
/// file entry. A lookup checks the full hash in the entry; the key is a
/// fifth of format 2's (the whole hash and the path).
pub const HOLDERS: TableDefinition<&[u8], ()> = TableDefinition::new("holders");
/// timestamp (big-endian) ++ path, for every tombstone: expiry is a range.
pub const TOMBSTONES: TableDefinition<&[u8], ()> = TableDefinition::new("tombstones");
/// peer host name -> highest sequence received from it.
pub const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// path -> (dev, ino, size, mtime_ns, ctime_ns): the stat cache of paths
/// that have no entry (rare: a stat is kept in its path's entry value,
/// see [`ENTRIES`]).
pub const STATS: TableDefinition<&[u8], StatTuple> = TableDefinition::new("stats");
/// [`entry_inode_key`] or [`loose_inode_key`]: the inode, then the
/// sequence of the entry holding the stat or the path of a stat kept
/// apart, for every cached stat. A lookup checks the device in the stat.
pub const INODES: TableDefinition<&[u8], ()> = TableDefinition::new("inodes");

/// content hash -> its chunk list, as `omirr-chunk` encodes it. A cache:
/// content-addressed, so never stale; created on first use, so an index
/// without it is still format 1.
pub const CHUNK_LISTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chunk_lists");

/// peer host name ++ NUL ++ path -> codec([`crate::Aside`]): a peer's change
/// this host could not apply, set aside with its reason (see
/// docs/sync-model.md). Created on first use, like [`CHUNK_LISTS`].
pub const ASIDE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("aside");

/// peer host name -> the id of the peer's index that its cursor in
/// [`CURSORS`] counts in. Created on first use.
pub const PEER_INDEXES: TableDefinition<&str, u64> = TableDefinition::new("peer_indexes");

/// host name -> the greatest timestamp of a version made by that host
/// that was ever recorded here. Tells a host whose index is new or
/// restored which of its own changes it lacks (see
/// [`crate::Index::latest_of`]). Created on first use, like
/// [`CHUNK_LISTS`]; an index from before it reads as 0 for every host.
pub const LATEST: TableDefinition<&str, u64> = TableDefinition::new("latest");

/// peer host name -> (): this host must reconcile with that peer (it
/// found its cursor below what the peer forgot); cleared when the
/// reconciliation is complete. Created on first use.
pub const RECONCILE: TableDefinition<&str, ()> = TableDefinition::new("reconcile");

pub fn aside_key(peer: &str, path: &RelPath) -> Vec<u8> {
    let mut k = Vec::with_capacity(peer.len() + 1 + path.as_bytes().len());
    k.extend_from_slice(peer.as_bytes());
    k.push(0);
    k.extend_from_slice(path.as_bytes());
    k
}

pub type StatTuple = (u64, u64, u64, i64, i64);

/// How many bytes of a content hash key the holders table.
pub const HOLDER_PREFIX: usize = 8;

/// A number as a key part: its byte count, then its significant bytes,
/// big-endian (3 or 4 bytes for a typical inode number or sequence, not
/// 8). The count first keeps numeric order, and makes no number's bytes a
/// prefix of another's.
pub fn ordered_u64(v: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    put_ordered_u64(&mut k, v);
    k
}

fn put_ordered_u64(k: &mut Vec<u8>, v: u64) {
    let skip = (v.leading_zeros() / 8) as usize;
    k.push((8 - skip) as u8);
    k.extend_from_slice(&v.to_be_bytes()[skip..]);
}

/// The number at the start of `bytes` (see [`ordered_u64`]) and the rest.
pub fn take_ordered_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (&n, rest) = bytes.split_first()?;
    let n = usize::from(n);
    if n > 8 || rest.len() < n {
        return None;
    }
    let mut be = [0u8; 8];
    be[8 - n..].copy_from_slice(&rest[..n]);
    Some((u64::from_be_bytes(be), &rest[n..]))
}

/// A holders key: the hash's first [`HOLDER_PREFIX`] bytes, then the
/// holder's sequence (whose `by_seq` row names its path).
pub fn holder_key(hash: &Hash, seq: Seq) -> Vec<u8> {
    let mut k = Vec::with_capacity(HOLDER_PREFIX + 9);
    k.extend_from_slice(&hash[..HOLDER_PREFIX]);
    put_ordered_u64(&mut k, seq);
    k
}

/// The sequence of a holders key.
pub fn holder_seq(key: &[u8]) -> Option<Seq> {
    match take_ordered_u64(key.get(HOLDER_PREFIX..)?)? {
        (seq, []) => Some(seq),
        _ => None,
    }
}

pub fn tombstone_key(ts: u64, path: &RelPath) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + path.as_bytes().len());
    k.extend_from_slice(&ts.to_be_bytes());
    k.extend_from_slice(path.as_bytes());
    k
}

pub fn inode_prefix(ino: u64) -> Vec<u8> {
    ordered_u64(ino)
}

/// After the inode in an inodes key: a sequence follows (a path with an
/// entry, whose stat is in it).
const INODE_OF_ENTRY: u8 = 0;
/// After the inode in an inodes key: a path follows (its stat is in the
/// stats table).
const INODE_OF_LOOSE: u8 = 1;

/// The inodes key of the stat in the entry at `seq`.
pub fn entry_inode_key(ino: u64, seq: Seq) -> Vec<u8> {
    let mut k = inode_prefix(ino);
    k.push(INODE_OF_ENTRY);
    put_ordered_u64(&mut k, seq);
    k
}

/// The inodes key of the stat of `path`, which has no entry.
pub fn loose_inode_key(ino: u64, path: &RelPath) -> Vec<u8> {
    let mut k = inode_prefix(ino);
    k.push(INODE_OF_LOOSE);
    k.extend_from_slice(path.as_bytes());
    k
}

/// Whose stat an inodes key is, from what follows its inode.
#[derive(Debug, PartialEq, Eq)]
pub enum InodeOf<'a> {
    Entry(Seq),
    Loose(&'a [u8]),
}

pub fn inode_of(rest: &[u8]) -> Option<InodeOf<'_>> {
    match rest.split_first()? {
        (&INODE_OF_ENTRY, seq) => match take_ordered_u64(seq)? {
            (seq, []) => Some(InodeOf::Entry(seq)),
            _ => None,
        },
        (&INODE_OF_LOOSE, path) => Some(InodeOf::Loose(path)),
        _ => None,
    }
}

/// Splits a composite key into its fixed-width prefix and the path.
pub fn split_key(key: &[u8], prefix_len: usize) -> Option<(&[u8], &[u8])> {
    (key.len() >= prefix_len).then(|| key.split_at(prefix_len))
}

/// The watermark as [`META_FORGOTTEN`] holds it: the sequence, then the
/// timestamp, 8 bytes each, little-endian.
pub fn encode_forgotten(f: &Forgotten) -> [u8; 16] {
    let mut b = [0; 16];
    b[..8].copy_from_slice(&f.seq.to_le_bytes());
    b[8..].copy_from_slice(&f.below.0.to_le_bytes());
    b
}

pub fn decode_forgotten(b: &[u8]) -> Option<Forgotten> {
    let seq: [u8; 8] = b.get(..8)?.try_into().ok()?;
    let below: [u8; 8] = b.get(8..16)?.try_into().ok()?;
    (b.len() == 16).then(|| Forgotten {
        seq: u64::from_le_bytes(seq),
        below: Timestamp(u64::from_le_bytes(below)),
    })
}

#[cfg(test)]
mod tests {
    use super::{inode_of, inode_prefix, take_ordered_u64, InodeOf};

    #[test]
    fn inode_prefixes_keep_numeric_order_and_are_prefix_free() {
        let inos = [
            0,
            1,
            255,
            256,
            65_535,
            65_536,
            1 << 40,
            u64::MAX - 1,
            u64::MAX,
        ];
        for w in inos.windows(2) {
            assert!(inode_prefix(w[0]) < inode_prefix(w[1]), "{w:?}");
        }
        for a in inos {
            for b in inos {
                if a != b {
                    assert!(!inode_prefix(b).starts_with(&inode_prefix(a)), "{a} {b}");
                }
            }
        }
        assert_eq!(inode_prefix(1_234_567), [3, 0x12, 0xd6, 0x87]);
        for v in inos {
            assert_eq!(take_ordered_u64(&inode_prefix(v)), Some((v, &[][..])));
        }
        assert_eq!(take_ordered_u64(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(take_ordered_u64(&[2, 1]), None);
        let p = omirr_core::RelPath::new(&b"a/b"[..]).expect("path");
        let k = super::loose_inode_key(5, &p);
        assert_eq!(inode_of(&k[2..]), Some(InodeOf::Loose(b"a/b")));
        let k = super::entry_inode_key(5, 300);
        assert_eq!(inode_of(&k[2..]), Some(InodeOf::Entry(300)));
        assert_eq!(
            super::holder_seq(&super::holder_key(&[7; 32], 300)),
            Some(300)
        );
    }
}
