//! Stress tests: the acceptance cases of the session engine, with real
//! `omirrd` processes on this machine (see `support::cluster`).
//!
//! Every test here is `#[ignore]`d, so that `cargo test --workspace` skips
//! them; they run with `--ignored`, one at a time (each starts several
//! daemons, and its time bounds are for the whole machine):
//!
//! ```text
//! OMIRR_STRESS_SCALE=full cargo test --release -p omirrd --test stress -- --ignored --test-threads=1 --nocapture
//! cargo test -p omirrd --test stress -- --ignored --test-threads=1
//! ```
//!
//! `OMIRR_STRESS_SCALE` is `ci` (the default: sizes cut down so that the
//! whole suite runs in well under two minutes) or `full` (the sizes of the
//! issue). The time bounds the issue states (15 s, 2 s, 5 s, 2 s) are the
//! same at both scales; the deadlines for bulk convergence grow with the
//! scale. Every wait has a deadline, and every figure a test measures is
//! printed on stderr as a line starting `stress[SCALE] CASE:`, also when
//! the test then fails.
//!
//! Workloads: the `small` workload of `shared/bench/workloads.py` (found
//! next to the repository, at `../shared/bench/workloads.py`) where the
//! issue names it; if Python or the script is missing, an equivalent tree
//! is generated here instead (same layout, sizes and count, other bytes).

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use omirr_testkit::tree::{diff_summary, digest};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::cluster::{wait_converged, Cluster};
use support::peak_rss;

// ---------------------------------------------------------------------
// The scale knob
// ---------------------------------------------------------------------

/// The sizes and deadlines of one run; see the module documentation.
struct Scale {
    name: &'static str,
    /// Case 1: files on the one host, in `tree_dirs` directories, of about
    /// 100 bytes each; and the deadline for the three hosts to converge.
    tree_files: usize,
    tree_dirs: usize,
    tree_deadline: Duration,
    /// Case 2: `None` copies the `small` workload of workloads.py; `Some(n)`
    /// a tree of `n` files of the same layout and sizes.
    cp_files: Option<usize>,
    /// Case 3: the file the frozen peer sends, in MiB.
    frozen_file_mib: usize,
    /// Case 5: files written while a peer does not read, and the deadline
    /// for the other peer to converge: several times what the load takes
    /// without a stall (3,000 files take about 8 s in a debug build; 10,000
    /// about 3 s in a release build, `bench/run`'s initial sync), and less
    /// than a 60 s stall.
    load_files: usize,
    load_deadline: Duration,
    /// Case 5: the bound on the loaded host's peak RSS.
    load_rss_bound: u64,
    /// How long a test keeps watching after a time bound was missed, to
    /// report when (if at all) the thing happened.
    grace: Duration,
    /// Deadline for "everything converges eventually".
    eventually: Duration,
}

const MIB: u64 = 1 << 20;

fn scale() -> Scale {
    let knob = std::env::var("OMIRR_STRESS_SCALE").unwrap_or_else(|_| "ci".to_string());
    match knob.as_str() {
        "" | "ci" => Scale {
            name: "ci",
            tree_files: 10_000,
            tree_dirs: 100,
            tree_deadline: Duration::from_secs(120),
            cp_files: Some(3_000),
            frozen_file_mib: 64,
            load_files: 2_000,
            load_deadline: Duration::from_secs(25),
            load_rss_bound: 400 * MIB,
            grace: Duration::from_secs(2),
            eventually: Duration::from_secs(120),
        },
        "full" => Scale {
            name: "full",
            tree_files: 100_000,
            tree_dirs: 100,
            tree_deadline: Duration::from_secs(600),
            cp_files: None,
            frozen_file_mib: 300,
            load_files: 20_000,
            load_deadline: Duration::from_secs(60),
            load_rss_bound: 400 * MIB,
            grace: Duration::from_secs(30),
            eventually: Duration::from_secs(300),
        },
        other => panic!("OMIRR_STRESS_SCALE={other:?}: use ci (the default) or full"),
    }
}

/// One figure, on stderr, in a form that can be grepped for.
macro_rules! figure {
    ($scale:expr, $case:expr, $($arg:tt)*) => {
        eprintln!("stress[{}] {}: {}", $scale.name, $case, format!($($arg)*))
    };
}

// ---------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------

const HOSTS: [&str; 3] = ["alpha", "beta", "gamma"];
const WWW: &str = "srv/www";

/// `/srv/www` mirrored among `hosts`, editor swap files excluded.
fn www(hosts: &[&str]) -> String {
    format!(
        "HOSTS = ( {} )\n\nwww:\n/srv/www -> ${{HOSTS}}\n\texcept_pat ( \\\\.swp$ ) ;\n",
        hosts.join(" ")
    )
}

/// A cluster of `names` set up (not started), each with an empty
/// `srv/www`.
fn cluster(names: &[&str]) -> Cluster {
    let c = Cluster::new(names, www);
    c.create_dir_everywhere(WWW);
    c
}

/// `len` bytes that differ for every `seed` and do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Writes a file of `mib` MiB of noise at `path`, 1 MiB at a time.
fn write_big(path: &Path, mib: usize, seed: u64) {
    let mut f = fs::File::create(path).expect("create a large file");
    for i in 0..mib as u64 {
        f.write_all(&noise(MIB as usize, seed << 20 | i))
            .expect("write a large file");
    }
    f.sync_all().expect("fsync a large file");
}

/// `files` files of `size(i)` bytes of noise, spread over `dirs`
/// directories `dNN` below `dir`.
fn write_tree(dir: &Path, files: usize, dirs: usize, seed: u64, size: impl Fn(usize) -> usize) {
    for i in 0..files {
        let d = dir.join(format!("d{:03}", i % dirs));
        if i < dirs {
            fs::create_dir_all(&d).expect("mkdir");
        }
        fs::write(
            d.join(format!("f{i:06}")),
            noise(size(i), seed.wrapping_add(i as u64)),
        )
        .expect("write a tree's file");
    }
}

/// The `small` layout of workloads.py: `n` files of 1 to 16 KiB in
/// `dNN/eNN/fNNNNN.bin` (100 directories), made here.
fn write_small_layout(dir: &Path, n: usize) {
    let mut x: u64 = 42;
    for i in 0..n {
        let sub = dir.join(format!("d{:02}/e{:02}", i % 10, (i / 10) % 10));
        fs::create_dir_all(&sub).expect("mkdir");
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let len = 1024 + (x >> 33) as usize % (16384 - 1024 + 1);
        fs::write(sub.join(format!("f{i:05}.bin")), noise(len, i as u64)).expect("write");
    }
}

/// workloads.py, beside the repository (`../shared/bench/`).
fn workloads_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bench/workloads.py")
}

/// Runs a command with a deadline; `Err` says why it did not succeed.
fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let end = Instant::now() + deadline;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("{cmd:?} failed ({status}): {err}"));
            }
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} did not finish within {deadline:?}"));
            }
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    }
}

/// Makes the `small` workload in `dir` (absent): with workloads.py if it
/// and python3 are there, else with [`write_small_layout`]. Says which.
fn gen_small(dir: &Path) -> &'static str {
    let script = workloads_py();
    if script.is_file() {
        let made = run_with_deadline(
            Command::new("python3")
                .arg(&script)
                .args(["gen", "small"])
                .arg(dir),
            Duration::from_secs(300),
        );
        match made {
            Ok(()) => return "workloads.py gen small",
            Err(e) => eprintln!("workloads.py unusable ({e}); generating the tree here"),
        }
        let _ = fs::remove_dir_all(dir);
    } else {
        eprintln!(
            "{} not found; generating the small workload here",
            script.display()
        );
    }
    write_small_layout(dir, 10_000);
    "generated in Rust (workloads.py missing)"
}

/// Entries and bytes of regular files below `dir`; `None` if absent. Far
/// cheaper than a digest: what convergence is polled with.
fn census(dir: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(dir).ok()?;
    let (mut entries, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(list) = fs::read_dir(&d) else { continue };
        for e in list.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            entries += 1;
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                bytes += m.len();
            }
        }
    }
    Some((entries, bytes))
}

/// Waits until `rel` is the same on every host of `names`, polling the
/// [`census`] every 100 ms (less often for large trees: at most a quarter
/// of the time, at least once a second) and confirming with digests. Returns the time
/// from `since` to the poll that found them the same; `Err` (with the
/// differences) if that is not the case by `since + deadline`.
fn converge(
    cluster: &Cluster,
    names: &[&str],
    rel: &str,
    since: Instant,
    deadline: Duration,
) -> Result<Duration, String> {
    let trees: Vec<PathBuf> = names.iter().map(|n| cluster.root(n).join(rel)).collect();
    let end = since + deadline;
    loop {
        let at = since.elapsed();
        let looked = Instant::now();
        let counts: Vec<_> = trees.iter().map(|t| census(t)).collect();
        // Polling a large tree costs CPU the daemons need: look at most a
        // quarter of the time.
        let pause =
            (looked.elapsed() * 3).clamp(Duration::from_millis(100), Duration::from_secs(1));
        if counts.iter().all(|c| *c == counts[0]) {
            let digests: Vec<String> = trees.iter().map(|t| digest(t)).collect();
            if digests.iter().all(|d| *d == digests[0]) {
                return Ok(at);
            }
        }
        if Instant::now() >= end {
            return Err(format!(
                "{rel} did not converge on {} within {deadline:?} (entries, bytes: {counts:?}):\n{}",
                names.join(", "),
                diff_summary(names, &trees)
            ));
        }
        std::thread::sleep(pause);
    }
}

/// Waits until `path` holds `content`, for up to `wait` from `since`. Returns
/// how long it took, or `None` if it did not happen by then.
fn arrival(path: &Path, content: &[u8], since: Instant, wait: Duration) -> Option<Duration> {
    let end = since + wait;
    loop {
        if fs::read(path).is_ok_and(|c| c == content) {
            return Some(since.elapsed());
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Peak RSS of host `name`'s daemon, in MiB, for a report.
fn peak_mib(cluster: &Cluster, name: &str) -> u64 {
    cluster.pid(name).map_or(0, |p| peak_rss(p) >> 20)
}

/// Waits until `host` reports each of `peers` connected.
fn wait_connected(cluster: &Cluster, host: &str, peers: &[&str]) {
    let ok = omirr_testkit::wait_until(Duration::from_secs(30), || {
        cluster
            .status(host)
            .is_some_and(|s| peers.iter().all(|p| s["peers"][p]["connected"] == true))
    });
    assert!(
        ok,
        "{host} does not show {} connected within 30 s:\n{}",
        peers.join(", "),
        cluster.logs()
    );
}

/// Waits until every host of `hosts` shows every other connected.
fn wait_all_connected(cluster: &Cluster, hosts: &[&str]) {
    for h in hosts {
        let others: Vec<&str> = hosts.iter().copied().filter(|o| o != h).collect();
        wait_connected(cluster, h, &others);
    }
}

/// Whether `name` is one of the applier's temporary files.
fn is_temp(name: &std::ffi::OsStr) -> bool {
    let n = name.to_string_lossy();
    n.starts_with(".omirr.") && n.ends_with(".tmp")
}

/// Whether `dir` holds a non-empty file that `pick` accepts by name.
fn holds_content(dir: &Path, pick: impl Fn(&std::ffi::OsStr) -> bool) -> bool {
    fs::read_dir(dir).is_ok_and(|list| {
        list.flatten()
            .any(|e| pick(&e.file_name()) && e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0))
    })
}

/// Whether host `name` is receiving file content into `rel_dir` of its
/// tree: a non-empty temporary file there, or a non-empty file in its
/// stage directory (`STATE/stage/`, see omirrd(8)).
fn receiving(cluster: &Cluster, name: &str, rel_dir: &str) -> bool {
    holds_content(&cluster.root(name).join(rel_dir), is_temp)
        || holds_content(&cluster.state_dir(name).join("stage"), |_| true)
}

/// Sends SIGCONT to a process when dropped: a stopped daemon must resume
/// for the cluster to stop it cleanly, however the test ends.
struct Resume(Option<u32>);

impl Resume {
    fn now(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        }
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        self.now();
    }
}

/// A peer that authenticates, greets and pulls, then never reads its
/// socket again (it stays open, and the peer's pings go unanswered). It
/// writes a `Ping` now and then, as a peer whose reading side hung would,
/// so that it is not simply dropped for being silent. Dropping it closes
/// the connection.
struct DeafPeer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeafPeer {
    /// Connects to host `to` as host `as_host` (with `as_host`'s key,
    /// which the peers file pins), sends `Hello`, `Clock` and `Pull { after: 0 }`.
    fn connect(cluster: &Cluster, as_host: &str, to: &str) -> DeafPeer {
        use omirr_net::tls;
        use tokio::io::AsyncWriteExt;
        let identity = omirr_net::identity::load(&cluster.state_dir(as_host)).expect("the key");
        let text = fs::read_to_string(cluster.peers()).expect("peers file");
        let (peers, _) =
            omirr_config::peers::Peers::parse(&text, cluster.peers()).expect("parse peers");
        let pins = tls::SharedPins::new(tls::PinSet::from_peers(&peers));
        let config = tls::client_config(&identity, pins, to).expect("TLS client config");
        let (port, to, me) = (cluster.port(to), to.to_string(), as_host.to_string());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let setup = async {
                    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
                    // A small window: what the peer sends piles up on its
                    // side, not in this socket.
                    socket
                        .set_recv_buffer_size(16 << 10)
                        .map_err(|e| e.to_string())?;
                    let tcp = socket
                        .connect((std::net::Ipv4Addr::LOCALHOST, port).into())
                        .await
                        .map_err(|e| format!("connect: {e}"))?;
                    let connector = tokio_rustls::TlsConnector::from(config);
                    let mut s = connector
                        .connect(tls::server_name(&to), tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?;
                    match omirr_proto::read_message(&mut s).await {
                        Ok(Some(omirr_proto::Message::Hello(_))) => {}
                        other => return Err(format!("expected a Hello, got {other:?}")),
                    }
                    for m in [
                        omirr_proto::Message::Hello(omirr_proto::Hello::new(&me)),
                        omirr_proto::Message::Clock {
                            wall: std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_nanos() as u64),
                            index: 1,
                        },
                        omirr_proto::Message::Forgotten {
                            forgot_seq: 0,
                            forgot_below: omirr_proto::Timestamp(0),
                            cursor: 0,
                            last: 0,
                        },
                        omirr_proto::Message::Pull {
                            after: 0,
                            own_after: omirr_proto::Timestamp(0),
                        },
                    ] {
                        omirr_proto::write_message(&mut s, &m)
                            .await
                            .map_err(|e| format!("write: {e}"))?;
                    }
                    s.flush().await.map_err(|e| format!("flush: {e}"))?;
                    Ok(s)
                };
                let mut s = match tokio::time::timeout(Duration::from_secs(20), setup).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                    Err(_) => {
                        let _ = ready_tx.send(Err("no session within 20 s".to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let (mut nonce, mut writing) = (0u64, true);
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        _ = tokio::time::sleep(Duration::from_secs(10)) => {
                            if !writing {
                                continue;
                            }
                            nonce += 1;
                            let ping = omirr_proto::Message::Ping { nonce };
                            let sent = tokio::time::timeout(Duration::from_secs(1), async {
                                omirr_proto::write_message(&mut s, &ping).await.map_err(|e| e.to_string())?;
                                s.flush().await.map_err(|e| e.to_string())
                            })
                            .await;
                            // A write that did not go through may have left
                            // half a frame: write nothing more.
                            writing = matches!(sent, Ok(Ok(())));
                        }
                    }
                }
                drop(s);
            });
        });
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the deaf peer could not open its session: {e}"),
            Err(e) => panic!("the deaf peer did not report: {e}"),
        }
        DeafPeer {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for DeafPeer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------

/// Case 1: N small files on one host, two empty hosts, all started at
/// once; all three converge within the deadline.
#[test]
#[ignore = "stress: run with --ignored (see docs/benchmarks.md)"]
fn a_large_tree_on_one_host_reaches_two_empty_hosts() {
    let _one = support::serial();
    let sc = scale();
    let case = "large tree";
    let mut cluster = cluster(&HOSTS);
    let made = Instant::now();
    write_tree(
        &cluster.root("alpha").join(WWW).join("tree"),
        sc.tree_files,
        sc.tree_dirs,
        1,
        |i| 90 + i % 21,
    );
    figure!(
        sc,
        case,
        "{} files in {} directories written on alpha in {:.1} s",
        sc.tree_files,
        sc.tree_dirs,
        made.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    cluster.start_all();
    let result = converge(&cluster, &HOSTS, WWW, started, sc.tree_deadline);
    let elapsed = started.elapsed();
    for h in HOSTS {
        figure!(sc, case, "{h} peak RSS {} MiB", peak_mib(&cluster, h));
    }
    match &result {
        Ok(t) => figure!(
            sc,
            case,
            "converged {:.1} s after the start (bound {} s)",
            t.as_secs_f64(),
            sc.tree_deadline.as_secs()
        ),
        Err(_) => figure!(
            sc,
            case,
            "NOT converged after {:.1} s (bound {} s)",
            elapsed.as_secs_f64(),
            sc.tree_deadline.as_secs()
        ),
    }
    if let Err(e) = result {
        panic!("{case}: {e}");
    }
}

/// Case 2: two hosts running and connected; `cp -a` of a tree into one's
/// live root; the other has it all within 15 s of the copy's end.
#[test]
#[ignore = "stress: run with --ignored (see docs/benchmarks.md)"]
fn cp_a_into_a_live_host_converges_within_15s() {
    const BOUND: Duration = Duration::from_secs(15);
    let _one = support::serial();
    let sc = scale();
    let case = "cp -a";
    let two = ["alpha", "beta"];
    let mut cluster = cluster(&two);
    let staging = cluster.dir().join("staging/small");
    let how = match sc.cp_files {
        None => gen_small(&staging),
        Some(n) => {
            write_small_layout(&staging, n);
            "generated in Rust"
        }
    };
    let (files, bytes) = census(&staging).expect("the staged tree");
    figure!(
        sc,
        case,
        "tree of {files} entries, {} MiB ({how})",
        bytes >> 20
    );
    cluster.start_all();
    wait_all_connected(&cluster, &two);

    let copy_start = Instant::now();
    run_with_deadline(
        Command::new("cp")
            .arg("-a")
            .arg(&staging)
            .arg(cluster.root("alpha").join(WWW)),
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{case}: the copy failed: {e}"));
    let copied = Instant::now();
    figure!(
        sc,
        case,
        "cp -a took {:.2} s",
        copy_start.elapsed().as_secs_f64()
    );
    let result = converge(&cluster, &two, WWW, copied, BOUND + sc.grace);
    for h in two {
        figure!(sc, case, "{h} peak RSS {} MiB", peak_mib(&cluster, h));
    }
    match result {
        Ok(t) => {
            figure!(
                sc,
                case,
                "beta converged {:.2} s after the copy ended (bound {} s)",
                t.as_secs_f64(),
                BOUND.as_secs()
            );
            assert!(
                t <= BOUND,
                "{case}: beta converged {:.2} s after the copy ended; the bound is {} s",
                t.as_secs_f64(),
                BOUND.as_secs()
            );
        }
        Err(e) => {
            figure!(
                sc,
                case,
                "beta NOT converged {} s after the copy ended (bound {} s)",
                (BOUND + sc.grace).as_secs(),
                BOUND.as_secs()
            );
            panic!("{case}: {e}");
        }
    }
}

/// Case 3: three hosts; gamma sends a large file and is frozen
/// (SIGSTOP) while alpha receives it; a small file written on alpha
/// reaches beta within 2 s all the same. After SIGCONT all converge.
#[test]
#[ignore = "stress: run with --ignored (see docs/benchmarks.md)"]
fn a_frozen_peer_does_not_delay_the_others() {
    const BOUND: Duration = Duration::from_secs(2);
    let _one = support::serial();
    let sc = scale();
    let case = "frozen peer";
    let mut cluster = cluster(&HOSTS);
    cluster.start_all();
    wait_all_connected(&cluster, &HOSTS);
    let gamma_pid = cluster.pid("gamma").expect("gamma runs");
    let alpha_www = cluster.root("alpha").join(WWW);
    let received_from_gamma = |c: &Cluster| {
        c.status("alpha")
            .and_then(|s| s["peers"]["gamma"]["file_bytes_received"].as_u64())
            .unwrap_or(0)
    };

    // gamma writes the file; freeze it once alpha is receiving. Should the
    // transfer be over before the freeze, try again with another file,
    // twice as large.
    let mut resume = Resume(None);
    let mut frozen_on = None;
    let mut frozen_at = Instant::now();
    for attempt in 1..=3u64 {
        let name = format!("big{attempt}.bin");
        let mib = sc.frozen_file_mib << (attempt - 1);
        let before = received_from_gamma(&cluster);
        let written = Instant::now();
        write_big(&cluster.root("gamma").join(WWW).join(&name), mib, attempt);
        figure!(
            sc,
            case,
            "gamma wrote {name} ({mib} MiB) in {:.2} s",
            written.elapsed().as_secs_f64()
        );
        let end = Instant::now() + Duration::from_secs(60);
        let mut polls = 0u64;
        let started = loop {
            if receiving(&cluster, "alpha", WWW) {
                break true;
            }
            polls += 1;
            if polls % 20 == 0 && received_from_gamma(&cluster) > before {
                break true;
            }
            if Instant::now() >= end || alpha_www.join(&name).exists() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if started {
            kill(Pid::from_raw(gamma_pid as i32), Signal::SIGSTOP).expect("SIGSTOP gamma");
            frozen_at = Instant::now();
            resume = Resume(Some(gamma_pid));
            let got = fs::metadata(alpha_www.join(&name)).map_or(0, |m| m.len());
            if got < (mib as u64) << 20 {
                figure!(
                    sc,
                    case,
                    "gamma frozen (attempt {attempt}) {:.2} s after writing {name}; alpha's status counts {:.1} MiB of file content from gamma by then",
                    written.elapsed().as_secs_f64(),
                    received_from_gamma(&cluster).saturating_sub(before) as f64 / MIB as f64
                );
                frozen_on = Some(name);
                break;
            }
            resume.now();
        }
        eprintln!("attempt {attempt}: the transfer of {name} ended before gamma could be frozen");
        converge(&cluster, &HOSTS, WWW, Instant::now(), sc.eventually)
            .unwrap_or_else(|e| panic!("{case}: before another attempt: {e}"));
    }
    let Some(big) = frozen_on else {
        panic!(
            "{case}: alpha never was mid-transfer from gamma when looked at:\n{}",
            cluster.logs()
        );
    };

    // Small files on alpha while gamma is frozen mid-transfer: one at once,
    // one once gamma has been frozen for 3 s (a stall that sets in late,
    // a timeout for instance, is caught too).
    let mut probes = Vec::new();
    for (i, after) in [Duration::ZERO, Duration::from_secs(3)]
        .into_iter()
        .enumerate()
    {
        std::thread::sleep((frozen_at + after).saturating_duration_since(Instant::now()));
        let name = format!("small-while-frozen-{i}.txt");
        let note = format!("written on alpha {after:?} into gamma's freeze\n");
        let wrote = Instant::now();
        fs::write(alpha_www.join(&name), &note).expect("write");
        let took = arrival(
            &cluster.root("beta").join(WWW).join(&name),
            note.as_bytes(),
            wrote,
            BOUND + sc.grace,
        );
        let frozen = (wrote - frozen_at).as_secs_f64();
        match took {
            Some(t) => figure!(
                sc,
                case,
                "{name} alpha -> beta in {:.3} s, written {frozen:.1} s into gamma's freeze (bound {} s)",
                t.as_secs_f64(),
                BOUND.as_secs()
            ),
            None => figure!(
                sc,
                case,
                "{name} alpha -> beta NOT there after {} s, written {frozen:.1} s into gamma's freeze (bound {} s)",
                (BOUND + sc.grace).as_secs(),
                BOUND.as_secs()
            ),
        }
        probes.push((name, took));
    }
    let gamma_frozen_for = frozen_at.elapsed();
    resume.now();
    let thawed = Instant::now();
    let eventually = converge(&cluster, &HOSTS, WWW, thawed, sc.eventually);
    match &eventually {
        Ok(t) => figure!(
            sc,
            case,
            "all three converged {:.1} s after SIGCONT (gamma was frozen {:.1} s)",
            t.as_secs_f64(),
            gamma_frozen_for.as_secs_f64()
        ),
        Err(_) => figure!(
            sc,
            case,
            "NOT converged {} s after SIGCONT",
            sc.eventually.as_secs()
        ),
    }
    for h in HOSTS {
        figure!(sc, case, "{h} peak RSS {} MiB", peak_mib(&cluster, h));
    }
    let after_sigcont = match &eventually {
        Ok(t) => format!("all converged {:.1} s later", t.as_secs_f64()),
        Err(e) => e.clone(),
    };
    for (name, took) in probes {
        match took {
            Some(t) => assert!(
                t <= BOUND,
                "{case}: {name} took {:.3} s to reach beta while gamma was frozen sending {big}; the bound is {} s",
                t.as_secs_f64(),
                BOUND.as_secs()
            ),
            None => panic!(
                "{case}: {name} did not reach beta within {} s while gamma was frozen sending {big} (bound {} s); after SIGCONT: {after_sigcont}",
                (BOUND + sc.grace).as_secs(),
                BOUND.as_secs(),
            ),
        }
    }
    if let Err(e) = eventually {
        panic!("{case}: after SIGCONT: {e}");
    }
}

/// Case 4, the vim swap file: alpha deletes a directory in which beta
/// holds an excluded file, so beta cannot remove the directory; a later
/// change from alpha still reaches beta within 5 s, and the excluded file
/// is never deleted.
#[test]
#[ignore = "stress: run with --ignored (see docs/benchmarks.md)"]
fn an_unappliable_change_does_not_block_later_changes() {
    const BOUND: Duration = Duration::from_secs(5);
    let _one = support::serial();
    let sc = scale();
    let case = "unappliable change";
    let two = ["alpha", "beta"];
    let mut cluster = cluster(&two);
    let (a, b) = (
        cluster.root("alpha").join(WWW),
        cluster.root("beta").join(WWW),
    );
    fs::create_dir_all(a.join("d")).expect("mkdir");
    fs::write(a.join("d/notes.txt"), "shared notes\n").expect("write");
    cluster.start_all();
    wait_all_connected(&cluster, &two);
    wait_converged(&cluster, &two, WWW, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{case}: the first sync: {e}"));

    // The administrator's editor on beta; excluded, so beta's own.
    let swap = b.join("d/.notes.txt.swp");
    let swap_content = b"vim swap state, beta only\n";
    fs::write(&swap, swap_content).expect("write the swap file");
    std::thread::sleep(Duration::from_millis(300));
    fs::remove_dir_all(a.join("d")).expect("rm -rf d");
    std::thread::sleep(Duration::from_millis(200));
    let later = b"written after the delete\n";
    let wrote = Instant::now();
    fs::create_dir_all(a.join("e")).expect("mkdir");
    fs::write(a.join("e/later.txt"), later).expect("write");
    let took = arrival(&b.join("e/later.txt"), later, wrote, BOUND + sc.grace);
    let swap_kept = fs::read(&swap).is_ok_and(|c| c == swap_content);
    match took {
        Some(t) => figure!(
            sc,
            case,
            "e/later.txt alpha -> beta in {:.3} s (bound {} s)",
            t.as_secs_f64(),
            BOUND.as_secs()
        ),
        None => figure!(
            sc,
            case,
            "e/later.txt NOT on beta after {} s (bound {} s)",
            (BOUND + sc.grace).as_secs(),
            BOUND.as_secs()
        ),
    }
    figure!(
        sc,
        case,
        "on beta: d/.notes.txt.swp {}, d/notes.txt {}",
        if swap_kept { "kept" } else { "GONE or changed" },
        if b.join("d/notes.txt").exists() {
            "still there"
        } else {
            "deleted"
        }
    );
    match took {
        Some(t) => assert!(
            t <= BOUND,
            "{case}: e/later.txt took {:.3} s to reach beta; the bound is {} s",
            t.as_secs_f64(),
            BOUND.as_secs()
        ),
        None => panic!(
            "{case}: e/later.txt did not reach beta within {} s (bound {} s): the delete of d/, which beta cannot complete while it holds the excluded d/.notes.txt.swp, blocks what follows",
            (BOUND + sc.grace).as_secs(),
            BOUND.as_secs()
        ),
    }
    assert!(
        swap_kept,
        "{case}: beta's excluded d/.notes.txt.swp was deleted or changed"
    );
    // And it stays.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        fs::read(&swap).is_ok_and(|c| c == swap_content),
        "{case}: beta's excluded d/.notes.txt.swp was deleted or changed after the fact"
    );
}

/// Case 5: a peer that greets and pulls, then never reads its socket; the
/// host it talks to is loaded with many files and a large one. Its other
/// peer still converges, its memory stays bounded, and a change still
/// reaches the other peer within 2 s afterwards.
///
/// The RSS bound: 400 MiB. The deaf peer asks for no file content, so
/// all the host owes it is change records (about 200 bytes each, a few
/// MiB at most); the host's own working set moving these files to beta
/// (index, in-flight budget, scan) is well below 200 MiB. 400 MiB leaves
/// room for allocator slack on a 2-core machine while catching a host that
/// keeps a copy of file content, or an unbounded queue, per stalled peer.
#[test]
#[ignore = "stress: run with --ignored (see docs/benchmarks.md)"]
fn a_peer_that_stops_reading_does_not_stall_others_or_grow_memory() {
    const BOUND: Duration = Duration::from_secs(2);
    const BIG_MIB: usize = 64;
    let _one = support::serial();
    let sc = scale();
    let case = "deaf peer";
    // gamma is in the peers file and the Distfile but never started: the
    // deaf peer speaks as gamma, with gamma's key.
    let mut cluster = cluster(&HOSTS);
    cluster.start_host("alpha");
    cluster.start_host("beta");
    wait_connected(&cluster, "alpha", &["beta"]);
    wait_connected(&cluster, "beta", &["alpha"]);
    let deaf = DeafPeer::connect(&cluster, "gamma", "alpha");
    wait_connected(&cluster, "alpha", &["gamma"]);
    let alpha_pid = cluster.pid("alpha").expect("alpha runs");
    let rss_before = peak_rss(alpha_pid);

    let two = ["alpha", "beta"];
    let a = cluster.root("alpha").join(WWW);
    let load = Instant::now();
    write_tree(&a.join("load"), sc.load_files, 100, 7, |i| 2048 + i % 4096);
    write_big(&a.join("load/big.bin"), BIG_MIB, 7);
    figure!(
        sc,
        case,
        "alpha wrote {} files of 2-6 KiB and one of {BIG_MIB} MiB in {:.1} s",
        sc.load_files,
        load.elapsed().as_secs_f64()
    );
    let result = converge(&cluster, &two, WWW, load, sc.load_deadline);
    let rss_peak = peak_rss(alpha_pid);
    let gamma = cluster.status("alpha").map(|s| s["peers"]["gamma"].clone());
    match &result {
        Ok(t) => figure!(
            sc,
            case,
            "beta converged {:.1} s after the load began (deadline {} s)",
            t.as_secs_f64(),
            sc.load_deadline.as_secs()
        ),
        Err(_) => figure!(
            sc,
            case,
            "beta NOT converged {} s after the load began",
            sc.load_deadline.as_secs()
        ),
    }
    figure!(
        sc,
        case,
        "alpha peak RSS {} MiB (before the load {} MiB; bound {} MiB)",
        rss_peak >> 20,
        rss_before >> 20,
        sc.load_rss_bound >> 20
    );
    figure!(
        sc,
        case,
        "alpha's view of the deaf peer: {}",
        gamma.map_or("no status".to_string(), |g| g.to_string())
    );

    let after = b"written on alpha after the load\n";
    let wrote = Instant::now();
    fs::write(a.join("after-load.txt"), after).expect("write");
    let took = arrival(
        &cluster.root("beta").join(WWW).join("after-load.txt"),
        after,
        wrote,
        BOUND + sc.grace,
    );
    match took {
        Some(t) => figure!(
            sc,
            case,
            "a change alpha -> beta after the load in {:.3} s (bound {} s)",
            t.as_secs_f64(),
            BOUND.as_secs()
        ),
        None => figure!(
            sc,
            case,
            "a change alpha -> beta after the load NOT there after {} s (bound {} s)",
            (BOUND + sc.grace).as_secs(),
            BOUND.as_secs()
        ),
    }
    drop(deaf);

    if let Err(e) = result {
        panic!("{case}: with a peer that does not read: {e}");
    }
    assert!(
        rss_peak < sc.load_rss_bound,
        "{case}: alpha's peak RSS was {} MiB; the bound is {} MiB",
        rss_peak >> 20,
        sc.load_rss_bound >> 20
    );
    match took {
        Some(t) => assert!(
            t <= BOUND,
            "{case}: a change took {:.3} s to reach beta after the load; the bound is {} s",
            t.as_secs_f64(),
            BOUND.as_secs()
        ),
        None => panic!(
            "{case}: a change on alpha did not reach beta within {} s after the load (bound {} s)",
            (BOUND + sc.grace).as_secs(),
            BOUND.as_secs()
        ),
    }
}
