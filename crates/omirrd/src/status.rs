//! What the daemon tells `omirrd status`: each peer's session, the local
//! counters and the changes set aside (the engine keeps them:
//! `omirr_sync::counters`, the index), served as one JSON object on a Unix socket in the state
//! directory (`omirrd.sock`, mode 0600: the status names hosts, paths and
//! errors, which are the administrator's business only).
//!
//! `omirrd status` shows it as a table, as that JSON (`--json`, whose
//! schema [`SCHEMA`] numbers, documented in docs/omirrd.8.md), or as
//! metrics in the Prometheus text format (`--prometheus`); its exit code
//! says whether the mirror is healthy ([`exit_code`]).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The version of the status' JSON form. Raised when a field changes
/// meaning or goes; a new field does not raise it.
pub const SCHEMA: u32 = 1;

/// How `omirrd status` prints the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Table,
    Json,
    Prometheus,
}
use std::sync::atomic::Ordering;

pub use omirr_sync::counters::{now_secs, Counters, PeerStatus};

pub const SOCKET: &str = "omirrd.sock";

/// Everything the status shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// [`SCHEMA`].
    #[serde(default)]
    pub schema: u32,
    pub host: String,
    pub pid: u32,
    pub last_seq: u64,
    pub local_changes: u64,
    pub applied_changes: u64,
    /// Local changes undone where this host only receives (`receiveonly`).
    #[serde(default)]
    pub undone_changes: u64,
    /// Conflicts met since the daemon started (see docs/sync-model.md,
    /// "Conflicts"), and the conflict copies this host made for them.
    #[serde(default)]
    pub conflicts: u64,
    #[serde(default)]
    pub conflict_copies: u64,
    pub peers: BTreeMap<String, PeerStatus>,
    /// How many peers' changes are set aside (could not be applied; see
    /// docs/sync-model.md).
    #[serde(default)]
    pub aside_count: usize,
    /// The first [`ASIDE_SHOWN`] of them.
    #[serde(default)]
    pub aside: Vec<AsideStatus>,
    /// Tombstones forgotten by expiry since start.
    #[serde(default)]
    pub expired_tombstones: u64,
    /// Tombstones expiry recorded since start to bury what an expiring
    /// one hid.
    #[serde(default)]
    pub buried_tombstones: u64,
    /// Reconciliations with peers that forgot more than this host had
    /// from them, completed since start.
    #[serde(default)]
    pub reconciliations: u64,
}

/// The most set-aside changes the status lists (it counts them all).
pub const ASIDE_SHOWN: usize = 100;

/// A change set aside, as the status shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AsideStatus {
    pub peer: String,
    pub path: String,
    pub reason: String,
    pub attempts: u32,
    /// Unix seconds of the first failure.
    pub since: u64,
}

/// What the status shows now.
pub fn snapshot(counters: &Counters, host: &str, last_seq: u64, aside: Vec<AsideStatus>) -> Status {
    let mut peers = counters.peers();
    for a in &aside {
        if let Some(p) = peers.get_mut(&a.peer) {
            p.aside += 1;
        }
    }
    Status {
        schema: SCHEMA,
        aside_count: aside.len(),
        aside: aside.into_iter().take(ASIDE_SHOWN).collect(),
        host: host.to_string(),
        pid: std::process::id(),
        last_seq,
        local_changes: counters.local_changes.load(Ordering::Relaxed),
        applied_changes: counters.applied_changes.load(Ordering::Relaxed),
        undone_changes: counters.undone_changes.load(Ordering::Relaxed),
        expired_tombstones: counters.expired_tombstones.load(Ordering::Relaxed),
        buried_tombstones: counters.buried_tombstones.load(Ordering::Relaxed),
        reconciliations: counters.reconciliations.load(Ordering::Relaxed),
        conflicts: counters.conflicts.load(Ordering::Relaxed),
        conflict_copies: counters.conflict_copies.load(Ordering::Relaxed),
        peers,
    }
}

/// Where the socket of the daemon with this state directory lives.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Binds the status socket (replacing a stale one), mode 0600.
pub fn bind(state_dir: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(state_dir);
    // A socket left by a killed daemon; the index lock has already ruled
    // out a live one.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot create the status socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

/// What a client asks on the status socket: one line, `status` (also
/// an empty request, or none within [`REQUEST_WAIT`]), `verify` or
/// `verify --deep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Status,
    Verify { deep: bool },
}

/// How long the daemon waits for a client's request line before it
/// answers with the status (a client that only reads, as `omirrd status`
/// did before requests existed).
pub const REQUEST_WAIT: Duration = Duration::from_secs(2);

/// The longest request line.
const MAX_REQUEST: usize = 256;

impl Request {
    /// The request a client's line names.
    pub fn parse(line: &[u8]) -> Result<Request, String> {
        match String::from_utf8_lossy(line).trim() {
            "" | "status" => Ok(Request::Status),
            "verify" => Ok(Request::Verify { deep: false }),
            "verify --deep" => Ok(Request::Verify { deep: true }),
            other => Err(format!(
                "unknown request {:?} (expected status, verify or verify --deep)",
                other.chars().take(80).collect::<String>()
            )),
        }
    }
}

/// Serves every connection in a task of its own: reads its request and
/// answers it (the status, or `verify`'s report), then closes it.
pub async fn serve<S, V, F>(listener: tokio::net::UnixListener, status: S, verify: V)
where
    S: Fn() -> Status + Send + Sync + 'static,
    V: Fn(bool) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Vec<u8>> + Send + 'static,
{
    let status = std::sync::Arc::new(status);
    let verify = std::sync::Arc::new(verify);
    let mut failures = omirr_net::listen::Throttle::default();
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            // Out of descriptors, the connection stays queued and the
            // socket ready: without a pause this loop would spin.
            Err(e) => {
                omirr_net::listen::accept_failed("status socket", &e, &mut failures).await;
                continue;
            }
        };
        let (status, verify) = (status.clone(), verify.clone());
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut conn = conn;
            let request = read_request(&mut conn).await;
            let body = match request {
                Ok(Request::Status) => match serde_json::to_vec(&status()) {
                    Ok(b) => b,
                    Err(e) => error_body(&e.to_string()),
                },
                Ok(Request::Verify { deep }) => verify(deep).await,
                Err(e) => error_body(&e),
            };
            let _ = conn.write_all(&body).await;
        });
    }
}

fn error_body(e: &str) -> Vec<u8> {
    serde_json::json!({ "error": e }).to_string().into_bytes()
}

/// A client's request line: up to a newline, the end of its writing, or
/// [`REQUEST_WAIT`] (then whatever came, usually nothing: the status).
async fn read_request(conn: &mut tokio::net::UnixStream) -> Result<Request, String> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    let mut buf = [0u8; MAX_REQUEST];
    let deadline = tokio::time::Instant::now() + REQUEST_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                line.extend_from_slice(&buf[..n]);
                if let Some(end) = line.iter().position(|&b| b == b'\n') {
                    line.truncate(end);
                    break;
                }
                if line.len() > MAX_REQUEST {
                    return Err(format!("a request longer than {MAX_REQUEST} bytes"));
                }
            }
        }
    }
    Request::parse(&line)
}

/// `omirrd status`: asks the daemon and prints what it says. Exits 0 when
/// every peer is connected and caught up, 1 when not, 2 when no daemon
/// answers (see [`exit_code`]).
pub fn show(state_dir: &Path, form: Form) -> ExitCode {
    let body = match ask(state_dir, "status", Duration::from_secs(10)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("omirrd: {e:#}");
            if form == Form::Prometheus {
                print!("{}", prometheus_down());
            }
            return ExitCode::from(2);
        }
    };
    let status: Status = match serde_json::from_str(&body) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "omirrd: unreadable status from {}: {e}",
                socket_path(state_dir).display()
            );
            return ExitCode::from(2);
        }
    };
    match form {
        Form::Json => println!("{body}"),
        Form::Prometheus => print!("{}", prometheus(&status)),
        Form::Table => print!("{}", render(&status, now_secs())),
    }
    ExitCode::from(exit_code(&status))
}

/// What the daemon with this state directory answers to `request`,
/// waiting at most `limit` for it.
pub fn ask(state_dir: &Path, request: &str, limit: Duration) -> Result<String> {
    use std::io::{Read, Write};
    let path = socket_path(state_dir);
    let mut conn = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "no omirrd answers on {} (is it running with --state-dir {}?)",
            path.display(),
            state_dir.display()
        )
    })?;
    // A daemon that accepts and never answers (stopped with SIGSTOP) must
    // not hang a monitoring check.
    conn.set_read_timeout(Some(limit))
        .and_then(|()| conn.set_write_timeout(Some(limit)))
        .with_context(|| format!("cannot use {}", path.display()))?;
    conn.write_all(format!("{request}\n").as_bytes())
        .and_then(|()| conn.shutdown(std::net::Shutdown::Write))
        .with_context(|| format!("cannot ask {}", path.display()))?;
    let mut body = String::new();
    conn.read_to_string(&mut body)
        .with_context(|| format!("cannot read {}", path.display()))?;
    // The daemon refused the request (an older daemon, or a typo).
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(&body) {
        if let Some(serde_json::Value::String(e)) = m.get("error") {
            anyhow::bail!("the daemon on {} says: {e}", path.display());
        }
    }
    Ok(body)
}

/// 0 when every peer is connected and caught up (or there is none), 1
/// otherwise: the exit code of `omirrd status` when the daemon answers.
pub fn exit_code(s: &Status) -> u8 {
    let healthy = s.peers.values().all(|p| p.connected && p.caught_up);
    if healthy {
        0
    } else {
        1
    }
}

/// The status as a table for people.
pub fn render(s: &Status, now: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "omirrd on {} (pid {}): index at sequence {}, {} local changes and {} from peers since start",
        s.host, s.pid, s.last_seq, s.local_changes, s.applied_changes
    );
    if s.conflicts > 0 {
        let _ = writeln!(
            out,
            "{} conflict(s) since start, {} conflict cop(ies) made here (see the log's warnings)",
            s.conflicts, s.conflict_copies
        );
    }
    peer_table(&mut out, s, now);
    backlog_table(&mut out, s);
    notes(&mut out, s, now);
    out
}

/// The table of peers: state, counts, clock, last error.
fn peer_table(out: &mut String, s: &Status, now: u64) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>7}  last error",
        "peer", "state", "chg out", "chg in", "frm out", "frm in", "queue", "clock", "refused"
    );
    for (name, p) in &s.peers {
        let state = match (p.connected, p.since) {
            (true, Some(t)) if !p.caught_up => format!("catching up {}", ago(now, t)),
            (true, Some(t)) => format!("up {}", ago(now, t)),
            (false, Some(t)) => format!("down {}", ago(now, t)),
            (_, None) => "never connected".to_string(),
        };
        // The peer's clock against ours, as last measured.
        let clock = match p.clock_offset_ms {
            Some(ms) if ms.abs() >= 100_000 => format!("{:+}s", ms / 1000),
            Some(ms) => format!("{:+.1}s", ms as f64 / 1000.0),
            None => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>7}  {}",
            name,
            state,
            p.changes_sent,
            p.changes_received,
            p.frames_sent,
            p.frames_received,
            p.queue,
            clock,
            p.refused,
            p.last_error.as_deref().unwrap_or("-").escape_debug()
        );
    }
}

/// The table of the peers' backlogs and rates.
fn backlog_table(out: &mut String, s: &Status) {
    use std::fmt::Write as _;
    if !s.peers.is_empty() {
        let _ = writeln!(
            out,
            "{:<16} {:<28} {:<28} {:>10} {:>10} {:>6}",
            "peer", "backlog in (chg files size)", "backlog out", "in/s", "out/s", "aside"
        );
    }
    for (name, p) in &s.peers {
        let backlog = |b: &omirr_sync::counters::Backlog| {
            format!("{} {} {}", b.changes, b.files, size(b.bytes))
        };
        let _ = writeln!(
            out,
            "{:<16} {:<28} {:<28} {:>10} {:>10} {:>6}",
            name,
            backlog(&p.backlog_in),
            backlog(&p.backlog_out),
            size(p.rate_in),
            size(p.rate_out),
            p.aside
        );
    }
}

/// What one-way sets held back, and the changes set aside.
fn notes(out: &mut String, s: &Status, now: u64) {
    use std::fmt::Write as _;
    // One-way sets: what this host undid, and what it did not apply.
    let not_applied: Vec<String> = s
        .peers
        .iter()
        .filter(|(_, p)| p.not_applied > 0)
        .map(|(n, p)| format!("{} from {n}", p.not_applied))
        .collect();
    if s.undone_changes > 0 || !not_applied.is_empty() {
        let _ = writeln!(
            out,
            "one-way sets: {} local change(s) undone (receiveonly); peers' changes not applied (sendonly): {}",
            s.undone_changes,
            if not_applied.is_empty() {
                "none".to_string()
            } else {
                not_applied.join(", ")
            }
        );
    }
    if s.aside_count > 0 {
        let _ = writeln!(
            out,
            "{} change(s) from peers set aside, retried now and then:",
            s.aside_count
        );
        for a in &s.aside {
            let _ = writeln!(
                out,
                "  {} from {}: {} (tried {} times, {})",
                a.path.escape_debug(),
                a.peer,
                a.reason.escape_debug(),
                a.attempts,
                ago(now, a.since).replacen("for", "first", 1) + " ago"
            );
        }
        if s.aside_count > s.aside.len() {
            let _ = writeln!(out, "  ... and {} more", s.aside_count - s.aside.len());
        }
    }
}

use omirr_sync::session::progress::size;

/// The status when no daemon answers, as metrics: `omirrd_up 0`, so that
/// a textfile collector's file says so instead of going stale.
pub fn prometheus_down() -> String {
    "# HELP omirrd_up Whether the daemon answered omirrd status.\n# TYPE omirrd_up gauge\nomirrd_up 0\n".to_string()
}

/// The status as metrics in the Prometheus text format (version 0.0.4),
/// every peer's series labelled `peer`. Written by hand: a dozen series
/// from one snapshot need no registry (see docs/omirrd.8.md for the list).
// Over 100 lines: a flat list of metric families, one call each, kept
// together so that it reads as the list it is.
pub fn prometheus(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    family(
        "omirrd_up",
        "gauge",
        "Whether the daemon answered omirrd status.",
        vec![(String::new(), 1.0)],
    );
    family(
        "omirrd_healthy",
        "gauge",
        "1 when every peer is connected and caught up (omirrd status exits 0).",
        vec![(String::new(), f64::from(u8::from(exit_code(s) == 0)))],
    );
    family(
        "omirrd_index_sequence",
        "gauge",
        "The last sequence of this host's index.",
        vec![(String::new(), s.last_seq as f64)],
    );
    family(
        "omirrd_local_changes_total",
        "counter",
        "Local changes recorded since the daemon started.",
        vec![(String::new(), s.local_changes as f64)],
    );
    family(
        "omirrd_applied_changes_total",
        "counter",
        "Peers' changes applied since the daemon started.",
        vec![(String::new(), s.applied_changes as f64)],
    );
    family(
        "omirrd_expired_tombstones_total",
        "counter",
        "Tombstones forgotten by expiry since the daemon started.",
        vec![(String::new(), s.expired_tombstones as f64)],
    );
    family(
        "omirrd_buried_tombstones_total",
        "counter",
        "Tombstones recorded by expiry, since the daemon started, to bury older entries an expiring tombstone hid.",
        vec![(String::new(), s.buried_tombstones as f64)],
    );
    family(
        "omirrd_reconciliations_total",
        "counter",
        "Reconciliations with peers that forgot more than this host had from them, since the daemon started.",
        vec![(String::new(), s.reconciliations as f64)],
    );
    family(
        "omirrd_aside_changes",
        "gauge",
        "Peers' changes set aside on this host.",
        vec![(String::new(), s.aside_count as f64)],
    );
    family(
        "omirrd_undone_changes_total",
        "counter",
        "Local changes undone where this host only receives (receiveonly).",
        vec![(String::new(), s.undone_changes as f64)],
    );
    family(
        "omirrd_conflicts_total",
        "counter",
        "Conflicts (two writes, neither of which knew the other) met since the daemon started.",
        vec![(String::new(), s.conflicts as f64)],
    );
    family(
        "omirrd_conflict_copies_total",
        "counter",
        "Conflict copies this host made of its own losing content since the daemon started.",
        vec![(String::new(), s.conflict_copies as f64)],
    );
    let peer = |name: &str| format!("{{peer=\"{}\"}}", label(name));
    let dir = |name: &str, d: &str| format!("{{peer=\"{}\",direction=\"{d}\"}}", label(name));
    let per_peer = |f: &dyn Fn(&PeerStatus) -> f64| -> Vec<(String, f64)> {
        s.peers.iter().map(|(n, p)| (peer(n), f(p))).collect()
    };
    let both = |f_in: &dyn Fn(&PeerStatus) -> f64,
                f_out: &dyn Fn(&PeerStatus) -> f64|
     -> Vec<(String, f64)> {
        s.peers
            .iter()
            .flat_map(|(n, p)| [(dir(n, "in"), f_in(p)), (dir(n, "out"), f_out(p))])
            .collect()
    };
    family(
        "omirrd_peer_connected",
        "gauge",
        "1 when a session with the peer is up.",
        per_peer(&|p| f64::from(u8::from(p.connected))),
    );
    family(
        "omirrd_peer_caught_up",
        "gauge",
        "1 when the session's catch-up is over.",
        per_peer(&|p| f64::from(u8::from(p.connected && p.caught_up))),
    );
    family(
        "omirrd_peer_state_since_seconds",
        "gauge",
        "Unix time when the peer's session began, or when it went down (0: never seen).",
        per_peer(&|p| p.since.unwrap_or(0) as f64),
    );
    family(
        "omirrd_peer_backlog_changes",
        "gauge",
        "Changes still to come from (in) or go to (out) the peer.",
        both(&|p| p.backlog_in.changes as f64, &|p| {
            p.backlog_out.changes as f64
        }),
    );
    family(
        "omirrd_peer_backlog_files",
        "gauge",
        "Of those, files with content.",
        both(&|p| p.backlog_in.files as f64, &|p| {
            p.backlog_out.files as f64
        }),
    );
    family(
        "omirrd_peer_backlog_bytes",
        "gauge",
        "The size of that content, in bytes.",
        both(&|p| p.backlog_in.bytes as f64, &|p| {
            p.backlog_out.bytes as f64
        }),
    );
    family(
        "omirrd_peer_rate_bytes_per_second",
        "gauge",
        "File content received (in) and sent (out) per second, over the last 5 s.",
        both(&|p| p.rate_in as f64, &|p| p.rate_out as f64),
    );
    family(
        "omirrd_peer_changes_total",
        "counter",
        "Changes received (in) and sent (out) since the daemon started.",
        both(&|p| p.changes_received as f64, &|p| p.changes_sent as f64),
    );
    family(
        "omirrd_peer_frames_total",
        "counter",
        "Messages received (in) and sent (out) since the daemon started.",
        both(&|p| p.frames_received as f64, &|p| p.frames_sent as f64),
    );
    family(
        "omirrd_peer_wire_bytes_total",
        "counter",
        "Bytes of frames received (in) and sent (out), headers included, before TLS.",
        both(&|p| p.bytes_received as f64, &|p| p.bytes_sent as f64),
    );
    family(
        "omirrd_peer_file_bytes_total",
        "counter",
        "File content received (in) and sent (out), in bytes.",
        both(&|p| p.file_bytes_received as f64, &|p| {
            p.file_bytes_sent as f64
        }),
    );
    family(
        "omirrd_peer_file_bytes_reused_total",
        "counter",
        "File content taken from local chunks instead of the peer, in bytes.",
        per_peer(&|p| p.file_bytes_reused as f64),
    );
    family(
        "omirrd_peer_not_applied_changes_total",
        "counter",
        "The peer's changes not applied where this host only sends (sendonly).",
        per_peer(&|p| p.not_applied as f64),
    );
    family(
        "omirrd_peer_refused_changes_total",
        "counter",
        "The peer's changes refused (it may not make them).",
        per_peer(&|p| p.refused as f64),
    );
    family(
        "omirrd_peer_aside_changes",
        "gauge",
        "The peer's changes set aside on this host.",
        per_peer(&|p| p.aside as f64),
    );
    family(
        "omirrd_peer_conflicts_total",
        "counter",
        "Conflicts met applying the peer's changes since the daemon started.",
        per_peer(&|p| p.conflicts as f64),
    );
    family(
        "omirrd_peer_queue_messages",
        "gauge",
        "Messages waiting to be written to the peer.",
        per_peer(&|p| p.queue as f64),
    );
    let clocks: Vec<(String, f64)> = s
        .peers
        .iter()
        .filter_map(|(n, p)| p.clock_offset_ms.map(|ms| (peer(n), ms as f64 / 1000.0)))
        .collect();
    family(
        "omirrd_peer_clock_offset_seconds",
        "gauge",
        "The peer's wall clock minus this host's, as last measured.",
        clocks,
    );
    out
}

/// A label value: backslash, double quote and line feed escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn ago(now: u64, then: u64) -> String {
    let d = now.saturating_sub(then);
    match d {
        0..60 => format!("for {d}s"),
        60..3600 => format!("for {}m", d / 60),
        3600..86400 => format!("for {}h{}m", d / 3600, d % 3600 / 60),
        _ => format!("for {}d", d / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_peer_with_its_state() {
        let c = Counters::new(&["beta".to_string(), "gamma".to_string()]);
        c.peer("beta", |p| {
            p.connected = true;
            p.caught_up = true;
            p.since = Some(1000);
            p.changes_sent = 12;
            p.frames_received = 7;
            p.clock_offset_ms = Some(-1_250);
            p.refused = 4;
        });
        c.peer("gamma", |p| {
            p.since = Some(400);
            p.last_error = Some("connection refused".into());
            p.clock_offset_ms = Some(86_400_000);
        });
        c.add_local(3);
        c.add_conflict("beta", true);
        c.add_conflict("gamma", false);
        let aside = vec![AsideStatus {
            peer: "beta".into(),
            path: "srv/www/d".into(),
            reason: "srv/www/d is a directory that is not empty".into(),
            attempts: 3,
            since: 1000,
        }];
        let s = snapshot(&c, "alpha", 42, aside);
        let text = render(&s, 1090);
        assert!(!text.contains("one-way sets"), "{text}");
        c.undone_changes.fetch_add(2, Ordering::Relaxed);
        c.peer("gamma", |p| p.not_applied = 5);
        let s = snapshot(&c, "alpha", 42, s.aside.clone());
        let text = render(&s, 1090);
        assert!(
            text.contains("one-way sets: 2 local change(s) undone (receiveonly); peers' changes not applied (sendonly): 5 from gamma\n"),
            "{text}"
        );
        assert!(
            text.contains("2 conflict(s) since start, 1 conflict cop(ies) made here"),
            "{text}"
        );
        let metrics = prometheus(&s);
        assert!(
            metrics.contains("\nomirrd_conflicts_total 2\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\nomirrd_conflict_copies_total 1\n"),
            "{metrics}"
        );
        assert!(text.contains("omirrd on alpha"), "{text}");
        assert!(text.contains("sequence 42, 3 local changes"), "{text}");
        let beta = text
            .lines()
            .find(|l| l.starts_with("beta"))
            .expect("beta line");
        assert!(
            beta.contains("up for 1m") && beta.contains(" 12 ") && beta.contains(" -1.2s       4 "),
            "{beta}"
        );
        let gamma = text
            .lines()
            .find(|l| l.starts_with("gamma"))
            .expect("gamma line");
        assert!(
            gamma.contains("down for 11m")
                && gamma.contains(" +86400s ")
                && gamma.ends_with("connection refused"),
            "{gamma}"
        );
        assert!(
            text.contains("1 change(s) from peers set aside")
                && text.contains("  srv/www/d from beta: srv/www/d is a directory that is not empty (tried 3 times, first 1m ago)"),
            "{text}"
        );
        // The JSON form round-trips.
        let back: Status =
            serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("parse");
        assert_eq!(back.peers["beta"].changes_sent, 12);
        assert_eq!(back.aside_count, 1);
        assert_eq!(back.aside[0].attempts, 3);
        assert_eq!((back.conflicts, back.conflict_copies), (2, 1));
        assert_eq!(back.peers["beta"].conflicts, 1);
    }

    #[test]
    fn a_peers_error_text_reaches_the_terminal_escaped() {
        // What a peer says ends up in last_error and in set-aside reasons:
        // terminal escapes (retitle the window, clear the screen), a bell,
        // a fake line of its own, a right-to-left override.
        let evil = "bad\x1b]0;owned\x07\x1b[2J\r\nbeta  up for 1s\u{202e}";
        let c = Counters::new(&["beta".to_string()]);
        c.peer("beta", |p| p.last_error = Some(evil.into()));
        let aside = vec![AsideStatus {
            peer: "beta".into(),
            path: "srv/www/\x1b[31mred".into(),
            reason: evil.into(),
            attempts: 1,
            since: 1000,
        }];
        let text = render(&snapshot(&c, "alpha", 1, aside), 1000);
        assert!(
            !text.contains(|ch: char| ch.is_control() && ch != '\n'),
            "{text:?}"
        );
        assert!(!text.contains('\u{202e}'), "{text:?}");
        let lines: Vec<&str> = text.lines().collect();
        // Header, column titles, beta, the second table's titles and beta,
        // the aside title and its one change: the peer's "\r\n" made no
        // line of its own.
        assert_eq!(lines.len(), 7, "{text}");
        assert!(
            lines[2].ends_with("bad\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\r\\nbeta  up for 1s\\u{202e}"),
            "{}",
            lines[2]
        );
        assert!(
            lines[6].starts_with("  srv/www/\\u{1b}[31mred from beta: bad\\u{1b}"),
            "{}",
            lines[6]
        );
    }

    #[test]
    fn requests_are_status_by_default_verify_by_name_and_nothing_else() {
        assert_eq!(Request::parse(b""), Ok(Request::Status));
        assert_eq!(Request::parse(b"status"), Ok(Request::Status));
        assert_eq!(
            Request::parse(b" verify\r"),
            Ok(Request::Verify { deep: false })
        );
        assert_eq!(
            Request::parse(b"verify --deep"),
            Ok(Request::Verify { deep: true })
        );
        let bad = Request::parse(b"verify --shallow").expect_err("unknown");
        assert!(bad.contains("verify --shallow"), "{bad}");
    }

    #[test]
    fn the_exit_code_is_0_only_when_every_peer_is_up_and_caught_up() {
        let c = Counters::new(&["beta".to_string(), "gamma".to_string()]);
        let up = |p: &mut PeerStatus| {
            p.connected = true;
            p.caught_up = true;
        };
        c.peer("beta", up);
        assert_eq!(
            exit_code(&snapshot(&c, "alpha", 1, Vec::new())),
            1,
            "gamma down"
        );
        c.peer("gamma", |p| {
            p.connected = true;
            p.since = Some(0);
        });
        let s = snapshot(&c, "alpha", 1, Vec::new());
        assert_eq!(exit_code(&s), 1, "gamma catching up");
        assert!(render(&s, 0).contains("catching up"), "{}", render(&s, 0));
        c.peer("gamma", up);
        assert_eq!(exit_code(&snapshot(&c, "alpha", 1, Vec::new())), 0);
        let alone = Counters::new(&[]);
        assert_eq!(
            exit_code(&snapshot(&alone, "alpha", 1, Vec::new())),
            0,
            "no peer"
        );
    }

    #[test]
    fn metrics_carry_every_peer_with_escaped_labels() {
        let c = Counters::new(&["beta".to_string(), "we\"ird\\".to_string()]);
        c.peer("beta", |p| {
            p.connected = true;
            p.backlog_in.files = 7;
            p.backlog_out.bytes = 1 << 20;
            p.clock_offset_ms = Some(-1500);
        });
        let text = prometheus(&snapshot(&c, "alpha", 9, Vec::new()));
        for line in [
            "omirrd_up 1",
            "omirrd_healthy 0",
            "omirrd_index_sequence 9",
            "omirrd_peer_connected{peer=\"beta\"} 1",
            "omirrd_peer_backlog_files{peer=\"beta\",direction=\"in\"} 7",
            "omirrd_peer_backlog_bytes{peer=\"beta\",direction=\"out\"} 1048576",
            "omirrd_peer_clock_offset_seconds{peer=\"beta\"} -1.5",
            "omirrd_peer_connected{peer=\"we\\\"ird\\\\\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(prometheus_down().ends_with("omirrd_up 0\n"));
    }
}
