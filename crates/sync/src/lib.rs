//! omirr's sync engine, sans-IO: the rules of a peer session as a state
//! machine that takes events and returns what to do, so that the daemon's
//! tokio driver and the convergence simulation run the very same code.
//!
//! What it owns:
//! - [`PeerFlow`]: one session's stream of changes in both directions:
//!   the `Pull`, the `Changes` pages within the window the peer's `Ack`s
//!   open, batching received pages for the applier, acknowledging them,
//!   and every protocol rule about them (a violation is a [`Violation`],
//!   which the driver answers with `Error BadMessage`);
//! - [`isolate`]: which changes of a batch go with an action that failed
//!   (they are set aside; the rest of the batch is applied);
//! - the bounds ([`Limits`], [`MAX_QUEUED_REQUESTS`]).
//!
//! What it does not own: sockets, tasks and timers (the daemon's driver,
//! `omirrd`'s `session` module), the index and the disk (`omirr-index`,
//! `omirr-fs`), which change wins and what to do on disk (`omirr-core`),
//! the bytes on the wire (`omirr-proto`). See `proto/PROTOCOL.md`, "Flow
//! control", for the rules and why they cannot deadlock.

mod flow;
mod isolate;

pub use flow::{check_requests, Limits, PeerFlow, Violation, Window, MAX_QUEUED_REQUESTS};
pub use isolate::{isolate, related};
