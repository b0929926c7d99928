//! The verbose log: what `-D` shows of live operations (the watcher's
//! events, the frames, the changes in and out, the files fetched and
//! served, the resolver's reasons and why a change is not sent, the
//! actions applied), each line in the span of the peer it is about; and
//! that the default level shows none of those per-file lines.

mod support;

use omirr_testkit::wait_until;
use std::fs;
use std::time::Duration;
use support::cluster::{wait_converged, Cluster};

/// Long enough for a loaded CI machine; polls return as soon as they can.
const TIMEOUT: Duration = Duration::from_secs(20);

const HOSTS: [&str; 2] = ["alpha", "beta"];

/// `/srv/www` mirrored between the hosts.
fn www(hosts: &[&str]) -> String {
    format!("www:\n/srv/www -> ( {} )\n", hosts.join(" "))
}

/// Starts `cluster` with `srv/www` on every host and waits until each
/// host's log says it is connected.
fn start_connected(cluster: &mut Cluster) {
    cluster.create_dir_everywhere("srv/www");
    cluster.start_all();
    for (host, peer) in [("alpha", "beta"), ("beta", "alpha")] {
        let needle = format!("session{{peer={peer}}}");
        let connected = wait_until(TIMEOUT, || {
            cluster
                .log(host)
                .lines()
                .any(|l| l.contains(&needle) && l.contains("connected"))
        });
        assert!(connected, "{host} did not connect:\n{}", cluster.logs());
    }
}

/// Waits until the tree under `srv/www` is the same on both hosts.
fn converged(cluster: &Cluster) {
    wait_converged(cluster, &HOSTS, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
}

/// The lines of `log` that hold every one of `needles`.
fn lines_with<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

#[test]
fn debug_shows_watcher_events_frames_decisions_and_actions_per_peer() {
    let _serial = support::serial();
    let mut cluster = Cluster::new(&HOSTS, www);
    cluster.set_log_flags(&["-D"]);
    start_connected(&mut cluster);
    let on_alpha = cluster.root("alpha").join("srv/www");
    let on_beta = cluster.root("beta").join("srv/www");

    // Made on alpha: a create, an edit, a rename and a delete, each
    // waited for on beta so that each is its own batch.
    fs::write(on_alpha.join("new.txt"), "hello").expect("create");
    converged(&cluster);
    fs::write(on_alpha.join("new.txt"), "x".repeat(5000)).expect("edit");
    converged(&cluster);
    fs::rename(on_alpha.join("new.txt"), on_alpha.join("renamed.txt")).expect("rename");
    converged(&cluster);
    fs::remove_file(on_alpha.join("renamed.txt")).expect("delete");
    converged(&cluster);
    // Made on beta: its own watcher sees it, and beta sends and serves it.
    fs::write(on_beta.join("from-beta.txt"), "beta's").expect("create");
    converged(&cluster);
    // The last lines (alpha's Ack, beta's FileEnd) may trail the files.
    let acked = wait_until(TIMEOUT, || {
        let log = cluster.log("beta");
        !lines_with(&log, &["frame in Ack"]).is_empty()
            && !lines_with(&log, &["frame out FileEnd"]).is_empty()
    });
    assert!(
        acked,
        "beta logged no Ack in, FileEnd out:\n{}",
        cluster.logs()
    );

    let log = cluster.log("beta");
    let span = "session{peer=alpha}";
    let mut missing = Vec::new();
    let mut expect = |needles: &[&str]| {
        if lines_with(&log, needles).is_empty() {
            missing.push(needles.join(" … "));
        }
    };
    // The watcher's events: beta's own file, and the applier's writes.
    expect(&["TRACE", "watch event", "srv/www/from-beta.txt"]);
    expect(&["TRACE", "watch event", "srv/www/new.txt"]);
    expect(&["TRACE", "watch event MOVED_TO srv/www/renamed.txt"]);
    expect(&["TRACE", "watch event DELETE srv/www/renamed.txt"]);
    expect(&["TRACE", "watch event MOVED_TO srv/www/new.txt"]);
    expect(&[
        "TRACE",
        "watch event MOVED_FROM srv/www/.omirr.new.txt.",
        "(the applier's temporary file: ignored)",
    ]);
    expect(&["TRACE", "watch batch", "srv/www/from-beta.txt"]);
    expect(&["DEBUG", "local change srv/www/from-beta.txt: file 6 B"]);
    // Frames both ways, with their type and size, in the peer's span.
    for frame in [
        "frame in Changes ",
        "frame out FileRequest ",
        "frame in FileData ",
        "frame out Ack ",
        "frame in FileRequest ",
        "frame out Changes ",
        "frame out FileData ",
    ] {
        expect(&["TRACE", span, frame, " B"]);
    }
    // The changes in and out.
    expect(&[
        "DEBUG",
        span,
        "change in srv/www/new.txt: file 5 B, version ",
    ]);
    expect(&["DEBUG", span, "change in srv/www/new.txt: file 4.9 KiB"]);
    expect(&["DEBUG", span, "change in srv/www/renamed.txt: file 4.9 KiB"]);
    expect(&["DEBUG", span, "change in srv/www/renamed.txt: removed"]);
    expect(&["DEBUG", span, "change out srv/www/from-beta.txt: file 6 B"]);
    // Alpha's changes, recorded on beta, are not sent back to alpha.
    expect(&[
        "TRACE",
        span,
        "not sent srv/www/new.txt: file 5 B, version ",
        "@alpha: the peer wrote it, and has it",
    ]);
    // Why each version won.
    expect(&[
        "TRACE",
        span,
        "decided srv/www/new.txt: the peer's version ",
        "wins: this host has no entry for it",
    ]);
    expect(&[
        "TRACE",
        span,
        "decided srv/www/new.txt: the peer's version ",
        "wins over this host's ",
        "later)",
    ]);
    // Files fetched and served, with sizes and times.
    expect(&["DEBUG", span, "fetched srv/www/new.txt 5 B in "]);
    expect(&["DEBUG", span, "fetched srv/www/new.txt 4.9 KiB in "]);
    expect(&["DEBUG", span, "served srv/www/from-beta.txt 6 B in "]);
    // The actions applied.
    expect(&["DEBUG", span, "applied write srv/www/new.txt 5 B (one of "]);
    expect(&[
        "DEBUG",
        span,
        "applied write srv/www/new.txt 4.9 KiB (one of ",
    ]);
    expect(&["DEBUG", span, "applied remove file srv/www/renamed.txt"]);
    // A rename arrives as one batch and is applied as a rename; should
    // its halves ever come apart, the copy and the removal still show.
    let renamed = !lines_with(
        &log,
        &["applied rename srv/www/new.txt -> srv/www/renamed.txt"],
    )
    .is_empty()
        || (!lines_with(&log, &["applied write srv/www/renamed.txt"]).is_empty()
            && !lines_with(&log, &["applied remove file srv/www/new.txt"]).is_empty());
    if !renamed {
        missing.push("applied rename srv/www/new.txt -> srv/www/renamed.txt".into());
    }
    assert!(
        missing.is_empty(),
        "beta's -D log lacks lines with:\n  {}\n\n{}",
        missing.join("\n  "),
        cluster.logs()
    );
}

#[test]
fn the_default_level_has_no_per_file_lines() {
    let _serial = support::serial();
    let mut cluster = Cluster::new(&HOSTS, www);
    cluster.set_log_flags(&[]);
    start_connected(&mut cluster);
    let on_alpha = cluster.root("alpha").join("srv/www");
    fs::write(on_alpha.join("new.txt"), "hello").expect("create");
    converged(&cluster);
    fs::rename(on_alpha.join("new.txt"), on_alpha.join("renamed.txt")).expect("rename");
    converged(&cluster);
    fs::remove_file(on_alpha.join("renamed.txt")).expect("delete");
    converged(&cluster);
    for host in HOSTS {
        let log = cluster.log(host);
        for per_file in [
            "watch event",
            "watch batch",
            "local change ",
            "frame in ",
            "frame out ",
            "change in ",
            "change out ",
            "decided ",
            "fetched ",
            "served ",
            "applied ",
            "DEBUG",
            "TRACE",
        ] {
            let found = lines_with(&log, &[per_file]);
            assert!(
                found.is_empty(),
                "{host} logs {per_file:?} at the default level: {found:?}"
            );
        }
        assert!(
            !lines_with(&log, &["INFO", "connected"]).is_empty(),
            "{host} logs its session at INFO:\n{log}"
        );
    }
}
