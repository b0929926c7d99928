//! The sync rules of omirr, free of I/O.
//!
//! This crate owns what every host must decide identically without asking
//! the others:
//!
//! - [`path`]: checked, byte-string paths inside the mirrored namespace;
//! - [`version`]: versions (hybrid logical clock + host) and the clock;
//! - [`entry`]: what the index holds per path, tombstones included;
//! - [`tree`]: the tree a host must have on disk, as a pure function of
//!   its index — which is what makes every host converge;
//! - [`resolve`]: a batch of remote changes in, the disk actions and index
//!   updates out, and, for the caller's log, each change's decision and
//!   its reason;
//! - [`observe`]: the disk as found (by a scan or the watcher) in, new
//!   local changes out;
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

pub mod entry;
pub mod mem;
pub mod observe;
pub mod path;
pub mod resolve;
pub mod tree;
pub mod version;

pub use entry::{BadXattrs, Change, Content, Entry, Hash, Meta, Name, Xattrs};
pub use path::{PathError, RelPath, MAX_NAME_LEN, MAX_PATH_LEN};
pub use resolve::{Action, Resolution, Source};
pub use tree::IndexView;
pub use version::{Hlc, HostId, Timestamp, Version};

/// A host's local sequence number: every index update gets the next one.
pub type Seq = u64;
