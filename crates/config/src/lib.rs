//! The configuration languages of omirrd: the Distfile and the peers file.
//!
//! This crate owns turning text into a typed, validated model: the rdist
//! Distfile grammar ([`distfile`]) with its variables, set algebra and
//! globbing, and the peers file ([`peers`]) that says how to reach and
//! recognise each host. Both report through [`diag`]: every problem with a
//! file, line and column, all of them at once. It reads the filesystem only
//! to expand globs under the host's root; it opens no sockets and knows
//! nothing of syncing.

pub mod diag;
pub mod distfile;
pub mod peers;

pub use diag::{Diagnostic, Diagnostics, Pos, Severity};
