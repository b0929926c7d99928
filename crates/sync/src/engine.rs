//! What every part of the engine shares, as narrow handles: the
//! [`Store`] (index and cursors), the [`Disk`] (the tree, the applier, the
//! write lock), the [`Policy`] (what the configuration allows), and the
//! [`Counters`] (a sink for what happened).

use crate::counters::Counters;
use omirr_core::resolve::Action;
use omirr_core::{Hlc, HostId, RelPath, Seq, Timestamp};
use omirr_fs::apply::Applier;
use omirr_index::Index;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// What the configuration says, as the engine asks it. The daemon's
/// Distfile plan implements it; a reload swaps it ([`Engine::set_policy`]).
pub trait Policy: Send + Sync {
    /// This host's name.
    fn host(&self) -> &str;
    /// Whether `peer` may change `path` (a mirror set lists both hosts).
    fn authorised(&self, peer: &str, path: &RelPath) -> bool;
    /// Whether `path` is not mirrored here (excluded).
    fn excluded(&self, path: &RelPath) -> bool;
    /// Whether an overwritten file at `path` is kept as `.OLD`.
    fn savetargets(&self, path: &RelPath) -> bool;
    /// A peer's batch did `actions`: run what the configuration says
    /// (`special` commands). Must not wait.
    fn after_batch(&self, peer: &str, actions: &[Action]);
}

/// The index and what follows it.
pub struct Store {
    pub index: Index,
    /// The index's last sequence: pushers wake when it moves.
    pub last_seq: watch::Sender<Seq>,
}

impl Store {
    pub fn new(index: Index) -> Result<Store, omirr_index::IndexError> {
        let last = index.last_seq()?;
        Ok(Store {
            index,
            last_seq: watch::channel(last).0,
        })
    }

    /// Tells the pushers that the index has moved on.
    pub fn announce(&self) {
        if let Ok(seq) = self.index.last_seq() {
            self.last_seq.send_replace(seq);
        }
    }
}

/// What a write needs besides the index; behind [`Disk::write`].
pub struct WriteSide {
    pub hlc: Hlc,
    pub applier: Applier,
}

/// The mirrored tree on this host.
pub struct Disk {
    pub root: PathBuf,
    /// The mirrored trees' tops, relative to the root.
    pub tops: Vec<RelPath>,
    /// The one lock for writing the disk and the index: a remote batch is
    /// applied and recorded before the watcher's events for those very
    /// writes are looked at, so they match the index and are not sent
    /// back out. It is never held across a network wait.
    pub write: Mutex<WriteSide>,
    /// Where content fetched from peers waits for its batch
    /// (`<state-dir>/stage`).
    pub stage_dir: PathBuf,
}

impl Disk {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, WriteSide> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The engine of one daemon.
pub struct Engine {
    pub host: HostId,
    pub store: Store,
    pub disk: Disk,
    pub counters: Counters,
    /// Bytes of file content that may be in flight from each peer.
    pub in_flight: u64,
    policy: RwLock<Arc<dyn Policy>>,
}

impl Engine {
    pub fn new(
        store: Store,
        disk: Disk,
        policy: Arc<dyn Policy>,
        peers: &[String],
        in_flight: u64,
    ) -> Engine {
        Engine {
            host: HostId::new(policy.host()),
            store,
            disk,
            counters: Counters::new(peers),
            in_flight,
            policy: RwLock::new(policy),
        }
    }

    /// The configuration now in force.
    pub fn policy(&self) -> Arc<dyn Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a new configuration in force (SIGHUP).
    pub fn set_policy(&self, policy: Arc<dyn Policy>) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// Whether `path` is outside what this host mirrors or excluded there.
    pub fn ignored(&self, path: &RelPath) -> bool {
        !self.disk.tops.iter().any(|t| path == t || path.is_below(t))
            || self.policy().excluded(path)
    }
}

/// Batches of at least this many changes return their memory afterwards.
pub const LARGE_BATCH: usize = 1024;

/// Hands the memory freed after a large batch back to the system. glibc's
/// malloc keeps freed memory in the arena of each thread that used it, so
/// a large batch handled across the runtime's threads stays resident and
/// the next one adds to it (see docs/benchmarks.md).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap; it takes no pointers
    // and is safe to call from any thread at any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// The wall clock, as the HLC takes it.
pub fn wall() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(d.as_nanos().min(u64::MAX as u128) as u64)
}
