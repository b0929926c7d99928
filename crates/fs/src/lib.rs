//! omirr's filesystem edge.
//!
//! This crate owns every interaction with the local disk that has a safety
//! rule attached: refusing configuration and key files that others can
//! write ([`secure`]), opening a path of the tree on a peer's behalf
//! beneath the root and never through a symlink ([`beneath`]), applying
//! the resolver's actions inside a mirror root without ever following a
//! symlink out of it ([`apply`]), scanning trees
//! ([`scan`]), watching them ([`watch`]), reading and writing extended
//! attributes and ACLs ([`xattrs`]), finding a sparse file's holes
//! ([`sparse`]), what this host may do to owners and
//! modes ([`owners`]); and
//! how the verbose log shows changes,
//! actions, sizes and durations ([`shown`]).
//! It holds no sync rules (see `omirr-core`), no network code, and no
//! index: recording what a scan finds in the index, and undoing local
//! changes where this host only receives, are `omirr_sync::record`'s.

pub mod apply;
pub mod beneath;
pub mod owners;
pub mod scan;
pub mod secure;
pub mod shown;
pub mod sparse;
pub mod watch;
pub mod xattrs;
