//! The bytes of every table, pinned: the tables' names and redb types,
//! and how each key and each value that is not an entry or a set-aside
//! change is laid out (those two are `tests/golden.rs`'s, through the
//! codec the fuzz harness drives). An index file outlives the binary
//! that wrote it: if one of these fails, an index written before would
//! be misread. Bump [`crate::FORMAT`], convert the older format when an
//! index is opened ([`crate::convert`]), and only then update the bytes
//! here. `tests/redb2.rs` opens a whole file that an older omirrd wrote.

use crate::schema::*;
use omirr_core::expiry::Forgotten;
use omirr_core::StatKey;
use omirr_core::{RelPath, Timestamp};
use redb::{Key, TableDefinition, TableHandle, Value};

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// `value` as redb stores it in a table of `V`s.
fn stored<'a, V: Value + 'a>(value: &'a V::SelfType<'a>) -> String {
    hex(V::as_bytes(value).as_ref())
}

fn path(s: &str) -> RelPath {
    RelPath::new(s.as_bytes().to_vec()).expect("path")
}

/// A table's name and its key and value types as redb names them (it
/// stores both, and refuses to open a table as another type).
fn shape<K: Key + 'static, V: Value + 'static>(def: TableDefinition<K, V>) -> String {
    format!(
        "{}: {} -> {}",
        def.name(),
        K::type_name().name(),
        V::type_name().name()
    )
}

#[test]
fn the_tables_have_these_names_and_types() {
    let shapes = [
        shape(META),
        shape(COUNTERS),
        shape(ENTRIES),
        shape(BY_SEQ),
        shape(HOLDERS),
        shape(TOMBSTONES),
        shape(CURSORS),
        shape(STATS),
        shape(INODES),
        shape(CHUNK_LISTS),
        shape(ASIDE),
        shape(PEER_INDEXES),
        shape(LATEST),
        shape(RECONCILE),
    ];
    assert_eq!(
        shapes,
        [
            "meta: &str -> &[u8]",
            "counters: &str -> u64",
            "entries: &[u8] -> &[u8]",
            "by_seq: u64 -> &[u8]",
            "holders: &[u8] -> ()",
            "tombstones: &[u8] -> ()",
            "cursors: &str -> u64",
            "stats: &[u8] -> (u64,u64,u64,i64,i64)",
            "inodes: &[u8] -> ()",
            "chunk_lists: &[u8] -> &[u8]",
            "aside: &[u8] -> &[u8]",
            "peer_indexes: &str -> u64",
            "latest: &str -> u64",
            "reconcile: &str -> ()",
        ]
    );
    // The names of the meta and counters rows.
    assert_eq!(
        [
            META_MAGIC,
            META_FORMAT,
            META_ID,
            META_FORGOTTEN,
            LAST_SEQ,
            HLC_LAST
        ],
        ["magic", "format", "id", "forgotten", "last_seq", "hlc_last"]
    );
}

#[test]
fn the_meta_values_are_laid_out_so() {
    assert_eq!(MAGIC, b"omirr-index");
    // The format and the id as `Index::open` writes them: little-endian.
    assert_eq!(hex(&crate::FORMAT.to_le_bytes()), "04000000");
    assert_eq!(hex(&0x5eed_5eed_u64.to_le_bytes()), "ed5eed5e00000000");
    let forgotten = Forgotten {
        seq: 4242,
        below: Timestamp(1_764_633_600_000_000_000),
    };
    let bytes = encode_forgotten(&forgotten);
    assert_eq!(hex(&bytes), "92100000000000000000b8e6e83c7d18");
    assert_eq!(decode_forgotten(&bytes), Some(forgotten));
}

#[test]
fn the_keys_are_laid_out_so() {
    let hash: [u8; 32] = std::array::from_fn(|i| i as u8);
    assert_eq!(hex(&holder_key(&hash, 300)), "000102030405060702012c");
    assert_eq!(
        hex(&tombstone_key(0x0102_0304_0506_0708, &path("a/b"))),
        "0102030405060708612f62"
    );
    assert_eq!(
        hex(&aside_key("beta", &path("srv/x"))),
        "62657461007372762f78"
    );
    assert_eq!(hex(&entry_inode_key(1_234_567, 300)), "0312d6870002012c");
    assert_eq!(
        hex(&loose_inode_key(1_234_567, &path("a/b"))),
        "0312d68701612f62"
    );
    assert_eq!(hex(&ordered_u64(0)), "00");
    assert_eq!(hex(&ordered_u64(u64::MAX)), "08ffffffffffffffff");
    // Paths, host names and the meta and counters names are their bytes.
    assert_eq!(stored::<&str>(&"beta"), "62657461");
    assert_eq!(stored::<&[u8]>(&&b"a/b"[..]), "612f62");
    // by_seq's key: the sequence, as redb lays out a u64.
    assert_eq!(stored::<u64>(&300), "2c01000000000000");
}

#[test]
fn the_values_redb_lays_out_are_so() {
    // Counters, cursors, peer index ids and latest timestamps.
    assert_eq!(stored::<u64>(&42), "2a00000000000000");
    // A stat kept apart from an entry: five fixed 8-byte integers.
    let stat = StatKey {
        dev: 2049,
        ino: 1_234_567,
        size: 12_595,
        mtime_ns: 1_764_633_600_123_456_789,
        ctime_ns: 1_764_633_600_123_999_999,
    };
    let tuple = StatTuple::from(stat);
    let bytes = stored::<StatTuple>(&tuple);
    assert_eq!(
        bytes,
        "010800000000000087d6120000000000333100000000000015cd13eee83c7d18ff161ceee83c7d18"
    );
    let raw = data_encoding::HEXLOWER
        .decode(bytes.as_bytes())
        .expect("hex");
    assert_eq!(StatKey::from(<StatTuple as Value>::from_bytes(&raw)), stat);
    // The sets' rows hold nothing but their keys.
    assert_eq!(stored::<()>(&()), "");
}
