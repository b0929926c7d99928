//! End to end: what an administrator sees of the mirror's health, with
//! real daemons (see `support::cluster`): one log line when a peer goes
//! down and one when it is back, repeated errors held back with a count,
//! a catch-up's progress and its end, and `omirrd status`'s exit codes and
//! metrics.

mod support;

use omirr_testkit::wait_until;
use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::cluster::{wait_converged, Cluster};

/// Long enough for a loaded CI machine; polls return as soon as they can.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `/srv/www` mirrored among all the hosts.
fn www(hosts: &[&str]) -> String {
    format!("www:\n/srv/www -> ( {} )\n", hosts.join(" "))
}

fn new_cluster(names: &[&str]) -> Cluster {
    let cluster = Cluster::new(names, www);
    cluster.create_dir_everywhere("srv/www");
    cluster
}

/// Starts alpha and beta and waits until they are connected to each other.
fn start_connected(cluster: &mut Cluster) {
    cluster.start_all();
    assert!(
        wait_until(TIMEOUT, || both_connected(cluster)),
        "{}",
        cluster.logs()
    );
}

/// Stops beta and waits until alpha's `status` exits 1 (degraded).
fn stop_beta_until_alpha_is_degraded(cluster: &mut Cluster) {
    cluster.stop("beta");
    assert!(
        wait_until(TIMEOUT, || status(cluster, "alpha", &[]).status.code()
            == Some(1)),
        "{}",
        cluster.log("alpha")
    );
}

/// The lines of `host`'s log that contain every one of `words`.
fn lines_with(cluster: &Cluster, host: &str, words: &[&str]) -> Vec<String> {
    lines_after(cluster, host, 0, words)
}

/// Those of the lines logged after byte `mark` of the log.
fn lines_after(cluster: &Cluster, host: &str, mark: usize, words: &[&str]) -> Vec<String> {
    lines_in(&cluster.log_path(host), mark, words)
}

/// The lines of the log at `path`, after byte `mark`, that contain every
/// one of `words`.
fn lines_in(path: &std::path::Path, mark: usize, words: &[&str]) -> Vec<String> {
    let bytes = fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(mark..).unwrap_or_default())
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

/// `omirrd status ARGS --state-dir` of `host`, within 10 s.
fn status(cluster: &Cluster, host: &str, args: &[&str]) -> Output {
    let mut child = Command::new(support::omirrd_bin())
        .arg("status")
        .args(args)
        .arg("--state-dir")
        .arg(cluster.state_dir(host))
        .env_remove("OMIRR_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run omirrd status");
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("status output")
}

fn both_connected(cluster: &Cluster) -> bool {
    ["alpha", "beta"].iter().all(|h| {
        let other = if *h == "alpha" { "beta" } else { "alpha" };
        cluster
            .status(h)
            .is_some_and(|s| s["peers"][other]["connected"] == true)
    })
}

#[test]
fn a_peer_going_down_and_coming_back_is_one_line_each() {
    let _one = support::serial();
    let mut cluster = new_cluster(&["alpha", "beta"]);
    start_connected(&mut cluster);
    // From here on: the lines about beta's stop and restart.
    let mark = cluster.log("alpha").len();
    let log_path = cluster.log_path("alpha");
    let since = |words: &[&str]| lines_in(&log_path, mark, words);
    cluster.stop("beta");
    // Several retries: the dialer's back-off starts at 0.1 s and doubles.
    assert!(
        wait_until(TIMEOUT, || since(&["cannot connect", "beta"]).len() >= 5),
        "alpha did not retry beta:\n{}",
        cluster.log("alpha")
    );
    cluster.start_host("beta");
    assert!(
        wait_until(TIMEOUT, || !since(&["peer beta is back"]).is_empty()),
        "{}",
        cluster.log("alpha")
    );
    // A moment for any line that should not be there.
    std::thread::sleep(Duration::from_millis(500));
    let log = cluster.log("alpha")[mark..].to_string();
    let down = since(&["peer beta is down"]);
    let back = since(&["peer beta is back"]);
    assert_eq!(down.len(), 1, "{log}");
    assert_eq!(back.len(), 1, "{log}");
    assert!(
        since(&["cannot reach beta"]).is_empty(),
        "failures within 10 minutes of the down line are held back:\n{log}"
    );
    assert!(down[0].contains("WARN"), "{}", down[0]);
    assert!(back[0].contains("(down for "), "{}", back[0]);
}

#[test]
fn a_pinned_key_mismatch_is_logged_once_a_window_with_a_count_on_both_hosts() {
    let _one = support::serial();
    let mut cluster = new_cluster(&["alpha", "beta"]);
    for h in ["alpha", "beta"] {
        cluster.set_env(h, "OMIRR_TEST_REPEAT_MS", "3000");
    }
    cluster.start_host("alpha");
    assert!(
        cluster.wait_for_log("alpha", "ready", TIMEOUT),
        "{}",
        cluster.logs()
    );
    // beta gets a new key and pins it in the peers file; alpha, not told
    // (no SIGHUP), still pins the old one: each refuses the other.
    let state = cluster.state_dir("beta");
    fs::remove_file(state.join("key.pem")).expect("remove beta's key");
    fs::remove_file(state.join("cert.pem")).expect("remove beta's certificate");
    let out = support::omirrd(&["keygen", "--state-dir", state.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let new = support::stdout(&out).trim().to_string();
    let peers = fs::read_to_string(cluster.peers()).expect("peers");
    let peers = peers.replace(cluster.fingerprint("beta"), &new);
    fs::write(cluster.peers(), peers).expect("peers");
    cluster.start_host("beta");
    // Several windows of 3 s, each with a few retries: the back-off
    // starts at 0.1 s and doubles.
    std::thread::sleep(Duration::from_secs(12));
    let (alpha, beta) = (cluster.log("alpha"), cluster.log("beta"));
    // alpha's attempts, at debug level (beta's fail after the handshake,
    // where alpha checks its certificate, and are not logged one by one).
    let attempts = lines_with(&cluster, "alpha", &["cannot connect", "beta"]).len();
    assert!(attempts >= 5, "alpha tried {attempts} times:\n{alpha}");
    // Each host logs each kind of failure (its own attempts, the other's
    // refused connections) at most once a window, plus the first line.
    // beta's attempts start with beta, at 0.1 s, 0.3 s, 0.7 s, ...: those
    // held back in its first window are counted in the next line, on both
    // hosts (alpha's attempts began earlier and may be too far apart).
    let most = 12 / 3 + 1;
    for (host, log, kind, counted) in [
        ("alpha", &alpha, "cannot reach beta", false),
        ("alpha", &alpha, "refused a connection", true),
        ("beta", &beta, "cannot reach alpha", true),
        ("beta", &beta, "refused a connection", false),
    ] {
        let lines = lines_with(&cluster, host, &["WARN", kind]);
        assert!(
            !lines.is_empty() && lines.len() <= most,
            "{host} logged {kind:?} {} times:\n{log}",
            lines.len()
        );
        assert!(
            !counted || lines.iter().any(|l| l.contains("(repeated ")),
            "{host}: no count of repeated {kind:?}:\n{log}"
        );
    }
    assert_eq!(
        lines_with(&cluster, "alpha", &["peer beta is down"]).len(),
        1,
        "{alpha}"
    );
    assert_eq!(
        lines_with(&cluster, "beta", &["peer alpha is down"]).len(),
        1,
        "{beta}"
    );
}

#[test]
fn a_catch_up_reports_its_progress_and_its_end() {
    let _one = support::serial();
    let mut cluster = new_cluster(&["alpha", "beta"]);
    cluster.set_env("beta", "OMIRR_TEST_PROGRESS_MS", "100");
    start_connected(&mut cluster);
    cluster.stop("beta");
    // 3000 small files written while beta is away, in 30 directories.
    let site = cluster.root("alpha").join("srv/www");
    for d in 0..30 {
        let dir = site.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..100 {
            fs::write(dir.join(format!("f{f:03}")), vec![b'x'; 2000 + f]).expect("write");
        }
    }
    // All of it recorded by alpha before beta comes back.
    assert!(
        wait_until(TIMEOUT, || cluster
            .status("alpha")
            .and_then(|s| s["local_changes"].as_u64())
            .is_some_and(|n| n >= 3030)),
        "{}",
        cluster.log("alpha")
    );
    // From here on: beta's second run.
    let mark = cluster.log("beta").len();
    let log_path = cluster.log_path("beta");
    let since = |words: &[&str]| lines_in(&log_path, mark, words);
    cluster.start_host("beta");
    assert!(
        wait_until(Duration::from_secs(120), || !since(&[
            "caught up with alpha"
        ])
        .is_empty()),
        "{}",
        cluster.log("beta")
    );
    let log = cluster.log("beta")[mark..].to_string();
    let done = since(&["caught up with alpha"]);
    assert_eq!(done.len(), 1, "{log}");
    // 3000 files of 2000 to 2099 bytes: 6,148,500 bytes, 5.9 MiB.
    assert!(
        done[0].contains("caught up with alpha: 3000 files, 5.9 MiB in "),
        "{}",
        done[0]
    );
    let progress = since(&["catching up with alpha: "]);
    assert!(!progress.is_empty(), "no progress line:\n{log}");
    assert!(
        progress
            .iter()
            .any(|l| l.contains(" of 3000 files, ") && l.contains("/s, ")),
        "{progress:#?}"
    );
    wait_converged(&cluster, &["alpha", "beta"], "srv/www", TIMEOUT).expect("converged");
}

#[test]
fn status_exits_0_when_healthy_1_when_degraded_2_when_no_daemon_answers() {
    let _one = support::serial();
    let mut cluster = new_cluster(&["alpha", "beta"]);
    let out = status(&cluster, "alpha", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", support::stderr(&out));
    assert!(support::stderr(&out).contains("no omirrd answers"));
    cluster.start_all();
    assert!(
        wait_until(TIMEOUT, || status(&cluster, "alpha", &[]).status.code()
            == Some(0)),
        "{}",
        cluster.logs()
    );
    let json = status(&cluster, "alpha", &["--json"]);
    assert_eq!(json.status.code(), Some(0));
    let s: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(s["schema"], 1, "{s}");
    assert_eq!(s["peers"]["beta"]["caught_up"], true, "{s}");
    stop_beta_until_alpha_is_degraded(&mut cluster);
    let table = support::stdout(&status(&cluster, "alpha", &[]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("beta") && l.contains("down for")),
        "{table}"
    );
    cluster.stop("alpha");
    assert_eq!(
        status(&cluster, "alpha", &["--json"]).status.code(),
        Some(2)
    );
}

#[test]
fn status_prometheus_is_valid_text_format() {
    let _one = support::serial();
    let mut cluster = new_cluster(&["alpha", "beta"]);
    start_connected(&mut cluster);
    stop_beta_until_alpha_is_degraded(&mut cluster);
    let out = status(&cluster, "alpha", &["--prometheus"]);
    assert_eq!(out.status.code(), Some(1), "{}", support::stderr(&out));
    let text = support::stdout(&out);
    let scrape = parse(&text);
    let value = |metric: &str, peer: Option<&str>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get("peer") == peer)
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("omirrd_up", None), Some(1.0), "{text}");
    assert_eq!(value("omirrd_healthy", None), Some(0.0), "{text}");
    assert_eq!(
        value("omirrd_peer_connected", Some("beta")),
        Some(0.0),
        "{text}"
    );
    assert!(
        value("omirrd_peer_frames_total", Some("beta")).is_some_and(|v| v > 0.0),
        "{text}"
    );
    cluster.stop("alpha");
    let out = status(&cluster, "alpha", &["--prometheus"]);
    assert_eq!(out.status.code(), Some(2));
    let scrape = parse(&support::stdout(&out));
    assert_eq!(scrape.samples.len(), 1);
    assert_eq!(scrape.samples[0].metric, "omirrd_up");
    assert_eq!(scrape.samples[0].value, prometheus_parse::Value::Gauge(0.0));
}

/// Parses `text` in the Prometheus text format; the parser skips what it
/// does not understand, so every sample line must have come out as a
/// typed, documented sample.
fn parse(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("parse");
    let sample_lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(scrape.samples.len(), sample_lines, "{text}");
    for s in &scrape.samples {
        assert!(
            matches!(
                s.value,
                prometheus_parse::Value::Gauge(_) | prometheus_parse::Value::Counter(_)
            ),
            "{} has no TYPE:\n{text}",
            s.metric
        );
        assert!(
            scrape.docs.contains_key(&s.metric),
            "{} has no HELP",
            s.metric
        );
    }
    scrape
}
