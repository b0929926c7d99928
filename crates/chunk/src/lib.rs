//! Content-defined chunks of large files, and the recipe that rebuilds a
//! new version of a file from the chunks a host already holds.
//!
//! A file of at least [`DELTA_MIN`] bytes is cut with FastCDC (2020) into
//! chunks of [`MIN`] to [`MAX`] bytes, [`AVG`] on average, each named by
//! its BLAKE3 hash ([`Chunk`]). Cut points depend on the content around
//! them, not on offsets, so an edit in the middle of a file changes the
//! chunks it touches and leaves the others as they were, even when bytes
//! were inserted or removed.
//!
//! The sender announces the new version's chunk list; the receiver
//! matches it against chunks it holds ([`Recipe::new`]) and asks only for
//! the byte ranges of the missing ones ([`Recipe::ranges`]).
//!
//! This crate owns the cutting, the recipe and the form in which the
//! index stores a chunk list ([`encode`], [`decode`]). The value types
//! themselves, [`Chunk`] and [`Digest`], are `omirr-core`'s
//! (`omirr_core::chunk`), so that the protocol can carry them without
//! depending on the chunker.
//!
//! This crate is pure apart from [`chunk_reader`] (and
//! [`chunk_reader_with`]), which read. What it
//! does not do: talk to peers, open files or cache chunk lists (the
//! daemon's sessions and the index do).

use omirr_core::{Chunk, Digest, Hash};
use std::collections::HashMap;
use std::io::{self, Read};

/// The smallest chunk, except a file's last.
pub const MIN: u32 = 16 * 1024;
/// The average chunk the cut points aim at.
pub const AVG: u32 = 64 * 1024;
/// The largest chunk.
pub const MAX: u32 = 256 * 1024;
/// Files smaller than this go whole: a chunk list would cost a round
/// trip and save little.
pub const DELTA_MIN: u64 = 1024 * 1024;

/// A file cut into chunks, with the hash and size of the whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    /// The chunks, in file order.
    pub chunks: Vec<Chunk>,
    /// The BLAKE3 hash of the whole file.
    pub hash: Hash,
    /// The size of the whole file, in bytes.
    pub size: u64,
}

/// Reads `r` to its end once, cutting it into chunks and hashing the
/// whole as it goes.
pub fn chunk_reader(r: impl Read) -> io::Result<Chunked> {
    chunk_reader_with(r, true)
}

/// [`chunk_reader`], hashing the whole only if `whole_hash` (else
/// [`Chunked::hash`] is all zeros): for a caller that already knows what
/// the content is, it is one pass over the data fewer.
pub fn chunk_reader_with(r: impl Read, whole_hash: bool) -> io::Result<Chunked> {
    cut_stream(r, whole_hash, READ_BLOCK)
}

/// Bytes [`chunk_reader`] reads at once: many chunks a read, each cut and
/// hashed where it was read to (no copy per chunk, as fastcdc's
/// `StreamCDC` makes).
const READ_BLOCK: usize = 4 << 20;

/// The cut of `r` by a buffer of `block` bytes (at least twice [`MAX`]):
/// the same chunks as [`chunk_bytes`] of the whole, because a cut looks at
/// most [`MAX`] bytes ahead of the chunk's start, and the buffer always
/// holds that much unless the source has ended.
fn cut_stream(mut r: impl Read, whole_hash: bool, block: usize) -> io::Result<Chunked> {
    let max = MAX as usize;
    let block = block.max(2 * max);
    let mut whole = whole_hash.then(blake3::Hasher::new);
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; block];
    // buf[start..end] is read and not yet in a chunk.
    let (mut start, mut end, mut eof) = (0usize, 0usize, false);
    loop {
        if !eof && end - start < max {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            let before = end;
            while end < block {
                match r.read(&mut buf[end..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => end += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(w) = whole.as_mut() {
                w.update(&buf[before..end]);
            }
        }
        if start == end {
            break;
        }
        // The tables are made once per block read, not once per chunk.
        let cdc = fastcdc::v2020::FastCDC::new(&buf[..end], MIN, AVG, MAX);
        while start < end && (eof || end - start >= max) {
            let (_, cut) = cdc.cut(start, end - start);
            if cut <= start {
                // fastcdc ends a source it cannot cut with 0.
                return Err(io::Error::other("the chunker made an empty chunk"));
            }
            let len = cut - start;
            chunks.push(Chunk {
                len: len as u32,
                hash: *blake3::hash(&buf[start..cut]).as_bytes(),
            });
            size += len as u64;
            start = cut;
        }
    }
    Ok(Chunked {
        chunks,
        hash: whole.map_or([0; 32], |w| *w.finalize().as_bytes()),
        size,
    })
}

/// The chunks of an in-memory buffer (tests, and callers that hold one).
pub fn chunk_bytes(data: &[u8]) -> Vec<Chunk> {
    fastcdc::v2020::FastCDC::new(data, MIN, AVG, MAX)
        .map(|c| Chunk {
            len: c.length as u32,
            hash: *blake3::hash(&data[c.offset..c.offset + c.length]).as_bytes(),
        })
        .collect()
}

/// Where each chunk of a list starts, by hash (the first occurrence).
pub fn offsets(chunks: &[Chunk]) -> HashMap<Hash, u64> {
    let mut at = 0u64;
    let mut out = HashMap::with_capacity(chunks.len());
    for c in chunks {
        out.entry(c.hash).or_insert(at);
        at += c.len as u64;
    }
    out
}

/// One step of rebuilding a file, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Copy `chunk` from offset `from` of the local source `source`
    /// (checking its hash on the way).
    Local {
        /// Which local source, as numbered by the caller in `have`.
        source: usize,
        /// Offset in that source where the chunk's bytes start.
        from: u64,
        /// The chunk to copy; its hash is checked on the way.
        chunk: Chunk,
    },
    /// Take the next `len` bytes of what the peer sends.
    Remote {
        /// Number of bytes to take.
        len: u32,
    },
}

/// How to rebuild a file from local chunks and the peer's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The steps, in file order.
    pub steps: Vec<Step>,
    /// The byte ranges `(offset, len)` of the new file to ask the peer
    /// for, in order, adjacent ones merged. The peer's bytes for them, in
    /// this order, are exactly what the [`Step::Remote`] steps take.
    pub ranges: Vec<(u64, u64)>,
}

impl Recipe {
    /// Matches the new version's `chunks` against what the host holds:
    /// `have` maps a chunk hash to (source, offset in it).
    pub fn new(chunks: &[Chunk], have: &HashMap<Hash, (usize, u64)>) -> Recipe {
        Recipe::build(chunks.iter().map(|c| {
            let local = have.get(&c.hash).map(|&(source, from)| Step::Local {
                source,
                from,
                chunk: *c,
            });
            (c.len, local)
        }))
    }

    /// [`Recipe::new`] for a compact list: `have` maps the digest of each
    /// chunk the host holds to (source, offset in it, the chunk), and a
    /// [`Step::Local`] names the host's chunk, with its whole hash.
    pub fn from_digests(digests: &[Digest], have: &HashMap<Digest, (usize, u64, Chunk)>) -> Recipe {
        Recipe::build(digests.iter().map(|d| {
            let local = have.get(d).map(|&(source, from, chunk)| Step::Local {
                source,
                from,
                chunk,
            });
            (d.len, local)
        }))
    }

    /// The recipe of chunks of these lengths, each local or not.
    fn build(chunks: impl ExactSizeIterator<Item = (u32, Option<Step>)>) -> Recipe {
        let mut steps = Vec::with_capacity(chunks.len());
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut at = 0u64;
        for (len, local) in chunks {
            match local {
                Some(step) => steps.push(step),
                None => {
                    steps.push(Step::Remote { len });
                    match ranges.last_mut() {
                        Some((start, l)) if *start + *l == at => *l += len as u64,
                        _ => ranges.push((at, len as u64)),
                    }
                }
            }
            at += len as u64;
        }
        Recipe { steps, ranges }
    }

    /// How many bytes the peer must send.
    pub fn remote_bytes(&self) -> u64 {
        self.ranges.iter().map(|(_, len)| len).sum()
    }
}

/// The chunk list as stored in the index: per chunk, its length (4 bytes,
/// little-endian) and its hash.
pub fn encode(chunks: &[Chunk]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * 36);
    for c in chunks {
        out.extend_from_slice(&c.len.to_le_bytes());
        out.extend_from_slice(&c.hash);
    }
    out
}

/// The inverse of [`encode`]; `None` for bytes it did not make.
pub fn decode(bytes: &[u8]) -> Option<Vec<Chunk>> {
    if bytes.len() % 36 != 0 {
        return None;
    }
    bytes
        .chunks_exact(36)
        .map(|b| {
            let len = u32::from_le_bytes(b[..4].try_into().ok()?);
            let hash: Hash = b[4..].try_into().ok()?;
            (len > 0 && len <= MAX).then_some(Chunk { len, hash })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut v = vec![0u8; n];
        rng.fill(&mut v[..]);
        v
    }

    fn have(chunks: &[Chunk]) -> HashMap<Hash, (usize, u64)> {
        offsets(chunks)
            .into_iter()
            .map(|(h, o)| (h, (0, o)))
            .collect()
    }

    #[test]
    fn chunks_cover_the_file_within_the_bounds() {
        let data = random(4 << 20, 1);
        let c = chunk_reader(&data[..]).expect("read");
        assert_eq!(c.size, data.len() as u64);
        assert_eq!(c.hash, *blake3::hash(&data).as_bytes());
        assert_eq!(c.chunks, chunk_bytes(&data));
        let total: u64 = c.chunks.iter().map(|c| c.len as u64).sum();
        assert_eq!(total, data.len() as u64);
        let (last, rest) = c.chunks.split_last().expect("chunks");
        assert!(rest.iter().all(|c| (MIN..=MAX).contains(&c.len)));
        assert!(last.len <= MAX);
        // Around the average: 4 MiB in 40 to 100 chunks.
        assert!((40..=100).contains(&c.chunks.len()), "{}", c.chunks.len());
    }

    /// A reader that hands out at most `step` bytes a read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.step).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_stream_cuts_as_the_whole_in_memory_whatever_its_reads() {
        // Incompressible data, and runs of zeros where only MAX cuts.
        let mut data = random(5 << 20, 11);
        data[1 << 20..(1 << 20) + 3 * MAX as usize].fill(0);
        let expected = chunk_bytes(&data);
        for (block, step) in [
            (0, usize::MAX),
            (2 * MAX as usize, 4096),
            (READ_BLOCK, 100_003),
        ] {
            for len in [data.len(), data.len() - 1, 3 * MAX as usize + 17, 1000] {
                let data = &data[..len];
                let r = Trickle { data, step };
                let c = cut_stream(r, true, block).expect("read");
                assert_eq!(
                    c.chunks,
                    chunk_bytes(data),
                    "block {block}, step {step}, {len} bytes"
                );
                assert_eq!(c.size, len as u64);
                assert_eq!(c.hash, *blake3::hash(data).as_bytes());
            }
        }
        let c = cut_stream(&data[..], false, READ_BLOCK).expect("read");
        assert_eq!(c.chunks, expected);
        assert_eq!(c.hash, [0; 32], "no whole hash asked for");
        assert_eq!(
            cut_stream(io::empty(), true, 0).expect("empty").chunks,
            vec![]
        );
    }

    #[test]
    fn an_edit_inside_one_chunk_asks_for_that_chunk_only() {
        let old = random(4 << 20, 2);
        let old_chunks = chunk_bytes(&old);
        // Flip bytes in the middle of chunk 20, away from its cut points.
        let start: u64 = old_chunks[..20].iter().map(|c| c.len as u64).sum();
        let mut new = old.clone();
        let mid = start as usize + old_chunks[20].len as usize / 2;
        for b in &mut new[mid..mid + 8] {
            *b ^= 0xff;
        }
        let new_chunks = chunk_bytes(&new);
        let recipe = Recipe::new(&new_chunks, &have(&old_chunks));
        let changed: Vec<usize> = (0..new_chunks.len())
            .filter(|&i| new_chunks[i] != old_chunks.get(i).copied().unwrap_or(new_chunks[i]))
            .collect();
        assert_eq!(changed, vec![20], "cut points moved");
        assert_eq!(recipe.ranges, vec![(start, new_chunks[20].len as u64)]);
        assert_eq!(
            recipe
                .steps
                .iter()
                .filter(|s| matches!(s, Step::Remote { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn an_insertion_shifts_offsets_but_keeps_chunks() {
        let old = random(8 << 20, 3);
        let mut new = old[..3 << 20].to_vec();
        new.extend_from_slice(&random(1000, 4));
        new.extend_from_slice(&old[3 << 20..]);
        let recipe = Recipe::new(&chunk_bytes(&new), &have(&chunk_bytes(&old)));
        // The insertion and the chunks around it, not the rest.
        assert!(
            recipe.remote_bytes() <= 3 * MAX as u64,
            "{}",
            recipe.remote_bytes()
        );
        assert!(recipe.remote_bytes() >= 1000);
    }

    #[test]
    fn the_recipe_rebuilds_the_file() {
        let old = random(3 << 20, 5);
        let mut new = old.clone();
        new[1_500_000..1_600_000].copy_from_slice(&random(100_000, 6));
        new.truncate(2_900_000);
        let new_chunks = chunk_bytes(&new);
        let recipe = Recipe::new(&new_chunks, &have(&chunk_bytes(&old)));
        let mut remote: Vec<u8> = Vec::new();
        for &(at, len) in &recipe.ranges {
            remote.extend_from_slice(&new[at as usize..(at + len) as usize]);
        }
        let mut rebuilt = Vec::new();
        let mut taken = 0usize;
        for s in &recipe.steps {
            match *s {
                Step::Local { from, chunk, .. } => {
                    let bytes = &old[from as usize..from as usize + chunk.len as usize];
                    assert_eq!(*blake3::hash(bytes).as_bytes(), chunk.hash);
                    rebuilt.extend_from_slice(bytes);
                }
                Step::Remote { len } => {
                    rebuilt.extend_from_slice(&remote[taken..taken + len as usize]);
                    taken += len as usize;
                }
            }
        }
        assert_eq!(taken, remote.len());
        assert_eq!(rebuilt, new);
        assert!(recipe.remote_bytes() < 400_000, "{}", recipe.remote_bytes());
    }

    #[test]
    fn digests_make_the_recipe_full_hashes_make() {
        let old = random(4 << 20, 8);
        let mut new = old.clone();
        new[2_000_000..2_100_000].copy_from_slice(&random(100_000, 9));
        let (old_chunks, new_chunks) = (chunk_bytes(&old), chunk_bytes(&new));
        let by_hash = Recipe::new(&new_chunks, &have(&old_chunks));
        let mut at = 0;
        let mut by_digest = HashMap::new();
        for c in &old_chunks {
            by_digest.entry(c.digest()).or_insert((0, at, *c));
            at += c.len as u64;
        }
        let digests: Vec<Digest> = new_chunks.iter().map(Chunk::digest).collect();
        let compact = Recipe::from_digests(&digests, &by_digest);
        assert_eq!(compact, by_hash);
        assert!(!compact.ranges.is_empty() && compact.remote_bytes() < 600_000);
        // A digest of another length is another chunk.
        let mut longer = digests.clone();
        longer[0].len += 1;
        let r = Recipe::from_digests(&longer, &by_digest);
        assert_eq!(r.ranges.first(), Some(&(0, longer[0].len as u64)));
    }

    #[test]
    fn the_stored_form_round_trips_and_rejects_garbage() {
        let chunks = chunk_bytes(&random(2 << 20, 7));
        assert_eq!(decode(&encode(&chunks)), Some(chunks));
        assert_eq!(decode(&[1, 2, 3]), None);
        assert_eq!(decode(&[0u8; 36]), None, "a chunk of length 0");
        assert_eq!(decode(&[]), Some(vec![]));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
