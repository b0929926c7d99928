//! What can go wrong turning messages into frames and back.

use crate::Seq;

/// A message that is well-encoded but breaks a rule every message obeys
/// ([`crate::Message::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// A `Changes` page holds more than [`crate::MAX_CHANGES_PER_PAGE`]
    /// changes.
    #[error("a page of {count} changes exceeds the limit of {max}")]
    TooManyChanges {
        /// How many changes the page holds.
        count: usize,
        /// The limit, [`crate::MAX_CHANGES_PER_PAGE`].
        max: usize,
    },
    /// A change's sequence is 0 or not above the one before it: a page
    /// lists each sequence at most once, in increasing order.
    #[error(
        "changes out of sequence order: {next} follows {prev} (sequences start at 1 and increase)"
    )]
    OutOfOrder {
        /// The sequence before the offending one (0 for the first change).
        prev: Seq,
        /// The offending sequence.
        next: Seq,
    },
    /// A page's last change has a sequence above the page's `upto`.
    #[error("change {seq} lies beyond the page's upto {upto}")]
    BeyondUpto {
        /// The page's last sequence.
        seq: Seq,
        /// The page's `upto`.
        upto: Seq,
    },
    /// A host name (a [`crate::Hello`]'s, or a change's version's) is
    /// empty or longer than [`crate::MAX_HOST_LEN`] bytes.
    #[error("host name \"{name}\" is empty or longer than {max} bytes")]
    BadHostName {
        /// The name, escaped and cut to 80 bytes for the log.
        name: String,
        /// The limit, [`crate::MAX_HOST_LEN`].
        max: usize,
    },
    /// An entry's mode has bits outside the permission bits (`0o7777`):
    /// the file type travels in the entry's content, not in its mode.
    #[error("entry for {path} has mode {mode:#o}, with bits outside 0o7777")]
    BadMode {
        /// The entry's path.
        path: String,
        /// The offending mode.
        mode: u32,
    },
    /// A symlink's target is empty or holds a NUL byte, which no host can
    /// have read from its disk nor can create.
    #[error("symlink {path} has an empty target or one holding a NUL byte")]
    BadSymlink {
        /// The symlink's path.
        path: String,
    },
    /// A `FileData` carries more than [`crate::MAX_CHUNK`] bytes.
    #[error("file chunk of {len} bytes exceeds the {max}-byte chunk limit")]
    ChunkTooLarge {
        /// The data's length, in bytes.
        len: usize,
        /// The limit, [`crate::MAX_CHUNK`].
        max: usize,
    },
    /// A `FileData`'s `offset` plus its length overflows a `u64`.
    #[error("file chunk of {len} bytes at offset {offset} ends past 2^64")]
    ChunkPastEnd {
        /// The data's offset in the file.
        offset: u64,
        /// The data's length, in bytes.
        len: usize,
    },
    /// A `ChunkList` or `ChunkDigests` page holds more than
    /// [`crate::MAX_CHUNK_LIST`] chunks.
    #[error("a chunk list of {count} chunks exceeds the limit of {max} per page")]
    TooManyChunks {
        /// How many chunks the page holds.
        count: usize,
        /// The limit, [`crate::MAX_CHUNK_LIST`].
        max: usize,
    },
    /// A `ChunkList` or `ChunkDigests` page holds a chunk of length 0.
    #[error("a chunk list holds a chunk of length 0")]
    EmptyChunk,
    /// A `RangeRequest` asks for more than [`crate::MAX_RANGES`] ranges.
    #[error("a range request of {count} ranges exceeds the limit of {max}")]
    TooManyRanges {
        /// How many ranges the request holds.
        count: usize,
        /// The limit, [`crate::MAX_RANGES`].
        max: usize,
    },
    /// A `RangeRequest`'s range is empty, starts before the previous one
    /// ends, or ends past the file's size.
    #[error("range of {len} bytes at offset {offset} is empty, out of order or past the file's {size} bytes")]
    BadRange {
        /// The range's start, in bytes from the start of the file.
        offset: u64,
        /// The range's length, in bytes.
        len: u64,
        /// The file's size the request names, in bytes.
        size: u64,
    },
    /// A [`crate::Hello`] lists more than [`crate::MAX_CAPABILITIES`]
    /// capabilities.
    #[error("{count} capabilities exceed the limit of {max}")]
    TooManyCapabilities {
        /// How many capabilities the Hello lists.
        count: usize,
        /// The limit, [`crate::MAX_CAPABILITIES`].
        max: usize,
    },
    /// A capability name is empty, longer than
    /// [`crate::MAX_CAPABILITY_LEN`] bytes, or holds a character that is
    /// not printable ASCII (a space included).
    #[error("capability \"{name}\" is not 1 to 64 printable ASCII characters")]
    BadCapability {
        /// The name, escaped for the log.
        name: String,
    },
    /// A `Summary` holds no bucket, or more than [`crate::MAX_BUCKETS`].
    #[error("a summary of {count} buckets; 1 to {max} expected")]
    BadBucketCount {
        /// How many buckets the summary holds.
        count: usize,
        /// The limit, [`crate::MAX_BUCKETS`].
        max: usize,
    },
    /// An `Entries` page holds more than [`crate::MAX_VERIFY_ENTRIES`]
    /// entries.
    #[error("a page of {count} entries exceeds the limit of {max}")]
    TooManyEntries {
        /// How many entries the page holds.
        count: usize,
        /// The limit, [`crate::MAX_VERIFY_ENTRIES`].
        max: usize,
    },
    /// An `Entries` page's entry does not follow the one before it in
    /// strictly increasing path order. (The message alone does not say
    /// which span it answers: whether its paths lie in the span asked
    /// about is the session's check.)
    #[error("entry {path} is out of path order or outside the requested span")]
    EntryOutOfSpan {
        /// The offending entry's path.
        path: String,
    },
    /// A `SummaryRequest`'s or `EntriesRequest`'s span has a bound
    /// outside its top, or its lower bound is not below its upper one.
    #[error("span of {top}: {reason}")]
    BadSpan {
        /// The span's top.
        top: String,
        /// What is wrong with the span.
        reason: &'static str,
    },
    /// Free text (an `Error`'s message, a `FileUnavailable`'s reason) is
    /// longer than [`crate::MAX_TEXT`] bytes.
    #[error("{field} of {len} bytes exceeds the {max}-byte limit")]
    TextTooLong {
        /// Which text, e.g. `"Error message"`.
        field: &'static str,
        /// The text's length, in bytes.
        len: usize,
        /// The limit, [`crate::MAX_TEXT`].
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
    FrameTooLarge {
        /// The payload length the header declares, in bytes.
        len: u64,
        /// The limit, [`crate::MAX_FRAME`].
        max: usize,
    },
    /// The header declares a payload of 0 bytes, which no message encodes
    /// to.
    #[error("zero-length frame: every frame carries one message")]
    EmptyFrame,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {have} of {need} bytes received")]
    Truncated {
        /// The bytes of the frame received, header included.
        have: usize,
        /// The bytes the whole frame needs, header included (just the
        /// header's if the header itself is cut).
        need: usize,
    },
    /// The payload is not an encoded message: unknown variant, a field
    /// cut short, a path that fails [`crate::RelPath`]'s checks, ...
    #[error("frame payload is not a valid message: {0}")]
    Malformed(String),
    /// The payload holds a whole message and then more bytes: a frame
    /// carries exactly one message.
    #[error("frame payload has {extra} bytes after its message")]
    TrailingBytes {
        /// How many bytes follow the message.
        extra: usize,
    },
    /// The payload decodes, but the message fails
    /// [`crate::Message::validate`].
    #[error("invalid {kind} message: {error}")]
    Invalid {
        /// The message's variant name ([`crate::Message::kind`]).
        kind: &'static str,
        /// The rule it breaks.
        error: InvalidMessage,
    },
}

/// Why a message could not be put in a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message's payload would be larger than [`crate::MAX_FRAME`].
    #[error("message of {size} bytes exceeds the {max}-byte frame limit")]
    TooLarge {
        /// The payload's size, in bytes.
        size: usize,
        /// The limit, [`crate::MAX_FRAME`].
        max: usize,
    },
    /// Paging: one change is too big for any page.
    #[error("change {seq} ({path}) encodes to {size} bytes; with a page's overhead it cannot fit the {max}-byte frame limit")]
    ChangeTooLarge {
        /// The change's sequence.
        seq: Seq,
        /// The change's path.
        path: String,
        /// What the change costs a page ([`crate::page_cost`]), in bytes.
        size: usize,
        /// The limit, [`crate::MAX_FRAME`].
        max: usize,
    },
    /// The message fails [`crate::Message::validate`]: the peer would
    /// reject it.
    #[error("refusing to send an invalid {kind} message: {error}")]
    Invalid {
        /// The message's variant name ([`crate::Message::kind`]).
        kind: &'static str,
        /// The rule it breaks.
        error: InvalidMessage,
    },
    /// The codec failed. Not expected for a valid message; the text is
    /// the codec's error.
    #[error("could not encode message: {0}")]
    Codec(String),
}
