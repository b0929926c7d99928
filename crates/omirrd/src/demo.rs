//! `omirrd demo`: three hosts on this machine, mirroring one tree.
//!
//! The demo builds everything a real deployment has, in one directory:
//!
//! ```text
//! DIR/omirrd.conf        the Distfile: /srv/demo -> ( alpha beta gamma )
//! DIR/peers              every host on 127.0.0.1, on a free port, pinned
//! DIR/alpha/root/        alpha's --root: its tree is DIR/alpha/root/srv/demo
//! DIR/alpha/state/       alpha's --state-dir: key.pem, cert.pem, index
//! DIR/alpha/omirrd.log   what alpha's omirrd writes on stderr
//! ...                    the same for beta and gamma
//! ```
//!
//! then runs one `omirrd -f` per host, as child processes of this one, until
//! Ctrl-C (SIGINT), SIGTERM or SIGHUP, or until every host has exited on its
//! own. It then stops the hosts (SIGTERM, SIGKILL after [`STOP_GRACE`]) and
//! keeps DIR, so the trees and logs can be looked at afterwards.
//!
//! The setup, [`prepare`], is separate from running the hosts so that it can
//! be tested on its own. The layout, the ports, the peers file, the hosts'
//! command lines and stopping them are `omirr_cluster`'s, which the
//! end-to-end tests use too; what is the demo's own is its tree, its
//! Distfile, its directory, waiting for signals and what it prints.

use crate::cli::{Cli, DaemonArgs};
use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use omirr_cluster::{Cluster, Host};
use omirr_config::peers::check_host_name;
use std::fs;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, ExitStatus};
use std::time::Duration;

/// The demo's hosts.
pub(crate) const HOSTS: [&str; 3] = ["alpha", "beta", "gamma"];
/// The tree the hosts mirror, as the Distfile names it.
pub(crate) const TREE: &str = "/srv/demo";
/// How long the hosts get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The mirrored tree on `host`: [`TREE`] under its root.
fn tree(host: &Host) -> PathBuf {
    host.under_root(TREE)
}

/// Sets up a demo of `names` in `dir`, which must be empty or absent: for
/// each host a root holding [`TREE`], a state directory with a new
/// identity, and a free port on 127.0.0.1; then the peers file and the
/// Distfile, mode 0644. Starts nothing.
///
/// The ports are free when this returns, not reserved: another program may
/// take one before the hosts start (they then fail to listen, and say so).
pub(crate) fn prepare(dir: &Path, names: &[&str]) -> Result<Cluster> {
    if names.is_empty() {
        bail!("a demo needs at least one host");
    }
    for name in names {
        check_host_name(name)?;
    }
    // Before anything is made in `dir`, as Cluster::create checks again.
    omirr_cluster::check_names(names)?;
    make_empty_dir(dir)?;
    let dir = fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve the demo directory {}", dir.display()))?;
    let cluster = Cluster::create(&dir, names, |_, state| {
        omirr_net::identity::generate(state).map(|id| id.fingerprint.to_string())
    })?;
    for host in &cluster.hosts {
        let tree = tree(host);
        fs::create_dir_all(&tree)
            .with_context(|| format!("cannot create {}'s tree {}", host.name, tree.display()))?;
    }
    cluster.write_peers(
        "# The peers file of `omirrd demo`: every host listens on 127.0.0.1.\n\
         # name  address:port  fingerprint\n",
    )?;
    cluster.write_distfile(&distfile(&cluster))?;
    Ok(cluster)
}

/// The demo's Distfile: [`TREE`] among every host.
fn distfile(cluster: &Cluster) -> String {
    format!(
        "# The Distfile of `omirrd demo`: these hosts, all on this machine, keep\n\
         # {TREE} identical. Each host's {TREE} is under its own --root, for\n\
         # example {}.\n\
         HOSTS = ( {} )\n\
         \n\
         demo:\n\
         {TREE} -> ${{HOSTS}}\n\
         \texcept_pat ( \\\\.swp$ ~$ ) ;    # editor droppings\n",
        tree(&cluster.hosts[0]).display(),
        cluster.names().join(" ")
    )
}

/// Creates `dir` (and its parents) or accepts an existing empty directory.
fn make_empty_dir(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty; the demo sets itself up in an empty or new directory",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the demo directory {}", dir.display())),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot use {} as the demo directory (it must be an empty or absent directory)",
                dir.display()
            )
        }),
    }
}

/// A host's omirrd, running or exited.
struct Running<'a> {
    host: &'a Host,
    child: Child,
    /// Set once the process has been waited for.
    status: Option<ExitStatus>,
}

/// `omirrd demo [DIR]`: sets up a demo in DIR (default: a new directory
/// under the temporary directory), runs it until a signal or until every
/// host has exited, and stops it. Exits 1 if a host failed on its own.
pub(crate) fn run(dir: Option<&Path>, args: &DaemonArgs) -> Result<ExitCode> {
    refuse_daemon_options(args)?;
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            let template = std::env::temp_dir().join("omirr-demo.XXXXXX");
            nix::unistd::mkdtemp(&template).with_context(|| {
                format!(
                    "cannot create a directory for the demo like {}",
                    template.display()
                )
            })?
        }
    };
    let cluster = prepare(&dir, &HOSTS)?;
    let exe = std::env::current_exe().context("cannot find the omirrd program to run")?;
    let mut extra = Vec::new();
    if args.debug {
        extra.push("-D".to_string());
    }
    if args.verbose > 0 {
        extra.push(format!("-{}", "v".repeat(args.verbose.into())));
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();

    // Blocked before the hosts start, so that none of these is lost: they
    // wait, pending, for the sigwait below. Each host unblocks them again
    // before it runs (see spawn).
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        signals.add(s);
    }
    signals
        .thread_block()
        .context("cannot block signals to wait for them")?;

    let mut hosts: Vec<Running> = Vec::new();
    for host in &cluster.hosts {
        match spawn(&cluster, &exe, host, &extra) {
            Ok(child) => hosts.push(Running {
                host,
                child,
                status: None,
            }),
            Err(e) => {
                stop(&mut hosts);
                return Err(e);
            }
        }
    }
    print_instructions(&cluster, &hosts);

    let mut failed = false;
    let stopped_by = loop {
        let signal = match signals.wait() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("omirrd demo: cannot wait for signals ({e}); stopping the hosts");
                break None;
            }
        };
        if signal != Signal::SIGCHLD {
            break Some(signal);
        }
        for h in hosts.iter_mut().filter(|h| h.status.is_none()) {
            match h.child.try_wait() {
                Ok(Some(status)) => {
                    h.status = Some(status);
                    failed |= !status.success();
                    report_exit(h.host, status);
                }
                Ok(None) => {}
                Err(e) => eprintln!("omirrd demo: cannot check on host {}: {e}", h.host.name),
            }
        }
        if hosts.iter().all(|h| h.status.is_some()) {
            println!("omirrd demo: every host has exited.");
            break None;
        }
    };
    if let Some(signal) = stopped_by {
        println!("omirrd demo: {signal}: stopping the hosts...");
    }
    stop(&mut hosts);
    println!(
        "omirrd demo: stopped. The trees, the logs and the configuration stay in {}",
        cluster.dir.display()
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The demo writes its own configuration: the options that point the
/// daemon at another one would be silently ignored, so they are refused.
fn refuse_daemon_options(args: &DaemonArgs) -> Result<()> {
    let defaults = Cli::try_parse_from(["omirrd"])?.daemon;
    let given = [
        ("--config", args.config != defaults.config),
        ("--peers", args.peers != defaults.peers),
        ("--host", args.host.is_some()),
        ("--root", args.root != defaults.root),
        ("--state-dir", args.state_dir != defaults.state_dir),
        ("-d", !args.define.is_empty()),
    ];
    let given: Vec<&str> = given.iter().filter(|(_, g)| *g).map(|(o, _)| *o).collect();
    if !given.is_empty() {
        bail!(
            "omirrd demo writes its own configuration, peers file, roots and state directories in DIR; {} {} not apply to it",
            given.join(", "),
            if given.len() == 1 { "does" } else { "do" }
        );
    }
    Ok(())
}

/// Starts `host`'s omirrd, logging to its log file.
#[allow(unsafe_code)] // pre_exec: see the SAFETY comment within
fn spawn(cluster: &Cluster, exe: &Path, host: &Host, extra: &[&str]) -> Result<Child> {
    let mut cmd = cluster.command(exe, host)?;
    cmd.args(extra);
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it makes one
    // pthread_sigmask(3) and one prctl(2) call and allocates nothing.
    // - The host must not inherit the signals the demo blocks to wait for
    //   them, or it would never see SIGTERM.
    // - If the demo dies without stopping the hosts (SIGKILL), the kernel
    //   sends them SIGTERM.
    unsafe {
        cmd.pre_exec(|| {
            SigSet::empty().thread_set_mask()?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            Ok(())
        });
    }
    cmd.spawn().with_context(|| {
        format!(
            "cannot start host {} ({} -f --host {} ...)",
            host.name,
            exe.display(),
            host.name
        )
    })
}

/// What the demo tells its user once the hosts are started.
fn print_instructions(cluster: &Cluster, hosts: &[Running]) {
    let dir = shell_quote(&cluster.dir);
    let mut out = String::new();
    out += &format!(
        "omirrd demo: {} hosts on this machine mirror {TREE}; everything is in {}\n\n",
        hosts.len(),
        cluster.dir.display()
    );
    for h in hosts {
        out += &format!(
            "  {:<6} 127.0.0.1:{:<5}  pid {:<7}  tree {}\n",
            h.host.name,
            h.host.port,
            h.child.id(),
            tree(h.host).display()
        );
    }
    let (first, second) = (
        &cluster.hosts[0],
        cluster.hosts.get(1).unwrap_or(&cluster.hosts[0]),
    );
    out += &format!(
        "\nThe Distfile is {}, the peers file {}; each host logs to {}/NAME/omirrd.log.\n\
         \n\
         Try it, from another terminal:\n\
         \n  echo hello > {}\n  cat {}\n  tail -f {dir}/*/omirrd.log\n\
         \n\
         Press Ctrl-C to stop the hosts; the directory stays.\n",
        cluster.config.display(),
        cluster.peers.display(),
        cluster.dir.display(),
        shell_quote(&tree(first).join("hello.txt")),
        shell_quote(&tree(second).join("hello.txt")),
    );
    print!("{out}");
    let _ = io::stdout().flush();
}

/// Says that a host exited on its own, and where to find out why.
fn report_exit(host: &Host, status: ExitStatus) {
    if status.success() {
        println!(
            "omirrd demo: host {} exited ({status}); its log is {}",
            host.name,
            host.log.display()
        );
        return;
    }
    eprintln!(
        "omirrd demo: host {} failed ({status}); its log is {}",
        host.name,
        host.log.display()
    );
    if let Ok(text) = fs::read_to_string(&host.log) {
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[lines.len().saturating_sub(5)..] {
            eprintln!("  {line}");
        }
    }
}

/// Stops the hosts still running: SIGTERM, then SIGKILL for those still
/// there after [`STOP_GRACE`]. Waits for every one of them.
fn stop(hosts: &mut [Running]) {
    let mut running: Vec<&mut Running> = hosts.iter_mut().filter(|h| h.status.is_none()).collect();
    let names: Vec<&str> = running.iter().map(|h| h.host.name.as_str()).collect();
    let mut children: Vec<&mut Child> = running.iter_mut().map(|h| &mut h.child).collect();
    let statuses = omirr_cluster::stop(&mut children, STOP_GRACE, |i| {
        eprintln!(
            "omirrd demo: host {} did not stop within {} s of SIGTERM; killing it",
            names[i],
            STOP_GRACE.as_secs()
        );
    });
    for (h, status) in running.iter_mut().zip(statuses) {
        h.status = status;
    }
}

/// `path` as a shell word: as is when that is safe, else single-quoted.
fn shell_quote(path: &Path) -> String {
    let s = path.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_config::peers::Fingerprint;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).expect("metadata").mode() & 0o7777
    }

    #[test]
    fn prepare_sets_up_a_cluster_omirrd_accepts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("demo");
        let cluster = prepare(&dir, &HOSTS).expect("prepare");
        assert_eq!(cluster.dir, fs::canonicalize(&dir).expect("canonicalize"));
        assert_eq!(mode(&cluster.peers), 0o644);
        assert_eq!(mode(&cluster.config), 0o644);
        let mut ports: Vec<u16> = cluster.hosts.iter().map(|h| h.port).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 3, "distinct ports: {cluster:?}");
        for host in &cluster.hosts {
            assert!(tree(host).is_dir(), "{}", tree(host).display());
            assert_eq!(mode(&host.state.join("key.pem")), 0o600);
            let id = omirr_net::identity::load(&host.state).expect("identity");
            let pinned: Fingerprint = host.fingerprint.parse().expect("a fingerprint");
            assert_eq!(id.fingerprint, pinned);
            // The daemon's own loading accepts it, host by host.
            let cli = Cli::parse_from([
                "omirrd".as_ref(),
                "--config".as_ref(),
                cluster.config.as_os_str(),
                "--peers".as_ref(),
                cluster.peers.as_os_str(),
                "--host".as_ref(),
                host.name.as_ref(),
                "--root".as_ref(),
                host.root.as_os_str(),
            ]);
            let plan = match crate::plan::load(&cli.daemon) {
                Ok(p) => p,
                Err(d) => panic!("{d:?}"),
            };
            assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
            assert_eq!(
                plan.tops(),
                [crate::plan::rel(Path::new(TREE)).expect("rel")]
            );
            let others: Vec<&str> = HOSTS.iter().copied().filter(|n| *n != host.name).collect();
            assert_eq!(plan.peer_names(), others);
            let me = plan.peers.get(&host.name).expect("own line");
            assert_eq!(me.address.to_string(), format!("127.0.0.1:{}", host.port));
            assert_eq!(me.fingerprint, Some(pinned));
            assert!(plan.excluded(&crate::plan::rel(Path::new("/srv/demo/a.swp")).expect("rel")));
            assert!(plan.excluded(&crate::plan::rel(Path::new("/srv/demo/a~")).expect("rel")));
            assert!(!plan.excluded(&crate::plan::rel(Path::new("/srv/demo/a.txt")).expect("rel")));
        }
    }

    #[test]
    fn prepare_accepts_an_empty_directory_and_refuses_a_used_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        prepare(tmp.path(), &["one", "two"]).expect("empty directory");
        let err = prepare(tmp.path(), &["one", "two"]).expect_err("used directory");
        let msg = format!("{err:#}");
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
        assert!(msg.contains("not empty"), "{msg}");
        let file = tmp.path().join("peers");
        let err = prepare(&file, &["one"]).expect_err("a file");
        assert!(
            format!("{err:#}").contains(&file.display().to_string()),
            "{err:#}"
        );
    }

    #[test]
    fn prepare_refuses_bad_host_lists() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for names in [&[][..], &["a", "a"][..], &["a b"][..], &["-x"][..]] {
            assert!(prepare(&tmp.path().join("d"), names).is_err(), "{names:?}");
        }
        assert!(
            !tmp.path().join("d").exists(),
            "nothing made for a bad list"
        );
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_quote(Path::new("/tmp/omirr-demo.x1")),
            "/tmp/omirr-demo.x1"
        );
        assert_eq!(shell_quote(Path::new("/tmp/a b")), "'/tmp/a b'");
        assert_eq!(shell_quote(Path::new("/tmp/it's")), r"'/tmp/it'\''s'");
    }
}
