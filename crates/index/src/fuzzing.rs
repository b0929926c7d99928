//! The record codec as the fuzz harness (`crates/fuzz`) drives it: the
//! values the index stores, decoded from untrusted bytes exactly as the
//! index decodes them when it reads a table. Not part of the crate's API
//! (hidden from its documentation); nothing but the harness uses it.

use crate::codec::{self, CodecError};
use crate::index::{Stored, StoredRef};
use crate::Aside;
use omirr_core::{Entry, Seq};

/// An `entries` table value: the entry and its seq.
pub fn decode_entry(bytes: &[u8]) -> Result<(Seq, Entry), CodecError> {
    let st: Stored = codec::decode(bytes)?;
    Ok((st.seq, st.entry))
}

/// The bytes the index stores for `entry` under `seq`.
pub fn encode_entry(seq: Seq, entry: &Entry) -> Result<Vec<u8>, CodecError> {
    codec::encode(&StoredRef { seq, entry })
}

/// An `aside` table value.
pub fn decode_aside(bytes: &[u8]) -> Result<Aside, CodecError> {
    codec::decode(bytes)
}

/// The bytes the index stores for a set-aside change.
pub fn encode_aside(aside: &Aside) -> Result<Vec<u8>, CodecError> {
    codec::encode(aside)
}

/// The largest value the codec decodes, in bytes.
pub const CODEC_LIMIT: usize = codec::LIMIT;
