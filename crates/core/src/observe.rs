//! From what is on disk to local changes.
//!
//! A scan or the watcher reports what it finds at a path; if that differs
//! from what the index says must be there ([`crate::tree::present`]), the
//! host has a new local change and it gets a version here. Writes the
//! daemon itself applied match the index already, so they produce nothing:
//! this is what keeps hosts from echoing each other's changes.

use crate::entry::{Change, Content, Entry, Meta};
use crate::tree::{present, IndexView, Node};
use crate::version::{Hlc, HostId, Timestamp, Version};
use crate::RelPath;

/// When the change happened, which decides its version's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Seen live by the watcher: stamped above everything seen.
    Live { wall: Timestamp },
    /// Found by a scan (made while nobody watched): stamped at the
    /// change's ctime (for a deletion, the parent directory's), but above
    /// the version it replaces.
    Scanned { ctime: Timestamp },
}

/// The change to record for `path`, given what is on disk there (`None`:
/// nothing), or `None` if disk and index agree.
pub fn observe<V: IndexView>(
    view: &V,
    hlc: &mut Hlc,
    host: &HostId,
    path: &RelPath,
    on_disk: Option<Node>,
    when: When,
) -> Result<Option<Change>, V::Error> {
    if present(view, path)? == on_disk || path.is_root() {
        return Ok(None);
    }
    let replaces = view.entry(path)?.map(|e| e.version.ts);
    let ts = match when {
        When::Live { wall } => hlc.now(wall),
        When::Scanned { ctime } => hlc.at(ctime, replaces),
    };
    let (content, meta) = match on_disk {
        Some(n) => (n.content, n.meta),
        None => (Content::Deleted, Meta::default()),
    };
    Ok(Some(Change {
        path: path.clone(),
        entry: Entry {
            content,
            meta,
            version: Version {
                ts,
                host: host.clone(),
            },
        },
    }))
}
