//! End to end: how omirrd treats the host it runs on (issue 11, "Faults
//! and the host itself"): what the start-up clean-up looks at, what it does
//! to directories above a mirrored tree, how it accepts connections when
//! flooded or out of file descriptors, and whose configuration it trusts.
//! Each test runs real `omirrd` processes (see `support::cluster`).

mod support;

use std::fs;
use std::time::Duration;
use support::cluster::{wait_until, Cluster};

/// Long enough for a loaded CI machine; polls return as soon as they can.
const TIMEOUT: Duration = Duration::from_secs(20);

/// One cluster at a time: the timing bounds are for a few daemons on two
/// cores, not for several clusters competing.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `/srv/www` mirrored among `hosts`.
fn www(hosts: &[&str]) -> String {
    format!("www:\n/srv/www -> ( {} )\n", hosts.join(" "))
}

const TAG: &str = "0123456789abcdef";

#[test]
fn the_start_up_clean_up_looks_only_inside_the_mirrored_trees() {
    let _one = serial();
    let mut cluster = Cluster::new(&["alpha", "beta"], www);
    let root = cluster.root("alpha");
    // Temporary names of an interrupted run inside the mirrored tree...
    let inside = [
        format!("srv/www/.omirr.index.html.{TAG}.tmp"),
        format!("srv/www/css/.omirr.site.css.{TAG}.tmp"),
    ];
    // ...and files with such names elsewhere under the root, which are
    // none of omirrd's business (the root is `/` by default).
    let outside = [
        format!("home/.omirr.notes.{TAG}.tmp"),
        format!("srv/.omirr.other.{TAG}.tmp"),
        format!(".omirr.top.{TAG}.tmp"),
    ];
    for f in inside.iter().chain(&outside) {
        support::write_file(&root.join(f), "half", 0o644);
    }
    cluster.start_host("alpha");
    assert!(
        cluster.wait_for_log("alpha", "ready", TIMEOUT),
        "alpha did not start:\n{}",
        cluster.log("alpha")
    );
    for f in &inside {
        assert!(!root.join(f).exists(), "{f} was not cleaned up");
    }
    for f in &outside {
        assert!(root.join(f).exists(), "{f}, outside /srv/www, was removed");
    }
    assert!(
        cluster.log("alpha").contains("removed temporary files")
            && cluster.log("alpha").contains("files=2"),
        "{}",
        cluster.log("alpha")
    );
}
