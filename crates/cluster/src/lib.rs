//! Several `omirrd` hosts on this machine, each on 127.0.0.1 with its own
//! root, state directory, key and port: the one local-cluster launcher
//! that `omirrd demo` and the end-to-end tests (`tests/support/cluster.rs`)
//! share.
//!
//! A [`Cluster`] is a directory laid out like this:
//!
//! ```text
//! DIR/omirrd.conf       the Distfile (its text is the caller's)
//! DIR/peers             every host, 127.0.0.1:PORT and its fingerprint
//! DIR/NAME/root/        the host's --root
//! DIR/NAME/state/       the host's --state-dir (its key, its index)
//! DIR/NAME/omirrd.log   where the host's omirrd writes stdout and stderr
//! ```
//!
//! [`Cluster::create`] makes the roots, the keys and picks the ports;
//! [`Cluster::write_peers`] and [`Cluster::write_distfile`] write the two
//! configuration files; [`Cluster::command`] is the command line that runs
//! one host in the foreground, logging to its log file; [`stop`] stops
//! running hosts (SIGTERM, SIGKILL after a grace period).
//!
//! What it does not own: what the Distfile says, how keys are made (the
//! demo makes them with the library, the tests with `omirrd keygen`, as an
//! administrator would: the caller passes the maker), the environment and
//! extra options of a host's process, and anything that looks at the trees
//! (comparing them and waiting for them is `omirr-testkit`'s, for tests).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The mode of the Distfile and the peers file: omirrd refuses files that
/// group or others can write.
pub const CONF_MODE: u32 = 0o644;

/// How often [`stop`] looks whether the hosts have exited.
const POLL: Duration = Duration::from_millis(20);

/// What can go wrong setting up a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The list of hosts names this one twice.
    #[error("host '{0}' is named twice")]
    NamedTwice(String),
    /// No port could be bound on 127.0.0.1.
    #[error("cannot find a free TCP port on 127.0.0.1")]
    NoFreePort(#[source] io::Error),
    /// The caller's key maker failed for `host`.
    #[error("cannot create the identity of host {host}")]
    Key {
        /// The host whose key it is.
        host: String,
        /// Why, as the key maker says.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file or directory of the layout could not be made or written.
    #[error("cannot {what} {}", path.display())]
    Io {
        /// What was being done, for whom (`create alpha's root`).
        what: String,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A local cluster's directory, set up. See the crate documentation.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's directory, as given to [`Cluster::create`].
    pub dir: PathBuf,
    /// The Distfile, `DIR/omirrd.conf`.
    pub config: PathBuf,
    /// The peers file, `DIR/peers`.
    pub peers: PathBuf,
    /// The hosts, in the order given.
    pub hosts: Vec<Host>,
}

/// One host of a [`Cluster`].
#[derive(Debug)]
pub struct Host {
    /// Its name, as the peers file and the Distfile give it.
    pub name: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its key's fingerprint, as the peers file pins it
    /// (`blake3:...`).
    pub fingerprint: String,
    /// Its `--root`.
    pub root: PathBuf,
    /// Its `--state-dir`.
    pub state: PathBuf,
    /// Where its omirrd logs.
    pub log: PathBuf,
}

impl Host {
    /// Where a path of the Distfile (`/srv/www`) is on this host: under
    /// its root.
    pub fn under_root(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl Cluster {
    /// Sets up `names` in `dir` (which should be new or empty): for each
    /// host a free port on 127.0.0.1, a key made by `make_key(name,
    /// state_dir)` (which creates the state directory and returns the
    /// key's fingerprint) and an empty root. Writes no configuration and
    /// starts nothing.
    ///
    /// The ports are free when this returns, not reserved: another program
    /// may take one before the hosts start (they then fail to listen, and
    /// say so).
    pub fn create<E>(
        dir: &Path,
        names: &[&str],
        mut make_key: impl FnMut(&str, &Path) -> Result<String, E>,
    ) -> Result<Cluster, Error>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        check_names(names)?;
        let ports = free_ports(names.len()).map_err(Error::NoFreePort)?;
        let mut hosts = Vec::with_capacity(names.len());
        for (name, port) in names.iter().zip(ports) {
            let base = dir.join(name);
            let state = base.join("state");
            let fingerprint = make_key(name, &state).map_err(|e| Error::Key {
                host: name.to_string(),
                source: e.into(),
            })?;
            let root = base.join("root");
            fs::create_dir_all(&root).map_err(|source| Error::Io {
                what: format!("create {name}'s root"),
                path: root.clone(),
                source,
            })?;
            hosts.push(Host {
                name: name.to_string(),
                port,
                fingerprint,
                root,
                state,
                log: base.join("omirrd.log"),
            });
        }
        Ok(Cluster {
            config: dir.join("omirrd.conf"),
            peers: dir.join("peers"),
            dir: dir.to_path_buf(),
            hosts,
        })
    }

    /// Host `name`, if the cluster has it.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The hosts' names, in the order given.
    pub fn names(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.name.as_str()).collect()
    }

    /// The peers file: `header` (comment lines, each ending in a newline),
    /// then one line per host.
    pub fn peers_text(&self, header: &str) -> String {
        let mut s = header.to_string();
        for h in &self.hosts {
            let _ = writeln!(s, "{} 127.0.0.1:{} {}", h.name, h.port, h.fingerprint);
        }
        s
    }

    /// Writes the peers file ([`Cluster::peers_text`]), a new file, mode
    /// [`CONF_MODE`].
    pub fn write_peers(&self, header: &str) -> Result<(), Error> {
        write_conf(&self.peers, &self.peers_text(header))
    }

    /// Writes `text` as the Distfile, a new file, mode [`CONF_MODE`].
    pub fn write_distfile(&self, text: &str) -> Result<(), Error> {
        write_conf(&self.config, text)
    }

    /// The command that runs `host` with program `exe` in the foreground
    /// (`-f`, its configuration, peers file, name, root and state
    /// directory), its stdin empty and its stdout and stderr appended to
    /// its log. The caller adds options, environment, and spawns it.
    pub fn command(&self, exe: &Path, host: &Host) -> Result<Command, Error> {
        let open_log = || -> io::Result<(fs::File, fs::File)> {
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&host.log)?;
            let log2 = log.try_clone()?;
            Ok((log, log2))
        };
        let (log, log2) = open_log().map_err(|source| Error::Io {
            what: format!("open {}'s log", host.name),
            path: host.log.clone(),
            source,
        })?;
        let mut cmd = Command::new(exe);
        cmd.arg("-f")
            .arg("--config")
            .arg(&self.config)
            .arg("--peers")
            .arg(&self.peers)
            .args(["--host", &host.name])
            .arg("--root")
            .arg(&host.root)
            .arg("--state-dir")
            .arg(&host.state)
            .stdin(Stdio::null())
            .stdout(log2)
            .stderr(log);
        Ok(cmd)
    }
}

/// Refuses a list of hosts that names one twice.
pub fn check_names(names: &[&str]) -> Result<(), Error> {
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(Error::NamedTwice(name.to_string()));
        }
    }
    Ok(())
}

/// `n` distinct ports that are free on 127.0.0.1 right now: bound all at
/// once, so the kernel gives different ones, and released.
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Writes a new configuration file with [`CONF_MODE`], whatever the umask.
pub fn write_conf(path: &Path, text: &str) -> Result<(), Error> {
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(CONF_MODE)
            .open(path)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(fs::Permissions::from_mode(CONF_MODE))?;
        f.sync_all()
    };
    write().map_err(|source| Error::Io {
        what: "write".to_string(),
        path: path.to_path_buf(),
        source,
    })
}

/// Stops `children`: SIGTERM to each one not yet reaped, then waits until
/// every one has exited or `grace` has passed. Each one still running then
/// is killed (SIGKILL), after `before_kill(i)` is called with its index
/// (to say so). Returns how each exited (`None` if it could not be
/// waited for).
pub fn stop(
    children: &mut [&mut Child],
    grace: Duration,
    mut before_kill: impl FnMut(usize),
) -> Vec<Option<ExitStatus>> {
    for child in children.iter_mut() {
        terminate(child);
    }
    let deadline = Instant::now() + grace;
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    loop {
        for (child, status) in children.iter_mut().zip(&mut statuses) {
            if status.is_none() {
                if let Ok(Some(s)) = child.try_wait() {
                    *status = Some(s);
                }
            }
        }
        if statuses.iter().all(Option::is_some) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
    for (i, (child, status)) in children.iter_mut().zip(&mut statuses).enumerate() {
        if status.is_none() {
            before_kill(i);
            let _ = child.kill();
            *status = child.wait().ok();
        }
    }
    statuses
}

/// Sends SIGTERM to `child`, unless it has been reaped already.
pub fn terminate(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        if let Ok(pid) = i32::try_from(child.id()) {
            // Not yet reaped, so the pid is still this child's.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).expect("metadata").mode() & 0o7777
    }

    fn fake_key(name: &str, state: &Path) -> io::Result<String> {
        fs::create_dir_all(state)?;
        Ok(format!("blake3:{name}"))
    }

    #[test]
    fn create_lays_out_hosts_with_distinct_ports_and_writes_both_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cluster = Cluster::create(tmp.path(), &["a", "b", "c"], fake_key).expect("create");
        assert_eq!(cluster.names(), ["a", "b", "c"]);
        let mut ports: Vec<u16> = cluster.hosts.iter().map(|h| h.port).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 3, "distinct ports: {cluster:?}");
        for h in &cluster.hosts {
            assert!(h.root.is_dir() && h.state.is_dir(), "{h:?}");
            assert_eq!(h.root, tmp.path().join(&h.name).join("root"));
            assert_eq!(h.under_root("/srv/www"), h.root.join("srv/www"));
        }
        cluster.write_peers("# peers\n").expect("peers");
        cluster
            .write_distfile("/srv -> ( a b c )\n")
            .expect("distfile");
        assert_eq!(mode(&cluster.peers), CONF_MODE);
        assert_eq!(mode(&cluster.config), CONF_MODE);
        let peers = fs::read_to_string(&cluster.peers).expect("read");
        let b = cluster.host("b").expect("b");
        assert!(peers.starts_with("# peers\n"), "{peers}");
        assert!(
            peers.contains(&format!("\nb 127.0.0.1:{} blake3:b\n", b.port)),
            "{peers}"
        );
        // Written once: a second write is refused, not a silent overwrite.
        assert!(cluster.write_peers("").is_err());
    }

    #[test]
    fn create_refuses_a_name_twice_and_says_whose_key_failed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = Cluster::create(tmp.path(), &["a", "a"], fake_key).expect_err("twice");
        assert_eq!(err.to_string(), "host 'a' is named twice");
        let err =
            Cluster::create(tmp.path(), &["x"], |_, _| Err("no entropy")).expect_err("key fails");
        assert_eq!(err.to_string(), "cannot create the identity of host x");
    }

    #[test]
    fn stop_terminates_and_kills_what_ignores_sigterm() {
        let mut polite = Command::new("sleep").arg("30").spawn().expect("sleep");
        let mut stubborn = Command::new("sh")
            .args(["-c", "trap '' TERM; exec sleep 30"])
            .spawn()
            .expect("sh");
        // Give sh time to set its trap.
        std::thread::sleep(Duration::from_millis(200));
        let mut killed = Vec::new();
        let statuses = stop(
            &mut [&mut polite, &mut stubborn],
            Duration::from_millis(500),
            |i| killed.push(i),
        );
        assert_eq!(killed, [1]);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(statuses[0].and_then(|s| s.signal()), Some(15));
        assert_eq!(statuses[1].and_then(|s| s.signal()), Some(9));
    }
}
