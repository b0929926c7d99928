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

use omirr_testkit::tree::digest;
use omirr_testkit::{noise, wait_until};
use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;
use support::cluster::{wait_converged, Cluster};
use support::peak_rss;

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
    cluster.create_dir_everywhere("srv/www");
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

/// `names` mirroring `/srv/www` (empty on every host), started and
/// connected.
fn started_www(names: &[&str]) -> Cluster {
    Cluster::start_connected(names, www, "srv/www", TIMEOUT)
}

/// (last sequence, local changes, applied changes) of every host.
fn activity(cluster: &Cluster, hosts: &[&str]) -> Vec<(u64, u64, u64)> {
    hosts
        .iter()
        .map(|h| {
            let s = cluster.status(h).unwrap_or_default();
            (
                s["last_seq"].as_u64().unwrap_or(0),
                s["local_changes"].as_u64().unwrap_or(0),
                s["applied_changes"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn different_trees_converge_and_the_newer_version_wins() {
    let _one = support::serial();
    let mut cluster = Cluster::new(&HOSTS, www);
    let roots: Vec<std::path::PathBuf> = HOSTS.iter().map(|h| cluster.root(h)).collect();
    let w = |h: &str| roots[HOSTS.iter().position(|x| *x == h).expect("host")].join("srv/www");
    cluster.create_dir_everywhere("srv/www");
    fs::write(w("alpha").join("only-alpha"), "a").expect("write");
    fs::write(w("alpha").join("shared.txt"), "written first, on alpha").expect("write");
    fs::create_dir_all(w("gamma").join("docs/deep")).expect("mkdir");
    fs::write(w("gamma").join("docs/deep/only-gamma"), "g").expect("write");
    std::thread::sleep(Duration::from_millis(50));
    fs::write(w("beta").join("only-beta"), "b").expect("write");
    fs::write(w("beta").join("shared.txt"), "written last, on beta").expect("write");
    cluster.start_all();
    wait_converged(&cluster, &HOSTS, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    for h in HOSTS {
        let www = w(h);
        assert_eq!(
            fs::read_to_string(www.join("shared.txt")).expect("read"),
            "written last, on beta",
            "{h}"
        );
        for f in ["only-alpha", "only-beta", "docs/deep/only-gamma"] {
            assert!(www.join(f).exists(), "{h} lacks {f}");
        }
    }
}

#[test]
fn live_operations_reach_every_host_within_two_seconds() {
    use std::os::unix::fs::PermissionsExt;
    let _one = support::serial();
    let cluster = started_www(&HOSTS);
    let w = |h: &str| cluster.root(h).join("srv/www");
    type Op = (&'static str, &'static str, fn(&std::path::Path));
    let ops: [Op; 14] = [
        ("create", "alpha", |w| {
            fs::write(w.join("f"), "one\n").expect("write")
        }),
        ("append", "beta", |w| {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(w.join("f"))
                .expect("open");
            f.write_all(b"two\n").expect("append");
        }),
        ("overwrite", "gamma", |w| {
            fs::write(w.join("f"), "replaced\n").expect("write")
        }),
        ("truncate", "alpha", |w| {
            fs::OpenOptions::new()
                .write(true)
                .open(w.join("f"))
                .expect("open")
                .set_len(3)
                .expect("truncate")
        }),
        ("mkdir", "beta", |w| {
            fs::create_dir_all(w.join("d/e")).expect("mkdir")
        }),
        ("rmdir", "gamma", |w| {
            fs::remove_dir(w.join("d/e")).expect("rmdir")
        }),
        ("rename a file", "alpha", |w| {
            fs::write(w.join("d/x"), vec![7u8; 100_000]).expect("write");
            fs::rename(w.join("f"), w.join("d/g")).expect("rename");
        }),
        ("rename a non-empty directory", "beta", |w| {
            fs::rename(w.join("d"), w.join("renamed")).expect("rename")
        }),
        ("symlink", "gamma", |w| {
            symlink("renamed/g", w.join("link")).expect("symlink")
        }),
        ("chmod", "alpha", |w| {
            fs::set_permissions(w.join("renamed/x"), fs::Permissions::from_mode(0o600))
                .expect("chmod")
        }),
        // A directory's own metadata: looked at without a walk below it.
        ("chmod a directory", "beta", |w| {
            fs::set_permissions(w.join("renamed"), fs::Permissions::from_mode(0o750))
                .expect("chmod")
        }),
        // ... but what is reported with it below it is looked at too.
        ("write in a directory and chmod it", "gamma", |w| {
            fs::write(w.join("renamed/h"), "new\n").expect("write");
            fs::set_permissions(w.join("renamed"), fs::Permissions::from_mode(0o755))
                .expect("chmod")
        }),
        ("editor-style save", "beta", |w| {
            fs::write(w.join(".renamed-g.new"), "saved by an editor\n").expect("write");
            fs::rename(w.join(".renamed-g.new"), w.join("renamed/g")).expect("rename over");
        }),
        ("delete", "gamma", |w| {
            fs::remove_file(w.join("link")).expect("rm")
        }),
    ];
    for (what, host, op) in ops {
        let started = std::time::Instant::now();
        op(&w(host));
        if let Err(e) = wait_converged(&cluster, &HOSTS, "srv/www", Duration::from_secs(2)) {
            panic!(
                "{what} on {host} did not reach every host within 2 s: {e}\n{}",
                cluster.logs()
            );
        }
        eprintln!(
            "{what} on {host}: converged in {} ms",
            started.elapsed().as_millis()
        );
    }
    for h in HOSTS {
        assert_eq!(
            fs::read_to_string(w(h).join("renamed/g")).expect("read"),
            "saved by an editor\n"
        );
        let mode = fs::metadata(w(h).join("renamed/x"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{h}");
        let mode = fs::metadata(w(h).join("renamed"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{h}");
        assert_eq!(
            fs::read_to_string(w(h).join("renamed/h")).expect("read"),
            "new\n"
        );
    }
    // Once activity stops, the hosts go quiet: no change records for 2 s.
    std::thread::sleep(Duration::from_millis(300));
    let before = activity(&cluster, &HOSTS);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        activity(&cluster, &HOSTS),
        before,
        "changes kept flowing:\n{}",
        cluster.logs()
    );
}

#[test]
fn the_same_file_written_on_two_hosts_at_once_ends_the_same() {
    let _one = support::serial();
    let cluster = started_www(&HOSTS);
    let (a, b) = (
        cluster.root("alpha").join("srv/www/race"),
        cluster.root("beta").join("srv/www/race"),
    );
    let t = std::thread::spawn(move || fs::write(a, "alpha's version").expect("write"));
    fs::write(b, "beta's version").expect("write");
    t.join().expect("thread");
    wait_converged(&cluster, &HOSTS, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let winner = fs::read_to_string(cluster.root("gamma").join("srv/www/race")).expect("read");
    assert!(
        winner == "alpha's version" || winner == "beta's version",
        "{winner}"
    );
}

#[test]
fn a_stopped_host_catches_up_with_few_frames() {
    let _one = support::serial();
    let mut cluster = Cluster::new(&HOSTS, www);
    let files = 300;
    let site = cluster.root("alpha").join("srv/www");
    for i in 0..files {
        let d = site.join(format!("d{}", i % 10));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join(format!("f{i}")), format!("file {i}\n")).expect("write");
    }
    cluster.create_dir_everywhere("srv/www");
    cluster.start_all();
    wait_converged(&cluster, &HOSTS, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));

    // gamma goes down; changes on the others and on gamma's own tree.
    let status = cluster.stop("gamma").expect("gamma was running");
    assert!(
        status.success(),
        "gamma stopped cleanly on SIGTERM: {status}"
    );
    fs::write(
        cluster.root("alpha").join("srv/www/d1/while-down"),
        "from alpha",
    )
    .expect("write");
    fs::remove_file(cluster.root("beta").join("srv/www/d2/f2")).expect("rm");
    fs::write(
        cluster.root("gamma").join("srv/www/d3/offline"),
        "made while gamma was down",
    )
    .expect("write");
    std::thread::sleep(Duration::from_millis(300));
    cluster.start_host("gamma");
    wait_converged(&cluster, &HOSTS, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    for h in HOSTS {
        let www = cluster.root(h).join("srv/www");
        assert!(
            www.join("d1/while-down").exists() && www.join("d3/offline").exists(),
            "{h}"
        );
        assert!(!www.join("d2/f2").exists(), "{h}");
    }
    // The restart moved a handful of frames, not the index.
    let s = cluster.status("gamma").expect("gamma's status");
    let frames: u64 = s["peers"]
        .as_object()
        .expect("peers")
        .values()
        .map(|p| {
            p["frames_sent"].as_u64().unwrap_or(0) + p["frames_received"].as_u64().unwrap_or(0)
        })
        .sum();
    assert!(
        // Hello, Pull, a few Changes pages and Acks per session, a
        // keepalive, and the fetches of the few changed files: O(changes),
        // here about 40.
        frames < (files / 5) as u64,
        "{frames} frames for {files} files after a restart"
    );
}

#[test]
fn a_host_with_an_unpinned_key_is_refused() {
    let _one = support::serial();
    let mut cluster = started_www(&HOSTS);
    // An impostor takes alpha's name and port with a key of its own.
    cluster.stop("alpha");
    let fake = tempfile::tempdir().expect("tempdir");
    let (state, root) = (fake.path().join("state"), fake.path().join("root"));
    fs::create_dir_all(root.join("srv/www")).expect("mkdir");
    fs::write(root.join("srv/www/planted"), "should never arrive").expect("write");
    let out = support::omirrd(&["keygen", "--state-dir", state.to_str().expect("utf-8")]);
    let fingerprint = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let log = fake.path().join("impostor.log");
    let mut child = std::process::Command::new(support::omirrd_bin())
        .args(["-f", "--host", "alpha", "--config"])
        .arg(cluster.config())
        .arg("--peers")
        .arg(cluster.peers())
        .arg("--root")
        .arg(&root)
        .arg("--state-dir")
        .arg(&state)
        .stderr(fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start the impostor");
    let _guard = support::KillOnDrop(child.id());
    // It refuses to start: the peers file pins another key for alpha...
    let refused_itself = wait_until(TIMEOUT, || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("every peer will refuse it"))
    });
    assert!(
        refused_itself,
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    // ...and were it to connect anyway, beta refuses its key: a TLS
    // client with the impostor's key, dialing beta directly.
    let refused = support::tls_probe(cluster.port("beta"), &state, cluster.peers(), "beta");
    assert!(refused, "beta accepted an unpinned key");
    assert!(
        wait_until(TIMEOUT, || cluster.log("beta").contains(&fingerprint)),
        "beta's log names the key it refused:\n{}",
        cluster.log("beta")
    );
    assert!(!cluster.root("beta").join("srv/www/planted").exists());
    // It refused to start, so it has exited (the guard covers a failure).
    let exited = wait_until(TIMEOUT, || child.try_wait().is_ok_and(|s| s.is_some()));
    assert!(exited, "the impostor is still running");
}

/// `/srv/www` among all; `/srv/private` between alpha and beta only.
fn www_and_private(hosts: &[&str]) -> String {
    format!("{}\nprivate:\n/srv/private -> ( alpha beta )\n", www(hosts))
}

/// Plays gamma with gamma's real key, but sends what gamma must not:
/// frames are sent as given, after the greeting (`Hello` and `Clock`).
/// Returns when the peer closes or after a few seconds.
fn rogue(cluster: &Cluster, to: &str, frames: Vec<Vec<u8>>) {
    let mut r = support::rogue::Rogue::connect(cluster, "gamma", to, support::rogue::wall_ns());
    for f in frames {
        if !r.send_raw(&f) {
            break;
        }
    }
    // Read until the peer closes (or a few seconds pass).
    let _ = r.recv_until(Duration::from_secs(3), |_| false);
}

fn file_change(path: &str, data: &[u8]) -> omirr_proto::Change {
    omirr_proto::Change {
        path: omirr_proto::RelPath::new(path.as_bytes()).expect("path"),
        entry: omirr_proto::Entry {
            content: omirr_proto::Content::File {
                size: data.len() as u64,
                hash: *blake3::hash(data).as_bytes(),
            },
            meta: omirr_proto::Meta {
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
                ..Default::default()
            },
            version: omirr_proto::Version {
                // Far ahead: it would win, were it accepted.
                ts: omirr_proto::Timestamp(u64::MAX / 2),
                host: omirr_proto::HostId::new("gamma"),
            },
            base: None,
        },
    }
}

#[test]
fn changes_outside_the_shared_sets_and_dotdot_paths_are_refused() {
    let _one = support::serial();
    let mut cluster = Cluster::new(&HOSTS, www_and_private);
    cluster.create_dir_everywhere("srv/www");
    fs::create_dir_all(cluster.root("alpha").join("srv/private")).expect("mkdir");
    cluster.start_all();
    cluster.wait_connected(&HOSTS, TIMEOUT);
    cluster.stop("gamma");
    let before = digest(&cluster.root("alpha"));

    // A change to /srv/private, which alpha shares only with beta.
    let page = omirr_proto::Message::Changes {
        // After any cursor alpha holds for gamma: pages must follow it.
        changes: vec![(1_000_000, file_change("srv/private/planted", b"evil"))],
        upto: 1_000_000,
        done: true,
    };
    rogue(
        &cluster,
        "alpha",
        vec![omirr_proto::encode(&page).expect("encode")],
    );
    assert!(
        wait_until(TIMEOUT, || cluster
            .log("alpha")
            .contains("refused a change")),
        "{}",
        cluster.log("alpha")
    );

    // A path with `..`: encoded as a valid path, then patched to climb out.
    let page = omirr_proto::Message::Changes {
        changes: vec![(1_000_000, file_change("srv/www/xx/escaped", b"evil"))],
        upto: 1_000_000,
        done: true,
    };
    let mut frame = omirr_proto::encode(&page).expect("encode");
    let at = frame
        .windows(3)
        .position(|w| w == b"/xx")
        .expect("the path's bytes")
        + 1;
    frame[at..at + 2].copy_from_slice(b"..");
    rogue(&cluster, "alpha", vec![frame]);
    assert!(
        wait_until(TIMEOUT, || cluster
            .log("alpha")
            .contains("has a '..' component")),
        "alpha says why it dropped the session:\n{}",
        cluster.log("alpha")
    );

    assert_eq!(
        digest(&cluster.root("alpha")),
        before,
        "nothing was written on alpha"
    );
    assert!(!cluster.root("alpha").join("srv/escaped").exists());
    assert!(!cluster.root("alpha").join("srv/private/planted").exists());
}

/// Whether `name` is one of the applier's temporary files.
fn is_temp(name: &std::ffi::OsStr) -> bool {
    let n = name.to_string_lossy();
    n.starts_with(".omirr.") && n.ends_with(".tmp")
}

/// The temporary files anywhere under `dir`, with their sizes.
fn temps(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if is_temp(&e.file_name()) {
                out.push((e.path(), m.len()));
            }
        }
    }
    out
}

#[test]
fn a_receiver_killed_mid_transfer_recovers_and_never_shows_partial_content() {
    use std::io::Write;
    let _one = support::serial();
    let mut cluster = Cluster::new(&HOSTS, www);
    const MIB: usize = 1 << 20;
    let size = 200 * MIB;
    let big = cluster.root("alpha").join("srv/www/big.bin");
    fs::create_dir_all(big.parent().expect("parent")).expect("mkdir");
    let mut f = fs::File::create(&big).expect("create");
    let mut block = vec![0u8; MIB];
    for i in 0..200u64 {
        blake3::Hasher::new()
            .update(&i.to_le_bytes())
            .finalize_xof()
            .fill(&mut block);
        f.write_all(&block).expect("write");
    }
    drop(f);
    let want = blake3::hash(&fs::read(&big).expect("read"))
        .to_hex()
        .to_string();
    cluster.create_dir_everywhere("srv/www");
    cluster.start_all();

    // Watch beta receive it; kill it mid-way.
    let target = cluster.root("beta").join("srv/www/big.bin");
    let (beta_www, alpha_root) = (cluster.root("beta").join("srv/www"), cluster.root("alpha"));
    let mut killed = false;
    let deadline = std::time::Instant::now() + TIMEOUT * 3;
    while std::time::Instant::now() < deadline {
        if let Ok(m) = fs::metadata(&target) {
            assert_eq!(m.len(), size as u64, "beta's big.bin held partial content");
        }
        assert!(
            temps(&alpha_root).is_empty(),
            "a temporary file reached alpha"
        );
        if temps(&beta_www).iter().any(|(_, n)| *n > 10 * MIB as u64) {
            cluster.kill("beta");
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(killed, "never saw beta mid-transfer:\n{}", cluster.logs());
    assert!(
        !target.exists(),
        "the target appeared although the transfer was cut"
    );

    cluster.start_host("beta");
    wait_converged(&cluster, &HOSTS, "srv/www", TIMEOUT * 3)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    for h in HOSTS {
        let got = blake3::hash(&fs::read(cluster.root(h).join("srv/www/big.bin")).expect("read"));
        assert_eq!(got.to_hex().to_string(), want, "{h}");
        assert!(
            temps(&cluster.root(h)).is_empty(),
            "{h} kept temporary files"
        );
    }
}

#[test]
fn sighup_reloads_the_distfile_and_keeps_a_broken_one_out() {
    let _one = support::serial();
    let two = ["alpha", "beta"];
    let cluster = started_www(&two);
    // A broken Distfile is refused; the one in force stays.
    let good = fs::read_to_string(cluster.config()).expect("config");
    cluster.rewrite_config("/srv/www -> ( alpha beta\n");
    cluster.reload("alpha");
    assert!(
        cluster.wait_for_log("alpha", "keeping the one in force", TIMEOUT),
        "{}",
        cluster.log("alpha")
    );
    fs::write(cluster.root("alpha").join("srv/www/still-mirrored"), "x").expect("write");
    wait_converged(&cluster, &two, "srv/www", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));

    // Now exclude *.log on both hosts, without a restart.
    cluster.rewrite_config(&format!("{good}\texcept_pat ( \\\\.log$ ) ;\n"));
    for h in two {
        cluster.reload(h);
        assert!(
            cluster.wait_for_log(h, "configuration and peers reloaded", TIMEOUT),
            "{}",
            cluster.log(h)
        );
    }
    fs::write(
        cluster.root("alpha").join("srv/www/debug.log"),
        "local only",
    )
    .expect("write");
    fs::write(cluster.root("alpha").join("srv/www/after"), "mirrored").expect("write");
    assert!(wait_until(TIMEOUT, || cluster
        .root("beta")
        .join("srv/www/after")
        .exists()));
    assert!(
        !cluster.root("beta").join("srv/www/debug.log").exists(),
        "excluded after the reload"
    );
}

#[test]
fn special_runs_after_a_peers_update_and_follows_sighup() {
    let _one = support::serial();
    let two = ["alpha", "beta"];
    let marks = tempfile::tempdir().expect("tempdir");
    let first = marks.path().join("first");
    let second = marks.path().join("second");
    let with_special = |target: &std::path::Path| {
        let t = target.display().to_string();
        move |hosts: &[&str]| {
            format!(
                "{}\tspecial \"echo \\\"$BASEFILE $REMFILE\\\" >> {t}\" ;\n",
                www(hosts)
            )
        }
    };
    let cluster = Cluster::start_connected(&two, with_special(&first), "srv/www", TIMEOUT);
    fs::write(cluster.root("alpha").join("srv/www/page.html"), "v1").expect("write");
    assert!(
        wait_until(TIMEOUT, || fs::read_to_string(&first)
            .is_ok_and(|t| t.contains("page.html /srv/www/page.html"))),
        "special did not run on beta:\n{}",
        cluster.logs()
    );

    // A new command, by SIGHUP: the next update runs it instead.
    cluster.rewrite_config(&with_special(&second)(&two));
    for h in two {
        cluster.reload(h);
        assert!(
            cluster.wait_for_log(h, "configuration and peers reloaded", TIMEOUT),
            "{}",
            cluster.log(h)
        );
    }
    fs::write(cluster.root("alpha").join("srv/www/page.html"), "v2").expect("write");
    assert!(
        wait_until(TIMEOUT, || fs::read_to_string(&second)
            .is_ok_and(|t| t.contains("page.html"))),
        "the reloaded special did not run:\n{}",
        cluster.logs()
    );
}

#[test]
fn sighup_lifting_an_exclusion_mirrors_what_it_covered() {
    let _one = support::serial();
    let two = ["alpha", "beta"];
    let with_logs_excluded =
        |hosts: &[&str]| format!("{}\texcept_pat ( \\\\.log$ ) ;\n", www(hosts));
    let cluster = Cluster::start_connected(&two, with_logs_excluded, "srv/www", TIMEOUT);
    cluster.rewrite_config(&www(&two));
    for h in two {
        cluster.reload(h);
        assert!(
            cluster.wait_for_log(h, "configuration and peers reloaded", TIMEOUT),
            "{}",
            cluster.log(h)
        );
    }
    fs::write(
        cluster.root("alpha").join("srv/www/now.log"),
        "mirrored now",
    )
    .expect("write");
    assert!(
        wait_until(TIMEOUT, || cluster
            .root("beta")
            .join("srv/www/now.log")
            .exists()),
        "a path no longer excluded is mirrored without a restart:\n{}",
        cluster.logs()
    );
}

#[test]
fn a_small_edit_of_a_large_file_fetches_only_the_changed_chunk() {
    let _one = support::serial();
    let hosts = ["alpha", "beta"];
    let mut cluster = Cluster::new(&hosts, www);
    let w = |c: &Cluster, h: &str| c.root(h).join("srv/www");
    let old = noise(6 << 20, 1);
    cluster.create_dir_everywhere("srv/www");
    fs::write(w(&cluster, "alpha").join("big.bin"), &old).expect("write");
    cluster.start_all();
    wait_converged(&cluster, &hosts, "srv/www", TIMEOUT).expect("first sync");
    let received = cluster.peer_counter("beta", "alpha", "file_bytes_received");
    assert!(
        received >= old.len() as u64,
        "sent whole at first: {received}"
    );

    // Overwrite 16 bytes in the middle of the 40th chunk, in place.
    let chunks = omirr_chunk::chunk_bytes(&old);
    let start: usize = chunks[..40].iter().map(|c| c.len as usize).sum();
    let at = start + chunks[40].len as usize / 2;
    let mut new = old.clone();
    new[at..at + 16].copy_from_slice(&[0xa5; 16]);
    let new_chunks = omirr_chunk::chunk_bytes(&new);
    let missing: Vec<_> = new_chunks.iter().filter(|c| !chunks.contains(c)).collect();
    assert_eq!(missing.len(), 1, "the edit moved cut points: {missing:?}");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(w(&cluster, "alpha").join("big.bin"))
            .expect("open");
        f.seek(SeekFrom::Start(at as u64)).expect("seek");
        f.write_all(&[0xa5; 16]).expect("write");
    }
    wait_converged(&cluster, &hosts, "srv/www", TIMEOUT).expect("the edit");
    assert_eq!(
        fs::read(w(&cluster, "beta").join("big.bin")).expect("read"),
        new
    );
    let fetched = cluster.peer_counter("beta", "alpha", "file_bytes_received") - received;
    assert_eq!(
        fetched, missing[0].len as u64,
        "beta should fetch exactly the changed chunk"
    );
    assert_eq!(cluster.peer_counter("beta", "alpha", "files_delta"), 1);
    assert_eq!(
        cluster.peer_counter("beta", "alpha", "file_bytes_reused"),
        new.len() as u64 - fetched
    );
}

#[test]
fn renames_chmods_and_deletes_move_no_file_content() {
    let _one = support::serial();
    let hosts = ["alpha", "beta"];
    let mut cluster = Cluster::new(&hosts, www);
    let w = |c: &Cluster, h: &str| c.root(h).join("srv/www");
    let dir = w(&cluster, "alpha").join("d/sub");
    fs::create_dir_all(&dir).expect("mkdir");
    cluster.create_dir_everywhere("srv/www");
    for i in 0..20 {
        fs::write(dir.join(format!("f{i}")), noise(100_000, i)).expect("write");
    }
    fs::write(w(&cluster, "alpha").join("large"), noise(3 << 20, 99)).expect("write");
    cluster.start_all();
    wait_converged(&cluster, &hosts, "srv/www", TIMEOUT).expect("first sync");
    let bytes = || cluster.peer_counter("beta", "alpha", "file_bytes_received");
    let files = || cluster.peer_counter("beta", "alpha", "files_fetched");
    let (bytes0, files0) = (bytes(), files());
    assert!(bytes0 >= 5_000_000, "{bytes0}");

    let a = w(&cluster, "alpha");
    fs::rename(a.join("d"), a.join("renamed")).expect("rename a directory");
    wait_converged(&cluster, &hosts, "srv/www", TIMEOUT).expect("directory rename");
    fs::rename(a.join("large"), a.join("renamed/large")).expect("rename a file");
    wait_converged(&cluster, &hosts, "srv/www", TIMEOUT).expect("file rename");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(a.join("renamed/large"), fs::Permissions::from_mode(0o600)).expect("chmod");
    wait_converged(&cluster, &hosts, "srv/www", TIMEOUT).expect("chmod");
    fs::remove_dir_all(a.join("renamed/sub")).expect("delete");
    wait_converged(&cluster, &hosts, "srv/www", TIMEOUT).expect("delete");

    assert_eq!((bytes(), files()), (bytes0, files0), "content moved");
    let b = w(&cluster, "beta");
    assert!(b.join("renamed/large").is_file() && !b.join("d").exists());
}

#[test]
fn renaming_a_directory_of_more_entries_than_a_page_moves_no_file_content() {
    let _one = support::serial();
    let hosts = ["alpha", "beta"];
    let mut cluster = Cluster::new(&hosts, www);
    let w = |c: &Cluster, h: &str| c.root(h).join("srv/www");
    // More than the sender's page (4,096 changes): the directory's
    // tombstone and its new name's files travel in different pages.
    let n = 5_000;
    for i in 0..n {
        let dir = w(&cluster, "alpha").join(format!("tree/d{:02}", i % 50));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(format!("f{i}")), noise(64, i)).expect("write");
    }
    cluster.create_dir_everywhere("srv/www");
    cluster.start_all();
    wait_converged(&cluster, &hosts, "srv/www", Duration::from_secs(120)).expect("first sync");
    let files = || cluster.peer_counter("beta", "alpha", "files_fetched");
    let files0 = files();
    assert!(files0 >= n, "{files0}");

    let a = w(&cluster, "alpha");
    fs::rename(a.join("tree"), a.join("moved")).expect("rename");
    wait_converged(&cluster, &hosts, "srv/www", Duration::from_secs(120)).expect("rename");
    assert_eq!(files() - files0, 0, "files fetched for a rename");
    let b = w(&cluster, "beta");
    assert!(b.join("moved/d49/f4999").is_file() && !b.join("tree").exists());
}

#[test]
fn a_file_still_being_written_is_not_sent_half_written() {
    let _one = support::serial();
    let hosts = ["alpha", "beta"];
    let cluster = started_www(&hosts);
    let path = "srv/www/growing.log";
    let mut content = Vec::new();
    {
        use std::io::Write;
        let mut f = fs::File::create(cluster.root("alpha").join(path)).expect("create");
        // A writer that pauses often, but never for long (the watcher
        // waits 2 s of quiet before giving up on a close).
        for i in 0..8 {
            let piece = noise(100_000, i);
            f.write_all(&piece).expect("write");
            content.extend_from_slice(&piece);
            std::thread::sleep(Duration::from_millis(200));
            assert!(
                !cluster.root("beta").join(path).exists(),
                "beta got the file after {} bytes, before its writer closed it",
                content.len()
            );
        }
    }
    wait_converged(&cluster, &hosts, "srv/www", TIMEOUT).expect("sent after close");
    assert_eq!(
        fs::read(cluster.root("beta").join(path)).expect("read"),
        content
    );
    // One version went out: the closed file.
    assert_eq!(cluster.peer_counter("beta", "alpha", "files_fetched"), 1);
}

#[test]
fn a_file_larger_than_the_in_flight_budget_moves_in_bounded_memory() {
    let _one = support::serial();
    let hosts = ["alpha", "beta"];
    let mut cluster = Cluster::new(&hosts, www);
    cluster.add_args(&["--in-flight", "1M"]);
    cluster.create_dir_everywhere("srv/www");
    cluster.start_all();
    cluster.wait_connected(&hosts, TIMEOUT);
    let before: Vec<u64> = hosts
        .iter()
        .map(|h| peak_rss(cluster.pid(h).expect("pid")))
        .collect();
    const SIZE: usize = 192 << 20;
    {
        use std::io::Write;
        let mut f = fs::File::create(cluster.root("alpha").join("srv/www/huge")).expect("create");
        let block = noise(1 << 20, 5);
        for i in 0..(SIZE >> 20) {
            let mut b = block.clone();
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            f.write_all(&b).expect("write");
        }
    }
    wait_converged(&cluster, &hosts, "srv/www", Duration::from_secs(120)).expect("sync");
    for (h, before) in hosts.iter().zip(before) {
        let peak = peak_rss(cluster.pid(h).expect("pid"));
        eprintln!(
            "{h}: peak RSS {} MiB (at start {} MiB)",
            peak >> 20,
            before >> 20
        );
        // Far below the file's size: the file streamed, it was not held.
        assert!(
            peak < before + (48 << 20),
            "{h} grew from {} MiB to {} MiB moving a {} MiB file",
            before >> 20,
            peak >> 20,
            SIZE >> 20
        );
    }
}

/// The vim swap-file case: a directory deleted on one host still holds,
/// on another, a file the Distfile excludes there. The excluded file is
/// never deleted, the deletion is set aside (shown by `status`) and
/// retried, and later changes from the same peer still arrive.
#[test]
fn a_change_that_cannot_be_applied_is_set_aside_and_blocks_nothing() {
    let _one = support::serial();
    let names = ["alpha", "beta"];
    let mut cluster = Cluster::new(&names, www);
    cluster.create_dir_everywhere("srv/www");
    let roots = (cluster.root("alpha"), cluster.root("beta"));
    let www = move |h: &str| match h {
        "alpha" => roots.0.join("srv/www"),
        _ => roots.1.join("srv/www"),
    };
    fs::create_dir_all(www("alpha").join("d")).expect("mkdir");
    fs::write(www("alpha").join("d/notes.txt"), b"notes").expect("write");
    cluster.start_all();
    cluster.wait_connected(&names, TIMEOUT);
    assert!(
        wait_until(TIMEOUT, || www("beta").join("d/notes.txt").exists()),
        "{}",
        cluster.logs()
    );
    // Beta's watcher looks at d once more after the applier set d's times;
    // a swap file written before that look changes the mtime it finds, so
    // beta records d as its own change, and if that reaches alpha between
    // the `rm -rf` below and its recording, alpha makes d again (a gap
    // docs/sync-model.md describes) and there is no deletion for beta to
    // set aside. Under CI load that happened; let beta's watcher settle
    // first.
    std::thread::sleep(Duration::from_millis(500));
    // vim on beta: excluded, so beta's own.
    let swap = www("beta").join("d/.notes.txt.swp");
    fs::write(&swap, b"swap").expect("write");
    fs::remove_dir_all(www("alpha").join("d")).expect("rm -rf");
    assert!(
        wait_until(TIMEOUT, || !www("beta").join("d/notes.txt").exists()),
        "the mirrored file goes:\n{}",
        cluster.logs()
    );
    let aside = wait_until(TIMEOUT, || {
        cluster
            .status("beta")
            .is_some_and(|s| s["aside_count"].as_u64() == Some(1))
    });
    assert!(aside, "beta sets the deletion aside:\n{}", cluster.logs());
    let s = cluster.status("beta").expect("status");
    assert_eq!(s["aside"][0]["path"], "srv/www/d", "{s}");
    assert_eq!(s["aside"][0]["peer"], "alpha", "{s}");
    assert!(
        s["aside"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not empty")),
        "{s}"
    );
    // Later changes from alpha are not held up behind it.
    fs::create_dir_all(www("alpha").join("e")).expect("mkdir");
    fs::write(www("alpha").join("e/later.txt"), b"later").expect("write");
    assert!(
        wait_until(TIMEOUT, || fs::read(www("beta").join("e/later.txt"))
            .is_ok_and(|d| d == b"later")),
        "a later change arrives:\n{}",
        cluster.logs()
    );
    assert_eq!(fs::read(&swap).expect("the swap file stays"), b"swap");
    // Once the swap file goes, a retry applies the deletion.
    fs::remove_file(&swap).expect("rm");
    assert!(
        wait_until(Duration::from_secs(30), || !www("beta").join("d").exists()),
        "the retry deletes the directory:\n{}",
        cluster.logs()
    );
    assert!(
        wait_until(TIMEOUT, || {
            cluster
                .status("beta")
                .is_some_and(|s| s["aside_count"].as_u64() == Some(0))
        }),
        "{}",
        cluster.logs()
    );
    if let Err(e) = wait_converged(&cluster, &names, "srv/www", TIMEOUT) {
        panic!("{e}\n{}", cluster.logs());
    }
}

/// A peer that sends the largest pages the protocol allows, as fast as it
/// can and without waiting for Acks: the receiver holds no more than the
/// window (16 pages), cuts the peer off with `BadMessage` when it goes
/// past, and its memory stays under the bound PROTOCOL.md documents.
#[test]
fn a_peer_flooding_pages_is_cut_off_at_the_window_in_bounded_memory() {
    let _one = support::serial();
    let mut cluster = started_www(&HOSTS);
    cluster.stop("gamma");
    let alpha = cluster.pid("alpha").expect("pid");
    let before = peak_rss(alpha);

    // Deletions of long paths that alpha does not have: about 4 MiB per
    // page, none marked done, so alpha applies nothing before the window
    // is full. More than 20 pages: 80 MiB and more if alpha took them all.
    let deep = "x".repeat(200);
    let changes: Vec<(u64, omirr_proto::Change)> = (0..24 * 1024u64)
        .map(|i| {
            let mut c = file_change(
                &format!("srv/www/{}/f{i}", [deep.as_str(); 19].join("/")),
                b"",
            );
            c.entry.content = omirr_proto::Content::Deleted;
            c.entry.meta = omirr_proto::Meta::default();
            (1_000_000 + i, c)
        })
        .collect();
    let upto = changes.last().map(|(s, _)| *s).expect("changes");
    let mut pages = omirr_proto::paginate(changes, upto, false).expect("pages");
    assert!(pages.len() > 20, "{} pages", pages.len());
    let frames: Vec<Vec<u8>> = pages
        .drain(..)
        .map(|p| omirr_proto::encode(&p).expect("encode"))
        .collect();
    assert!(frames[0].len() > 3 << 20, "pages near the frame limit");
    rogue(&cluster, "alpha", frames);
    assert!(
        wait_until(TIMEOUT, || cluster
            .log("alpha")
            .contains("without an Ack (the window is 16 pages")),
        "alpha cuts the peer off at the window:\n{}",
        cluster.log("alpha")
    );
    let grew = peak_rss(alpha).saturating_sub(before);
    eprintln!("alpha's peak RSS grew by {} MiB", grew >> 20);
    // The window's 16 frames of 4 MiB, decoded, and the frame being read.
    assert!(
        grew < 160 << 20,
        "alpha's peak RSS grew by {} MiB",
        grew >> 20
    );
    // Nothing of it was applied, and alpha goes on with beta.
    assert!(!cluster.root("alpha").join("srv/www/x").exists());
    fs::write(cluster.root("alpha").join("srv/www/after"), b"after").expect("write");
    assert!(
        wait_until(TIMEOUT, || fs::read(
            cluster.root("beta").join("srv/www/after")
        )
        .is_ok_and(|d| d == b"after")),
        "{}",
        cluster.logs()
    );
}

/// `/srv/www` mirrored among `hosts` with `install OPTIONS ;`.
fn www_with(options: &'static str) -> impl Fn(&[&str]) -> String {
    move |hosts: &[&str]| format!("{}\tinstall {options} ;\n", www(hosts))
}

/// Two hosts mirroring `/srv/www` with `install OPTIONS ;`, started and
/// connected.
fn started_two_with(options: &'static str) -> Cluster {
    let two = ["alpha", "beta"];
    Cluster::start_connected(&two, www_with(options), "srv/www", TIMEOUT)
}

/// With `nochkowner,nochkgroup,nochkmode`, content goes from host to host
/// but owner, group and mode stay each host's own: a chmod 600 and a
/// chown 1234:1234 on alpha, then an edit there, give beta the new content
/// and leave its mode, owner and group as they were. (The chown needs
/// root; without it only the mode is tried.)
#[test]
fn with_nochk_options_content_is_mirrored_but_owner_group_and_mode_are_not() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let _one = support::serial();
    let cluster = started_two_with("-onochkowner,nochkgroup,nochkmode");
    let a = cluster.root("alpha").join("srv/www/tool.sh");
    let b = cluster.root("beta").join("srv/www/tool.sh");
    fs::write(&a, "v1").expect("write");
    fs::set_permissions(&a, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(
        wait_until(TIMEOUT, || fs::read(&b).is_ok_and(|c| c == b"v1")
            && fs::metadata(&b).is_ok_and(|m| m.mode() & 0o7777 == 0o644)),
        "the new file did not reach beta with its mode:\n{}",
        cluster.logs()
    );
    let before = fs::metadata(&b).expect("stat");
    let root = nix::unistd::geteuid().is_root();

    fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).expect("chmod");
    if root {
        std::os::unix::fs::chown(&a, Some(1234), Some(1234)).expect("chown");
    }
    // Long enough for the watcher to look at the chmod and chown alone.
    std::thread::sleep(Duration::from_millis(500));
    fs::write(&a, "v2").expect("write");
    assert!(
        wait_until(TIMEOUT, || fs::read(&b).is_ok_and(|c| c == b"v2")),
        "the edit did not reach beta:\n{}",
        cluster.logs()
    );
    // Anything that would follow the content has time to arrive.
    std::thread::sleep(Duration::from_millis(1500));
    let after = fs::metadata(&b).expect("stat");
    assert_eq!(after.mode() & 0o7777, 0o644, "beta's mode changed");
    assert_eq!(
        (after.uid(), after.gid()),
        (before.uid(), before.gid()),
        "beta's owner or group changed"
    );
    let on_a = fs::metadata(&a).expect("stat");
    assert_eq!(on_a.mode() & 0o7777, 0o600, "alpha keeps its own mode");
    if root {
        assert_eq!((on_a.uid(), on_a.gid()), (1234, 1234), "and owner");
    }

    // The other way round: beta's chmod stays on beta too.
    fs::set_permissions(&b, fs::Permissions::from_mode(0o640)).expect("chmod");
    std::thread::sleep(Duration::from_millis(500));
    fs::write(&b, "v3").expect("write");
    assert!(
        wait_until(TIMEOUT, || fs::read(&a).is_ok_and(|c| c == b"v3")),
        "beta's edit did not reach alpha:\n{}",
        cluster.logs()
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        fs::metadata(&a).expect("stat").mode() & 0o7777,
        0o600,
        "alpha's mode changed"
    );

    // A chmod alone on beta, not mirrored, does not make beta take
    // alpha's next edit for a local write it must not overwrite.
    fs::set_permissions(&b, fs::Permissions::from_mode(0o604)).expect("chmod");
    std::thread::sleep(Duration::from_millis(500));
    fs::write(&a, "v4").expect("write");
    assert!(
        wait_until(TIMEOUT, || fs::read(&b).is_ok_and(|c| c == b"v4")),
        "alpha's edit did not reach beta after beta's chmod:\n{}",
        cluster.logs()
    );
    assert_eq!(fs::metadata(&b).expect("stat").mode() & 0o7777, 0o604);
}

/// `savetargets` keeps the file a peer's change replaces as NAME.OLD on
/// the host that kept it: NAME.OLD is not mirrored, and is not kept again
/// (no NAME.OLD.OLD) when the next change comes.
#[test]
fn savetargets_keeps_old_versions_where_they_were_kept_and_never_cascades() {
    let _one = support::serial();
    let cluster = started_two_with("-osavetargets");
    let w = |h: &str| cluster.root(h).join("srv/www");
    let read = |h: &str, f: &str| fs::read_to_string(w(h).join(f)).ok();
    for (v, old) in [("v1", None), ("v2", Some("v1")), ("v3", Some("v2"))] {
        fs::write(w("alpha").join("page.html"), v).expect("write");
        assert!(
            wait_until(TIMEOUT, || read("beta", "page.html").as_deref() == Some(v)
                && read("beta", "page.html.OLD").as_deref() == old),
            "beta does not hold {v} and {old:?}:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(700));
    }
    std::thread::sleep(Duration::from_millis(1000));
    for h in ["alpha", "beta"] {
        let mut names: Vec<String> = fs::read_dir(w(h))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let expected: &[&str] = if h == "beta" {
            &["page.html", "page.html.OLD"]
        } else {
            &["page.html"]
        };
        assert_eq!(names, expected, "{h}:\n{}", cluster.logs());
    }
}

/// Owners and groups travel as names and numbers; by default a host gives
/// the local user and group of the names, falling back to the number (and
/// saying so once) for a name it does not know. A rogue gamma sends two
/// directories owned by "root" and by an unknown user, both with numbers
/// that are not root's. Needs root to set owners.
#[test]
fn owners_arrive_by_name_and_unknown_names_fall_back_to_the_number() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: owners cannot be set; skipped");
        return;
    }
    let _one = support::serial();
    let mut cluster = started_www(&HOSTS);
    cluster.stop("gamma");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let dir = |path: &str, uid: u32, owner: &str, seq: u64| {
        let name = |s: &str| omirr_proto::Name::new(s.as_bytes()).expect("name");
        (
            seq,
            omirr_proto::Change {
                path: omirr_proto::RelPath::new(path.as_bytes()).expect("path"),
                entry: omirr_proto::Entry {
                    content: omirr_proto::Content::Dir,
                    meta: omirr_proto::Meta {
                        mode: 0o750,
                        uid,
                        gid: uid,
                        mtime_ns: 0,
                        owner: name(owner),
                        group: name(owner),
                        ..Default::default()
                    },
                    version: omirr_proto::Version {
                        ts: omirr_proto::Timestamp(now),
                        host: omirr_proto::HostId::new("gamma"),
                    },
                    base: None,
                },
            },
        )
    };
    let page = omirr_proto::Message::Changes {
        changes: vec![
            dir("srv/www/by-name", 4321, "root", 1_000_000),
            dir("srv/www/unknown", 4322, "omirr-nobody-here", 1_000_001),
        ],
        upto: 1_000_001,
        done: true,
    };
    rogue(
        &cluster,
        "alpha",
        vec![omirr_proto::encode(&page).expect("encode")],
    );
    let w = cluster.root("alpha").join("srv/www");
    assert!(
        wait_until(TIMEOUT, || w.join("unknown").exists()
            && w.join("by-name").exists()),
        "{}",
        cluster.log("alpha")
    );
    let md = fs::metadata(w.join("by-name")).expect("stat");
    assert_eq!((md.uid(), md.gid()), (0, 0), "root by name, not 4321");
    let md = fs::metadata(w.join("unknown")).expect("stat");
    assert_eq!((md.uid(), md.gid()), (4322, 4322), "the number");
    let log = cluster.log("alpha");
    assert_eq!(
        log.matches("user 'omirr-nobody-here'").count(),
        1,
        "said once:\n{log}"
    );
    assert!(
        log.contains("is unknown on this host: using the number 4322, as on the peer"),
        "{log}"
    );
    // And beta, which got them from alpha, has the same.
    let b = cluster.root("beta").join("srv/www");
    assert!(
        wait_until(TIMEOUT, || b.join("unknown").exists()),
        "{}",
        cluster.logs()
    );
    assert_eq!(fs::metadata(b.join("by-name")).expect("stat").uid(), 0);
}
