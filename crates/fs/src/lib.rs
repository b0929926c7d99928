//! omirr's filesystem edge.
//!
//! This crate owns the work on a mirrored tree on the local disk:
//! applying the resolver's actions inside a mirror root without ever
//! following a symlink out of it ([`apply`]), scanning trees
//! ([`scan`]), watching them ([`watch`]), reading and writing extended
//! attributes and ACLs ([`xattrs`]), finding a sparse file's holes
//! ([`sparse`]), what this host may do to owners and
//! modes ([`owners`]), recording what a scan finds in the index and
//! undoing local changes where this host only receives ([`local`]); and
//! how the verbose log shows changes,
//! actions, sizes and durations ([`shown`]).
//! It holds no sync rules (see `omirr-core`) and no network code. The
//! rules for opening a file safely, refusing trusted files that others
//! can write and opening a path beneath the root never through a symlink,
//! are `omirr-open`'s; the applier opens through them.

pub mod apply;
pub mod local;
pub mod owners;
pub mod scan;
pub mod shown;
pub mod sparse;
pub mod watch;
pub mod xattrs;
