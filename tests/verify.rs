//! End to end: `omirrd verify` on three real daemons. It exits 0 on a
//! converged mesh, 1 once a host's index holds an entry the others do not
//! (planted in the index while that host was stopped), naming the path
//! with both hosts' versions, and 2 with a peer down; `--deep` finds a
//! file whose content changed on disk behind the index's back.

mod support;

use omirr_core::{Change, Content, Entry, HostId, Meta, RelPath, Timestamp, Version};
use omirr_testkit::wait_until;
use std::fs;
use std::process::Output;
use std::time::Duration;
use support::cluster::{wait_converged, Cluster};

const TIMEOUT: Duration = Duration::from_secs(30);
const HOSTS: [&str; 3] = ["alpha", "beta", "gamma"];

fn www(hosts: &[&str]) -> String {
    format!(
        "HOSTS = ( {} )\n\nwww:\n/srv/www -> ${{HOSTS}}\n\texcept_pat ( \\\\.swp$ ) ;\n",
        hosts.join(" ")
    )
}

/// A cluster whose alpha holds a small tree, started, converged, every
/// session up and caught up.
fn converged() -> Cluster {
    let mut cluster = Cluster::new(&HOSTS, www);
    let site = cluster.root("alpha").join("srv/www");
    fs::create_dir_all(site.join("css")).expect("mkdir");
    fs::write(site.join("index.html"), "<h1>alpha</h1>\n").expect("write");
    fs::write(site.join("css/site.css"), "h1 { color: teal }\n").expect("write");
    std::os::unix::fs::symlink("index.html", site.join("home.html")).expect("symlink");
    cluster.create_dir_everywhere("srv/www");
    cluster.start_all();
    wait_converged(&cluster, &HOSTS, "srv/www", TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    all_up(&cluster);
    cluster
}

/// Waits until every host's sessions are up and caught up.
fn all_up(cluster: &Cluster) {
    for host in HOSTS {
        let up = wait_until(TIMEOUT, || {
            cluster.status(host).is_some_and(|s| {
                s["peers"].as_object().is_some_and(|p| {
                    p.values()
                        .all(|p| p["connected"] == true && p["caught_up"] == true)
                })
            })
        });
        assert!(up, "{host}'s sessions are not all up:\n{}", cluster.logs());
    }
}

fn verify(cluster: &Cluster, host: &str, extra: &[&str]) -> Output {
    let state = cluster.state_dir(host);
    let mut args = vec!["verify", "--state-dir", state.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    support::omirrd(&args)
}

fn shown(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        support::stdout(o),
        support::stderr(o)
    )
}

/// Waits until `omirrd verify` on `host` exits with `code` (the mesh may
/// still be settling), and returns that run's output.
fn verify_until(cluster: &Cluster, host: &str, extra: &[&str], code: i32) -> Output {
    let mut last = None;
    let reached = wait_until(TIMEOUT, || {
        let o = verify(cluster, host, extra);
        let done = o.status.code() == Some(code);
        last = Some(o);
        done
    });
    let last = last.expect("verify ran");
    assert!(
        reached,
        "verify on {host} never exited {code}; last:\n{}\n{}",
        shown(&last),
        cluster.logs()
    );
    last
}

fn path(s: &str) -> RelPath {
    RelPath::new(s.as_bytes().to_vec()).expect("path")
}

#[test]
fn verify_says_same_then_names_a_planted_difference_then_a_peer_down() {
    let _serial = support::serial();
    let mut cluster = converged();

    // Converged: every host agrees with both others.
    for host in HOSTS {
        let o = verify_until(&cluster, host, &[], 0);
        let text = support::stdout(&o);
        for other in HOSTS.iter().filter(|o| **o != host) {
            assert!(
                text.contains(&format!("{host} and {other}: same index (srv/www;")),
                "{}",
                shown(&o)
            );
        }
    }
    let o = verify(&cluster, "alpha", &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", shown(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(json["peers"]["beta"]["state"], "same", "{json}");
    assert_eq!(json["peers"]["gamma"]["found"], 0, "{json}");
    // Equal trees: one question per mirrored tree.
    assert_eq!(json["peers"]["gamma"]["asked"], 1, "{json}");

    // Plant an entry in gamma's index while it is stopped: a tombstone
    // that names alpha as its writer, long ago. The scan finds nothing on
    // disk to contradict it; gamma passes it on to beta but never back to
    // the host it names (alpha wrote it, so has it), so alpha's index
    // lacks it for good.
    cluster.stop("gamma");
    // Dated 2001: tombstone expiry (30 days) would forget it at gamma's
    // start, and the difference with it.
    cluster.add_args(&["--tombstone-horizon", "never"]);
    let ghost = Entry {
        content: Content::Deleted,
        meta: Meta::default(),
        version: Version {
            ts: Timestamp(1_000_000_000_000_000_000),
            host: HostId::new("alpha"),
        },
        base: None,
    };
    {
        let index = omirr_index::Index::open(&cluster.state_dir("gamma")).expect("gamma's index");
        let recorded = index
            .record(&[Change {
                path: path("srv/www/ghost"),
                entry: ghost,
            }])
            .expect("record");
        assert!(recorded[0].is_some(), "planted");
    }
    cluster.start_host("gamma");
    all_up(&cluster);

    let o = verify_until(&cluster, "alpha", &[], 1);
    let text = support::stdout(&o);
    assert!(
        text.contains("alpha and gamma: 1 path(s) differ"),
        "{}",
        shown(&o)
    );
    let lines: Vec<&str> = text.lines().collect();
    let gamma = lines
        .iter()
        .position(|l| l.starts_with("alpha and gamma:"))
        .unwrap_or_else(|| panic!("gamma is not reported:\n{}", shown(&o)));
    let at = gamma + 1;
    assert_eq!(lines[at], "  srv/www/ghost", "{text}");
    // Both versions: alpha has none, gamma the planted one.
    assert!(
        lines[at + 1].contains("alpha") && lines[at + 1].ends_with("no entry"),
        "{text}"
    );
    assert!(
        lines[at + 2].contains("gamma")
            && lines[at + 2].ends_with("deleted, version 2001-09-09T01:46:40.000000000Z by alpha"),
        "{text}"
    );
    // The same from gamma's side, in JSON.
    let o = verify_until(&cluster, "gamma", &["--json"], 1);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let diffs = &json["peers"]["alpha"]["differences"];
    assert_eq!(diffs[0]["path"], "srv/www/ghost", "{json}");
    assert_eq!(diffs[0]["ours"]["kind"], "deleted", "{json}");
    assert_eq!(diffs[0]["ours"]["version_host"], "alpha", "{json}");
    assert!(diffs[0]["theirs"].is_null(), "{json}");

    // A peer down: it cannot be asked, and verify says which and why.
    cluster.stop("beta");
    let o = verify(&cluster, "alpha", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", shown(&o));
    assert!(
        support::stdout(&o).contains("alpha and beta: cannot ask beta: no session with it runs"),
        "{}",
        shown(&o)
    );
}

#[test]
fn verify_deep_finds_content_changed_behind_the_index() {
    let _serial = support::serial();
    let mut cluster = converged();
    let o = verify_until(&cluster, "beta", &["--deep"], 0);
    assert!(
        support::stdout(&o).contains("beta on disk: 0 of 5 entries differ from the index"),
        "{}",
        shown(&o)
    );

    // While beta is stopped, its copy of index.html gets other bytes of
    // the same length with the old mtime, and its index's stat cache is
    // made to match the file as it now is: what a write that escaped both
    // the watcher and the scan would leave (or bit rot), which only a
    // re-hash can see.
    cluster.stop("beta");
    let file = cluster.root("beta").join("srv/www/index.html");
    let before = fs::symlink_metadata(&file).expect("stat");
    fs::write(&file, "<h1>ALPHA</h1>\n").expect("write");
    let mtime = filetime_of(&before);
    set_mtime(&file, mtime);
    let after = omirr_fs::scan::lstat_key(&file).expect("stat");
    {
        let index = omirr_index::Index::open(&cluster.state_dir("beta")).expect("beta's index");
        index
            .set_stat(&path("srv/www/index.html"), after)
            .expect("set stat");
    }
    cluster.start_host("beta");
    all_up(&cluster);

    // The indexes still agree: only --deep sees it.
    let o = verify_until(&cluster, "beta", &[], 0);
    assert!(support::stdout(&o).contains("same index"), "{}", shown(&o));
    let o = verify(&cluster, "beta", &["--deep"]);
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    let text = support::stdout(&o);
    assert!(
        text.contains("beta on disk: 1 of 5 entries differ from the index"),
        "{}",
        shown(&o)
    );
    assert!(text.contains("  srv/www/index.html\n"), "{}", shown(&o));
    let changed = blake3::hash(b"<h1>ALPHA</h1>\n").to_hex()[..12].to_string();
    assert!(
        text.contains(&format!("content blake3 {changed}")),
        "{}",
        shown(&o)
    );
    // alpha's files are as its index says.
    let o = verify(&cluster, "alpha", &["--deep"]);
    assert_eq!(o.status.code(), Some(0), "{}", shown(&o));
}

fn filetime_of(m: &fs::Metadata) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (m.mtime(), m.mtime_nsec())
}

/// Sets `file`'s mtime (seconds, nanoseconds), its atime to now.
fn set_mtime(file: &std::path::Path, (secs, nanos): (i64, i64)) {
    let times = fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + Duration::new(secs as u64, nanos as u32));
    fs::File::options()
        .write(true)
        .open(file)
        .and_then(|f| f.set_times(times))
        .expect("set mtime");
}

/// A peer asking about alpha's index sees only what a mirror set shares
/// with it, and one that answers a question never asked is refused.
#[test]
fn a_rogue_peer_learns_nothing_it_does_not_share_and_cannot_answer_unasked() {
    use omirr_proto::{Message, Span};
    use support::rogue::{wall_ns, Rogue};
    let _serial = support::serial();
    let distfile = |hosts: &[&str]| {
        format!(
            "www:\n/srv/www -> ( {} )\n\nprivate:\n/srv/private -> ( alpha beta )\n",
            hosts.join(" ")
        )
    };
    let mut cluster = Cluster::new(&HOSTS, distfile);
    fs::create_dir_all(cluster.root("alpha").join("srv/www")).expect("mkdir");
    fs::create_dir_all(cluster.root("alpha").join("srv/private")).expect("mkdir");
    fs::write(cluster.root("alpha").join("srv/www/open"), "open").expect("write");
    fs::write(cluster.root("alpha").join("srv/private/secret"), "secret").expect("write");
    cluster.start_host("alpha");
    assert!(
        cluster.wait_for_log("alpha", "ready", TIMEOUT),
        "{}",
        cluster.logs()
    );
    // gamma's key, gamma's name: gamma shares srv/www with alpha, not
    // srv/private.
    let mut rogue = Rogue::connect(&cluster, "gamma", "alpha", wall_ns());
    let summary_of = |rogue: &mut Rogue, id: u64, top: &str| {
        rogue.send(&Message::SummaryRequest {
            id,
            span: Span {
                top: path(top),
                after: None,
                upto: None,
            },
        });
        match rogue.recv_until(TIMEOUT, |m| matches!(m, Message::Summary { .. })) {
            Some(Message::Summary { id: got, buckets }) => {
                assert_eq!(got, id);
                buckets
            }
            other => panic!("no summary: {other:?}\n{}", cluster.logs()),
        }
    };
    let private = summary_of(&mut rogue, 1, "srv/private");
    assert_eq!(private.len(), 1, "{private:?}");
    assert_eq!(
        private[0].count, 0,
        "alpha summarised its private tree for gamma"
    );
    let www = summary_of(&mut rogue, 2, "srv/www");
    let total: u64 = www.iter().map(|b| b.count).sum();
    assert_eq!(total, 2, "srv/www and srv/www/open: {www:?}");
    rogue.send(&Message::EntriesRequest {
        id: 3,
        span: Span {
            top: path("srv"),
            after: None,
            upto: None,
        },
    });
    let entries = match rogue.recv_until(TIMEOUT, |m| matches!(m, Message::Entries { .. })) {
        Some(Message::Entries {
            entries, complete, ..
        }) => {
            assert!(complete);
            entries
        }
        other => panic!("no entries: {other:?}\n{}", cluster.logs()),
    };
    let paths: Vec<String> = entries.iter().map(|c| c.path.to_string()).collect();
    assert_eq!(paths, ["srv/www", "srv/www/open"]);

    // An answer to no question ends the session, with the reason.
    rogue.send(&Message::Summary {
        id: 99,
        buckets: vec![omirr_proto::Bucket {
            upto: None,
            count: 0,
            hash: [0; 32],
        }],
    });
    let refused = rogue.recv_until(TIMEOUT, |m| matches!(m, Message::Error { .. }));
    match refused {
        Some(Message::Error { message, .. }) => {
            assert!(
                message.contains("answers no outstanding question"),
                "{message}"
            )
        }
        other => panic!("not refused: {other:?}\n{}", cluster.logs()),
    }
}
