//! The index's record codec: the bytes of an `entries` value (an entry
//! and its sequence), an `aside` value (a set-aside change) and a
//! `chunk_lists` value, decoded as the index decodes them when it reads
//! its tables (`omirr_index::fuzzing`, `omirr_chunk::decode`). `data[0]`
//! chooses the kind of record.
//!
//! Checked: what decodes re-encodes, and the re-encoding decodes to the
//! same value (a chunk list to the same bytes).

use super::{Target, KIB};
use crate::gen::{Fnv, Rng};
use omirr_core::{Change, Content};
use omirr_index::fuzzing::{decode_aside, decode_entry, encode_aside, encode_entry, CODEC_LIMIT};
use omirr_index::Aside;

/// This target, for [`super::all`].
pub fn target() -> Target {
    Target {
        name: "index",
        about: "the index's stored records: entries, set-aside changes, chunk lists",
        run,
        seeds,
        big_seeds,
        dict: DICT,
        shape,
        text: false,
        max_len: 64 * KIB,
        bound,
        bound_text: "2 x the codec's limit (1 MiB, crates/index/src/codec.rs) + 2 x input: \
                     one value decoded within the limit, and its re-encoding for the \
                     round-trip check",
        init: super::nothing,
    }
}

fn bound(len: usize) -> usize {
    2 * CODEC_LIMIT + 2 * len + 64 * KIB
}

/// The entry point: `data[0]` chooses the record (an entry, a set-aside
/// change or a chunk list) that the rest is decoded as; what decodes must
/// re-encode and decode to the same value.
pub fn run(data: &[u8]) -> u64 {
    let Some((&kind, bytes)) = data.split_first() else {
        return 0;
    };
    let mut sig = Fnv::default();
    match kind % 3 {
        0 => match decode_entry(bytes) {
            Ok((seq, entry)) => {
                sig.str("entry").str(entry.content.kind());
                let again = match encode_entry(seq, &entry) {
                    Ok(b) => b,
                    Err(e) => panic!("a decoded entry does not re-encode: {e}"),
                };
                assert!(again.len() <= bytes.len(), "re-encoding grew");
                match decode_entry(&again) {
                    Ok(back) => assert_eq!(back, (seq, entry)),
                    Err(e) => panic!("a re-encoded entry does not decode: {e}"),
                }
            }
            Err(e) => {
                sig.str("entry error").str(error_kind(&e.to_string()));
            }
        },
        1 => match decode_aside(bytes) {
            Ok(aside) => {
                sig.str("aside").str(aside.change.entry.content.kind());
                let again = match encode_aside(&aside) {
                    Ok(b) => b,
                    Err(e) => panic!("a decoded aside does not re-encode: {e}"),
                };
                match decode_aside(&again) {
                    Ok(back) => assert_eq!(back, aside),
                    Err(e) => panic!("a re-encoded aside does not decode: {e}"),
                }
            }
            Err(e) => {
                sig.str("aside error").str(error_kind(&e.to_string()));
            }
        },
        _ => match omirr_chunk::decode(bytes) {
            Some(chunks) => {
                sig.str("chunks").num(chunks.len().min(3) as u64);
                assert_eq!(omirr_chunk::encode(&chunks), bytes, "chunk list round trip");
            }
            None => {
                sig.str("chunks error").num((bytes.len() % 36 == 0) as u64);
            }
        },
    }
    sig.finish()
}

fn error_kind(s: &str) -> &str {
    s.split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
}

fn with_kind(kind: u8, mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.insert(0, kind);
    bytes
}

fn seeds() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (i, c) in super::proto::sample_changes().into_iter().enumerate() {
        if let Ok(b) = encode_entry(i as u64 + 1, &c.entry) {
            v.push(with_kind(0, b));
        }
        if let Ok(b) = encode_entry(u64::MAX, &c.entry) {
            v.push(with_kind(0, b));
        }
        let aside = Aside {
            change: c,
            reason: "permission denied (os error 13)".into(),
            attempts: i as u32,
            since: 1_700_000_000,
        };
        if let Ok(b) = encode_aside(&aside) {
            v.push(with_kind(1, b));
        }
    }
    let chunks: Vec<omirr_core::Chunk> = (1..4u8)
        .map(|i| omirr_core::Chunk {
            len: u32::from(i) * 4096,
            hash: [i; 32],
        })
        .collect();
    v.push(with_kind(2, omirr_chunk::encode(&chunks)));
    v.push(vec![2]);
    v
}

fn big_seeds() -> Vec<Vec<u8>> {
    let mut c: Change = super::proto::sample_changes().remove(2);
    c.entry.content = Content::Symlink {
        target: vec![b'x'; 4096],
    };
    let aside = Aside {
        change: c,
        reason: "r".repeat(100_000),
        attempts: u32::MAX,
        since: u64::MAX,
    };
    encode_aside(&aside)
        .map(|b| vec![with_kind(1, b)])
        .unwrap_or_default()
}

/// bincode varints and lengths.
const DICT: &[&[u8]] = &[
    &[0xfb],
    &[0xfc],
    &[0xfd],
    &[0xfb, 0xff, 0xff],
    &[0xfc, 0xff, 0xff, 0xff, 0xff],
    &[0xfc, 0x00, 0x00, 0x10, 0x00],
    &[0xfc, 0x01, 0x00, 0x10, 0x00],
    &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    b"..",
    b"/",
    b"\0",
    &[0, 0, 4, 0],
    &[1, 0, 4, 0],
];

/// Sometimes changes the record kind, so that one kind's bytes are read
/// as another's.
fn shape(rng: &mut Rng, mut data: Vec<u8>, _: &[Vec<u8>]) -> Vec<u8> {
    if rng.one_in(16) {
        match data.first_mut() {
            Some(k) => *k = rng.byte(),
            None => data.push(rng.byte()),
        }
    }
    data
}
