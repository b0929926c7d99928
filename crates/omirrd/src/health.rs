//! Peers going down and coming back, in the log: one line when a peer
//! goes down (a session that was up ends, or the first failure to reach
//! it), one when it is back (the session's `connected` line says how long
//! it was down), and not one per retry in between: while a peer stays
//! down, failures to connect to it at all (refused, timed out: the
//! expected failure of a host that is down) are logged once per
//! [`REPEAT_WINDOW`], the latest with how many came meanwhile. A failure
//! after connecting (a handshake, a session the peer or this host
//! refuses, a clock too far off) says more, and each one is logged the
//! first time, then once per window with its count. So is a connection
//! this host refuses before its session, for the same address and reason.
//!
//! Whether a peer is down is the status' own record of it
//! (`omirr_sync::counters::PeerStatus`: not connected, and `since` set),
//! so that the log and `omirrd status` cannot disagree.

use omirr_sync::counters::{now_secs, Counters};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the same error may be logged.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(600);

/// The most different errors remembered; past it, those not seen for a
/// window are forgotten (an address that stopped connecting, a fixed
/// error).
const REMEMBERED: usize = 1024;

/// [`REPEAT_WINDOW`], or, for the tests only, `OMIRR_TEST_REPEAT_MS`.
fn repeat_window() -> Duration {
    std::env::var("OMIRR_TEST_REPEAT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(REPEAT_WINDOW, Duration::from_millis)
}

/// Errors seen lately, by their text, with when each was last logged and
/// how many times it was held back since.
pub struct Repeats {
    window: Duration,
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Default for Repeats {
    fn default() -> Repeats {
        Repeats::new(repeat_window())
    }
}

impl Repeats {
    pub fn new(window: Duration) -> Repeats {
        Repeats {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the error `key` may be logged now: `Some("")` the first
    /// time, `Some(" (repeated N times in the last 10m)")` once a window
    /// has passed since it was last logged, `None` (counted) otherwise.
    pub fn pass(&self, key: &str) -> Option<String> {
        self.pass_at(key, Instant::now())
    }

    fn pass_at(&self, key: &str, now: Instant) -> Option<String> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((last, held)) = seen.get_mut(key) {
            if now.duration_since(*last) < self.window {
                *held += 1;
                return None;
            }
            let n = std::mem::take(held);
            *last = now;
            return Some(if n == 0 {
                String::new()
            } else {
                format!(
                    " (repeated {n} times in the last {})",
                    omirr_sync::session::progress::duration(self.window)
                )
            });
        }
        if seen.len() >= REMEMBERED {
            let window = self.window;
            seen.retain(|_, (last, _)| now.duration_since(*last) < window);
        }
        // Still full: a flood of different errors; each is logged.
        if seen.len() < REMEMBERED {
            seen.insert(key.to_string(), (now, 0));
        }
        Some(String::new())
    }

    /// Marks `key` as logged now (by a line of another wording, such as
    /// the peer-down line), so that it is held back for a window.
    pub fn logged(&self, key: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() < REMEMBERED || seen.contains_key(key) {
            seen.insert(key.to_string(), (Instant::now(), 0));
        }
    }
}

/// A session with `peer` that had connected ended (`error` if it failed):
/// the peer is down, which this logs once; failures to reach it in the
/// next window are held back.
pub fn session_lost(repeats: &Repeats, peer: &str, error: Option<&str>, frames: (u64, u64)) {
    repeats.logged(&unreachable_key(peer));
    match error {
        None => tracing::info!(
            %peer,
            frames_sent = frames.0,
            frames_received = frames.1,
            "peer {peer} is down: it closed the session; retrying"
        ),
        Some(e) => tracing::warn!(
            %peer,
            frames_sent = frames.0,
            frames_received = frames.1,
            "peer {peer} is down: session ended: {e}; retrying"
        ),
    }
}

/// An attempt to reach `peer`, or a session with it that never connected,
/// failed with `error`; `unreachable` if no connection was made at all.
/// The first failure since the daemon started says the peer is down (once
/// it was up, the end of its session said so). After it, failures to
/// connect are logged once per window whatever their text (the status
/// shows the latest), others once per window for each text.
pub fn attempt_failed(
    counters: &Counters,
    repeats: &Repeats,
    peer: &str,
    error: &str,
    unreachable: bool,
) {
    let mut first = false;
    counters.peer(peer, |p| {
        if p.since.is_none() && !p.connected {
            first = true;
            p.since = Some(now_secs());
        }
        p.last_error = Some(error.to_string());
    });
    let key = if unreachable {
        unreachable_key(peer)
    } else {
        format!("{peer}\0{error}")
    };
    if first {
        repeats.logged(&unreachable_key(peer));
        repeats.logged(&key);
        return tracing::warn!(%peer, "peer {peer} is down: {error}; retrying");
    }
    if let Some(repeated) = repeats.pass(&key) {
        tracing::warn!(%peer, "cannot reach {peer}: {error}{repeated}");
    }
}

/// The key of failures to connect to `peer`.
fn unreachable_key(peer: &str) -> String {
    format!("unreachable\0{peer}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_error_passes_once_a_window_with_its_count() {
        let r = Repeats::new(Duration::from_secs(600));
        let t = Instant::now();
        assert_eq!(r.pass_at("refused", t).as_deref(), Some(""));
        assert_eq!(r.pass_at("refused", t + Duration::from_secs(1)), None);
        assert_eq!(r.pass_at("refused", t + Duration::from_secs(599)), None);
        assert_eq!(
            r.pass_at("other", t + Duration::from_secs(2)).as_deref(),
            Some(""),
            "another error is its own"
        );
        assert_eq!(
            r.pass_at("refused", t + Duration::from_secs(600))
                .as_deref(),
            Some(" (repeated 2 times in the last 10m)")
        );
        assert_eq!(r.pass_at("refused", t + Duration::from_secs(601)), None);
        assert_eq!(
            r.pass_at("refused", t + Duration::from_secs(1300))
                .as_deref(),
            Some(" (repeated 1 times in the last 10m)")
        );
        assert_eq!(
            r.pass_at("refused", t + Duration::from_secs(2000))
                .as_deref(),
            Some(""),
            "nothing held back: nothing to count"
        );
    }

    #[test]
    fn the_first_failure_marks_the_peer_down_and_the_next_are_held_back() {
        let c = Counters::new(&["beta".to_string()]);
        let r = Repeats::new(Duration::from_secs(600));
        attempt_failed(&c, &r, "beta", "connection refused", true);
        let since = c.peers()["beta"].since;
        assert!(since.is_some(), "down since the first failure");
        attempt_failed(&c, &r, "beta", "connection refused", true);
        assert_eq!(c.peers()["beta"].since, since, "still down since then");
        attempt_failed(&c, &r, "beta", "connection timed out", true);
        assert_eq!(
            r.pass(&unreachable_key("beta")),
            None,
            "held back, whatever the text"
        );
        // A failure after connecting is news: logged (so its key is taken).
        attempt_failed(&c, &r, "beta", "TLS handshake timed out", false);
        assert_eq!(r.pass("beta\0TLS handshake timed out"), None);
        assert_eq!(
            c.peers()["beta"].last_error.as_deref(),
            Some("TLS handshake timed out")
        );
    }

    #[test]
    fn memory_of_errors_is_bounded() {
        let r = Repeats::new(Duration::from_secs(600));
        let t = Instant::now();
        for i in 0..REMEMBERED + 10 {
            assert!(r.pass_at(&format!("e{i}"), t).is_some());
        }
        assert!(r.seen.lock().expect("lock").len() <= REMEMBERED);
        // Once a window has passed, old errors make room.
        assert!(r.pass_at("late", t + Duration::from_secs(601)).is_some());
        assert!(r.seen.lock().expect("lock").len() <= 1);
    }
}
