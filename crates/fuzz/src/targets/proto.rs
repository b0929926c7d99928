//! Frames and messages: a byte stream through [`FrameDecoder`], fed in
//! pieces of a size the first byte chooses.
//!
//! Checked for every message that decodes: it re-encodes, and the
//! re-encoding decodes to the same message; the handshake functions take
//! it; a `Changes` page re-paginates into pages that all encode; the
//! `Error` a handshake failure would send encodes. The decoder never
//! buffers more than it was fed.

use super::{Target, KIB, MIB};
use crate::gen::{Fnv, Rng};
use omirr_proto::{
    check_hello, encode, expect_hello, negotiate, paginate, Change, Chunk, Content, DecodeError,
    Digest, Entry, ErrorCode, FrameDecoder, Hello, HostId, Message, Meta, RelPath, Timestamp,
    Version, CAPABILITIES, FRAME_HEADER_LEN, MAX_CHUNK, MAX_FRAME,
};

/// This target, for [`super::all`].
pub fn target() -> Target {
    Target {
        name: "proto",
        about: "frames and messages: FrameDecoder fed in pieces, round trips, paging, handshake",
        run,
        seeds,
        big_seeds,
        dict: DICT,
        shape,
        text: false,
        max_len: 64 * KIB,
        bound,
        bound_text: "2 x input + 2 x MAX_FRAME (8 MiB) + 1 MiB: the decoder holds at most \
                     what it was fed (FrameDecoder docs) and decoding one payload claims at \
                     most MAX_FRAME (proto/src/codec.rs); the second MAX_FRAME is the \
                     round-trip check's copy",
        init: super::nothing,
    }
}

fn bound(len: usize) -> usize {
    2 * len + 2 * MAX_FRAME + MIB
}

/// The entry point: `data[0]` chooses how the rest is cut into pieces.
pub fn run(data: &[u8]) -> u64 {
    let Some((&sel, stream)) = data.split_first() else {
        return 0;
    };
    let piece = match sel % 4 {
        0 => stream.len().max(1),
        1 => 1,
        2 => 1 + usize::from(sel >> 2),
        _ => 4096,
    };
    let mut sig = Fnv::default();
    let mut d = FrameDecoder::new();
    for part in stream.chunks(piece) {
        d.feed(part);
        assert!(
            d.buffered() <= stream.len(),
            "the decoder holds {} bytes of a {}-byte stream",
            d.buffered(),
            stream.len()
        );
        loop {
            match d.next_message() {
                Ok(Some(m)) => {
                    sig.str(m.kind());
                    check_message(m);
                }
                Ok(None) => break,
                Err(e) => {
                    sig.str(error_kind(&e));
                    match e {
                        // The header stays: the error repeats; the
                        // stream is lost.
                        DecodeError::FrameTooLarge { .. } | DecodeError::EmptyFrame => {
                            assert_eq!(d.next_message().err(), Some(e));
                            return sig.finish();
                        }
                        // The payload is consumed: framing goes on.
                        _ => {}
                    }
                }
            }
        }
    }
    if let Err(e) = d.finish() {
        sig.str(error_kind(&e));
    }
    sig.finish()
}

fn error_kind(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::FrameTooLarge { .. } => "too large",
        DecodeError::EmptyFrame => "empty",
        DecodeError::Truncated { .. } => "truncated",
        DecodeError::Malformed(s) if s.contains("past the end") => "malformed: short",
        DecodeError::Malformed(s) if s.contains("variant") => "malformed: variant",
        DecodeError::Malformed(s) if s.contains("path") => "malformed: path",
        DecodeError::Malformed(s) if s.contains("limit") => "malformed: limit",
        DecodeError::Malformed(_) => "malformed",
        DecodeError::TrailingBytes { .. } => "trailing",
        DecodeError::Invalid { kind, .. } => kind,
    }
}

/// What must hold of every message the decoder hands out.
fn check_message(m: Message) {
    let frame = match encode(&m) {
        Ok(f) => f,
        Err(e) => panic!("a decoded {} does not re-encode: {e}", m.kind()),
    };
    let mut d = FrameDecoder::new();
    d.feed(&frame);
    match d.next_message() {
        Ok(Some(again)) => assert_eq!(again, m, "the re-encoded message decodes differently"),
        other => panic!("a re-encoded {} does not decode: {other:?}", m.kind()),
    }
    if let Message::Changes {
        changes,
        upto,
        done,
    } = &m
    {
        // Paging may refuse one change too big for any page; whatever
        // pages it makes must be sendable.
        if let Ok(pages) = paginate(changes.clone(), *upto, *done) {
            for p in &pages {
                if let Err(e) = encode(p) {
                    panic!("paginate made a page that does not encode: {e}");
                }
            }
        }
    }
    match expect_hello(m) {
        Ok(h) => {
            negotiate(CAPABILITIES, &h.capabilities);
            if let Err(e) = check_hello(&h, "alpha") {
                if let Some(reply) = e.to_message() {
                    if let Err(err) = encode(&reply) {
                        panic!("the refusal of a Hello does not encode: {err}");
                    }
                }
            }
        }
        Err(e) => {
            if let Some(reply) = e.to_message() {
                if let Err(err) = encode(&reply) {
                    panic!("a handshake refusal does not encode: {err}");
                }
            }
        }
    }
}

fn path(s: &str) -> RelPath {
    match RelPath::new(s.as_bytes().to_vec()) {
        Ok(p) => p,
        Err(_) => RelPath::root(),
    }
}

fn change(p: &str, content: Content, ts: u64, host: &str) -> Change {
    Change {
        path: path(p),
        entry: Entry {
            content,
            meta: Meta {
                mode: 0o644,
                uid: 1000,
                gid: 100,
                mtime_ns: 1_700_000_000_000_000_000,
                owner: omirr_core::Name::new(b"www-data").unwrap_or_default(),
                group: omirr_core::Name::default(),
                ..Default::default()
            },
            version: Version {
                ts: Timestamp(ts),
                host: HostId::new(host),
            },
            base: None,
        },
    }
}

/// A change of each kind.
pub fn sample_changes() -> Vec<Change> {
    vec![
        change(
            "srv/www/index.html",
            Content::File {
                size: 1234,
                hash: [7; 32],
            },
            1_700_000_000_000_000_001,
            "alpha",
        ),
        change("srv/www", Content::Dir, 5, "beta"),
        change(
            "srv/www/link",
            Content::Symlink {
                target: b"../target".to_vec(),
            },
            u64::MAX,
            "gamma.example",
        ),
        change("srv/www/old", Content::Deleted, 0, "a"),
    ]
}

fn messages() -> Vec<Message> {
    let changes = sample_changes();
    vec![
        Message::Hello(Hello::new("alpha")),
        Message::Hello(Hello {
            protocol: 2,
            host: "beta".into(),
            capabilities: vec!["chunks".into(), "x-future".into()],
        }),
        Message::error(ErrorCode::NotAuthorised, "not yours"),
        Message::Error {
            code: ErrorCode::Other(77),
            message: String::new(),
        },
        Message::Pull {
            after: 0,
            own_after: Timestamp(0),
        },
        Message::Pull {
            after: 300,
            own_after: Timestamp(u64::MAX),
        },
        Message::Clock {
            wall: 1_700_000_000_000_000_000,
            index: 42,
        },
        Message::Backlog {
            upto: 3000,
            changes: 2990,
            files: 2900,
            bytes: 1 << 33,
        },
        Message::Changes {
            changes: changes
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, c)| (i as u64 + 1, c))
                .collect(),
            upto: 10,
            done: true,
        },
        Message::Changes {
            changes: vec![(7, changes[2].clone())],
            upto: 7,
            done: false,
        },
        Message::Changes {
            changes: Vec::new(),
            upto: u64::MAX,
            done: false,
        },
        Message::Ack { upto: 99 },
        Message::FileRequest {
            id: 1,
            path: path("srv/www/index.html"),
            hash: [1; 32],
            size: 1234,
        },
        Message::FileData {
            id: 1,
            offset: 0,
            data: b"hello, world".to_vec(),
        },
        Message::FileData {
            id: 2,
            offset: u64::MAX - 3,
            data: vec![0; 3],
        },
        Message::FileEnd { id: 1 },
        Message::FileUnavailable {
            id: 3,
            reason: "changed while sending".into(),
        },
        Message::Ping { nonce: 0xdead_beef },
        Message::Pong { nonce: 1 },
        Message::ChunkRequest {
            id: 4,
            path: path("big.iso"),
            hash: [2; 32],
            size: 1 << 30,
        },
        Message::ChunkList {
            id: 4,
            chunks: vec![
                Chunk {
                    len: 65536,
                    hash: [3; 32],
                },
                Chunk {
                    len: 1,
                    hash: [4; 32],
                },
            ],
            last: true,
        },
        Message::RangeRequest {
            id: 5,
            path: path("big.iso"),
            hash: [2; 32],
            size: 1 << 30,
            ranges: vec![(0, 10), (65536, 4096)],
        },
        Message::DigestRequest {
            id: 6,
            path: path("big.iso"),
            hash: [2; 32],
            size: 1 << 30,
        },
        Message::ChunkDigests {
            id: 6,
            digests: vec![
                Digest {
                    len: 65536,
                    prefix: [3; 8],
                },
                Digest {
                    len: 1,
                    prefix: [4; 8],
                },
            ],
            last: true,
        },
        Message::SummaryRequest {
            id: 7,
            span: omirr_proto::Span {
                top: path("srv/www"),
                after: Some(path("srv/www/a")),
                upto: None,
            },
        },
        Message::Summary {
            id: 7,
            buckets: vec![
                omirr_proto::Bucket {
                    upto: Some(path("srv/www/m")),
                    count: 65,
                    hash: [5; 32],
                },
                omirr_proto::Bucket {
                    upto: None,
                    count: 0,
                    hash: [6; 32],
                },
            ],
        },
        Message::EntriesRequest {
            id: 8,
            span: omirr_proto::Span {
                top: path("srv/www"),
                after: None,
                upto: Some(path("srv/www/m")),
            },
        },
        Message::Entries {
            id: 8,
            entries: vec![changes[1].clone(), changes[0].clone()],
            complete: false,
        },
    ]
}

/// The payload (frame without header) of each message.
fn payloads(msgs: Vec<Message>) -> Vec<Vec<u8>> {
    msgs.iter()
        .filter_map(|m| encode(m).ok())
        .map(|f| f[FRAME_HEADER_LEN..].to_vec())
        .collect()
}

fn seeds() -> Vec<Vec<u8>> {
    payloads(messages())
}

fn big_seeds() -> Vec<Vec<u8>> {
    let many: Vec<(u64, Change)> = (0..4000u64)
        .map(|i| {
            let c = &sample_changes()[(i % 4) as usize];
            let mut c = c.clone();
            c.path = path(&format!("d{}/f{i}", i % 37));
            (i + 1, c)
        })
        .collect();
    payloads(vec![
        Message::FileData {
            id: 9,
            offset: 0,
            data: vec![0xab; MAX_CHUNK],
        },
        Message::Changes {
            changes: many,
            upto: 5000,
            done: true,
        },
        Message::ChunkList {
            id: 9,
            chunks: vec![
                Chunk {
                    len: 1 << 16,
                    hash: [5; 32],
                };
                20_000
            ],
            last: false,
        },
    ])
}

/// Varints and lengths bincode reads, variant numbers, path pieces.
const DICT: &[&[u8]] = &[
    &[0xfb],
    &[0xfc],
    &[0xfd],
    &[0xfb, 0xff, 0xff],
    &[0xfc, 0xff, 0xff, 0xff, 0xff],
    &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    &[0xfc, 0x00, 0x00, 0x40, 0x00],
    &[0xfc, 0x01, 0x00, 0x40, 0x00],
    &[0, 0, 0, 0],
    &[0x00, 0x40, 0x00, 0x00],
    &[0x00, 0x40, 0x00, 0x01],
    &[0xff, 0xff, 0xff, 0xff],
    b"..",
    b"/",
    b"a/",
    b"\0",
    b"chunks",
    b"alpha",
    &[13],
    &[14],
    &[255, 0],
];

/// Puts the (mutated) payload in a frame, usually with a true header, and
/// sometimes more frames around it; the first byte picks the feeding.
fn shape(rng: &mut Rng, body: Vec<u8>, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![rng.byte()];
    let frames = 1 + rng.size(3);
    let main = rng.below(frames);
    for i in 0..frames {
        let payload: &[u8] = if i == main {
            &body
        } else {
            corpus
                .get(rng.below(corpus.len()))
                .map_or(&[][..], |v| &v[..])
        };
        let len = payload.len() as u32;
        let header = match rng.below(40) {
            0 => rng.next_u64() as u32,
            1 => len.wrapping_add(1 + rng.below(8) as u32),
            2 => len.saturating_sub(1 + rng.below(8) as u32),
            3 => MAX_FRAME as u32 + rng.below(2) as u32,
            _ => len,
        };
        out.extend_from_slice(&header.to_be_bytes());
        out.extend_from_slice(payload);
    }
    if rng.one_in(20) {
        let cut = rng.below(out.len() + 1).max(1);
        out.truncate(cut);
    }
    out
}
