//! Recording and reading back: the feed, the lookups, the stat and inode caches, batches, the clock and `verify`.

use super::*;

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
