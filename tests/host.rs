//! End to end: how omirrd treats the host it runs on (issue 11, "Faults
//! and the host itself"): what the start-up clean-up looks at, what it does
//! to directories above a mirrored tree, how it accepts connections when
//! flooded or out of file descriptors, and whose configuration it trusts.
//! Each test runs real `omirrd` processes (see `support::cluster`).
#![allow(unsafe_code)] // sysconf(3) and prlimit(2) have no safe wrapper here

mod support;

use omirr_testkit::tree::write_file;
use omirr_testkit::wait_until;
use std::fs;
use std::time::Duration;
use support::cluster::Cluster;

/// Long enough for a loaded CI machine; polls return as soon as they can.
const TIMEOUT: Duration = Duration::from_secs(20);

/// `/srv/www` mirrored among `hosts`.
fn www(hosts: &[&str]) -> String {
    format!("www:\n/srv/www -> ( {} )\n", hosts.join(" "))
}

const TAG: &str = "0123456789abcdef";

#[test]
fn the_start_up_clean_up_looks_only_inside_the_mirrored_trees() {
    let _one = support::serial();
    let mut cluster = Cluster::new(&["alpha", "beta"], www);
    let root = cluster.root("alpha");
    // Temporary names of an interrupted run inside the mirrored tree...
    let inside = [
        format!("srv/www/.omirr.index.html.{TAG}.tmp"),
        format!("srv/www/css/.omirr.site.css.{TAG}.tmp"),
    ];
    // ...and files with such names elsewhere under the root, which are
    // none of omirrd's business (the root is `/` by default).
    let outside = [
        format!("home/.omirr.notes.{TAG}.tmp"),
        format!("srv/.omirr.other.{TAG}.tmp"),
        format!(".omirr.top.{TAG}.tmp"),
    ];
    for f in inside.iter().chain(&outside) {
        write_file(&root.join(f), "half", 0o644);
    }
    cluster.start_host("alpha");
    assert!(
        cluster.wait_for_log("alpha", "ready", TIMEOUT),
        "alpha did not start:\n{}",
        cluster.log("alpha")
    );
    for f in &inside {
        assert!(!root.join(f).exists(), "{f} was not cleaned up");
    }
    for f in &outside {
        assert!(root.join(f).exists(), "{f}, outside /srv/www, was removed");
    }
    assert!(
        cluster.log("alpha").contains("removed temporary files")
            && cluster.log("alpha").contains("files=2"),
        "{}",
        cluster.log("alpha")
    );
}

/// `st_mode & 0o7777`, owner, group and mtime (seconds) of `path`.
fn looks(path: &std::path::Path) -> (u32, u32, u32, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn directories_above_a_top_are_left_alone_and_made_like_their_parent() {
    let _one = support::serial();
    let mut cluster = Cluster::new(&["alpha", "beta"], |hosts| {
        format!("site:\n/home/alice/www -> ( {} )\n", hosts.join(" "))
    });
    write_file(
        &cluster.root("alpha").join("home/alice/www/index.html"),
        "<h1>alice</h1>\n",
        0o644,
    );
    // On beta, /home exists and is private (and, as root, someone
    // else's); /home/alice does not exist yet.
    let home = cluster.root("beta").join("home");
    fs::create_dir(&home).expect("mkdir");
    if is_root() {
        nix::unistd::chown(&home, Some(1234.into()), Some(4321.into())).expect("chown");
    }
    fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    fs::File::open(&home)
        .and_then(|d| d.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000)))
        .expect("mtime");
    let before = looks(&home);

    cluster.start_all();
    let page = cluster.root("beta").join("home/alice/www/index.html");
    assert!(
        wait_until(TIMEOUT, || page.exists()),
        "the page did not reach beta:\n{}",
        cluster.logs()
    );
    assert_eq!(looks(&home), before, "beta's /home was changed");
    let alice = looks(&cluster.root("beta").join("home/alice"));
    assert_eq!(
        (alice.0, alice.1, alice.2),
        (before.0, before.1, before.2),
        "/home/alice was not made like /home"
    );
    assert!(
        cluster.log("beta").contains(&format!(
            "created home/alice above the mirrored trees, with mode 0700 and owner {}:{} as home has",
            before.1, before.2
        )),
        "{}",
        cluster.log("beta")
    );

    // The top goes on alpha: it goes on beta, the directories above stay.
    fs::remove_dir_all(cluster.root("alpha").join("home/alice/www")).expect("rm -r");
    let www = cluster.root("beta").join("home/alice/www");
    assert!(
        wait_until(TIMEOUT, || !www.exists()),
        "the removal did not reach beta:\n{}",
        cluster.logs()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(looks(&home), before, "beta's /home was changed");
    let now = looks(&cluster.root("beta").join("home/alice"));
    assert_eq!((now.0, now.1, now.2), (alice.0, alice.1, alice.2));
}

#[test]
fn the_configuration_and_the_key_must_be_roots_in_directories_only_root_can_change() {
    let cluster = Cluster::new(&["alpha", "beta"], www);
    let key = cluster.state_dir("alpha").join("key.pem");
    let run = |daemon: bool| {
        let (config, peers) = (cluster.config(), cluster.peers());
        let (root, state) = (cluster.root("alpha"), cluster.state_dir("alpha"));
        let mut args = vec![if daemon { "-f" } else { "check" }, "--host", "alpha"];
        for (opt, path) in [
            ("--config", config),
            ("--peers", peers),
            ("--root", &root),
            ("--state-dir", &state),
        ] {
            args.extend([opt, path.to_str().expect("utf-8")]);
        }
        // A daemon that starts is stopped by the guard; one that refuses
        // exits at once.
        let mut child = std::process::Command::new(support::omirrd_bin())
            .args(&args)
            .env_remove("OMIRR_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run omirrd");
        let _guard = support::KillOnDrop(child.id());
        let exited = wait_until(Duration::from_secs(5), || {
            child.try_wait().is_ok_and(|s| s.is_some())
        });
        if !exited {
            return (true, "still running".to_string());
        }
        let out = child.wait_with_output().expect("omirrd output");
        (out.status.success(), support::stderr(&out))
    };
    let (ok, err) = run(false);
    assert!(ok, "{err}");

    // A directory that others can write, above the Distfile, the peers
    // file and the key.
    let dir = cluster.dir();
    let mode = |m: u32| {
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(m)).expect("chmod")
    };
    mode(0o777);
    for daemon in [false, true] {
        let (ok, err) = run(daemon);
        assert!(!ok, "accepted below a directory others can write");
        assert!(
            err.contains(&format!(
                "{} lies in {}, which is writable by group and others (mode 0777) without the sticky bit",
                cluster.config().display(),
                dir.display()
            )) && err.contains(&format!("Fix: chmod go-w {}", dir.display())),
            "{err}"
        );
    }
    mode(0o700);

    if !is_root() {
        return eprintln!("skipped the owner checks: only root can give files away");
    }
    for file in [cluster.config(), cluster.peers(), key.as_path()] {
        nix::unistd::chown(file, Some(1234.into()), None).expect("chown");
        for daemon in [false, true] {
            let (ok, err) = run(daemon);
            assert!(!ok, "{} owned by uid 1234 was accepted", file.display());
            assert!(
                err.contains(&format!("{} is owned by uid 1234", file.display()))
                    && err.contains(&format!("Fix: chown root {}", file.display())),
                "{err}"
            );
        }
        nix::unistd::chown(file, Some(0.into()), None).expect("chown");
    }
    let (ok, err) = run(false);
    assert!(ok, "{err}");
}

/// The lowest descriptor number process `pid` has free (the next one it
/// opens gets it), and how many it has open.
fn descriptors(pid: u32) -> (u64, usize) {
    let fds: std::collections::BTreeSet<u64> = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let free = (0..).find(|n| !fds.contains(n)).unwrap_or(0);
    (free, fds.len())
}

/// CPU time process `pid` has used (user and system), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    ticks as f64 / hz.max(1) as f64
}

/// Starts alpha of an alpha/beta cluster with `distfile` (beta stays
/// down) and waits until it is ready.
fn alpha_alone(distfile: impl Fn(&[&str]) -> String) -> Cluster {
    let mut cluster = Cluster::new(&["alpha", "beta"], distfile);
    for h in ["alpha", "beta"] {
        fs::create_dir_all(cluster.root(h).join("srv/www")).expect("mkdir");
    }
    cluster.start_host("alpha");
    assert!(
        cluster.wait_for_log("alpha", "ready", TIMEOUT),
        "{}",
        cluster.log("alpha")
    );
    cluster
}

#[test]
fn connections_that_never_authenticate_are_capped() {
    let _one = support::serial();
    let mut cluster = alpha_alone(www);
    let pid = cluster.pid("alpha").expect("alpha runs");
    let (_, before) = descriptors(pid);
    // 150 connections that say nothing, each of which would hold a
    // descriptor for the 10 s of the handshake timeout.
    let port = cluster.port("alpha");
    let flood: Vec<std::net::TcpStream> = (0..150)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    // Give alpha the time to accept them all, if it would.
    std::thread::sleep(Duration::from_secs(1));
    let (_, during) = descriptors(pid);
    assert!(
        during <= before + 64 + 4,
        "{during} descriptors open during the flood, {before} before"
    );
    let capped = "TLS handshakes are already in progress";
    assert!(
        cluster.log("alpha").contains(capped),
        "no word of the cap:\n{}",
        cluster.log("alpha")
    );
    assert_eq!(
        cluster.log("alpha").matches(capped).count(),
        1,
        "logged more than once a minute:\n{}",
        cluster.log("alpha")
    );
    // Once they are gone, a real peer gets in.
    drop(flood);
    cluster.start_host("beta");
    let page = cluster.root("beta").join("srv/www/page");
    fs::write(
        cluster.root("alpha").join("srv/www/page"),
        "after the flood",
    )
    .expect("write");
    assert!(
        wait_until(TIMEOUT, || page.exists()),
        "beta never synchronised:\n{}",
        cluster.logs()
    );
}

#[test]
fn accept_loops_back_off_when_out_of_descriptors() {
    let _one = support::serial();
    // Alpha alone in its set: no dialer opens and closes sockets meanwhile.
    let cluster = alpha_alone(|_| www(&["alpha"]));
    let pid = cluster.pid("alpha").expect("alpha runs");
    let (free, _) = descriptors(pid);
    // A few descriptors left to alpha, then connections to use them up.
    let mut old = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let set = |soft: u64, old: Option<&mut nix::libc::rlimit>| {
        let mut now = nix::libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit reads `now` and writes `old`, both live locals.
        let got = unsafe {
            nix::libc::prlimit(
                pid as i32,
                nix::libc::RLIMIT_NOFILE,
                std::ptr::null(),
                &mut now,
            )
        };
        assert_eq!(got, 0, "prlimit: {}", std::io::Error::last_os_error());
        if let Some(old) = old {
            *old = now;
        }
        let new = nix::libc::rlimit {
            rlim_cur: soft,
            rlim_max: now.rlim_max,
        };
        // SAFETY: as above.
        let set = unsafe {
            nix::libc::prlimit(
                pid as i32,
                nix::libc::RLIMIT_NOFILE,
                &new,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    set(free + 6, Some(&mut old));
    let port = cluster.port("alpha");
    let _flood: Vec<std::net::TcpStream> = (0..30)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    assert!(
        cluster.wait_for_log("alpha", "Too many open files", TIMEOUT),
        "alpha never ran out of descriptors:\n{}",
        cluster.log("alpha")
    );
    // Queued on the status socket, which alpha cannot accept now.
    let socket = cluster.state_dir("alpha").join("omirrd.sock");
    let _asking = std::os::unix::net::UnixStream::connect(&socket).expect("connect status");
    std::thread::sleep(Duration::from_millis(500));
    let (cpu, started) = (cpu_seconds(pid), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(pid) - cpu;
    let took = started.elapsed().as_secs_f64();
    let log = cluster.log("alpha");
    set(old.rlim_cur, None);
    assert!(
        used < 0.25 * took,
        "alpha used {used:.2} s of CPU in {took:.2} s, out of descriptors:\n{log}"
    );
    let warned = |what: &str| {
        log.lines()
            .filter(|l| l.contains(what) && l.contains("out of file descriptors"))
            .count()
    };
    assert_eq!(warned("peer listener"), 1, "{log}");
    assert_eq!(warned("status socket"), 1, "{log}");
    // With descriptors again, the status answers.
    let state = cluster.state_dir("alpha");
    assert!(
        wait_until(TIMEOUT, || support::omirrd(&[
            "status",
            "--state-dir",
            state.to_str().expect("utf-8")
        ])
        .status
        .code()
        .is_some_and(|c| c != 2)),
        "{}",
        cluster.log("alpha")
    );
}
