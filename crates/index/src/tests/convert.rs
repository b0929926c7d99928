//! Indexes of formats 1 to 3, written table by table, open converted.

use super::*;

/// An index of format 3 opens, converted: its entries read back as they
/// were (no base), and its set-aside changes, which format 3 encoded
/// without a base, read back with none; an entry with a base is kept.
#[test]
fn a_format_3_index_is_converted_when_opened() {
    use crate::schema::ASIDE;
    let dir = tempfile::tempdir().expect("tempdir");
    let based = Change {
        entry: Entry {
            base: Some(Version {
                ts: Timestamp(1),
                host: HostId::new("g"),
            }),
            ..change("b", 2, file(1, 1)).entry
        },
        ..change("b", 2, file(1, 1))
    };
    {
        let ix = open(dir.path());
        ix.record(&[change("a", 1, Content::Dir)]).expect("record");
    }
    let path = dir.path().join(FILE_NAME);
    let old = change("c", 5, file(3, 7));
    {
        let db = redb::Database::create(&path).expect("raw open");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert(META_FORMAT, &3u32.to_le_bytes()[..])
                .expect("insert");
            let mut aside = txn.open_table(ASIDE).expect("aside");
            let e = &old.entry;
            let a = crate::codec::encode(&(
                // Format 3's Meta: no extended attributes, no hard link.
                (
                    &old.path,
                    (
                        &e.content,
                        (
                            e.meta.mode,
                            e.meta.uid,
                            e.meta.gid,
                            e.meta.mtime_ns,
                            e.meta.owner,
                            e.meta.group,
                        ),
                        &e.version,
                    ),
                ),
                "why".to_string(),
                2u32,
                3u64,
            ))
            .expect("encode");
            aside
                .insert(
                    crate::schema::aside_key("k", &old.path).as_slice(),
                    a.as_slice(),
                )
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let ix = Index::open(dir.path()).expect("a format-3 index opens");
    assert_eq!(
        ix.entry(&p("a")).expect("read").map(|e| e.content),
        Some(Content::Dir)
    );
    let aside = ix.aside(None).expect("aside");
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(aside[0].1.change, old, "read back with no base");
    assert_eq!(
        (aside[0].1.reason.as_str(), aside[0].1.attempts),
        ("why", 2)
    );
    ix.record(std::slice::from_ref(&based)).expect("record");
    ix.verify().expect("consistent after conversion");
    drop(ix);
    // Converted for good: it opens again as format 4, and keeps bases.
    let ix = Index::open(dir.path()).expect("reopens");
    assert_eq!(ix.entry(&p("b")).expect("read"), Some(based.entry));
}

/// An index of format 1 (no owner or group names) opens, converted: its
/// entries and set-aside changes read back with empty names.
#[test]
fn a_format_1_index_is_converted_when_opened() {
    use crate::schema::{ASIDE, ENTRIES};
    #[derive(serde::Serialize)]
    struct OldMeta {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: i64,
    }
    #[derive(serde::Serialize)]
    struct OldEntry {
        content: Content,
        meta: OldMeta,
        version: Version,
    }
    let old = || OldEntry {
        content: file(3, 7),
        meta: OldMeta {
            mode: 0o640,
            uid: 5,
            gid: 6,
            mtime_ns: 9,
        },
        version: Version {
            ts: Timestamp(11),
            host: HostId::new("h"),
        },
    };
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let ix = open(dir.path());
        ix.record(&[change("a", 1, Content::Dir)]).expect("record");
    }
    let path = dir.path().join(FILE_NAME);
    {
        let db = redb::Database::create(&path).expect("raw open");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert(META_FORMAT, &1u32.to_le_bytes()[..])
                .expect("insert");
            let mut entries = txn.open_table(ENTRIES).expect("entries");
            let stored = crate::codec::encode(&(1u64, old())).expect("encode");
            entries
                .insert(&b"a"[..], stored.as_slice())
                .expect("insert");
            let mut aside = txn.open_table(ASIDE).expect("aside");
            let a = crate::codec::encode(&((p("b"), old()), "why".to_string(), 2u32, 3u64))
                .expect("encode");
            aside
                .insert(
                    crate::schema::aside_key("k", &p("b")).as_slice(),
                    a.as_slice(),
                )
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let ix = Index::open(dir.path()).expect("a format-1 index opens");
    let e = ix.entry(&p("a")).expect("read").expect("entry");
    assert_eq!(e.content, file(3, 7));
    assert_eq!(
        (e.meta.mode, e.meta.uid, e.meta.gid, e.meta.mtime_ns),
        (0o640, 5, 6, 9)
    );
    assert!(e.meta.owner.is_empty() && e.meta.group.is_empty());
    let aside = ix.aside(None).expect("aside");
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(aside[0].1.change.entry.meta.uid, 5);
    assert_eq!(aside[0].1.reason, "why");
    drop(ix);
    // Converted for good: it opens again as format 2.
    Index::open(dir.path()).expect("reopens");
}

/// An index of format 2 (bincode entries, a stat table of every stat,
/// holders by the whole hash, inodes by device and inode) opens,
/// converted, and answers as an index that recorded the same history in
/// format 3.
#[test]
fn a_format_2_index_is_converted_when_opened_and_answers_the_same() {
    use crate::schema::{COUNTERS, ENTRIES, HLC_LAST, HOLDERS, LAST_SEQ, STATS, TOMBSTONES};
    use redb::TableDefinition;
    // Two hashes alike in their first 8 bytes: the holders table's prefix.
    let mut h1 = [1u8; 32];
    let mut h2 = [1u8; 32];
    h1[31] = 1;
    h2[31] = 2;
    let changes = [
        change("a", 1, Content::Dir),
        change("a/f", 2, Content::File { size: 5, hash: h2 }),
        change("a/e", 3, Content::File { size: 5, hash: h1 }),
        change(
            "a/l",
            4,
            Content::Symlink {
                target: b"f".to_vec(),
            },
        ),
        change("gone", 5, Content::Deleted),
    ];
    let stats = [
        (p("a/f"), stat(21, 5)),
        (p("a/e"), stat(22, 5)),
        (p("no-entry"), stat(23, 1)),
    ];
    let reference = tempfile::tempdir().expect("tempdir");
    let native = open(reference.path());
    native.record(&changes).expect("record");
    native
        .update_stats(
            &stats
                .iter()
                .map(|(p, s)| (p.clone(), Some(*s)))
                .collect::<Vec<_>>(),
        )
        .expect("stats");

    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = redb::Database::create(dir.path().join(FILE_NAME)).expect("raw create");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert(META_MAGIC, crate::schema::MAGIC)
                .expect("magic");
            meta.insert(META_FORMAT, &2u32.to_le_bytes()[..])
                .expect("format");
            let mut counters = txn.open_table(COUNTERS).expect("counters");
            counters.insert(LAST_SEQ, 5).expect("last_seq");
            counters.insert(HLC_LAST, 5).expect("hlc");
            let mut entries = txn.open_table(ENTRIES).expect("entries");
            let mut by_seq = txn.open_table(BY_SEQ).expect("by_seq");
            let mut holders = txn.open_table(HOLDERS).expect("holders");
            let mut tombstones = txn.open_table(TOMBSTONES).expect("tombstones");
            for (seq, c) in (1u64..).zip(&changes) {
                // Format 2's entry: no base.
                let e = &c.entry;
                let v = crate::codec::encode(&(
                    seq,
                    (
                        &e.content,
                        (
                            e.meta.mode,
                            e.meta.uid,
                            e.meta.gid,
                            e.meta.mtime_ns,
                            e.meta.owner,
                            e.meta.group,
                        ),
                        &e.version,
                    ),
                ))
                .expect("encode");
                let path = c.path.as_bytes();
                entries.insert(path, v.as_slice()).expect("entry");
                by_seq.insert(seq, path).expect("by_seq");
                match &c.entry.content {
                    Content::File { hash, .. } => {
                        let k = [&hash[..], path].concat();
                        holders.insert(k.as_slice(), ()).expect("holder");
                    }
                    Content::Deleted => {
                        let k = [&c.entry.version.ts.0.to_be_bytes()[..], path].concat();
                        tombstones.insert(k.as_slice(), ()).expect("tombstone");
                    }
                    _ => {}
                }
            }
            let mut stat_table = txn.open_table(STATS).expect("stats");
            let inode_def: TableDefinition<&[u8], ()> = TableDefinition::new("inodes");
            let mut inodes = txn.open_table(inode_def).expect("inodes");
            for (path, s) in &stats {
                stat_table
                    .insert(path.as_bytes(), crate::schema::StatTuple::from(*s))
                    .expect("stat");
                let k = [
                    &s.dev.to_be_bytes()[..],
                    &s.ino.to_be_bytes()[..],
                    path.as_bytes(),
                ]
                .concat();
                inodes.insert(k.as_slice(), ()).expect("inode");
            }
            txn.open_table(crate::schema::CURSORS).expect("cursors");
        }
        txn.commit().expect("commit");
    }
    let ix = Index::open(dir.path()).expect("a format-2 index opens");
    ix.verify().expect("consistent after conversion");
    let root = RelPath::root();
    assert_eq!(
        ix.below(&root).expect("below"),
        native.below(&root).expect("below")
    );
    assert_eq!(
        ix.since(0, usize::MAX).expect("since"),
        native.since(0, usize::MAX).expect("since")
    );
    assert_eq!(
        ix.stats_below(&root).expect("stats"),
        native.stats_below(&root).expect("stats")
    );
    assert_eq!(ix.stats_below(&root).expect("stats").len(), 3);
    for (path, s) in &stats {
        assert_eq!(ix.stat(path).expect("stat"), Some(*s));
        assert_eq!(
            ix.path_of_inode(s.dev, s.ino).expect("inode"),
            Some(path.clone())
        );
    }
    assert_eq!(ix.holder_of(&h1).expect("holder"), Some(p("a/e")));
    assert_eq!(ix.holder_of(&h2).expect("holder"), Some(p("a/f")));
    assert_eq!(ix.len().expect("len"), 5);
    assert_eq!(ix.last_seq().expect("last_seq"), 5);
    // The stat of a path without an entry moves into the entry made.
    ix.record(&[change("no-entry", 9, file(1, 4))])
        .expect("record");
    assert_eq!(ix.stat(&p("no-entry")).expect("stat"), Some(stat(23, 1)));
    ix.verify().expect("consistent");
    drop(ix);
    let ix = Index::open(dir.path()).expect("reopens as format 3");
    ix.verify().expect("consistent");
}
