//! A cluster of `omirrd` hosts on this machine, for end-to-end tests.
//!
//! Every host is a real `omirrd -f -v` process (other log options with
//! [`Cluster::set_log_flags`]) with its own root, state
//! directory, key and port on 127.0.0.1, all under one temporary directory:
//!
//! ```text
//! TMP/omirrd.conf       the Distfile the test gives
//! TMP/peers             every host, 127.0.0.1:PORT, pinned
//! TMP/NAME/root/        the host's --root
//! TMP/NAME/state/       the host's --state-dir (key made by `omirrd keygen`)
//! TMP/NAME/omirrd.log   the host's stdout and stderr, every run appended
//! ```
//!
//! Everything goes through the binary, as an administrator would: keys come
//! from `omirrd keygen`, never from the library. Dropping a [`Cluster`]
//! stops every host (SIGTERM, then SIGKILL after [`STOP_GRACE`]); if the
//! test is failing it first prints every host's log to stderr, and with
//! `OMIRR_E2E_KEEP=1` it keeps the directory. `OMIRR_E2E_LOG`, if set, is
//! passed to the hosts as `OMIRR_LOG` (it is removed otherwise, so that the
//! logs hold what the tests look for).
//!
//! The trees are compared with [`digest`] and [`manifest`]; [`wait_until`]
//! and [`wait_converged`] poll for a condition with a deadline.

use super::{omirrd, omirrd_bin, stderr, stdout, write_file};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a host gets to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// How often [`wait_until`] looks.
pub const POLL: Duration = Duration::from_millis(20);

/// Hosts running `omirrd` under one temporary directory. See the module
/// documentation.
pub struct Cluster {
    dir: tempfile::TempDir,
    config: PathBuf,
    peers: PathBuf,
    hosts: Vec<Host>,
    /// Given to every `omirrd` this cluster starts.
    extra_args: Vec<String>,
    /// The log options of every `omirrd` started: `-v` unless set.
    log_flags: Vec<String>,
}

struct Host {
    name: String,
    port: u16,
    fingerprint: String,
    root: PathBuf,
    state: PathBuf,
    log: PathBuf,
    /// The running process, if started and not yet stopped or reaped.
    child: Option<Child>,
    /// How many times it was started.
    starts: u32,
    /// Environment variables of this host's `omirrd` only.
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Sets up `names` and starts every host. `distfile` gets the names and
    /// returns the Distfile's text.
    pub fn start(names: &[&str], distfile: impl Fn(&[&str]) -> String) -> Cluster {
        let mut c = Cluster::new(names, distfile);
        c.start_all();
        c
    }

    /// Sets up `names` as [`Cluster::start`] does, but starts nothing: the
    /// test can fill the roots first, then call [`Cluster::start_all`] or
    /// [`Cluster::start_host`]. Every root exists (empty); the Distfile's
    /// paths are not created.
    pub fn new(names: &[&str], distfile: impl Fn(&[&str]) -> String) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("omirr-e2e.")
            .tempdir()
            .expect("create the cluster's temporary directory");
        let ports = free_ports(names.len());
        let mut hosts = Vec::new();
        for (name, port) in names.iter().zip(ports) {
            assert!(
                !hosts.iter().any(|h: &Host| h.name == *name),
                "host {name} named twice"
            );
            let base = dir.path().join(name);
            let state = base.join("state");
            let out = omirrd(&["keygen", "--state-dir", path_str(&state)]);
            assert!(
                out.status.success(),
                "omirrd keygen for {name} failed: {}",
                stderr(&out)
            );
            let fingerprint = stdout(&out).trim().to_string();
            assert!(
                fingerprint.starts_with("blake3:"),
                "omirrd keygen printed {fingerprint:?}"
            );
            let root = base.join("root");
            fs::create_dir_all(&root).expect("create a host's root");
            hosts.push(Host {
                name: name.to_string(),
                port,
                fingerprint,
                root,
                state,
                log: base.join("omirrd.log"),
                child: None,
                starts: 0,
                env: Vec::new(),
            });
        }
        let mut peers_text = String::from("# name  address:port  fingerprint\n");
        for h in &hosts {
            let _ = writeln!(
                peers_text,
                "{} 127.0.0.1:{} {}",
                h.name, h.port, h.fingerprint
            );
        }
        let config = dir.path().join("omirrd.conf");
        let peers = dir.path().join("peers");
        write_file(&peers, &peers_text, 0o644);
        write_file(&config, &distfile(names), 0o644);
        Cluster {
            dir,
            config,
            peers,
            hosts,
            extra_args: Vec::new(),
            log_flags: vec!["-v".to_string()],
        }
    }

    /// Starts every host that is not running.
    pub fn start_all(&mut self) {
        for i in 0..self.hosts.len() {
            if self.hosts[i].child.is_none() {
                let name = self.hosts[i].name.clone();
                self.start_host(&name);
            }
        }
    }

    /// Starts (or restarts, after [`Cluster::stop`] or [`Cluster::kill`])
    /// host `name`: `omirrd -f -v` with its configuration, its log appended
    /// to. Panics if it is still running.
    pub fn start_host(&mut self, name: &str) {
        let (config, peers) = (self.config.clone(), self.peers.clone());
        let extra = self.extra_args.clone();
        let log_flags = self.log_flags.clone();
        let h = self.host_mut(name);
        if let Some(child) = &mut h.child {
            match child.try_wait() {
                Ok(Some(_)) => h.child = None,
                _ => panic!("start_host({name}): it is still running; stop it first"),
            }
        }
        h.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&h.log)
            .expect("open a host's log");
        writeln!(log, "==== cluster: start {} of {} ====", h.starts, h.name).expect("write log");
        let mut cmd = Command::new(omirrd_bin());
        cmd.arg("-f")
            .args(&log_flags)
            .args(["--host", &h.name])
            .arg("--config")
            .arg(&config)
            .arg("--peers")
            .arg(&peers)
            .arg("--root")
            .arg(&h.root)
            .arg("--state-dir")
            .arg(&h.state)
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        match std::env::var_os("OMIRR_E2E_LOG") {
            Some(filter) => cmd.env("OMIRR_LOG", filter),
            None => cmd.env_remove("OMIRR_LOG"),
        };
        cmd.envs(h.env.iter().map(|(k, v)| (k, v)));
        h.child = Some(cmd.spawn().expect("start omirrd"));
    }

    /// Stops host `name`: SIGTERM, then SIGKILL if it has not exited after
    /// [`STOP_GRACE`]. Returns how it exited (`None` if it was not started
    /// or already stopped).
    pub fn stop(&mut self, name: &str) -> Option<ExitStatus> {
        let h = self.host_mut(name);
        let mut child = h.child.take()?;
        terminate(&mut child);
        Some(reap(&mut child, Instant::now() + STOP_GRACE))
    }

    /// Kills host `name` with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self, name: &str) -> Option<ExitStatus> {
        let mut child = self.host_mut(name).child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Whether host `name`'s process is running (started, not exited).
    /// The process id of host `name`, if it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.host(name).child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self, name: &str) -> bool {
        match &mut self.host_mut(name).child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How host `name` exited, if it was started and has exited on its
    /// own; `None` while it runs.
    pub fn exit_status(&mut self, name: &str) -> Option<ExitStatus> {
        self.host_mut(name).child.as_mut()?.try_wait().ok()?
    }

    /// The hosts' names, in the order given.
    pub fn names(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.name.as_str()).collect()
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The Distfile.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The peers file.
    pub fn peers(&self) -> &Path {
        &self.peers
    }

    /// Sets an environment variable for host `name`'s `omirrd`, from its
    /// next start on (e.g. `OMIRR_TEST_CLOCK_SKEW`).
    pub fn set_env(&mut self, name: &str, key: &str, value: &str) {
        let h = self.host_mut(name);
        h.env.retain(|(k, _)| k != key);
        h.env.push((key.to_string(), value.to_string()));
    }

    /// Replaces `-v` with `flags` (none: the default level) on the command
    /// line of every host started from now on.
    pub fn set_log_flags(&mut self, flags: &[&str]) {
        self.log_flags = flags.iter().map(|f| f.to_string()).collect();
    }

    /// Adds `args` to the command line of every host started from now on.
    pub fn add_args(&mut self, args: &[&str]) {
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
    }

    /// Host `name`'s `--root`.
    pub fn root(&self, name: &str) -> PathBuf {
        self.host(name).root.clone()
    }

    /// Host `name`'s `--state-dir`.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.host(name).state.clone()
    }

    /// Host `name`'s port on 127.0.0.1.
    pub fn port(&self, name: &str) -> u16 {
        self.host(name).port
    }

    /// Host `name`'s fingerprint, as `omirrd keygen` printed it.
    pub fn fingerprint(&self, name: &str) -> &str {
        &self.host(name).fingerprint
    }

    /// Host `name`'s log file.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.host(name).log.clone()
    }

    /// Everything host `name` has logged, every run, so far.
    pub fn log(&self, name: &str) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.host(name).log) {
            let _ = f.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until host `name`'s log contains `needle`.
    pub fn wait_for_log(&self, name: &str, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log(name).contains(needle))
    }

    /// What `omirrd status --json` says for `host`; `None` if it does not
    /// answer within 10 s (never ask a stopped host).
    pub fn status(&self, host: &str) -> Option<serde_json::Value> {
        let mut child = Command::new(omirrd_bin())
            .args(["status", "--json", "--state-dir"])
            .arg(self.state_dir(host))
            .env_remove("OMIRR_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                // 0 healthy, 1 degraded: both answered.
                Ok(Some(s)) if matches!(s.code(), Some(0 | 1)) => {
                    let mut out = Vec::new();
                    child.stdout.take()?.read_to_end(&mut out).ok()?;
                    return serde_json::from_slice(&out).ok();
                }
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// Every host's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for h in &self.hosts {
            let _ = writeln!(
                s,
                "===== log of {} ({}) =====\n{}",
                h.name,
                h.log.display(),
                self.log(&h.name)
            );
        }
        s
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the cluster"))
    }

    fn host_mut(&mut self, name: &str) -> &mut Host {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the cluster"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut children: Vec<Child> = self
            .hosts
            .iter_mut()
            .filter_map(|h| h.child.take())
            .collect();
        for child in &mut children {
            terminate(child);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for child in &mut children {
            reap(child, deadline);
        }
        if std::thread::panicking() {
            eprint!("{}", self.logs());
            if std::env::var_os("OMIRR_E2E_KEEP").is_some() {
                self.dir.disable_cleanup(true);
                eprintln!("cluster kept in {}", self.dir.path().display());
            }
        }
    }
}

/// Sends SIGTERM to `child`, unless it has been reaped already.
fn terminate(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // Not yet reaped, so the pid is still this child's.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    }
}

/// Waits for `child` until `deadline`, then kills it.
fn reap(child: &mut Child, deadline: Instant) -> ExitStatus {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            _ => {
                let _ = child.kill();
                return child.wait().expect("wait for a killed omirrd");
            }
        }
    }
}

/// `n` distinct ports free on 127.0.0.1 now (not reserved).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Calls `cond` every [`POLL`] until it is true (returns true) or
/// `timeout` has passed (returns false). `cond` runs at least once, and
/// once more at the deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// What is in a tree: for every path below `dir` (relative, as bytes), its
/// type, full `st_mode` in octal, and symlink target or content hash.
/// `dir` itself is not described. `None` if `dir` does not exist.
///
/// Symbolic links are not followed. An entry that cannot be read (it
/// changed during the walk) is described by the error, so that it differs
/// from every real state and a poll tries again.
pub fn manifest(dir: &Path) -> Option<BTreeMap<Vec<u8>, String>> {
    fs::symlink_metadata(dir).ok()?;
    let mut out = BTreeMap::new();
    walk(dir, Vec::new(), &mut out);
    Some(out)
}

fn walk(dir: &Path, rel: Vec<u8>, out: &mut BTreeMap<Vec<u8>, String>) {
    let mut names: Vec<Vec<u8>> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().as_bytes().to_vec())
            .collect(),
        Err(e) => {
            out.insert(rel, format!("unreadable directory: {e}"));
            return;
        }
    };
    names.sort();
    for name in names {
        let path = dir.join(std::ffi::OsStr::from_bytes(&name));
        let mut r = rel.clone();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(&name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                out.insert(r, format!("unreadable: {e}"));
                continue;
            }
        };
        let mode = meta.mode();
        let ft = meta.file_type();
        let desc = if ft.is_dir() {
            format!("dir {mode:o}")
        } else if ft.is_symlink() {
            match fs::read_link(&path) {
                Ok(t) => format!(
                    "symlink {mode:o} -> {}",
                    t.as_os_str().as_bytes().escape_ascii()
                ),
                Err(e) => format!("unreadable symlink: {e}"),
            }
        } else if ft.is_file() {
            match hash_file(&path) {
                Ok((len, hash)) => format!("file {mode:o} {len} bytes blake3:{hash}"),
                Err(e) => format!("unreadable file: {e}"),
            }
        } else {
            format!("other {mode:o}")
        };
        out.insert(r.clone(), desc);
        if ft.is_dir() {
            walk(&path, r, out);
        }
    }
}

fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut hasher = blake3::Hasher::new();
    let len = io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok((len, hasher.finalize().to_hex()[..16].to_string()))
}

/// A digest of the tree below `dir`: paths (as bytes), types, modes,
/// symlink targets and contents, as `/work/shared/bench/workloads.py
/// digest` takes into account (with BLAKE3 instead of SHA-256, and its own
/// order, so the values differ from the script's). `"absent"` if `dir`
/// does not exist; an empty directory has the digest of no entries.
pub fn digest(dir: &Path) -> String {
    match manifest(dir) {
        None => "absent".to_string(),
        Some(m) => digest_of(&m),
    }
}

fn digest_of(m: &BTreeMap<Vec<u8>, String>) -> String {
    let mut h = blake3::Hasher::new();
    for (path, desc) in m {
        h.update(path);
        h.update(b"\0");
        h.update(desc.as_bytes());
        h.update(b"\0");
    }
    h.finalize().to_hex().to_string()
}

/// Waits until `root/rel_dir` has the same [`digest`] on every host of
/// `names`. On timeout, says which paths differ from the first host's.
pub fn wait_converged(
    cluster: &Cluster,
    names: &[&str],
    rel_dir: &str,
    timeout: Duration,
) -> Result<(), String> {
    let rel = rel_dir.trim_start_matches('/');
    let trees: Vec<PathBuf> = names.iter().map(|n| cluster.root(n).join(rel)).collect();
    let same = || {
        let mut digests = trees.iter().map(|t| digest(t));
        let first = digests.next();
        digests.all(|d| Some(d) == first)
    };
    if wait_until(timeout, same) {
        return Ok(());
    }
    Err(format!(
        "{rel_dir} did not converge on {} within {timeout:?}:\n{}",
        names.join(", "),
        diff_summary(names, &trees)
    ))
}

/// Which paths of each tree differ from the first one's.
pub fn diff_summary(names: &[&str], trees: &[PathBuf]) -> String {
    const MAX: usize = 20;
    let manifests: Vec<_> = trees.iter().map(|t| manifest(t)).collect();
    let mut s = String::new();
    let (first, first_m) = (names[0], &manifests[0]);
    for (name, m) in names.iter().zip(&manifests).skip(1) {
        let (a, b) = match (first_m, m) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => (a, b),
            (None, None) => continue,
            (None, Some(_)) => {
                let _ = writeln!(s, "  {first} has no such directory; {name} has it");
                continue;
            }
            (Some(_), None) => {
                let _ = writeln!(s, "  {name} has no such directory; {first} has it");
                continue;
            }
        };
        let _ = writeln!(s, "  {first} vs {name}:");
        let paths: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
        let mut shown = 0;
        let mut differ = 0;
        for p in paths {
            let line = match (a.get(p), b.get(p)) {
                (Some(x), Some(y)) if x == y => continue,
                (Some(x), Some(y)) => format!("{first}: {x}; {name}: {y}"),
                (Some(x), None) => format!("only on {first}: {x}"),
                (None, Some(y)) => format!("only on {name}: {y}"),
                (None, None) => continue,
            };
            differ += 1;
            if shown < MAX {
                shown += 1;
                let _ = writeln!(s, "    {}: {line}", p.escape_ascii());
            }
        }
        if differ > shown {
            let _ = writeln!(s, "    ... and {} more", differ - shown);
        }
    }
    s
}
