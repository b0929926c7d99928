//! Unit tests: behaviour through the public API, plus what needs the
//! tables themselves (corrupting them, writing other formats).

use crate::schema::{BY_SEQ, INODES, META, META_FORMAT, META_MAGIC};
use crate::{Batch, Index, IndexError, StatUpdate, FILE_NAME, FORMAT};
use omirr_core::entry::Meta;
use omirr_core::mem::MemIndex;
use omirr_core::StatKey;
use omirr_core::{Change, Content, Entry, HostId, IndexView, RelPath, Seq, Timestamp, Version};
use std::path::Path;

fn p(s: &str) -> RelPath {
    RelPath::new(s.as_bytes()).expect("valid path")
}

fn change(path: &str, ts: u64, content: Content) -> Change {
    Change {
        path: p(path),
        entry: Entry {
            content,
            meta: Meta {
                mode: 0o644,
                uid: 1,
                gid: 2,
                mtime_ns: ts as i64,
                ..Default::default()
            },
            version: Version {
                ts: Timestamp(ts),
                host: HostId::new("h"),
            },
            base: None,
        },
    }
}

fn file(size: u64, h: u8) -> Content {
    Content::File {
        size,
        hash: [h; 32],
    }
}

fn stat(ino: u64, size: u64) -> StatKey {
    StatKey {
        dev: 7,
        ino,
        size,
        mtime_ns: 1_000 + ino as i64,
        ctime_ns: 2_000 + ino as i64,
    }
}

fn open(dir: &Path) -> Index {
    Index::open(dir).expect("open index")
}

fn paths(v: &[(RelPath, Entry)]) -> Vec<String> {
    v.iter().map(|(p, _)| p.to_string()).collect()
}

#[test]
fn index_is_send_and_sync() {
    fn is<T: Send + Sync>() {}
    is::<Index>();
}

#[test]
fn reopen_after_clean_close_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let odd = RelPath::new(&b"dir/\xff name\nwith newline"[..]).expect("odd path");
    let mut odd_change = change("x", 9, file(3, 9));
    odd_change.path = odd.clone();
    let changes = vec![
        change("dir", 1, Content::Dir),
        change("dir/f", 2, file(10, 1)),
        change(
            "dir/l",
            3,
            Content::Symlink {
                target: b"../\xfe".to_vec(),
            },
        ),
        change("gone", 4, Content::Deleted),
        odd_change,
    ];
    let peer = HostId::new("peer-1");
    let (before, since_before) = {
        let ix = open(dir.path());
        assert_eq!(ix.last_seq().expect("last_seq"), 0);
        assert!(ix.is_empty().expect("is_empty"));
        let seqs = ix.record(&changes).expect("record");
        assert_eq!(seqs, [Some(1), Some(2), Some(3), Some(4), Some(5)]);
        ix.set_cursor(&peer, 42).expect("set_cursor");
        ix.set_hlc_last(Timestamp(1_000)).expect("set_hlc_last");
        ix.set_stat(&p("dir/f"), stat(11, 10)).expect("set_stat");
        ix.set_stat(&odd, stat(12, 3)).expect("set_stat");
        (
            ix.below(&RelPath::root()).expect("below"),
            ix.since(0, usize::MAX).expect("since"),
        )
    };
    let ix = open(dir.path());
    assert_eq!(ix.below(&RelPath::root()).expect("below"), before);
    assert_eq!(ix.since(0, usize::MAX).expect("since"), since_before);
    assert_eq!(ix.len().expect("len"), 5);
    assert_eq!(ix.last_seq().expect("last_seq"), 5);
    assert_eq!(ix.cursor(&peer).expect("cursor"), 42);
    assert_eq!(ix.cursors().expect("cursors"), [(peer.clone(), 42)]);
    assert_eq!(ix.hlc_last().expect("hlc"), Timestamp(1_000));
    assert_eq!(ix.stat(&p("dir/f")).expect("stat"), Some(stat(11, 10)));
    assert_eq!(ix.path_of_inode(7, 12).expect("inode"), Some(odd.clone()));
    assert_eq!(ix.holder_of(&[9; 32]).expect("holder"), Some(odd.clone()));
    assert_eq!(
        ix.entry(&odd).expect("entry"),
        Some(changes[4].entry.clone())
    );
    // Sequences carry on where they stopped.
    assert_eq!(
        ix.record(&[change("new", 5, Content::Dir)])
            .expect("record"),
        [Some(6)]
    );
    ix.verify().expect("consistent");
}

#[test]
fn another_format_is_refused_with_advice() {
    // Format 1 is converted (see below); 0 never existed but is older.
    for (found, word) in [(FORMAT + 1, "newer"), (0, "older")] {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open(dir.path()));
        let path = dir.path().join(FILE_NAME);
        {
            let db = redb::Database::create(&path).expect("raw open");
            let txn = db.begin_write().expect("txn");
            {
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert(META_FORMAT, &found.to_le_bytes()[..])
                    .expect("insert");
            }
            txn.commit().expect("commit");
        }
        let err = Index::open(dir.path()).expect_err("format mismatch");
        assert!(
            matches!(err, IndexError::Format { found: f, expected: FORMAT, .. } if f == found),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!(
                "has format {found}; this omirrd reads format {FORMAT}"
            )),
            "{msg}"
        );
        assert!(
            msg.contains(word) && msg.contains("move the file aside"),
            "{msg}"
        );
    }
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    let junk = b"this is somebody's notes, not a database\n".repeat(200);
    std::fs::write(&path, &junk).expect("write junk");
    let err = Index::open(dir.path()).expect_err("junk refused");
    assert!(matches!(err, IndexError::NotAnIndex { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains("not a usable omirr index"));
    assert_eq!(
        std::fs::read(&path).expect("read back"),
        junk,
        "not clobbered"
    );
}

#[test]
fn a_redb_database_that_is_not_ours_is_refused() {
    // Someone else's tables; a meta table of another type; our meta table
    // without our magic.
    type Setup = fn(&redb::WriteTransaction);
    let setups: [(&str, Setup); 3] = [
        ("other tables", |txn| {
            let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("theirs");
            txn.open_table(def)
                .expect("table")
                .insert(1, 2)
                .expect("insert");
        }),
        ("meta of another type", |txn| {
            let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("meta");
            txn.open_table(def)
                .expect("table")
                .insert(1, 2)
                .expect("insert");
        }),
        ("no magic", |txn| {
            let mut meta = txn.open_table(META).expect("table");
            meta.insert(META_MAGIC, &b"nope"[..]).expect("insert");
        }),
    ];
    for (what, setup) in setups {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = redb::Database::create(dir.path().join(FILE_NAME)).expect("raw");
            let txn = db.begin_write().expect("txn");
            setup(&txn);
            txn.commit().expect("commit");
        }
        let err = Index::open(dir.path()).expect_err(what);
        assert!(
            matches!(err, IndexError::NotAnIndex { .. }),
            "{what}: {err:?}"
        );
    }
}

#[test]
fn a_truncated_index_gives_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let ix = open(dir.path());
        let many: Vec<Change> = (0..2000)
            .map(|i| change(&format!("f{i}"), 1, file(i, (i % 250) as u8)))
            .collect();
        ix.record(&many).expect("record");
    }
    let path = dir.path().join(FILE_NAME);
    let whole = std::fs::read(&path).expect("read");
    for len in [9, 100, 4096, whole.len() / 2] {
        std::fs::write(&path, &whole[..len]).expect("truncate");
        // Opening may fail or succeed (redb repairs what it can); it must
        // not panic, and reads must not either.
        let opened = std::panic::catch_unwind(|| match Index::open(dir.path()) {
            Ok(ix) => {
                let _ = ix.verify();
                let _ = ix.since(0, usize::MAX);
                "opened".to_string()
            }
            Err(e) => e.to_string(),
        });
        let outcome = opened.unwrap_or_else(|_| panic!("panicked on a file cut at {len} bytes"));
        assert!(
            outcome == "opened" || outcome.contains(&path.display().to_string()),
            "cut at {len}: {outcome}"
        );
    }
}

#[test]
fn an_empty_file_becomes_an_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(FILE_NAME), b"").expect("touch");
    let ix = open(dir.path());
    ix.record(&[change("a", 1, Content::Dir)]).expect("record");
    ix.verify().expect("consistent");
}

#[test]
fn a_second_open_is_refused_as_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = open(dir.path());
    let err = Index::open(dir.path()).expect_err("second open");
    assert!(matches!(err, IndexError::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains("another omirrd"), "{err}");
}

#[test]
fn a_missing_state_dir_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let err = Index::open(&missing).expect_err("missing dir");
    assert!(
        err.to_string()
            .contains(&missing.join(FILE_NAME).display().to_string()),
        "{err}"
    );
}

#[test]
fn since_pages_in_sequence_order_with_latest_seq_per_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    let mut model = MemIndex::default();
    let mut all = Vec::new();
    for round in 0..5u64 {
        for i in 0..7u64 {
            // Rewrite some paths each round so their old seqs vanish.
            if round == 0 || i % (round + 1) == 0 {
                all.push(change(
                    &format!("p{i}"),
                    round * 10 + i + 1,
                    file(i, i as u8),
                ));
            }
        }
    }
    let got = ix.record(&all).expect("record");
    let want: Vec<Option<Seq>> = all.iter().map(|c| model.record(c.clone())).collect();
    assert_eq!(got, want);

    let full = ix.since(0, usize::MAX).expect("since");
    assert_eq!(full, model.since(0));
    assert_eq!(full.len(), 7, "one row per path");
    assert!(full.windows(2).all(|w| w[0].0 < w[1].0), "ascending");

    for page in 1..=8 {
        let mut paged = Vec::new();
        let mut from = 0;
        loop {
            let chunk = ix.since(from, page).expect("page");
            assert!(chunk.len() <= page);
            let Some((last, _)) = chunk.last() else { break };
            from = *last;
            paged.extend(chunk);
        }
        assert_eq!(paged, full, "page size {page}");
    }
    let mid = full[3].0;
    assert_eq!(ix.since(mid, usize::MAX).expect("since"), model.since(mid));
    assert!(ix.since(0, 0).expect("limit 0").is_empty());
    let last = ix.last_seq().expect("last");
    assert!(ix.since(last, 10).expect("since last").is_empty());
    assert!(ix.since(Seq::MAX, 10).expect("since max").is_empty());
}

#[test]
fn cursors_persist_and_may_go_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (HostId::new("alpha"), HostId::new("beta"));
    {
        let ix = open(dir.path());
        assert_eq!(ix.cursor(&a).expect("cursor"), 0);
        ix.set_cursor(&a, 10).expect("set");
        ix.set_cursor(&b, 20).expect("set");
        ix.set_cursor(&a, 15).expect("set");
    }
    let ix = open(dir.path());
    assert_eq!(ix.cursor(&a).expect("cursor"), 15);
    assert_eq!(ix.cursor(&b).expect("cursor"), 20);
    ix.set_cursor(&b, 0).expect("reset");
    assert_eq!(ix.cursor(&b).expect("cursor"), 0);
    assert_eq!(ix.cursor(&HostId::new("gamma")).expect("cursor"), 0);
}

#[test]
fn holder_of_follows_overwrites_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    let h = [1u8; 32];
    ix.record(&[change("m", 1, file(5, 1)), change("b", 1, file(5, 1))])
        .expect("record");
    assert_eq!(
        ix.holder_of(&h).expect("holder"),
        Some(p("b")),
        "first in path order"
    );
    // A hash that is a prefix-neighbour must not answer for this one.
    assert_eq!(ix.holder_of(&[0u8; 32]).expect("holder"), None);
    ix.record(&[change("b", 2, file(6, 2))]).expect("overwrite");
    assert_eq!(ix.holder_of(&h).expect("holder"), Some(p("m")));
    assert_eq!(ix.holder_of(&[2u8; 32]).expect("holder"), Some(p("b")));
    ix.record(&[change("m", 2, Content::Deleted)])
        .expect("delete");
    assert_eq!(ix.holder_of(&h).expect("holder"), None);
    ix.record(&[change("b", 3, Content::Dir)])
        .expect("replace by dir");
    assert_eq!(ix.holder_of(&[2u8; 32]).expect("holder"), None);
    // An older change loses and leaves the holders alone.
    ix.record(&[change("b", 1, file(5, 1))]).expect("older");
    assert_eq!(ix.holder_of(&h).expect("holder"), None);
    ix.verify().expect("consistent");
}

#[test]
fn expire_tombstones_forgets_only_old_tombstones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    ix.record(&[
        change("gone", 10, Content::Deleted),
        change("also-gone", 20, Content::Deleted),
        change("recent", 95, Content::Deleted),
        change("live", 1, Content::Dir),
        change("edge", 50, Content::Deleted),
    ])
    .expect("record");
    let last = ix.last_seq().expect("last");
    // Horizon so large it saturates: nothing expires.
    assert_eq!(
        ix.expire_tombstones(Timestamp(100), u64::MAX)
            .expect("expire"),
        0
    );
    // 50 + 50 is not below 100: "edge" stays, as Entry says.
    assert_eq!(ix.expire_tombstones(Timestamp(100), 50).expect("expire"), 2);
    assert_eq!(ix.len().expect("len"), 3);
    assert_eq!(ix.entry(&p("gone")).expect("entry"), None);
    let left: Vec<String> = ix
        .since(0, usize::MAX)
        .expect("since")
        .into_iter()
        .map(|(_, c)| c.path.to_string())
        .collect();
    assert_eq!(left, ["recent", "live", "edge"]);
    assert_eq!(ix.last_seq().expect("last"), last, "never lowered");
    assert_eq!(ix.expire_tombstones(Timestamp(100), 50).expect("again"), 0);
    // An expired path can be written again, at a fresh sequence.
    assert_eq!(
        ix.record(&[change("gone", 5, file(1, 3))]).expect("record"),
        [Some(last + 1)]
    );
    // A tombstone replaced by a live entry is no longer a tombstone.
    ix.record(&[change("recent", 96, Content::Dir)])
        .expect("revive");
    assert_eq!(
        ix.expire_tombstones(Timestamp(u64::MAX), 0)
            .expect("expire"),
        1
    );
    assert!(ix.entry(&p("recent")).expect("entry").is_some());
    assert!(ix.entry(&p("edge")).expect("entry").is_none());
    ix.verify().expect("consistent");
}

#[test]
fn below_excludes_siblings_that_share_a_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    let names = ["a", "a-b", "a/x", "a/x/y", "a0", "ab", "b"];
    let changes: Vec<Change> = names.iter().map(|n| change(n, 1, Content::Dir)).collect();
    ix.record(&changes).expect("record");
    let stats: Vec<(RelPath, Option<StatKey>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (p(n), Some(stat(i as u64, 0))))
        .collect();
    ix.update_stats(&stats).expect("stats");
    assert_eq!(paths(&ix.below(&p("a")).expect("below")), ["a/x", "a/x/y"]);
    assert_eq!(paths(&ix.below(&p("a/x")).expect("below")), ["a/x/y"]);
    assert!(ix.below(&p("a-b")).expect("below").is_empty());
    assert_eq!(paths(&ix.below(&RelPath::root()).expect("below")), names);
    let stat_paths: Vec<String> = ix
        .stats_below(&p("a"))
        .expect("stats_below")
        .into_iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(stat_paths, ["a/x", "a/x/y"]);
    assert_eq!(
        ix.stats_below(&RelPath::root()).expect("all").len(),
        names.len()
    );
}

#[test]
fn the_inode_table_follows_stats_through_replace_forget_and_hard_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    ix.set_stat(&p("a"), stat(5, 1)).expect("set");
    assert_eq!(ix.path_of_inode(7, 5).expect("inode"), Some(p("a")));
    assert_eq!(ix.path_of_inode(7, 6).expect("inode"), None);
    assert_eq!(ix.path_of_inode(8, 5).expect("inode"), None, "other device");
    // Same inode, new size: still one row.
    ix.set_stat(&p("a"), stat(5, 2)).expect("set");
    assert_eq!(ix.paths_of_inode(7, 5).expect("inode"), [p("a")]);
    // Replaced by another inode: the old row goes.
    ix.set_stat(&p("a"), stat(6, 2)).expect("set");
    assert_eq!(ix.path_of_inode(7, 5).expect("inode"), None);
    // A hard link: both paths, in path order.
    ix.set_stat(&p("z"), stat(6, 2)).expect("set");
    ix.set_stat(&p("b"), stat(6, 2)).expect("set");
    assert_eq!(
        ix.paths_of_inode(7, 6).expect("inode"),
        [p("a"), p("b"), p("z")]
    );
    assert_eq!(ix.path_of_inode(7, 6).expect("inode"), Some(p("a")));
    ix.forget_stat(&p("a")).expect("forget");
    assert_eq!(ix.paths_of_inode(7, 6).expect("inode"), [p("b"), p("z")]);
    assert_eq!(ix.stat(&p("a")).expect("stat"), None);
    ix.forget_stat(&p("never")).expect("forget nothing");
    // Batched: move z's stat to a new path, as a rename would.
    ix.update_stats(&[(p("z"), None), (p("y"), Some(stat(6, 2)))])
        .expect("batch");
    assert_eq!(ix.paths_of_inode(7, 6).expect("inode"), [p("b"), p("y")]);
    ix.verify().expect("consistent");
}

#[test]
fn record_with_stats_keeps_a_stat_only_for_the_entry_it_describes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    let f = change("f", 10, file(1, 1));
    assert_eq!(
        ix.record_with_stats(&[(f.clone(), Some(stat(1, 1)))])
            .expect("record"),
        [Some(1)]
    );
    assert_eq!(ix.stat(&p("f")).expect("stat"), Some(stat(1, 1)));
    // A repeat of the held entry updates the stat (the file was re-hashed).
    assert_eq!(
        ix.record_with_stats(&[(f.clone(), Some(stat(1, 2)))])
            .expect("repeat"),
        [None]
    );
    assert_eq!(ix.stat(&p("f")).expect("stat"), Some(stat(1, 2)));
    // An older, different entry loses, and its stat does not describe
    // what the index holds: dropped, so the next scan hashes the file.
    let older = change("f", 5, file(9, 9));
    assert_eq!(
        ix.record_with_stats(&[(older.clone(), Some(stat(1, 9)))])
            .expect("older"),
        [None]
    );
    assert_eq!(ix.stat(&p("f")).expect("stat"), None);
    assert_eq!(ix.path_of_inode(7, 1).expect("inode"), None);
    // Keep leaves the stat alone even then.
    ix.set_stat(&p("f"), stat(1, 3)).expect("set");
    let mut b = Batch::new();
    b.record(older, StatUpdate::Keep);
    assert_eq!(ix.commit(&b).expect("commit"), [None]);
    assert_eq!(ix.stat(&p("f")).expect("stat"), Some(stat(1, 3)));
    // A deletion with no file left forgets the stat.
    ix.record_with_stats(&[(change("f", 11, Content::Deleted), None)])
        .expect("delete");
    assert_eq!(ix.stat(&p("f")).expect("stat"), None);
    ix.verify().expect("consistent");
}

#[test]
fn a_batch_lands_changes_stats_cursor_and_clock_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = HostId::new("peer");
    {
        let ix = open(dir.path());
        let mut b = Batch::new();
        assert!(b.is_empty());
        b.record(change("a", 3, file(1, 1)), StatUpdate::Set(stat(1, 1)))
            .record(change("b", 4, Content::Dir), StatUpdate::Keep)
            .set_stat(p("c"), stat(3, 0))
            .forget_stat(p("zz"))
            .set_cursor(peer.clone(), 17)
            .observe_hlc(Timestamp(500))
            .observe_hlc(Timestamp(400));
        assert_eq!(b.changes(), 2);
        assert_eq!(ix.commit(&b).expect("commit"), [Some(1), Some(2)]);
        assert!(ix.commit(&Batch::new()).expect("empty").is_empty());
    }
    let ix = open(dir.path());
    assert_eq!(ix.len().expect("len"), 2);
    assert_eq!(ix.stat(&p("a")).expect("stat"), Some(stat(1, 1)));
    assert_eq!(ix.stat(&p("b")).expect("stat"), None);
    assert_eq!(ix.stat(&p("c")).expect("stat"), Some(stat(3, 0)));
    assert_eq!(ix.cursor(&peer).expect("cursor"), 17);
    assert_eq!(ix.hlc_last().expect("hlc"), Timestamp(500));
    ix.verify().expect("consistent");
}

#[test]
fn the_clock_covers_every_version_seen_and_never_goes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    assert_eq!(ix.hlc_last().expect("hlc"), Timestamp(0));
    ix.record(&[change("a", 100, Content::Dir)])
        .expect("record");
    assert_eq!(ix.hlc_last().expect("hlc"), Timestamp(100));
    ix.set_hlc_last(Timestamp(50)).expect("set lower");
    assert_eq!(ix.hlc_last().expect("hlc"), Timestamp(100));
    ix.set_hlc_last(Timestamp(200)).expect("set higher");
    assert_eq!(ix.hlc_last().expect("hlc"), Timestamp(200));
    // A change that loses has still been seen.
    let mut other = change("a", 300, Content::Dir);
    ix.record(&[other.clone()]).expect("record");
    other.entry.version.ts = Timestamp(250);
    ix.record(&[other]).expect("older");
    assert_eq!(ix.hlc_last().expect("hlc"), Timestamp(300));
}

#[test]
fn the_same_path_twice_in_one_batch_keeps_the_newer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    let batch = [
        change("a", 2, file(1, 1)),
        change("a", 1, file(2, 2)),
        change("a", 3, file(3, 3)),
    ];
    assert_eq!(ix.record(&batch).expect("record"), [Some(1), None, Some(2)]);
    assert_eq!(ix.since(0, 10).expect("since").len(), 1);
    assert_eq!(ix.holder_of(&[1; 32]).expect("holder"), None);
    assert_eq!(ix.holder_of(&[3; 32]).expect("holder"), Some(p("a")));
    ix.verify().expect("consistent");
}

#[test]
fn verify_finds_tables_that_disagree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    ix.record(&[change("a", 1, Content::Dir), change("b", 1, file(1, 1))])
        .expect("record");
    ix.set_stat(&p("a"), stat(4, 0)).expect("stat");
    ix.verify().expect("consistent before");

    let txn = ix.db.begin_write().expect("txn");
    txn.open_table(BY_SEQ)
        .expect("by_seq")
        .remove(1)
        .expect("remove");
    txn.commit().expect("commit");
    let err = ix.verify().expect_err("a lost sequence row");
    assert!(err.to_string().contains("a is at 1 but by_seq"), "{err}");

    let txn = ix.db.begin_write().expect("txn");
    txn.open_table(BY_SEQ)
        .expect("by_seq")
        .insert(1, &b"a"[..])
        .expect("restore");
    txn.open_table(INODES)
        .expect("inodes")
        .insert(&b"0123456789abcdefa"[..], ())
        .expect("stray");
    txn.commit().expect("commit");
    let err = ix.verify().expect_err("a stray inode row");
    assert!(
        err.to_string().contains("inodes has 2 rows for 1 stats"),
        "{err}"
    );
}

#[test]
fn chunk_lists_are_cached_by_content_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = Index::open(dir.path()).expect("open");
    assert_eq!(ix.chunk_list(&[1; 32]).expect("read"), None, "no table yet");
    ix.set_chunk_list(&[1; 32], b"list one").expect("write");
    ix.set_chunk_list(&[2; 32], b"list two").expect("write");
    drop(ix);
    let ix = Index::open(dir.path()).expect("reopen");
    assert_eq!(
        ix.chunk_list(&[1; 32]).expect("read").as_deref(),
        Some(&b"list one"[..])
    );
    assert_eq!(
        ix.chunk_list(&[2; 32]).expect("read").as_deref(),
        Some(&b"list two"[..])
    );
    assert_eq!(ix.chunk_list(&[3; 32]).expect("read"), None);
    ix.verify().expect("still a valid index");
}

#[test]
fn set_aside_changes_persist_per_peer_with_the_cursor_and_are_dropped_by_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (HostId::new("a"), HostId::new("b"));
    let aside = |path: &str, reason: &str| crate::Aside {
        change: change(path, 5, Content::Deleted),
        reason: reason.to_string(),
        attempts: 1,
        since: 100,
    };
    {
        let index = open(dir.path());
        assert!(index.aside(None).expect("read").is_empty(), "no table yet");
        let mut batch = Batch::new();
        batch
            .set_aside(a.clone(), aside("d", "not empty"))
            .set_aside(b.clone(), aside("e", "in the way"))
            .set_aside(a.clone(), aside("d/x", "busy"))
            .set_cursor(a.clone(), 42);
        index.commit(&batch).expect("commit");
    }
    let index = open(dir.path());
    assert_eq!(index.cursor(&a).expect("cursor"), 42);
    let of_a: Vec<String> = index
        .aside(Some(&a))
        .expect("read")
        .into_iter()
        .map(|(h, x)| format!("{h}:{}:{}", x.change.path, x.reason))
        .collect();
    assert_eq!(of_a, ["a:d:not empty", "a:d/x:busy"]);
    assert_eq!(index.aside(None).expect("read").len(), 3);
    // Setting one again replaces it; clearing drops only that peer's.
    let mut batch = Batch::new();
    batch
        .set_aside(a.clone(), aside("d", "still not empty"))
        .clear_aside(a.clone(), p("d/x"))
        .clear_aside(a.clone(), p("e"));
    index.commit(&batch).expect("commit");
    let all: Vec<String> = index
        .aside(None)
        .expect("read")
        .into_iter()
        .map(|(h, x)| format!("{h}:{}:{}", x.change.path, x.reason))
        .collect();
    assert_eq!(all, ["a:d:still not empty", "b:e:in the way"]);
}

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

#[test]
fn the_latest_version_of_each_host_is_kept_even_when_superseded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = open(dir.path());
    let h = HostId::new("h");
    let g = HostId::new("g");
    assert_eq!(
        idx.latest_of(&h).expect("latest"),
        Timestamp(0),
        "new index"
    );
    let mut by_g = change("b", 50, file(1, 1));
    by_g.entry.version.host = g.clone();
    idx.record(&[
        change("a", 10, file(1, 1)),
        change("a", 30, file(1, 2)),
        by_g,
    ])
    .expect("record");
    assert_eq!(idx.latest_of(&h).expect("latest"), Timestamp(30));
    assert_eq!(idx.latest_of(&g).expect("latest"), Timestamp(50));
    // g's version of a wins over h's later one: h's latest still counts.
    let mut newer_g = change("a", 40, file(1, 3));
    newer_g.entry.version.host = g.clone();
    idx.record(&[newer_g]).expect("record");
    idx.record(&[change("c", 20, file(1, 4))]).expect("record");
    assert_eq!(
        idx.latest_of(&h).expect("latest"),
        Timestamp(30),
        "never lowered"
    );
    assert_eq!(idx.latest_of(&g).expect("latest"), Timestamp(50));
    // A version not recorded (older than what is held) does not count.
    let mut stale = change("b", 45, file(1, 5));
    stale.entry.version.host = HostId::new("k");
    idx.record(&[stale]).expect("record");
    assert_eq!(
        idx.latest_of(&HostId::new("k")).expect("latest"),
        Timestamp(0)
    );
    drop(idx);
    let idx = open(dir.path());
    assert_eq!(
        idx.latest_of(&h).expect("latest"),
        Timestamp(30),
        "persisted"
    );
}

#[test]
fn an_index_has_an_id_for_life_and_a_peer_with_a_new_index_starts_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = open(dir.path());
    let id = idx.id();
    assert_ne!(id, 0);
    drop(idx);
    let idx = open(dir.path());
    assert_eq!(idx.id(), id, "kept across opens");
    let other = tempfile::tempdir().expect("tempdir");
    assert_ne!(open(other.path()).id(), id, "another index, another id");

    let peer = HostId::new("b");
    assert_eq!(idx.peer_index(&peer).expect("peer index"), 0);
    // A cursor from before ids were kept is trusted when the id is first
    // heard.
    idx.set_cursor(&peer, 40).expect("cursor");
    assert!(!idx.meet_peer_index(&peer, 7).expect("meet"));
    assert_eq!(idx.cursor(&peer).expect("cursor"), 40);
    assert_eq!(idx.peer_index(&peer).expect("peer index"), 7);
    assert!(
        !idx.meet_peer_index(&peer, 7).expect("meet"),
        "the same index"
    );
    assert_eq!(idx.cursor(&peer).expect("cursor"), 40);
    // The peer comes back with another index: start over from 0.
    assert!(idx.meet_peer_index(&peer, 9).expect("meet"));
    assert_eq!(idx.cursor(&peer).expect("cursor"), 0);
    assert_eq!(idx.peer_index(&peer).expect("peer index"), 9);
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

/// A reader answers as the index does, from one read transaction, and
/// does not see what is committed after it was made.
#[test]
fn a_reader_answers_as_the_index_as_of_when_it_was_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    ix.record_with_stats(&[
        (change("d", 1, Content::Dir), Some(stat(1, 0))),
        (change("d/f", 2, file(3, 7)), Some(stat(2, 3))),
        (change("g", 3, Content::Deleted), None),
    ])
    .expect("record");
    ix.set_stat(&p("loose"), stat(3, 1)).expect("stat");
    let r = ix.reader().expect("reader");
    let root = RelPath::root();
    for path in ["d", "d/f", "g", "loose", "none"].map(p) {
        assert_eq!(
            r.entry(&path).expect("entry"),
            ix.entry(&path).expect("entry")
        );
        assert_eq!(r.stat(&path).expect("stat"), ix.stat(&path).expect("stat"));
    }
    assert_eq!(
        r.below(&root).expect("below"),
        ix.below(&root).expect("below")
    );
    assert_eq!(
        r.stats_below(&root).expect("stats"),
        ix.stats_below(&root).expect("stats")
    );
    assert_eq!(r.holder_of(&[7; 32]).expect("holder"), Some(p("d/f")));
    assert_eq!(r.path_of_inode(7, 3).expect("inode"), Some(p("loose")));
    assert_eq!(r.paths_of_inode(7, 2).expect("inodes"), [p("d/f")]);
    assert_eq!(
        r.since(0, 10).expect("since"),
        ix.since(0, 10).expect("since")
    );
    // The core's rules read it like any view.
    assert!(omirr_core::tree::present(&r, &p("d/f"))
        .expect("present")
        .is_some());
    ix.record(&[change("d/f", 9, Content::Deleted)])
        .expect("record");
    assert!(r.entry(&p("d/f")).expect("entry").expect("old").is_live());
    assert!(!ix.entry(&p("d/f")).expect("entry").expect("new").is_live());
}

/// `omirrd verify` summarises spans of the persisted index exactly as of
/// its model, whatever the span's bounds (paths beside the top, which sort
/// between it and what lies below it, included).
#[test]
fn verify_spans_scan_as_the_model_does() {
    use omirr_core::verify::{entries_page, summarize, Span};
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    let mut model = MemIndex::default();
    let names = [
        "srv", "srv-x", "srv.y", "srv/a", "srv/a/b", "srv/a.b", "srv/c", "srw", "sr",
    ];
    let all: Vec<Change> = names
        .iter()
        .enumerate()
        .map(|(i, n)| change(n, i as u64 + 1, file(i as u64, i as u8)))
        .collect();
    ix.record(&all).expect("record");
    for c in &all {
        model.record(c.clone());
    }
    let reader = ix.reader().expect("reader");
    let mut bounds: Vec<Option<RelPath>> = names.iter().map(|n| Some(p(n))).collect();
    bounds.push(None);
    for top in ["srv", "srv/a", "nothing"] {
        for after in &bounds {
            for upto in &bounds {
                let span = Span {
                    top: p(top),
                    after: after.clone(),
                    upto: upto.clone(),
                };
                let Ok(from_model) = summarize(&model, &span);
                assert_eq!(
                    summarize(&reader, &span).expect("summarize"),
                    from_model,
                    "{span:?}"
                );
                let Ok(page) = entries_page(&model, &span, 1 << 20);
                assert_eq!(
                    entries_page(&reader, &span, 1 << 20).expect("page"),
                    page,
                    "{span:?}"
                );
            }
        }
    }
}

#[test]
fn expiry_buries_then_forgets_and_keeps_its_watermark_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = open(dir.path());
    ix.record(&[
        change("d", 1, Content::Dir),
        change("d/f", 2, file(1, 1)),
        change("d", 5, Content::Deleted),
        change("x", 6, Content::Deleted),
    ])
    .expect("record");
    let x_seq = ix.last_seq().expect("last");
    assert_eq!(ix.forgotten().expect("watermark"), Default::default());
    // d still hides d/f: d/f is buried, x forgotten.
    let done = ix.expire(Timestamp(100), 10).expect("expire");
    assert_eq!(done.forgotten, 1);
    assert_eq!(
        paths(
            &done
                .buried
                .iter()
                .map(|c| (c.path.clone(), c.entry.clone()))
                .collect::<Vec<_>>()
        ),
        ["d/f"]
    );
    assert_eq!(ix.entry(&p("x")).expect("entry"), None);
    let f = ix.entry(&p("d/f")).expect("entry").expect("buried");
    assert!(!f.is_live());
    let w = ix.forgotten().expect("watermark");
    assert_eq!((w.seq, w.below), (x_seq, Timestamp(7)));
    // Next time d and its buried child go.
    assert_eq!(ix.expire_tombstones(Timestamp(100), 10).expect("again"), 2);
    assert_eq!(ix.len().expect("len"), 0);
    ix.verify().expect("consistent");
    let w = ix.forgotten().expect("watermark");
    assert_eq!(
        w.seq,
        ix.last_seq().expect("last"),
        "the buried d/f was last"
    );
    // A pending reconciliation, and the watermark, outlive a restart.
    let peer = HostId::new("p");
    assert!(!ix.must_reconcile(&peer).expect("pending"));
    ix.set_must_reconcile(&peer, true).expect("set");
    drop(ix);
    let ix = open(dir.path());
    assert_eq!(ix.forgotten().expect("watermark"), w);
    assert!(ix.must_reconcile(&peer).expect("pending"));
    ix.set_must_reconcile(&peer, false).expect("clear");
    assert!(!ix.must_reconcile(&peer).expect("pending"));
    // What a reconciliation reads: entries with their sequences.
    ix.record(&[change("a", 1, file(1, 2)), change("b", 1, Content::Dir)])
        .expect("record");
    let held = ix.held(&|p| p.as_bytes() == b"b").expect("held");
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].path.to_string(), held[0].seq),
        ("b".to_string(), ix.last_seq().expect("last"))
    );
}
