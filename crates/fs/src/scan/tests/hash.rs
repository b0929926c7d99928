//! Reading files: when a hash is reused, when a file is read again, the buffer.

use super::*;
use crate::scan::buf::{AlignedBuf, BUF_ALIGN, BUF_SIZE};
use crate::scan::hash::Reading;
use crate::scan::walk::Walker;
use std::fs::File;
use std::os::fd::AsFd;

#[test]
fn unchanged_file_is_not_reread() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    put(root, "a", b"content");
    let first = scan_all(root, &MemBaseline::new());
    let mut base = trusted(&first);
    // A hash nobody could compute from the file: finding it in the
    // report proves the file was not read.
    let mut k = base.known(&p("a")).expect("ok").expect("known");
    k.content = Content::File {
        size: 7,
        hash: FAKE,
    };
    base.insert(p("a"), k);

    let r = scan_all(root, &base);
    let f = r.get(&p("a")).expect("a");
    assert_eq!(file_hash(f), FAKE);
    assert!(!f.hashed);
    assert_eq!(r.stats.hashed_files, 0);
    assert!(r.vanished.is_empty());
}

#[test]
fn racy_baseline_key_is_not_trusted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    put(root, "a", b"content");
    let first = scan_all(root, &MemBaseline::new());
    let mut base = MemBaseline::from_report(&first);
    let mut k = base.known(&p("a")).expect("ok").expect("known");
    assert!(k.racy, "recorded within the racy window");
    k.content = Content::File {
        size: 7,
        hash: FAKE,
    };
    base.insert(p("a"), k);

    let f = scan_all(root, &base).found.remove(0);
    assert!(f.hashed);
    assert_eq!(file_hash(&f), *blake3::hash(b"content").as_bytes());
}

#[test]
fn changed_mtime_is_rehashed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let a = put(root, "a", b"content");
    let first = scan_all(root, &MemBaseline::new());
    let mut base = trusted(&first);
    let mut k = base.known(&p("a")).expect("ok").expect("known");
    k.content = Content::File {
        size: 7,
        hash: FAKE,
    };
    base.insert(p("a"), k);
    filetime::set_file_mtime(&a, filetime::FileTime::from_unix_time(1_234_567_890, 0))
        .expect("utimes");

    let f = scan_all(root, &base).found.remove(0);
    assert!(f.hashed);
    assert_eq!(file_hash(&f), *blake3::hash(b"content").as_bytes());
    assert_eq!(f.node.meta.mtime_ns, 1_234_567_890_000_000_000);
}

#[test]
fn file_larger_than_the_buffer_hashes_correctly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let mut data = Vec::with_capacity(3 * BUF_SIZE + 12_345);
    let mut x: u32 = 1;
    while data.len() < 3 * BUF_SIZE + 12_345 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push(x as u8);
    }
    put(root, "big", &data);
    let r = scan_all(root, &MemBaseline::new());
    let f = r.get(&p("big")).expect("big");
    assert_eq!(file_hash(f), *blake3::hash(&data).as_bytes());
    assert_eq!(f.key.size, data.len() as u64);
    assert_eq!(r.stats.hashed_bytes, data.len() as u64);
}

#[test]
fn read_buffer_is_page_aligned() {
    for _ in 0..4 {
        let mut b = AlignedBuf::new(BUF_SIZE);
        let buf = b.get();
        assert_eq!(buf.len(), BUF_SIZE);
        assert_eq!(
            buf.as_ptr() as usize % BUF_ALIGN,
            0,
            "half-speed copies otherwise"
        );
    }
}

#[test]
fn a_file_that_changed_since_its_stat_is_read_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let a = put(root, "a", b"before");
    let mut key = lstat_key(&a).expect("lstat");
    let tops = [RelPath::root()];
    let base = MemBaseline::new();
    let mut w = Walker::new(root, &tops, &|_| false, &base);
    let dir = File::open(root).expect("open root");
    let dir = dir.as_fd();
    assert!(
        matches!(w.read(dir, b"a", &p("a"), &key), Reading::Hashed(h) if h == *blake3::hash(b"before").as_bytes())
    );
    // What a write between the lstat and the read looks like.
    key.ctime_ns -= 1;
    assert!(matches!(w.read(dir, b"a", &p("a"), &key), Reading::Changed));
    key.ctime_ns += 1;
    key.size += 1;
    assert!(
        matches!(w.read(dir, b"a", &p("a"), &key), Reading::Changed),
        "a torn read is not a hash"
    );
    // Replaced by another inode.
    fs::remove_file(&a).expect("rm");
    put(root, "a", b"before");
    key.size -= 1;
    assert!(matches!(w.read(dir, b"a", &p("a"), &key), Reading::Changed));
    assert!(w.report.issues.is_empty());
}
