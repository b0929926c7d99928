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
//!
//! The work is done in passes, each in a module of its own;
//! [`resolve_with`] and [`restore`] (the receive-only undo) share the
//! first and the last, so that a rule added there holds for both:
//!
//! - `presence`: which paths the changes can affect, and what the tree
//!   holds at each before and after;
//! - `copies`: the conflict copies of this host's own files, which join
//!   the batch as this host's changes ([`resolve_with`] only);
//! - `diff`: the actions that take the disk from the tree before to the
//!   tree after, leaving out what the conflict copies do;
//! - `report`: the [`Decision`] on each change and each [`Conflict`], in
//!   words for the log.

mod copies;
mod diff;
mod presence;
mod report;

pub use report::{Conflict, Decision};

use crate::conflict;
use crate::entry::{Change, Content, Entry, Hash, Meta};
use crate::observe::Overlay;
use crate::tree::IndexView;
use crate::version::HostId;
use crate::{RelPath, Version};
use copies::conflict_copies;
use diff::{diff, Exclusions};
use presence::Presence;
use std::collections::{BTreeMap, BTreeSet};

/// Something to do on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Keep the file now at `path` as `path.OLD` before it is replaced or
    /// removed (`savetargets`).
    SaveOld {
        /// The file about to be replaced or removed.
        path: RelPath,
    },
    /// Move the file at `from` to `to` (creating missing parent
    /// directories), then give it `meta`.
    Rename {
        /// Where the file is now.
        from: RelPath,
        /// Where it goes.
        to: RelPath,
        /// The metadata it gets there.
        meta: Meta,
    },
    /// Remove what is at `path`: `was` says what the index believed it to
    /// be (a directory is empty by the time this runs).
    Remove {
        /// What to remove.
        path: RelPath,
        /// The kind the index recorded there: the applier refuses to
        /// remove something of another kind.
        was: Content,
    },
    /// Make `path` a directory with `meta`, replacing a file or symlink,
    /// or only fix its metadata if it is one already.
    MakeDir {
        /// The directory to make.
        path: RelPath,
        /// The metadata it gets.
        meta: Meta,
    },
    /// Make `path` a regular file with this content and `meta`.
    WriteFile {
        /// The file to write.
        path: RelPath,
        /// The content's length in bytes; the bytes written must have it.
        size: u64,
        /// The content's BLAKE3 hash; the bytes written must match it.
        hash: Hash,
        /// The metadata the file gets.
        meta: Meta,
        /// Where the content comes from.
        source: Source,
    },
    /// Make `path` a symbolic link to `target`.
    MakeSymlink {
        /// Where the link goes.
        path: RelPath,
        /// The link's target, as [`Content::Symlink`] holds it.
        target: Vec<u8>,
        /// The metadata the link gets.
        meta: Meta,
    },
    /// Make `path` a named pipe (FIFO).
    MakeFifo {
        /// Where the FIFO goes.
        path: RelPath,
        /// The metadata it gets.
        meta: Meta,
    },
    /// Make `to` another name of the file at `from` (a hard link), then
    /// give the inode `meta`. If `to` is that inode already, only the
    /// metadata is set.
    Link {
        /// A name the file has already.
        from: RelPath,
        /// The new name.
        to: RelPath,
        /// The metadata the inode gets.
        meta: Meta,
    },
    /// The content is right; only the metadata changes.
    SetMeta {
        /// The path whose metadata changes.
        path: RelPath,
        /// The metadata it gets.
        meta: Meta,
    },
    /// This host's own file at `path` (content `size`, `hash`) lost a
    /// conflict: keep a copy of it at `copy` with `meta`, durably, before
    /// any other action of the batch changes `path`; then remove `prune`,
    /// the oldest conflict copies of `path` beyond the set's bound.
    KeepConflictCopy {
        /// This host's file whose content lost.
        path: RelPath,
        /// Where the copy goes ([`conflict::copy_name`]).
        copy: RelPath,
        /// The losing content's length in bytes.
        size: u64,
        /// The losing content's BLAKE3 hash.
        hash: Hash,
        /// The metadata the copy gets.
        meta: Meta,
        /// Older conflict copies of `path` to remove, beyond what its set
        /// keeps ([`ConflictRules::keep`]).
        prune: Vec<RelPath>,
    },
}

impl Action {
    /// Every path the action changes: both ends of a rename or a link;
    /// the original, the copy and the pruned copies of a conflict copy;
    /// otherwise [`Action::path`].
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

    /// The path the action makes or works on: where a rename or a link
    /// ends, and the copy for a conflict copy. [`Action::paths`] lists
    /// every path it changes.
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
    /// The conflicts the batch met, for the caller's log and counters.
    pub conflicts: Vec<Conflict>,
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
    let mut res = Resolution::default();
    let newest = newest_per_path(batch, decided);
    let Winners {
        mut overlay,
        mut lost_here,
    } = winners(view, newest, rules, &mut res.conflicts, decided)?;
    if overlay.is_empty() {
        return Ok(res);
    }
    let after_view = Overlay {
        base: view,
        top: &overlay,
    };
    let mut presence = Presence::between(view, &after_view, overlay.keys())?;

    // This host's own files that the batch replaces or removes although
    // the change that does it did not know them: kept as conflict copies,
    // which join the batch as this host's changes.
    let mut keeps = Vec::new();
    let mut exclusions = Exclusions::default();
    if let Some(cr) = &rules.conflicts {
        keeps = conflict_copies(
            view,
            &overlay,
            &presence,
            cr,
            &mut lost_here,
            &mut res.conflicts,
        )?;
        exclusions = copies::lay_over(view, &mut overlay, &mut presence, &keeps)?;
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

    let after_view = Overlay {
        base: view,
        top: &overlay,
    };
    // The copies first, durably, before anything else of the batch
    // changes the paths they keep.
    res.actions = keeps.into_iter().map(|k| k.action).collect();
    res.actions.extend(diff(
        view,
        &after_view,
        &presence,
        &exclusions,
        rules.savetargets,
    )?);
    res.accepted = overlay
        .into_iter()
        .map(|(path, entry)| Change { path, entry })
        .collect();
    Ok(res)
}

/// The newest change per path of `batch`; duplicates and reorderings
/// vanish here. A change that a newer one of the batch supersedes is
/// told to `decided`.
fn newest_per_path<'b>(
    batch: &'b [Change],
    decided: &mut dyn FnMut(Decision<'_>),
) -> BTreeMap<&'b RelPath, &'b Entry> {
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
    newest
}

/// The changes of a batch that win against the index.
struct Winners {
    /// By path: what the batch lays over the index.
    overlay: BTreeMap<RelPath, Entry>,
    /// Conflicts where the peer wins, by path, with this host's version
    /// and the peer's.
    lost_here: BTreeMap<RelPath, (Version, Version)>,
}

/// Compares each of the `newest` changes with this host's entry: the
/// greater version wins. Conflicts this host wins go to `conflicts`, and
/// `decided` hears about every change.
fn winners<V: IndexView>(
    view: &V,
    newest: BTreeMap<&RelPath, &Entry>,
    rules: &Rules<'_>,
    conflicts: &mut Vec<Conflict>,
    decided: &mut dyn FnMut(Decision<'_>),
) -> Result<Winners, V::Error> {
    let mut overlay = BTreeMap::new();
    let mut lost_here = BTreeMap::new();
    for (path, remote) in newest {
        let local = view.entry(path)?;
        if let (Some(cr), Some(l)) = (&rules.conflicts, &local) {
            if conflict::conflicts(l, remote, cr.host) {
                if l.version > remote.version {
                    conflicts.push(Conflict {
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
            Some(local) if local.version > remote.version => decided(Decision::Loses {
                path,
                theirs: &remote.version,
                ours: &local.version,
            }),
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
    Ok(Winners { overlay, lost_here })
}

/// What a receive-only host does to undo `local`, the changes it found on
/// its disk (as [`crate::observe`] made them; never recorded): the
/// actions that take the disk from what `view` with `local` laid over it
/// says back to what `view` says, the set's version of every path they
/// touch. The same rules as [`resolve`] (the same passes: renames,
/// content copied from a local file that holds it, `savetargets` keeping
/// the local edit as `NAME.OLD`); no index update.
pub fn restore<V: IndexView>(
    view: &V,
    local: &[Change],
    savetargets: &dyn Fn(&RelPath) -> bool,
) -> Result<Vec<Action>, V::Error> {
    let top: BTreeMap<RelPath, Entry> = local
        .iter()
        .map(|c| (c.path.clone(), c.entry.clone()))
        .collect();
    let on_disk = Overlay {
        base: view,
        top: &top,
    };
    let presence = Presence::between(&on_disk, view, top.keys())?;
    diff(
        &on_disk,
        view,
        &presence,
        &Exclusions::default(),
        savetargets,
    )
}
