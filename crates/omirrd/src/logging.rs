//! Logging setup. `OMIRR_LOG` (an `EnvFilter` directive such as
//! `omirr_net=trace,info`) wins over `-v`/`-D`, wherever the log goes.
//! What the levels hold ([`filter_for`]): INFO what an administrator
//! must know; DEBUG (`-v`) what moves, a line per change, file and
//! action; TRACE (`-D`) every watcher event and frame and the reason for
//! every decision. `-v` and `-D` raise omirr's own crates only: the
//! libraries under it (TLS, the watcher) stay at INFO unless `OMIRR_LOG`
//! asks for them.
//!
//! Where it goes depends on how the daemon runs ([`Mode`]):
//! - in the foreground (`-f`): standard error, one human line per event;
//! - in the background: the same lines on standard error until the fork,
//!   so that configuration errors reach the terminal, and every event
//!   also to syslog; after the fork, syslog only;
//! - under systemd without `-f`: syslog only (journald reads `/dev/log`,
//!   and standard error would duplicate every line).
//!
//! Without a syslog socket the human lines stay on: on standard error
//! under systemd, in `<state-dir>/omirrd.log` in the background (see
//! [`crate::background`]).
//!
//! The syslog writer is a small [`MakeWriter`] rather than a crate: it is
//! about eighty lines, and what a crate would add (network transports,
//! RFC 5424 structured data) omirrd does not need.

use crate::cli::DaemonArgs;
use crate::mode::{self, Mode};
use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where syslog listens, unless the (undocumented, for tests)
/// `OMIRR_SYSLOG_SOCKET` names another socket.
const SYSLOG_SOCKET: &str = "/dev/log";

/// The syslog facility: `daemon`.
const FACILITY_DAEMON: u8 = 3;

/// Whether the human lines are written to standard error. Turned off once
/// the daemon has detached and logs to syslog.
static HUMAN: AtomicBool = AtomicBool::new(true);

/// Whether events also go to syslog.
static SYSLOG: AtomicBool = AtomicBool::new(false);

/// The log filter `-v` (counted) and `-D` ask for.
fn filter_for(verbose: u8, debug: bool) -> &'static str {
    // Every omirr crate's target starts with "omirr" (omirrd, omirr_sync,
    // omirr_fs, ...), and a directive's target matches by prefix.
    match (verbose, debug) {
        (0, false) => "info",
        (1, false) => "info,omirr=debug",
        _ => "info,omirr=trace",
    }
}

pub fn init(args: &DaemonArgs) -> Result<()> {
    let level = filter_for(args.verbose, args.debug);
    let filter = match std::env::var("OMIRR_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .with_context(|| format!("OMIRR_LOG='{directives}' is not a valid log filter"))?,
        _ => EnvFilter::new(level),
    };
    let mode = mode::mode(args);
    let syslog = match mode {
        Mode::Foreground => None,
        Mode::Background | Mode::Supervised => Syslog::open(syslog_path()),
    };
    let human = mode == Mode::Foreground || mode == Mode::Background || syslog.is_none();
    HUMAN.store(human, Ordering::Relaxed);
    SYSLOG.store(syslog.is_some(), Ordering::Relaxed);
    let with_target = args.debug || args.verbose > 0;
    let human_layer = human.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr.with_filter(|_| HUMAN.load(Ordering::Relaxed)))
            // Colours only on a terminal that stays ours: a detached
            // daemon's standard error may become a log file.
            .with_ansi(
                mode == Mode::Foreground && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )
            .with_target(with_target)
    });
    let syslog_layer = syslog.map(|s| syslog_layer(s, with_target));
    tracing_subscriber::registry()
        .with(filter)
        .with(human_layer)
        .with(syslog_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    Ok(())
}

/// Whether events go to syslog.
pub fn uses_syslog() -> bool {
    SYSLOG.load(Ordering::Relaxed)
}

/// Called once the daemon has detached: standard error is gone, so the
/// human lines stop, unless nothing else receives the events.
pub fn detached() {
    if uses_syslog() {
        HUMAN.store(false, Ordering::Relaxed);
    }
}

/// The syslog socket.
pub fn syslog_path() -> PathBuf {
    std::env::var_os("OMIRR_SYSLOG_SOCKET")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SYSLOG_SOCKET))
}

/// The syslog layer: syslog adds the time and takes the level from the
/// priority, so the text has neither, nor colours.
fn syslog_layer<S>(syslog: Syslog, with_target: bool) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(syslog)
        .without_time()
        .with_level(false)
        .with_ansi(false)
        .with_target(with_target)
}

/// Sends each event to the local syslog socket as one RFC 3164 datagram,
/// `<PRI>omirrd[PID]: message`, without a timestamp (syslog adds its own).
#[derive(Clone)]
struct Syslog {
    socket: Arc<UnixDatagram>,
    path: Arc<Path>,
}

impl Syslog {
    /// A writer to the socket at `path`, or `None` if nothing listens
    /// there.
    fn open(path: PathBuf) -> Option<Syslog> {
        let socket = UnixDatagram::unbound().ok()?;
        // Probe with a throwaway connected socket; events are sent with
        // send_to, which finds a restarted syslog daemon's new socket.
        UnixDatagram::unbound().ok()?.connect(&path).ok()?;
        // A stuck syslog daemon must not stop omirrd for good.
        socket
            .set_write_timeout(Some(Duration::from_secs(1)))
            .ok()?;
        Some(Syslog {
            socket: Arc::new(socket),
            path: path.into(),
        })
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogEvent<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SyslogEvent::new(self, Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        SyslogEvent::new(self, *meta.level())
    }
}

/// One event: collected while the fmt layer writes it, sent when dropped,
/// so that an event is one datagram however it was written.
struct SyslogEvent<'a> {
    to: &'a Syslog,
    level: Level,
    text: Vec<u8>,
}

impl<'a> SyslogEvent<'a> {
    fn new(to: &'a Syslog, level: Level) -> Self {
        SyslogEvent {
            to,
            level,
            text: Vec::new(),
        }
    }
}

impl Write for SyslogEvent<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogEvent<'_> {
    fn drop(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let line = datagram(self.level, std::process::id(), &self.text);
        // Nowhere is left to report a lost log line to.
        let _ = self.to.socket.send_to(&line, &*self.to.path);
    }
}

/// The syslog severity of a tracing level.
fn severity(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// `<PRI>omirrd[PID]: text` on one line: line breaks inside `text` become
/// ` | `, other control characters `?` (a syslog line is one line).
fn datagram(level: Level, pid: u32, text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let priority = FACILITY_DAEMON * 8 + severity(level);
    let mut line = format!("<{priority}>omirrd[{pid}]: ");
    let mut lines = text.trim_end_matches(['\n', '\r']).lines().peekable();
    while let Some(l) = lines.next() {
        line.extend(l.chars().map(|c| match c {
            '\t' => '\t',
            c if c.is_control() => '?',
            c => c,
        }));
        if lines.peek().is_some() {
            line.push_str(" | ");
        }
    }
    line.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(level: Level, message: &str) -> String {
        String::from_utf8(datagram(level, 42, message.as_bytes())).expect("utf-8")
    }

    #[test]
    fn priority_is_facility_daemon_and_the_level() {
        assert_eq!(text(Level::ERROR, "x\n"), "<27>omirrd[42]: x");
        assert_eq!(text(Level::WARN, "x\n"), "<28>omirrd[42]: x");
        assert_eq!(text(Level::INFO, "x\n"), "<30>omirrd[42]: x");
        assert_eq!(text(Level::DEBUG, "x\n"), "<31>omirrd[42]: x");
        assert_eq!(text(Level::TRACE, "x\n"), "<31>omirrd[42]: x");
    }

    #[test]
    fn lines_are_folded_and_control_characters_replaced() {
        assert_eq!(
            text(Level::ERROR, "a:1: error: one\r\nb:2: error: two\nlast\n"),
            "<27>omirrd[42]: a:1: error: one | b:2: error: two | last"
        );
        assert_eq!(
            text(Level::INFO, "bell\x07 esc\x1b[1m tab\t\n"),
            "<30>omirrd[42]: bell? esc?[1m tab\t"
        );
    }

    /// The whole layer, as the daemon sets it up, against a socket of
    /// our own: one datagram per event, no time, no level, no colours.
    #[test]
    fn events_reach_the_socket_one_datagram_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).expect("bind");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let syslog = Syslog::open(path.clone()).expect("the socket listens");
        let subscriber = tracing_subscriber::registry().with(syslog_layer(syslog, false));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(peer = "beta", "cannot connect:\nrefused");
            tracing::error!("bad");
        });
        let mut buf = [0u8; 4096];
        let mut received = Vec::new();
        for _ in 0..2 {
            let n = server.recv(&mut buf).expect("a datagram");
            received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let pid = std::process::id();
        assert_eq!(
            received,
            [
                format!("<28>omirrd[{pid}]: cannot connect: | refused peer=\"beta\""),
                format!("<27>omirrd[{pid}]: bad"),
            ]
        );
        assert!(received.iter().all(|d| !d.contains('\x1b')));
    }

    /// `-v` lets omirr's DEBUG lines through and `-D` (or `-vv`) its TRACE
    /// lines, and neither lets a library's DEBUG lines through.
    #[test]
    fn verbose_and_debug_raise_omirr_only() {
        use tracing::level_filters::LevelFilter;
        use tracing_subscriber::layer::Layer;
        let passes = |filter: &str, target: &'static str, level: Level| {
            let seen = Arc::new(std::sync::Mutex::new(0));
            let count = seen.clone();
            let counting = tracing_subscriber::fmt::layer()
                .with_writer(move || {
                    *count.lock().expect("lock") += 1;
                    std::io::sink()
                })
                .with_filter(LevelFilter::TRACE);
            let subscriber = tracing_subscriber::registry()
                .with(EnvFilter::new(filter))
                .with(counting);
            tracing::subscriber::with_default(subscriber, || match (target, level) {
                ("omirr_sync::session", Level::DEBUG) => {
                    tracing::debug!(target: "omirr_sync::session", "x")
                }
                ("omirr_sync::session", Level::TRACE) => {
                    tracing::trace!(target: "omirr_sync::session", "x")
                }
                ("omirrd", Level::INFO) => tracing::info!(target: "omirrd", "x"),
                ("rustls", Level::DEBUG) => tracing::debug!(target: "rustls", "x"),
                _ => unreachable!("not a case of this test"),
            });
            let n = *seen.lock().expect("lock");
            n > 0
        };
        let quiet = filter_for(0, false);
        let v = filter_for(1, false);
        let d = filter_for(0, true);
        assert_eq!(filter_for(2, false), d, "-vv is -D");
        assert!(passes(quiet, "omirrd", Level::INFO));
        assert!(!passes(quiet, "omirr_sync::session", Level::DEBUG));
        assert!(passes(v, "omirr_sync::session", Level::DEBUG));
        assert!(!passes(v, "omirr_sync::session", Level::TRACE));
        assert!(passes(d, "omirr_sync::session", Level::TRACE));
        assert!(!passes(d, "rustls", Level::DEBUG));
    }

    #[test]
    fn no_syslog_without_a_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Syslog::open(dir.path().join("nothing")).is_none());
    }
}
