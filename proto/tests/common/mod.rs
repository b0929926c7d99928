//! Proptest strategies for what travels, shared by the test files.
#![allow(dead_code)] // each test file uses a different part

use omirr_proto::{
    Change, Content, Entry, ErrorCode, Hello, HostId, Message, Meta, RelPath, Seq, Timestamp,
    Version,
};
use omirr_testkit::p;
use proptest::prelude::*;

/// One byte of a name: mostly letters, often the bytes that break naive
/// code (newline, non-UTF-8, control), never `/` or NUL.
fn name_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => b'a'..=b'z',
        1 => Just(b'\n'),
        1 => Just(b'.'),
        2 => 0x80u8..=0xff,
        2 => any::<u8>(),
    ]
    .prop_filter("no separator or NUL", |b| *b != b'/' && *b != 0)
}

fn component() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(name_byte(), 1..10).prop_map(|mut c| {
        // "." and ".." are not names; "..x" is.
        if c == b"." || c == b".." {
            c.push(b'x');
        }
        c
    })
}

/// Any valid path, the root included.
pub fn rel_path() -> impl Strategy<Value = RelPath> {
    prop::collection::vec(component(), 0..5)
        .prop_map(|cs| RelPath::new(cs.join(&b'/')).expect("valid by construction"))
}

pub fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9.-]{0,20}",
        prop::collection::vec(any::<char>(), 1..12).prop_map(String::from_iter),
    ]
}

pub fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        (any::<u64>(), any::<[u8; 32]>()).prop_map(|(size, hash)| Content::File { size, hash }),
        Just(Content::Dir),
        prop::collection::vec(1u8..=255, 1..64).prop_map(|target| Content::Symlink { target }),
        Just(Content::Deleted),
    ]
}

/// A user or group name: any bytes but NUL, up to the limit.
pub fn name() -> impl Strategy<Value = omirr_proto::Name> {
    proptest::collection::vec(1u8..=255, 0..=omirr_proto::Name::MAX)
        .prop_map(|b| omirr_proto::Name::new(&b).expect("a valid name"))
}

pub fn entry() -> impl Strategy<Value = Entry> {
    (
        content(),
        (0u32..=0o7777, any::<u32>(), any::<u32>(), any::<i64>()),
        (name(), name()),
        any::<u64>(),
        host(),
    )
        .prop_map(
            |(content, (mode, uid, gid, mtime_ns), (owner, group), ts, host)| Entry {
                content,
                meta: Meta {
                    mode,
                    uid,
                    gid,
                    mtime_ns,
                    owner,
                    group,
                    ..Default::default()
                },
                version: Version {
                    ts: Timestamp(ts),
                    host: HostId::new(&host),
                },
                base: None,
            },
        )
}

pub fn change() -> impl Strategy<Value = Change> {
    (rel_path(), entry()).prop_map(|(path, entry)| Change { path, entry })
}

/// Changes numbered in increasing order from 1, and an `upto` at or after
/// the last.
pub fn numbered(
    changes: impl Strategy<Value = Vec<(u64, Change)>>,
) -> impl Strategy<Value = (Vec<(Seq, Change)>, Seq)> {
    (changes, 0u64..5).prop_map(|(cs, extra)| {
        let mut seq = 0;
        let numbered: Vec<(Seq, Change)> = cs
            .into_iter()
            .map(|(gap, c)| {
                seq += gap;
                (seq, c)
            })
            .collect();
        (numbered, seq + extra)
    })
}

pub fn changes_page() -> impl Strategy<Value = (Vec<(Seq, Change)>, Seq)> {
    numbered(prop::collection::vec((1u64..1000, change()), 0..12))
}

/// A span of a top: bounds below it, the lower before the upper.
pub fn span() -> impl Strategy<Value = omirr_proto::Span> {
    (
        rel_path(),
        prop::option::of(component()),
        prop::option::of(component()),
    )
        .prop_map(|(top, a, u)| {
            let (after, upto) = (
                a.and_then(|c| top.join(&c).ok()),
                u.and_then(|c| top.join(&c).ok()),
            );
            match (&after, &upto) {
                (Some(x), Some(y)) if x >= y => omirr_proto::Span {
                    top,
                    after: None,
                    upto,
                },
                _ => omirr_proto::Span { top, after, upto },
            }
        })
}

/// 1 to [`omirr_proto::MAX_BUCKETS`] buckets.
pub fn buckets() -> impl Strategy<Value = Vec<omirr_proto::Bucket>> {
    prop::collection::vec(
        (
            prop::option::of(rel_path()),
            any::<u64>(),
            any::<[u8; 32]>(),
        )
            .prop_map(|(upto, count, hash)| omirr_proto::Bucket { upto, count, hash }),
        1..=omirr_proto::MAX_BUCKETS,
    )
}

/// A page of entries in strictly increasing path order.
pub fn entries() -> impl Strategy<Value = Vec<Change>> {
    prop::collection::vec(change(), 0..6).prop_map(|mut cs| {
        cs.sort_by(|a, b| a.path.cmp(&b.path));
        cs.dedup_by(|a, b| a.path == b.path);
        cs
    })
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter)
}

/// Any valid message, every variant.
pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u32>(),
            host(),
            prop::collection::vec("[a-z][a-z0-9-]{0,15}", 0..5)
        )
            .prop_map(|(protocol, host, capabilities)| Message::Hello(Hello {
                protocol,
                host,
                capabilities
            })),
        (any::<u32>(), text()).prop_map(|(code, message)| Message::Error {
            code: ErrorCode::from(code),
            message
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(after, own)| Message::Pull {
            after,
            own_after: Timestamp(own)
        }),
        (changes_page(), any::<bool>()).prop_map(|((changes, upto), done)| Message::Changes {
            changes,
            upto,
            done
        }),
        any::<u64>().prop_map(|upto| Message::Ack { upto }),
        (any::<u64>(), rel_path(), any::<[u8; 32]>(), any::<u64>()).prop_map(
            |(id, path, hash, size)| Message::FileRequest {
                id,
                path,
                hash,
                size
            }
        ),
        (
            any::<u64>(),
            0..=u64::MAX - 4096,
            prop::collection::vec(any::<u8>(), 0..2048)
        )
            .prop_map(|(id, offset, data)| Message::FileData { id, offset, data }),
        any::<u64>().prop_map(|id| Message::FileEnd { id }),
        (any::<u64>(), text()).prop_map(|(id, reason)| Message::FileUnavailable { id, reason }),
        any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
        (any::<u64>(), any::<u64>()).prop_map(|(wall, index)| Message::Clock { wall, index }),
        (any::<u64>(), rel_path(), any::<[u8; 32]>(), any::<u64>()).prop_map(
            |(id, path, hash, size)| Message::DigestRequest {
                id,
                path,
                hash,
                size
            }
        ),
        (
            any::<u64>(),
            prop::collection::vec((1u32..=1 << 18, any::<[u8; 8]>()), 0..20),
            any::<bool>()
        )
            .prop_map(|(id, digests, last)| Message::ChunkDigests {
                id,
                digests: digests
                    .into_iter()
                    .map(|(len, prefix)| omirr_proto::Digest { len, prefix })
                    .collect(),
                last
            }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(upto, changes, files, bytes)| Message::Backlog {
                upto,
                changes,
                files,
                bytes
            }
        ),
        (any::<u64>(), span()).prop_map(|(id, span)| Message::SummaryRequest { id, span }),
        (any::<u64>(), buckets()).prop_map(|(id, buckets)| Message::Summary { id, buckets }),
        (any::<u64>(), span()).prop_map(|(id, span)| Message::EntriesRequest { id, span }),
        (any::<u64>(), entries(), any::<bool>()).prop_map(|(id, entries, complete)| {
            Message::Entries {
                id,
                entries,
                complete,
            }
        }),
    ]
}

pub fn sample_change(path: &str) -> Change {
    Change {
        path: p(path),
        entry: Entry {
            content: Content::File {
                size: 4,
                hash: [7; 32],
            },
            meta: Meta {
                mode: 0o644,
                uid: 1000,
                gid: 1000,
                mtime_ns: 1_700_000_000_000_000_000,
                ..Default::default()
            },
            version: Version {
                ts: Timestamp(1_700_000_000_000_000_001),
                host: HostId::new("alpha"),
            },
            base: None,
        },
    }
}

/// One message of each variant. The match below has no wildcard, so a new
/// variant fails to compile here until it has a sample.
pub fn one_of_each() -> Vec<Message> {
    let all = vec![
        Message::Hello(Hello::new("alpha")),
        Message::error(ErrorCode::BadMessage, "no"),
        Message::Pull {
            after: 0,
            own_after: Timestamp(7),
        },
        Message::Changes {
            changes: vec![(1, sample_change("a/\n\u{e9}")), (5, sample_change("b"))],
            upto: 9,
            done: true,
        },
        Message::Ack { upto: 9 },
        Message::FileRequest {
            id: 1,
            path: p("a/b"),
            hash: [1; 32],
            size: 3,
        },
        Message::FileData {
            id: 1,
            offset: 0,
            data: b"abc".to_vec(),
        },
        Message::FileEnd { id: 1 },
        Message::FileUnavailable {
            id: 2,
            reason: "changed while being read".into(),
        },
        Message::Ping { nonce: 42 },
        Message::Pong { nonce: 42 },
        Message::ChunkRequest {
            id: 3,
            path: p("big"),
            hash: [2; 32],
            size: 5 << 20,
        },
        Message::ChunkList {
            id: 3,
            chunks: vec![
                omirr_proto::Chunk {
                    len: 70_000,
                    hash: [3; 32],
                },
                omirr_proto::Chunk {
                    len: 1,
                    hash: [4; 32],
                },
            ],
            last: true,
        },
        Message::RangeRequest {
            id: 4,
            path: p("big"),
            hash: [2; 32],
            size: 5 << 20,
            ranges: vec![(0, 10), (70_000, 65_536)],
        },
        Message::DigestRequest {
            id: 5,
            path: p("big"),
            hash: [2; 32],
            size: 5 << 20,
        },
        Message::ChunkDigests {
            id: 5,
            digests: vec![
                omirr_proto::Digest {
                    len: 70_000,
                    prefix: [3; 8],
                },
                omirr_proto::Digest {
                    len: 1,
                    prefix: [4; 8],
                },
            ],
            last: true,
        },
        Message::SummaryRequest {
            id: 6,
            span: omirr_proto::Span {
                top: p("srv/www"),
                after: Some(p("srv/www/a")),
                upto: None,
            },
        },
        Message::Summary {
            id: 6,
            buckets: vec![
                omirr_proto::Bucket {
                    upto: Some(p("srv/www/m")),
                    count: 40,
                    hash: [8; 32],
                },
                omirr_proto::Bucket {
                    upto: None,
                    count: 0,
                    hash: [9; 32],
                },
            ],
        },
        Message::EntriesRequest {
            id: 7,
            span: omirr_proto::Span {
                top: p("srv/www"),
                after: Some(p("srv/www/a")),
                upto: Some(p("srv/www/m")),
            },
        },
        Message::Entries {
            id: 7,
            entries: vec![sample_change("srv/www/b"), sample_change("srv/www/c\n")],
            complete: true,
        },
        Message::Forgotten {
            forgot_seq: 7,
            forgot_below: omirr_proto::Timestamp(1_700_000_000_000_000_000),
            cursor: 3,
            last: 12,
        },
    ];
    for m in &all {
        match m {
            Message::Hello(_)
            | Message::Error { .. }
            | Message::Pull { .. }
            | Message::Changes { .. }
            | Message::Ack { .. }
            | Message::FileRequest { .. }
            | Message::FileData { .. }
            | Message::FileEnd { .. }
            | Message::FileUnavailable { .. }
            | Message::Ping { .. }
            | Message::Pong { .. }
            | Message::ChunkRequest { .. }
            | Message::ChunkList { .. }
            | Message::RangeRequest { .. }
            | Message::Clock { .. }
            | Message::Backlog { .. }
            | Message::DigestRequest { .. }
            | Message::ChunkDigests { .. }
            | Message::SummaryRequest { .. }
            | Message::Summary { .. }
            | Message::EntriesRequest { .. }
            | Message::Entries { .. } => {}
            Message::Forgotten { .. } => {}
        }
    }
    all
}

/// Feeds `bytes` in one piece and pulls every message, stopping at the
/// first error.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, omirr_proto::DecodeError> {
    let mut d = omirr_proto::FrameDecoder::new();
    d.feed(bytes);
    let mut out = Vec::new();
    while let Some(m) = d.next_message()? {
        out.push(m);
    }
    d.finish()?;
    Ok(out)
}

/// A frame header declaring `len` bytes.
pub fn header(len: u32) -> [u8; 4] {
    len.to_be_bytes()
}
