//! omirr's sync engine: the peer sessions, the recording of local
//! changes and the applying of remote ones, behind narrow handles
//! ([`engine`]: the store, the disk, the policy, the counters, the
//! claims on content being fetched).
//!
//! The rules of a session are a sans-IO state machine that takes events
//! and returns what to do, so that the tokio driver ([`session`]) and the
//! convergence simulation (`tests/simulation.rs`) run the very same code:
//! - [`PeerFlow`]: one session's stream of changes in both directions:
//!   the `Pull`, the `Changes` pages within the window the peer's `Ack`s
//!   open, batching received pages for the applier, acknowledging them,
//!   and every protocol rule about them (a violation is a [`Violation`],
//!   which the driver answers with `Error BadMessage`);
//! - [`isolate`]: which changes of a batch go with an action that failed
//!   (they are set aside; the rest of the batch is applied);
//! - [`admit`]: what a peer may do to this host (its sets, the writer a
//!   version names, what a change hides below it, timestamps from the
//!   future) and the clock rule between hosts;
//! - the bounds ([`Limits`], [`MAX_QUEUED_REQUESTS`]).
//!
//! [`verify`] asks peers about their indexes over the sessions, and
//! answers their questions about ours (`omirrd verify`).
//!
//! [`record`] is where the index meets this host's disk: the start-up
//! scan and the watcher's batches into the index (the index as the
//! scanner's baseline), a peer's changes onto the disk and then into the
//! index, and the receive-only undo; [`local`] drives the watcher's side
//! of it under the engine's write lock.
//!
//! One-way sets ([`engine::Direction`]): a session's applier drops a
//! peer's changes where this host only sends, and undoes this host's
//! local changes where it only receives ([`engine::Undo`]; the rule is
//! `omirr_core::resolve::restore`).
//!
//! What it does not own: the command line, logging, daemonising, the
//! listener and dialers, the status socket (`omirrd`); the index and the
//! disk's rules (`omirr-index`, `omirr-fs`: scanning, watching, applying); which change wins and what to
//! do on disk (`omirr-core`); the bytes on the wire (`omirr-proto`). See
//! `proto/PROTOCOL.md`, "Flow control", for the session's rules and why
//! they cannot deadlock.

pub mod admit;
pub mod counters;
pub mod engine;
mod error;
mod flow;
mod isolate;
pub mod local;
pub mod record;
pub mod session;
pub mod verify;

pub use engine::{Engine, Policy};
pub use error::SessionError;
pub use flow::{check_requests, Limits, PeerFlow, Violation, MAX_QUEUED_REQUESTS};
pub use isolate::isolate;
