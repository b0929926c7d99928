//! Hostile peers and wrong clocks, end to end: real `omirrd` processes,
//! and a rogue peer (`support::rogue`) that holds a real host's key and
//! sends what that host must not: versions from the far future, forged
//! writers, removals of sets it has no part in, over-long paths, requests
//! for content it may not read. And hosts whose clocks are off
//! (`OMIRR_TEST_CLOCK_SKEW`). See omirrd(8), SECURITY.

mod support;

use omirr_proto::{Change, Content, Entry, Message, Meta, RelPath, Timestamp, Version};
use omirr_testkit::wait_until;
use std::fs;
use std::time::Duration;
use support::cluster::Cluster;
use support::rogue::{wall_ns, Rogue};

const TIMEOUT: Duration = Duration::from_secs(20);
const HOSTS: [&str; 3] = ["alpha", "beta", "gamma"];

/// `/srv/www` among all the hosts; `/srv/private` between alpha and beta.
fn www_and_private(hosts: &[&str]) -> String {
    format!(
        "www:\n/srv/www -> ( {} )\n\nprivate:\n/srv/private -> ( alpha beta )\n",
        hosts.join(" ")
    )
}

/// `/srv/www` among all, except `/srv/www/private`, which another
/// statement mirrors between alpha and beta only.
fn nested(hosts: &[&str]) -> String {
    format!(
        "/srv/www -> ( {} )\n\texcept /srv/www/private ;\n/srv/www/private -> ( alpha beta )\n",
        hosts.join(" ")
    )
}

fn connected(cluster: &Cluster, host: &str, peer: &str) -> bool {
    cluster
        .status(host)
        .is_some_and(|s| s["peers"][peer]["connected"] == true)
}

/// Starts `names` with `distfile`, after `prepare` filled their roots,
/// and waits until each is connected to each.
fn started(
    names: &[&str],
    distfile: impl Fn(&[&str]) -> String,
    prepare: impl Fn(&Cluster),
) -> Cluster {
    let mut cluster = Cluster::new(names, distfile);
    cluster.create_dir_everywhere("srv/www");
    prepare(&cluster);
    cluster.start_all();
    let all = wait_until(TIMEOUT, || {
        names
            .iter()
            .all(|h| names.iter().all(|p| p == h || connected(&cluster, h, p)))
    });
    assert!(all, "not all peers connected:\n{}", cluster.logs());
    cluster
}

fn change(path: &str, content: Content, ts: u64, writer: &str) -> Change {
    Change {
        path: RelPath::new(path.as_bytes()).expect("path"),
        entry: Entry {
            content,
            meta: Meta {
                mode: 0o755,
                ..Meta::default()
            },
            version: Version {
                ts: Timestamp(ts),
                host: omirr_proto::HostId::new(writer),
            },
            base: None,
        },
    }
}

/// One page of `changes`, numbered after any cursor alpha may hold for
/// the rogue, and after any page sent before (alpha keeps the cursor of
/// what it applied or refused).
fn page(changes: Vec<Change>) -> Message {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_000_000);
    let n = changes.len() as u64;
    let base = NEXT.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    Message::Changes {
        changes: (1..=n).map(|i| base + i).zip(changes).collect(),
        upto: base + n,
        done: true,
    }
}

/// Waits for `host`'s log to say `needle`; panics with the logs if not.
fn expect_log(cluster: &Cluster, host: &str, needle: &str) {
    assert!(
        cluster.wait_for_log(host, needle, TIMEOUT),
        "{host} never logged {needle:?}:\n{}",
        cluster.logs()
    );
}

#[test]
fn a_version_from_the_far_future_is_set_aside_and_drags_no_clock() {
    let _one = support::serial();
    let mut cluster = started(&HOSTS, www_and_private, |c| {
        for h in HOSTS {
            fs::write(c.root(h).join("srv/www/keep"), b"keep").expect("write");
        }
    });
    cluster.stop("gamma");
    let mut rogue = Rogue::connect(&cluster, "gamma", "alpha", wall_ns());
    // A deletion stamped u64::MAX: it would win over every later write.
    rogue.send(&page(vec![change(
        "srv/www/keep",
        Content::Deleted,
        u64::MAX,
        "gamma",
    )]));
    expect_log(&cluster, "alpha", "ahead of this host's clock");
    let aside = wait_until(TIMEOUT, || {
        cluster
            .status("alpha")
            .is_some_and(|s| s["aside_count"] == 1)
    });
    assert!(aside, "status shows it set aside:\n{}", cluster.logs());
    drop(rogue);
    assert_eq!(
        fs::read(cluster.root("alpha").join("srv/www/keep")).expect("keep"),
        b"keep"
    );
    // alpha's clock was not dragged to the end of time: its second edit of
    // a file is still a newer version, and reaches beta.
    let f = cluster.root("alpha").join("srv/www/edited");
    let on_beta = cluster.root("beta").join("srv/www/edited");
    for text in ["first", "second"] {
        fs::write(&f, text).expect("write");
        assert!(
            wait_until(TIMEOUT, || fs::read(&on_beta)
                .is_ok_and(|d| d == text.as_bytes())),
            "beta has {text:?}:\n{}",
            cluster.logs()
        );
    }
    assert_eq!(
        fs::read(cluster.root("beta").join("srv/www/keep")).expect("keep"),
        b"keep"
    );
}

#[test]
fn a_peer_cannot_remove_or_hide_a_nested_set_it_is_not_part_of() {
    let _one = support::serial();
    let mut cluster = started(&HOSTS, nested, |c| {
        for h in ["alpha", "beta"] {
            fs::create_dir_all(c.root(h).join("srv/www/private")).expect("mkdir");
            fs::write(c.root(h).join("srv/www/private/secret"), b"secret").expect("write");
        }
    });
    cluster.stop("gamma");
    // gamma shares /srv/www: a tombstone on it would remove
    // /srv/www/private too. So would a file in its place.
    let mut rogue = Rogue::connect(&cluster, "gamma", "alpha", wall_ns());
    rogue.send(&page(vec![change(
        "srv/www",
        Content::Deleted,
        wall_ns(),
        "gamma",
    )]));
    expect_log(
        &cluster,
        "alpha",
        "which is in a mirror set the peer is not part of",
    );
    drop(rogue);
    let mut rogue = Rogue::connect(&cluster, "gamma", "alpha", wall_ns());
    rogue.send(&page(vec![change(
        "srv/www",
        Content::Symlink {
            target: b"/etc".to_vec(),
        },
        wall_ns(),
        "gamma",
    )]));
    assert!(
        wait_until(TIMEOUT, || cluster
            .log("alpha")
            .matches("refused a change")
            .count()
            >= 2),
        "{}",
        cluster.logs()
    );
    drop(rogue);
    // Some time for anything that would have been applied to show.
    std::thread::sleep(Duration::from_secs(1));
    for h in ["alpha", "beta"] {
        assert_eq!(
            fs::read(cluster.root(h).join("srv/www/private/secret"))
                .ok()
                .as_deref(),
            Some(&b"secret"[..]),
            "{h} keeps the nested set:\n{}",
            cluster.logs()
        );
    }
    let refused = cluster
        .status("alpha")
        .map(|s| s["peers"]["gamma"]["refused"].clone());
    assert_eq!(
        refused,
        Some(serde_json::json!(2)),
        "status counts the refusals"
    );
}

#[test]
fn a_forged_writer_and_an_over_long_path_are_refused() {
    let _one = support::serial();
    let mut cluster = started(&HOSTS, www_and_private, |_| {});
    cluster.stop("gamma");
    // A directory "made by" a host that is no peer at all.
    let mut rogue = Rogue::connect(&cluster, "gamma", "alpha", wall_ns());
    rogue.send(&page(vec![change(
        "srv/www/forged",
        Content::Dir,
        wall_ns(),
        "mallory",
    )]));
    expect_log(&cluster, "alpha", "names 'mallory' as its writer");
    drop(rogue);
    assert!(!cluster.root("alpha").join("srv/www/forged").exists());

    // A path of 60,001 bytes: refused as it is decoded, the session ends
    // with an error naming the limit.
    let placeholder = "p/".repeat(150) + "p";
    let frame = omirr_proto::encode(&page(vec![change(
        &format!("srv/www/{placeholder}"),
        Content::Dir,
        wall_ns(),
        "gamma",
    )]))
    .expect("encode");
    let mut old = vec![251u8, 53, 1]; // "srv/www/" + 301 = 309 bytes
    old.extend_from_slice(format!("srv/www/{placeholder}").as_bytes());
    let at = frame
        .windows(old.len())
        .position(|w| w == old.as_slice())
        .expect("the path in the frame");
    let long: Vec<u8> = (0..60_001)
        .map(|i| if i % 2 == 1 { b'/' } else { b'x' })
        .collect();
    let mut payload = frame[4..at].to_vec();
    payload.push(251);
    payload.extend_from_slice(&u16::try_from(long.len()).expect("u16").to_le_bytes());
    payload.extend_from_slice(&long);
    payload.extend_from_slice(&frame[at + old.len()..]);
    let mut raw = u32::try_from(payload.len())
        .expect("len")
        .to_be_bytes()
        .to_vec();
    raw.extend_from_slice(&payload);
    let mut rogue = Rogue::connect(&cluster, "gamma", "alpha", wall_ns());
    rogue.send_raw(&raw);
    let answer = rogue.recv_until(TIMEOUT, |m| matches!(m, Message::Error { .. }));
    match answer {
        Some(Message::Error { code, message }) => {
            assert_eq!(code, omirr_proto::ErrorCode::BadMessage);
            assert!(message.contains("PATH_MAX"), "{message}");
        }
        other => panic!("expected an Error naming PATH_MAX, got {other:?}"),
    }
    expect_log(&cluster, "alpha", "PATH_MAX");
    assert!(!cluster.root("alpha").join("srv/www/x").exists());
}

#[test]
fn content_is_served_only_from_shared_sets_and_never_through_a_symlink() {
    let _one = support::serial();
    let secret = b"the secret";
    let mut cluster = started(&HOSTS, www_and_private, |c| {
        fs::create_dir_all(c.root("alpha").join("srv/private")).expect("mkdir");
        fs::write(c.root("alpha").join("srv/private/secret"), secret).expect("write");
        // A link inside www to the private tree next to it.
        std::os::unix::fs::symlink("../private", c.root("alpha").join("srv/www/link"))
            .expect("symlink");
    });
    assert!(
        wait_until(TIMEOUT, || cluster
            .root("beta")
            .join("srv/private/secret")
            .exists()),
        "beta gets the private file:\n{}",
        cluster.logs()
    );
    cluster.stop("gamma");
    let hash = *blake3::hash(secret).as_bytes();
    let size = secret.len() as u64;
    let mut rogue = Rogue::connect(&cluster, "gamma", "alpha", wall_ns());
    let ask = |id: u64, path: &str| Message::FileRequest {
        id,
        path: RelPath::new(path.as_bytes()).expect("path"),
        hash,
        size,
    };
    rogue.send(&ask(1, "srv/private/secret"));
    rogue.send(&ask(2, "srv/www/link/secret"));
    rogue.send(&Message::ChunkRequest {
        id: 3,
        path: RelPath::new(&b"srv/private/secret"[..]).expect("path"),
        hash,
        size,
    });
    rogue.send(&Message::DigestRequest {
        id: 4,
        path: RelPath::new(&b"srv/private/secret"[..]).expect("path"),
        hash,
        size,
    });
    let mut unavailable = Vec::new();
    while unavailable.len() < 4 {
        match rogue.recv(TIMEOUT) {
            Some(Message::FileUnavailable { id, reason }) => unavailable.push((id, reason)),
            Some(Message::FileData { id, data, .. }) => {
                panic!("alpha served {} bytes for request {id}", data.len())
            }
            Some(Message::ChunkList { id, .. } | Message::ChunkDigests { id, .. }) => {
                panic!("alpha sent a chunk list for {id}")
            }
            Some(_) => {}
            None => panic!("alpha answered only {unavailable:?}:\n{}", cluster.logs()),
        }
    }
    unavailable.sort();
    assert!(
        unavailable[0].1.contains("not in a mirror set"),
        "{unavailable:?}"
    );
    assert!(
        unavailable[2].1.contains("not in a mirror set"),
        "{unavailable:?}"
    );
    assert!(
        unavailable[3].1.contains("not in a mirror set"),
        "{unavailable:?}"
    );
    expect_log(&cluster, "alpha", "refused a request");
}

/// A peer that did not list `chunk-digests` (an older build) never sends
/// `DigestRequest`; one that does is broken, and the session ends with an
/// error that names the message, instead of being served.
#[test]
fn a_request_for_a_capability_not_negotiated_ends_the_session() {
    let _one = support::serial();
    let mut cluster = started(&HOSTS, www_and_private, |c| {
        fs::create_dir_all(c.root("alpha").join("srv/www")).expect("mkdir");
        fs::write(c.root("alpha").join("srv/www/page"), b"a page").expect("write");
    });
    cluster.stop("gamma");
    let mut hello = omirr_proto::Hello::new("gamma");
    hello.capabilities.clear();
    let mut rogue = Rogue::connect_with(&cluster, "gamma", "alpha", wall_ns(), hello);
    let hash = *blake3::hash(b"a page").as_bytes();
    rogue.send(&Message::DigestRequest {
        id: 1,
        path: RelPath::new(&b"srv/www/page"[..]).expect("path"),
        hash,
        size: 6,
    });
    let answer = rogue.recv_until(TIMEOUT, |m| {
        matches!(
            m,
            Message::Error { .. } | Message::ChunkDigests { .. } | Message::FileUnavailable { .. }
        )
    });
    match answer {
        Some(Message::Error { message, .. }) => assert!(
            message.contains("DigestRequest without the capability chunk-digests"),
            "{message}"
        ),
        other => panic!("alpha answered {other:?}:\n{}", cluster.logs()),
    }
    expect_log(&cluster, "alpha", "DigestRequest without the capability");
}

#[test]
fn a_host_a_day_ahead_is_refused_and_one_two_minutes_behind_works() {
    let _one = support::serial();
    let mut cluster = Cluster::new(&HOSTS, |h: &[&str]| {
        format!("/srv/www -> ( {} )\n", h.join(" "))
    });
    cluster.create_dir_everywhere("srv/www");
    cluster.set_env("gamma", "OMIRR_TEST_CLOCK_SKEW", "86400");
    cluster.set_env("beta", "OMIRR_TEST_CLOCK_SKEW", "-120");
    cluster.start_all();
    assert!(
        wait_until(TIMEOUT, || connected(&cluster, "alpha", "beta")
            && connected(&cluster, "beta", "alpha")),
        "alpha and beta, two minutes apart, connect:\n{}",
        cluster.logs()
    );
    // gamma is refused by both, and says why too.
    expect_log(
        &cluster,
        "alpha",
        "the clock of gamma is 86400 s ahead of this host's",
    );
    expect_log(
        &cluster,
        "beta",
        "the clock of gamma is 86520 s ahead of this host's",
    );
    expect_log(
        &cluster,
        "gamma",
        "the clock of alpha is 86400 s behind this host's",
    );
    // Both hosts dial: a session can also end because the other one
    // survives, so the status is looked at until it shows a refusal.
    let mut shown = serde_json::Value::Null;
    let refused = wait_until(TIMEOUT, || {
        shown = cluster
            .status("alpha")
            .map_or(serde_json::Value::Null, |s| s["peers"]["gamma"].clone());
        shown["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("86400 s ahead"))
    });
    assert!(refused, "alpha's status names the offset: {shown}");
    assert_eq!(shown["connected"], false, "{shown}");
    let offset = shown["clock_offset_ms"].as_i64().expect("an offset");
    assert!((86_399_000..86_401_000).contains(&offset), "{shown}");
    // gamma's writes reach nobody.
    fs::write(cluster.root("gamma").join("srv/www/from-the-future"), b"x").expect("write");

    // beta, two minutes behind, writes after seeing alpha's write: its
    // write wins everywhere (its clock absorbed alpha's timestamp).
    let on = |h: &str| cluster.root(h).join("srv/www/shared");
    fs::write(on("alpha"), b"alpha's").expect("write");
    assert!(
        wait_until(TIMEOUT, || fs::read(on("beta"))
            .is_ok_and(|d| d == b"alpha's")),
        "{}",
        cluster.logs()
    );
    fs::write(on("beta"), b"beta's, later").expect("write");
    assert!(
        wait_until(TIMEOUT, || fs::read(on("alpha"))
            .is_ok_and(|d| d == b"beta's, later")),
        "beta's later write wins on alpha:\n{}",
        cluster.logs()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(fs::read(on("beta")).expect("beta"), b"beta's, later");
    for h in ["alpha", "beta"] {
        assert!(
            !cluster.root(h).join("srv/www/from-the-future").exists(),
            "gamma's write reached {h}"
        );
    }
}

#[test]
fn a_host_that_lost_its_index_and_tree_gets_back_what_it_wrote() {
    let _one = support::serial();
    let names = ["alpha", "beta"];
    let mut cluster = started(
        &names,
        |h: &[&str]| format!("/srv/www -> ( {} )\n", h.join(" ")),
        |_| {},
    );
    // alpha writes; beta gets it.
    for i in 0..20 {
        fs::write(
            cluster.root("alpha").join(format!("srv/www/f{i}")),
            format!("file {i}"),
        )
        .expect("write");
    }
    assert!(
        wait_until(TIMEOUT, || (0..20).all(|i| cluster
            .root("beta")
            .join(format!("srv/www/f{i}"))
            .exists())),
        "{}",
        cluster.logs()
    );
    // alpha loses its tree and its index (its key stays: the peers file
    // pins it).
    cluster.stop("alpha");
    fs::remove_dir_all(cluster.root("alpha").join("srv/www")).expect("rm");
    fs::create_dir_all(cluster.root("alpha").join("srv/www")).expect("mkdir");
    fs::remove_file(cluster.state_dir("alpha").join("index.redb")).expect("rm index");
    cluster.start_host("alpha");
    assert!(
        wait_until(TIMEOUT, || (0..20).all(|i| fs::read(
            cluster.root("alpha").join(format!("srv/www/f{i}"))
        )
        .is_ok_and(|d| d == format!("file {i}").as_bytes()))),
        "alpha gets its own files back:\n{}",
        cluster.logs()
    );
    // And beta hears alpha's new writes, although alpha's new index counts
    // from 1 again.
    fs::write(cluster.root("alpha").join("srv/www/new"), b"after").expect("write");
    assert!(
        wait_until(TIMEOUT, || fs::read(
            cluster.root("beta").join("srv/www/new")
        )
        .is_ok_and(|d| d == b"after")),
        "{}",
        cluster.logs()
    );
    assert!(
        (0..20).all(|i| cluster.root("beta").join(format!("srv/www/f{i}")).exists()),
        "beta lost nothing:\n{}",
        cluster.logs()
    );
}
