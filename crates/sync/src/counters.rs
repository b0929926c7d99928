//! The engine's counters: what each peer's session did, and the local
//! ones, kept live for `omirrd status`. A sink the engine writes and the
//! binary reads; nothing in the engine reads them back to decide what to
//! sync (a session reads them only to word its log lines and measure its
//! rates, see `session::progress`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One peer, as the status shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Whether a session with the peer is open now (past its opening
    /// exchange).
    pub connected: bool,
    /// Unix seconds when the current session began, or the last one ended.
    pub since: Option<u64>,
    /// Frames written to the peer, every kind of message counted.
    pub frames_sent: u64,
    /// Frames read from the peer, likewise.
    pub frames_received: u64,
    /// Bytes written to the peer's connection: every frame, header
    /// included, before TLS.
    #[serde(default)]
    pub bytes_sent: u64,
    /// Bytes read from it, likewise.
    #[serde(default)]
    pub bytes_received: u64,
    /// Changes sent to the peer in `Changes` pages.
    pub changes_sent: u64,
    /// The peer's changes applied and recorded here.
    pub changes_received: u64,
    /// Files whose content was asked of the peer.
    pub files_fetched: u64,
    /// Of those, files rebuilt from chunks this host held, plus the
    /// missing ranges (delta transfer).
    pub files_delta: u64,
    /// File content received from the peer, in bytes.
    pub file_bytes_received: u64,
    /// File content taken from local chunks instead, in bytes.
    pub file_bytes_reused: u64,
    /// Messages waiting to be written to the peer.
    pub queue: usize,
    /// The last sequence received from the peer and recorded.
    pub cursor: u64,
    /// The peer's wall clock minus ours, in milliseconds, as last
    /// measured (see `omirr_sync::admit`).
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
    /// The peer's changes dropped because the peer may not make them
    /// (see `omirr_sync::admit`).
    #[serde(default)]
    pub refused: u64,
    /// The peer's changes not applied because this host only sends
    /// there (`sendonly`).
    #[serde(default)]
    pub not_applied: u64,
    /// The last error with this peer: why a session failed, or why its
    /// changes could not be applied; cleared when a session opens.
    pub last_error: Option<String>,
    /// Whether this session's catch-up is over: everything the peer had
    /// recorded when the session began is applied here (see
    /// `session::progress`). Without the `backlog` capability the peer
    /// does not say how much that is, and a session counts as caught up
    /// from its start.
    #[serde(default)]
    pub caught_up: bool,
    /// What the catch-up has yet to bring from the peer.
    #[serde(default)]
    pub backlog_in: Backlog,
    /// What this host has yet to send the peer, or sent and not yet seen
    /// acknowledged.
    #[serde(default)]
    pub backlog_out: Backlog,
    /// File content sent to the peer, in bytes.
    #[serde(default)]
    pub file_bytes_sent: u64,
    /// File content received, in bytes per second, over the last report
    /// interval (5 s).
    #[serde(default)]
    pub rate_in: u64,
    /// File content sent, in bytes per second, over the same interval.
    #[serde(default)]
    pub rate_out: u64,
    /// The peer's changes set aside here (filled in by the status, from
    /// the index).
    #[serde(default)]
    pub aside: u64,
    /// Conflicts met applying the peer's changes: its change and one of
    /// this host's, neither of which knew the other (see
    /// docs/sync-model.md, "Conflicts").
    #[serde(default)]
    pub conflicts: u64,
}

/// An amount of changes: how many, how many of them are files with
/// content, and the size of that content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// How many changes, of every kind.
    pub changes: u64,
    /// How many of them are files with content.
    pub files: u64,
    /// The files' content, in bytes.
    pub bytes: u64,
}

impl Backlog {
    /// Counts one change.
    pub fn add(&mut self, change: &omirr_core::Change) {
        self.changes += 1;
        if let omirr_core::Content::File { size, .. } = change.entry.content {
            self.files += 1;
            self.bytes += size;
        }
    }

    /// The amount of `changes`.
    pub fn of<'c>(changes: impl IntoIterator<Item = &'c omirr_core::Change>) -> Backlog {
        let mut b = Backlog::default();
        for c in changes {
            b.add(c);
        }
        b
    }

    /// Both amounts together.
    pub fn plus(self, o: Backlog) -> Backlog {
        Backlog {
            changes: self.changes + o.changes,
            files: self.files + o.files,
            bytes: self.bytes + o.bytes,
        }
    }

    /// What is left of `self` once `o` is done, never below zero.
    pub fn minus(self, o: Backlog) -> Backlog {
        Backlog {
            changes: self.changes.saturating_sub(o.changes),
            files: self.files.saturating_sub(o.files),
            bytes: self.bytes.saturating_sub(o.bytes),
        }
    }

    /// Whether there are no changes (files and bytes are then 0 too).
    pub fn is_empty(&self) -> bool {
        self.changes == 0
    }
}

/// The daemon's live counters.
#[derive(Default)]
pub struct Counters {
    /// Local changes recorded since the daemon started.
    pub local_changes: AtomicU64,
    /// Peers' changes applied and recorded since the daemon started,
    /// from every peer.
    pub applied_changes: AtomicU64,
    /// Local changes undone where this host only receives (`receiveonly`).
    pub undone_changes: AtomicU64,
    /// Tombstones forgotten by expiry since the daemon started.
    pub expired_tombstones: AtomicU64,
    /// Tombstones recorded by expiry to bury what an expiring one hid.
    pub buried_tombstones: AtomicU64,
    /// Reconciliations with a peer that forgot more than this host had
    /// from it, completed since the daemon started.
    pub reconciliations: AtomicU64,
    /// Conflicts met since the daemon started, with every peer.
    pub conflicts: AtomicU64,
    /// Conflict copies this host made of its own losing content.
    pub conflict_copies: AtomicU64,
    peers: Mutex<BTreeMap<String, PeerStatus>>,
}

impl Counters {
    /// Zeroed counters, with an entry for each of `peers` (host names),
    /// so that the status lists a peer before its first session.
    pub fn new(peers: &[String]) -> Counters {
        let c = Counters::default();
        {
            let mut map = c.lock();
            for p in peers {
                map.insert(p.clone(), PeerStatus::default());
            }
        }
        c
    }

    /// Every peer's counters, now.
    pub fn peers(&self) -> BTreeMap<String, PeerStatus> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PeerStatus>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes one peer's entry.
    pub fn peer(&self, name: &str, f: impl FnOnce(&mut PeerStatus)) {
        let mut peers = self.lock();
        match peers.get_mut(name) {
            Some(p) => f(p),
            None => f(peers.entry(name.to_string()).or_default()),
        }
    }

    /// Counts `n` local changes recorded.
    pub fn add_local(&self, n: u64) {
        self.local_changes.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` peers' changes applied; the peer's own
    /// [`PeerStatus::changes_received`] is counted apart.
    pub fn add_applied(&self, n: u64) {
        self.applied_changes.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a conflict met with `peer`, and whether this host made a
    /// conflict copy for it.
    pub fn add_conflict(&self, peer: &str, copied: bool) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
        if copied {
            self.conflict_copies.fetch_add(1, Ordering::Relaxed);
        }
        self.peer(peer, |p| p.conflicts += 1);
    }
}

/// The wall clock in Unix seconds (0 if it reads before 1970), for the
/// status's times.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
