//! The tree a host must have on disk, derived from its index.
//!
//! Each path's winning entry alone cannot say what belongs on disk, because
//! paths nest: a directory may be deleted on one host while a file below it
//! is written on another. The rule, applied identically everywhere:
//!
//! - A live file or symlink is present if no present path lies below it
//!   and every ancestor is a directory in the index, has no entry, or lost
//!   to it (the ancestor's version is lower). A newer child thus brings
//!   back a deleted (or replaced) directory; an older one goes with it.
//! - A directory is present if it is live and its ancestors allow it (as
//!   above), or if anything present lies below it. A directory that exists
//!   only for its children gets its own metadata if the index has a live
//!   directory entry for it, else [`Meta::IMPLIED_DIR`].
//!
//! Since the result depends only on the index, hosts with the same index
//! have the same tree.
//!
//! The hiding half of the rule (a newer non-directory hides what lies
//! below it) is owned here once, and applied two ways: by looking each
//! ancestor up ([`present`], [`visible`]), and by [`Hiding`], for a caller
//! that reads entries in path order anyway (the scanner's baseline, in
//! `omirr_sync::record`).

use crate::entry::{Content, Entry, Hash, Meta};
use crate::version::Version;
use crate::RelPath;
use std::collections::HashMap;

/// Read access to an index: what [`present`] and the resolver need.
pub trait IndexView {
    /// Why a read failed ([`Infallible`](std::convert::Infallible) for an
    /// index in memory).
    type Error;

    /// The winning entry for `path`, tombstones included.
    fn entry(&self, path: &RelPath) -> Result<Option<Entry>, Self::Error>;

    /// Every entry strictly below `dir`, tombstones included, in path
    /// order.
    fn below(&self, dir: &RelPath) -> Result<Vec<(RelPath, Entry)>, Self::Error>;

    /// Some path whose entry is a live file with this content, if any.
    fn holder_of(&self, hash: &Hash) -> Result<Option<RelPath>, Self::Error>;
}

/// What must be on disk at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Never [`Content::Deleted`].
    pub content: Content,
    /// The metadata it must have: the entry's, or [`Meta::IMPLIED_DIR`]
    /// for a directory that is there only for what lies below it.
    pub meta: Meta,
}

/// What must be on disk at `path`, or `None` for nothing. The root of the
/// namespace is never present (it is the mirror root itself).
pub fn present<V: IndexView>(view: &V, path: &RelPath) -> Result<Option<Node>, V::Error> {
    if path.is_root() {
        return Ok(None);
    }
    let own = view.entry(path)?;
    match &own {
        Some(e) if e.content.is_dir() => {
            if ancestors_allow(view, path, &e.version)? || has_present_below(view, path)? {
                return Ok(Some(Node {
                    content: Content::Dir,
                    meta: e.meta.clone(),
                }));
            }
            Ok(None)
        }
        _ => {
            if has_present_below(view, path)? {
                return Ok(Some(Node {
                    content: Content::Dir,
                    meta: Meta::IMPLIED_DIR,
                }));
            }
            match own {
                Some(e) if e.is_live() && ancestors_allow(view, path, &e.version)? => {
                    Ok(Some(Node {
                        content: e.content,
                        meta: e.meta,
                    }))
                }
                _ => Ok(None),
            }
        }
    }
}

/// The entry at `path` if it is live and no ancestor hides it: what the
/// index itself puts on disk there. [`present`] says more: a directory may
/// be present for its children alone, and a file with something present
/// below it is a directory.
pub fn visible<V: IndexView>(view: &V, path: &RelPath) -> Result<Option<Entry>, V::Error> {
    if path.is_root() {
        return Ok(None);
    }
    match view.entry(path)? {
        Some(e) if e.is_live() && ancestors_allow(view, path, &e.version)? => Ok(Some(e)),
        _ => Ok(None),
    }
}

/// What an entry can hide below it: its version, if it is not a
/// directory (a file, a symlink, a tombstone...). A directory hides
/// nothing.
fn hider(entry: &Entry) -> Option<&Version> {
    (!entry.content.is_dir()).then_some(&entry.version)
}

/// Whether a hider of `hider`'s version hides an entry of `version` below
/// it: it does if it is newer.
fn hides(hider: &Version, version: &Version) -> bool {
    hider > version
}

/// Whether every ancestor of `path` is a directory, unknown, or older than
/// `version`.
fn ancestors_allow<V: IndexView>(
    view: &V,
    path: &RelPath,
    version: &Version,
) -> Result<bool, V::Error> {
    for a in path.ancestors() {
        if a.is_root() {
            break;
        }
        if let Some(e) = view.entry(&a)? {
            if hider(&e).is_some_and(|h| hides(h, version)) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The hiding rule of [`present`] for entries read in path order, where an
/// ancestor's entry comes before what lies below it: each entry is told
/// whether an ancestor met earlier hides it, without a lookup per
/// ancestor. Entries above the range read are [`Hiding::note`]d first.
#[derive(Debug, Default)]
pub struct Hiding {
    /// The versions of the non-directories met, by path.
    hiders: HashMap<RelPath, Version>,
}

impl Hiding {
    /// Notes the entry at `path`, an ancestor of entries to come.
    pub fn note(&mut self, path: &RelPath, entry: &Entry) {
        if let Some(v) = hider(entry) {
            self.hiders.insert(path.clone(), v.clone());
        }
    }

    /// Whether no ancestor of `path` noted so far hides `entry`; then
    /// notes it. An entry allowed and live is [`visible`].
    pub fn allows(&mut self, path: &RelPath, entry: &Entry) -> bool {
        let hidden = path.ancestors().any(|a| {
            self.hiders
                .get(&a)
                .is_some_and(|h| hides(h, &entry.version))
        });
        self.note(path, entry);
        !hidden
    }
}

/// Whether some live non-directory entry below `dir` is allowed by all its
/// ancestors, or some live directory below is (a directory alone keeps its
/// parents too).
fn has_present_below<V: IndexView>(view: &V, dir: &RelPath) -> Result<bool, V::Error> {
    for (p, e) in view.below(dir)? {
        if e.is_live() && ancestors_allow(view, &p, &e.version)? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemIndex;
    use crate::version::{HostId, Timestamp};
    use crate::Change;
    use proptest::prelude::*;

    /// The paths of the random trees: some sort between a directory and
    /// its children (`a-` lies between `a` and `a/b` in path order).
    const PATHS: &[&str] = &[
        "a", "a-", "a/b", "a/b-", "a/b/c", "a/b/c/d", "a/c", "a-/b", "b", "b/a", "b/a/a", "b/b",
    ];

    /// One change of a random tree: which path, what kind of entry (a
    /// directory, a file, a symlink or a tombstone), its timestamp and
    /// writer.
    type Spec = (usize, u8, u64, bool);

    fn index(spec: &[Spec]) -> MemIndex {
        let mut m = MemIndex::default();
        for &(i, kind, ts, first) in spec {
            let content = match kind {
                0 => Content::Dir,
                1 => Content::File {
                    size: ts,
                    hash: [7; 32],
                },
                2 => Content::Symlink {
                    target: b"t".to_vec(),
                },
                _ => Content::Deleted,
            };
            let host = HostId::new(if first { "alpha" } else { "beta" });
            m.record(Change {
                path: RelPath::new(PATHS[i].as_bytes()).expect("path"),
                entry: Entry {
                    content,
                    meta: Meta::default(),
                    version: Version {
                        ts: Timestamp(ts),
                        host,
                    },
                    base: None,
                },
            });
        }
        m
    }

    fn tree() -> impl Strategy<Value = Vec<Spec>> {
        proptest::collection::vec((0..PATHS.len(), 0u8..4, 1u64..6, any::<bool>()), 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Reading a range in path order with [`Hiding`] (the ancestors
        /// above the range noted first) finds the entries [`visible`]
        /// finds by looking each ancestor up.
        #[test]
        fn hiding_in_path_order_agrees_with_visible(spec in tree(), top in 0..PATHS.len() + 1) {
            let m = index(&spec);
            let top = PATHS.get(top).map_or(RelPath::root(), |t| RelPath::new(t.as_bytes()).expect("path"));
            let mut hiding = Hiding::default();
            for a in top.ancestors().filter(|a| !a.is_root()) {
                if let Some(e) = m.entry(&a).expect("mem") {
                    hiding.note(&a, &e);
                }
            }
            let own = m.entry(&top).expect("mem").filter(|_| !top.is_root()).map(|e| (top.clone(), e));
            for (p, e) in own.into_iter().chain(m.below(&top).expect("mem")) {
                let allowed = hiding.allows(&p, &e);
                let visible = visible(&m, &p).expect("mem");
                prop_assert_eq!(allowed && e.is_live(), visible.is_some(), "{}", p);
            }
        }

        /// What is visible is present: as itself, unless something present
        /// below a non-directory makes it a directory.
        #[test]
        fn visible_entries_are_present(spec in tree()) {
            let m = index(&spec);
            for (p, _) in m.iter() {
                let Some(e) = visible(&m, p).expect("mem") else { continue };
                let node = present(&m, p).expect("mem");
                prop_assert!(node.is_some(), "{} visible but not present", p);
                let node = node.expect("checked");
                if e.content.is_dir() || !node.content.is_dir() {
                    prop_assert_eq!(node, Node { content: e.content, meta: e.meta }, "{}", p);
                }
            }
        }
    }
}
