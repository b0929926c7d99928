//! omirr's network edge: everything between a peer's address and an
//! authenticated stream.
//!
//! This crate owns the host's TLS identity ([`identity`]): its key pair,
//! its self-signed certificate and the fingerprint peers pin; the mutual
//! TLS 1.3 between peers ([`tls`]): rustls configurations that trust
//! exactly the keys pinned in the peers file, reloadable at run time, and
//! refusals that name the key they refused; and the sockets ([`socket`]):
//! listening, accepting, dialing and driving the handshake, with the
//! protection of the listener against floods of connections and against
//! running out of descriptors ([`listen`]). The sessions over the streams
//! are `omirr-sync`'s; which peers to dial and what to log about them are
//! `omirrd`'s. It holds no sync rules and parses no configuration (the
//! peers file is `omirr-config`'s).
//!
//! The key and certificate are files that decide whom this host trusts:
//! they are read and written through `omirr-open`'s rules for such files,
//! not through the filesystem edge (`omirr-fs`), which this crate does not
//! depend on.

pub mod identity;
pub mod listen;
pub mod socket;
pub mod tls;
