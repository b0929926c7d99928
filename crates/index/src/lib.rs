//! omirr's persisted index, in one redb database (`index.redb` in the
//! state directory).
//!
//! This crate owns what a host must remember across restarts, and keeps
//! it crash-safe (every write is one redb transaction, so a `kill -9`
//! leaves the last committed state):
//!
//! - the winning entry per path with its local sequence, the
//!   sequence-ordered feed peers resume from ([`Index::since`]), and the
//!   hash and tombstone lookups beside it, with the same semantics as
//!   [`omirr_core::mem::MemIndex`], its model;
//! - each peer's cursor, with the id of the peer's index it counts in
//!   ([`Index::meet_peer_index`]), this index's own id ([`Index::id`]),
//!   the clock's last timestamp, and each writer's latest version
//!   recorded ([`Index::latest_of`]), by which a host whose index is new
//!   gets its own changes back;
//! - the peers' changes this host could not apply ([`Aside`]), kept in
//!   the same transaction as the cursor that moves past them;
//! - the stat cache and the inode cache ([`omirr_core::StatKey`]), which
//!   let a scan skip unchanged files and recognise renames and hard links.
//!
//! It does not decide anything: which change wins, what the tree must be
//! and what to do on disk are `omirr-core`'s rules; scanning, hashing and
//! applying are the filesystem side's. It only stores and answers, and
//! implements [`omirr_core::IndexView`] so the core's rules can read it
//! ([`Index::reader`] gives an [`IndexReader`], which answers many
//! lookups from one read transaction).
//!
//! A [`Batch`] lands in one transaction: the changes a step recorded, the
//! stats of their files, and the peer's cursor that moves past them, so
//! that no crash separates a peer's changes from the cursor past them.
//!
//! The layout is versioned ([`FORMAT`]): an index of an older format is
//! converted when opened (`convert`, reading `old_formats`), one that redb
//! 2 wrote is rewritten in redb's current file format (`file_format`), and
//! a file that is not an index, or one of a newer format, is refused with
//! an error that says what to do. The tables and their keys are
//! `schema`'s; an entry's value is `record`'s, the other encoded values
//! `codec`'s, so the encoding can change with a format bump and nothing
//! else; `golden` and `tests/golden.rs` pin every byte of it.
//!
//! To read the crate: `index` (the handle), then `write` and `tables`
//! (how a batch lands, and what it keeps in step), then `reader` and
//! `reads` (how lookups answer); `open`, `peers`, `expiry`, `aside`,
//! `chunk_lists`, `verify` and `space` are one job each.

mod aside;
mod batch;
mod chunk_lists;
mod codec;
mod convert;
mod error;
mod expiry;
mod file_format;
#[doc(hidden)]
pub mod fuzzing;
mod index;
mod old_formats;
mod open;
mod peers;
mod pending;
mod reader;
mod reads;
mod record;
mod schema;
mod space;
mod tables;
mod verify;
mod write;

pub use aside::Aside;
pub use batch::{Batch, StatUpdate};
pub use error::IndexError;
pub use expiry::Expired;
pub use index::{Index, FILE_NAME, FORMAT};
pub use omirr_core::{Seq, Timestamp};
pub use reader::IndexReader;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
