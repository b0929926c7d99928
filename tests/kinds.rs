//! End to end: every kind of file an administrator keeps, mirrored by
//! real `omirrd` processes (see `support::cluster`): sparse files keep
//! their holes on disk and on the wire, mtimes keep their nanoseconds.

mod support;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime};
use support::cluster::{wait_converged, Cluster};

/// Long enough for a loaded CI machine; polls return as soon as they can.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `/srv/data` mirrored among `hosts`.
fn data(hosts: &[&str]) -> String {
    format!(
        "HOSTS = ( {} )\n\ndata:\n/srv/data -> ${{HOSTS}}\n\tinstall ;\n",
        hosts.join(" ")
    )
}

/// `len` bytes that differ from any other call's, deterministically
/// (xorshift), and do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Bytes a file takes on disk.
fn on_disk(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(u64::MAX)
}

/// `peer`'s counter `counter` in `host`'s status.
fn peer_counter(cluster: &Cluster, host: &str, peer: &str, counter: &str) -> u64 {
    cluster
        .status(host)
        .and_then(|s| s["peers"][peer][counter].as_u64())
        .unwrap_or_else(|| panic!("{host} shows no {counter} for {peer}"))
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[test]
fn a_sparse_file_keeps_its_holes_on_disk_and_on_the_wire_and_mtimes_their_nanoseconds() {
    let _one = support::serial();
    let hosts = ["a", "b"];
    let mut cluster = Cluster::new(&hosts, data);
    for h in hosts {
        fs::create_dir_all(cluster.root(h).join("srv/data")).expect("mkdir");
    }
    let dir = cluster.root("a").join("srv/data");
    // 1 GiB, 64 KiB of it data, in the middle: the rest is holes.
    let sparse = dir.join("disk.img");
    let data = noise(64 * 1024, 7);
    {
        let f = fs::File::create(&sparse).expect("create the sparse file");
        f.set_len(GIB).expect("set_len");
        f.write_all_at(&data, 512 * MIB).expect("write its data");
    }
    let a_blocks = on_disk(&sparse);
    if a_blocks >= MIB {
        // A filesystem without holes (tmpfs has them, so does ext4):
        // nothing to test here.
        eprintln!("SKIP: the test's filesystem keeps no holes ({a_blocks} bytes on a)");
        return;
    }
    // An mtime with nanoseconds that a microsecond clock would lose.
    let stamped = dir.join("stamped");
    fs::write(&stamped, "nanoseconds\n").expect("write");
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    fs::File::options()
        .write(true)
        .open(&stamped)
        .and_then(|f| f.set_modified(mtime))
        .expect("set the mtime");
    cluster.start_all();

    wait_converged(&cluster, &hosts, "srv/data", TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let got = cluster.root("b").join("srv/data/disk.img");
    let m = fs::metadata(&got).expect("the sparse file on b");
    assert_eq!(m.len(), GIB, "its length");
    let mut back = vec![0u8; data.len()];
    fs::File::open(&got)
        .and_then(|f| f.read_exact_at(&mut back, 512 * MIB))
        .expect("read its data on b");
    assert!(back == data, "its data on b");
    let b_blocks = on_disk(&got);
    assert!(
        b_blocks < MIB,
        "the sparse file takes {b_blocks} bytes on b's disk (a: {a_blocks})"
    );
    // Everything b read from a's connection: the chunk list, the chunks
    // around the data, the change pages.
    let wire = peer_counter(&cluster, "b", "a", "bytes_received");
    assert!(
        wire < 1_000_000,
        "b read {wire} bytes from a for a 1 GiB file of 64 KiB data"
    );
    assert!(wire > data.len() as u64, "the counter counts: {wire}");
    eprintln!("sparse file: {b_blocks} bytes on b's disk, {wire} bytes read from a");

    let mb = fs::metadata(cluster.root("b").join("srv/data/stamped")).expect("stamped on b");
    assert_eq!(
        (mb.mtime(), mb.mtime_nsec()),
        (1_700_000_000, 123_456_789),
        "the mtime on b, to the nanosecond"
    );
}
