//! An index that an omirrd built with redb 2 wrote, in redb's file
//! format v2, which redb 3 and later refuse to open, opens upgraded.
//!
//! The fixture `fixtures/index-redb2.redb` holds one row of every kind
//! (the entries below with their stats, a stat kept apart, a cursor, a
//! peer's index id, a set-aside change, a chunk list, a pending
//! reconciliation, the clock, an expiry watermark). It was written by
//! this file's `writes_the_fixture` (at commit 0ab027a, in git history)
//! with omirr-index on redb 2.6.4, and compacted.

use omirr_core::expiry::Forgotten;
use omirr_core::StatKey;
use omirr_core::{
    Change, Content, Entry, HostId, IndexView, Meta, Name, Timestamp, Version, Xattrs,
};
use omirr_index::{Aside, Index, StatUpdate};
use omirr_testkit::p;

const FIXTURE: &[u8] = include_bytes!("fixtures/index-redb2.redb");

/// The fixture's index id, as the writer printed it.
const ID: u64 = 0x4f0c_0db9_4046_fd38;
/// Its last sequence: the entries below, and a tombstone forgotten.
const LAST_SEQ: u64 = 7;
/// What it forgot: that tombstone.
const FORGOTTEN: Forgotten = Forgotten {
    seq: 7,
    below: Timestamp(1_764_633_600_000_000_009),
};

fn version(k: u64, host: &str) -> Version {
    Version {
        ts: Timestamp(1_764_633_600_000_000_000 + k),
        host: HostId::new(host),
    }
}

fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        uid: 33,
        gid: 1000,
        mtime_ns: 1_764_633_600_123_456_789,
        owner: Name::new(b"www-data").expect("name"),
        group: Name::new(b"staff").expect("name"),
        ..Meta::default()
    }
}

fn change(path: &str, k: u64, content: Content, meta: Meta) -> Change {
    Change {
        path: p(path),
        entry: Entry {
            content,
            meta,
            version: version(k, if k % 2 == 0 { "alpha" } else { "beta" }),
            base: None,
        },
    }
}

fn stat(ino: u64) -> StatKey {
    StatKey {
        dev: 2049,
        ino,
        size: 12_595,
        mtime_ns: 1_764_633_600_123_456_789,
        ctime_ns: 1_764_633_600_123_999_999 + ino as i64,
    }
}

fn hash(seed: u8) -> [u8; 32] {
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    h
}

/// The entries, each with its stat update.
fn changes() -> Vec<(Change, StatUpdate)> {
    let attrs = Meta {
        xattrs: Xattrs::new(vec![(b"user.comment".to_vec(), b"kept".to_vec())]).expect("xattrs"),
        ..meta(0o600)
    };
    vec![
        (
            change("srv", 1, Content::Dir, meta(0o2775)),
            StatUpdate::Set(stat(100)),
        ),
        (
            change(
                "srv/index.html",
                2,
                Content::File {
                    size: 12_595,
                    hash: hash(0),
                },
                meta(0o644),
            ),
            StatUpdate::Set(stat(101)),
        ),
        (
            change(
                "srv/link",
                3,
                Content::Symlink {
                    target: b"index.html".to_vec(),
                },
                meta(0o777),
            ),
            StatUpdate::Set(stat(102)),
        ),
        (
            change("srv/pipe", 4, Content::Fifo, meta(0o640)),
            StatUpdate::Keep,
        ),
        (
            change("srv/old", 5, Content::Deleted, Meta::default()),
            StatUpdate::Forget,
        ),
        (
            change(
                "srv/attrs",
                6,
                Content::File {
                    size: 5,
                    hash: hash(9),
                },
                attrs,
            ),
            StatUpdate::Set(stat(103)),
        ),
    ]
}

fn aside() -> Aside {
    Aside {
        change: change(
            "srv/blocked",
            7,
            Content::File {
                size: 3,
                hash: hash(5),
            },
            meta(0o644),
        ),
        reason: "a local file is in the way".into(),
        attempts: 2,
        since: 1_764_633_600,
    }
}

/// The fixture opens: upgraded to redb's current file format once, in
/// place, with every row it held, and opens as it is from then on.
#[test]
fn an_index_in_redb_file_format_v2_opens_upgraded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(omirr_index::FILE_NAME);
    std::fs::write(&path, FIXTURE).expect("copy the fixture");
    // What redb 3 and later make of it as it is.
    match redb::Database::open(&path) {
        Err(redb::DatabaseError::UpgradeRequired(2)) => {}
        Err(e) => panic!("not redb's file format v2: {e}"),
        Ok(_) => panic!("redb opened the fixture without an upgrade"),
    }
    let ix = Index::open(dir.path()).expect("opens, upgraded");
    holds_the_fixture(&ix);
    drop(ix);
    redb::Database::open(&path).expect("redb's current file format now");
    let ix = Index::open(dir.path()).expect("opens again");
    holds_the_fixture(&ix);
}

fn holds_the_fixture(ix: &Index) {
    ix.verify().expect("consistent");
    assert_eq!(ix.id(), ID);
    assert_eq!(ix.last_seq().expect("last_seq"), LAST_SEQ);
    let want = changes();
    for (c, s) in &want {
        assert_eq!(
            ix.entry(&c.path).expect("entry").as_ref(),
            Some(&c.entry),
            "{}",
            c.path
        );
        let kept = ix.stat(&c.path).expect("stat");
        match s {
            StatUpdate::Set(k) => assert_eq!(kept, Some(*k), "{}", c.path),
            StatUpdate::Keep | StatUpdate::Forget => assert_eq!(kept, None, "{}", c.path),
        }
    }
    assert_eq!(ix.len().expect("len"), want.len() as u64);
    assert_eq!(
        ix.stat(&p("srv/untracked")).expect("stat"),
        Some(stat(104)),
        "a stat kept apart"
    );
    assert_eq!(
        ix.path_of_inode(2049, 104).expect("inode"),
        Some(p("srv/untracked"))
    );
    assert_eq!(
        ix.path_of_inode(2049, 101).expect("inode"),
        Some(p("srv/index.html"))
    );
    assert_eq!(
        ix.holder_of(&hash(0)).expect("holder"),
        Some(p("srv/index.html"))
    );
    let since: Vec<String> = (ix.since(0, 100).expect("since").into_iter())
        .map(|(seq, c)| format!("{seq} {}", c.path))
        .collect();
    assert_eq!(
        since,
        [
            "1 srv",
            "2 srv/index.html",
            "3 srv/link",
            "4 srv/pipe",
            "5 srv/old",
            "6 srv/attrs"
        ]
    );
    let beta = HostId::new("beta");
    assert_eq!(ix.cursor(&beta).expect("cursor"), 42);
    assert_eq!(ix.peer_index(&beta).expect("peer index"), 0x5eed);
    assert!(ix.must_reconcile(&beta).expect("reconcile"));
    let kept = ix.aside(Some(&beta)).expect("aside");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].1, aside());
    assert_eq!(
        ix.chunk_list(&hash(0)).expect("chunk list").as_deref(),
        Some(&b"a chunk list"[..])
    );
    assert_eq!(
        ix.latest_of(&HostId::new("alpha")).expect("latest"),
        version(8, "alpha").ts
    );
    assert_eq!(
        ix.hlc_last().expect("clock"),
        Timestamp(1_764_633_600_000_000_099)
    );
    assert_eq!(ix.forgotten().expect("watermark"), FORGOTTEN);
}
