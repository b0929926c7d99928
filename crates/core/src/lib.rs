//! The sync rules of omirr, free of I/O.
//!
//! This crate owns what every host must decide identically without asking
//! the others:
//!
//! - [`path`]: checked, byte-string paths inside the mirrored namespace;
//! - [`version`]: versions (hybrid logical clock + host) and the clock;
//! - [`entry`]: what the index holds per path, tombstones included;
//! - [`chunk`]: the value types of a large file's chunk list ([`Chunk`],
//!   [`Digest`]), which the protocol carries and the index caches; the
//!   cutting and the recipes are `omirr-chunk`'s;
//! - [`tree`]: the tree a host must have on disk, as a pure function of
//!   its index — which is what makes every host converge;
//! - [`resolve`]: a batch of remote changes in, the disk actions and index
//!   updates out, and, for the caller's log, each change's decision and
//!   its reason;
//! - [`conflict`]: telling a true conflict from an update, and the
//!   names of the copies that keep the losing content;
//! - [`observe`]: the disk as found (by a scan or the watcher) in, new
//!   local changes out;
//! - [`verify`]: comparing two hosts' indexes by summaries of path
//!   ranges, descending only where they differ (`omirrd verify`);
//! - [`expiry`]: which tombstones a host forgets, its watermark, and
//!   what a host that was away longer than a peer's horizon forgets when
//!   it comes back;
//! - [`stat`]: the stat key, a local file's identity and state, by which
//!   a hash recorded earlier stands without reading the file again;
//! - [`mem`]: an in-memory index, the model the persisted one follows and
//!   the one the simulation tests drive.
//!
//! The model: a host's index maps each path to the entry with the greatest
//! version it has seen for that path, a last-writer-wins register per path.
//! Merging two indexes is commutative, associative and idempotent, so hosts
//! that have seen the same changes hold the same index, whatever the order
//! and repetition of delivery. The tree on disk is derived from the index
//! by [`tree::present`], so they hold the same tree too.
//!
//! Nothing here touches a disk, a socket or a clock: callers pass wall time
//! in and carry the returned actions out.

pub mod chunk;
pub mod conflict;
pub mod entry;
pub mod expiry;
pub mod mem;
pub mod observe;
pub mod path;
pub mod resolve;
pub mod stat;
pub mod tree;
pub mod verify;
pub mod version;

#[cfg(test)]
pub(crate) mod testing;

pub use chunk::{Chunk, Digest};
pub use entry::{BadXattrs, Change, Content, Entry, Hash, Meta, Name, Xattrs};
pub use path::{PathError, RelPath, MAX_NAME_LEN, MAX_PATH_LEN};
pub use resolve::{Action, Resolution, Source};
pub use stat::StatKey;
pub use tree::IndexView;
pub use version::{Hlc, HostId, Timestamp, Version};

/// A host's local sequence number: every index update gets the next one.
pub type Seq = u64;
