//! An index that an omirrd built with redb 2 wrote, in redb's file
//! format v2, which redb 3 and later refuse to open: the fixture
//! `fixtures/index-redb2.redb` holds one of every kind of row.

use omirr_core::{Change, Content, Entry, HostId, Meta, Name, RelPath, Timestamp, Version, Xattrs};
use omirr_index::{Aside, Batch, Index, StatKey, StatUpdate};
use std::path::Path;

/// The fixture's index id, as the writer printed it.
#[allow(dead_code)] // read once the index opens the fixture
const ID: u64 = 0x4f0c_0db9_4046_fd38;

fn p(s: &str) -> RelPath {
    RelPath::new(s.as_bytes().to_vec()).expect("path")
}

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
        (change("srv", 1, Content::Dir, meta(0o2775)), StatUpdate::Set(stat(100))),
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
        (change("srv/pipe", 4, Content::Fifo, meta(0o640)), StatUpdate::Keep),
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

/// Writes the fixture into `$OMIRR_REDB2_FIXTURE_DIR` (a directory
/// without an index). Run with redb 2, at the commit that added it.
#[test]
#[ignore]
fn writes_the_fixture() {
    let Ok(dir) = std::env::var("OMIRR_REDB2_FIXTURE_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let mut ix = Index::open(dir).expect("open");
    let beta = HostId::new("beta");
    assert!(!ix.meet_peer_index(&beta, 0x5eed).expect("peer index"));
    let mut batch = Batch::new();
    for (c, s) in changes() {
        batch.record(c, s);
    }
    batch
        .set_cursor(beta.clone(), 42)
        .set_aside(beta.clone(), aside())
        .observe_hlc(Timestamp(1_764_633_600_000_000_099));
    ix.commit(&batch).expect("commit");
    ix.set_stat(&p("srv/untracked"), stat(104)).expect("loose stat");
    ix.set_chunk_list(&hash(0), b"a chunk list").expect("chunk list");
    ix.set_must_reconcile(&beta, true).expect("reconcile");
    // A forgotten tombstone raises the watermark.
    let gone = change("srv/gone", 8, Content::Deleted, Meta::default());
    ix.record(std::slice::from_ref(&gone)).expect("record");
    let forgot = ix
        .forget(&[(gone.path.clone(), gone.entry.version.clone())])
        .expect("forget");
    assert_eq!(forgot, 1);
    ix.verify().expect("consistent");
    println!(
        "id {:#x} last_seq {} forgotten {:?}",
        ix.id(),
        ix.last_seq().expect("last_seq"),
        ix.forgotten().expect("forgotten")
    );
    ix.compact().expect("compact");
}
