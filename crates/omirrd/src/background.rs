//! Running as a daemon: detaching from the terminal, the pid file, and
//! where the log goes meanwhile (see [`crate::logging`]).
//!
//! How omirrd runs is [`crate::mode`]'s to say; this module carries it
//! out. In the background, everything is loaded and checked first, so that
//! mistakes reach the terminal; then omirrd forks, the child starts a new
//! session and forks again (the daemon can never regain a terminal),
//! changes to `/`, sets the umask to 022, points standard input and output
//! at `/dev/null` and standard error at `/dev/null` (or at
//! `<state-dir>/omirrd.log` if there is no syslog), and writes the pid
//! file. The command returns, with status 0, only once all that is done;
//! if it fails, with the reason and status 1.
//!
//! The pid file, `<state-dir>/omirrd.pid`, holds the daemon's pid and a
//! newline. It is written without `-f` (in the background and under
//! systemd) and removed when the daemon stops. Whatever the mode, omirrd
//! refuses to start while the pid file names a running omirrd, and removes
//! a pid file that names no running omirrd.
//!
//! Forking is safe only while the process has one thread: the tokio
//! runtime starts after [`start`], and [`start`] checks that nothing before
//! it started a thread.

use crate::cli::DaemonArgs;
use crate::logging;
use crate::mode::{mode, Mode};
use anyhow::{bail, Context, Result};
use nix::sys::stat::{umask, Mode as Perms};
use nix::unistd::{fork, setsid, ForkResult, Pid};
use std::convert::Infallible;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The pid file's name in the state directory.
pub const PID_FILE: &str = "omirrd.pid";

/// The log's name in the state directory when there is no syslog.
const LOG_FILE: &str = "omirrd.log";

/// Where a daemon without syslog logs.
pub fn log_file(state_dir: &Path) -> PathBuf {
    state_dir.join(LOG_FILE)
}

/// The daemon process, once [`start`] is done: the options to use from
/// now on, and the pid file to remove when it ends.
pub struct Running {
    args: DaemonArgs,
    pid_file: Option<PathBuf>,
    detached: bool,
}

impl Running {
    /// The options, with every path absolute once the daemon has changed
    /// to `/` (a reload reads the files again).
    pub fn args(&self) -> &DaemonArgs {
        &self.args
    }

    /// Ends the run with `result`: logs an error that standard error can
    /// no longer show, and removes the pid file.
    pub fn finish(self, result: Result<()>) -> Result<()> {
        if let Err(e) = &result {
            if self.detached && logging::uses_syslog() {
                tracing::error!("{e:#}");
            }
        }
        drop(self);
        result
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(path) = &self.pid_file else { return };
        // Only our own: a pid file someone replaced is theirs.
        let ours = fs::read_to_string(path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!("cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// Refuses to start if another omirrd runs with this state directory;
/// then, without `-f`, detaches (see the module documentation) and writes
/// the pid file. In the background, only the daemon returns: the command
/// itself exits here, 0 once the daemon is set up, or 1 with an error.
pub fn start(args: &DaemonArgs) -> Result<Running> {
    let pid_file = args.state_dir.join(PID_FILE);
    refuse_if_running(&pid_file)?;
    match mode(args) {
        Mode::Foreground => Ok(Running {
            args: args.clone(),
            pid_file: None,
            detached: false,
        }),
        Mode::Supervised => {
            write_pid_file(&pid_file)?;
            Ok(Running {
                args: args.clone(),
                pid_file: Some(pid_file),
                detached: false,
            })
        }
        Mode::Background => daemonise(args),
    }
}

/// What the daemon reports to the waiting command when it is set up;
/// anything else is an error message.
const SET_UP: &[u8] = b"OK";

#[allow(unsafe_code)] // see the SAFETY comment within
fn daemonise(args: &DaemonArgs) -> Result<Running> {
    // After the fork, the daemon works in `/`: every path it still uses
    // must be absolute.
    let mut args = args.clone();
    for path in [
        &mut args.config,
        &mut args.peers,
        &mut args.root,
        &mut args.state_dir,
    ] {
        *path = std::path::absolute(&*path)
            .with_context(|| format!("cannot make {} absolute", path.display()))?;
    }
    let state_dir = &args.state_dir;
    let pid_file = state_dir.join(PID_FILE);
    if let Some(threads) = threads() {
        if threads > 1 {
            bail!("cannot go into the background: {threads} threads are running already (a bug in omirrd; -f works)");
        }
    }
    // What can fail is opened here, while errors still reach the terminal.
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("cannot open /dev/null")?;
    let stderr = if logging::uses_syslog() {
        null.try_clone().context("cannot duplicate /dev/null")?
    } else {
        let log = log_file(state_dir);
        tracing::warn!(
            "no syslog at {}: logging to {} from now on",
            logging::syslog_path().display(),
            log.display()
        );
        File::options()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?
    };
    let (report_rx, report_tx) = nix::unistd::pipe().context("cannot create a pipe")?;
    // Anything buffered would be written twice, once by each process.
    let _ = std::io::stdout().flush();
    // SAFETY: the process has one thread (checked above), so the child
    // may run any code.
    match unsafe { fork() }.context("cannot fork")? {
        ForkResult::Parent { child } => {
            drop(report_tx);
            match wait_for_daemon(report_rx, child)? {}
        }
        ForkResult::Child => {
            drop(report_rx);
            let mut report = File::from(report_tx);
            match detach(&null, &stderr, &pid_file) {
                Ok(()) => {
                    logging::detached();
                    if logging::uses_syslog() {
                        // A panic's message would go to /dev/null.
                        let default = std::panic::take_hook();
                        std::panic::set_hook(Box::new(move |info| {
                            tracing::error!("{info}");
                            default(info);
                        }));
                    }
                    tracing::info!(
                        pid = std::process::id(),
                        pid_file = %pid_file.display(),
                        "running in the background"
                    );
                    // If the command is gone, nobody needs to know.
                    let _ = report.write_all(SET_UP);
                    drop(report);
                    Ok(Running {
                        args,
                        pid_file: Some(pid_file),
                        detached: true,
                    })
                }
                Err(e) => {
                    let _ = write!(report, "{e:#}");
                    std::process::exit(1)
                }
            }
        }
    }
}

/// In the first child: the second fork and the rest of detaching. Returns
/// in the daemon only.
#[allow(unsafe_code)] // see the SAFETY comment within
fn detach(null: &File, stderr: &File, pid_file: &Path) -> Result<()> {
    setsid().context("cannot start a new session")?;
    // SAFETY: still one thread, as in the parent.
    match unsafe { fork() }.context("cannot fork a second time")? {
        // The session leader's only job was to give its child a session
        // without a terminal; a child that is no session leader can never
        // acquire one.
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    nix::unistd::chdir("/").context("cannot change to /")?;
    umask(Perms::from_bits_truncate(0o022));
    nix::unistd::dup2_stdin(null).context("cannot redirect standard input")?;
    nix::unistd::dup2_stdout(null).context("cannot redirect standard output")?;
    nix::unistd::dup2_stderr(stderr).context("cannot redirect standard error")?;
    write_pid_file(pid_file)
}

/// In the command: waits until the daemon reports, then exits 0 or fails
/// with its message.
fn wait_for_daemon(report: OwnedFd, child: Pid) -> Result<Infallible> {
    let mut message = Vec::new();
    // Ends when the daemon has reported, or when it and the first child
    // have exited without doing so.
    let read = File::from(report).read_to_end(&mut message);
    // Reap the first child, which exits as soon as it has forked.
    let _ = nix::sys::wait::waitpid(child, None);
    read.context("cannot hear from the daemon")?;
    if message == SET_UP {
        std::process::exit(0);
    }
    if message.is_empty() {
        bail!("the daemon ended while going into the background; see the system log");
    }
    bail!("{}", String::from_utf8_lossy(&message))
}

/// The number of threads of this process, if /proc tells.
fn threads() -> Option<usize> {
    fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

fn write_pid_file(path: &Path) -> Result<()> {
    let text = format!("{}\n", std::process::id());
    omirr_open::secure::write_atomic(path, text.as_bytes(), 0o644)
        .with_context(|| format!("cannot write the pid file {}", path.display()))
}

/// Fails if the pid file names a running omirrd; removes it if it names
/// nothing running, or another program.
fn refuse_if_running(pid_file: &Path) -> Result<()> {
    let text = match fs::read_to_string(pid_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", pid_file.display())),
    };
    let pid = text.trim().parse::<i32>().ok().filter(|&p| p > 0);
    // Our own pid can only be in an old file: pids restart in a container.
    let state = match pid {
        Some(pid) if pid as u32 != std::process::id() => process(pid),
        _ => Process::Gone,
    };
    match (pid, state) {
        (Some(pid), Process::Omirrd) => bail!(
            "omirrd is already running as pid {pid}, with the state directory {} (see {}); stop it first",
            pid_file.parent().unwrap_or(Path::new(".")).display(),
            pid_file.display()
        ),
        (Some(pid), Process::Unknown) => bail!(
            "{} names pid {pid}, which is running; if it is not omirrd, remove {}",
            pid_file.display(),
            pid_file.display()
        ),
        _ => {
            match fs::remove_file(pid_file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot remove the stale pid file {}", pid_file.display())
                    })
                }
            }
            tracing::info!(
                "removed {}, left by an omirrd that is no longer running",
                pid_file.display()
            );
            Ok(())
        }
    }
}

/// What runs as a pid.
#[derive(Debug, PartialEq, Eq)]
enum Process {
    /// Nothing, or a zombie.
    Gone,
    /// A program other than omirrd.
    Other,
    Omirrd,
    /// Something, but /proc does not say what.
    Unknown,
}

fn process(pid: i32) -> Process {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat, &own_name()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && Path::new("/proc/self").exists() => {
            Process::Gone
        }
        // No /proc: ask the kernel whether the pid exists at all.
        _ => match nix::sys::signal::kill(Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::ESRCH) => Process::Gone,
            _ => Process::Unknown,
        },
    }
}

/// This program's name as the kernel knows it, `omirrd` normally.
fn own_name() -> String {
    fs::read_to_string("/proc/self/comm")
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| "omirrd".to_string())
}

/// Reads `/proc/PID/stat`: `PID (NAME) STATE ...`. The name may hold
/// spaces and parentheses, so the last `)` ends it.
fn parse_stat(stat: &str, own_name: &str) -> Process {
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return Process::Unknown;
    };
    if close < open {
        return Process::Unknown;
    }
    let name = &stat[open + 1..close];
    match stat[close + 1..].trim_start().chars().next() {
        Some('Z' | 'X' | 'x') => Process::Gone,
        _ if name == own_name || name == "omirrd" => Process::Omirrd,
        _ => Process::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_name_and_state_of_a_process() {
        assert_eq!(parse_stat("12 (omirrd) S 1 12 12 0", "x"), Process::Omirrd);
        assert_eq!(parse_stat("12 (omirrd-2) S 1", "omirrd-2"), Process::Omirrd);
        assert_eq!(parse_stat("12 (omirrd) Z 1", "omirrd"), Process::Gone);
        assert_eq!(parse_stat("12 (a) b) R 1", "omirrd"), Process::Other);
        assert_eq!(parse_stat("12 (omirrd) R 1", "omirrd"), Process::Omirrd);
        assert_eq!(parse_stat("garbage", "omirrd"), Process::Unknown);
    }

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_gone() {
        let me = std::process::id() as i32;
        // The test binary's name is its own name: it counts as omirrd.
        assert_eq!(process(me), Process::Omirrd);
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let pid = child.id() as i32;
        child.wait().expect("wait");
        assert_eq!(process(pid), Process::Gone);
    }

    fn pid_file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(PID_FILE);
        fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn a_stale_or_broken_pid_file_is_removed() {
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let dead = child.id();
        child.wait().expect("wait");
        for text in [format!("{dead}\n"), "junk".to_string(), String::new()] {
            let (_dir, path) = pid_file_with(&text);
            refuse_if_running(&path).expect("started");
            assert!(!path.exists(), "{text:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        refuse_if_running(&dir.path().join(PID_FILE)).expect("no pid file");
    }

    #[test]
    fn a_pid_file_naming_another_program_is_stale() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .expect("sleep");
        let (_dir, path) = pid_file_with(&format!("{}\n", child.id()));
        let result = refuse_if_running(&path);
        let _ = child.kill();
        let _ = child.wait();
        result.expect("sleep is not omirrd");
        assert!(!path.exists());
    }
}
