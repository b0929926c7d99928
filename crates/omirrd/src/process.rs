//! Runs a child process for the daemon: in its own process group, with a
//! time limit, feeding it its input and keeping the start of its output,
//! and says how it ended as an [`Outcome`] with a one-line summary for the
//! log.
//!
//! This module owns spawning, timing out (SIGTERM to the group, SIGKILL
//! [`KILL_GRACE`] later) and collecting output; it knows nothing of the
//! Distfile. Its user is [`crate::commands`] (`special`, `cmdspecial`,
//! and `sendmail` for `notify`). Blocking: call it from a thread of its
//! own, never from the async runtime.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Between SIGTERM and SIGKILL for a command that overran.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How much of each output stream is kept for the log.
const CAPTURE: usize = 4096;
/// Lines of each output stream in the log, and characters per line.
const LOG_LINES: usize = 5;
const LOG_LINE_CHARS: usize = 200;
/// How long to wait for a finished command's output to end: a background
/// process it started may hold the pipes open indefinitely.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// `sh -c COMMAND`.
pub(crate) fn shell(command: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(command);
    c
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Exited(i32),
    Signalled(i32),
    /// Overran its time limit and was killed.
    TimedOut,
    /// Could not be started (or followed).
    NotRun(String),
}

/// A command's end, with the start of its output.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub status: Status,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status == Status::Exited(0)
    }

    /// One line for the log: how it ended, then the first lines of output.
    pub fn summary(&self) -> String {
        let mut s = match &self.status {
            Status::Exited(c) => format!("exit status {c}"),
            Status::Signalled(n) => format!("killed by signal {n}"),
            Status::TimedOut => "timed out, killed".to_string(),
            Status::NotRun(e) => format!("could not run: {e}"),
        };
        let _ = write!(s, " after {:.2}s", self.elapsed.as_secs_f64());
        for (name, out) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if let Some(text) = first_lines(out) {
                let _ = write!(s, "; {name}: {text}");
            }
        }
        s
    }
}

/// The first non-blank lines of `bytes`, on one line; `None` if there are
/// none.
fn first_lines(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return None;
    }
    let mut shown: Vec<String> = lines
        .iter()
        .take(LOG_LINES)
        .map(|l| {
            let mut one: String = l
                .chars()
                .take(LOG_LINE_CHARS)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            if l.chars().count() > LOG_LINE_CHARS {
                one.push('…');
            }
            one
        })
        .collect();
    if lines.len() > LOG_LINES || bytes.len() >= CAPTURE {
        shown.push("…".to_string());
    }
    Some(shown.join(" | "))
}

/// Runs `cmd` in its own process group with `input` on its standard input
/// (else nothing), keeping the start of its output; kills the group if it
/// runs longer than `timeout`. Never fails: a command that cannot run is
/// an [`Outcome`] too.
pub(crate) fn run(mut cmd: Command, input: Option<Vec<u8>>, timeout: Duration) -> Outcome {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let start = Instant::now();
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Its own group, so that a timeout kills what the shell started too.
    .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                status: Status::NotRun(e.to_string()),
                stdout: Vec::new(),
                stderr: Vec::new(),
                elapsed: start.elapsed(),
            }
        }
    };
    let (done_tx, done_rx) = mpsc::channel();
    let stdout = capture(child.stdout.take(), done_tx.clone());
    let stderr = capture(child.stderr.take(), done_tx);
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        // A thread: a command that does not read its input must not block
        // us. Dropping `stdin` at the end closes it.
        let _ = std::thread::Builder::new()
            .name("omirrd-cmd-in".into())
            .spawn(move || {
                let _ = stdin.write_all(&input);
            });
    }
    let group = i32::try_from(child.id())
        .ok()
        .map(nix::unistd::Pid::from_raw);
    let signal = |sig| {
        if let Some(g) = group {
            let _ = nix::sys::signal::killpg(g, sig);
        }
    };
    let status = match wait_until(&mut child, start + timeout) {
        Ok(Some(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => Status::Exited(c),
            (None, Some(n)) => Status::Signalled(n),
            (None, None) => Status::NotRun(format!("ended oddly: {s}")),
        },
        Ok(None) => {
            signal(nix::sys::signal::Signal::SIGTERM);
            if !matches!(
                wait_until(&mut child, Instant::now() + KILL_GRACE),
                Ok(Some(_))
            ) {
                signal(nix::sys::signal::Signal::SIGKILL);
                let _ = wait_until(&mut child, Instant::now() + KILL_GRACE);
            }
            Status::TimedOut
        }
        Err(e) => {
            signal(nix::sys::signal::Signal::SIGKILL);
            let _ = wait_until(&mut child, Instant::now() + KILL_GRACE);
            Status::NotRun(format!("cannot wait for it: {e}"))
        }
    };
    let elapsed = start.elapsed();
    let deadline = Instant::now() + OUTPUT_GRACE;
    for _ in 0..2 {
        if done_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_err()
        {
            break;
        }
    }
    let take =
        |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap_or_else(|e| e.into_inner()));
    Outcome {
        status,
        stdout: take(&stdout),
        stderr: take(&stderr),
        elapsed,
    }
}

/// Waits for `child` to end, until `deadline`: `Ok(None)` if it still
/// runs then. Polling with a growing pause: a quick command costs little
/// extra latency, a long one few wake-ups, and no thread owns the child.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Reads `stream` to its end on a thread, keeping the first [`CAPTURE`]
/// bytes (the rest is read and dropped, so the command never blocks on a
/// full pipe); signals `done` at the end.
fn capture<R: Read + Send + 'static>(
    stream: Option<R>,
    done: mpsc::Sender<()>,
) -> Arc<Mutex<Vec<u8>>> {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let Some(mut stream) = stream else {
        let _ = done.send(());
        return kept;
    };
    let k = kept.clone();
    let spawned = std::thread::Builder::new()
        .name("omirrd-cmd-out".into())
        .spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut k = k.lock().unwrap_or_else(|e| e.into_inner());
                        let room = CAPTURE.saturating_sub(k.len());
                        k.extend_from_slice(&chunk[..n.min(room)]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        });
    if spawned.is_err() {
        // The stream is dropped with the closure: the command gets EPIPE
        // on writing, and its output is not in the log.
        tracing::debug!("cannot start a thread to read a command's output");
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::TIMEOUT;

    #[test]
    fn a_command_that_cannot_start_is_an_outcome() {
        let o = run(Command::new("/nonexistent/omirr-test"), None, TIMEOUT);
        assert!(matches!(o.status, Status::NotRun(_)), "{o:?}");
        assert!(o.summary().starts_with("could not run: "));
    }

    #[test]
    fn a_hanging_command_and_its_children_are_killed_after_the_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let o = run(shell(&cmd), None, Duration::from_millis(200));
        assert_eq!(o.status, Status::TimedOut);
        assert!(o.elapsed >= Duration::from_millis(200), "{o:?}");
        assert!(o.elapsed < Duration::from_secs(5), "{o:?}");
        assert!(!o.ok());
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("a pid");
        // The shell's child is gone too (or a zombie awaiting its reaper).
        let gone = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        };
        let until = Instant::now() + Duration::from_secs(3);
        while !gone() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "sleep {pid} survived the timeout");
    }

    #[test]
    fn output_is_capped_and_a_background_child_does_not_hold_us() {
        let o = run(
            shell("head -c 100000 /dev/zero | tr '\\0' 'y'; sleep 5 &"),
            None,
            TIMEOUT,
        );
        assert_eq!(o.status, Status::Exited(0));
        assert_eq!(o.stdout.len(), CAPTURE);
        assert!(o.elapsed < Duration::from_secs(2), "{o:?}");
        assert!(o.summary().contains("stdout: yyy"), "{}", o.summary());
    }

    #[test]
    fn input_reaches_the_command() {
        let o = run(shell("cat"), Some(b"To: x\n\nbody\n".to_vec()), TIMEOUT);
        assert_eq!(o.status, Status::Exited(0));
        assert_eq!(o.stdout, b"To: x\n\nbody\n");
    }
}
