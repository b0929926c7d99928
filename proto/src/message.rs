//! The messages two peers exchange, and the checks every well-formed one
//! passes.
//!
//! The order of the variants is the wire format (the codec numbers them):
//! never reorder them; append new ones at the end. `Hello` and `Error`
//! come first and are frozen, so that peers of any two protocol versions
//! can read each other's greeting and refusal (see `PROTOCOL.md`).

use crate::error::InvalidMessage;
use crate::serde_helpers;
use crate::{
    Bucket, Change, Chunk, Content, Digest, Hash, RelPath, Seq, Span, Timestamp, MAX_BUCKETS,
    MAX_CAPABILITIES, MAX_CAPABILITY_LEN, MAX_CHANGES_PER_PAGE, MAX_CHUNK, MAX_CHUNK_LIST,
    MAX_HOST_LEN, MAX_RANGES, MAX_TEXT, MAX_VERIFY_ENTRIES, PROTOCOL_VERSION,
};
use serde::{Deserialize, Serialize};

/// The first message each side sends after TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The sender's host name, as the peers file and Distfile spell it. It
    /// must be the name the TLS layer authenticated (see
    /// [`crate::check_hello`]).
    #[serde(deserialize_with = "serde_helpers::text")]
    pub host: String,
    /// Optional features the sender supports; the session uses those both
    /// sides list ([`crate::negotiate`]): [`crate::CAPABILITIES`].
    #[serde(deserialize_with = "serde_helpers::capabilities")]
    pub capabilities: Vec<String>,
}

impl Hello {
    /// This build's greeting for `host`.
    pub fn new(host: &str) -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            host: host.to_owned(),
            capabilities: crate::CAPABILITIES
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
        }
    }
}

/// Why a session ends. Encoded as a number, so that a code added later
/// reaches an older peer as [`ErrorCode::Other`] instead of making the
/// whole `Error` undecodable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u32", into = "u32")]
pub enum ErrorCode {
    /// The peer's [`Hello::protocol`] is not ours.
    ProtocolVersion,
    /// The name in the peer's [`Hello`] is not the host its certificate
    /// belongs to, or not one we mirror with.
    UnknownHost,
    /// The peer asked for or did something it may not.
    NotAuthorised,
    /// A frame could not be decoded, a message was invalid, or it came out
    /// of the session's order.
    BadMessage,
    /// The sender failed locally (disk, database) and is closing.
    Internal,
    /// The sender is stopping; try again later.
    ShuttingDown,
    /// The two hosts' wall clocks differ by more than the receiver allows
    /// (see [`Message::Clock`]).
    ClockOffset,
    /// A code this build does not know (sent by a newer peer).
    Other(u32),
}

impl From<u32> for ErrorCode {
    fn from(n: u32) -> ErrorCode {
        match n {
            1 => ErrorCode::ProtocolVersion,
            2 => ErrorCode::UnknownHost,
            3 => ErrorCode::NotAuthorised,
            4 => ErrorCode::BadMessage,
            5 => ErrorCode::Internal,
            6 => ErrorCode::ShuttingDown,
            7 => ErrorCode::ClockOffset,
            n => ErrorCode::Other(n),
        }
    }
}

impl From<ErrorCode> for u32 {
    fn from(c: ErrorCode) -> u32 {
        match c {
            ErrorCode::ProtocolVersion => 1,
            ErrorCode::UnknownHost => 2,
            ErrorCode::NotAuthorised => 3,
            ErrorCode::BadMessage => 4,
            ErrorCode::Internal => 5,
            ErrorCode::ShuttingDown => 6,
            ErrorCode::ClockOffset => 7,
            ErrorCode::Other(n) => n,
        }
    }
}

/// One message: the payload of one frame. `PROTOCOL.md` describes the
/// order of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The greeting, sent first by both sides. Frozen across versions.
    Hello(Hello),
    /// Fatal: the sender closes the connection after it. Frozen across
    /// versions.
    Error {
        /// Why the sender ends the session.
        code: ErrorCode,
        /// Details for the receiver's log, at most [`MAX_TEXT`] bytes.
        #[serde(deserialize_with = "serde_helpers::text")]
        message: String,
    },
    /// "Send me everything you recorded after sequence `after`" (0 for a
    /// peer we have never heard from), then keep sending live changes.
    /// `own_after`: the latest timestamp of a change this host made itself
    /// that its index holds. Changes made by the receiver are normally not
    /// sent back to it; those of them the sender recorded before this
    /// `Pull` with a later timestamp are, because the receiver has lost
    /// them (a new or restored index).
    Pull {
        /// The highest of the receiver's sequences the sender has received
        /// and durably applied; 0 asks for everything.
        after: Seq,
        /// The latest timestamp of the sender's own changes in its index;
        /// 0 if it holds nothing from this peer.
        own_after: Timestamp,
    },
    /// A page of the sender's index, in sequence order. Each change carries
    /// the sequence the sender recorded it under. `upto`: with this page the
    /// receiver has everything the sender recorded up to `upto` that it is
    /// going to get (sequences skipped were superseded or are not for this
    /// peer). `done`: no further page follows right away; the receiver is
    /// caught up (the first `done` after a `Pull` ends its answer).
    Changes {
        /// The changes with their sequences, strictly increasing, at most
        /// [`MAX_CHANGES_PER_PAGE`].
        #[serde(deserialize_with = "serde_helpers::changes")]
        changes: Vec<(Seq, Change)>,
        /// The sequence the receiver's cursor may advance to once it has
        /// applied the page; no change of the page lies above it.
        upto: Seq,
        /// No further page follows right away.
        done: bool,
    },
    /// The receiver has applied, and durably recorded, everything the
    /// sender sent up to `upto`.
    Ack {
        /// The sequence (of the `Changes` sender) up to which everything
        /// is applied: the receiver's cursor for it.
        upto: Seq,
    },
    /// "Send me the content of `path`, which you announced with this hash
    /// and size." `id` is the requester's, unique among its outstanding
    /// requests.
    FileRequest {
        /// The requester's id for this request, echoed in the answer.
        id: u64,
        /// The file's path, relative to the mirror root.
        path: RelPath,
        /// The BLAKE3 hash of the content, as the file's holder announced it.
        hash: Hash,
        /// The content's size in bytes, as the file's holder announced it.
        size: u64,
    },
    /// Bytes `offset..offset + data.len()` of request `id`'s file; at most
    /// [`MAX_CHUNK`] bytes, in offset order.
    FileData {
        /// The request this answers.
        id: u64,
        /// Where `data` starts in the file, in bytes.
        offset: u64,
        /// The file's bytes from `offset` on, at most [`MAX_CHUNK`].
        #[serde(with = "serde_helpers::bytes")]
        data: Vec<u8>,
    },
    /// All of request `id`'s file has been sent.
    FileEnd {
        /// The request this answers.
        id: u64,
    },
    /// Request `id` cannot be served: the file changed or is gone on the
    /// sender. Data already sent for it is to be discarded.
    FileUnavailable {
        /// The request this answers.
        id: u64,
        /// Why, for the requester's log; at most [`MAX_TEXT`] bytes.
        #[serde(deserialize_with = "serde_helpers::text")]
        reason: String,
    },
    /// Are you there? Answered by a `Pong` with the same nonce.
    Ping {
        /// The sender's value, echoed by the `Pong`.
        nonce: u64,
    },
    /// The answer to a `Ping`.
    Pong {
        /// The `Ping`'s nonce.
        nonce: u64,
    },
    /// Capability [`crate::CAP_CHUNKS`]: "send me the chunk list of
    /// `path`, which you announced with this hash and size", answered by
    /// `ChunkList` pages or `FileUnavailable`.
    ChunkRequest {
        /// The requester's id for this request, echoed in the answer.
        id: u64,
        /// The file's path, relative to the mirror root.
        path: RelPath,
        /// The BLAKE3 hash of the content, as the file's holder announced it.
        hash: Hash,
        /// The content's size in bytes, as the file's holder announced it.
        size: u64,
    },
    /// A page of request `id`'s chunk list, in file order; `last` ends it.
    ChunkList {
        /// The request this answers.
        id: u64,
        /// The next chunks, in file order, at most [`MAX_CHUNK_LIST`],
        /// none of length 0.
        #[serde(deserialize_with = "serde_helpers::chunk_list")]
        chunks: Vec<Chunk>,
        /// This is the list's last page.
        last: bool,
    },
    /// Capability [`crate::CAP_CHUNKS`]: "send me these byte ranges
    /// `(offset, len)` of `path`, which you announced with this hash and
    /// size", answered like a `FileRequest`, with `FileData` for each
    /// range in order, then `FileEnd`.
    RangeRequest {
        /// The requester's id for this request, echoed in the answer.
        id: u64,
        /// The file's path, relative to the mirror root.
        path: RelPath,
        /// The BLAKE3 hash of the content, as the file's holder announced it.
        hash: Hash,
        /// The content's size in bytes, as the file's holder announced it.
        size: u64,
        /// The ranges as `(offset, len)` in bytes: at most [`MAX_RANGES`],
        /// none empty, in increasing order without overlap, all within
        /// `size`.
        #[serde(deserialize_with = "serde_helpers::ranges")]
        ranges: Vec<(u64, u64)>,
    },
    /// The sender's wall clock when it sent this, in nanoseconds since the
    /// epoch, and the id of its index. Sent right after `Hello` (the
    /// second message of a session) and again with every `Ping`, so that
    /// each side measures the other's clock offset and refuses a peer
    /// beyond its limit ([`ErrorCode::ClockOffset`]). `index` tells the
    /// receiver which of the sender's indexes its cursor must count in:
    /// a host whose index was made anew or restored has another id, and
    /// its peers ask it for everything again (their `Pull` follows).
    Clock {
        /// The sender's wall clock, in nanoseconds since the epoch.
        wall: u64,
        /// The id of the sender's index: random, made with the index,
        /// never 0.
        index: u64,
    },
    /// Capability [`crate::CAP_BACKLOG`]: the size of the answer to the
    /// receiver's `Pull`, sent once, after the first `Changes` page or
    /// later: the sender's changes after the `Pull`'s `after` up to
    /// sequence `upto` (its last sequence when the `Pull` arrived) that it
    /// sends the receiver, how many of them are files with content, and
    /// their total size in bytes. Only for progress reports: nothing in
    /// the session depends on it.
    Backlog {
        /// The sender's last sequence when the `Pull` arrived.
        upto: Seq,
        /// How many changes the answer holds.
        changes: u64,
        /// How many of them are files with content.
        files: u64,
        /// Those files' total size, in bytes.
        bytes: u64,
    },
    /// Capability [`crate::CAP_DIGESTS`]: a `ChunkRequest` answered by
    /// `ChunkDigests` pages (or `FileUnavailable`) instead of `ChunkList`.
    DigestRequest {
        /// The requester's id for this request, echoed in the answer.
        id: u64,
        /// The file's path, relative to the mirror root.
        path: RelPath,
        /// The BLAKE3 hash of the content, as the file's holder announced it.
        hash: Hash,
        /// The content's size in bytes, as the file's holder announced it.
        size: u64,
    },
    /// Capability [`crate::CAP_DIGESTS`]: a page of request `id`'s chunk
    /// list, in file order, each chunk named by its length and the first
    /// bytes of its hash; `last` ends it.
    ChunkDigests {
        /// The request this answers.
        id: u64,
        /// The next chunks, in file order, at most [`MAX_CHUNK_LIST`],
        /// none of length 0.
        #[serde(deserialize_with = "serde_helpers::digests")]
        digests: Vec<Digest>,
        /// This is the list's last page.
        last: bool,
    },
    /// Capability [`crate::CAP_VERIFY`]: "summarise your index entries of
    /// this span, those you share with me", answered by a `Summary` with
    /// the same `id` (see `omirr_core::verify`).
    SummaryRequest {
        /// The requester's id for this request, echoed in the `Summary`.
        id: u64,
        /// The paths to summarise.
        span: Span,
    },
    /// Capability [`crate::CAP_VERIFY`]: the span of request `id` in 1 to
    /// [`MAX_BUCKETS`] buckets, in path order, together covering it.
    Summary {
        /// The request this answers.
        id: u64,
        /// The buckets, each ending at its `upto` (inclusive), the last at
        /// the span's.
        #[serde(deserialize_with = "serde_helpers::buckets")]
        buckets: Vec<Bucket>,
    },
    /// Capability [`crate::CAP_VERIFY`]: "send me your index entries of
    /// this span, those you share with me", answered by `Entries`.
    EntriesRequest {
        /// The requester's id for this request, echoed in the `Entries`.
        id: u64,
        /// The paths whose entries to send.
        span: Span,
    },
    /// Capability [`crate::CAP_VERIFY`]: the first entries of request
    /// `id`'s span, in path order, at most [`MAX_VERIFY_ENTRIES`];
    /// `complete`: there are no more (else the asker asks again for the
    /// rest of the span, after the last one).
    Entries {
        /// The request this answers.
        id: u64,
        /// The entries with their paths, in strictly increasing path
        /// order.
        #[serde(deserialize_with = "serde_helpers::entries")]
        entries: Vec<Change>,
        /// No entries of the span follow this page's.
        complete: bool,
    },
    /// Capability [`crate::CAP_EXPIRY`]: what the sender has forgotten
    /// (its expiry watermark: the greatest sequence of an entry it
    /// forgot, and a timestamp above every one), its cursor for the
    /// receiver (`cursor`: it has everything the receiver recorded up to
    /// it) and its last sequence (`last`). The third message of a
    /// session, before `Pull`, and sent again with every `Ping`. A
    /// receiver whose cursor for the sender is below `forgot_seq` may
    /// have missed a deletion the sender no longer remembers: it
    /// reconciles (see `PROTOCOL.md`, "Tombstone expiry").
    Forgotten {
        /// The greatest of the sender's sequences whose entry it forgot;
        /// 0 if none.
        forgot_seq: Seq,
        /// A timestamp above every forgotten entry's; 0 if none.
        forgot_below: Timestamp,
        /// The sender's cursor for the receiver: it has everything the
        /// receiver recorded up to this sequence.
        cursor: Seq,
        /// The sender's last sequence.
        last: Seq,
    },
}

impl Message {
    /// The variant's name, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Error { .. } => "Error",
            Message::Pull { .. } => "Pull",
            Message::Changes { .. } => "Changes",
            Message::Ack { .. } => "Ack",
            Message::FileRequest { .. } => "FileRequest",
            Message::FileData { .. } => "FileData",
            Message::FileEnd { .. } => "FileEnd",
            Message::FileUnavailable { .. } => "FileUnavailable",
            Message::Ping { .. } => "Ping",
            Message::Pong { .. } => "Pong",
            Message::ChunkRequest { .. } => "ChunkRequest",
            Message::ChunkList { .. } => "ChunkList",
            Message::RangeRequest { .. } => "RangeRequest",
            Message::Clock { .. } => "Clock",
            Message::Backlog { .. } => "Backlog",
            Message::DigestRequest { .. } => "DigestRequest",
            Message::ChunkDigests { .. } => "ChunkDigests",
            Message::SummaryRequest { .. } => "SummaryRequest",
            Message::Summary { .. } => "Summary",
            Message::EntriesRequest { .. } => "EntriesRequest",
            Message::Entries { .. } => "Entries",
            Message::Forgotten { .. } => "Forgotten",
        }
    }

    /// An `Error` message; a `message` longer than [`MAX_TEXT`] is cut (at
    /// a character boundary) so that the refusal itself is always
    /// sendable.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error {
            code,
            message: truncate(message.into(), MAX_TEXT),
        }
    }

    /// Checks what every well-formed message satisfies, whatever the
    /// session state: the limits, sequence order within a page, sane
    /// entries. [`crate::encode`] refuses, and [`crate::FrameDecoder`]
    /// rejects, a message that fails this. Paths are not checked here:
    /// a [`RelPath`] cannot hold an invalid one.
    // Over 100 lines: one arm per message kind, so that a new kind's
    // limits are written next to the others'.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        match self {
            Message::Hello(h) => {
                check_host(&h.host)?;
                if h.capabilities.len() > MAX_CAPABILITIES {
                    return Err(InvalidMessage::TooManyCapabilities {
                        count: h.capabilities.len(),
                        max: MAX_CAPABILITIES,
                    });
                }
                for c in &h.capabilities {
                    if c.is_empty()
                        || c.len() > MAX_CAPABILITY_LEN
                        || !c.bytes().all(|b| b.is_ascii_graphic())
                    {
                        return Err(InvalidMessage::BadCapability {
                            name: c.escape_debug().to_string(),
                        });
                    }
                }
                Ok(())
            }
            Message::Error { message, .. } => check_text("Error message", message),
            Message::Changes { changes, upto, .. } => validate_page(changes, *upto),
            Message::FileData { offset, data, .. } => {
                if data.len() > MAX_CHUNK {
                    return Err(InvalidMessage::ChunkTooLarge {
                        len: data.len(),
                        max: MAX_CHUNK,
                    });
                }
                let fits = u64::try_from(data.len())
                    .ok()
                    .and_then(|n| offset.checked_add(n))
                    .is_some();
                if !fits {
                    return Err(InvalidMessage::ChunkPastEnd {
                        offset: *offset,
                        len: data.len(),
                    });
                }
                Ok(())
            }
            Message::FileUnavailable { reason, .. } => check_text("FileUnavailable reason", reason),
            Message::ChunkList { chunks, .. } => {
                if chunks.len() > MAX_CHUNK_LIST {
                    return Err(InvalidMessage::TooManyChunks {
                        count: chunks.len(),
                        max: MAX_CHUNK_LIST,
                    });
                }
                match chunks.iter().find(|c| c.len == 0) {
                    Some(_) => Err(InvalidMessage::EmptyChunk),
                    None => Ok(()),
                }
            }
            Message::ChunkDigests { digests, .. } => {
                if digests.len() > MAX_CHUNK_LIST {
                    return Err(InvalidMessage::TooManyChunks {
                        count: digests.len(),
                        max: MAX_CHUNK_LIST,
                    });
                }
                match digests.iter().find(|c| c.len == 0) {
                    Some(_) => Err(InvalidMessage::EmptyChunk),
                    None => Ok(()),
                }
            }
            Message::Forgotten { .. } => Ok(()),
            Message::RangeRequest { ranges, size, .. } => check_ranges(ranges, *size),
            Message::SummaryRequest { span, .. } | Message::EntriesRequest { span, .. } => {
                check_span(span)
            }
            Message::Summary { buckets, .. } => {
                if buckets.is_empty() || buckets.len() > MAX_BUCKETS {
                    return Err(InvalidMessage::BadBucketCount {
                        count: buckets.len(),
                        max: MAX_BUCKETS,
                    });
                }
                Ok(())
            }
            Message::Entries { entries, .. } => {
                if entries.len() > MAX_VERIFY_ENTRIES {
                    return Err(InvalidMessage::TooManyEntries {
                        count: entries.len(),
                        max: MAX_VERIFY_ENTRIES,
                    });
                }
                let mut prev: Option<&RelPath> = None;
                for c in entries {
                    if prev.is_some_and(|p| &c.path <= p) {
                        return Err(InvalidMessage::EntryOutOfSpan {
                            path: c.path.to_string(),
                        });
                    }
                    prev = Some(&c.path);
                    check_change(c)?;
                }
                Ok(())
            }
            Message::Pull { .. }
            | Message::Ack { .. }
            | Message::ChunkRequest { .. }
            | Message::DigestRequest { .. }
            | Message::FileRequest { .. }
            | Message::FileEnd { .. }
            | Message::Ping { .. }
            | Message::Pong { .. }
            | Message::Clock { .. }
            | Message::Backlog { .. } => Ok(()),
        }
    }
}

/// A span's bounds lie at or below its top, the lower below the upper.
/// (Whether an answer's paths lie in the span asked about is the
/// session's check: the message alone does not say which span it
/// answers.)
fn check_span(span: &Span) -> Result<(), InvalidMessage> {
    let inside = |p: &RelPath| p == &span.top || p.is_below(&span.top);
    let bad = |reason| {
        Err(InvalidMessage::BadSpan {
            top: span.top.to_string(),
            reason,
        })
    };
    if !span.after.iter().chain(span.upto.iter()).all(inside) {
        return bad("a bound lies outside the top");
    }
    if let (Some(a), Some(u)) = (&span.after, &span.upto) {
        if a >= u {
            return bad("the lower bound is not below the upper one");
        }
    }
    Ok(())
}

/// Ranges of a `RangeRequest`: at most [`MAX_RANGES`], none empty, in
/// order without overlap, all within the file.
fn check_ranges(ranges: &[(u64, u64)], size: u64) -> Result<(), InvalidMessage> {
    if ranges.len() > MAX_RANGES {
        return Err(InvalidMessage::TooManyRanges {
            count: ranges.len(),
            max: MAX_RANGES,
        });
    }
    let mut end = 0u64;
    for &(offset, len) in ranges {
        let fits = offset.checked_add(len).filter(|&e| e <= size);
        match fits {
            Some(e) if len > 0 && offset >= end => end = e,
            _ => return Err(InvalidMessage::BadRange { offset, len, size }),
        }
    }
    Ok(())
}

/// The checks on a page of changes, also applied by [`crate::paginate`] to
/// its input (without the count limit, which paging enforces).
pub(crate) fn validate_page(changes: &[(Seq, Change)], upto: Seq) -> Result<(), InvalidMessage> {
    if changes.len() > MAX_CHANGES_PER_PAGE {
        return Err(InvalidMessage::TooManyChanges {
            count: changes.len(),
            max: MAX_CHANGES_PER_PAGE,
        });
    }
    validate_changes(changes, upto)
}

/// Sequence order and entry sanity, for any number of changes.
pub(crate) fn validate_changes(changes: &[(Seq, Change)], upto: Seq) -> Result<(), InvalidMessage> {
    let mut prev: Seq = 0;
    for (seq, change) in changes {
        // Sequences start at 1 (0 means "nothing recorded"), and a page
        // lists each at most once, in order.
        if *seq <= prev {
            return Err(InvalidMessage::OutOfOrder { prev, next: *seq });
        }
        prev = *seq;
        check_change(change)?;
    }
    if prev > upto {
        return Err(InvalidMessage::BeyondUpto { seq: prev, upto });
    }
    Ok(())
}

fn check_change(c: &Change) -> Result<(), InvalidMessage> {
    check_host(c.entry.version.host.as_str())?;
    if c.entry.meta.mode & !0o7777 != 0 {
        return Err(InvalidMessage::BadMode {
            path: c.path.to_string(),
            mode: c.entry.meta.mode,
        });
    }
    if let Content::Symlink { target } = &c.entry.content {
        // symlink(2) takes a C string and refuses an empty one: no host
        // can have read such a target from its disk.
        if target.is_empty() || target.contains(&0) {
            return Err(InvalidMessage::BadSymlink {
                path: c.path.to_string(),
            });
        }
    }
    Ok(())
}

fn check_host(name: &str) -> Result<(), InvalidMessage> {
    if name.is_empty() || name.len() > MAX_HOST_LEN {
        return Err(InvalidMessage::BadHostName {
            name: truncate(name.escape_debug().to_string(), 80),
            max: MAX_HOST_LEN,
        });
    }
    Ok(())
}

fn check_text(field: &'static str, text: &str) -> Result<(), InvalidMessage> {
    if text.len() > MAX_TEXT {
        return Err(InvalidMessage::TextTooLong {
            field,
            len: text.len(),
            max: MAX_TEXT,
        });
    }
    Ok(())
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_stable_numbers() {
        let all = [
            (ErrorCode::ProtocolVersion, 1),
            (ErrorCode::UnknownHost, 2),
            (ErrorCode::NotAuthorised, 3),
            (ErrorCode::BadMessage, 4),
            (ErrorCode::Internal, 5),
            (ErrorCode::ShuttingDown, 6),
            (ErrorCode::ClockOffset, 7),
        ];
        for (code, n) in all {
            assert_eq!(u32::from(code), n);
            assert_eq!(ErrorCode::from(n), code);
        }
        assert_eq!(ErrorCode::from(99), ErrorCode::Other(99));
        assert_eq!(ErrorCode::from(0), ErrorCode::Other(0));
    }

    #[test]
    fn error_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT); // two bytes each
        let Message::Error { message, .. } = Message::error(ErrorCode::Internal, long) else {
            panic!("not an Error");
        };
        assert!(message.len() <= MAX_TEXT);
        assert!(message.len() >= MAX_TEXT - 1);
        assert!(
            Message::error(ErrorCode::Internal, "x".repeat(MAX_TEXT + 1))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn file_data_must_fit_a_chunk_and_u64() {
        let ok = Message::FileData {
            id: 1,
            offset: 0,
            data: vec![0; MAX_CHUNK],
        };
        assert_eq!(ok.validate(), Ok(()));
        let big = Message::FileData {
            id: 1,
            offset: 0,
            data: vec![0; MAX_CHUNK + 1],
        };
        assert_eq!(
            big.validate(),
            Err(InvalidMessage::ChunkTooLarge {
                len: MAX_CHUNK + 1,
                max: MAX_CHUNK
            })
        );
        let past = Message::FileData {
            id: 1,
            offset: u64::MAX,
            data: vec![0; 2],
        };
        assert!(matches!(
            past.validate(),
            Err(InvalidMessage::ChunkPastEnd { .. })
        ));
    }

    #[test]
    fn ranges_must_be_ordered_non_empty_and_inside_the_file() {
        let req = |ranges: Vec<(u64, u64)>| Message::RangeRequest {
            id: 1,
            path: RelPath::new(b"f".to_vec()).expect("path"),
            hash: [0; 32],
            size: 100,
            ranges,
        };
        assert_eq!(req(vec![(0, 10), (10, 90)]).validate(), Ok(()));
        for bad in [
            vec![(0, 0)],
            vec![(10, 5), (0, 5)],
            vec![(0, 10), (5, 10)],
            vec![(95, 10)],
            vec![(u64::MAX, 2)],
        ] {
            assert!(
                matches!(
                    req(bad.clone()).validate(),
                    Err(InvalidMessage::BadRange { .. })
                ),
                "{bad:?}"
            );
        }
        let empty = Message::ChunkList {
            id: 1,
            chunks: vec![Chunk {
                len: 0,
                hash: [0; 32],
            }],
            last: true,
        };
        assert_eq!(empty.validate(), Err(InvalidMessage::EmptyChunk));
        let empty = Message::ChunkDigests {
            id: 1,
            digests: vec![Digest {
                len: 0,
                prefix: [0; 8],
            }],
            last: true,
        };
        assert_eq!(empty.validate(), Err(InvalidMessage::EmptyChunk));
        let too_many = Message::ChunkDigests {
            id: 1,
            digests: vec![
                Digest {
                    len: 1,
                    prefix: [0; 8],
                };
                MAX_CHUNK_LIST + 1
            ],
            last: true,
        };
        assert!(matches!(
            too_many.validate(),
            Err(InvalidMessage::TooManyChunks { .. })
        ));
    }

    #[test]
    fn verify_messages_have_sane_spans_buckets_and_pages() {
        let path = |s: &str| RelPath::new(s.as_bytes().to_vec()).expect("path");
        let span = |after: Option<&str>, upto: Option<&str>| Span {
            top: path("srv"),
            after: after.map(path),
            upto: upto.map(path),
        };
        let ask = |s: Span| Message::SummaryRequest { id: 1, span: s };
        assert_eq!(ask(span(None, None)).validate(), Ok(()));
        assert_eq!(ask(span(Some("srv"), Some("srv/b"))).validate(), Ok(()));
        for bad in [
            span(Some("etc/a"), None),
            span(None, Some("srv-x")),
            span(Some("srv/b"), Some("srv/a")),
            span(Some("srv/a"), Some("srv/a")),
        ] {
            assert!(
                matches!(
                    ask(bad.clone()).validate(),
                    Err(InvalidMessage::BadSpan { .. })
                ),
                "{bad:?}"
            );
            let entries = Message::EntriesRequest { id: 1, span: bad };
            assert!(matches!(
                entries.validate(),
                Err(InvalidMessage::BadSpan { .. })
            ));
        }
        let bucket = Bucket {
            upto: None,
            count: 1,
            hash: [0; 32],
        };
        for (n, ok) in [
            (0, false),
            (1, true),
            (MAX_BUCKETS, true),
            (MAX_BUCKETS + 1, false),
        ] {
            let m = Message::Summary {
                id: 1,
                buckets: vec![bucket.clone(); n],
            };
            assert_eq!(m.validate().is_ok(), ok, "{n} buckets");
        }
        let change = |p: &str| Change {
            path: path(p),
            entry: omirr_core::Entry {
                content: Content::Dir,
                meta: Default::default(),
                version: omirr_core::Version {
                    ts: Timestamp(1),
                    host: omirr_core::HostId::new("a"),
                },
                base: None,
            },
        };
        let page = |entries: Vec<Change>| Message::Entries {
            id: 1,
            entries,
            complete: true,
        };
        assert_eq!(page(vec![change("a"), change("b")]).validate(), Ok(()));
        assert!(matches!(
            page(vec![change("b"), change("a")]).validate(),
            Err(InvalidMessage::EntryOutOfSpan { .. })
        ));
        assert!(matches!(
            page(vec![change("a"), change("a")]).validate(),
            Err(InvalidMessage::EntryOutOfSpan { .. })
        ));
        let mut bad_mode = change("a");
        bad_mode.entry.meta.mode = 0o170000;
        assert!(matches!(
            page(vec![bad_mode]).validate(),
            Err(InvalidMessage::BadMode { .. })
        ));
        assert!(matches!(
            page(vec![change("a"); MAX_VERIFY_ENTRIES + 1]).validate(),
            Err(InvalidMessage::TooManyEntries { .. })
        ));
    }

    #[test]
    fn hello_limits() {
        let mut h = Hello::new("alpha");
        assert_eq!(Message::Hello(h.clone()).validate(), Ok(()));
        h.capabilities = vec!["has space".into()];
        assert!(matches!(
            Message::Hello(h.clone()).validate(),
            Err(InvalidMessage::BadCapability { .. })
        ));
        h.capabilities = vec!["c".into(); MAX_CAPABILITIES + 1];
        assert!(matches!(
            Message::Hello(h.clone()).validate(),
            Err(InvalidMessage::TooManyCapabilities { .. })
        ));
        h.capabilities.clear();
        h.host = String::new();
        assert!(matches!(
            Message::Hello(h.clone()).validate(),
            Err(InvalidMessage::BadHostName { .. })
        ));
        h.host = "h".repeat(MAX_HOST_LEN + 1);
        assert!(matches!(
            Message::Hello(h).validate(),
            Err(InvalidMessage::BadHostName { .. })
        ));
    }
}
