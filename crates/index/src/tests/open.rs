//! Opening: a new index, a reopened one, and what is refused.

use super::*;

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
