//! The resolver: a batch of remote changes in, index updates and disk
//! actions out.
//!
//! For each path the greater version wins; equal versions are duplicates.
//! The winners are laid over the index, and the tree the host must have
//! ([`crate::tree::present`]) is computed for every path the batch can
//! affect (the changed paths, their ancestors and everything below them),
//! once before and once after. The difference is the work to do:
//!
//! 1. `SaveOld` for files about to be replaced or removed (`savetargets`);
//! 2. `Rename` where a file disappears and the same content appears
//!    elsewhere (a rename on the peer), so no data moves;
//! 3. `Remove`, deepest paths first;
//! 4. `MakeDir`, `WriteFile`, `MakeSymlink`, `MakeFifo`, `SetMeta`,
//!    shallowest first;
//! 5. `Link` for another name of a file (a hard link, [`Meta::link`])
//!    whose first name is present once the writes are done: its content
//!    is not sent again.
//!
//! Before all of these, `KeepConflictCopy` keeps this host's own content
//! that a conflicting change is about to replace or remove (see
//! [`crate::conflict`] and [`Rules::conflicts`]).
//!
//! The caller carries the actions out in order and then records
//! `accepted` in its index. Nothing here does I/O, logging included:
//! [`resolve_explained`] hands the caller a [`Decision`] per change, the
//! reason the change wins or loses, for its log.

use crate::conflict;
use crate::entry::{Change, Content, Entry, Hash, Meta};
use crate::observe::Overlay;
use crate::tree::{present, IndexView, Node};
use crate::version::{HostId, Timestamp};
use crate::{RelPath, Version};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// Something to do on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Keep the file now at `path` as `path.OLD` before it is replaced or
    /// removed (`savetargets`).
    SaveOld { path: RelPath },
    /// Move the file at `from` to `to` (creating missing parent
    /// directories), then give it `meta`.
    Rename {
        from: RelPath,
        to: RelPath,
        meta: Meta,
    },
    /// Remove what is at `path`: `was` says what the index believed it to
    /// be (a directory is empty by the time this runs).
    Remove { path: RelPath, was: Content },
    /// Make `path` a directory with `meta`, replacing a file or symlink,
    /// or only fix its metadata if it is one already.
    MakeDir { path: RelPath, meta: Meta },
    /// Make `path` a regular file with this content and `meta`.
    WriteFile {
        path: RelPath,
        size: u64,
        hash: Hash,
        meta: Meta,
        source: Source,
    },
    /// Make `path` a symbolic link to `target`.
    MakeSymlink {
        path: RelPath,
        target: Vec<u8>,
        meta: Meta,
    },
    /// Make `path` a named pipe (FIFO).
    MakeFifo { path: RelPath, meta: Meta },
    /// Make `to` another name of the file at `from` (a hard link), then
    /// give the inode `meta`. If `to` is that inode already, only the
    /// metadata is set.
    Link {
        from: RelPath,
        to: RelPath,
        meta: Meta,
    },
    /// The content is right; only the metadata changes.
    SetMeta { path: RelPath, meta: Meta },
    /// This host's own file at `path` (content `size`, `hash`) lost a
    /// conflict: keep a copy of it at `copy` with `meta`, durably, before
    /// any other action of the batch changes `path`; then remove `prune`,
    /// the oldest conflict copies of `path` beyond the set's bound.
    KeepConflictCopy {
        path: RelPath,
        copy: RelPath,
        size: u64,
        hash: Hash,
        meta: Meta,
        prune: Vec<RelPath>,
    },
}

impl Action {
    /// Every path the action changes: both ends of a rename, otherwise
    /// [`Action::path`].
    pub fn paths(&self) -> Vec<&RelPath> {
        match self {
            Action::Rename { from, to, .. } | Action::Link { from, to, .. } => vec![from, to],
            Action::KeepConflictCopy {
                path, copy, prune, ..
            } => {
                let mut all = vec![path, copy];
                all.extend(prune);
                all
            }
            other => vec![other.path()],
        }
    }

    pub fn path(&self) -> &RelPath {
        match self {
            Action::Rename { to: path, .. }
            | Action::Link { to: path, .. }
            | Action::SaveOld { path }
            | Action::Remove { path, .. }
            | Action::MakeDir { path, .. }
            | Action::WriteFile { path, .. }
            | Action::MakeSymlink { path, .. }
            | Action::MakeFifo { path, .. }
            | Action::SetMeta { path, .. } => path,
            Action::KeepConflictCopy { copy, .. } => copy,
        }
    }
}

/// After a batch stopped at a failed action, whether the accepted change
/// at `path` must stay unrecorded: an action left `undone` touches the
/// path, one of its ancestors, or something below it. The tree rule makes
/// a path's presence depend on its ancestors' entries (and an entry hide
/// what lies below it), so recording such a change alone would make the
/// index say what the disk does not hold.
pub fn held_back(undone: &BTreeSet<RelPath>, path: &RelPath) -> bool {
    undone.contains(path)
        || path.ancestors().any(|a| undone.contains(&a))
        || undone.range(path.below_path_range()).next().is_some()
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Ask the peer for it.
    Fetch,
    /// A local file, untouched by this batch, already holds it.
    CopyFrom(RelPath),
}

/// What a batch amounts to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Remote changes that win, to record in the index once the actions
    /// are done.
    pub accepted: Vec<Change>,
    /// The disk work, in order.
    pub actions: Vec<Action>,
    /// Paths where this host's entry is newer than the peer's: the peer
    /// should get ours.
    pub ours_newer: Vec<RelPath>,
    /// The conflicts the batch met, for the caller's log and counters.
    pub conflicts: Vec<Conflict>,
}

/// A conflict the resolver met: this host's own change at `path` and a
/// peer's change that did not know it (see [`crate::conflict`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub path: RelPath,
    /// This host's version.
    pub ours: Version,
    /// The peer's version that met it (at `path`, or at an ancestor or a
    /// path below that decides what `path` becomes).
    pub theirs: Version,
    /// Whether this host's version keeps the name (the peer's host keeps
    /// its own content as a copy, if it has one).
    pub ours_won: bool,
    /// Where this host keeps its losing content; `None` if it keeps none
    /// (the copies are off, it was no file, or it is kept already).
    pub copy: Option<RelPath>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Conflict {
            path,
            ours,
            theirs,
            ours_won,
            copy,
        } = self;
        if *ours_won {
            return write!(
                f,
                "conflict at {path}: this host's version {ours} wins over the peer's {theirs}, \
                 which did not know it ({}); host {} keeps its content as a conflict copy",
                why_greater(ours, theirs),
                theirs.host
            );
        }
        write!(
            f,
            "conflict at {path}: the peer's version {theirs} wins over this host's {ours}, \
             which it did not know ({}); ",
            why_greater(theirs, ours)
        )?;
        match copy {
            Some(c) => write!(f, "this host's content is kept as {c}"),
            None => write!(f, "no conflict copy is kept"),
        }
    }
}

/// What a host's configuration says about a batch, for the resolver.
pub struct Rules<'a> {
    /// For which paths an overwritten file is kept as `NAME.OLD`.
    pub savetargets: &'a dyn Fn(&RelPath) -> bool,
    /// Whether and how conflicts are told: `None` takes every change by
    /// its version alone, as a host that knows no bases.
    pub conflicts: Option<ConflictRules<'a>>,
}

/// How this host treats conflicts.
pub struct ConflictRules<'a> {
    /// This host: only its own changes lose a conflict here.
    pub host: &'a HostId,
    /// How many conflict copies of the file at a path to keep (its set's
    /// `-oconflicts=N`); 0 keeps none. Asked of the copy's path too: 0
    /// there (mirrored nowhere, or left out) makes no copy.
    pub keep: &'a dyn Fn(&RelPath) -> u32,
}

/// What the resolver decided for one change of a batch, and why: the
/// greater version wins (a later timestamp, or the same timestamp and a
/// host name that sorts later). Its `Display` is a sentence for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// A newer change for the same path in the same batch replaces it.
    Superseded {
        path: &'a RelPath,
        version: &'a Version,
        by: &'a Version,
    },
    /// The peer's version is newer than this host's, or this host has
    /// none (`ours`): it is applied.
    Wins {
        path: &'a RelPath,
        theirs: &'a Version,
        ours: Option<&'a Version>,
    },
    /// This host's version is newer: the peer's is not applied, and the
    /// path goes to [`Resolution::ours_newer`].
    Loses {
        path: &'a RelPath,
        theirs: &'a Version,
        ours: &'a Version,
    },
    /// This host holds this very version already.
    Duplicate {
        path: &'a RelPath,
        version: &'a Version,
    },
}

/// Why `newer` beats `older`, in words.
fn why_greater(newer: &Version, older: &Version) -> String {
    if newer.ts > older.ts {
        let ns = newer.ts.0 - older.ts.0;
        format!("written {:.1?} later", std::time::Duration::from_nanos(ns))
    } else {
        format!(
            "the same time, and {} sorts after {}",
            newer.host, older.host
        )
    }
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Superseded { path, version, by } => write!(
                f,
                "{path}: the peer's version {version} is superseded by {by} in the same batch"
            ),
            Decision::Wins {
                path,
                theirs,
                ours: Some(ours),
            } => write!(
                f,
                "{path}: the peer's version {theirs} wins over this host's {ours} ({})",
                why_greater(theirs, ours)
            ),
            Decision::Wins {
                path,
                theirs,
                ours: None,
            } => write!(
                f,
                "{path}: the peer's version {theirs} wins: this host has no entry for it"
            ),
            Decision::Loses { path, theirs, ours } => write!(
                f,
                "{path}: this host's version {ours} wins over the peer's {theirs} ({}): not applied",
                why_greater(ours, theirs)
            ),
            Decision::Duplicate { path, version } => {
                write!(f, "{path}: this host has the peer's version {version} already")
            }
        }
    }
}

/// Resolves `batch` against `view`. `savetargets` says for which paths an
/// overwritten file must be kept.
pub fn resolve<V: IndexView>(
    view: &V,
    batch: &[Change],
    savetargets: &dyn Fn(&RelPath) -> bool,
) -> Result<Resolution, V::Error> {
    resolve_explained(view, batch, savetargets, &mut |_| {})
}

/// [`resolve`], telling `decided` what became of each change and why.
/// Building a [`Decision`] costs no allocation; its text is made only
/// when the caller formats it.
pub fn resolve_explained<V: IndexView>(
    view: &V,
    batch: &[Change],
    savetargets: &dyn Fn(&RelPath) -> bool,
    decided: &mut dyn FnMut(Decision<'_>),
) -> Result<Resolution, V::Error> {
    let rules = Rules {
        savetargets,
        conflicts: None,
    };
    resolve_with(view, batch, &rules, decided)
}

/// [`resolve_explained`] under `rules`, conflicts included.
pub fn resolve_with<V: IndexView>(
    view: &V,
    batch: &[Change],
    rules: &Rules<'_>,
    decided: &mut dyn FnMut(Decision<'_>),
) -> Result<Resolution, V::Error> {
    let savetargets = rules.savetargets;
    let mut res = Resolution::default();
    // Conflicts where the peer wins, by path, with this host's version.
    let mut lost_here: BTreeMap<RelPath, (Version, Version)> = BTreeMap::new();

    // The newest change per path; duplicates and reorderings vanish here.
    let mut newest: BTreeMap<&RelPath, &Entry> = BTreeMap::new();
    for c in batch {
        match newest.get(&c.path) {
            Some(e) if e.version >= c.entry.version => {
                if e.version > c.entry.version {
                    decided(Decision::Superseded {
                        path: &c.path,
                        version: &c.entry.version,
                        by: &e.version,
                    });
                }
            }
            old => {
                if let Some(old) = old {
                    decided(Decision::Superseded {
                        path: &c.path,
                        version: &old.version,
                        by: &c.entry.version,
                    });
                }
                newest.insert(&c.path, &c.entry);
            }
        }
    }
    let mut overlay = BTreeMap::new();
    // Directories that stay directories: see below.
    let mut stays_dir = std::collections::HashSet::new();
    for (path, remote) in newest {
        let local = view.entry(path)?;
        if remote.content.is_dir() && local.as_ref().is_some_and(|l| l.content.is_dir()) {
            stays_dir.insert(path.clone());
        }
        if let (Some(cr), Some(l)) = (&rules.conflicts, &local) {
            if conflict::conflicts(l, remote, cr.host) {
                if l.version > remote.version {
                    res.conflicts.push(Conflict {
                        path: path.clone(),
                        ours: l.version.clone(),
                        theirs: remote.version.clone(),
                        ours_won: true,
                        copy: None,
                    });
                } else {
                    lost_here.insert(path.clone(), (l.version.clone(), remote.version.clone()));
                }
            }
        }
        match &local {
            Some(local) if local.version > remote.version => {
                decided(Decision::Loses {
                    path,
                    theirs: &remote.version,
                    ours: &local.version,
                });
                res.ours_newer.push(path.clone());
            }
            Some(local) if local.version == remote.version => decided(Decision::Duplicate {
                path,
                version: &remote.version,
            }),
            _ => {
                decided(Decision::Wins {
                    path,
                    theirs: &remote.version,
                    ours: local.as_ref().map(|l| &l.version),
                });
                overlay.insert(path.clone(), remote.clone());
            }
        }
    }
    if overlay.is_empty() {
        return Ok(res);
    }

    // Every path whose presence the batch can change.
    let mut affected = BTreeSet::new();
    for path in overlay.keys() {
        affected.insert(path.clone());
        for a in path.ancestors() {
            if !a.is_root() {
                affected.insert(a);
            }
        }
        // A directory that stays one (its metadata changed) hides and
        // uncovers nothing: only a non-directory ancestor does (see
        // `crate::tree`). Nothing below it is affected by the change.
        if stays_dir.contains(path) {
            continue;
        }
        // Everything below, and the directories in between, which may
        // have no entry of their own (present only for what they hold).
        for (below, _) in view.below(path)? {
            for a in below.ancestors() {
                if !a.is_below(path) || !affected.insert(a) {
                    break;
                }
            }
            affected.insert(below);
        }
    }
    let mut before = BTreeMap::new();
    let mut after = BTreeMap::new();
    {
        let after_view = Overlay {
            base: view,
            top: &overlay,
        };
        for p in &affected {
            before.insert(p.clone(), present(view, p)?);
            after.insert(p.clone(), present(&after_view, p)?);
        }
    }

    // This host's own files that the batch replaces or removes although
    // the change that does it did not know them: kept as conflict copies,
    // which join the batch as this host's changes.
    let mut keeps = Vec::new();
    let mut pruned = BTreeSet::new();
    if let Some(cr) = &rules.conflicts {
        keeps = conflict_copies(
            view,
            &overlay,
            &before,
            &after,
            cr,
            &mut lost_here,
            &mut res,
        )?;
        let mut added = Vec::new();
        for k in &keeps {
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
            top: &overlay,
        };
        for p in added {
            let mut new = vec![p.clone()];
            new.extend(p.ancestors().filter(|a| !a.is_root()));
            for q in new {
                if affected.insert(q.clone()) {
                    before.insert(q.clone(), present(view, &q)?);
                }
                after.insert(q.clone(), present(&after_view, &q)?);
            }
        }
    }
    // Conflicts the peer won where this host lost no file content.
    for (path, (ours, theirs)) in lost_here {
        res.conflicts.push(Conflict {
            path,
            ours,
            theirs,
            ours_won: false,
            copy: None,
        });
    }
    let copies: BTreeSet<RelPath> = keeps.iter().map(|k| k.copy.clone()).collect();
    // The directories made only to hold a copy (a copy of a directory
    // that gives way): their metadata is set right after the copies, so
    // that no later failure of the batch holds the copies back.
    let copy_dirs: BTreeSet<RelPath> = copies
        .iter()
        .flat_map(|c| c.ancestors())
        .filter(|a| !a.is_root() && matches!(before.get(a), Some(None)))
        .collect();
    let mut early = Vec::new();

    let mut removes = Vec::new();
    let mut creates = Vec::new();
    for p in &affected {
        match (&before[p], &after[p]) {
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

    // Renames: a file leaving and the same content arriving elsewhere.
    let mut leaving: HashMap<Hash, Vec<RelPath>> = HashMap::new();
    for (p, was) in &removes {
        if let Content::File { hash, .. } = was {
            leaving.entry(*hash).or_default().push(p.clone());
        }
    }
    let mut renamed_from = BTreeSet::new();
    let mut renames = Vec::new();
    let mut writes = Vec::new();
    let mut links = Vec::new();
    let after_view = Overlay {
        base: view,
        top: &overlay,
    };
    for (p, node) in creates {
        if copies.contains(&p) {
            continue;
        }
        let b = &before[&p];
        match (&node.content, b) {
            // Another name of a file that is there once the writes are
            // done, with the same content: linked to it, after them.
            (Content::File { hash, .. }, _)
                if match &node.meta.link {
                    Some(leader) if **leader != p => matches!(
                        present(&after_view, leader)?,
                        Some(Node { content: Content::File { hash: h, .. }, .. }) if h == *hash
                    ),
                    _ => false,
                } =>
            {
                let from = node
                    .meta
                    .link
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(RelPath::root);
                links.push(Action::Link {
                    from,
                    to: p,
                    meta: node.meta,
                });
            }
            (Content::File { size, hash }, _) => {
                let unchanged = matches!(b, Some(Node { content: Content::File { hash: h, .. }, .. }) if h == hash);
                if unchanged {
                    writes.push(Action::SetMeta {
                        path: p,
                        meta: node.meta,
                    });
                    continue;
                }
                // Renaming into place needs every ancestor to be a
                // directory already, or one that is to be created.
                let parents_ok = p.ancestors().all(|a| {
                    a.is_root() || !matches!(before.get(&a), Some(Some(n)) if !n.content.is_dir())
                });
                let from = if b.is_none() && parents_ok {
                    leaving.get_mut(hash).and_then(Vec::pop)
                } else {
                    None
                };
                if let Some(from) = from {
                    renamed_from.insert(from.clone());
                    renames.push(Action::Rename {
                        from,
                        to: p,
                        meta: node.meta,
                    });
                    continue;
                }
                // A holder that this batch leaves alone and that is
                // really on disk (not hidden under a deleted directory).
                let source = match view.holder_of(hash)? {
                    Some(h) if !affected.contains(&h) && h != p => match present(view, &h)? {
                        Some(Node {
                            content: Content::File { hash: held, .. },
                            ..
                        }) if held == *hash => Source::CopyFrom(h),
                        _ => Source::Fetch,
                    },
                    _ => Source::Fetch,
                };
                writes.push(Action::WriteFile {
                    path: p,
                    size: *size,
                    hash: *hash,
                    meta: node.meta,
                    source,
                });
            }
            (Content::Dir, _) if copy_dirs.contains(&p) => early.push(Action::MakeDir {
                path: p,
                meta: node.meta,
            }),
            (Content::Dir, _) => writes.push(Action::MakeDir {
                path: p,
                meta: node.meta,
            }),
            (
                Content::Symlink { target },
                Some(Node {
                    content: Content::Symlink { target: old },
                    ..
                }),
            ) if target == old => writes.push(Action::SetMeta {
                path: p,
                meta: node.meta,
            }),
            (Content::Symlink { target }, _) => writes.push(Action::MakeSymlink {
                path: p,
                target: target.clone(),
                meta: node.meta,
            }),
            (
                Content::Fifo,
                Some(Node {
                    content: Content::Fifo,
                    ..
                }),
            ) => writes.push(Action::SetMeta {
                path: p,
                meta: node.meta,
            }),
            (Content::Fifo, _) => writes.push(Action::MakeFifo {
                path: p,
                meta: node.meta,
            }),
            (Content::Deleted, _) => {}
        }
    }
    res.actions.extend(keeps.into_iter().map(|k| k.action));
    res.actions.extend(early);
    // Files whose content is about to go, except those that only move.
    for p in &affected {
        if let Some(Node {
            content: Content::File { hash: old, .. },
            ..
        }) = &before[p]
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
                && !pruned.contains(p)
                && !copies.contains(p)
                && savetargets(p)
            {
                res.actions.push(Action::SaveOld { path: p.clone() });
            }
        }
    }
    res.actions.extend(renames);
    removes.retain(|(p, _)| !renamed_from.contains(p));
    // Deepest first: byte order puts a directory before its children, so
    // reverse order puts children first.
    removes.sort_by(|a, b| b.0.cmp(&a.0));
    res.actions.extend(
        removes
            .into_iter()
            .map(|(path, was)| Action::Remove { path, was }),
    );
    res.actions.extend(writes);
    res.actions.extend(links);
    res.accepted = overlay
        .into_iter()
        .map(|(path, entry)| Change { path, entry })
        .collect();
    Ok(res)
}

/// What a receive-only host does to undo `local`, the changes it found on
/// its disk (as [`crate::observe`] made them; never recorded): the
/// actions that take the disk from what `view` with `local` laid over it
/// says back to what `view` says, the set's version of every path they
/// touch. The same rules as [`resolve`] (renames, content copied from a
/// local file that holds it, `savetargets` keeping the local edit as
/// `NAME.OLD`); no index update.
pub fn restore<V: IndexView>(
    view: &V,
    local: &[Change],
    savetargets: &dyn Fn(&RelPath) -> bool,
) -> Result<Vec<Action>, V::Error> {
    let top: BTreeMap<RelPath, Entry> = local
        .iter()
        .map(|c| (c.path.clone(), c.entry.clone()))
        .collect();
    let mut stays_dir = std::collections::HashSet::new();
    for (path, e) in &top {
        if e.content.is_dir() && view.entry(path)?.is_some_and(|l| l.content.is_dir()) {
            stays_dir.insert(path.clone());
        }
    }
    let on_disk = Overlay {
        base: view,
        top: &top,
    };
    actions_between(&on_disk, view, top.keys(), &stays_dir, savetargets)
}

/// The disk work that turns the tree `view` implies into the one
/// `after_view` implies (for [`restore`]; [`resolve_with`] has the same
/// diff inline, with conflict copies woven in: merging the two is left
/// to the codebase-shape work), where they may differ only at `changed` paths
/// and what those hide or uncover. `stays_dir`: the changed paths that
/// are directories in both (their metadata alone changed).
fn actions_between<'p, B: IndexView, A: IndexView<Error = B::Error>>(
    view: &B,
    after_view: &A,
    changed: impl Iterator<Item = &'p RelPath>,
    stays_dir: &std::collections::HashSet<RelPath>,
    savetargets: &dyn Fn(&RelPath) -> bool,
) -> Result<Vec<Action>, B::Error> {
    let mut actions = Vec::new();
    // Every path whose presence the batch can change.
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
        if stays_dir.contains(path) {
            continue;
        }
        // Everything below, and the directories in between, which may
        // have no entry of their own (present only for what they hold).
        // (What lies below in `after_view` and not in `view` is a changed
        // path itself when `after_view` lays changes over `view`; not so
        // the other way round, for `restore`.)
        for (below, _) in view.below(path)?.into_iter().chain(after_view.below(path)?) {
            for a in below.ancestors() {
                if !a.is_below(path) || !affected.insert(a) {
                    break;
                }
            }
            affected.insert(below);
        }
    }
    let mut before = BTreeMap::new();
    let mut after = BTreeMap::new();
    for p in &affected {
        before.insert(p.clone(), present(view, p)?);
        after.insert(p.clone(), present(after_view, p)?);
    }

    let mut removes = Vec::new();
    let mut creates = Vec::new();
    for p in &affected {
        match (&before[p], &after[p]) {
            (b, a) if b == a => {}
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

    // Renames: a file leaving and the same content arriving elsewhere.
    let mut leaving: HashMap<Hash, Vec<RelPath>> = HashMap::new();
    for (p, was) in &removes {
        if let Content::File { hash, .. } = was {
            leaving.entry(*hash).or_default().push(p.clone());
        }
    }
    let mut renamed_from = BTreeSet::new();
    let mut renames = Vec::new();
    let mut writes = Vec::new();
    let mut links = Vec::new();
    for (p, node) in creates {
        let b = &before[&p];
        match (&node.content, b) {
            // Another name of a file that is there once the writes are
            // done, with the same content: linked to it, after them.
            (Content::File { hash, .. }, _)
                if match &node.meta.link {
                    Some(leader) if **leader != p => matches!(
                        present(after_view, leader)?,
                        Some(Node { content: Content::File { hash: h, .. }, .. }) if h == *hash
                    ),
                    _ => false,
                } =>
            {
                let from = node
                    .meta
                    .link
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(RelPath::root);
                links.push(Action::Link {
                    from,
                    to: p,
                    meta: node.meta,
                });
            }
            (Content::File { size, hash }, _) => {
                let unchanged = matches!(b, Some(Node { content: Content::File { hash: h, .. }, .. }) if h == hash);
                if unchanged {
                    writes.push(Action::SetMeta {
                        path: p,
                        meta: node.meta,
                    });
                    continue;
                }
                // Renaming into place needs every ancestor to be a
                // directory already, or one that is to be created.
                let parents_ok = p.ancestors().all(|a| {
                    a.is_root() || !matches!(before.get(&a), Some(Some(n)) if !n.content.is_dir())
                });
                let from = if b.is_none() && parents_ok {
                    leaving.get_mut(hash).and_then(Vec::pop)
                } else {
                    None
                };
                if let Some(from) = from {
                    renamed_from.insert(from.clone());
                    renames.push(Action::Rename {
                        from,
                        to: p,
                        meta: node.meta,
                    });
                    continue;
                }
                // A holder that this batch leaves alone and that is
                // really on disk (not hidden under a deleted directory).
                let source = match view.holder_of(hash)? {
                    Some(h) if !affected.contains(&h) && h != p => match present(view, &h)? {
                        Some(Node {
                            content: Content::File { hash: held, .. },
                            ..
                        }) if held == *hash => Source::CopyFrom(h),
                        _ => Source::Fetch,
                    },
                    _ => Source::Fetch,
                };
                writes.push(Action::WriteFile {
                    path: p,
                    size: *size,
                    hash: *hash,
                    meta: node.meta,
                    source,
                });
            }
            (Content::Dir, _) => writes.push(Action::MakeDir {
                path: p,
                meta: node.meta,
            }),
            (
                Content::Symlink { target },
                Some(Node {
                    content: Content::Symlink { target: old },
                    ..
                }),
            ) if target == old => writes.push(Action::SetMeta {
                path: p,
                meta: node.meta,
            }),
            (Content::Symlink { target }, _) => writes.push(Action::MakeSymlink {
                path: p,
                target: target.clone(),
                meta: node.meta,
            }),
            (
                Content::Fifo,
                Some(Node {
                    content: Content::Fifo,
                    ..
                }),
            ) => writes.push(Action::SetMeta {
                path: p,
                meta: node.meta,
            }),
            (Content::Fifo, _) => writes.push(Action::MakeFifo {
                path: p,
                meta: node.meta,
            }),
            (Content::Deleted, _) => {}
        }
    }
    // Files whose content is about to go, except those that only move.
    for p in &affected {
        if let Some(Node {
            content: Content::File { hash: old, .. },
            ..
        }) = &before[p]
        {
            let kept = matches!(&after[p], Some(Node { content: Content::File { hash, .. }, .. }) if hash == old);
            // A NAME.OLD in a directory that goes too would keep it from
            // being removed; there is nowhere to keep it.
            let dir_stays = p.parent().is_none_or(|d| match after.get(&d) {
                Some(node) => node.as_ref().is_some_and(|n| n.content.is_dir()),
                None => true,
            });
            if !kept && dir_stays && !renamed_from.contains(p) && savetargets(p) {
                actions.push(Action::SaveOld { path: p.clone() });
            }
        }
    }
    actions.extend(renames);
    removes.retain(|(p, _)| !renamed_from.contains(p));
    // Deepest first: byte order puts a directory before its children, so
    // reverse order puts children first.
    removes.sort_by(|a, b| b.0.cmp(&a.0));
    actions.extend(
        removes
            .into_iter()
            .map(|(path, was)| Action::Remove { path, was }),
    );
    actions.extend(writes);
    actions.extend(links);
    Ok(actions)
}

/// One conflict copy to make: the action, and the changes it amounts to
/// in the index (the copy, and tombstones for the copies it prunes).
struct Keep {
    copy: RelPath,
    prune: Vec<RelPath>,
    action: Action,
    changes: Vec<Change>,
}

/// The conflict copies of this host's own files that the batch replaces
/// or removes without having known them (see [`crate::conflict`]). Each
/// conflict is noted in `res` and taken out of `lost_here`.
#[allow(clippy::too_many_arguments)]
fn conflict_copies<V: IndexView>(
    view: &V,
    overlay: &BTreeMap<RelPath, Entry>,
    before: &BTreeMap<RelPath, Option<Node>>,
    after: &BTreeMap<RelPath, Option<Node>>,
    cr: &ConflictRules<'_>,
    lost_here: &mut BTreeMap<RelPath, (Version, Version)>,
    res: &mut Resolution,
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
    for (p, was) in before {
        let Some(Node {
            content: Content::File { size, hash },
            ..
        }) = was
        else {
            continue;
        };
        if matches!(&after[p], Some(Node { content: Content::File { hash: h, .. }, .. }) if h == hash)
        {
            continue;
        }
        let Some(local) = view.entry(p)? else {
            continue;
        };
        if local.version.host != *cr.host {
            continue;
        }
        // The change that decides what becomes of `p`: its own, else an
        // ancestor's (a deleted or replaced directory), else one below it
        // (a directory that a file must give way to).
        let cause = match overlay.get(p) {
            Some(remote) => {
                if !conflict::conflicts(&local, remote, cr.host) {
                    continue;
                }
                remote
            }
            None => match p
                .ancestors()
                .find_map(|a| overlay.get(&a))
                .or_else(|| overlay.range(p.below_path_range()).next().map(|(_, e)| e))
            {
                Some(e) if e.version.host != *cr.host => e,
                _ => continue,
            },
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
            res.conflicts.push(conflict);
            continue;
        }
        // Next to the file if its directory stays one; otherwise in a
        // copy of the shallowest ancestor that gives way to a non-directory.
        let gives_way = p.ancestors().collect::<Vec<_>>().into_iter().rev().find(|a| {
            !a.is_root()
                && matches!(after.get(a), Some(n) if !n.as_ref().is_some_and(|n| n.content.is_dir()))
        });
        let mut found = None;
        for attempt in 0..10 {
            let candidate = match &gives_way {
                None => conflict::copy_name(p, &local.version, attempt),
                Some(a) => {
                    let stamp = match view.entry(a)? {
                        Some(e) if e.version.host == *cr.host => e.version,
                        _ => local.version.clone(),
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
                }) if h == hash => {
                    found = Some((candidate, None));
                    break;
                }
                Some(e) if e.is_live() => continue,
                _ => {
                    found = Some((candidate, Some(existing)));
                    break;
                }
            }
        }
        let Some((copy, existing)) = found else {
            res.conflicts.push(conflict);
            continue;
        };
        conflict.copy = Some(copy.clone());
        res.conflicts.push(conflict);
        // `None`: a copy with this content is there already.
        let Some(existing) = existing else {
            continue;
        };
        taken.insert(copy.clone());
        // The oldest copies beyond the bound go (next to the file only).
        let mut olds: Vec<(RelPath, Entry)> = Vec::new();
        if gives_way.is_none() {
            let dir = p.parent().unwrap_or_else(RelPath::root);
            olds = view
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
        }
        // Above everything it replaces, so that it wins on every host.
        let ts = olds
            .iter()
            .map(|(_, e)| e.version.ts)
            .chain(existing.iter().map(|e| e.version.ts))
            .fold(newest.max(local.version.ts), Timestamp::max);
        let version = Version {
            ts: Timestamp(ts.0.saturating_add(1)),
            host: cr.host.clone(),
        };
        let mut changes = vec![Change {
            path: copy.clone(),
            entry: Entry {
                content: Content::File {
                    size: *size,
                    hash: *hash,
                },
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
        keeps.push(Keep {
            copy: copy.clone(),
            prune: prune.clone(),
            action: Action::KeepConflictCopy {
                path: p.clone(),
                copy,
                size: *size,
                hash: *hash,
                meta: local.meta,
                prune,
            },
            changes,
        });
    }
    Ok(keeps)
}
