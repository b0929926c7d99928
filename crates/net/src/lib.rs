//! omirr's network edge.
//!
//! This crate owns the host's TLS identity ([`identity`]): its key pair,
//! its self-signed certificate and the fingerprint peers pin; and the
//! mutual TLS 1.3 between peers ([`tls`]): rustls configurations that trust
//! exactly the keys pinned in the peers file, reloadable at run time, and
//! refusals that name the key they refused. It opens no sockets itself:
//! `omirrd` listens and dials and hands each connection to these
//! configurations, and the sessions over them are `omirr-sync`'s. It holds
//! no sync rules and parses no configuration (the peers file is
//! `omirr-config`'s).
//!
//! The key and certificate are files that decide whom this host trusts:
//! they are read and written through `omirr-open`'s rules for such files,
//! not through the filesystem edge (`omirr-fs`), which this crate does not
//! depend on.

pub mod identity;
pub mod tls;
