//! The index's record format, byte for byte. An index file outlives the
//! binary that wrote it: if one of these tests fails, the bytes omirrd
//! stores have changed, and an index written by the previous release would
//! be misread. Then bump `omirr_index::FORMAT` and convert the older
//! format when an index is opened (as `Index::convert_from_1` does), and
//! only then update the bytes here.

use omirr_core::StatKey;
use omirr_core::{Change, Content, Entry, HostId, Meta, Name, RelPath, Timestamp, Version, Xattrs};
use omirr_index::fuzzing::{
    decode_aside, decode_entry, decode_record, encode_aside, encode_entry, encode_record,
};
use omirr_index::{Aside, FORMAT};

fn name(s: &str) -> Name {
    Name::new(s.as_bytes()).expect("a valid name")
}

fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        uid: 33,
        gid: 1000,
        mtime_ns: 1_764_633_600_123_456_789,
        owner: name("www-data"),
        group: name("staff"),
        ..Meta::default()
    }
}

fn version(host: &str) -> Version {
    Version {
        ts: Timestamp(1_764_633_600_987_654_321),
        host: HostId::new(host),
    }
}

/// One entry of each kind, with the bytes format 4 stores for it under
/// sequence 4242. Those format 3 could hold are stored as format 3 stored
/// them (the same bytes): a format-3 value is a format-4 value.
fn entries() -> Vec<(Entry, &'static str)> {
    let mut hash = [0u8; 32];
    for (i, b) in hash.iter_mut().enumerate() {
        *b = i as u8;
    }
    vec![
        (
            Entry {
                content: Content::File { size: 12_595, hash },
                meta: meta(0o644),
                version: version("alpha"),
                base: None,
            },
            FILE,
        ),
        (
            Entry {
                content: Content::Dir,
                meta: meta(0o2775),
                version: version("beta"),
                base: None,
            },
            DIR,
        ),
        (
            Entry {
                content: Content::Symlink {
                    target: b"../shared/\xffconf".to_vec(),
                },
                meta: Meta {
                    owner: Name::EMPTY,
                    ..meta(0o777)
                },
                version: version("gamma"),
                base: None,
            },
            SYMLINK,
        ),
        (
            Entry {
                content: Content::Deleted,
                meta: Meta::default(),
                version: version("alpha"),
                base: None,
            },
            TOMBSTONE,
        ),
        (
            Entry {
                content: Content::File { size: 12_595, hash },
                meta: meta(0o644),
                version: version("alpha"),
                base: Some(Version {
                    ts: Timestamp(1_764_633_600_000_000_001),
                    host: HostId::new("beta"),
                }),
            },
            FILE_WITH_BASE,
        ),
        (
            Entry {
                content: Content::Fifo,
                meta: meta(0o640),
                version: version("alpha"),
                base: None,
            },
            FIFO,
        ),
        (
            Entry {
                content: Content::File { size: 12_595, hash },
                meta: Meta {
                    xattrs: Xattrs::new(vec![
                        (b"user.comment".to_vec(), b"kept".to_vec()),
                        (b"system.posix_acl_access".to_vec(), vec![2, 0, 0, 0]),
                    ])
                    .expect("xattrs"),
                    link: Some(Box::new(
                        RelPath::new(b"srv/leader".to_vec()).expect("path"),
                    )),
                    ..meta(0o644)
                },
                version: version("alpha"),
                base: None,
            },
            EXTENDED,
        ),
    ]
}

const FILE: &str = "922100b1689621e93c7d1805616c706861b362000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa40321e80715cd13eee83c7d18087777772d64617461057374616666";
const DIR: &str =
    "922101b1689621e93c7d180462657461fd0b21e80715cd13eee83c7d18087777772d64617461057374616666";
const SYMLINK: &str = "922102b1689621e93c7d180567616d6d610f2e2e2f7368617265642fff636f6e66ff0321e80715cd13eee83c7d1800057374616666";
const TOMBSTONE: &str = "922113b1689621e93c7d1805616c706861";
/// The file above with a base: flags | EXT (0x80), the EXT byte (bit 0:
/// a base), and at the end the base's timestamp (u64 LE) and host.
const FILE_WITH_BASE: &str = "92218001b1689621e93c7d1805616c706861b362000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa40321e80715cd13eee83c7d18087777772d646174610573746166660100b8e6e83c7d180462657461";
/// Format 4: a FIFO (ext bit 1).
const FIFO: &str =
    "92218002b1689621e93c7d1805616c706861a00321e80715cd13eee83c7d18087777772d64617461057374616666";
/// Format 4: a file with extended attributes (ext bit 2) and a hard
/// link's leader (ext bit 3).
const EXTENDED: &str = "9221800cb1689621e93c7d1805616c706861b362000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa40321e80715cd13eee83c7d18087777772d64617461057374616666021773797374656d2e706f7369785f61636c5f61636365737304020000000c757365722e636f6d6d656e74046b6570740a7372762f6c6561646572";
/// The file above with its path's cached stat (see `stat()`).
const FILE_WITH_STAT: &str = "922164b1689621e93c7d1805616c706861b362000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa40321e80715cd13eee83c7d18087777772d64617461057374616666811087ad4bd4a742";
/// Format 4 (format 3's, with the metadata's empty attribute list and
/// no hard link, `0000` after the group name, and no base, `00` after
/// the version's host; `Index::convert_from_3` re-encodes format 3's).
const ASIDE: &str = "127372762f7777772f696e6465782e68746d6c00fb3331000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1ffba40121fbe803fd2a9a27dcd179fa30087777772d646174610573746166660000fdb1689621e93c7d1805616c706861003863616e6e6f74207772697465207372762f7777772f696e6465782e68746d6c3a204e6f207370616365206c656674206f6e2064657669636503fc002c2e69";

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

#[test]
fn the_format_is_4() {
    assert_eq!(FORMAT, 4, "a new format needs new golden bytes below");
}

#[test]
fn entries_are_stored_as_format_4_lays_them_out() {
    let mut changed = Vec::new();
    for (entry, golden) in entries() {
        let bytes = encode_entry(4242, &entry).expect("encodes");
        if hex(&bytes) != golden {
            changed.push(format!(
                "{:?} is now stored as {}",
                entry.content,
                hex(&bytes)
            ));
            continue;
        }
        let stored = data_encoding::HEXLOWER
            .decode(golden.as_bytes())
            .expect("hex");
        assert_eq!(
            decode_entry(&stored).expect("decodes"),
            (4242, entry),
            "the stored bytes read back"
        );
    }
    assert!(changed.is_empty(), "{}", changed.join("\n"));
}

/// A stat like a scan's: the file's size and mtime (stored as flags), a
/// ctime a little later.
fn stat() -> StatKey {
    StatKey {
        dev: 2049,
        ino: 1_234_567,
        size: 12_595,
        mtime_ns: 1_764_633_600_123_456_789,
        ctime_ns: 1_764_633_600_123_999_999,
    }
}

#[test]
fn an_entry_with_its_stat_is_stored_as_format_4_lays_it_out() {
    let (entry, _) = entries().swap_remove(0);
    let bytes = encode_record(4242, &entry, Some(&stat()));
    assert_eq!(hex(&bytes), FILE_WITH_STAT);
    let stored = data_encoding::HEXLOWER
        .decode(FILE_WITH_STAT.as_bytes())
        .expect("hex");
    assert_eq!(
        decode_record(&stored).expect("decodes"),
        (4242, entry, Some(stat()))
    );
}

#[test]
fn a_set_aside_change_is_stored_as_format_4_lays_it_out() {
    let (entry, _) = entries().swap_remove(0);
    let aside = Aside {
        change: Change {
            path: RelPath::new(b"srv/www/index.html".to_vec()).expect("path"),
            entry,
        },
        reason: "cannot write srv/www/index.html: No space left on device".into(),
        attempts: 3,
        since: 1_764_633_600,
    };
    let bytes = encode_aside(&aside).expect("encodes");
    assert_eq!(hex(&bytes), ASIDE);
    let stored = data_encoding::HEXLOWER
        .decode(ASIDE.as_bytes())
        .expect("hex");
    let back = decode_aside(&stored).expect("decodes");
    assert_eq!(back.change, aside.change);
    assert_eq!(back.reason, aside.reason);
    assert_eq!((back.attempts, back.since), (3, 1_764_633_600));
}
