//! From what is on disk to local changes.
//!
//! A scan or the watcher reports paths that may have changed; each is
//! compared with what the index says must be there
//! ([`crate::tree::present`]), and where they differ the host has a new
//! local change, which gets a version here. Writes the daemon applied
//! itself already match the index, so they produce nothing: this is what
//! keeps hosts from echoing each other's changes.
//!
//! One change can alter what the index implies elsewhere: recreating a
//! deleted directory brings back into view the older entries below it,
//! which are not on disk. So every change puts its ancestors and the
//! index's paths below it back on the list, until disk and index agree on
//! all of them.

use crate::entry::{Change, Content, Entry, Hash, Meta};
use crate::tree::{present, IndexView, Node};
use crate::version::{Hlc, HostId, Timestamp, Version};
use crate::RelPath;
use std::collections::{BTreeMap, BTreeSet};

/// When a change happened, which decides its version's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Seen live by the watcher: stamped above everything seen.
    Live {
        /// The wall clock when the watcher saw the change.
        wall: Timestamp,
    },
    /// Found by a scan (made while nobody watched): stamped at the
    /// change's ctime (for a deletion, the parent directory's), but above
    /// `floor`, everything the host had seen when the scan began
    /// ([`Hlc::last`] then). See [`Hlc::at`].
    Scanned {
        /// The path's ctime (for a deletion, its parent directory's).
        ctime: Timestamp,
        /// [`Hlc::last`] when the scan began.
        floor: Timestamp,
    },
}

/// What `observe` needs to know about the disk.
pub struct Disk<'a> {
    /// What is on disk at a path (`None`: nothing).
    pub at: &'a mut dyn FnMut(&RelPath) -> Option<Node>,
    /// When a path's change happened.
    pub when: &'a dyn Fn(&RelPath) -> When,
    /// Whether a path is this host's to report on: inside a mirrored tree,
    /// not excluded, and looked at. Paths outside (the directories above a
    /// mirrored top, say) are never recorded.
    pub in_scope: &'a dyn Fn(&RelPath) -> bool,
}

/// The changes that make the index agree with the disk on `paths` and on
/// everything those changes affect. The caller records the returned
/// changes, in order.
pub fn observe<V: IndexView>(
    view: &V,
    hlc: &mut Hlc,
    host: &HostId,
    paths: impl IntoIterator<Item = RelPath>,
    disk: Disk<'_>,
) -> Result<Vec<Change>, V::Error> {
    let Disk {
        at: on_disk,
        when,
        in_scope,
    } = disk;
    let mut todo: BTreeSet<RelPath> = paths.into_iter().collect();
    let mut out: BTreeMap<RelPath, Entry> = BTreeMap::new();
    let mut order = Vec::new();
    // Each change adds work only below or above its own path, and a path
    // that matches the disk adds none, so this ends; the bound is a guard.
    let mut budget = 64 + 16 * todo.len();
    while let Some(path) = todo.pop_first() {
        if path.is_root() || !in_scope(&path) {
            continue;
        }
        let overlay = Overlay {
            base: view,
            top: &out,
        };
        let disk = on_disk(&path);
        let was = present(&overlay, &path)?;
        if was == disk {
            // A live entry that a change found here hides (a file in a
            // deleted directory) and that was on disk before: it gets a
            // tombstone of its own, so that the peers see that this host
            // removed it knowing it (its base), and take no conflict
            // copy of it (see `crate::conflict`).
            // Each such path is recorded once (then its entry is a
            // tombstone) and adds no work: no budget is spent on it.
            let previous = overlay.entry(&path)?;
            let hidden = disk.is_none()
                && previous.as_ref().is_some_and(|e| e.is_live())
                && present(view, &path)?.is_some();
            if hidden {
                let ts = when(&path).stamp(hlc);
                let base = base_of(previous.as_ref(), host);
                let entry = local_entry(Content::Deleted, Meta::default(), ts, host, base);
                out.insert(path.clone(), entry);
                order.push(path);
            }
            continue;
        }
        // A directory entry that stays a directory entry (its mode, owner
        // or mtime changed) changes what is present nowhere else: the
        // paths below and above it need no second look. (Not so for a
        // directory present only for its children, over a tombstone:
        // replacing the tombstone brings older entries below it back.)
        let dirs =
            matches!((&was, &disk), (Some(a), Some(b)) if a.content.is_dir() && b.content.is_dir());
        let meta_only = dirs && overlay.entry(&path)?.is_some_and(|e| e.content.is_dir());
        budget = budget.saturating_sub(1);
        if budget == 0 {
            break;
        }
        let ts = when(&path).stamp(hlc);
        let (content, meta) = match disk {
            Some(n) => (n.content, n.meta),
            None => (Content::Deleted, Meta::default()),
        };
        let base = base_of(overlay.entry(&path)?.as_ref(), host);
        let entry = local_entry(content, meta, ts, host, base);
        out.insert(path.clone(), entry);
        order.push(path.clone());
        if meta_only {
            continue;
        }
        let overlay = Overlay {
            base: view,
            top: &out,
        };
        for a in path.ancestors() {
            todo.insert(a);
        }
        for (below, _) in overlay.below(&path)? {
            todo.insert(below);
        }
    }
    // Each path once, with its last entry, in the order first changed.
    let mut seen = BTreeSet::new();
    Ok(order
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .filter_map(|p| out.remove(&p).map(|entry| Change { path: p, entry }))
        .collect())
}

impl When {
    /// The timestamp of a change that happened then.
    fn stamp(self, hlc: &mut Hlc) -> Timestamp {
        match self {
            When::Live { wall } => hlc.now(wall),
            When::Scanned { ctime, floor } => hlc.at(ctime, floor),
        }
    }
}

/// A change of this host's, stamped `ts`.
fn local_entry(
    content: Content,
    meta: Meta,
    ts: Timestamp,
    host: &HostId,
    base: Option<Version>,
) -> Entry {
    Entry {
        content,
        meta,
        version: Version {
            ts,
            host: host.clone(),
        },
        base,
    }
}

/// The base of a local change that replaces `previous` (this host's
/// entry for the path): the previous version, or, if that was a change of
/// this very host, its base. A run of local edits thus keeps the base of
/// the last version that came from elsewhere, and a peer that saw only
/// the last of the run finds the base it knows: no false conflict.
pub fn base_of(previous: Option<&Entry>, host: &HostId) -> Option<Version> {
    let previous = previous?;
    if previous.version.host == *host {
        previous.base.clone()
    } else {
        Some(previous.version.clone())
    }
}

/// The index with the changes found so far laid over it.
pub(crate) struct Overlay<'a, V> {
    pub base: &'a V,
    pub top: &'a BTreeMap<RelPath, Entry>,
}

impl<V: IndexView> IndexView for Overlay<'_, V> {
    type Error = V::Error;

    fn entry(&self, path: &RelPath) -> Result<Option<Entry>, V::Error> {
        match self.top.get(path) {
            Some(e) => Ok(Some(e.clone())),
            None => self.base.entry(path),
        }
    }

    fn below(&self, dir: &RelPath) -> Result<Vec<(RelPath, Entry)>, V::Error> {
        let mut merged: BTreeMap<RelPath, Entry> = self.base.below(dir)?.into_iter().collect();
        for (p, e) in self.top.range(dir.below_path_range()) {
            merged.insert(p.clone(), e.clone());
        }
        Ok(merged.into_iter().collect())
    }

    fn holder_of(&self, hash: &Hash) -> Result<Option<RelPath>, V::Error> {
        self.base.holder_of(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemIndex;
    use crate::testing::p;

    #[test]
    fn a_directory_whose_metadata_alone_changed_is_looked_at_alone() {
        let host = HostId::new("alpha");
        let meta = |mtime_ns| Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns,
            ..Default::default()
        };
        let entry = |content, mtime_ns| Entry {
            content,
            meta: meta(mtime_ns),
            version: Version {
                ts: Timestamp(1),
                host: host.clone(),
            },
            base: None,
        };
        let mut index = MemIndex::default();
        index.record(Change {
            path: p("d"),
            entry: entry(Content::Dir, 1),
        });
        for i in 0..100 {
            index.record(Change {
                path: p(&format!("d/f{i}")),
                entry: entry(
                    Content::File {
                        size: 0,
                        hash: [0; 32],
                    },
                    1,
                ),
            });
        }
        let mut looked_at = Vec::new();
        let mut hlc = Hlc::default();
        let changes = observe(
            &index,
            &mut hlc,
            &host,
            [p("d")],
            Disk {
                at: &mut |path| {
                    looked_at.push(path.clone());
                    let node = present(&index, path).expect("infallible")?;
                    // Only the directory's mtime differs on disk.
                    Some(if path == &p("d") {
                        Node {
                            meta: meta(2),
                            ..node
                        }
                    } else {
                        node
                    })
                },
                when: &|_| When::Live { wall: Timestamp(5) },
                in_scope: &|_| true,
            },
        )
        .expect("infallible");
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].entry.meta.mtime_ns, 2);
        assert_eq!(
            looked_at,
            vec![p("d")],
            "the files below were looked at too"
        );
    }
}
