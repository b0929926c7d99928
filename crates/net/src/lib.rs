//! omirr's network edge.
//!
//! This crate owns the host's TLS identity ([`identity`]): its key pair,
//! its self-signed certificate and the fingerprint peers pin. Peer sessions
//! arrive here with the live daemon. It holds no sync rules and parses no
//! configuration (the peers file is `omirr-config`'s).

pub mod identity;
