//! What the index knows about a path: its content, metadata and version.

use crate::version::{Timestamp, Version};
use crate::RelPath;
use serde::{Deserialize, Serialize};

/// A BLAKE3 hash of a file's content.
pub type Hash = [u8; 32];

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Content {
    File {
        size: u64,
        hash: Hash,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// A tombstone: the path was deleted. Kept so that a peer that was
    /// away does not bring the path back.
    Deleted,
}

impl Content {
    pub fn is_live(&self) -> bool {
        !matches!(self, Content::Deleted)
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Content::Dir)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Content::File { .. } => "file",
            Content::Dir => "directory",
            Content::Symlink { .. } => "symlink",
            Content::Deleted => "deleted",
        }
    }
}

/// Metadata mirrored with the content. Tombstones carry zeroes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits (`0o7777`), not the file type.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl Meta {
    /// What a directory gets when it exists only because something newer
    /// lives below it (see [`crate::tree`]). The same on every host.
    pub const IMPLIED_DIR: Meta = Meta {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
    };
}

/// One path's state, as a host's index holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub content: Content,
    pub meta: Meta,
    pub version: Version,
}

impl Entry {
    pub fn is_live(&self) -> bool {
        self.content.is_live()
    }

    /// Whether a tombstone is old enough to forget: older than `horizon`
    /// nanoseconds before `now`.
    pub fn is_expired_tombstone(&self, now: Timestamp, horizon_ns: u64) -> bool {
        !self.is_live() && self.version.ts.0.saturating_add(horizon_ns) < now.0
    }
}

/// How long tombstones are kept by default: 30 days.
pub const DEFAULT_TOMBSTONE_HORIZON_NS: u64 = 30 * 24 * 3600 * 1_000_000_000;

/// A path and its entry, as sent between hosts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Change {
    pub path: RelPath,
    pub entry: Entry,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::HostId;

    #[test]
    fn tombstones_expire_after_the_horizon() {
        let day = 24 * 3600 * 1_000_000_000u64;
        let t = Entry {
            content: Content::Deleted,
            meta: Meta::default(),
            version: Version {
                ts: Timestamp(10 * day),
                host: HostId::new("a"),
            },
        };
        assert!(!t.is_expired_tombstone(Timestamp(39 * day), DEFAULT_TOMBSTONE_HORIZON_NS));
        assert!(t.is_expired_tombstone(Timestamp(41 * day), DEFAULT_TOMBSTONE_HORIZON_NS));
        let live = Entry {
            content: Content::Dir,
            ..t
        };
        assert!(!live.is_expired_tombstone(Timestamp(400 * day), DEFAULT_TOMBSTONE_HORIZON_NS));
    }
}
