//! Conflicts on real daemons: two hosts write the same file, neither
//! knowing the other's write (one of them is stopped). The last writer
//! wins the name on every host, the losing content is kept as a mirrored
//! conflict copy, and the host that detects it says so in its log and in
//! `omirrd status` (docs/sync-model.md, "Conflicts").

mod support;

use omirr_testkit::wait_until;
use std::fs;
use std::path::Path;
use std::time::Duration;
use support::cluster::{wait_converged, Cluster};

/// Long enough for a loaded CI machine; polls return as soon as they can.
const TIMEOUT: Duration = Duration::from_secs(30);

const HOSTS: [&str; 3] = ["alpha", "beta", "gamma"];

/// `/srv/www` mirrored among all the hosts.
fn www(hosts: &[&str]) -> String {
    format!(
        "HOSTS = ( {} )\n\nwww:\n/srv/www -> ${{HOSTS}}\n",
        hosts.join(" ")
    )
}

/// The three hosts, started, with `srv/www/report.txt` holding "first"
/// everywhere.
fn started_with_report() -> Cluster {
    let mut cluster = Cluster::new(&HOSTS, www);
    let site = cluster.root("alpha").join("srv/www");
    fs::create_dir_all(&site).expect("mkdir");
    fs::write(site.join("report.txt"), "first\n").expect("write");
    cluster.create_dir_everywhere("srv/www");
    cluster.start_all();
    wait_converged(&cluster, &HOSTS, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    cluster
}

fn read(cluster: &Cluster, host: &str, name: &str) -> Option<String> {
    fs::read_to_string(cluster.root(host).join("srv/www").join(name)).ok()
}

/// The names in `dir` that are conflict copies of `report.txt` made by
/// `writer`.
fn copies_by(dir: &Path, writer: &str) -> Vec<String> {
    let prefix = format!("report.conflict-{writer}-");
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix) && n.ends_with(".txt"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits until gamma holds `text` in report.txt: the write is recorded
/// and has travelled.
fn wait_for_report(cluster: &Cluster, host: &str, text: &str) {
    assert!(
        wait_until(TIMEOUT, || read(cluster, host, "report.txt").as_deref()
            == Some(text)),
        "{host} never got {text:?}:\n{}",
        cluster.logs()
    );
}

/// Every host ends with `winner` in report.txt and exactly one conflict
/// copy by `loser_host` holding `loser`; the copy's name is the same
/// everywhere. Returns that name.
fn check_outcome(cluster: &Cluster, winner: &str, loser_host: &str, loser: &str) -> String {
    wait_converged(cluster, &HOSTS, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let mut name = None;
    for h in HOSTS {
        let dir = cluster.root(h).join("srv/www");
        assert_eq!(
            read(cluster, h, "report.txt").as_deref(),
            Some(winner),
            "{h}: the last writer holds the name\n{}",
            cluster.logs()
        );
        let copies = copies_by(&dir, loser_host);
        assert_eq!(copies.len(), 1, "{h}: {copies:?}\n{}", cluster.logs());
        assert_eq!(
            read(cluster, h, &copies[0]).as_deref(),
            Some(loser),
            "{h}: the losing text is in {}",
            copies[0]
        );
        match &name {
            None => name = Some(copies[0].clone()),
            Some(n) => assert_eq!(n, &copies[0], "{h}: the same copy everywhere"),
        }
    }
    name.expect("three hosts")
}

/// The detecting host's log has the warning, and its status counts it.
fn check_reported(cluster: &Cluster, host: &str, copy: Option<&str>) {
    let needle = "conflict at srv/www/report.txt";
    assert!(
        cluster.wait_for_log(host, needle, TIMEOUT),
        "{host} did not log the conflict:\n{}",
        cluster.log(host)
    );
    let line = cluster
        .log(host)
        .lines()
        .find(|l| l.contains(needle))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("WARN"), "logged at warning level: {line}");
    if let Some(copy) = copy {
        assert!(line.contains(copy), "names the copy {copy}: {line}");
    }
    let status = cluster.status(host).expect("status");
    assert!(
        status["conflicts"].as_u64().unwrap_or(0) >= 1,
        "{host} counts the conflict: {status}"
    );
    if copy.is_some() {
        assert_eq!(status["conflict_copies"].as_u64(), Some(1), "{status}");
    }
}

/// The issue's scenario: alpha and beta both edit report.txt while beta's
/// daemon is stopped, beta last. beta's text wins the name everywhere;
/// alpha's text is kept as report.conflict-alpha-TIME.txt everywhere;
/// alpha (whose text lost) logs the conflict, and so does beta.
#[test]
fn concurrent_edits_keep_both_texts_on_every_host() {
    let _one = support::serial();
    let mut cluster = started_with_report();
    cluster.stop("beta").expect("beta was running");
    fs::write(
        cluster.root("alpha").join("srv/www/report.txt"),
        "alpha's\n",
    )
    .expect("write");
    wait_for_report(&cluster, "gamma", "alpha's\n");
    std::thread::sleep(Duration::from_millis(50));
    fs::write(cluster.root("beta").join("srv/www/report.txt"), "beta's\n").expect("write");
    cluster.start_host("beta");
    let copy = check_outcome(&cluster, "beta's\n", "alpha", "alpha's\n");
    check_reported(&cluster, "alpha", Some(&format!("srv/www/{copy}")));
    check_reported(&cluster, "beta", None);
    // The copy was made by alpha only; gamma merely received it.
    assert!(
        !cluster.log("gamma").contains("conflict at"),
        "gamma met no conflict of its own"
    );
}

/// The same with the stopped host writing first: alpha's later text wins,
/// and beta, whose offline edit lost, keeps it as a copy for everyone.
#[test]
fn an_offline_edit_that_loses_is_kept_by_its_host() {
    let _one = support::serial();
    let mut cluster = started_with_report();
    cluster.stop("beta").expect("beta was running");
    fs::write(cluster.root("beta").join("srv/www/report.txt"), "beta's\n").expect("write");
    std::thread::sleep(Duration::from_millis(50));
    fs::write(
        cluster.root("alpha").join("srv/www/report.txt"),
        "alpha's\n",
    )
    .expect("write");
    wait_for_report(&cluster, "gamma", "alpha's\n");
    cluster.start_host("beta");
    let copy = check_outcome(&cluster, "alpha's\n", "beta", "beta's\n");
    check_reported(&cluster, "beta", Some(&format!("srv/www/{copy}")));
}

/// Delete versus edit: whichever came last, the edit survives on every
/// host: a later edit wins the name, an earlier one is kept as a copy.
#[test]
fn a_delete_versus_edit_conflict_keeps_the_edit() {
    let _one = support::serial();
    // The edit first (on stopped beta), the deletion later (alpha).
    let mut cluster = started_with_report();
    cluster.stop("beta").expect("beta was running");
    fs::write(
        cluster.root("beta").join("srv/www/report.txt"),
        "beta's edit\n",
    )
    .expect("write");
    std::thread::sleep(Duration::from_millis(50));
    fs::remove_file(cluster.root("alpha").join("srv/www/report.txt")).expect("rm");
    assert!(wait_until(TIMEOUT, || read(
        &cluster,
        "gamma",
        "report.txt"
    )
    .is_none()));
    cluster.start_host("beta");
    wait_converged(&cluster, &HOSTS, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    for h in HOSTS {
        let dir = cluster.root(h).join("srv/www");
        assert_eq!(
            read(&cluster, h, "report.txt"),
            None,
            "{h}: the deletion won"
        );
        let copies = copies_by(&dir, "beta");
        assert_eq!(copies.len(), 1, "{h}: {copies:?}\n{}", cluster.logs());
        assert_eq!(
            read(&cluster, h, &copies[0]).as_deref(),
            Some("beta's edit\n"),
            "{h}: the edit is kept"
        );
    }
    check_reported(&cluster, "beta", Some("report.conflict-beta-"));
    drop(cluster);

    // The deletion first (alpha), the edit later (on stopped beta): the
    // edit just wins, everywhere.
    let mut cluster = started_with_report();
    cluster.stop("beta").expect("beta was running");
    fs::remove_file(cluster.root("alpha").join("srv/www/report.txt")).expect("rm");
    assert!(wait_until(TIMEOUT, || read(
        &cluster,
        "gamma",
        "report.txt"
    )
    .is_none()));
    std::thread::sleep(Duration::from_millis(50));
    fs::write(
        cluster.root("beta").join("srv/www/report.txt"),
        "beta's edit\n",
    )
    .expect("write");
    cluster.start_host("beta");
    wait_converged(&cluster, &HOSTS, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    for h in HOSTS {
        assert_eq!(
            read(&cluster, h, "report.txt").as_deref(),
            Some("beta's edit\n"),
            "{h}: the later edit holds the name\n{}",
            cluster.logs()
        );
    }
}

/// A file written (on stopped beta) into a directory that alpha deletes
/// later, not knowing the file: the directory stays deleted, and the file
/// is kept on every host in a copy of the directory,
/// `d.conflict-beta-TIME/new.txt`; the files alpha knew are not copied.
#[test]
fn a_file_in_a_directory_deleted_elsewhere_is_kept() {
    let _one = support::serial();
    let mut cluster = Cluster::new(&HOSTS, www);
    let d = cluster.root("alpha").join("srv/www/d");
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join("old.txt"), "known to all\n").expect("write");
    cluster.create_dir_everywhere("srv/www");
    cluster.start_all();
    wait_converged(&cluster, &HOSTS, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    cluster.stop("beta").expect("beta was running");
    fs::write(
        cluster.root("beta").join("srv/www/d/new.txt"),
        "beta's new\n",
    )
    .expect("write");
    std::thread::sleep(Duration::from_millis(50));
    fs::remove_dir_all(&d).expect("rm -r");
    assert!(wait_until(TIMEOUT, || !cluster
        .root("gamma")
        .join("srv/www/d")
        .exists()));
    cluster.start_host("beta");
    wait_converged(&cluster, &HOSTS, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    for h in HOSTS {
        let www = cluster.root(h).join("srv/www");
        assert!(!www.join("d").exists(), "{h}: d stays deleted");
        let names: Vec<String> = fs::read_dir(&www)
            .expect("read_dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let copies: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with("d.conflict-beta-"))
            .collect();
        assert_eq!(copies.len(), 1, "{h}: {names:?}\n{}", cluster.logs());
        let copy = www.join(copies[0]);
        assert_eq!(
            fs::read_to_string(copy.join("new.txt")).ok().as_deref(),
            Some("beta's new\n"),
            "{h}: the new file is kept"
        );
        assert!(!copy.join("old.txt").exists(), "{h}: alpha knew old.txt");
    }
    check_reported_at(&cluster, "beta", "conflict at srv/www/d/new.txt");
}

fn check_reported_at(cluster: &Cluster, host: &str, needle: &str) {
    assert!(
        cluster.wait_for_log(host, needle, TIMEOUT),
        "{host} did not log {needle:?}:\n{}",
        cluster.log(host)
    );
}
