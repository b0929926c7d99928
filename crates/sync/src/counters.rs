//! The engine's counters: what each peer's session did, and the local
//! ones, kept live for `omirrd status`. A sink the engine writes and the
//! binary reads; nothing in the engine reads them back to decide anything.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One peer, as the status shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    pub connected: bool,
    /// Unix seconds when the current session began, or the last one ended.
    pub since: Option<u64>,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub changes_sent: u64,
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
    pub last_error: Option<String>,
}

/// The daemon's live counters.
#[derive(Default)]
pub struct Counters {
    pub local_changes: AtomicU64,
    pub applied_changes: AtomicU64,
    peers: Mutex<BTreeMap<String, PeerStatus>>,
}

impl Counters {
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

    pub fn add_local(&self, n: u64) {
        self.local_changes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_applied(&self, n: u64) {
        self.applied_changes.fetch_add(n, Ordering::Relaxed);
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
