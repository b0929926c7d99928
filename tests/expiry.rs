//! Tombstone expiry in the daemon (issue 13, part 3): expiry runs at
//! start and periodically, forgets a deletion's tombstone once it is
//! older than `--tombstone-horizon`, counts it in `omirrd status`, and
//! `omirrd check` says how long deletions are remembered. The rules
//! themselves (the watermark, the long-absent host) are simulated in
//! crates/sync/tests/simulation.rs.

mod support;

use omirr_core::RelPath;
use omirr_testkit::wait_until;
use std::fs;
use std::time::Duration;
use support::cluster::{wait_converged, Cluster};
use support::{omirrd, stdout};

const TIMEOUT: Duration = Duration::from_secs(20);

/// `/srv/www` mirrored among all the hosts.
fn www(hosts: &[&str]) -> String {
    format!(
        "HOSTS = ( {} )\n\nwww:\n/srv/www -> ${{HOSTS}}\n\texcept_pat ( \\\\.swp$ ~$ ) ;\n",
        hosts.join(" ")
    )
}

fn expired(cluster: &Cluster, host: &str) -> u64 {
    cluster
        .status(host)
        .and_then(|s| s["expired_tombstones"].as_u64())
        .unwrap_or(0)
}

#[test]
fn the_daemon_forgets_a_tombstone_older_than_the_horizon() {
    let _serial = support::serial();
    let hosts = ["alpha", "beta"];
    let mut cluster = Cluster::new(&hosts, www);
    cluster.add_args(&["--tombstone-horizon", "2s"]);
    cluster.create_dir_everywhere("srv/www");
    cluster.start_all();
    let (on_alpha, on_beta) = (
        cluster.root("alpha").join("srv/www/gone.txt"),
        cluster.root("beta").join("srv/www/gone.txt"),
    );
    fs::write(&on_alpha, "soon gone\n").expect("write");
    assert!(
        wait_until(TIMEOUT, || on_beta.exists()),
        "beta never got the file:\n{}",
        cluster.logs()
    );
    fs::remove_file(&on_alpha).expect("rm");
    assert!(
        wait_until(TIMEOUT, || !on_beta.exists()),
        "beta never deleted the file:\n{}",
        cluster.logs()
    );
    // Expiry runs every horizon (2 s here): the tombstone goes.
    for h in hosts {
        assert!(
            wait_until(TIMEOUT, || expired(&cluster, h) >= 1),
            "{h} expired no tombstone: {:?}\n{}",
            cluster.status(h),
            cluster.logs()
        );
        assert!(
            cluster
                .log(h)
                .contains("expired 1 tombstones older than 2s"),
            "{}",
            cluster.log(h)
        );
    }
    cluster.stop("alpha");
    let index = omirr_index::Index::open(&cluster.state_dir("alpha")).expect("open the index");
    let path = RelPath::new(&b"srv/www/gone.txt"[..]).expect("path");
    assert_eq!(
        omirr_core::IndexView::entry(&index, &path).expect("read"),
        None,
        "the tombstone is gone from the index"
    );
    let forgot = index.forgotten().expect("watermark");
    assert!(forgot.seq > 0, "the watermark moved: {forgot:?}");
    assert!(!on_beta.exists() && !on_alpha.exists());
}

#[test]
fn check_says_how_long_deletions_are_remembered() {
    let cluster = Cluster::new(&["alpha", "beta"], www);
    let run = |extra: &[&str]| {
        let mut args = vec!["check", "--host", "alpha", "--config"];
        let config = cluster.config().to_str().expect("utf-8").to_string();
        let peers = cluster.peers().to_str().expect("utf-8").to_string();
        let root = cluster.root("alpha").to_str().expect("utf-8").to_string();
        let state = cluster
            .state_dir("alpha")
            .to_str()
            .expect("utf-8")
            .to_string();
        args.push(&config);
        args.extend(["--peers", &peers, "--root", &root, "--state-dir", &state]);
        args.extend(extra);
        let out = omirrd(&args);
        assert!(out.status.success(), "{:?}", out);
        stdout(&out)
    };
    let text = run(&[]);
    assert!(
        text.contains("deletions are remembered for 30d (--tombstone-horizon)"),
        "{text}"
    );
    let text = run(&["--tombstone-horizon", "12h"]);
    assert!(text.contains("remembered for 12h"), "{text}");
    let text = run(&["--tombstone-horizon", "never"]);
    assert!(text.contains("remembered for ever"), "{text}");
    let out = omirrd(&["check", "--tombstone-horizon", "3w"]);
    assert!(!out.status.success());
    assert!(
        support::stderr(&out).contains("an optional s, m, h or d"),
        "{}",
        support::stderr(&out)
    );
}

#[test]
fn a_host_away_longer_than_the_horizon_brings_no_deleted_file_back() {
    let _serial = support::serial();
    let hosts = ["alpha", "beta", "gamma"];
    let mut cluster = Cluster::new(&hosts, www);
    cluster.add_args(&["--tombstone-horizon", "3s"]);
    cluster.create_dir_everywhere("srv/www");
    let www_of = |c: &Cluster, h: &str| c.root(h).join("srv/www");
    let alpha = www_of(&cluster, "alpha");
    fs::create_dir_all(alpha.join("d")).expect("mkdir");
    for f in ["a.txt", "keep.txt", "d/x.txt"] {
        fs::write(alpha.join(f), format!("{f} as alpha wrote it\n")).expect("write");
    }
    cluster.start_all();
    wait_converged(&cluster, &hosts, "srv/www", TIMEOUT).unwrap_or_else(|e| panic!("{e}"));

    // gamma goes away; alpha and beta delete a file and a directory.
    cluster.stop("gamma");
    fs::remove_file(alpha.join("a.txt")).expect("rm");
    fs::remove_dir_all(www_of(&cluster, "beta").join("d")).expect("rm -r");
    wait_converged(&cluster, &hosts[..2], "srv/www", TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(!alpha.join("d").exists() && !www_of(&cluster, "beta").join("a.txt").exists());
    // While away, gamma's files change: an edit and a new file.
    let gamma = www_of(&cluster, "gamma");
    fs::write(gamma.join("keep.txt"), "edited on gamma while away\n").expect("write");
    fs::write(gamma.join("new.txt"), "written on gamma while away\n").expect("write");
    // alpha and beta forget the deletions (a.txt, d and d/x.txt).
    for h in &hosts[..2] {
        assert!(
            wait_until(TIMEOUT, || expired(&cluster, h) >= 3),
            "{h} did not forget the deletions: {:?}\n{}",
            cluster.status(h),
            cluster.logs()
        );
    }

    // gamma comes back. It must not bring a.txt or d back.
    cluster.start_host("gamma");
    assert!(
        cluster.wait_for_log("gamma", "reconciled with", TIMEOUT),
        "gamma did not reconcile:\n{}",
        cluster.logs()
    );
    wait_converged(&cluster, &hosts, "srv/www", TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    for h in hosts {
        let w = www_of(&cluster, h);
        assert!(!w.join("a.txt").exists(), "{h}: a.txt is back");
        assert!(!w.join("d").exists(), "{h}: d is back");
        assert_eq!(
            fs::read_to_string(w.join("keep.txt")).expect("keep.txt"),
            "edited on gamma while away\n",
            "{h}"
        );
        assert_eq!(
            fs::read_to_string(w.join("new.txt")).expect("new.txt"),
            "written on gamma while away\n",
            "{h}"
        );
    }
    let log = cluster.log("gamma");
    if std::env::var_os("OMIRR_EXPIRY_SHOW").is_some() {
        eprintln!("{}", cluster.logs());
    }
    assert!(
        log.contains("WARN") && log.contains("was away for longer than"),
        "gamma says why it reconciles:\n{log}"
    );
    assert!(
        cluster
            .status("gamma")
            .and_then(|s| s["reconciliations"].as_u64())
            .is_some_and(|n| n >= 1),
        "{:?}",
        cluster.status("gamma")
    );
}
