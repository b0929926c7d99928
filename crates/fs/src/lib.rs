//! omirr's filesystem edge.
//!
//! This crate owns every interaction with the local disk that has a safety
//! rule attached: refusing configuration and key files that others can
//! write ([`secure`]), and later scanning, watching and applying changes.
//! It holds no sync rules (see `omirr-core`) and no network code.

pub mod secure;
