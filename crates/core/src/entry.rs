//! What the index knows about a path: its content, metadata and version.

use crate::version::{Timestamp, Version};
use crate::RelPath;
use serde::{Deserialize, Serialize};

/// A BLAKE3 hash of a file's content.
pub type Hash = [u8; 32];

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Content {
    /// A regular file.
    File {
        /// The content's length in bytes.
        size: u64,
        /// The BLAKE3 hash of the whole content.
        hash: Hash,
    },
    /// A directory. What it holds are entries of their own.
    Dir,
    /// A symbolic link.
    Symlink {
        /// The link's target as `readlink(2)` gives it: raw bytes, not
        /// checked against the mirror (it may be absolute or climb with
        /// `..`). The applier refuses an empty one or one with a NUL byte.
        target: Vec<u8>,
    },
    /// A tombstone: the path was deleted. Kept so that a peer that was
    /// away does not bring the path back.
    Deleted,
    /// A named pipe (FIFO): no content, only its metadata. (Last, so that
    /// the encodings of the older variants stay as they were.)
    Fifo,
}

impl Content {
    /// Whether this is anything but a tombstone.
    pub fn is_live(&self) -> bool {
        !matches!(self, Content::Deleted)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self, Content::Dir)
    }

    /// The kind of thing this is, in a word for messages (`"file"`,
    /// `"directory"`, `"symlink"`, `"FIFO"`, `"deleted"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Content::File { .. } => "file",
            Content::Dir => "directory",
            Content::Symlink { .. } => "symlink",
            Content::Fifo => "FIFO",
            Content::Deleted => "deleted",
        }
    }
}

/// Metadata mirrored with the content. Tombstones mostly carry zeroes;
/// those that expiry and reconciliation make ([`crate::expiry`]) keep the
/// metadata of the entry they delete.
///
/// Owner and group travel both ways an rdist Distfile may ask for: as
/// numbers (`numchkowner`, `numchkgroup`) and as the names the recording
/// host gives those numbers (the default). Which one a receiver uses is
/// its configuration's business, not the entry's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits (`0o7777`), not the file type.
    pub mode: u32,
    /// The owner's user ID on the host that recorded the entry.
    pub uid: u32,
    /// The group ID on the host that recorded the entry.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// The name of `uid` on the host that recorded the entry; empty if
    /// that host has none for it.
    pub owner: Name,
    /// The name of `gid` there, likewise.
    pub group: Name,
    /// Extended attributes (POSIX ACLs among them), as the recording
    /// host's rules let it read them. Which of them a receiver sets is
    /// its configuration's business (`noxattrs`, `noacls`).
    pub xattrs: Xattrs,
    /// For a file with several names (hard links) in the mirrored trees:
    /// another name of the same inode, which the receiver links this one
    /// to instead of writing the content a second time. `None` for the
    /// name that leads (the smallest among those the recording host
    /// knew) and for everything else.
    pub link: Option<Box<RelPath>>,
}

impl Meta {
    /// What a directory gets when it exists only because something newer
    /// lives below it (see [`crate::tree`]). The same on every host.
    pub const IMPLIED_DIR: Meta = Meta {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        owner: Name::EMPTY,
        group: Name::EMPTY,
        xattrs: Xattrs::EMPTY,
        link: None,
    };
}

/// A path's extended attributes: `(name, value)` pairs, sorted by name,
/// each name once. Bounded ([`Xattrs::MAX_COUNT`], [`Xattrs::MAX_NAME`],
/// [`Xattrs::MAX_VALUE`]: Linux's own limits), checked when decoded.
///
/// Held behind one pointer (8 bytes, none allocated when empty): most
/// entries have none, and a page of changes is bounded by what it takes
/// in memory (see `omirr_proto::page_cost`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<(Vec<u8>, Vec<u8>)>", into = "Vec<(Vec<u8>, Vec<u8>)>")]
// A thin pointer (8 bytes in every Meta); the second allocation is paid
// only by the rare entry that has attributes.
#[allow(clippy::box_collection)]
pub struct Xattrs(Option<Box<Vec<Xattr>>>);

/// One extended attribute: its name and its value.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// Why a list of extended attributes is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadXattrs(pub &'static str);

impl std::fmt::Display for BadXattrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "extended attributes {}", self.0)
    }
}

impl Xattrs {
    /// The most attributes one path carries.
    pub const MAX_COUNT: usize = 1024;
    /// The longest name (`XATTR_NAME_MAX`).
    pub const MAX_NAME: usize = 255;
    /// The largest value (`XATTR_SIZE_MAX`).
    pub const MAX_VALUE: usize = 64 * 1024;
    /// No attributes; allocates nothing.
    pub const EMPTY: Xattrs = Xattrs(None);

    /// Sorts `pairs` by name; refuses a name twice, an empty name or one
    /// with a NUL byte, and anything over the bounds.
    pub fn new(mut pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Xattrs, BadXattrs> {
        if pairs.len() > Self::MAX_COUNT {
            return Err(BadXattrs("are too many"));
        }
        pairs.sort();
        for (i, (name, value)) in pairs.iter().enumerate() {
            if name.is_empty() || name.len() > Self::MAX_NAME || name.contains(&0) {
                return Err(BadXattrs("have an impossible name"));
            }
            if value.len() > Self::MAX_VALUE {
                return Err(BadXattrs("have a value above 64 KiB"));
            }
            if i > 0 && pairs[i - 1].0 == *name {
                return Err(BadXattrs("name one attribute twice"));
            }
        }
        Ok(Xattrs((!pairs.is_empty()).then(|| Box::new(pairs))))
    }

    fn pairs(&self) -> &[Xattr] {
        self.0.as_deref().map_or(&[], |v| v.as_slice())
    }

    /// The `(name, value)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pairs()
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
    }

    /// The value of the attribute called `name`; `None` if there is none.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        let pairs = self.pairs();
        pairs
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .ok()
            .map(|i| pairs[i].1.as_slice())
    }

    /// How many attributes there are.
    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    /// Those attributes whose names `keep` accepts.
    pub fn filtered(&self, keep: impl Fn(&[u8]) -> bool) -> Xattrs {
        let kept: Vec<_> = self
            .pairs()
            .iter()
            .filter(|(n, _)| keep(n))
            .cloned()
            .collect();
        Xattrs((!kept.is_empty()).then(|| Box::new(kept)))
    }
}

impl From<Xattrs> for Vec<Xattr> {
    fn from(x: Xattrs) -> Vec<Xattr> {
        x.0.map(|b| *b).unwrap_or_default()
    }
}

impl TryFrom<Vec<(Vec<u8>, Vec<u8>)>> for Xattrs {
    type Error = BadXattrs;
    fn try_from(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Xattrs, BadXattrs> {
        Xattrs::new(pairs)
    }
}

/// A user or group name, at most [`Name::MAX`] bytes and without a NUL
/// byte, held inline so that the two every [`Meta`] carries cost no
/// allocation. A longer name is not kept (the number is used instead; see
/// [`Name::new`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name {
    len: u8,
    bytes: [u8; Name::MAX],
}

impl Name {
    /// The longest name kept: useradd's and groupadd's limit.
    pub const MAX: usize = 32;
    /// No name: the recording host has none for the number.
    pub const EMPTY: Name = Name {
        len: 0,
        bytes: [0; Name::MAX],
    };

    /// `None` for a name longer than [`Name::MAX`] or holding a NUL byte,
    /// which no user database can look up.
    pub fn new(name: &[u8]) -> Option<Name> {
        if name.len() > Name::MAX || name.contains(&0) {
            return None;
        }
        let mut bytes = [0; Name::MAX];
        bytes[..name.len()].copy_from_slice(name);
        Some(Name {
            len: name.len() as u8,
            bytes,
        })
    }

    /// The name's bytes: at most [`Name::MAX`], no NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(Name::MAX)]
    }

    /// Whether this is [`Name::EMPTY`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for Name {
    fn default() -> Self {
        Name::EMPTY
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::path::escape(self.as_bytes()))
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a user or group name of at most {} bytes", Name::MAX)
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Name, E> {
                Name::new(v).ok_or_else(|| {
                    E::custom(format_args!(
                        "a user or group name of {} bytes, longer than {} or with a NUL byte",
                        v.len(),
                        Name::MAX
                    ))
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Name, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    if v.len() > Name::MAX {
                        break;
                    }
                    v.push(b);
                }
                self.visit_bytes(&v)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// One path's state, as a host's index holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// What the path holds; [`Content::Deleted`] for a tombstone.
    pub content: Content,
    /// The metadata mirrored with the content.
    pub meta: Meta,
    /// Who wrote this state, and when: for a path, the greatest version
    /// wins.
    pub version: Version,
    /// The version this change replaced (its base), `None` for a path the
    /// writer had no entry for. A run of local changes on one host keeps
    /// the base of the last version that came from elsewhere (see
    /// [`crate::observe`]), so that a peer that saw only the last of them
    /// does not take it for a conflict. It is what tells a true conflict
    /// (two writes, neither of which knew the other) from an update: see
    /// [`crate::conflict`]. The base is part of the change, not of the
    /// path's state: [`present`](crate::tree::present) ignores it.
    pub base: Option<Version>,
}

impl Entry {
    /// Whether the entry is anything but a tombstone.
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
    /// The path the change is for.
    pub path: RelPath,
    /// The path's new state, with the version that made it.
    pub entry: Entry,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::HostId;

    #[test]
    fn names_hold_up_to_32_bytes_without_nul() {
        let n = Name::new(b"www-data").expect("a name");
        assert_eq!(n.as_bytes(), b"www-data");
        assert!(!n.is_empty() && Name::EMPTY.is_empty());
        assert_eq!(Name::default(), Name::EMPTY);
        assert!(Name::new(&[b'x'; 32]).is_some());
        assert!(Name::new(&[b'x'; 33]).is_none(), "too long");
        assert!(Name::new(b"a\0").is_none(), "NUL");
        assert_eq!(Name::new(b"\xff\n").expect("bytes").to_string(), "\\xff\\n");
    }

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
            base: None,
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
