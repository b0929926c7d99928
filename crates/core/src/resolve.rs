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
//! The caller carries the actions out in order and then records
//! `accepted` in its index. Nothing here does I/O, logging included:
//! [`resolve_explained`] hands the caller a [`Decision`] per change, the
//! reason the change wins or loses, for its log.

use crate::entry::{Change, Content, Entry, Hash, Meta};
use crate::observe::Overlay;
use crate::tree::{present, IndexView, Node};
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
}

impl Action {
    /// Every path the action changes: both ends of a rename, otherwise
    /// [`Action::path`].
    pub fn paths(&self) -> Vec<&RelPath> {
        match self {
            Action::Rename { from, to, .. } | Action::Link { from, to, .. } => vec![from, to],
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
    let mut res = Resolution::default();

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
    let after_view = Overlay {
        base: view,
        top: &overlay,
    };
    let mut before = BTreeMap::new();
    let mut after = BTreeMap::new();
    for p in &affected {
        before.insert(p.clone(), present(view, p)?);
        after.insert(p.clone(), present(&after_view, p)?);
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
