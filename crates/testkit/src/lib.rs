//! Helpers that omirr's tests share, so that each is written once: a
//! [`RelPath`] from a string ([`p`]), polling with a deadline
//! ([`wait_until`]), data that does not compress ([`noise`]), and trees
//! described, digested, compared and waited for ([`tree`]).
//!
//! A dev-dependency only (`publish = false`): helpers panic on errors, as
//! tests want. What it does not own: running `omirrd` hosts (the
//! `omirr-cluster` crate lays them out and stops them; the end-to-end
//! tests' `tests/support` runs them as processes).
//!
//! It depends on `omirr-core` alone, so that any crate above the core can
//! use it in its unit tests; `omirr-core`'s own unit tests cannot (they
//! would see two different `RelPath` types).

pub mod tree;

use omirr_core::RelPath;
use std::time::{Duration, Instant};

/// The relative path `s`; panics if it is not a valid one.
pub fn p(s: &str) -> RelPath {
    RelPath::new(s.as_bytes()).expect("path")
}

/// How often [`wait_until`] looks.
pub const POLL: Duration = Duration::from_millis(20);

/// Calls `cond` every [`POLL`] until it is true (returns true) or
/// `timeout` has passed (returns false). `cond` runs at least once, and
/// once more at the deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// `len` bytes that differ from any other call's, deterministically
/// (xorshift), and do not compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_makes_paths_and_refuses_bad_ones() {
        assert_eq!(p("srv/www").as_bytes(), b"srv/www");
        assert!(std::panic::catch_unwind(|| p("/abs")).is_err());
    }

    #[test]
    fn wait_until_returns_as_soon_as_it_can_and_times_out() {
        assert!(wait_until(Duration::from_millis(100), || true));
        assert!(!wait_until(Duration::from_millis(50), || false));
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(10), || {
            calls += 1;
            calls == 3
        }));
    }

    #[test]
    fn noise_is_deterministic_and_seeded() {
        assert_eq!(noise(64, 1), noise(64, 1));
        assert_ne!(noise(64, 1), noise(64, 2));
        assert_eq!(noise(1000, 3).len(), 1000);
    }
}
