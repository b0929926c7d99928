//! End to end: every kind of file an administrator keeps, mirrored by
//! real `omirrd` processes (see `support::cluster`): sparse files keep
//! their holes on disk and on the wire, mtimes keep their nanoseconds,
//! extended attributes and ACLs arrive (and a change of one alone
//! travels live), FIFOs are mirrored, and sockets and device nodes are
//! refused with one log line each.

mod support;

use omirr_testkit::{noise, wait_until};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
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

/// Bytes a file takes on disk.
fn on_disk(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(u64::MAX)
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[test]
fn a_sparse_file_keeps_its_holes_on_disk_and_on_the_wire_and_mtimes_their_nanoseconds() {
    let _one = support::serial();
    let hosts = ["a", "b", "c"];
    let mut cluster = Cluster::new(&hosts, data);
    cluster.create_dir_everywhere("srv/data");
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
    for h in ["b", "c"] {
        let got = cluster.root(h).join("srv/data/disk.img");
        let m = fs::metadata(&got).expect("the sparse file");
        assert_eq!(m.len(), GIB, "its length on {h}");
        let mut back = vec![0u8; data.len()];
        fs::File::open(&got)
            .and_then(|f| f.read_exact_at(&mut back, 512 * MIB))
            .expect("read its data");
        assert!(back == data, "its data on {h}");
        let blocks = on_disk(&got);
        assert!(
            blocks < MIB,
            "the sparse file takes {blocks} bytes on {h}'s disk (a: {a_blocks})"
        );
        // Everything h read from its peers' connections (it may have
        // fetched from either): the chunk lists, the chunks around the
        // data, the change pages.
        let wire: u64 = hosts
            .iter()
            .filter(|p| **p != h)
            .map(|p| cluster.peer_counter(h, p, "bytes_received"))
            .sum();
        assert!(
            wire < 1_000_000,
            "{h} read {wire} bytes from its peers for a 1 GiB file of 64 KiB data"
        );
        assert!(wire > data.len() as u64, "the counter counts: {wire}");
        eprintln!("sparse file: {blocks} bytes on {h}'s disk, {wire} bytes read from its peers");
    }

    let mb = fs::metadata(cluster.root("b").join("srv/data/stamped")).expect("stamped on b");
    assert_eq!(
        (mb.mtime(), mb.mtime_nsec()),
        (1_700_000_000, 123_456_789),
        "the mtime on b, to the nanosecond"
    );
}

/// The extended attributes of `path` (not following a symlink) that
/// omirr handles when it runs as root, as (name, value).
fn xattrs_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name_os = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, name_os, &mut value[..]) {
            out.push((name.to_vec(), value[..len].to_vec()));
        }
    }
    out.sort();
    out
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> rustix::io::Result<()> {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
}

/// A POSIX ACL as the kernel stores it in `system.posix_acl_access`:
/// version 2, then (tag, permissions, id) per entry, in tag order.
/// `user::rw-, user:4242:r--, group::r--, mask::r--, other::---`.
fn acl_bytes() -> Vec<u8> {
    const UNDEFINED: u32 = u32::MAX;
    let entries: [(u16, u16, u32); 5] = [
        (0x01, 6, UNDEFINED), // ACL_USER_OBJ rw-
        (0x02, 4, 4242),      // ACL_USER 4242 r--
        (0x04, 4, UNDEFINED), // ACL_GROUP_OBJ r--
        (0x10, 4, UNDEFINED), // ACL_MASK r--
        (0x20, 0, UNDEFINED), // ACL_OTHER ---
    ];
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

fn is_fifo(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// How many lines of `log` hold `needle`.
fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn xattrs_acls_and_fifos_arrive_and_sockets_and_devices_are_refused_once() {
    let _one = support::serial();
    let hosts = ["a", "b", "c"];
    let mut cluster = Cluster::new(&hosts, data);
    cluster.create_dir_everywhere("srv/data");
    let dir = cluster.root("a").join("srv/data");
    let tagged = dir.join("tagged.txt");
    fs::write(&tagged, "with attributes\n").expect("write");
    if let Err(e) = set_xattr(&tagged, "user.comment", b"kept everywhere") {
        // Never a silent pass: say why nothing was checked.
        eprintln!("SKIP: {} keeps no user.* attributes ({e})", dir.display());
        return;
    }
    let acl = acl_bytes();
    let acl_set = set_xattr(&tagged, "system.posix_acl_access", &acl);
    if let Err(e) = &acl_set {
        eprintln!("the filesystem takes no POSIX ACL ({e}): the ACL is not checked");
    }
    let root = nix::unistd::geteuid().is_root();
    if root {
        set_xattr(&tagged, "trusted.origin", b"a").expect("a trusted.* attribute as root");
    }
    let pipe = dir.join("pipe");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &pipe,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .expect("mkfifo");
    let _socket = std::os::unix::net::UnixListener::bind(dir.join("sock")).expect("a socket");
    let device = dir.join("null");
    if root {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &device,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .expect("mknod as root");
    } else {
        eprintln!("not root: no device node is made, only the socket is checked as refused");
    }
    cluster.start_all();

    for h in ["b", "c"] {
        let there = cluster.root(h).join("srv/data");
        let want = xattrs_of(&tagged);
        assert!(
            wait_until(TIMEOUT, || xattrs_of(&there.join("tagged.txt")) == want
                && is_fifo(&there.join("pipe"))),
            "{h} has the attributes {:?} (a: {want:?}) and a FIFO: {}\n{}",
            xattrs_of(&there.join("tagged.txt")),
            is_fifo(&there.join("pipe")),
            cluster.logs()
        );
        if acl_set.is_ok() {
            assert!(
                want.iter()
                    .any(|(n, v)| n == b"system.posix_acl_access" && *v == acl),
                "a's ACL as set: {want:?}"
            );
        }
        let mode = fs::symlink_metadata(there.join("pipe"))
            .expect("pipe")
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o640, "the FIFO's mode on {h}");
        assert!(!there.join("sock").exists(), "no socket on {h}");
        assert!(!there.join("null").exists(), "no device node on {h}");
    }

    // A storm of events on the socket and the device node says nothing
    // more; then an attribute change alone travels live (IN_ATTRIB).
    // The watcher reports in order, so once that change has arrived, the
    // storm before it has been looked at.
    for i in 0..20 {
        let mode = rustix::fs::Mode::from_raw_mode(if i % 2 == 0 { 0o600 } else { 0o644 });
        rustix::fs::chmod(dir.join("sock"), mode).expect("chmod the socket");
        if root {
            rustix::fs::chmod(&device, mode).expect("chmod the device");
        }
    }
    set_xattr(&tagged, "user.later", b"set while running").expect("setxattr");
    for h in ["b", "c"] {
        let there = cluster.root(h).join("srv/data/tagged.txt");
        assert!(
            wait_until(TIMEOUT, || xattrs_of(&there)
                .iter()
                .any(|(n, v)| n == b"user.later" && v == b"set while running")),
            "the live attribute on {h}: {:?}\n{}",
            xattrs_of(&there),
            cluster.logs()
        );
    }
    let log = cluster.log("a");
    assert_eq!(
        lines_with(
            &log,
            "srv/data/sock is a socket, which omirr does not mirror"
        ),
        1,
        "one line for the socket:\n{log}"
    );
    if root {
        assert_eq!(
            lines_with(
                &log,
                "srv/data/null is a character device, which omirr does not mirror"
            ),
            1,
            "one line for the device node:\n{log}"
        );
    }
}

/// Whether `a` and `b` are one inode (two names of one file).
fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => x.file_type().is_file() && (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

#[test]
fn a_hard_linked_pair_arrives_as_one_inode_with_two_names() {
    let _one = support::serial();
    let hosts = ["a", "b", "c"];
    let mut cluster = Cluster::new(&hosts, data);
    cluster.create_dir_everywhere("srv/data");
    let dir = cluster.root("a").join("srv/data");
    let size = 2 * MIB as usize;
    fs::write(dir.join("big"), noise(size, 11)).expect("write");
    fs::create_dir_all(dir.join("sub")).expect("mkdir");
    fs::hard_link(dir.join("big"), dir.join("sub/alias")).expect("ln");
    fs::write(dir.join("live.txt"), "one inode\n").expect("write");
    // The index's inode cache keeps no file changed within the scan's
    // racy window (omirr_fs::scan::RACY_WINDOW_NS): a name linked live to
    // a file written just before is not recognised (see sync-model.md).
    // live.txt is older than that when the start-up scan meets it.
    std::thread::sleep(Duration::from_millis(2500));
    cluster.start_all();

    for h in ["b", "c"] {
        let there = cluster.root(h).join("srv/data");
        assert!(
            wait_until(TIMEOUT, || same_inode(
                &there.join("big"),
                &there.join("sub/alias")
            )),
            "big and sub/alias are one inode on {h}\n{}",
            cluster.logs()
        );
        assert_eq!(fs::read(there.join("sub/alias")).expect("read").len(), size);
        assert_eq!(fs::metadata(there.join("big")).expect("stat").nlink(), 2);
    }
    // The content crossed the network once per host, not once per name
    // (from a, or forwarded by the other host).
    let received: u64 = ["a", "c"]
        .iter()
        .map(|p| cluster.peer_counter("b", p, "file_bytes_received"))
        .sum();
    assert!(
        received < (size + size / 2) as u64,
        "b received {received} bytes of content for one file of {size}"
    );

    // A link made while running travels live.
    let b = cluster.root("b").join("srv/data");
    assert!(
        wait_until(TIMEOUT, || b.join("live.txt").exists()),
        "live.txt on b\n{}",
        cluster.logs()
    );
    fs::hard_link(dir.join("live.txt"), dir.join("live-too.txt")).expect("ln");
    for h in ["b", "c"] {
        let there = cluster.root(h).join("srv/data");
        assert!(
            wait_until(TIMEOUT, || same_inode(
                &there.join("live.txt"),
                &there.join("live-too.txt")
            )),
            "live.txt and live-too.txt are one inode on {h}\n{}",
            cluster.logs()
        );
    }
    wait_converged(&cluster, &hosts, "srv/data", TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
}
