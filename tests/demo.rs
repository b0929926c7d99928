//! `omirrd demo`, run as a real process: it sets up three hosts, starts
//! them, prints how to try it, and stops them all on SIGTERM.
//!
//! Until the live daemon keeps running, the hosts exit right after their
//! start-up scan and the demo then exits by itself; these tests hold
//! either way.

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{omirrd, omirrd_bin, stderr, stdout};

/// How long the demo may take to set up and start the hosts.
const START: Duration = Duration::from_secs(30);
/// How long it may take to stop after SIGTERM.
const STOP: Duration = Duration::from_secs(10);

/// A running `omirrd demo`. Dropping it kills the demo and every host it
/// printed, even when the test fails.
struct Demo {
    child: Child,
    lines: Receiver<String>,
    /// What it printed on stdout so far.
    out: Vec<String>,
    err: Arc<Mutex<String>>,
    /// The demo directory (the `DIR` argument, or the printed one).
    dir: Option<PathBuf>,
    /// The hosts' pids, from the instructions.
    host_pids: Vec<i32>,
}

impl Demo {
    fn start(dir: Option<&Path>, tmpdir: &Path) -> Demo {
        let mut cmd = Command::new(omirrd_bin());
        cmd.arg("demo");
        if let Some(d) = dir {
            cmd.arg(d);
        }
        let mut child = cmd
            .env("TMPDIR", tmpdir)
            .env_remove("OMIRR_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start omirrd demo");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = err.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Demo {
            child,
            lines,
            out: Vec::new(),
            err,
            dir: dir.map(Path::to_path_buf),
            host_pids: Vec::new(),
        }
    }

    /// Reads stdout until a line contains `needle`, or panics after
    /// `timeout` or at end of output.
    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.note(&line);
                    let found = line.contains(needle);
                    self.out.push(line);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line with {needle:?} within {timeout:?}\n{}",
                        self.output()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "omirrd demo ended its output without {needle:?}\n{}",
                        self.output()
                    )
                }
            }
        }
    }

    /// Picks the demo directory and the hosts' pids out of the output.
    fn note(&mut self, line: &str) {
        if let Some((_, rest)) = line.split_once("everything is in ") {
            self.dir = Some(PathBuf::from(rest.trim()));
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for w in words.windows(2) {
            if w[0] == "pid" {
                self.host_pids.push(w[1].parse().expect("a pid"));
            }
        }
    }

    /// The rest of stdout, once the demo has exited.
    fn rest(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.out.push(line.clone());
            rest.push(line);
        }
        rest
    }

    fn output(&self) -> String {
        format!(
            "--- stdout:\n{}\n--- stderr:\n{}",
            self.out.join("\n"),
            self.err.lock().expect("lock")
        )
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal omirrd demo");
    }

    /// Waits for the demo to exit, up to `timeout`.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The host pids that still belong to a process of this demo: one whose
    /// command line names the demo directory (a pid may have been reused).
    fn live_hosts(&self) -> Vec<i32> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let dir = dir.to_string_lossy().into_owned();
        self.host_pids
            .iter()
            .copied()
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&dir))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            if self.wait(Duration::from_secs(3)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        for pid in self.live_hosts() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// The ports of the peers file.
fn ports(peers: &Path) -> Vec<u16> {
    fs::read_to_string(peers)
        .expect("peers")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let addr = l.split_whitespace().nth(1).expect("address");
            addr.rsplit_once(':')
                .expect("port")
                .1
                .parse()
                .expect("port")
        })
        .collect()
}

#[test]
fn demo_sets_up_three_hosts_and_stops_them_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let mut demo = Demo::start(Some(&dir), tmp.path());
    demo.wait_for("Ctrl-C", START);
    let text = demo.out.join("\n");
    assert_eq!(demo.host_pids.len(), 3, "three hosts:\n{text}");
    let dir = fs::canonicalize(&dir).expect("DIR exists");
    let tree = |h: &str| dir.join(h).join("root/srv/demo");
    assert!(
        text.contains(&format!(
            "echo hello > {}",
            tree("alpha").join("hello.txt").display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("cat {}", tree("beta").join("hello.txt").display())),
        "{text}"
    );
    assert!(text.contains("tail -f"), "{text}");

    assert_eq!(mode(&dir.join("peers")), 0o644);
    assert_eq!(mode(&dir.join("omirrd.conf")), 0o644);
    for host in ["alpha", "beta", "gamma"] {
        assert_eq!(mode(&dir.join(host).join("state/key.pem")), 0o600, "{host}");
        assert!(tree(host).is_dir(), "{host}");
        assert!(dir.join(host).join("omirrd.log").is_file(), "{host}");
    }
    let ports = ports(&dir.join("peers"));
    assert_eq!(ports.len(), 3);

    let p = |rel: &str| dir.join(rel).to_string_lossy().into_owned();
    let out = omirrd(&[
        "check",
        "--config",
        &p("omirrd.conf"),
        "--peers",
        &p("peers"),
        "--host",
        "alpha",
        "--root",
        &p("alpha/root"),
        "--state-dir",
        &p("alpha/state"),
    ]);
    let plan = stdout(&out);
    assert!(out.status.success(), "{plan}\n{}", stderr(&out));
    assert!(plan.contains("path       /srv/demo"), "{plan}");
    assert!(
        plan.contains(&format!("beta (127.0.0.1:{})", ports[1])),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("gamma (127.0.0.1:{})", ports[2])),
        "{plan}"
    );
    assert!(plan.contains("ok: 0 warning(s)"), "{plan}");

    // Stop it once the hosts are past their start-up (or have exited, as
    // a daemon without peer sessions does).
    let log = |h: &str| fs::read_to_string(dir.join(h).join("omirrd.log")).unwrap_or_default();
    let started = Instant::now();
    while !["alpha", "beta", "gamma"]
        .iter()
        .all(|h| log(h).contains("start-up scan done"))
    {
        assert!(
            started.elapsed() < START,
            "no start-up scan:\n{}",
            demo.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // It may have stopped already, if the hosts exited on their own.
    demo.signal(Signal::SIGTERM);
    let status = demo.wait(STOP);
    let rest = demo.rest().join("\n");
    let status = status.unwrap_or_else(|| panic!("still running {STOP:?} after SIGTERM"));
    assert!(status.success(), "{status}\n{}", demo.output());
    assert!(rest.contains("stopped"), "{}", demo.output());
    assert!(
        !demo.output().contains("killing it"),
        "the hosts stop on SIGTERM: {}",
        demo.output()
    );
    assert_eq!(demo.live_hosts(), Vec::<i32>::new(), "hosts left running");
    for port in ports {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .unwrap_or_else(|e| panic!("port {port} still taken: {e}"));
    }
}

#[test]
fn demo_without_a_directory_makes_one_in_tmpdir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut demo = Demo::start(None, tmp.path());
    demo.wait_for("Ctrl-C", START);
    let dir = demo.dir.clone().expect("the demo directory is printed");
    let tmp_real = fs::canonicalize(tmp.path()).expect("canonicalize");
    assert!(dir.starts_with(&tmp_real), "{} in TMPDIR", dir.display());
    assert!(dir.join("peers").is_file() && dir.join("omirrd.conf").is_file());
    demo.signal(Signal::SIGTERM);
    let status = demo.wait(STOP).expect("stops after SIGTERM");
    assert!(status.success(), "{status}\n{}", demo.output());
    demo.rest();
    assert!(
        dir.join("alpha/root/srv/demo").is_dir(),
        "the directory stays"
    );
    assert_eq!(demo.live_hosts(), Vec::<i32>::new(), "hosts left running");
}

#[test]
fn demo_refuses_a_directory_in_use() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(tmp.path().join("precious"), "data").expect("write");
    let out = omirrd(&["demo", &tmp.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&tmp.path().display().to_string()), "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        fs::read_dir(tmp.path()).expect("ls").count(),
        1,
        "nothing added"
    );
    let out = omirrd(&[
        "demo",
        "--root",
        "/srv",
        &tmp.path().join("d").to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--root"), "{}", stderr(&out));
}
