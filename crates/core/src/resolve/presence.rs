//! The resolver's first pass: which paths a set of changes can affect,
//! and what the tree ([`crate::tree::present`]) holds at each of them
//! before the changes and after.
//!
//! A change affects more than its own path, because the tree rule makes a
//! path's presence depend on its ancestors' entries and on what lies
//! below it: the affected paths are the changed paths, their ancestors,
//! everything below them and the directories in between.

use crate::tree::{present, IndexView, Node};
use crate::RelPath;
use std::collections::{BTreeMap, BTreeSet};

/// The tree before and after a set of changes, at every path the changes
/// can affect. Both maps have the same keys: the affected paths.
pub(super) struct Presence {
    pub before: BTreeMap<RelPath, Option<Node>>,
    pub after: BTreeMap<RelPath, Option<Node>>,
}

impl Presence {
    /// The tree `before` and `after` imply at every path the `changed`
    /// paths affect. The two views are one index without and with the
    /// changes laid over it, in either order (a batch laid over the
    /// index, or the index under the local changes a receive-only host
    /// undoes): what lies below a changed path in `after` and not in
    /// `before` is then a changed path itself, so looking below in
    /// `before` alone finds every affected path.
    pub fn between<'p, B: IndexView, A: IndexView<Error = B::Error>>(
        before: &B,
        after: &A,
        changed: impl Iterator<Item = &'p RelPath>,
    ) -> Result<Presence, B::Error> {
        let mut affected = BTreeSet::new();
        for path in changed {
            affected.insert(path.clone());
            for a in path.ancestors() {
                if !a.is_root() {
                    affected.insert(a);
                }
            }
            // A directory that stays one (its metadata changed) hides and
            // uncovers nothing: only a non-directory ancestor does (see
            // `crate::tree`). Nothing below it is affected by the change.
            // (`after` first: in a batch, most changes are no directory,
            // and its entry is in memory.)
            let is_dir = |e: Option<crate::Entry>| e.is_some_and(|e| e.content.is_dir());
            if is_dir(after.entry(path)?) && is_dir(before.entry(path)?) {
                continue;
            }
            // Everything below, and the directories in between, which may
            // have no entry of their own (present only for what they hold).
            for (below, _) in before.below(path)? {
                for a in below.ancestors() {
                    if !a.is_below(path) || !affected.insert(a) {
                        break;
                    }
                }
                affected.insert(below);
            }
        }
        let mut presence = Presence {
            before: BTreeMap::new(),
            after: BTreeMap::new(),
        };
        for p in affected {
            presence.before.insert(p.clone(), present(before, &p)?);
            presence.after.insert(p.clone(), present(after, &p)?);
        }
        Ok(presence)
    }

    /// Adds `paths` and their ancestors, once more changes (the conflict
    /// copies) are laid over `after`: what the tree holds after is looked
    /// at again at each of them, what it held before only where not
    /// known yet.
    pub fn add<B: IndexView, A: IndexView<Error = B::Error>>(
        &mut self,
        before: &B,
        after: &A,
        paths: impl IntoIterator<Item = RelPath>,
    ) -> Result<(), B::Error> {
        for p in paths {
            let mut new = vec![p.clone()];
            new.extend(p.ancestors().filter(|a| !a.is_root()));
            for q in new {
                if !self.before.contains_key(&q) {
                    self.before.insert(q.clone(), present(before, &q)?);
                }
                self.after.insert(q.clone(), present(after, &q)?);
            }
        }
        Ok(())
    }
}
