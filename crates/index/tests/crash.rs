//! `kill -9` at a random moment leaves an index that opens, is consistent,
//! holds every batch reported committed, and no part of any other batch.
//!
//! The test re-runs its own binary as the child (filtered to this test,
//! with an environment variable saying "be the writer"), lets it commit
//! batches as fast as it can, and SIGKILLs it.

use omirr_core::entry::Meta;
use omirr_core::StatKey;
use omirr_core::{Change, Content, Entry, HostId, IndexView, RelPath, Timestamp, Version};
use omirr_index::{Batch, Index, StatUpdate};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TEST_NAME: &str = "crash_mid_write_leaves_a_consistent_index";
const CHILD_ENV: &str = "OMIRR_INDEX_CRASH_CHILD_DIR";
/// Paths per batch, and how many distinct path sets batches cycle over.
const WIDTH: u64 = 40;
const SETS: u64 = 7;
const ROUNDS: u64 = 10;

fn path(g: u64, j: u64) -> RelPath {
    RelPath::new(format!("d{}/f{j}", g % SETS).into_bytes()).expect("valid path")
}

/// Batch `g`: every path of set `g % SETS` at timestamp `g`, some of them
/// deleted, with stats (pairs of paths share an inode, like hard links),
/// the peer cursor at `g`, and every tenth batch an expiry pass.
fn batch(g: u64) -> Batch {
    let mut b = Batch::new();
    for j in 0..WIDTH {
        let deleted = (j + g) % 5 == 0;
        let content = if deleted {
            Content::Deleted
        } else {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(g * WIDTH + j).to_le_bytes());
            Content::File { size: j, hash }
        };
        let stat = if deleted {
            StatUpdate::Forget
        } else {
            StatUpdate::Set(StatKey {
                dev: 1,
                ino: (g * WIDTH + j) / 2,
                size: j,
                mtime_ns: g as i64,
                ctime_ns: g as i64,
            })
        };
        let change = Change {
            path: path(g, j),
            entry: Entry {
                content,
                meta: Meta::default(),
                version: Version {
                    ts: Timestamp(g),
                    host: HostId::new("writer"),
                },
                base: None,
            },
        };
        b.record(change, stat);
    }
    b.set_cursor(HostId::new("peer"), g);
    b
}

/// The child: write batches until killed (or, should the parent be gone,
/// for a minute at most).
fn be_the_writer(dir: &Path) {
    let ix = Index::open(dir).expect("child opens the index");
    let mut g = ix.hlc_last().expect("hlc").0 + 1;
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    while start.elapsed() < Duration::from_secs(60) {
        ix.commit(&batch(g)).expect("commit");
        if g % 10 == 0 {
            ix.expire_tombstones(Timestamp(g), 3 * SETS)
                .expect("expire");
        }
        // Said only once the commit returned: the parent holds us to it.
        writeln!(out, "committed {g}").expect("report");
        out.flush().expect("flush");
        g += 1;
    }
}

#[test]
fn crash_mid_write_leaves_a_consistent_index() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        be_the_writer(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("crash test seed {seed:#x}");
    let mut highest_committed = 0;
    for round in 0..ROUNDS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the writer");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(g) = line.strip_prefix("committed ") {
                    let g: u64 = g.parse().expect("a batch number");
                    if last.is_none() {
                        let _ = tx.send(());
                    }
                    last = Some(g);
                }
            }
            last
        });
        // Odd rounds kill at a random moment from the start (maybe while
        // opening or repairing); even rounds once batches are flowing.
        if round % 2 == 0 {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("the writer commits its first batch");
        }
        std::thread::sleep(Duration::from_micros(seed % 150_000));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        let committed = reader.join().expect("reader thread");
        let reopening = Instant::now();
        let ix = Index::open(dir.path()).expect("reopen after kill -9");
        eprintln!(
            "round {round}: killed after batch {committed:?}; reopened in {:?}",
            reopening.elapsed()
        );
        ix.verify().unwrap_or_else(|e| panic!("round {round}: {e}"));
        let entries = ix.below(&RelPath::root()).expect("entries");
        let top = entries
            .iter()
            .map(|(_, e)| e.version.ts.0)
            .max()
            .unwrap_or(0);
        if let Some(c) = committed {
            highest_committed = highest_committed.max(c);
        }
        // Durable: everything reported committed is there.
        assert!(
            top >= highest_committed,
            "round {round}: batch {highest_committed} lost (top {top})"
        );
        assert!(ix.hlc_last().expect("hlc").0 >= top);
        assert!(
            ix.last_seq().expect("last_seq")
                >= ix.since(0, usize::MAX).expect("since").len() as u64
        );
        // Atomic: the newest batch is there whole, cursor included.
        if top > 0 {
            for j in 0..WIDTH {
                let e = ix
                    .entry(&path(top, j))
                    .expect("entry")
                    .expect("whole batch");
                assert_eq!(
                    e.version.ts.0, top,
                    "round {round}: batch {top} is partial at f{j}"
                );
            }
            assert_eq!(
                ix.cursor(&HostId::new("peer")).expect("cursor"),
                top,
                "round {round}"
            );
        }
        // And it can be written again.
        ix.record(&[]).expect("empty record");
        ix.set_hlc_last(Timestamp(top)).expect("writable");
    }
    assert!(
        highest_committed > 0,
        "no round got a batch in before the kill"
    );
}
