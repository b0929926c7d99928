//! omirr's rules for opening files safely.
//!
//! This crate owns the two rules that decide whether a file may be opened
//! at all, so that every part of omirr that opens such a file follows the
//! same rule without depending on the rest of the filesystem edge:
//!
//! - [`secure`]: the files that decide what this host trusts (the
//!   Distfile, the peers file, the TLS key and certificate). They are
//!   read only if no one but root or the daemon's user could have written
//!   or replaced them, and written atomically with their final mode.
//!   `omirrd` reads its configuration and `omirr-net` its identity
//!   through it.
//! - [`beneath`]: opening a path of a mirrored tree by descriptor, beneath
//!   the root and never through a symbolic link. The applier (`omirr-fs`)
//!   and the server of a peer's requests (`omirr-sync`) reach files on a
//!   peer's behalf through it.
//!
//! It does not own what happens to a file once open: scanning, watching
//! and applying changes are `omirr-fs`'s, the index is `omirr-index`'s,
//! and what the configuration files say is `omirr-config`'s. It holds no
//! sync rules and no network code.

pub mod beneath;
pub mod secure;
