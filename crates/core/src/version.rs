//! Versions and the hybrid logical clock that issues them.
//!
//! A [`Version`] is a timestamp plus the host that made it. Versions are
//! totally ordered (timestamp, then host name), so every host picks the
//! same winner for a path without talking to the others: last writer wins.
//!
//! The clock ([`Hlc`]) reads the wall clock but never goes backwards and
//! never issues a timestamp at or below one it has seen from a peer. A host
//! whose clock is an hour slow therefore still stamps its live changes
//! above everything it has received. It takes wall time as an argument so
//! that it stays free of I/O and tests can skew it at will.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Nanoseconds since the Unix epoch, as a hybrid logical clock reading.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

/// A host's name, as the Distfile and the peers file spell it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostId(Arc<str>);

impl HostId {
    /// The host called `name`, taken as it is (nothing is checked).
    pub fn new(name: &str) -> HostId {
        HostId(Arc::from(name))
    }

    /// The host's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// Who wrote an entry, and when. The greater version wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// When the change was made, by its writer's clock ([`Hlc`]).
    pub ts: Timestamp,
    /// The host that made the change. It breaks ties between equal
    /// timestamps, so two versions are equal only if one host made both.
    pub host: HostId,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.ts.0, self.host)
    }
}

/// A hybrid logical clock.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hlc {
    last: Timestamp,
}

impl Hlc {
    /// A clock that has seen nothing yet above `last` (restored from the
    /// index at start).
    pub fn starting_at(last: Timestamp) -> Hlc {
        Hlc { last }
    }

    /// The greatest timestamp issued or seen.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A timestamp for a change seen live now: above everything issued or
    /// seen, and at least the wall clock.
    pub fn now(&mut self, wall: Timestamp) -> Timestamp {
        self.last = Timestamp(wall.0.max(self.last.0.saturating_add(1)));
        self.last
    }

    /// A timestamp for a change found by a scan: made while nobody
    /// watched, at `ctime`, and after everything the host had seen when
    /// the scan began (`floor`, [`Hlc::last`] then): `max(ctime, floor +
    /// 1)`. The ctime, not the moment of the scan, so that the host that
    /// really wrote last wins, not the host that happened to scan last;
    /// above the floor, because this host's own earlier changes may carry
    /// clock readings ahead of its wall clock (absorbed from a faster
    /// peer), and a later change must not lose to them.
    pub fn at(&mut self, ctime: Timestamp, floor: Timestamp) -> Timestamp {
        let ts = Timestamp(ctime.0.max(floor.0.saturating_add(1)));
        self.observe(ts);
        ts
    }

    /// Absorbs a timestamp seen from a peer.
    pub fn observe(&mut self, seen: Timestamp) {
        self.last = self.last.max(seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000_000_000;

    #[test]
    fn never_goes_backwards() {
        let mut c = Hlc::default();
        let a = c.now(Timestamp(1000));
        let b = c.now(Timestamp(500)); // the wall clock stepped back
        let d = c.now(Timestamp(1000));
        assert!(a < b && b < d);
    }

    #[test]
    fn a_slow_host_still_writes_above_what_it_has_seen() {
        let wall = 10 * HOUR;
        let mut fast = Hlc::default();
        let mut slow = Hlc::default();
        let v_fast = fast.now(Timestamp(wall));
        slow.observe(v_fast);
        // An hour behind, a moment later.
        let v_slow = slow.now(Timestamp(wall - HOUR + 1));
        assert!(v_slow > v_fast);
    }

    #[test]
    fn scan_timestamps_follow_ctime_not_the_scan() {
        let mut c = Hlc::default();
        c.observe(Timestamp(HOUR));
        let floor = c.last();
        // A file changed at 3h while the daemon was down.
        assert_eq!(c.at(Timestamp(3 * HOUR), floor), Timestamp(3 * HOUR));
        // Another, changed at 2h, keeps its own time: the scan order does
        // not matter.
        assert_eq!(c.at(Timestamp(2 * HOUR), floor), Timestamp(2 * HOUR));
        // A ctime older than what the host had seen (its clock is behind
        // the versions it absorbed) still lands above all of it.
        assert_eq!(c.at(Timestamp(HOUR / 2), floor), Timestamp(HOUR + 1));
        assert_eq!(c.last(), Timestamp(3 * HOUR));
    }

    #[test]
    fn versions_order_by_time_then_host() {
        let v = |t, h| Version {
            ts: Timestamp(t),
            host: HostId::new(h),
        };
        assert!(v(1, "zeta") < v(2, "alpha"));
        assert!(v(2, "alpha") < v(2, "beta"));
        assert_eq!(v(2, "beta"), v(2, "beta"));
    }
}
