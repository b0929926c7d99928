//! The resolver's last pass: the disk work that turns the tree before
//! into the tree after (see [`Presence`]), in an order a real filesystem
//! accepts (the order the module doc of [`crate::resolve`] lists).
//!
//! One diff serves both [`super::resolve_with`] and [`super::restore`]:
//! a rule added here holds for both. What the conflict copies do
//! themselves ([`Exclusions`]) is left out.

use super::presence::Presence;
use super::{Action, Source};
use crate::entry::{Content, Hash};
use crate::tree::{present, IndexView, Node};
use crate::RelPath;
use std::collections::{BTreeSet, HashMap};

/// The paths the diff leaves to the conflict copies' own actions (none
/// for [`super::restore`]).
#[derive(Debug, Default)]
pub(super) struct Exclusions {
    /// Old conflict copies that a `KeepConflictCopy` prunes: no `Remove`
    /// and no `SaveOld` for them.
    pub pruned: BTreeSet<RelPath>,
    /// The copies, which their `KeepConflictCopy` writes.
    pub copies: BTreeSet<RelPath>,
    /// The directories made only to hold a copy (a copy of a directory
    /// that gives way): their metadata is set right after the copies, so
    /// that no later failure of the batch holds the copies back.
    pub copy_dirs: BTreeSet<RelPath>,
}

/// The actions that take the disk from `presence.before` (what
/// `before_view` implies) to `presence.after` (what `after_view`
/// implies), but for `exclusions`.
pub(super) fn diff<B: IndexView, A: IndexView<Error = B::Error>>(
    before_view: &B,
    after_view: &A,
    presence: &Presence,
    exclusions: &Exclusions,
    savetargets: &dyn Fn(&RelPath) -> bool,
) -> Result<Vec<Action>, B::Error> {
    let Differing {
        mut removes,
        creates,
    } = differing(presence, &exclusions.pruned);

    // Renames: a file leaving and the same content arriving elsewhere.
    let mut leaving: HashMap<Hash, Vec<RelPath>> = HashMap::new();
    for (p, was) in &removes {
        if let Content::File { hash, .. } = was {
            leaving.entry(*hash).or_default().push(p.clone());
        }
    }
    let mut maker = Maker {
        before_view,
        after_view,
        presence,
        leaving,
    };
    let mut made = Creates::default();
    for (p, node) in creates {
        if exclusions.copies.contains(&p) {
            continue;
        }
        if let Some(action) = maker.making(p, node)? {
            made.push(action, &exclusions.copy_dirs);
        }
    }

    let mut actions = made.early;
    actions.extend(save_olds(
        presence,
        &made.renamed_from,
        exclusions,
        savetargets,
    ));
    actions.extend(made.renames);
    removes.retain(|(p, _)| !made.renamed_from.contains(p));
    // Deepest first: byte order puts a directory before its children, so
    // reverse order puts children first.
    removes.sort_by(|a, b| b.0.cmp(&a.0));
    actions.extend(
        removes
            .into_iter()
            .map(|(path, was)| Action::Remove { path, was }),
    );
    actions.extend(made.writes);
    actions.extend(made.links);
    Ok(actions)
}

/// The paths where the tree before and the tree after differ, in path
/// order. A path whose kind changes is in both lists: the old one goes
/// first.
struct Differing {
    /// What goes: the path, and what the index believed it to be.
    removes: Vec<(RelPath, Content)>,
    /// What comes: the path, and what is to be there.
    creates: Vec<(RelPath, Node)>,
}

/// The paths where `presence` differs; `pruned` paths go by their
/// conflict copy's action.
fn differing(presence: &Presence, pruned: &BTreeSet<RelPath>) -> Differing {
    let mut removes = Vec::new();
    let mut creates = Vec::new();
    for (p, before) in &presence.before {
        match (before, &presence.after[p]) {
            (b, a) if b == a => {}
            (Some(_), None) if pruned.contains(p) => {}
            (Some(b), None) => removes.push((p.clone(), b.content.clone())),
            (None, Some(a)) => creates.push((p.clone(), a.clone())),
            (Some(b), Some(a)) => {
                // Same kind: replaced or adjusted in place. Another kind:
                // the old one goes first.
                if std::mem::discriminant(&b.content) != std::mem::discriminant(&a.content) {
                    removes.push((p.clone(), b.content.clone()));
                }
                creates.push((p.clone(), a.clone()));
            }
            (None, None) => {}
        }
    }
    Differing { removes, creates }
}

/// The actions that make what comes, by when they run.
#[derive(Default)]
struct Creates {
    /// `MakeDir` of the directories that hold conflict copies.
    early: Vec<Action>,
    renames: Vec<Action>,
    /// Where the renames take their files from: neither removed nor
    /// saved as `NAME.OLD`.
    renamed_from: BTreeSet<RelPath>,
    writes: Vec<Action>,
    /// After the writes, which make the first names they link to.
    links: Vec<Action>,
}

impl Creates {
    fn push(&mut self, action: Action, copy_dirs: &BTreeSet<RelPath>) {
        match &action {
            Action::Rename { from, .. } => {
                self.renamed_from.insert(from.clone());
                self.renames.push(action);
            }
            Action::Link { .. } => self.links.push(action),
            Action::MakeDir { path, .. } if copy_dirs.contains(path) => self.early.push(action),
            _ => self.writes.push(action),
        }
    }
}

/// What the diff looks at to choose the action that makes a path.
struct Maker<'a, B, A> {
    before_view: &'a B,
    after_view: &'a A,
    presence: &'a Presence,
    /// The files that go, by content: where a rename takes one from.
    leaving: HashMap<Hash, Vec<RelPath>>,
}

impl<B: IndexView, A: IndexView<Error = B::Error>> Maker<'_, B, A> {
    /// The action that makes `node` at `p`, where the tree held
    /// `presence.before[p]`; `None` if there is nothing to make.
    fn making(&mut self, p: RelPath, node: Node) -> Result<Option<Action>, B::Error> {
        let b = &self.presence.before[&p];
        let action = match (&node.content, b) {
            (Content::File { size, hash }, _) => {
                let (size, hash) = (*size, *hash);
                self.making_file(p, node, size, hash)?
            }
            (Content::Dir, _) => Action::MakeDir {
                path: p,
                meta: node.meta,
            },
            (
                Content::Symlink { target },
                Some(Node {
                    content: Content::Symlink { target: old },
                    ..
                }),
            ) if target == old => Action::SetMeta {
                path: p,
                meta: node.meta,
            },
            (Content::Symlink { target }, _) => Action::MakeSymlink {
                path: p,
                target: target.clone(),
                meta: node.meta,
            },
            (
                Content::Fifo,
                Some(Node {
                    content: Content::Fifo,
                    ..
                }),
            ) => Action::SetMeta {
                path: p,
                meta: node.meta,
            },
            (Content::Fifo, _) => Action::MakeFifo {
                path: p,
                meta: node.meta,
            },
            (Content::Deleted, _) => return Ok(None),
        };
        Ok(Some(action))
    }

    /// [`making`] a file with content `size`, `hash`: a link to another name
    /// that holds it, its metadata alone, a rename of a file that leaves, or
    /// a write (copied from a local file that holds the content, or fetched).
    fn making_file(
        &mut self,
        p: RelPath,
        node: Node,
        size: u64,
        hash: Hash,
    ) -> Result<Action, B::Error> {
        let (before_view, after_view, presence) =
            (self.before_view, self.after_view, self.presence);
        // Another name of a file that is there once the writes are done,
        // with the same content: linked to it, after them.
        let linked = match &node.meta.link {
            Some(leader) if **leader != p => matches!(
                present(after_view, leader)?,
                Some(Node { content: Content::File { hash: h, .. }, .. }) if h == hash
            ),
            _ => false,
        };
        if linked {
            let from = node
                .meta
                .link
                .as_deref()
                .cloned()
                .unwrap_or_else(RelPath::root);
            return Ok(Action::Link {
                from,
                to: p,
                meta: node.meta,
            });
        }
        let b = &presence.before[&p];
        let unchanged =
            matches!(b, Some(Node { content: Content::File { hash: h, .. }, .. }) if *h == hash);
        if unchanged {
            return Ok(Action::SetMeta {
                path: p,
                meta: node.meta,
            });
        }
        // Renaming into place needs every ancestor to be a directory already,
        // or one that is to be created.
        let parents_ok = p.ancestors().all(|a| {
            a.is_root() || !matches!(presence.before.get(&a), Some(Some(n)) if !n.content.is_dir())
        });
        let from = if b.is_none() && parents_ok {
            self.leaving.get_mut(&hash).and_then(Vec::pop)
        } else {
            None
        };
        if let Some(from) = from {
            return Ok(Action::Rename {
                from,
                to: p,
                meta: node.meta,
            });
        }
        // A holder that this batch leaves alone and that is really on disk
        // (not hidden under a deleted directory).
        let source = match before_view.holder_of(&hash)? {
            Some(h) if !presence.before.contains_key(&h) && h != p => {
                match present(before_view, &h)? {
                    Some(Node {
                        content: Content::File { hash: held, .. },
                        ..
                    }) if held == hash => Source::CopyFrom(h),
                    _ => Source::Fetch,
                }
            }
            _ => Source::Fetch,
        };
        Ok(Action::WriteFile {
            path: p,
            size,
            hash,
            meta: node.meta,
            source,
        })
    }
}

/// `SaveOld` for the files whose content is about to go (`savetargets`),
/// except those that only move and the conflict copies' own paths.
fn save_olds(
    presence: &Presence,
    renamed_from: &BTreeSet<RelPath>,
    exclusions: &Exclusions,
    savetargets: &dyn Fn(&RelPath) -> bool,
) -> Vec<Action> {
    let after = &presence.after;
    let mut saves = Vec::new();
    for (p, before) in &presence.before {
        if let Some(Node {
            content: Content::File { hash: old, .. },
            ..
        }) = before
        {
            let kept = matches!(&after[p], Some(Node { content: Content::File { hash, .. }, .. }) if hash == old);
            // A NAME.OLD in a directory that goes too would keep it from
            // being removed; there is nowhere to keep it.
            let dir_stays = p.parent().is_none_or(|d| match after.get(&d) {
                Some(node) => node.as_ref().is_some_and(|n| n.content.is_dir()),
                None => true,
            });
            if !kept
                && dir_stays
                && !renamed_from.contains(p)
                && !exclusions.pruned.contains(p)
                && !exclusions.copies.contains(p)
                && savetargets(p)
            {
                saves.push(Action::SaveOld { path: p.clone() });
            }
        }
    }
    saves
}
