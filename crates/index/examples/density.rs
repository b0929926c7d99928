//! How many bytes the index takes per entry, and where they go, for a
//! tree shaped like the benchmark's million files (`bench/run --million`):
//! `million/dDDDD/fFFFF`, 1,000 files of 64 bytes per directory, each with
//! its own hash, stat and inode.
//!
//! `cargo run --release -p omirr-index --example density -- N [BATCH]`:
//! N files recorded in transactions of BATCH changes (default 1,000, as a
//! receiver records what it applied; 0 = one transaction, as a sender
//! records its start-up scan). Prints the file size per entry, redb's
//! per-table account, then the size after a compaction.
//!
//! `... --example density -- open DIR` opens the index in DIR (converting
//! one of an older format) and prints the same, with the time it took.

use omirr_core::entry::Meta;
use omirr_core::StatKey;
use omirr_core::{Change, Content, Entry, HostId, Name, RelPath, Timestamp, Version};
use omirr_index::{Batch, Index, StatUpdate};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("open") {
        return open(&args.nth(1).ok_or("open DIR")?);
    }
    let n: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let batch: u64 = args.next().map_or(Ok(1_000), |a| a.parse())?;
    let dir = tempfile::tempdir_in(std::env::var("DENSITY_DIR").unwrap_or("/dev/shm".into()))?;
    let mut index = Index::open(dir.path())?;
    let host = HostId::new("a");
    let name = Name::new(b"root").ok_or("name")?;
    let meta = |mode| Meta {
        mode,
        uid: 0,
        gid: 0,
        mtime_ns: 1_764_633_600_123_456_789,
        owner: name,
        group: name,
        ..Default::default()
    };
    let mut ts = 1_764_633_600_000_000_000u64;
    let mut changes: Vec<(Change, StatUpdate)> = Vec::new();
    let dirs = n.div_ceil(1000);
    let mut push = |path: String, content: Content, mode: u32, ino: u64, ts: u64| {
        let stat = StatKey {
            dev: 2049,
            ino,
            size: if let Content::File { size, .. } = content {
                size
            } else {
                4096
            },
            mtime_ns: 1_764_633_600_123_456_789,
            ctime_ns: 1_764_633_600_123_456_789 + ino as i64,
        };
        changes.push((
            Change {
                path: RelPath::new(path.into_bytes()).expect("path"),
                entry: Entry {
                    content,
                    meta: meta(mode),
                    version: Version {
                        ts: Timestamp(ts),
                        host: host.clone(),
                    },
                    base: None,
                },
            },
            StatUpdate::Set(stat),
        ));
    };
    ts += 1;
    push("million".into(), Content::Dir, 0o755, 1, ts);
    for d in 0..dirs {
        ts += 1;
        push(format!("million/d{d:04}"), Content::Dir, 0o755, 2 + d, ts);
        for f in 0..1000.min(n - d * 1000) {
            let i = d * 1000 + f;
            let mut hash = [0u8; 32];
            for (j, b) in hash.iter_mut().enumerate() {
                *b = (i
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .rotate_left(j as u32 * 7)
                    >> 3) as u8;
            }
            ts += 1;
            push(
                format!("million/d{d:04}/f{f:04}"),
                Content::File { size: 64, hash },
                0o644,
                10_000 + i,
                ts,
            );
        }
    }
    let entries = changes.len() as u64;
    let per = if batch == 0 { entries } else { batch } as usize;
    let start = Instant::now();
    // DENSITY_READER_MS=N: a thread holds a read transaction N ms at a
    // time meanwhile, as a daemon serving its peer does.
    let hold_ms: u64 = std::env::var("DENSITY_READER_MS").map_or(Ok(0), |v| v.parse())?;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<(), Box<dyn std::error::Error>> {
        if hold_ms > 0 {
            let (index, done) = (&index, &done);
            scope.spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let reader = index.reader();
                    std::thread::sleep(std::time::Duration::from_millis(hold_ms));
                    drop(reader);
                }
            });
        }
        // DENSITY_RESTAT: the entries are first recorded without a stat.
        let first = if std::env::var("DENSITY_RESTAT").is_ok() {
            StatUpdate::Keep
        } else {
            StatUpdate::Forget
        };
        let result = changes.chunks(per).try_for_each(|chunk| {
            let mut b = Batch::new();
            for (c, s) in chunk {
                b.record(
                    c.clone(),
                    if first == StatUpdate::Keep { first } else { *s },
                );
            }
            index.commit(&b).map(drop)
        });
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(result?)
    })?;
    // DENSITY_RESTAT=N: then forget every stat and set it again, N paths
    // per transaction, as a receiver's watcher does for racy files.
    if let Ok(n) = std::env::var("DENSITY_RESTAT") {
        let n: usize = n.parse()?;
        for set in [false, true] {
            for chunk in changes.chunks(n) {
                let updates: Vec<_> = chunk
                    .iter()
                    .map(|(c, s)| match s {
                        StatUpdate::Set(k) if set => (c.path.clone(), Some(*k)),
                        _ => (c.path.clone(), None),
                    })
                    .collect();
                index.update_stats(&updates)?;
            }
        }
    }
    let took = start.elapsed();
    let file = index.path().to_path_buf();
    let size = std::fs::metadata(&file)?.len();
    println!(
        "{entries} entries, batches of {per}: recorded in {:.2} s; file {} bytes = {:.0} B/entry",
        took.as_secs_f64(),
        size,
        size as f64 / entries as f64
    );
    report(&index, entries)?;
    let start = Instant::now();
    let below = omirr_core::IndexView::below(&index, &RelPath::root())?.len();
    let t_below = start.elapsed();
    let start = Instant::now();
    let stats = index.stats_below(&RelPath::root())?.len();
    let t_stats = start.elapsed();
    println!(
        "below(root): {below} in {:.0} ms; stats_below(root): {stats} in {:.0} ms",
        t_below.as_secs_f64() * 1e3,
        t_stats.as_secs_f64() * 1e3
    );
    // Lookups one by one, each in its own read transaction, and through
    // one reader.
    let sample: Vec<RelPath> = changes
        .iter()
        .step_by(10)
        .map(|(c, _)| c.path.clone())
        .collect();
    let start = Instant::now();
    for path in &sample {
        omirr_core::IndexView::entry(&index, path)?;
    }
    let one_by_one = start.elapsed();
    let start = Instant::now();
    let reader = index.reader()?;
    for path in &sample {
        omirr_core::IndexView::entry(&reader, path)?;
    }
    drop(reader);
    let read_once = start.elapsed();
    println!(
        "{} entry lookups: {:.2} us each by Index, {:.2} us each by one IndexReader",
        sample.len(),
        one_by_one.as_secs_f64() * 1e6 / sample.len() as f64,
        read_once.as_secs_f64() * 1e6 / sample.len() as f64
    );
    let start = Instant::now();
    index.compact()?;
    let size = std::fs::metadata(&file)?.len();
    println!(
        "after compact ({:.2} s): file {} bytes = {:.0} B/entry",
        start.elapsed().as_secs_f64(),
        size,
        size as f64 / entries as f64
    );
    report(&index, entries)?;
    Ok(())
}

fn report(index: &Index, entries: u64) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "  {:<14} {:>9} {:>12} {:>11} {:>11} {:>8} {:>7} {:>8}",
        "table", "rows", "stored B", "meta B", "frag B", "leaves", "branch", "B/entry"
    );
    for t in index.space_report()? {
        let pages = t.leaf_pages + t.branch_pages;
        let per = if t.name == "(database)" {
            t.leaf_pages as f64 * t.rows as f64 / entries as f64
        } else {
            pages as f64 * 4096.0 / entries as f64
        };
        println!(
            "  {:<14} {:>9} {:>12} {:>11} {:>11} {:>8} {:>7} {:>8.1}",
            t.name,
            t.rows,
            t.stored_bytes,
            t.metadata_bytes,
            t.fragmented_bytes,
            t.leaf_pages,
            t.branch_pages,
            per
        );
    }
    Ok(())
}

/// Opens (and so converts) the index in `dir`, and reports on it.
fn open(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let file = std::path::Path::new(dir).join(omirr_index::FILE_NAME);
    let before = std::fs::metadata(&file)?.len();
    let start = Instant::now();
    let index = Index::open(std::path::Path::new(dir))?;
    let took = start.elapsed();
    let entries = index.len()?;
    let size = std::fs::metadata(&file)?.len();
    println!(
        "opened in {:.2} s: {entries} entries; file {before} bytes before, {size} after = {:.0} B/entry",
        took.as_secs_f64(),
        size as f64 / entries as f64
    );
    report(&index, entries)?;
    let start = Instant::now();
    index.verify()?;
    println!("verified in {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}
