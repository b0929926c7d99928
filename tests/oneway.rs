//! End to end: one-way sets (`sendonly`, `receiveonly`), on real `omirrd`
//! processes (see `support::cluster`). A sender's change reaches the
//! receivers; a receive-only host's own changes, live or made while it was
//! down, are undone and logged, and never reach anyone; a send-only host's
//! tree is not changed by a peer's edit; two senders and a receiver end
//! with the last writer's version on the receiver.

mod support;

use omirr_testkit::wait_until;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::cluster::{wait_converged, Cluster};

/// Long enough for a loaded CI machine; polls return as soon as they can.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `/srv/www` among `hosts`, with the given one-way commands.
fn www(hosts: &[&str], commands: &str) -> String {
    format!(
        "HOSTS = ( {} )\n\nwww:\n/srv/www -> ${{HOSTS}}\n\tinstall ;\n{commands}",
        hosts.join(" ")
    )
}

fn start(names: &[&str], commands: &'static str) -> Cluster {
    Cluster::start_connected(names, move |h| www(h, commands), "srv/www", TIMEOUT)
}

/// Each host's `srv/www`, by name.
fn trees(cluster: &Cluster, names: &[&str]) -> HashMap<String, PathBuf> {
    names
        .iter()
        .map(|h| (h.to_string(), cluster.root(h).join("srv/www")))
        .collect()
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// Waits until `path` holds `text` (`None`: does not exist).
#[track_caller]
fn wait_for(cluster: &Cluster, path: &Path, text: Option<&str>) {
    let ok = wait_until(TIMEOUT, || read(path).as_deref() == text);
    assert!(
        ok,
        "{} holds {:?}, expected {text:?}\n{}",
        path.display(),
        read(path),
        cluster.logs()
    );
}

#[test]
fn a_one_way_set_sends_one_way_and_undoes_the_receivers_edits() {
    let _serial = support::serial();
    let names = ["alpha", "beta", "gamma"];
    let cluster = start(&names, "\tsendonly alpha ;\n\treceiveonly beta ;\n");
    let trees = trees(&cluster, &names);
    let at = |h: &str, f: &str| trees[h].join(f);

    // A change on the sender reaches every host.
    fs::write(at("alpha", "index.html"), "v1\n").expect("write");
    wait_converged(&cluster, &names, "srv/www", TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&at("beta", "index.html")).as_deref(), Some("v1\n"));

    // The receive-only host's edit is undone and logged, and reaches
    // nobody.
    fs::write(at("beta", "index.html"), "beta's edit\n").expect("write");
    assert!(
        cluster.wait_for_log(
            "beta",
            "local change to srv/www/index.html is not sent: this host only receives it",
            TIMEOUT
        ),
        "{}",
        cluster.logs()
    );
    wait_for(&cluster, &at("beta", "index.html"), Some("v1\n"));
    assert!(
        cluster.wait_for_log(
            "beta",
            "undid the local change to srv/www/index.html",
            TIMEOUT
        ),
        "{}",
        cluster.logs()
    );
    // A file it creates goes; a file it deletes comes back.
    fs::write(at("beta", "new.txt"), "only here\n").expect("write");
    wait_for(&cluster, &at("beta", "new.txt"), None);
    fs::remove_file(at("beta", "index.html")).expect("rm");
    wait_for(&cluster, &at("beta", "index.html"), Some("v1\n"));
    for h in ["alpha", "gamma"] {
        assert_eq!(read(&at(h, "index.html")).as_deref(), Some("v1\n"), "{h}");
        assert!(!at(h, "new.txt").exists(), "{h}: beta's file reached it");
    }
    let beta = cluster.status("beta").expect("beta's status");
    assert!(
        beta["undone_changes"].as_u64().unwrap_or(0) >= 3,
        "{beta:#}"
    );

    // A symmetric host's edit reaches the receiver but not the sender,
    // which says so once for the batch.
    fs::write(at("gamma", "index.html"), "gamma's edit\n").expect("write");
    wait_for(&cluster, &at("beta", "index.html"), Some("gamma's edit\n"));
    assert!(
        cluster.wait_for_log(
            "alpha",
            "not applied: this host only sends there (sendonly)",
            TIMEOUT
        ),
        "{}",
        cluster.logs()
    );
    assert_eq!(read(&at("alpha", "index.html")).as_deref(), Some("v1\n"));
    let alpha = cluster.status("alpha").expect("alpha's status");
    assert!(
        alpha["peers"]["gamma"]["not_applied"].as_u64().unwrap_or(0) >= 1,
        "{alpha:#}"
    );
    // The sender's next change still goes out to everyone, and its
    // sessions were not wedged by what it did not apply.
    fs::write(at("alpha", "index.html"), "v2\n").expect("write");
    for h in ["beta", "gamma"] {
        wait_for(&cluster, &at(h, "index.html"), Some("v2\n"));
    }
}

#[test]
fn two_senders_and_a_receiver_converge_to_the_last_writer_also_across_a_restart() {
    let _serial = support::serial();
    let names = ["alpha", "beta", "gamma"];
    let mut cluster = start(
        &names,
        "\tsendonly ( alpha beta ) ;\n\treceiveonly gamma ;\n",
    );
    let trees = trees(&cluster, &names);
    let at = |h: &str, f: &str| trees[h].join(f);

    fs::write(at("alpha", "f"), "from alpha\n").expect("write");
    wait_for(&cluster, &at("gamma", "f"), Some("from alpha\n"));
    // beta never applies alpha's version; its own later write wins.
    assert!(!at("beta", "f").exists());
    fs::write(at("beta", "f"), "from beta\n").expect("write");
    wait_for(&cluster, &at("gamma", "f"), Some("from beta\n"));
    assert_eq!(read(&at("alpha", "f")).as_deref(), Some("from alpha\n"));

    // Changed on the receiver while its daemon was down: undone at the
    // next start, and logged as such.
    cluster.stop("gamma");
    fs::write(at("gamma", "f"), "edited while down\n").expect("write");
    fs::write(at("gamma", "stray"), "stray\n").expect("write");
    cluster.start_host("gamma");
    wait_for(&cluster, &at("gamma", "f"), Some("from beta\n"));
    wait_for(&cluster, &at("gamma", "stray"), None);
    assert!(
        cluster
            .log("gamma")
            .contains("local change to srv/www/f, made while omirrd was down, is not sent"),
        "{}",
        cluster.logs()
    );
    for h in ["alpha", "beta"] {
        assert!(!at(h, "stray").exists(), "{h}: gamma's file reached it");
    }
}

#[test]
fn a_host_that_becomes_receive_only_keeps_what_it_sent_and_undoes_what_it_did_since() {
    let _serial = support::serial();
    let names = ["alpha", "beta"];
    let mut cluster = start(&names, "");
    let trees = trees(&cluster, &names);
    let at = |h: &str, f: &str| trees[h].join(f);

    // Symmetric: beta's change goes out as usual.
    fs::write(at("beta", "f"), "beta, symmetric\n").expect("write");
    wait_for(&cluster, &at("alpha", "f"), Some("beta, symmetric\n"));

    // beta becomes receive-only, and is edited while down.
    cluster.stop("beta");
    cluster.rewrite_config(&www(&names, "\treceiveonly beta ;\n"));
    fs::write(at("beta", "f"), "beta, while down\n").expect("write");
    cluster.start_host("beta");
    wait_for(&cluster, &at("beta", "f"), Some("beta, symmetric\n"));
    // What it wrote before the change stays the set's version; alpha's
    // next change reaches it.
    assert_eq!(
        read(&at("alpha", "f")).as_deref(),
        Some("beta, symmetric\n")
    );
    fs::write(at("alpha", "f"), "alpha\n").expect("write");
    wait_for(&cluster, &at("beta", "f"), Some("alpha\n"));
}

#[test]
fn a_host_that_stops_being_send_only_catches_up_with_what_it_did_not_apply() {
    let _serial = support::serial();
    let names = ["alpha", "beta"];
    let mut cluster = start(&names, "\tsendonly alpha ;\n");
    let trees = trees(&cluster, &names);
    let at = |h: &str, f: &str| trees[h].join(f);

    fs::write(at("beta", "g"), "beta's\n").expect("write");
    assert!(
        cluster.wait_for_log(
            "alpha",
            "not applied: this host only sends there (sendonly)",
            TIMEOUT
        ),
        "{}",
        cluster.logs()
    );
    assert!(!at("alpha", "g").exists());

    // Symmetric from the next start: beta's change arrives after all.
    cluster.stop("alpha");
    cluster.rewrite_config(&www(&names, ""));
    cluster.start_host("alpha");
    wait_for(&cluster, &at("alpha", "g"), Some("beta's\n"));
    assert!(
        cluster
            .log("alpha")
            .contains("this host no longer only sends /srv/www: every peer is asked"),
        "{}",
        cluster.logs()
    );
}

#[test]
fn an_undo_that_cannot_be_done_holds_back_no_other() {
    let _serial = support::serial();
    let names = ["alpha", "beta"];
    let cluster = Cluster::start_connected(
        &names,
        |h| www(h, "\texcept_pat ( \\\\.swp$ ) ;\n\treceiveonly beta ;\n"),
        "srv/www",
        TIMEOUT,
    );
    let trees = trees(&cluster, &names);
    let at = |h: &str, f: &str| trees[h].join(f);
    fs::write(at("alpha", "f"), "v1\n").expect("write");
    wait_for(&cluster, &at("beta", "f"), Some("v1\n"));

    // A directory made on beta holds a file the set excludes: it cannot
    // be removed. beta's edit of f is undone all the same.
    fs::create_dir_all(at("beta", "mine")).expect("mkdir");
    fs::write(at("beta", "mine/notes.swp"), "swap\n").expect("write");
    fs::write(at("beta", "mine/x"), "x\n").expect("write");
    wait_for(&cluster, &at("beta", "mine/x"), None);
    fs::write(at("beta", "f"), "beta's edit\n").expect("write");
    wait_for(&cluster, &at("beta", "f"), Some("v1\n"));
    assert_eq!(
        read(&at("beta", "mine/notes.swp")).as_deref(),
        Some("swap\n"),
        "an excluded file is never removed"
    );
    assert!(
        !at("alpha", "mine").exists(),
        "beta's directory reached alpha"
    );
}
