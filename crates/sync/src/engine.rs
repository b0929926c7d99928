//! What every part of the engine shares, as narrow handles: the
//! [`Store`] (index and cursors), the [`Disk`] (the tree, the applier, the
//! write lock, the staging directory), the [`Policy`] (what the
//! configuration allows), the [`Counters`] (a sink for what happened), and
//! the [`Claims`] on content that sessions are fetching. Also the memory
//! and clock helpers the engine's parts share.

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
    /// A path strictly below `path` that this host mirrors in a set
    /// `peer` is not part of (or that such a set excludes), if there is
    /// one: a tombstone or a file from `peer` at `path` would remove or
    /// hide it, which `peer` may not do.
    fn unshared_below(&self, peer: &str, path: &RelPath) -> Option<RelPath>;
    /// Whether `path` is not mirrored here (excluded).
    fn excluded(&self, path: &RelPath) -> bool;
    /// Whether an overwritten file at `path` is kept as `.OLD`.
    fn savetargets(&self, path: &RelPath) -> bool;
    /// Which way this host takes part in `path` (`sendonly`,
    /// `receiveonly`): a send-only host applies no peer's change there, a
    /// receive-only host records no local change there but undoes it.
    fn direction(&self, path: &RelPath) -> Direction {
        let _ = path;
        Direction::Both
    }
    /// How many conflict copies of the file at `path` to keep (its set's
    /// `conflicts=N`); 0 keeps none.
    fn conflict_copies(&self, path: &RelPath) -> u32;
    /// A peer's batch did `actions`: run what the configuration says
    /// (`special` commands). Must not wait.
    fn after_batch(&self, peer: &str, actions: &[Action]);
}

/// Which way this host takes part in a path (the Distfile's `sendonly`
/// and `receiveonly`; see docs/sync-model.md, "One-way sets").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Sends its changes and applies the peers'.
    #[default]
    Both,
    /// Sends its changes; applies no peer's change, to disk or index.
    SendOnly,
    /// Applies the peers' changes; a local change is not recorded (so not
    /// sent) and the set's version is put back.
    ReceiveOnly,
}

/// The index and what follows it.
pub struct Store {
    /// This host's persisted index.
    pub index: Index,
    /// The index's last sequence: pushers wake when it moves.
    pub last_seq: watch::Sender<Seq>,
}

impl Store {
    /// Wraps `index`, starting [`Store::last_seq`] at its last sequence.
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
    /// This host's hybrid logical clock, which stamps every change it
    /// records.
    pub hlc: Hlc,
    /// What carries actions out on the mirrored tree.
    pub applier: Applier,
}

/// The mirrored tree on this host.
pub struct Disk {
    /// The mirror root: every path the engine handles is relative to it.
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
    /// Takes the write lock ([`Disk::write`]), even if a holder
    /// panicked. It waits while another holder applies or records a
    /// batch; never hold it across a network wait.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, WriteSide> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Content some session is fetching for a batch, by (hash, size), with
/// the session that fetches it. Two peers often offer the same new
/// content at once (a change forwarded by the one and sent by the other):
/// the second session leaves it to the first instead of fetching it too,
/// and looks again once the first has applied it (or after a short wait,
/// so that a frozen peer's claim delays nobody for long).
#[derive(Default)]
pub struct Claims {
    held: Mutex<std::collections::HashMap<(omirr_core::Hash, u64), u64>>,
    released: tokio::sync::Notify,
}

impl Claims {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(omirr_core::Hash, u64), u64>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `key` for `owner`; `false` if another owner holds it.
    pub fn claim(&self, owner: u64, key: (omirr_core::Hash, u64)) -> bool {
        *self.lock().entry(key).or_insert(owner) == owner
    }

    /// Gives up `owner`'s claims on `keys`.
    pub fn release(&self, owner: u64, keys: &[(omirr_core::Hash, u64)]) {
        let mut held = self.lock();
        for k in keys {
            if held.get(k) == Some(&owner) {
                held.remove(k);
            }
        }
        drop(held);
        self.released.notify_waiters();
    }

    /// Waits until no owner but `owner` holds any of `keys`, or `limit`.
    pub async fn wait(
        &self,
        owner: u64,
        keys: &[(omirr_core::Hash, u64)],
        limit: std::time::Duration,
    ) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let released = self.released.notified();
            let busy = {
                let held = self.lock();
                keys.iter()
                    .any(|k| held.get(k).is_some_and(|o| *o != owner))
            };
            if !busy || tokio::time::timeout_at(deadline, released).await.is_err() {
                return;
            }
        }
    }
}

/// The paths where this host only receives and a local change waits to be
/// undone (see [`crate::local::record`] and the sessions' appliers). Not
/// persisted: such a change is never recorded, so the next start-up scan
/// finds it again. Bounded by the tree: each path is held once.
#[derive(Default)]
pub struct Undo {
    pending: Mutex<std::collections::BTreeSet<RelPath>>,
    /// Wakes the sessions' appliers: paths were added.
    pub added: tokio::sync::Notify,
}

/// At most this many paths are undone in one round.
pub const UNDO_ROUND: usize = 4096;

impl Undo {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<RelPath>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `paths` and wakes an applier.
    pub fn add(&self, paths: impl IntoIterator<Item = RelPath>) {
        self.put_back(paths);
        self.added.notify_waiters();
    }

    /// Adds `paths` again after a round that could not undo them, without
    /// waking anyone: the appliers' retry timer comes back to them.
    pub fn put_back(&self, paths: impl IntoIterator<Item = RelPath>) {
        self.lock().extend(paths);
    }

    /// Takes up to [`UNDO_ROUND`] paths for one round.
    pub fn take(&self) -> Vec<RelPath> {
        let mut pending = self.lock();
        let round: Vec<RelPath> = pending.iter().take(UNDO_ROUND).cloned().collect();
        for p in &round {
            pending.remove(p);
        }
        round
    }

    /// Whether no path waits to be undone.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// The default maximum clock offset ([`Engine::max_clock_offset`], which
/// the clock rule of [`crate::admit`] is given): 5 minutes, as Kerberos
/// allows.
pub const DEFAULT_MAX_CLOCK_OFFSET: std::time::Duration = std::time::Duration::from_secs(300);

/// The engine of one daemon.
pub struct Engine {
    /// This host's name, as the policy gave it at start.
    pub host: HostId,
    /// The index and the announcement of its last sequence.
    pub store: Store,
    /// The mirrored tree and its write lock.
    pub disk: Disk,
    /// What happened, for `omirrd status`.
    pub counters: Counters,
    /// Bytes of file content that may be in flight from each peer.
    pub in_flight: u64,
    /// Content sessions are fetching.
    pub claims: Claims,
    /// Local changes to undo where this host only receives.
    pub undo: Undo,
    /// The most a peer's wall clock may differ from ours; see
    /// [`crate::admit`].
    pub max_clock_offset: std::time::Duration,
    /// The running sessions, as `omirrd verify` asks peers through them.
    pub verify_links: Arc<crate::verify::links::Links>,
    /// How long tombstones are kept (`--tombstone-horizon`); `None`:
    /// for ever.
    pub tombstone_horizon: Option<std::time::Duration>,
    policy: RwLock<Arc<dyn Policy>>,
}

impl Engine {
    /// An engine with the default maximum clock offset and tombstone
    /// horizon; `peers` are the host names the status lists from the
    /// start, `in_flight` is [`Engine::in_flight`].
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
            claims: Claims::default(),
            undo: Undo::default(),
            max_clock_offset: DEFAULT_MAX_CLOCK_OFFSET,
            verify_links: Default::default(),
            tombstone_horizon: Some(std::time::Duration::from_nanos(
                omirr_core::entry::DEFAULT_TOMBSTONE_HORIZON_NS,
            )),
            policy: RwLock::new(policy),
        }
    }

    /// The engine with another maximum clock offset (`--max-clock-offset`).
    pub fn with_max_clock_offset(mut self, max: std::time::Duration) -> Engine {
        self.max_clock_offset = max;
        self
    }

    /// The engine with another tombstone horizon (`None`: keep them).
    pub fn with_tombstone_horizon(mut self, horizon: Option<std::time::Duration>) -> Engine {
        self.tombstone_horizon = horizon;
        self
    }

    /// Forgets the tombstones older than the horizon, burying first what
    /// they hide ([`omirr_index::Index::expire`]), and counts them. Holds
    /// the write lock meanwhile, so that no batch is recorded between
    /// the plan and its carrying out. Blocking: call it off the runtime.
    pub fn expire_tombstones(&self) -> Result<omirr_index::Expired, omirr_index::IndexError> {
        let Some(horizon) = self.tombstone_horizon else {
            return Ok(omirr_index::Expired::default());
        };
        let horizon_ns = u64::try_from(horizon.as_nanos()).unwrap_or(u64::MAX);
        let done = {
            let _write = self.disk.lock();
            self.store.index.expire(wall(), horizon_ns)?
        };
        if !done.buried.is_empty() {
            self.store.announce();
        }
        self.counters
            .expired_tombstones
            .fetch_add(done.forgotten as u64, std::sync::atomic::Ordering::Relaxed);
        self.counters.buried_tombstones.fetch_add(
            done.buried.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(done)
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
        !path.is_within_any(&self.disk.tops) || self.policy().excluded(path)
    }
}

/// Batches of at least this many changes return their memory afterwards.
pub const LARGE_BATCH: usize = 1024;

/// Hands the memory freed after a large batch back to the system. glibc's
/// malloc keeps freed memory in the arena of each thread that used it, so
/// a large batch handled across the runtime's threads stays resident and
/// the next one adds to it (see docs/benchmarks.md).
#[allow(unsafe_code)] // see the SAFETY comment within
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap; it takes no pointers
    // and is safe to call from any thread at any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// The wall clock, as the HLC takes it, and as the clock rule compares
/// with peers.
pub fn wall() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ns = d.as_nanos().min(u64::MAX as u128) as u64;
    Timestamp(ns.saturating_add_signed(clock_skew_ns()))
}

/// `OMIRR_TEST_CLOCK_SKEW`: seconds (may be negative) added to every
/// reading of [`wall`], so that tests can run a host whose clock is off
/// without changing the machine's clock. Read once; 0 when unset or not
/// a number.
fn clock_skew_ns() -> i64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var("OMIRR_TEST_CLOCK_SKEW")
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map_or(0, |secs| secs.saturating_mul(1_000_000_000))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_claim_is_one_sessions_until_released_and_waits_are_bounded() {
        let c = Claims::default();
        let k = ([1; 32], 10);
        assert!(c.claim(1, k));
        assert!(c.claim(1, k), "already ours");
        assert!(!c.claim(2, k), "another session's");
        // A wait for another's claim ends at its limit...
        let started = std::time::Instant::now();
        c.wait(2, &[k], Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        // ... or as soon as it is released.
        let c = Arc::new(c);
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            let started = std::time::Instant::now();
            c2.wait(2, &[k], Duration::from_secs(10)).await;
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.release(2, &[k]);
        assert!(!c.claim(2, k), "only its owner releases it");
        c.release(1, &[k]);
        let waited = waiter.await.expect("waiter");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(c.claim(2, k), "free again");
    }
}
