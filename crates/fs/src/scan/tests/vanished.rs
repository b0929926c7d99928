//! What vanished, and what the scan cannot tell is gone.

use super::*;
use omirr_core::observe::When;
use omirr_core::Timestamp;
use std::io;

#[test]
fn vanished_paths_carry_their_nearest_parents_ctime() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    put(root, "top/keep", b"k");
    put(root, "top/lost", b"l");
    put(root, "top/sub/deep/x", b"x");
    put(root, "elsewhere/y", b"y");
    let base = trusted(&scan_all(root, &MemBaseline::new()));
    fs::remove_file(root.join("top/lost")).expect("rm");
    fs::remove_dir_all(root.join("top/sub")).expect("rm -r");
    fs::remove_dir_all(root.join("elsewhere")).expect("rm -r");

    let r = scan(root, &[p("top")], &|_| false, &base).expect("scan");
    let witness = Timestamp(ctime_ns(&root.join("top")));
    let got: Vec<(String, Timestamp)> = r
        .vanished
        .iter()
        .map(|v| (v.path.to_string(), v.witness))
        .collect();
    let want: Vec<(String, Timestamp)> = ["top/lost", "top/sub", "top/sub/deep", "top/sub/deep/x"]
        .iter()
        .map(|s| (s.to_string(), witness))
        .collect();
    assert_eq!(got, want, "elsewhere/ is not under the scanned top");
    assert_eq!(
        r.vanished[0].when(Timestamp(9)),
        When::Scanned {
            ctime: witness,
            floor: Timestamp(9)
        }
    );

    // A whole top gone: witnessed by the root.
    let r = scan(root, &[p("elsewhere")], &|_| false, &base).expect("scan");
    let witness = Timestamp(ctime_ns(root));
    let got: Vec<(String, Timestamp)> = r
        .vanished
        .iter()
        .map(|v| (v.path.to_string(), v.witness))
        .collect();
    assert_eq!(
        got,
        [
            ("elsewhere".to_string(), witness),
            ("elsewhere/y".to_string(), witness)
        ]
    );
}

/// Runs `f` in this thread with filesystem permissions checked as
/// `nobody` when running as root (root reads everything otherwise).
/// The fsuid is per thread, so other tests are unaffected.
fn without_privilege<T>(f: impl FnOnce() -> T) -> T {
    let root = nix::unistd::geteuid().is_root();
    if root {
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(65534));
    }
    let out = f();
    if root {
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0));
    }
    out
}

#[test]
fn unreadable_paths_are_issues_not_vanished() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
    put(root, "locked/inside", b"secret");
    let secret = put(root, "secret", b"s");
    put(root, "open", b"o");
    let base = trusted(&scan_all(root, &MemBaseline::new()));
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).expect("chmod");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).expect("chmod");

    let r = without_privilege(|| scan_all(root, &base));
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755)).expect("chmod");

    assert_eq!(
        paths(&r),
        ["locked", "open"],
        "the locked directory itself is there"
    );
    let mut failed: Vec<(String, &str)> = r
        .issues
        .iter()
        .map(|i| match i {
            ScanIssue::Io { path, op, source } => {
                assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
                (path.to_string(), *op)
            }
            other => panic!("unexpected issue {other}"),
        })
        .collect();
    failed.sort();
    assert_eq!(
        failed,
        [
            ("locked".to_string(), "open directory"),
            ("secret".to_string(), "open")
        ]
    );
    assert!(
        r.vanished.is_empty(),
        "unknown is not gone: {:?}",
        r.vanished
    );
    assert!(r.issues[0].to_string().contains("locked"));
}
