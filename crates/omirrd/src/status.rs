//! What the daemon tells `omirrd status`: each peer's session, the local
//! counters and the changes set aside (the engine keeps them:
//! `omirr_sync::counters`, the index), served as one JSON object on a Unix socket in the state
//! directory (`omirrd.sock`, mode 0600: the status names hosts, paths and
//! errors, which are the administrator's business only).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

pub use omirr_sync::counters::{now_secs, Counters, PeerStatus};

pub const SOCKET: &str = "omirrd.sock";

/// Everything the status shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub host: String,
    pub pid: u32,
    pub last_seq: u64,
    pub local_changes: u64,
    pub applied_changes: u64,
    pub peers: BTreeMap<String, PeerStatus>,
    /// How many peers' changes are set aside (could not be applied; see
    /// docs/sync-model.md).
    #[serde(default)]
    pub aside_count: usize,
    /// The first [`ASIDE_SHOWN`] of them.
    #[serde(default)]
    pub aside: Vec<AsideStatus>,
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
    Status {
        aside_count: aside.len(),
        aside: aside.into_iter().take(ASIDE_SHOWN).collect(),
        host: host.to_string(),
        pid: std::process::id(),
        last_seq,
        local_changes: counters.local_changes.load(Ordering::Relaxed),
        applied_changes: counters.applied_changes.load(Ordering::Relaxed),
        peers: counters.peers(),
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

/// Answers every connection with the current status, then closes it.
pub async fn serve(
    listener: tokio::net::UnixListener,
    status: impl Fn() -> Status + Send + 'static,
) {
    use tokio::io::AsyncWriteExt;
    let mut failures = crate::listen::Throttle::default();
    loop {
        let mut conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            // Out of descriptors, the connection stays queued and the
            // socket ready: without a pause this loop would spin.
            Err(e) => {
                crate::listen::accept_failed("status socket", &e, &mut failures).await;
                continue;
            }
        };
        let body = match serde_json::to_vec(&status()) {
            Ok(b) => b,
            Err(e) => format!("{{\"error\":\"{e}\"}}").into_bytes(),
        };
        let _ = conn.write_all(&body).await;
    }
}

/// `omirrd status`: asks the daemon and prints what it says.
pub fn show(state_dir: &Path, json: bool) -> Result<ExitCode> {
    use std::io::Read;
    let path = socket_path(state_dir);
    let mut conn = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "no omirrd answers on {} (is it running with --state-dir {}?)",
            path.display(),
            state_dir.display()
        )
    })?;
    let mut body = String::new();
    conn.read_to_string(&mut body)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let status: Status = serde_json::from_str(&body)
        .with_context(|| format!("unreadable status from {}", path.display()))?;
    print!("{}", render(&status, now_secs()));
    Ok(ExitCode::SUCCESS)
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
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8} {:>7}  last error",
        "peer", "state", "chg out", "chg in", "frm out", "frm in", "queue", "clock", "refused"
    );
    for (name, p) in &s.peers {
        let state = match (p.connected, p.since) {
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
    out
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
        let aside = vec![AsideStatus {
            peer: "beta".into(),
            path: "srv/www/d".into(),
            reason: "srv/www/d is a directory that is not empty".into(),
            attempts: 3,
            since: 1000,
        }];
        let s = snapshot(&c, "alpha", 42, aside);
        let text = render(&s, 1090);
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
        // Header, column titles, beta, the aside title and its one change:
        // the peer's "\r\n" made no line of its own.
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[2].ends_with("bad\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\r\\nbeta  up for 1s\\u{202e}"),
            "{}",
            lines[2]
        );
        assert!(
            lines[4].starts_with("  srv/www/\\u{1b}[31mred from beta: bad\\u{1b}"),
            "{}",
            lines[4]
        );
    }
}
