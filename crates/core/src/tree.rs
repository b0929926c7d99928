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

use crate::entry::{Content, Entry, Hash, Meta};
use crate::version::Version;
use crate::RelPath;

/// Read access to an index: what [`present`] and the resolver need.
pub trait IndexView {
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
            if !e.content.is_dir() && e.version > *version {
                return Ok(false);
            }
        }
    }
    Ok(true)
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
