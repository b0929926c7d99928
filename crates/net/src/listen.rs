//! Accepting connections without being drowned by them.
//!
//! Anyone who can reach the peer port can open a connection, and each one
//! holds a descriptor for up to [`HANDSHAKE_TIMEOUT`] before its TLS
//! handshake fails. So at most [`MAX_HANDSHAKES`] unauthenticated
//! connections are served at once ([`Handshakes`]); one more is closed at
//! once, and the log says so (at most once a minute).
//!
//! When the process or the system is out of file descriptors, `accept(2)`
//! fails and leaves the connection in the listener's queue: the listener
//! stays ready, and a loop that accepts again at once spins. Every accept
//! loop (the peer listener, the status socket) calls [`accept_failed`],
//! which pauses it for [`ACCEPT_BACKOFF`] and logs at most once a minute.
//!
//! The peer listener that uses all this is [`crate::socket::PeerListener`].

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a connection may take to authenticate.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes the peer listener runs at once. A few peers reconnecting
/// together need a handful; a flood of connections that never finish
/// their handshake gets no more than this many descriptors.
pub const MAX_HANDSHAKES: usize = 64;

/// The pause of an accept loop after a failed accept.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often a repeated warning may be logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Lets a warning through once a minute (`LOG_EVERY`), counting the
/// times it held it back.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// `Some(n)` if the warning may be logged now, `n` being how many
    /// times it was held back since it last was; `None` to stay quiet.
    pub fn pass(&mut self) -> Option<u64> {
        self.pass_at(Instant::now())
    }

    fn pass_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < LOG_EVERY => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

/// Whether a failed accept means that the process or the system is out of
/// file descriptors (or of the memory for one).
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// What an accept loop does after a failed accept on `what` (the listener,
/// for the log): a warning at most once a minute, and a pause of
/// [`ACCEPT_BACKOFF`], so that a listener that stays ready (out of
/// descriptors, the connection still queued) does not make it spin.
pub async fn accept_failed(what: &str, e: &io::Error, throttle: &mut Throttle) {
    if let Some(held) = throttle.pass() {
        let also = if held > 0 {
            format!(" ({held} more failures in the last minute)")
        } else {
            String::new()
        };
        if out_of_descriptors(e) {
            tracing::warn!(
                "{what}: cannot accept a connection: {e}; out of file descriptors, \
                 accepting again every {} ms until some are free{also}",
                ACCEPT_BACKOFF.as_millis()
            );
        } else {
            tracing::warn!("{what}: cannot accept a connection: {e}{also}");
        }
    }
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// The slots for TLS handshakes of the peer listener.
pub struct Handshakes {
    slots: Arc<Semaphore>,
    /// How many at once, for the log.
    max: usize,
    refused: Throttle,
}

impl Handshakes {
    /// Room for `max` handshakes at once; the peer listener passes
    /// [`MAX_HANDSHAKES`].
    pub fn new(max: usize) -> Handshakes {
        Handshakes {
            slots: Arc::new(Semaphore::new(max)),
            max,
            refused: Throttle::default(),
        }
    }

    /// A slot for a handshake with `from`, held until the permit is
    /// dropped; `None` if all are taken (then the connection is to be
    /// closed at once, and the log says so at most once a minute).
    pub fn admit(&mut self, from: &std::net::SocketAddr) -> Option<OwnedSemaphorePermit> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                if let Some(held) = self.refused.pass() {
                    let max = self.max;
                    tracing::warn!(
                        %from,
                        "refused a connection: {max} TLS handshakes are already in \
                         progress, the most omirrd runs at once; connections are closed unheard \
                         until one ends ({held} more refused in the last minute)"
                    );
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_lets_one_line_through_a_minute_and_counts_the_rest() {
        let mut t = Throttle::default();
        let start = Instant::now();
        assert_eq!(t.pass_at(start), Some(0));
        assert_eq!(t.pass_at(start + Duration::from_secs(1)), None);
        assert_eq!(t.pass_at(start + Duration::from_secs(59)), None);
        assert_eq!(t.pass_at(start + Duration::from_secs(60)), Some(2));
        assert_eq!(t.pass_at(start + Duration::from_secs(61)), None);
    }

    #[test]
    fn descriptor_shortage_is_told_from_other_failures() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(out_of_descriptors(&io::Error::from_raw_os_error(code)));
        }
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }

    #[tokio::test]
    async fn handshakes_beyond_the_cap_are_refused_until_one_ends() {
        let mut h = Handshakes::new(2);
        let from = "127.0.0.1:9".parse().expect("address");
        let a = h.admit(&from).expect("first");
        let _b = h.admit(&from).expect("second");
        assert!(h.admit(&from).is_none(), "a third at once");
        drop(a);
        assert!(h.admit(&from).is_some(), "a slot is free again");
    }
}
