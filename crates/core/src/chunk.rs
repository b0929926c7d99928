//! The value types of a file's chunk list: what names a piece of a large
//! file when hosts compare versions of it to send only what differs.
//!
//! A [`Chunk`] is a piece's length and full hash; a [`Digest`] is the
//! compact name a short list sends instead. They live here, with the
//! other types that travel and are stored, because the protocol, the
//! index and the chunker all use them; where the pieces are cut (FastCDC),
//! how a list is stored and how a file is rebuilt from one are
//! `omirr-chunk`'s.

use crate::Hash;
use serde::{Deserialize, Serialize};

/// One chunk of a file: its length and the BLAKE3 hash of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chunk {
    /// The chunk's length in bytes.
    pub len: u32,
    /// The BLAKE3 hash of the chunk's bytes.
    pub hash: Hash,
}

/// Bytes of a chunk's hash that a compact list ([`Digest`]) sends.
pub const DIGEST_LEN: usize = 8;

/// A chunk as a compact list names it: its length and the first
/// [`DIGEST_LEN`] bytes of its hash, about a third of a [`Chunk`] on the
/// wire. Enough to find which chunks a host already holds: a false match
/// (two in 2^64 for a pair of chunks of the same length) only makes a
/// rebuilt file that fails the whole file's hash, and the receiver then
/// fetches the file whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest {
    /// The chunk's length in bytes.
    pub len: u32,
    /// The first [`DIGEST_LEN`] bytes of the chunk's BLAKE3 hash.
    pub prefix: [u8; DIGEST_LEN],
}

impl Chunk {
    /// How a compact list names this chunk.
    pub fn digest(&self) -> Digest {
        let mut prefix = [0; DIGEST_LEN];
        prefix.copy_from_slice(&self.hash[..DIGEST_LEN]);
        Digest {
            len: self.len,
            prefix,
        }
    }
}
