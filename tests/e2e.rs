//! End to end: several real `omirrd` processes on this machine, each with
//! its own root, state directory, key and port, mirroring among themselves
//! (see `support::cluster`).
//!
//! What is here today: the hosts start, load their configuration, keys
//! and pins, and scan their trees.
//!
//! Where the convergence tests go: below, one `#[test]` per scenario, each
//! with a `Cluster` from `Cluster::new` (to fill roots before start) or
//! `Cluster::start`, changes made directly in `cluster.root(NAME)`, and
//! `wait_converged(&cluster, &names, "srv/www", TIMEOUT)` to check that
//! every host ends with the same tree (its `Err` says which paths differ).
//! Scenarios to cover: a file created on one host reaches all; an edit
//! and a delete propagate; concurrent edits of one file end with the last
//! writer everywhere; a host stopped (`stop`/`kill`) during changes
//! catches up after `start_host`; `except_pat` files stay local; a path
//! outside every mirror set is never touched.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;
use support::cluster::{diff_summary, digest, wait_converged, wait_until, Cluster};

/// Long enough for a loaded CI machine; polls return as soon as they can.
const TIMEOUT: Duration = Duration::from_secs(20);

const HOSTS: [&str; 3] = ["alpha", "beta", "gamma"];

/// `/srv/www` mirrored among all the hosts.
fn www(hosts: &[&str]) -> String {
    format!(
        "HOSTS = ( {} )\n\nwww:\n/srv/www -> ${{HOSTS}}\n\texcept_pat ( \\\\.swp$ ~$ ) ;\n",
        hosts.join(" ")
    )
}

#[test]
fn hosts_start_and_report_their_start_up_scan() {
    let mut cluster = Cluster::new(&HOSTS, www);
    let site = cluster.root("alpha").join("srv/www");
    fs::create_dir_all(site.join("css")).expect("mkdir");
    fs::write(site.join("index.html"), "<h1>alpha</h1>\n").expect("write");
    fs::write(site.join("css/site.css"), "h1 { color: teal }\n").expect("write");
    symlink("index.html", site.join("home.html")).expect("symlink");
    fs::write(site.join(".index.html.swp"), "editor state").expect("write");
    for host in &HOSTS[1..] {
        fs::create_dir_all(cluster.root(host).join("srv/www")).expect("mkdir");
    }
    let before = digest(&site);
    cluster.start_all();

    for host in HOSTS {
        assert!(
            cluster.wait_for_log(host, "start-up scan done", TIMEOUT),
            "{host} did not report its start-up scan"
        );
        let log = cluster.log(host);
        assert!(
            !log.contains("created a new identity"),
            "{host} uses the key omirrd keygen made:\n{log}"
        );
    }
    // srv/www, css, css/site.css, index.html, home.html; not the .swp file.
    let alpha = cluster.log("alpha");
    assert!(alpha.contains("start-up scan done entries=5"), "{alpha}");
    assert_eq!(
        digest(&site),
        before,
        "the start-up scan does not change the tree"
    );
    // Every host shares the tree with both others.
    for host in HOSTS {
        let log = cluster.log(host);
        for other in HOSTS.iter().filter(|o| **o != host) {
            assert!(log.contains(other), "{host} names {other}:\n{log}");
        }
    }
    // beta's and gamma's trees are the same (empty, until the live mirror
    // fills them with alpha's).
    wait_converged(&cluster, &HOSTS[1..], "srv/www", TIMEOUT).expect("beta and gamma");
}

/// The harness itself: digests see paths, types, modes, link targets and
/// contents, and the convergence check says which paths differ.
#[test]
fn digests_and_differences() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for t in [&a, &b] {
        fs::create_dir_all(t.join("d")).expect("mkdir");
        fs::write(t.join("d/f"), "same").expect("write");
        symlink("d/f", t.join("l")).expect("symlink");
    }
    assert_eq!(digest(&a), digest(&b));
    assert_eq!(digest(&dir.path().join("none")), "absent");
    type Change = (&'static str, fn(&std::path::Path));
    let changes: [Change; 5] = [
        ("content", |t| {
            fs::write(t.join("d/f"), "other").expect("write")
        }),
        ("mode", |t| {
            fs::set_permissions(t.join("d/f"), fs::Permissions::from_mode(0o600)).expect("chmod")
        }),
        ("link target", |t| {
            fs::remove_file(t.join("l")).expect("rm");
            symlink("d", t.join("l")).expect("symlink");
        }),
        ("new file", |t| fs::write(t.join("d/g"), "").expect("write")),
        ("type", |t| {
            fs::remove_file(t.join("d/f")).expect("rm");
            fs::create_dir(t.join("d/f")).expect("mkdir");
        }),
    ];
    for (what, change) in changes {
        let c = dir.path().join(format!("c-{what}"));
        fs::create_dir_all(c.join("d")).expect("mkdir");
        fs::write(c.join("d/f"), "same").expect("write");
        symlink("d/f", c.join("l")).expect("symlink");
        assert_eq!(digest(&a), digest(&c), "{what}: copy");
        change(&c);
        assert_ne!(digest(&a), digest(&c), "{what} is seen");
        let summary = diff_summary(&["a", "c"], &[a.clone(), c.clone()]);
        assert!(summary.contains("a vs c:"), "{what}: {summary}");
    }
    let summary = diff_summary(&["a", "c"], &[a.clone(), dir.path().join("c-new file")]);
    assert!(
        summary.contains("d/g: only on c: file 100") && summary.contains(" 0 bytes"),
        "{summary}"
    );
    let summary = diff_summary(&["a", "c"], &[a.clone(), dir.path().join("c-content")]);
    assert!(
        summary.contains("d/f: a: file 100") && summary.contains("4 bytes"),
        "{summary}"
    );
    assert!(wait_until(Duration::from_millis(100), || true));
    assert!(!wait_until(Duration::from_millis(50), || false));
}
