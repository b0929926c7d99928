//! Recording local changes: the watcher's reports, looked at and recorded
//! in the index under the write lock; the pushers then send them.

use crate::engine::{release_freed_memory, wall, Engine, LARGE_BATCH};
use omirr_core::RelPath;
use std::sync::Arc;

/// Looks at `dirty` paths (a file, or a directory and everything below
/// it) and records what changed, stamped now; wakes the pushers. Errors
/// are logged: the next report or scan looks again.
pub async fn record(engine: &Arc<Engine>, dirty: Vec<RelPath>) {
    let reported = dirty.len();
    let e = engine.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut w = e.disk.lock();
        let policy = e.policy();
        let rules = w.applier.rules();
        omirr_fs::local::record_live(
            &e.store.index,
            &mut w.hlc,
            &e.host,
            &e.disk.root,
            &e.disk.tops,
            &dirty,
            &|p| policy.excluded(p),
            &*rules,
            wall(),
        )
    })
    .await;
    match result {
        Ok(Ok(r)) => {
            for issue in &r.report.issues {
                tracing::warn!("{issue}");
            }
            if r.report.found.len() + r.report.vanished.len() >= LARGE_BATCH {
                release_freed_memory();
            }
            if r.changes > 0 {
                tracing::debug!(changes = r.changes, reported, "local changes recorded");
                engine.counters.add_local(r.changes as u64);
                engine.store.announce();
            }
        }
        Ok(Err(e)) => tracing::error!("cannot record local changes: {e}"),
        // Cancelled: the daemon is stopping; the next start scans.
        Err(e) if e.is_cancelled() => {}
        Err(e) => tracing::error!("local change task failed: {e}"),
    }
}
