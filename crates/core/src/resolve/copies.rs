//! The conflict copies a batch makes: this host's own files that the
//! batch replaces or removes without having known them (see
//! [`crate::conflict`]) are kept under a copy's name, and the copies join
//! the batch as this host's changes.

use super::diff::Exclusions;
use super::presence::Presence;
use super::{Action, Conflict, ConflictRules};
use crate::conflict;
use crate::entry::{Change, Content, Entry, Hash, Meta};
use crate::observe::Overlay;
use crate::tree::{IndexView, Node};
use crate::version::{HostId, Timestamp};
use crate::{RelPath, Version};
use std::collections::{BTreeMap, BTreeSet};

/// One conflict copy to make: the action, and the changes it amounts to
/// in the index (the copy, and tombstones for the copies it prunes).
pub(super) struct Keep {
    copy: RelPath,
    prune: Vec<RelPath>,
    pub action: Action,
    changes: Vec<Change>,
}

/// This host's own file at `path` that a batch replaces or removes: its
/// content and its entry.
struct Losing<'a> {
    path: &'a RelPath,
    size: u64,
    hash: Hash,
    entry: Entry,
}

/// The conflict copies of this host's own files that the batch
/// (`overlay`) replaces or removes without having known them. Each
/// conflict goes to `conflicts` and is taken out of `lost_here`.
pub(super) fn conflict_copies<V: IndexView>(
    view: &V,
    overlay: &BTreeMap<RelPath, Entry>,
    presence: &Presence,
    cr: &ConflictRules<'_>,
    lost_here: &mut BTreeMap<RelPath, (Version, Version)>,
    conflicts: &mut Vec<Conflict>,
) -> Result<Vec<Keep>, V::Error> {
    // Above every version the batch brings, so that a copy is present
    // whatever the batch deletes around it.
    let newest = overlay
        .values()
        .map(|e| e.version.ts)
        .max()
        .unwrap_or_default();
    let mut keeps: Vec<Keep> = Vec::new();
    let mut taken: BTreeSet<RelPath> = BTreeSet::new();
    for (p, was) in &presence.before {
        let Some(Node {
            content: Content::File { size, hash },
            ..
        }) = was
        else {
            continue;
        };
        if matches!(&presence.after[p], Some(Node { content: Content::File { hash: h, .. }, .. }) if h == hash)
        {
            continue;
        }
        let Some(local) = view.entry(p)? else {
            continue;
        };
        if local.version.host != *cr.host {
            continue;
        }
        let Some(cause) = conflicting_cause(overlay, p, &local, cr) else {
            continue;
        };
        lost_here.remove(p);
        let mut conflict = Conflict {
            path: p.clone(),
            ours: local.version.clone(),
            theirs: cause.version.clone(),
            ours_won: false,
            copy: None,
        };
        let keep = (cr.keep)(p);
        if keep == 0 {
            conflicts.push(conflict);
            continue;
        }
        let losing = Losing {
            path: p,
            size: *size,
            hash: *hash,
            entry: local,
        };
        // Next to the file if its directory stays one; otherwise in a
        // copy of the shallowest ancestor that gives way to a non-directory.
        let gives_way = p.ancestors().collect::<Vec<_>>().into_iter().rev().find(|a| {
            !a.is_root()
                && matches!(presence.after.get(a), Some(n) if !n.as_ref().is_some_and(|n| n.content.is_dir()))
        });
        let name = copy_name(view, overlay, cr, &taken, &losing, gives_way.as_ref())?;
        let Some(CopyName { copy, replaces }) = name else {
            conflicts.push(conflict);
            continue;
        };
        conflict.copy = Some(copy.clone());
        conflicts.push(conflict);
        // `None`: a copy with this content is there already.
        let Some(existing) = replaces else {
            continue;
        };
        taken.insert(copy.clone());
        // The oldest copies beyond the bound go (next to the file only).
        let olds = match gives_way {
            None => copies_beyond(view, overlay, &taken, p, keep)?,
            Some(_) => Vec::new(),
        };
        keeps.push(Keep::new(losing, copy, existing, olds, newest, cr.host));
    }
    Ok(keeps)
}

/// The change of the batch that decides what becomes of `p` (its own,
/// else an ancestor's, a deleted or replaced directory, else one below
/// it, a directory that a file must give way to), if it conflicts with
/// `local`, this host's own entry at `p`.
fn conflicting_cause<'o>(
    overlay: &'o BTreeMap<RelPath, Entry>,
    p: &RelPath,
    local: &Entry,
    cr: &ConflictRules<'_>,
) -> Option<&'o Entry> {
    match overlay.get(p) {
        Some(remote) => conflict::conflicts(local, remote, cr.host).then_some(remote),
        None => match p
            .ancestors()
            .find_map(|a| overlay.get(&a))
            .or_else(|| overlay.range(p.below_path_range()).next().map(|(_, e)| e))
        {
            Some(e) if e.version.host != *cr.host => Some(e),
            _ => None,
        },
    }
}

/// Where a conflict copy goes.
struct CopyName {
    copy: RelPath,
    /// The entry the copy replaces there (a tombstone, or none), or
    /// `None` if a copy with this content is there already: nothing to
    /// make.
    replaces: Option<Option<Entry>>,
}

/// The first of ten candidate names for the copy of `losing` that is
/// free or holds its content already: next to the file, or, if
/// `gives_way` (an ancestor that gives way to a non-directory), at the
/// same place in a copy of that ancestor. `None` if none will do.
fn copy_name<V: IndexView>(
    view: &V,
    overlay: &BTreeMap<RelPath, Entry>,
    cr: &ConflictRules<'_>,
    taken: &BTreeSet<RelPath>,
    losing: &Losing<'_>,
    gives_way: Option<&RelPath>,
) -> Result<Option<CopyName>, V::Error> {
    let p = losing.path;
    for attempt in 0..10 {
        let candidate = match gives_way {
            None => conflict::copy_name(p, &losing.entry.version, attempt),
            Some(a) => {
                let stamp = match view.entry(a)? {
                    Some(e) if e.version.host == *cr.host => e.version,
                    _ => losing.entry.version.clone(),
                };
                conflict::copy_name(a, &stamp, attempt).and_then(|to| p.rebase(a, &to))
            }
        };
        let Some(candidate) = candidate else { break };
        // A copy must be mirrored where the file is: not one outside
        // every set (a set whose top is the file itself) or left out.
        if (cr.keep)(&candidate) == 0 {
            break;
        }
        if taken.contains(&candidate) || overlay.contains_key(&candidate) {
            continue;
        }
        let existing = view.entry(&candidate)?;
        match &existing {
            Some(Entry {
                content: Content::File { hash: h, .. },
                ..
            }) if *h == losing.hash => {
                return Ok(Some(CopyName {
                    copy: candidate,
                    replaces: None,
                }));
            }
            Some(e) if e.is_live() => continue,
            _ => {
                return Ok(Some(CopyName {
                    copy: candidate,
                    replaces: Some(existing),
                }));
            }
        }
    }
    Ok(None)
}

/// The oldest conflict copies of `p` next to it that a new one pushes
/// beyond the bound of `keep`, with their entries.
fn copies_beyond<V: IndexView>(
    view: &V,
    overlay: &BTreeMap<RelPath, Entry>,
    taken: &BTreeSet<RelPath>,
    p: &RelPath,
    keep: u32,
) -> Result<Vec<(RelPath, Entry)>, V::Error> {
    let dir = p.parent().unwrap_or_else(RelPath::root);
    let mut olds: Vec<(RelPath, Entry)> = view
        .below(&dir)?
        .into_iter()
        .filter(|(q, e)| {
            e.is_live()
                && q.parent().as_ref() == Some(&dir)
                && conflict::is_copy_of(q, p)
                && !overlay.contains_key(q)
                && !taken.contains(q)
        })
        .collect();
    olds.sort_by(|a, b| a.1.version.cmp(&b.1.version));
    let over = (olds.len() + 1).saturating_sub(keep as usize);
    olds.truncate(over);
    Ok(olds)
}

impl Keep {
    /// The copy of `losing` at `copy`, over `existing` there, pruning
    /// `olds`, stamped by `host` above `newest` and everything it
    /// replaces.
    fn new(
        losing: Losing<'_>,
        copy: RelPath,
        existing: Option<Entry>,
        olds: Vec<(RelPath, Entry)>,
        newest: Timestamp,
        host: &HostId,
    ) -> Keep {
        let Losing {
            path: p,
            size,
            hash,
            entry: local,
        } = losing;
        // Above everything it replaces, so that it wins on every host.
        let ts = olds
            .iter()
            .map(|(_, e)| e.version.ts)
            .chain(existing.iter().map(|e| e.version.ts))
            .fold(newest.max(local.version.ts), Timestamp::max);
        let version = Version {
            ts: Timestamp(ts.0.saturating_add(1)),
            host: host.clone(),
        };
        let mut changes = vec![Change {
            path: copy.clone(),
            entry: Entry {
                content: Content::File { size, hash },
                meta: local.meta.clone(),
                version: version.clone(),
                base: existing.map(|e| e.version),
            },
        }];
        let mut prune = Vec::new();
        for (q, e) in olds {
            prune.push(q.clone());
            changes.push(Change {
                path: q,
                entry: Entry {
                    content: Content::Deleted,
                    meta: Meta::default(),
                    version: version.clone(),
                    base: Some(e.version),
                },
            });
        }
        Keep {
            copy: copy.clone(),
            prune: prune.clone(),
            action: Action::KeepConflictCopy {
                path: p.clone(),
                copy,
                size,
                hash,
                meta: local.meta,
                prune,
            },
            changes,
        }
    }
}

/// Lays the copies' changes over the batch's (`overlay`), adds the paths
/// they change to `presence`, and says what the diff leaves to them.
pub(super) fn lay_over<V: IndexView>(
    view: &V,
    overlay: &mut BTreeMap<RelPath, Entry>,
    presence: &mut Presence,
    keeps: &[Keep],
) -> Result<Exclusions, V::Error> {
    let mut pruned = BTreeSet::new();
    let mut added = Vec::new();
    for k in keeps {
        for p in &k.prune {
            pruned.insert(p.clone());
        }
        for c in &k.changes {
            added.push(c.path.clone());
            overlay.insert(c.path.clone(), c.entry.clone());
        }
    }
    let after_view = Overlay {
        base: view,
        top: &*overlay,
    };
    presence.add(view, &after_view, added)?;
    let copies: BTreeSet<RelPath> = keeps.iter().map(|k| k.copy.clone()).collect();
    let copy_dirs = copies
        .iter()
        .flat_map(|c| c.ancestors())
        .filter(|a| !a.is_root() && matches!(presence.before.get(a), Some(None)))
        .collect();
    Ok(Exclusions {
        pruned,
        copies,
        copy_dirs,
    })
}
