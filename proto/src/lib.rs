//! The omirr wire protocol.
//!
//! This crate owns everything two `omirrd` daemons agree on when they talk:
//! the protocol version, the message types, their framing and the
//! handshake. It does no I/O and holds no sync rules; those live in
//! `omirr-core` (rules) and `omirr-net` (sockets, TLS).
//!
//! For now it holds only the version constant; the messages arrive with the
//! live daemon.

/// The protocol version this build speaks. Bumped on every incompatible
/// change to framing or messages; peers with different versions refuse each
/// other at the handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// The TCP port omirrd listens on when the peers file names none (omirr's
/// historical port).
pub const DEFAULT_PORT: u16 = 808;
