//! The omirr wire protocol.
//!
//! This crate owns everything two `omirrd` daemons must agree on when they
//! talk, and nothing else:
//!
//! - [`Message`] and its parts: what travels, and the checks every
//!   well-formed message passes whatever the session state
//!   ([`Message::validate`]);
//! - framing: a 4-byte big-endian payload length, then one encoded
//!   message ([`encode`], [`FrameDecoder`]), with hard limits
//!   ([`MAX_FRAME`], [`MAX_CHUNK`], [`MAX_CHANGES_PER_PAGE`]);
//! - paging: splitting a run of index changes into messages that each fit
//!   a frame ([`paginate`]);
//! - the handshake rules: what a peer's [`Hello`] must say
//!   ([`check_hello`]) and which capabilities a session uses
//!   ([`negotiate`]);
//! - with the `tokio` feature (on by default), thin async helpers that
//!   read and write one message on a stream under the same limits
//!   ([`read_message`], [`write_message`]).
//!
//! It does not own:
//!
//! - sockets, TLS, certificates or the peers file (`omirr-net`): this crate
//!   does no I/O; the async helpers only move bytes the caller's stream
//!   gives them;
//! - the sync rules (`omirr-core`): which entry wins, what to fetch, what
//!   to apply. It borrows core's entry types ([`Change`], [`RelPath`], ...)
//!   and the chunk list's ([`Chunk`], [`Digest`]) because they are what
//!   travels; that dependency points from proto to core (as
//!   ARCHITECTURE.md draws it), so that the types exist once. Core does
//!   no I/O either, so nothing is lost;
//! - cutting files into chunks and rebuilding them from a chunk list
//!   (`omirr-chunk`), which this crate does not depend on;
//! - session state: cursors, acknowledgements, which request is
//!   outstanding, whether a peer may change a path. `PROTOCOL.md` says
//!   what a session must do; the session code in `omirr-sync` does it.
//!
//! Untrusted bytes: decoding never panics, never allocates more than the
//! frame limit per field, and rejects a frame whose declared length is over
//! the limit before buffering it. Paths are checked as they are decoded
//! (by [`RelPath`]'s own validation), so a `Change` naming `a/../b` never
//! leaves the decoder.
//!
//! The payload encoding (bincode 2 over serde) is confined to one private
//! module, `codec`, so that it can be swapped without touching the rest.
//! `PROTOCOL.md` next to this crate's `Cargo.toml` is the reference for the
//! bytes on the wire.

mod codec;
mod error;
mod frame;
mod handshake;
#[cfg(feature = "tokio")]
mod io;
mod message;
mod page;
mod serde_helpers;

pub use error::{DecodeError, EncodeError, InvalidMessage};
pub use frame::frame_len;
pub use frame::{encode, encode_into, FrameDecoder};
pub use handshake::{check_hello, expect_hello, negotiate, HandshakeError, CAPABILITIES};
#[cfg(feature = "tokio")]
pub use io::read_frame;
#[cfg(feature = "tokio")]
pub use io::{read_message, write_message, ReadError, WriteError};
pub use message::{ErrorCode, Hello, Message};
pub use page::{page_cost, paginate};

// What travels inside messages, re-exported so that users of the protocol
// need not name omirr-core for them.
pub use omirr_core::verify::{Bucket, Span};
pub use omirr_core::{
    Change, Chunk, Content, Digest, Entry, Hash, HostId, Meta, Name, RelPath, Seq, Timestamp,
    Version,
};

/// The protocol version this build speaks. Bumped on every incompatible
/// change to framing or messages; peers with different versions refuse each
/// other at the handshake. `PROTOCOL.md` says what needs a bump.
pub const PROTOCOL_VERSION: u32 = 3;

/// The TCP port omirrd listens on when the peers file names none (omirr's
/// historical port).
pub const DEFAULT_PORT: u16 = 808;

/// Length of the frame header: the payload length as a big-endian `u32`.
pub const FRAME_HEADER_LEN: usize = 4;

/// The largest payload a frame may carry, in bytes (4 MiB), header not
/// included. Large enough for a page of thousands of changes or a file
/// chunk with room to spare; small enough that a peer cannot make us hold
/// much for it.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

/// The most file data one [`Message::FileData`] carries (256 KiB): big
/// enough to amortise the per-message cost, small enough that other
/// messages (changes, pings) are not stuck behind a file for long.
pub const MAX_CHUNK: usize = 256 * 1024;

/// The most changes one [`Message::Changes`] page carries. A change
/// encodes to as little as ~10 bytes but takes ~220 in memory; bounding the
/// count bounds what a frame can make the receiver allocate, and keeps a
/// page a reasonable unit for one index transaction. (Protocol 3 lowered
/// it from 16,384: an entry's base made a change bigger in memory, and a
/// full page of small changes must still fit a frame's decoding budget.)
pub const MAX_CHANGES_PER_PAGE: usize = 14 * 1024;

/// The most chunks one [`Message::ChunkList`] page carries (36 bytes
/// each: well within a frame). A longer list takes several pages.
pub const MAX_CHUNK_LIST: usize = 64 * 1024;

/// The most ranges one [`Message::RangeRequest`] asks for. More missing
/// ranges take several requests.
pub const MAX_RANGES: usize = 64 * 1024;

/// The capability for delta transfer of large files: the messages
/// `ChunkRequest`, `ChunkList` and `RangeRequest`.
pub const CAP_CHUNKS: &str = "chunks";

/// The capability for compact chunk lists: the messages `DigestRequest`
/// and `ChunkDigests`, a chunk list with a short prefix of each hash (12
/// bytes a chunk instead of 36).
pub const CAP_DIGESTS: &str = "chunk-digests";

/// The capability for progress reports: the message `Backlog`, the size
/// of the answer to a `Pull`.
pub const CAP_BACKLOG: &str = "backlog";

/// The capability for comparing indexes (`omirrd verify`): the messages
/// `SummaryRequest`, `Summary`, `EntriesRequest` and `Entries`.
pub const CAP_VERIFY: &str = "verify";

/// The most buckets one [`Message::Summary`] carries.
pub const MAX_BUCKETS: usize = omirr_core::verify::FANOUT;

/// The most entries one [`Message::Entries`] page carries.
pub const MAX_VERIFY_ENTRIES: usize = omirr_core::verify::MAX_ENTRIES_PAGE;
/// The capability for tombstone expiry: the message `Forgotten`, with
/// which a host tells its peers what it has forgotten, so that one that
/// was away for longer reconciles instead of bringing deleted files back.
pub const CAP_EXPIRY: &str = "expiry";

/// The capability for sparse files: the `FileData` answering a
/// `FileRequest` or `RangeRequest` may skip a file's holes. Bytes of a
/// requested range that no `FileData` carries are zeros; the pieces
/// still come in order, and `FileEnd` still closes the answer.
pub const CAP_HOLES: &str = "holes";

/// The longest host name, in bytes (a DNS name's limit).
pub const MAX_HOST_LEN: usize = 255;

/// The most capabilities a [`Hello`] may list.
pub const MAX_CAPABILITIES: usize = 64;

/// The longest capability name, in bytes.
pub const MAX_CAPABILITY_LEN: usize = 64;

/// The longest free text (an error message, a reason), in bytes: enough to
/// explain, short enough to log on one line.
pub const MAX_TEXT: usize = 4096;
