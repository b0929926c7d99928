//! A cluster of `omirrd` hosts on this machine, for end-to-end tests.
//!
//! Every host is a real `omirrd -f -v` process (other log options with
//! [`Cluster::set_log_flags`]) with its own root, state
//! directory, key and port on 127.0.0.1, all under one temporary directory
//! laid out by `omirr_cluster` (the launcher `omirrd demo` uses too):
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
//! The trees are compared with [`wait_converged`] (and
//! `omirr_testkit::tree`'s digests); the set-ups the tests repeat are
//! methods: [`Cluster::start_connected`],
//! [`Cluster::create_dir_everywhere`], [`Cluster::wait_connected`],
//! [`Cluster::peer_counter`], [`Cluster::rewrite_config`] and
//! [`Cluster::reload`].

use super::{omirrd, omirrd_bin, stderr, stdout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use omirr_testkit::{tree, wait_until};
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a host gets to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Hosts running `omirrd` under one temporary directory. See the module
/// documentation.
pub struct Cluster {
    dir: tempfile::TempDir,
    /// The layout: every host's root, state directory, port and log.
    layout: omirr_cluster::Cluster,
    /// The hosts' processes, in the layout's order.
    processes: Vec<Process>,
    /// Given to every `omirrd` this cluster starts.
    extra_args: Vec<String>,
    /// The log options of every `omirrd` started: `-v` unless set.
    log_flags: Vec<String>,
}

/// A host's process, as the tests drive it.
#[derive(Default)]
struct Process {
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
        let keygen = |name: &str, state: &Path| -> Result<String, String> {
            let state = state.to_str().expect("test paths are UTF-8");
            let out = omirrd(&["keygen", "--state-dir", state]);
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
            Ok(fingerprint)
        };
        let layout = omirr_cluster::Cluster::create(dir.path(), names, keygen)
            .unwrap_or_else(|e| panic!("set up the cluster: {e}"));
        layout
            .write_peers("# name  address:port  fingerprint\n")
            .expect("write the peers file");
        layout
            .write_distfile(&distfile(names))
            .expect("write the Distfile");
        Cluster {
            dir,
            processes: names.iter().map(|_| Process::default()).collect(),
            layout,
            extra_args: Vec::new(),
            log_flags: vec!["-v".to_string()],
        }
    }

    /// Sets up `names`, creates `top` (`srv/www`) under every root, starts
    /// every host and waits (up to `timeout`) until each shows every other
    /// connected.
    pub fn start_connected(
        names: &[&str],
        distfile: impl Fn(&[&str]) -> String,
        top: &str,
        timeout: Duration,
    ) -> Cluster {
        let mut c = Cluster::new(names, distfile);
        c.create_dir_everywhere(top);
        c.start_all();
        c.wait_connected(names, timeout);
        c
    }

    /// Creates `rel` (`srv/www`) under every host's root, empty.
    pub fn create_dir_everywhere(&self, rel: &str) {
        for h in &self.layout.hosts {
            fs::create_dir_all(h.under_root(rel)).expect("mkdir");
        }
    }

    /// Starts every host that is not running.
    pub fn start_all(&mut self) {
        for i in 0..self.processes.len() {
            if self.processes[i].child.is_none() {
                let name = self.layout.hosts[i].name.clone();
                self.start_host(&name);
            }
        }
    }

    /// Starts (or restarts, after [`Cluster::stop`] or [`Cluster::kill`])
    /// host `name`: `omirrd -f -v` with its configuration, its log appended
    /// to. Panics if it is still running.
    pub fn start_host(&mut self, name: &str) {
        let i = self.index(name);
        let spec = &self.layout.hosts[i];
        let h = &mut self.processes[i];
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
            .open(&spec.log)
            .expect("open a host's log");
        writeln!(
            log,
            "==== cluster: start {} of {} ====",
            h.starts, spec.name
        )
        .expect("write log");
        let mut cmd = self
            .layout
            .command(&omirrd_bin(), spec)
            .expect("the command of a host");
        cmd.args(&self.log_flags).args(&self.extra_args);
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
        let mut child = self.host_mut(name).child.take()?;
        let statuses = omirr_cluster::stop(&mut [&mut child], STOP_GRACE, |_| {});
        Some(statuses[0].expect("wait for a killed omirrd"))
    }

    /// Kills host `name` with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self, name: &str) -> Option<ExitStatus> {
        let mut child = self.host_mut(name).child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Sends `signal` to host `name`'s process, which must be running.
    pub fn signal(&self, name: &str, signal: Signal) {
        let pid = self.pid(name).expect("running");
        kill(Pid::from_raw(pid as i32), signal).expect("signal a host");
    }

    /// SIGHUP to host `name`: it reloads its configuration and peers.
    pub fn reload(&self, name: &str) {
        self.signal(name, Signal::SIGHUP);
    }

    /// Replaces the Distfile with `text`, mode 0644 (as omirrd wants it);
    /// the hosts read it at their next start or [`Cluster::reload`].
    pub fn rewrite_config(&self, text: &str) {
        fs::write(self.config(), text).expect("write");
        fs::set_permissions(self.config(), fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    /// The process id of host `name`, if it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.processes[self.index(name)]
            .child
            .as_ref()
            .map(|c| c.id())
    }

    /// Whether host `name`'s process is running (started, not exited).
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
        self.layout.names()
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The Distfile.
    pub fn config(&self) -> &Path {
        &self.layout.config
    }

    /// The peers file.
    pub fn peers(&self) -> &Path {
        &self.layout.peers
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
        self.spec(name).root.clone()
    }

    /// Host `name`'s `--state-dir`.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.spec(name).state.clone()
    }

    /// Host `name`'s port on 127.0.0.1.
    pub fn port(&self, name: &str) -> u16 {
        self.spec(name).port
    }

    /// Host `name`'s fingerprint, as `omirrd keygen` printed it.
    pub fn fingerprint(&self, name: &str) -> &str {
        &self.spec(name).fingerprint
    }

    /// Host `name`'s log file.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.spec(name).log.clone()
    }

    /// Everything host `name` has logged, every run, so far.
    pub fn log(&self, name: &str) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.spec(name).log) {
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

    /// Waits until every host of `hosts` reports every other connected
    /// (and no other peer).
    pub fn wait_connected(&self, hosts: &[&str], timeout: Duration) {
        let ok = wait_until(timeout, || {
            hosts.iter().all(|h| {
                self.status(h).is_some_and(|s| {
                    s["peers"].as_object().is_some_and(|p| {
                        p.len() == hosts.len() - 1 && p.values().all(|v| v["connected"] == true)
                    })
                })
            })
        });
        assert!(ok, "not all peers connected:\n{}", self.logs());
    }

    /// `peer`'s counter `counter` in `host`'s status (see `PeerStatus`).
    pub fn peer_counter(&self, host: &str, peer: &str, counter: &str) -> u64 {
        self.status(host)
            .and_then(|s| s["peers"][peer][counter].as_u64())
            .unwrap_or_else(|| panic!("{host} shows no {counter} for {peer}"))
    }

    /// Every host's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for h in &self.layout.hosts {
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

    /// The position of host `name`, in the layout and in `processes`.
    fn index(&self, name: &str) -> usize {
        self.layout
            .hosts
            .iter()
            .position(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the cluster"))
    }

    /// Host `name`'s layout.
    fn spec(&self, name: &str) -> &omirr_cluster::Host {
        &self.layout.hosts[self.index(name)]
    }

    fn host_mut(&mut self, name: &str) -> &mut Process {
        let i = self.index(name);
        &mut self.processes[i]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut children: Vec<&mut Child> = self
            .processes
            .iter_mut()
            .filter_map(|h| h.child.as_mut())
            .collect();
        omirr_cluster::stop(&mut children, STOP_GRACE, |_| {});
        for h in &mut self.processes {
            h.child = None;
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

/// Waits until `root/rel_dir` has the same digest on every host of
/// `names`. On timeout, says which paths differ from the first host's.
pub fn wait_converged(
    cluster: &Cluster,
    names: &[&str],
    rel_dir: &str,
    timeout: Duration,
) -> Result<(), String> {
    let rel = rel_dir.trim_start_matches('/');
    let trees: Vec<PathBuf> = names.iter().map(|n| cluster.root(n).join(rel)).collect();
    tree::wait_same(names, &trees, timeout).map_err(|diff| {
        format!(
            "{rel_dir} did not converge on {} within {timeout:?}:\n{diff}",
            names.join(", ")
        )
    })
}
