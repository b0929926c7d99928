//! Recording local changes: the watcher's reports, looked at and recorded
//! in the index under the write lock; the pushers then send them.

use crate::engine::{release_freed_memory, wall, Engine, LARGE_BATCH};
use omirr_core::{Content, IndexView, RelPath};
use std::collections::HashSet;
use std::sync::Arc;

/// What the watcher reported (see `omirr_fs::watch::WatchEvent`).
#[derive(Debug, Default)]
pub struct Dirty {
    /// Files, or directories and everything below them...
    pub paths: Vec<RelPath>,
    /// ...except below the directories among these, whose own metadata
    /// alone was reported changed.
    pub attrs_only: Vec<RelPath>,
    /// Files still being written: left alone (each is reported once
    /// closed).
    pub still_written: Vec<RelPath>,
}

impl Dirty {
    /// `paths` and everything below them.
    pub fn all(paths: Vec<RelPath>) -> Dirty {
        Dirty {
            paths,
            ..Dirty::default()
        }
    }
}

/// Looks at the `dirty` paths and records what changed, stamped now;
/// wakes the pushers. Errors are logged: the next report or scan looks
/// again.
pub async fn record(engine: &Arc<Engine>, dirty: Dirty) {
    let Dirty {
        paths: dirty,
        attrs_only,
        still_written,
    } = dirty;
    let reported = dirty.len();
    let e = engine.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut w = e.disk.lock();
        // Under the write lock: an applied batch is recorded, stat keys
        // and all, before its writes are looked at here.
        let dirty = not_applied_here(&e, dirty);
        if dirty.is_empty() {
            return Ok(None);
        }
        let shallow = Shallow::new(&e, &dirty, &attrs_only);
        let still_written: HashSet<RelPath> = still_written.into_iter().collect();
        let policy = e.policy();
        let rules = w.applier.rules();
        crate::record::record_live(
            &e.store.index,
            &mut w.hlc,
            &e.host,
            &e.disk.root,
            &e.disk.tops,
            &dirty,
            &|p| policy.excluded(p) || still_written.contains(p) || shallow.leaves_alone(p),
            &*rules,
            wall(),
        )
        .map(Some)
    })
    .await;
    match result {
        Ok(Ok(None)) => {}
        Ok(Ok(Some(r))) => {
            for issue in r.report.issues.iter().filter(|i| i.worth_logging()) {
                tracing::warn!("{issue}");
            }
            if r.report.found.len() + r.report.vanished.len() >= LARGE_BATCH {
                release_freed_memory();
            }
            if !r.undone.is_empty() {
                for path in &r.undone {
                    tracing::warn!("local change to {path} is not sent: this host only receives it (receiveonly); the set's version is put back");
                }
                engine.undo.add(r.undone);
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

/// `dirty` without the regular files that are exactly what the index
/// last recorded there: the same inode, size, mtime and ctime as the stat
/// key the index holds, under a live file entry of that size. That is
/// what the applier leaves behind (it records the key of each file it
/// writes, right after the rename the watcher reports), and a scan of such
/// a path would trust the key in the same way (see
/// [`omirr_fs::scan`]'s rule), reuse the recorded hash, and find nothing
/// to record: dropping it here only spares the scan. A user's write
/// changes the ctime, and with it the key, so it is never dropped; a
/// write in the very tick of the applier's that left size, mtime and
/// ctime alike would escape the scan all the same. Anything that cannot
/// be checked is kept.
fn not_applied_here(engine: &Engine, dirty: Vec<RelPath>) -> Vec<RelPath> {
    use std::os::unix::ffi::OsStrExt;
    // One read transaction for the whole batch, not two per path.
    let Ok(index) = engine.store.index.reader() else {
        return dirty;
    };
    let root = &engine.disk.root;
    let recorded = |path: &RelPath| -> Option<bool> {
        let full = root.join(std::ffi::OsStr::from_bytes(path.as_bytes()));
        let st = rustix::fs::lstat(full).ok()?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Some(false);
        }
        let now = omirr_fs::scan::key_of(&st);
        let key = index.stat(path).ok()??;
        if !key.unchanged(&now) {
            return Some(false);
        }
        let entry = index.entry(path).ok()??;
        Some(
            entry.is_live()
                && matches!(entry.content, Content::File { size, .. } if size == now.size),
        )
    };
    let before = dirty.len();
    let kept: Vec<RelPath> = dirty
        .into_iter()
        .filter(|p| recorded(p) != Some(true))
        .collect();
    if kept.len() < before {
        tracing::trace!(
            dropped = before - kept.len(),
            "reported files already recorded as they are"
        );
    }
    kept
}

/// Directories reported for their own metadata alone: the scan looks at
/// each of them, but not below it (other than at the paths reported
/// too). Only directories the index holds as such qualify: one it does
/// not know is walked, whatever was reported.
struct Shallow {
    dirs: HashSet<RelPath>,
    /// Every reported path and its ancestors: the scan must reach them.
    reach: HashSet<RelPath>,
    /// The reported paths walked in full.
    deep: HashSet<RelPath>,
}

impl Shallow {
    fn new(engine: &Engine, dirty: &[RelPath], attrs_only: &[RelPath]) -> Shallow {
        let reported: HashSet<&RelPath> = dirty.iter().collect();
        let known_dir = |p: &RelPath| {
            engine
                .store
                .index
                .entry(p)
                .ok()
                .flatten()
                .is_some_and(|e| e.is_live() && e.content.is_dir())
        };
        let dirs: HashSet<RelPath> = attrs_only
            .iter()
            .filter(|p| reported.contains(p) && known_dir(p))
            .cloned()
            .collect();
        if dirs.is_empty() {
            return Shallow {
                dirs,
                reach: HashSet::new(),
                deep: HashSet::new(),
            };
        }
        let mut reach = HashSet::new();
        for p in dirty {
            if reach.insert(p.clone()) {
                reach.extend(p.ancestors());
            }
        }
        let deep = dirty
            .iter()
            .filter(|p| !dirs.contains(*p))
            .cloned()
            .collect();
        Shallow { dirs, reach, deep }
    }

    /// Whether the scan leaves `path` alone: below a directory reported
    /// for its metadata alone, and neither reported itself, nor on the
    /// way to a reported path, nor below one walked in full.
    fn leaves_alone(&self, path: &RelPath) -> bool {
        if self.dirs.is_empty() || self.reach.contains(path) {
            return false;
        }
        let mut below_shallow = false;
        for a in path.ancestors() {
            if self.deep.contains(&a) {
                return false;
            }
            below_shallow |= self.dirs.contains(&a);
        }
        below_shallow
    }
}
