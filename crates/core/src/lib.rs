//! The sync rules of omirr, free of I/O.
//!
//! This crate will own entries, versions (hybrid logical clock + origin
//! host), tombstones, sequences and cursors, and the resolver that turns a
//! batch of remote entries into actions. It never touches a disk, a socket
//! or a clock directly: callers feed it events and carry out the actions it
//! returns, which is what lets the convergence tests drive simulated peers.
//!
//! It is empty until the sync-core work lands.
