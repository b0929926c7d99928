//! The walk's tests: what is found, what is left alone, what is an issue.

use super::*;
use omirr_core::observe::When;
use omirr_core::tree::Node;
use omirr_core::{Meta, Timestamp};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;

#[test]
fn basic_tree_reports_files_dirs_symlinks_with_meta() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let index = put(root, "srv/www/index.html", b"hello");
    fs::set_permissions(&index, fs::Permissions::from_mode(0o640)).expect("chmod");
    let mtime = filetime::FileTime::from_unix_time(1_000_000_000, 123_456_789);
    filetime::set_file_mtime(&index, mtime).expect("utimes");
    let tool = put(root, "srv/www/sub/tool", b"#!/bin/sh\n");
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755)).expect("chmod");
    fs::set_permissions(root.join("srv/www/sub"), fs::Permissions::from_mode(0o750))
        .expect("chmod");
    symlink("index.html", root.join("srv/www/link")).expect("symlink");
    put(root, "other/not-scanned", b"x");

    let r = scan(root, &[p("srv/www")], &|_| false, &MemBaseline::new()).expect("scan");

    assert_eq!(
        paths(&r),
        [
            "srv/www",
            "srv/www/index.html",
            "srv/www/link",
            "srv/www/sub",
            "srv/www/sub/tool"
        ]
    );
    assert!(r.issues.is_empty(), "{:?}", r.issues);
    assert!(r.vanished.is_empty());

    let md = fs::metadata(&index).expect("stat");
    let f = r.get(&p("srv/www/index.html")).expect("index found");
    assert_eq!(
        f.node,
        Node {
            content: Content::File {
                size: 5,
                hash: *blake3::hash(b"hello").as_bytes()
            },
            meta: crate::owners::with_names(Meta {
                mode: 0o640,
                uid: md.uid(),
                gid: md.gid(),
                mtime_ns: 1_000_000_000_123_456_789,
                ..Default::default()
            }),
        }
    );
    assert_eq!((f.key.dev, f.key.ino, f.key.size), (md.dev(), md.ino(), 5));
    assert_eq!(f.key.mtime_ns, 1_000_000_000_123_456_789);
    assert_eq!(f.ctime, Timestamp(ctime_ns(&index)));
    assert_eq!(
        f.when(Timestamp(9)),
        When::Scanned {
            ctime: f.ctime,
            floor: Timestamp(9)
        }
    );
    assert!(f.hashed);
    assert!(f.racy, "a file written just now is racy");
    assert_eq!(f.renamed_from, None);

    let tool = r.get(&p("srv/www/sub/tool")).expect("tool found");
    assert_eq!(
        tool.node.meta.mode, 0o4755,
        "setuid bit kept, file type dropped"
    );
    let sub = r.get(&p("srv/www/sub")).expect("sub found");
    assert_eq!(sub.node.content, Content::Dir);
    assert_eq!(sub.node.meta.mode, 0o750);
    let link = r.get(&p("srv/www/link")).expect("link found");
    assert_eq!(
        link.node.content,
        Content::Symlink {
            target: b"index.html".to_vec()
        }
    );
    assert_eq!(link.node.meta.mode, 0o777);
    assert!(!link.hashed);

    assert_eq!(
        r.stats,
        ScanStats {
            files: 2,
            dirs: 2,
            symlinks: 1,
            hashed_files: 2,
            hashed_bytes: 15,
            xattr_reads: 4,
        }
    );
}

#[test]
fn excluded_dir_is_not_descended_nor_vanished() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    put(root, "keep/a", b"a");
    put(root, "cache/deep/b", b"b");
    let mut base = MemBaseline::new();
    let k = Known {
        key: StatKey::default(),
        content: Content::File {
            size: 1,
            hash: FAKE,
        },
        xattrs: None,
        racy: false,
    };
    base.insert(p("cache/deep/gone"), k.clone());
    base.insert(p("cache/gone-too"), k);

    let asked = RefCell::new(Vec::new());
    let exclude = |path: &RelPath| {
        asked.borrow_mut().push(path.to_string());
        path.as_bytes() == b"cache"
    };
    let r = scan(root, &[RelPath::root()], &exclude, &base).expect("scan");
    assert_eq!(paths(&r), ["keep", "keep/a"]);
    assert!(
        !asked.borrow().iter().any(|a| a.starts_with("cache/")),
        "looked inside an excluded directory: {:?}",
        asked.borrow()
    );
    assert!(
        r.vanished.is_empty(),
        "excluded paths are not judged: {:?}",
        r.vanished
    );
}

#[test]
fn symlink_to_directory_is_not_followed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    put(root, "real/inside", b"x");
    symlink("real", root.join("alias")).expect("symlink");
    symlink("/", root.join("escape")).expect("symlink");

    let r = scan_all(root, &MemBaseline::new());
    assert_eq!(paths(&r), ["alias", "escape", "real", "real/inside"]);
    assert_eq!(
        r.get(&p("alias")).expect("alias").node.content,
        Content::Symlink {
            target: b"real".to_vec()
        }
    );
    assert_eq!(r.stats.symlinks, 2);

    // A top reached through a symlink is refused, not followed.
    let r = scan(root, &[p("escape/etc")], &|_| false, &MemBaseline::new()).expect("scan");
    assert!(r.found.is_empty());
    assert!(
        matches!(&r.issues[..], [ScanIssue::SymlinkAncestor { path, .. }] if *path == p("escape")),
        "{:?}",
        r.issues
    );
}

#[test]
fn non_utf8_and_newline_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let dir = root.join(OsStr::from_bytes(b"new\nline"));
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join(OsStr::from_bytes(b"bad\xff\xfe")), b"bytes").expect("write");
    symlink(OsStr::from_bytes(b"\xffx\ny"), root.join("l")).expect("symlink");

    let r = scan_all(root, &MemBaseline::new());
    let got: Vec<&[u8]> = r.found.iter().map(|f| f.path.as_bytes()).collect();
    assert_eq!(got, [&b"l"[..], b"new\nline", b"new\nline/bad\xff\xfe"]);
    let f = r
        .get(&RelPath::new(&b"new\nline/bad\xff\xfe"[..]).expect("path"))
        .expect("found");
    assert_eq!(file_hash(f), *blake3::hash(b"bytes").as_bytes());
    assert_eq!(
        r.get(&p("l")).expect("l").node.content,
        Content::Symlink {
            target: b"\xffx\ny".to_vec()
        }
    );
    assert!(r.issues.is_empty(), "{:?}", r.issues);
}

#[test]
fn missing_top_is_absent_not_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    put(root, "here/x", b"x");
    put(root, "file", b"f");
    let tops = [p("nowhere/deeper"), p("here"), p("file/below"), p("gone")];
    let r = scan(root, &tops, &|_| false, &MemBaseline::new()).expect("scan");
    assert_eq!(paths(&r), ["here", "here/x"]);
    assert!(r.issues.is_empty(), "{:?}", r.issues);

    let err = scan(
        &root.join("no-root"),
        &tops,
        &|_| false,
        &MemBaseline::new(),
    )
    .expect_err("the root itself must exist");
    assert!(err.to_string().contains("no-root"), "{err}");
}

#[test]
fn sockets_are_issues_and_not_vanished_and_fifos_are_found() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    put(root, "sock", b"was a file");
    put(root, "fifo", b"was a file");
    let base = trusted(&scan_all(root, &MemBaseline::new()));
    fs::remove_file(root.join("sock")).expect("rm");
    let _listener = std::os::unix::net::UnixListener::bind(root.join("sock")).expect("bind");
    fs::remove_file(root.join("fifo")).expect("rm");
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");

    let r = scan_all(root, &base);
    assert!(r.vanished.is_empty());
    assert!(
        matches!(
            &r.issues[..],
            [ScanIssue::Unsupported { kind: "socket", .. }]
        ),
        "{:?}",
        r.issues
    );
    let fifo = r.get(&p("fifo")).expect("the FIFO");
    assert_eq!(fifo.node.content, Content::Fifo);
    assert_eq!(fifo.node.meta.mode, 0o640);
    assert_eq!(r.found.len(), 1, "{:?}", r.found);
    // Said once per path, however often it is met.
    assert!(r.issues[0].worth_logging());
    assert!(!r.issues[0].worth_logging());
}

#[test]
fn overlapping_tops_are_scanned_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    put(root, "a/b/c", b"c");
    let r = scan(
        root,
        &[p("a/b"), p("a"), p("a")],
        &|_| false,
        &MemBaseline::new(),
    )
    .expect("scan");
    assert_eq!(paths(&r), ["a", "a/b", "a/b/c"]);
}
