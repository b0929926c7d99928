//! The `omirrd` command line, run as a real process: `check`, `keygen`,
//! `id`, `-V`, file-permission refusal, and the daemon's start-up.

mod support;

use omirr_testkit::tree::write_file;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::{etc, omirrd, stderr, stdout};

/// A test host: the example Distfile and peers file (copied with safe
/// modes, whatever the checkout's umask), a root holding the example's
/// paths, and a state directory.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = fs::read_to_string(etc().join("omirrd.conf")).expect("etc/omirrd.conf");
        let peers = fs::read_to_string(etc().join("peers")).expect("etc/peers");
        write_file(&dir.path().join("omirrd.conf"), &conf, 0o644);
        write_file(&dir.path().join("peers"), &peers, 0o644);
        for d in ["root/srv/www", "root/etc/nginx", "root/opt/tools"] {
            fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        Site { dir }
    }

    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).to_string_lossy().into_owned()
    }

    /// `omirrd <cmd> --config … --peers … --root … --state-dir … <extra>`.
    fn run(&self, cmd: &[&str], extra: &[&str]) -> std::process::Output {
        let (config, peers, root, state) = (
            self.path("omirrd.conf"),
            self.path("peers"),
            self.path("root"),
            self.path("state"),
        );
        let mut args: Vec<&str> = cmd.to_vec();
        args.extend([
            "--config",
            &config,
            "--peers",
            &peers,
            "--root",
            &root,
            "--state-dir",
            &state,
        ]);
        args.extend(extra);
        omirrd(&args)
    }
}

#[test]
fn check_prints_the_plan_of_the_example() {
    let site = Site::new();
    let out = site.run(&["check"], &["--host", "alpha"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}\n{}", text, stderr(&out));
    assert!(
        text.contains("host alpha listens on 192.0.2.10:808"),
        "{text}"
    );
    assert!(text.contains("mirror set 'web'"), "{text}");
    assert!(
        text.contains("with       beta (192.0.2.11:808), gamma ([2001:db8::12]:808)"),
        "{text}"
    );
    assert!(text.contains("path       /srv/www"), "{text}");
    assert!(text.contains("except     /etc/nginx/local.conf"), "{text}");
    assert!(
        text.contains("option     savetargets: a file that a peer's change replaces or removes is kept as NAME.OLD"),
        "{text}"
    );
    // gamma is subtracted from the tools set.
    let out = site.run(&["check"], &["--host", "gamma"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("mirror set 'web'") && !text.contains("'tools'"),
        "{text}"
    );
}

/// `check` says, for every install option a statement gives, what it does
/// (the text of omirrd.conf(5)'s table); a refused option is an error that
/// says why, from `check` and from the daemon's start alike.
#[test]
fn check_says_what_each_install_option_does_or_why_it_is_refused() {
    use omirr_config::distfile::{install_option, OptionMeaning};
    let site = Site::new();
    let accepted = [
        "chknfs",
        "chkreadonly",
        "compare",
        "defgroup",
        "defowner",
        "history",
        "nochkgroup",
        "nochkmode",
        "nochkowner",
        "nodescend",
        "numchkgroup",
        "numchkowner",
        "quiet",
        "remove",
        "savetargets",
        "updateperm",
        "whole",
    ];
    write_file(
        &site.dir.path().join("omirrd.conf"),
        &format!(
            "/srv/www -> ( alpha beta )\n\tinstall -o{} ;\n",
            accepted.join(",")
        ),
        0o644,
    );
    let out = site.run(&["check"], &["--host", "alpha"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for name in accepted {
        let Some(OptionMeaning::Does(does)) = install_option(name) else {
            panic!("{name} is not accepted");
        };
        let shown = match name {
            "defowner" | "defgroup" => format!("{name}=bin"),
            _ => name.to_string(),
        };
        assert!(
            text.contains(&format!("  option     {shown}: {does}\n")),
            "{name}: {text}"
        );
    }

    write_file(
        &site.dir.path().join("omirrd.conf"),
        "/srv/www -> ( alpha beta )\n\tinstall -onochkmode,younger ;\n",
        0o644,
    );
    let Some(OptionMeaning::Refused(why)) = install_option("younger") else {
        panic!("younger is not refused");
    };
    let expected = format!(
        "{}:2:22: error: install option 'younger' is refused: {why}",
        site.path("omirrd.conf")
    );
    let out = site.run(&["check"], &["--host", "alpha"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    let out = site.run(&[], &["--host", "alpha", "-f"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
}

#[test]
fn check_reports_three_mistakes_with_positions() {
    let site = Site::new();
    write_file(
        &site.dir.path().join("omirrd.conf"),
        "HOSTS = ( alpha beta )\n\
         /srv/www -> ${HOSTS}\n\
         \tinstall -osavetargets,fast ;\n\
         \texclude /srv/www/tmp ;\n\
         /etc/nginx -> ( alpha delta )\n",
        0o644,
    );
    let out = site.run(&["check"], &["--host", "alpha"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains(": error: ")).collect();
    let conf = site.path("omirrd.conf");
    assert_eq!(errors.len(), 3, "{err}");
    assert!(
        errors[0].starts_with(&format!(
            "{conf}:3:24: error: unknown install option 'fast'"
        )),
        "{err}"
    );
    assert!(
        errors[1].starts_with(&format!("{conf}:4:2: error: unknown command 'exclude'")),
        "{err}"
    );
    assert!(
        errors[2].starts_with(&format!(
            "{conf}:5:23: error: host 'delta' is not in the peers file"
        )),
        "{err}"
    );
    assert!(err.contains("omirrd check: 3 error(s)"), "{err}");
    assert!(
        stdout(&out).is_empty(),
        "no plan for a broken configuration"
    );
}

#[test]
fn check_reports_peers_file_errors() {
    let site = Site::new();
    write_file(
        &site.dir.path().join("peers"),
        "alpha 127.0.0.1:80800 blake3:00\nalpha 127.0.0.1 \n",
        0o644,
    );
    let out = site.run(&["check"], &["--host", "alpha"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let peers = site.path("peers");
    assert!(
        err.contains(&format!("{peers}:1:7: error:")),
        "bad port: {err}"
    );
    assert!(
        err.contains(&format!("{peers}:1:23: error:")),
        "bad fingerprint: {err}"
    );
    assert!(
        err.contains(&format!("{peers}:2:1: error:")),
        "duplicate: {err}"
    );
}

#[test]
fn defines_on_the_command_line_override_the_distfile() {
    let site = Site::new();
    let out = site.run(
        &["check"],
        &["--host", "alpha", "-d", "HOSTS=( alpha gamma )"],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("with       gamma ([2001:db8::12]:808)\n"),
        "{text}"
    );
    assert!(!text.contains("beta"), "{text}");
}

#[test]
fn refuses_files_that_others_can_write() {
    for (file, mode) in [("omirrd.conf", 0o664), ("peers", 0o646)] {
        let site = Site::new();
        let path = site.dir.path().join(file);
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        for cmd in [&["check"][..], &[][..]] {
            let out = site.run(cmd, &["--host", "alpha", "-f"]);
            assert!(!out.status.success(), "{file} {mode:o} accepted by {cmd:?}");
            let err = stderr(&out);
            assert!(
                err.contains(&path.display().to_string()),
                "names the file: {err}"
            );
            assert!(err.contains("chmod go-w"), "says how to fix it: {err}");
        }
    }
}

#[test]
fn keygen_and_id() {
    let site = Site::new();
    let state = site.path("state");
    let out = omirrd(&["keygen", "--state-dir", &state]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fp = stdout(&out).trim().to_string();
    assert!(fp.starts_with("blake3:") && fp.len() == 7 + 64, "{fp}");
    let mode = fs::metadata(Path::new(&state).join("key.pem"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // id prints exactly one line, the same fingerprint, every time.
    for _ in 0..2 {
        let out = omirrd(&["id", "--state-dir", &state]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("{fp}\n"));
    }
    // A second keygen would change the host's identity: refused.
    let out = omirrd(&["keygen", "--state-dir", &state]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("key.pem"), "{}", stderr(&out));
    // A key others can read is refused.
    fs::set_permissions(
        Path::new(&state).join("key.pem"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let out = omirrd(&["id", "--state-dir", &state]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

#[test]
fn id_without_identity_says_how_to_make_one() {
    let site = Site::new();
    let out = omirrd(&["id", "--state-dir", &site.path("nothing-here")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("omirrd keygen"), "{}", stderr(&out));
}

#[test]
fn check_notices_a_key_that_does_not_match_the_pin() {
    let site = Site::new();
    let state = site.path("state");
    assert!(omirrd(&["keygen", "--state-dir", &state]).status.success());
    let out = site.run(&["check"], &["--host", "alpha"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("every peer will refuse it"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn daemon_starts_scans_serves_and_stops_on_sigterm() {
    let site = Site::new();
    // beta's key does not exist yet, so its line has no pin yet; it
    // listens on a free loopback port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let peers = fs::read_to_string(etc().join("peers")).expect("etc/peers");
    let unpinned: String = peers
        .lines()
        .map(|l| {
            if l.starts_with("beta ") {
                format!("beta 127.0.0.1:{port}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    write_file(&site.dir.path().join("peers"), &unpinned, 0o644);
    fs::write(site.dir.path().join("root/srv/www/index.html"), b"hi").expect("write");
    let log = site.dir.path().join("beta.log");
    let (config, peers, root, state) = (
        site.path("omirrd.conf"),
        site.path("peers"),
        site.path("root"),
        site.path("state"),
    );
    let mut child = std::process::Command::new(support::omirrd_bin())
        .args([
            "-f",
            "-v",
            "--host",
            "beta",
            "--config",
            &config,
            "--peers",
            &peers,
            "--root",
            &root,
            "--state-dir",
            &state,
        ])
        .stderr(fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start omirrd");
    let guard = support::KillOnDrop(child.id());
    let ready = omirr_testkit::wait_until(std::time::Duration::from_secs(20), || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains(" ready "))
    });
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(ready, "never ready:\n{text}");
    assert!(text.contains("created a new identity"), "{text}");
    assert!(
        text.contains("mirror set 'web'"),
        "logs what it mirrors: {text}"
    );
    assert!(
        text.contains("start-up scan done entries=4"),
        "three directories and a file: {text}"
    );
    assert!(Path::new(&state).join("key.pem").exists());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "listening"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.wait().expect("wait");
    drop(guard);
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("stopped"), "{text}");
}

#[test]
fn daemon_names_an_address_it_cannot_listen_on() {
    // The example's documentation addresses are not on this machine.
    let site = Site::new();
    let peers = fs::read_to_string(etc().join("peers")).expect("etc/peers");
    let unpinned: String = peers
        .lines()
        .map(|l| {
            if l.starts_with("beta ") {
                "beta 192.0.2.11".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    write_file(&site.dir.path().join("peers"), &unpinned, 0o644);
    let out = site.run(&[], &["--host", "beta", "-f"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("cannot listen on 192.0.2.11:808"), "{err}");
}

#[test]
fn daemon_refuses_a_key_its_peers_would_refuse() {
    // The example pins another key for beta than the one created here.
    let site = Site::new();
    let out = site.run(&[], &["--host", "beta", "-f"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("every peer will refuse it"), "{err}");
}

#[test]
fn version() {
    let out = omirrd(&["-V"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        format!("omirrd {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// Gives beta, whose key does not exist yet (so its line has no pin), a
/// free loopback port; returns the port.
fn beta_on_a_free_port(site: &Site) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let peers = fs::read_to_string(etc().join("peers")).expect("etc/peers");
    let unpinned: String = peers
        .lines()
        .map(|l| {
            if l.starts_with("beta ") {
                format!("beta 127.0.0.1:{port}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    write_file(&site.dir.path().join("peers"), &unpinned, 0o644);
    port
}

/// Runs beta without `-f`, logging to the socket at `syslog` (through the
/// undocumented `OMIRR_SYSLOG_SOCKET`), and not looking as if systemd
/// started it. Returns the command's status and standard error once the
/// command has exited and nothing holds its standard error any more (the
/// daemon must let go of the terminal); fails if either takes over 10 s.
fn run_without_f(site: &Site, syslog: &Path, extra: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let (config, peers, root, state) = (
        site.path("omirrd.conf"),
        site.path("peers"),
        site.path("root"),
        site.path("state"),
    );
    let mut child = std::process::Command::new(support::omirrd_bin())
        .args(["--host", "beta", "--config", &config, "--peers", &peers])
        .args(["--root", &root, "--state-dir", &state])
        .args(extra)
        .env_remove("OMIRR_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("INVOCATION_ID")
        .env("OMIRR_SYSLOG_SOCKET", syslog)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start omirrd");
    let _guard = support::KillOnDrop(child.id());
    let mut pipe = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let mut status = None;
    let returned = omirr_testkit::wait_until(std::time::Duration::from_secs(10), || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    assert!(returned, "the command did not return within 10 s");
    let err = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("something still holds the command's standard error");
    (status.expect("status"), err)
}

/// Kills the process a pid file names when the test ends, however it ends.
struct KillPidFileOnDrop(std::path::PathBuf);

impl Drop for KillPidFileOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.0)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            drop(support::KillOnDrop(pid));
        }
    }
}

/// Whether `pid` runs (a zombie does not: whoever adopted the daemon may
/// be slow to reap it).
fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.get(s.rfind(')')? + 1..)?.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// The pid in a pid file, which must be a pid and a newline.
fn pid_in(path: &Path) -> u32 {
    let text = fs::read_to_string(path).expect("pid file");
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    text.trim().parse().expect("a pid")
}

/// A syslog of the test's own: a socket whose datagrams a thread reads
/// as they come (a datagram socket holds only a few unread ones, and a
/// full one would slow omirrd down).
struct Syslog {
    path: std::path::PathBuf,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Syslog {
    fn bind(site: &Site) -> Syslog {
        let path = site.dir.path().join("syslog");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = socket.recv(&mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        Syslog { path, lines }
    }

    /// The datagrams received until one contains `until`, or 20 s.
    fn until(&self, until: &str) -> Vec<String> {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut got = Vec::new();
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(until);
                    got.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        got
    }
}

/// Sends SIGTERM to `pid` once it handles it: until the daemon has set up
/// its handler, SIGTERM kills it outright, leaving the pid file behind.
fn stop(pid: u32) {
    let sigterm = 1u64 << (nix::sys::signal::Signal::SIGTERM as u32 - 1);
    let handled = omirr_testkit::wait_until(std::time::Duration::from_secs(20), || {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
                u64::from_str_radix(mask.trim(), 16).ok()
            })
            .is_some_and(|mask| mask & sigterm != 0)
    });
    assert!(handled, "pid {pid} never set up its SIGTERM handler");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
}

#[test]
fn without_f_the_daemon_detaches_logs_to_syslog_and_removes_its_pid_file() {
    let site = Site::new();
    let port = beta_on_a_free_port(&site);
    let syslog = Syslog::bind(&site);
    let pid_file = site.dir.path().join("state/omirrd.pid");
    let _guard = KillPidFileOnDrop(pid_file.clone());

    let (status, err) = run_without_f(&site, &syslog.path, &[]);
    assert!(status.success(), "{status}: {err}");
    // Until the fork the terminal sees the log; afterwards it does not.
    assert!(err.contains("identity loaded"), "{err}");
    assert!(!err.contains("ready"), "{err}");
    // The pid file is there when the command returns.
    let pid = pid_in(&pid_file);
    assert_eq!(
        fs::metadata(&pid_file)
            .expect("pid file")
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    assert!(running(pid), "pid {pid} is not running");
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd"),
        Path::new("/")
    );

    let logged = syslog.until("ready");
    let ready = logged.iter().find(|d| d.contains("ready"));
    assert_eq!(
        ready.map(String::as_str),
        Some(format!("<30>omirrd[{pid}]: ready address=127.0.0.1:{port}").as_str()),
        "{logged:#?}"
    );
    assert!(
        logged.iter().any(|d| d.starts_with(&format!(
            "<30>omirrd[{pid}]: running in the background pid={pid}"
        ))),
        "{logged:#?}"
    );
    for d in &logged {
        assert!(d.starts_with('<') && d.contains("]: "), "{d:?}");
        assert!(!d.contains(['\n', '\x1b']), "{d:?}");
        assert!(!d.contains(" INFO "), "no level in the text: {d:?}");
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "listening"
    );

    stop(pid);
    let gone = omirr_testkit::wait_until(std::time::Duration::from_secs(10), || {
        !pid_file.exists() && !running(pid)
    });
    assert!(
        gone,
        "pid file {}, pid {pid} {}: {:#?}",
        if pid_file.exists() { "left" } else { "removed" },
        if running(pid) { "running" } else { "gone" },
        syslog.until("stopped")
    );
    let logged = syslog.until("stopped");
    assert!(
        logged
            .iter()
            .any(|d| d == &format!("<30>omirrd[{pid}]: stopped")),
        "{logged:#?}"
    );
}

#[test]
fn a_second_daemon_is_refused_while_the_first_runs() {
    let site = Site::new();
    beta_on_a_free_port(&site);
    let syslog = Syslog::bind(&site);
    let pid_file = site.dir.path().join("state/omirrd.pid");
    let _guard = KillPidFileOnDrop(pid_file.clone());
    let (status, err) = run_without_f(&site, &syslog.path, &[]);
    assert!(status.success(), "{status}: {err}");
    let pid = pid_in(&pid_file);

    for extra in [&[][..], &["-f"][..]] {
        let (status, err) = run_without_f(&site, &syslog.path, extra);
        assert!(!status.success(), "{extra:?}: {err}");
        assert!(
            err.contains(&format!("omirrd is already running as pid {pid}")),
            "{extra:?}: {err}"
        );
        assert_eq!(pid_in(&pid_file), pid, "the pid file is the first one's");
    }
    assert!(running(pid));

    stop(pid);
    assert!(
        omirr_testkit::wait_until(std::time::Duration::from_secs(10), || !running(pid)),
        "pid {pid} did not stop"
    );
    assert!(!pid_file.exists());
}

#[test]
fn under_systemd_without_f_the_daemon_stays_and_logs_to_syslog() {
    let site = Site::new();
    beta_on_a_free_port(&site);
    let syslog = Syslog::bind(&site);
    let mut unit = UnderSystemd::start(&site, &syslog, &[], 20);
    assert_eq!(unit.next_message("READY=1"), b"READY=1");
    let (child, err_path) = (&mut unit.child, unit.stderr.clone());
    // Not forked: the pid file names the process systemd started.
    let pid_file = site.dir.path().join("state/omirrd.pid");
    assert_eq!(pid_in(&pid_file), child.id());
    let logged = syslog.until("ready");
    assert!(
        logged
            .iter()
            .any(|d| d.starts_with(&format!("<30>omirrd[{}]: identity loaded", child.id()))),
        "{logged:#?}"
    );

    stop(child.id());
    let status = child.wait().expect("wait");
    let err = fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "{status}: {err}");
    assert!(err.is_empty(), "the log goes to syslog only: {err}");
    assert!(!pid_file.exists());
    assert!(syslog
        .until("stopped")
        .iter()
        .any(|d| d.ends_with(": stopped")));
}

/// omirrd started as systemd starts a unit: with NOTIFY_SOCKET (a socket
/// of the test's, read with `timeout`), without INVOCATION_ID or
/// OMIRR_LOG, logging to the test's syslog; `extra` goes before the
/// site's own options. The process is killed if the test fails.
struct UnderSystemd {
    child: std::process::Child,
    notify: std::os::unix::net::UnixDatagram,
    stderr: std::path::PathBuf,
    _guard: support::KillOnDrop,
}

impl UnderSystemd {
    fn start(site: &Site, syslog: &Syslog, extra: &[&str], timeout: u64) -> UnderSystemd {
        let notify_path = site.dir.path().join("notify");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind");
        notify
            .set_read_timeout(Some(std::time::Duration::from_secs(timeout)))
            .expect("timeout");
        let (config, peers, root, state) = (
            site.path("omirrd.conf"),
            site.path("peers"),
            site.path("root"),
            site.path("state"),
        );
        let stderr = site.dir.path().join("stderr");
        let child = std::process::Command::new(support::omirrd_bin())
            .args(extra)
            .args(["--host", "beta", "--config", &config, "--peers", &peers])
            .args(["--root", &root, "--state-dir", &state])
            .env_remove("OMIRR_LOG")
            .env_remove("INVOCATION_ID")
            .env("NOTIFY_SOCKET", &notify_path)
            .env("OMIRR_SYSLOG_SOCKET", &syslog.path)
            .stdin(std::process::Stdio::null())
            .stderr(fs::File::create(&stderr).expect("stderr"))
            .spawn()
            .expect("start omirrd");
        let _guard = support::KillOnDrop(child.id());
        UnderSystemd {
            child,
            notify,
            stderr,
            _guard,
        }
    }

    /// The next message to systemd, or a panic with the daemon's stderr.
    fn next_message(&self, what: &str) -> Vec<u8> {
        let mut buf = [0u8; 256];
        match self.notify.recv(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(e) => panic!(
                "{what}: nothing reached NOTIFY_SOCKET ({e}): {}",
                fs::read_to_string(&self.stderr).unwrap_or_default()
            ),
        }
    }
}

/// What etc/omirrd.service relies on (`Type=notify`): READY=1 reaches
/// systemd only once peers can connect, whether omirrd runs as the unit
/// starts it (no `-f`) or in the foreground with `-f`.
#[test]
fn ready_reaches_systemd_only_once_the_peer_port_accepts() {
    for foreground in [false, true] {
        let site = Site::new();
        let port = beta_on_a_free_port(&site);
        let syslog = Syslog::bind(&site);
        // Enough files that the start-up scan, which comes before the
        // listener, takes a moment.
        for i in 0..300 {
            fs::write(
                site.dir.path().join(format!("root/srv/www/{i}")),
                [0u8; 4096],
            )
            .expect("write");
        }
        let extra: &[&str] = if foreground { &["-f"] } else { &[] };
        let mut unit = UnderSystemd::start(&site, &syslog, extra, 30);
        // The first word to systemd is READY=1, and the port is open by then.
        assert_eq!(
            unit.next_message(&format!("-f {foreground}")),
            b"READY=1",
            "-f {foreground}"
        );
        let connected = std::net::TcpStream::connect(("127.0.0.1", port));
        assert!(
            connected.is_ok(),
            "-f {foreground}: READY=1 came before port {port} accepted: {connected:?}"
        );
        drop(connected);
        stop(unit.child.id());
        let status = unit.child.wait().expect("wait");
        assert!(
            status.success(),
            "-f {foreground}: {status}: {}",
            fs::read_to_string(&unit.stderr).unwrap_or_default()
        );
        assert_eq!(
            unit.next_message("STOPPING=1"),
            b"STOPPING=1",
            "-f {foreground}"
        );
    }
}

/// etc/omirrd.service run as systemd runs it: its ExecStart (the binary
/// under test for /usr/sbin/omirrd, with the test's paths) with
/// NOTIFY_SOCKET, then, once READY=1 arrives (when systemd would allow
/// `systemctl reload`), its ExecReload with $MAINPID. The daemon must
/// reload, not die of the SIGHUP.
#[test]
fn the_units_reload_command_reloads_as_soon_as_ready() {
    let unit = fs::read_to_string(etc().join("omirrd.service")).expect("etc/omirrd.service");
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("etc/omirrd.service has no {key}="))
            .to_string()
    };
    assert_eq!(setting("Type"), "notify");
    let exec_start = setting("ExecStart");
    let mut start = exec_start.split_whitespace();
    assert_eq!(start.next(), Some("/usr/sbin/omirrd"));
    let start_args: Vec<&str> = start.collect();
    let reload = setting("ExecReload");

    let site = Site::new();
    beta_on_a_free_port(&site);
    let syslog = Syslog::bind(&site);
    let mut unit = UnderSystemd::start(&site, &syslog, &start_args, 30);
    assert_eq!(unit.next_message("READY=1"), b"READY=1");
    let (child, err_path) = (&mut unit.child, unit.stderr.clone());
    // At once, as `systemctl reload` may: the handler must be in place.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let logged = syslog.until("configuration and peers reloaded");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("configuration and peers reloaded")),
        "SIGHUP at READY=1 did not reload: {logged:#?}\n{}",
        fs::read_to_string(&err_path).unwrap_or_default()
    );
    // systemd substitutes $MAINPID itself; the command runs without a shell.
    let reload = reload.replace("$MAINPID", &child.id().to_string());
    let mut words = reload.split_whitespace();
    let status = std::process::Command::new(words.next().expect("a command"))
        .args(words)
        .status()
        .expect("run ExecReload");
    assert!(status.success(), "{reload}: {status}");
    let logged = syslog.until("configuration and peers reloaded");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("configuration and peers reloaded")),
        "no reload logged: {logged:#?}\n{}",
        fs::read_to_string(&err_path).unwrap_or_default()
    );
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the daemon died of the reload"
    );
    stop(child.id());
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
}
