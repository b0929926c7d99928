//! Timings for a 10,000-file tree. Ignored by default (timings belong in
//! release builds on a quiet machine); run with
//! `cargo test -p omirr-index --release --test perf -- --ignored --nocapture`.
//! The bounds are loose, several times the budget: they catch a per-entry
//! transaction or a full scan sneaking in, not a few percent.

use omirr_core::entry::Meta;
use omirr_core::StatKey;
use omirr_core::{Change, Content, Entry, HostId, IndexView, RelPath, Timestamp, Version};
use omirr_index::Index;
use std::time::{Duration, Instant};

const N: u64 = 10_000;

fn tree(ts: u64) -> Vec<(Change, Option<StatKey>)> {
    (0..N)
        .map(|i| {
            let path =
                RelPath::new(format!("dir{}/sub{}/file-{i}.txt", i % 10, i % 100).into_bytes())
                    .expect("valid path");
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&i.to_le_bytes());
            let change = Change {
                path,
                entry: Entry {
                    content: Content::File { size: 4096, hash },
                    meta: Meta {
                        mode: 0o644,
                        uid: 1000,
                        gid: 1000,
                        mtime_ns: 1_700_000_000_000_000_000,
                        ..Default::default()
                    },
                    version: Version {
                        ts: Timestamp(ts),
                        host: HostId::new("host-a.example.org"),
                    },
                    base: None,
                },
            };
            let stat = StatKey {
                dev: 2049,
                ino: 1_000_000 + i,
                size: 4096,
                mtime_ns: 1_700_000_000_000_000_000,
                ctime_ns: 1_700_000_000_000_000_000,
            };
            (change, Some(stat))
        })
        .collect()
}

fn time<T>(what: &str, f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    eprintln!("{what}: {:.1} ms", took.as_secs_f64() * 1e3);
    (out, took)
}

#[test]
#[ignore]
fn ten_thousand_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ix = Index::open(dir.path()).expect("open");
    let first = tree(1);
    let (seqs, _) = time("record 10,000 new files with stats, one batch", || {
        ix.record_with_stats(&first).expect("record")
    });
    assert!(seqs.iter().all(Option::is_some));
    let (_, rewrite) = time("record 10,000 newer versions with stats, one batch", || {
        ix.record_with_stats(&tree(2)).expect("record")
    });
    let (stats, read_stats) = time("stats_below(root), 10,000 stats", || {
        ix.stats_below(&RelPath::root()).expect("stats")
    });
    assert_eq!(stats.len() as u64, N);
    let (entries, read_entries) = time("below(root), 10,000 entries", || {
        ix.below(&RelPath::root()).expect("below")
    });
    assert_eq!(entries.len() as u64, N);
    let (page, _) = time("since(0, 10,000)", || {
        ix.since(0, N as usize).expect("since")
    });
    assert_eq!(page.len() as u64, N);
    time("since(9,990, 1,000): the tail", || {
        ix.since(N * 2 - 10, 1000).expect("since")
    });
    let ((), one) = time("record 1 change (one durable commit)", || {
        let (c, _) = &first[0];
        let mut c = c.clone();
        c.entry.version.ts = Timestamp(3);
        ix.record(&[c]).expect("record");
    });
    time("100 x stat() point lookups", || {
        for (c, _) in &first[..100] {
            ix.stat(&c.path).expect("stat");
        }
    });
    time("verify()", || ix.verify().expect("verify"));
    drop(ix);
    let (ix, _) = time("reopen", || Index::open(dir.path()).expect("reopen"));
    drop(ix);

    // A warm rescan reads the stats and the entries: the budget is 150 ms
    // for all of it, of which the index must be a small part.
    assert!(
        read_stats + read_entries < Duration::from_millis(150),
        "reads too slow"
    );
    assert!(rewrite < Duration::from_secs(2), "batch write too slow");
    assert!(one < Duration::from_millis(500), "single commit too slow");
}
