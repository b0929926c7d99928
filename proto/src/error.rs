//! What can go wrong turning messages into frames and back.

use crate::Seq;

/// A message that is well-encoded but breaks a rule every message obeys
/// ([`crate::Message::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    #[error("a page of {count} changes exceeds the limit of {max}")]
    TooManyChanges { count: usize, max: usize },
    #[error(
        "changes out of sequence order: {next} follows {prev} (sequences start at 1 and increase)"
    )]
    OutOfOrder { prev: Seq, next: Seq },
    #[error("change {seq} lies beyond the page's upto {upto}")]
    BeyondUpto { seq: Seq, upto: Seq },
    #[error("host name \"{name}\" is empty or longer than {max} bytes")]
    BadHostName { name: String, max: usize },
    #[error("entry for {path} has mode {mode:#o}, with bits outside 0o7777")]
    BadMode { path: String, mode: u32 },
    #[error("symlink {path} has an empty target or one holding a NUL byte")]
    BadSymlink { path: String },
    #[error("file chunk of {len} bytes exceeds the {max}-byte chunk limit")]
    ChunkTooLarge { len: usize, max: usize },
    #[error("file chunk of {len} bytes at offset {offset} ends past 2^64")]
    ChunkPastEnd { offset: u64, len: usize },
    #[error("a chunk list of {count} chunks exceeds the limit of {max} per page")]
    TooManyChunks { count: usize, max: usize },
    #[error("a chunk list holds a chunk of length 0")]
    EmptyChunk,
    #[error("a range request of {count} ranges exceeds the limit of {max}")]
    TooManyRanges { count: usize, max: usize },
    #[error("range of {len} bytes at offset {offset} is empty, out of order or past the file's {size} bytes")]
    BadRange { offset: u64, len: u64, size: u64 },
    #[error("{count} capabilities exceed the limit of {max}")]
    TooManyCapabilities { count: usize, max: usize },
    #[error("capability \"{name}\" is not 1 to 64 printable ASCII characters")]
    BadCapability { name: String },
    #[error("a summary of {count} buckets; 1 to {max} expected")]
    BadBucketCount { count: usize, max: usize },
    #[error("a page of {count} entries exceeds the limit of {max}")]
    TooManyEntries { count: usize, max: usize },
    #[error("entry {path} is out of path order or outside the requested span")]
    EntryOutOfSpan { path: String },
    #[error("span of {top}: {reason}")]
    BadSpan { top: String, reason: &'static str },
    #[error("{field} of {len} bytes exceeds the {max}-byte limit")]
    TextTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

/// Why bytes from a peer did not yield a message. After any of these the
/// session is over: the receiver sends `Error` (`BadMessage`) and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header declares more than [`crate::MAX_FRAME`]. Reported from
    /// the header alone, before the payload is buffered.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: u64, max: usize },
    #[error("zero-length frame: every frame carries one message")]
    EmptyFrame,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {have} of {need} bytes received")]
    Truncated { have: usize, need: usize },
    /// The payload is not an encoded message: unknown variant, a field
    /// cut short, a path that fails [`crate::RelPath`]'s checks, ...
    #[error("frame payload is not a valid message: {0}")]
    Malformed(String),
    #[error("frame payload has {extra} bytes after its message")]
    TrailingBytes { extra: usize },
    #[error("invalid {kind} message: {error}")]
    Invalid {
        kind: &'static str,
        error: InvalidMessage,
    },
}

/// Why a message could not be put in a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {size} bytes exceeds the {max}-byte frame limit")]
    TooLarge { size: usize, max: usize },
    /// Paging: one change is too big for any page.
    #[error("change {seq} ({path}) encodes to {size} bytes; with a page's overhead it cannot fit the {max}-byte frame limit")]
    ChangeTooLarge {
        seq: Seq,
        path: String,
        size: usize,
        max: usize,
    },
    #[error("refusing to send an invalid {kind} message: {error}")]
    Invalid {
        kind: &'static str,
        error: InvalidMessage,
    },
    #[error("could not encode message: {0}")]
    Codec(String),
}
