//! What a peer may do to this host: the checks every change from a peer
//! passes before it is resolved, and the clock rule. Sans-IO: the policy,
//! the wall clock and the limit are arguments.
//!
//! A change from `peer` is applied only if
//! - its path lies in a mirror set that lists both hosts and does not
//!   exclude it ([`Policy::authorised`]);
//! - the host that made it (its version's host) is this host, or a host
//!   of a set holding that path here: a peer cannot forge a version in
//!   the name of a host that may not write there;
//! - a hard link ([`omirr_core::Meta::link`]) names another path the
//!   peer may change as well: linking makes the two one inode;
//! - if it removes or hides what lies below its path (a tombstone, or a
//!   file or symlink where a directory is), nothing below is in a set the
//!   peer is not part of ([`Policy::unshared_below`]);
//! - its timestamp is not beyond this host's wall clock plus the maximum
//!   clock offset. A version from the future would win every later write
//!   and drag every host's clock forward; it is set aside instead, and
//!   applies once the clock has caught up (a real clock error), or never
//!   (a forged one), visibly in `omirrd status`.
//!
//! The clock rule for sessions: each side sends its wall clock
//! ([`omirr_proto::Message::Clock`]) right after its `Hello` and with every
//! `Ping`; a peer whose clock differs from ours by more than the maximum
//! offset is refused ([`check_clock`]). A clock that lags within the
//! offset is harmless: the hybrid clock stamps a write above everything
//! the host has seen.

use crate::engine::Policy;
use omirr_core::{Change, Content, Timestamp};
use std::time::Duration;

/// What becomes of a peer's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Passes every check: resolve and apply it.
    Apply,
    /// Kept, with the reason, and tried again later.
    SetAside(String),
    /// Dropped, with the reason for the log.
    Refuse(String),
}

/// Whether `change`, received from `peer`, may be applied here (see the
/// module documentation). `now` is this host's wall clock.
pub fn admit(
    policy: &dyn Policy,
    peer: &str,
    change: &Change,
    now: Timestamp,
    max_offset: Duration,
) -> Admission {
    let path = &change.path;
    if !policy.authorised(peer, path) {
        return Admission::Refuse("not in a mirror set this host shares with the peer".to_string());
    }
    let origin = change.entry.version.host.as_str();
    if origin != peer && origin != policy.host() && !policy.authorised(origin, path) {
        return Admission::Refuse(format!(
            "its version names '{}' as its writer, which is not a host of a mirror set holding this path here",
            origin.escape_debug()
        ));
    }
    // A hard link makes two names one inode: metadata set through one
    // changes the other. The other name must be the peer's to change too.
    if let Some(leader) = &change.entry.meta.link {
        if !policy.authorised(peer, leader) {
            return Admission::Refuse(format!(
                "it is a hard link to {leader}, which is not in a mirror set this host shares with the peer"
            ));
        }
    }
    let hides = !matches!(change.entry.content, Content::Dir);
    if hides {
        if let Some(below) = policy.unshared_below(peer, path) {
            let what = match change.entry.content {
                Content::Deleted => "a removal",
                _ => "a file or symlink",
            };
            return Admission::Refuse(format!(
                "{what} here would also remove {below}, which is in a mirror set the peer is not part of"
            ));
        }
    }
    let limit = now.0.saturating_add(nanos(max_offset));
    let ts = change.entry.version.ts.0;
    if ts > limit {
        return Admission::SetAside(format!(
            "its version is {} ahead of this host's clock, more than the maximum clock offset ({}); it applies once this host's clock has caught up",
            seconds(i128::from(ts) - i128::from(now.0)),
            seconds(i128::from(nanos(max_offset)))
        ));
    }
    Admission::Apply
}

/// A peer's clock is this far off ours (positive: ahead), as measured
/// from a `Clock` message: its reading minus ours on arrival. The
/// message's transit time makes a peer look slightly behind; at the
/// scale of the limit (minutes) that does not matter.
pub fn clock_offset(peer_wall: u64, local_wall: Timestamp) -> i128 {
    i128::from(peer_wall) - i128::from(local_wall.0)
}

/// A peer whose clock is too far off ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the clock of {peer} is {} {} this host's, more than the maximum clock offset ({}): fix the clock of one of the hosts (NTP), or raise --max-clock-offset", seconds(.offset_ns.abs()), if *.offset_ns > 0 { "ahead of" } else { "behind" }, seconds(i128::from(*.max_ns)))]
pub struct ClockOffset {
    /// The peer's host name.
    pub peer: String,
    /// The peer's clock minus ours, in nanoseconds.
    pub offset_ns: i128,
    /// The maximum clock offset it exceeds, in nanoseconds.
    pub max_ns: u64,
}

impl ClockOffset {
    /// The refusal as the peer is told it: from its side.
    pub fn to_peer(&self, us: &str) -> String {
        format!(
            "the clock of {us} is {} {} yours, more than its maximum clock offset ({})",
            seconds(self.offset_ns.abs()),
            if self.offset_ns > 0 {
                "behind"
            } else {
                "ahead of"
            },
            seconds(i128::from(self.max_ns))
        )
    }
}

/// Checks a measured offset against the limit.
pub fn check_clock(peer: &str, offset_ns: i128, max_offset: Duration) -> Result<(), ClockOffset> {
    let max_ns = nanos(max_offset);
    if offset_ns.unsigned_abs() > u128::from(max_ns) {
        return Err(ClockOffset {
            peer: peer.to_string(),
            offset_ns,
            max_ns,
        });
    }
    Ok(())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `ns` as seconds for people: "86400 s", "2.5 s".
pub fn seconds(ns: i128) -> String {
    let s = ns as f64 / 1e9;
    if s.abs() >= 100.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DEFAULT_MAX_CLOCK_OFFSET;
    use omirr_core::resolve::Action;
    use omirr_core::{Entry, HostId, Meta, RelPath, Version};

    /// Sets `www` (a b c) except `www/private`, and `www/private` (a b),
    /// seen from host a.
    struct Sets;

    impl Policy for Sets {
        fn host(&self) -> &str {
            "a"
        }
        fn authorised(&self, peer: &str, path: &RelPath) -> bool {
            let private = RelPath::new(&b"www/private"[..]).expect("path");
            let www = RelPath::new(&b"www"[..]).expect("path");
            if *path == private || path.is_below(&private) {
                peer == "b"
            } else {
                (*path == www || path.is_below(&www)) && (peer == "b" || peer == "c")
            }
        }
        fn unshared_below(&self, peer: &str, path: &RelPath) -> Option<RelPath> {
            let private = RelPath::new(&b"www/private"[..]).expect("path");
            (private.is_below(path) && peer != "b").then_some(private)
        }
        fn excluded(&self, _: &RelPath) -> bool {
            false
        }
        fn savetargets(&self, _: &RelPath) -> bool {
            false
        }
        fn conflict_copies(&self, _: &RelPath) -> u32 {
            0
        }
        fn after_batch(&self, _: &str, _: &[Action]) {}
    }

    const NOW: u64 = 1_800_000_000_000_000_000;

    fn change(path: &str, content: Content, ts: u64, host: &str) -> Change {
        Change {
            path: RelPath::new(path.as_bytes()).expect("path"),
            entry: Entry {
                content,
                meta: Meta {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime_ns: 0,
                    ..Meta::default()
                },
                version: Version {
                    ts: Timestamp(ts),
                    host: HostId::new(host),
                },
                base: None,
            },
        }
    }

    fn verdict(peer: &str, c: &Change) -> Admission {
        admit(&Sets, peer, c, Timestamp(NOW), DEFAULT_MAX_CLOCK_OFFSET)
    }

    fn is_refused(a: &Admission, says: &str) -> bool {
        matches!(a, Admission::Refuse(why) if why.contains(says))
    }

    #[test]
    fn a_hard_link_must_name_a_path_the_peer_may_change() {
        let file = Content::File {
            size: 1,
            hash: [1; 32],
        };
        let mut c = change("www/alias", file, NOW, "c");
        c.entry.meta.link = Some(Box::new(
            RelPath::new(&b"www/private/secret"[..]).expect("path"),
        ));
        let v = verdict("c", &c);
        assert!(is_refused(&v, "hard link to www/private/secret"), "{v:?}");
        // b shares both sets.
        assert_eq!(verdict("b", &c), Admission::Apply);
        c.entry.meta.link = Some(Box::new(
            RelPath::new(&b"www/index.html"[..]).expect("path"),
        ));
        assert_eq!(verdict("c", &c), Admission::Apply);
    }

    #[test]
    fn a_peer_may_not_remove_or_hide_a_nested_set_it_is_not_part_of() {
        let file = Content::File {
            size: 1,
            hash: [1; 32],
        };
        // c shares www but not www/private.
        for content in [
            Content::Deleted,
            file.clone(),
            Content::Symlink {
                target: b"x".to_vec(),
            },
        ] {
            let v = verdict("c", &change("www", content, NOW, "c"));
            assert!(is_refused(&v, "www/private"), "{v:?}");
        }
        // A directory hides nothing; b is in both sets.
        assert_eq!(
            verdict("c", &change("www", Content::Dir, NOW, "c")),
            Admission::Apply
        );
        assert_eq!(
            verdict("b", &change("www", Content::Deleted, NOW, "b")),
            Admission::Apply
        );
        // Inside www, away from private: fine.
        assert_eq!(
            verdict("c", &change("www/x", file, NOW, "c")),
            Admission::Apply
        );
        // Inside private itself: not c's.
        let v = verdict("c", &change("www/private/x", Content::Deleted, NOW, "c"));
        assert!(is_refused(&v, "not in a mirror set"), "{v:?}");
    }

    #[test]
    fn a_version_must_name_a_host_that_may_write_there() {
        let c = |host| change("www/private/x", Content::Deleted, NOW, host);
        // b relays a version made by c on a path c has no part in: forged.
        assert!(is_refused(&verdict("b", &c("c")), "'c' as its writer"));
        assert!(is_refused(&verdict("b", &c("mallory")), "'mallory'"));
        // Its own, this host's own (returned after a lost index), fine.
        assert_eq!(verdict("b", &c("b")), Admission::Apply);
        assert_eq!(verdict("b", &c("a")), Admission::Apply);
        // c's version of a path in www, relayed by b: fine.
        assert_eq!(
            verdict("b", &change("www/y", Content::Deleted, NOW, "c")),
            Admission::Apply
        );
    }

    #[test]
    fn a_version_from_beyond_the_clock_offset_is_set_aside() {
        let at = |ts| verdict("b", &change("www/x", Content::Deleted, ts, "b"));
        assert_eq!(at(NOW + 299_000_000_000), Admission::Apply);
        assert_eq!(
            at(NOW - 86_400_000_000_000),
            Admission::Apply,
            "late is fine"
        );
        match at(u64::MAX) {
            Admission::SetAside(why) => {
                assert!(why.contains("ahead of this host's clock"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        match at(NOW + 86_400_000_000_000) {
            Admission::SetAside(why) => assert!(why.contains("86400 s ahead"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clocks_beyond_the_offset_are_refused_both_ways_with_the_offset_named() {
        let max = DEFAULT_MAX_CLOCK_OFFSET;
        let day = 86_400_000_000_000i128;
        assert!(check_clock("b", 0, max).is_ok());
        assert!(
            check_clock("b", -120_000_000_000, max).is_ok(),
            "two minutes behind"
        );
        let ahead = check_clock("b", day, max).expect_err("a day ahead");
        assert_eq!(
            ahead.to_string(),
            "the clock of b is 86400 s ahead of this host's, more than the maximum clock offset (300 s): fix the clock of one of the hosts (NTP), or raise --max-clock-offset"
        );
        assert_eq!(
            ahead.to_peer("a"),
            "the clock of a is 86400 s behind yours, more than its maximum clock offset (300 s)"
        );
        let behind = check_clock("b", -day, max).expect_err("a day behind");
        assert!(
            behind.to_string().contains("86400 s behind this host's"),
            "{behind}"
        );
        assert_eq!(clock_offset(10, Timestamp(4)), 6);
        assert_eq!(clock_offset(0, Timestamp(u64::MAX)), -i128::from(u64::MAX));
    }
}
