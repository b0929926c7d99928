//! Delta transfer: the peer's chunk list, the chunks of the older version
//! this host holds, chunks of zeros, and the rest by ranges.

use super::ranges::Ranges;
use super::transfers::{Answer, Expect};
use super::writer::StageWriter;
use super::{FetchError, Piece, Transfers, LOCAL_RUN};
use crate::engine::Engine;
use crate::session::serve;
use omirr_chunk::{Recipe, Step};
use omirr_core::{Chunk, Content, Digest, Hash, IndexView};
use omirr_fs::apply::Wanted;
use omirr_proto::Message;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;

/// The content this host holds at `w`'s path, if it is a different file
/// large enough to be worth reusing the chunks of.
pub(super) fn older_version(engine: &Engine, w: &Wanted) -> Option<(Hash, u64)> {
    match engine.store.index.entry(&w.path) {
        Ok(Some(e)) => match e.content {
            Content::File { size, hash } if size >= omirr_chunk::DELTA_MIN && hash != w.hash => {
                Some((hash, size))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Delta transfer: the peer's chunk list, the chunks this host holds of
/// the older version at the same path, and the rest by ranges.
///
/// Chunks of zeros are never fetched, with or without an older version:
/// the chunker cuts a run of zeros (a sparse file's hole) into chunks of
/// [`omirr_chunk::MAX`] bytes, which this host recognises by their hash
/// ([`ZeroChunks`]) and leaves as holes in the staged file. A 1 GiB file
/// holding 64 KiB of data costs its chunk list and the chunks around the
/// data, not 1 GiB.
pub(super) async fn delta(
    engine: &Engine,
    t: &Transfers,
    w: &Wanted,
    old: Option<(Hash, u64)>,
    out: &std::fs::File,
) -> Result<(), FetchError> {
    let mut answer = request_list(t, w).await?;
    // Our older version's list is found (or cut) while the peer cuts its.
    let local = old.map(|old| tokio::task::block_in_place(|| older_chunks(engine, w, old)));
    let theirs = receive_list(&mut answer).await?;
    drop(answer);
    // Without an older version (or with one that cannot be read) only
    // the zero chunks are local.
    let older = match local {
        Some(Ok(older)) => Some(older),
        Some(Err(why)) => {
            tracing::debug!(path = %w.path, "delta transfer without the older version: {why}");
            None
        }
        None => None,
    };
    let total = theirs.bytes();
    if total != w.size {
        return Err(FetchError::File(format!(
            "the peer's chunk list covers {total} bytes, not {}",
            w.size
        )));
    }
    let ours = older.as_ref().map_or(&[][..], |o| &o.chunks[..]);
    let recipe = recipe(&theirs, ours);
    if recipe.ranges.len() > omirr_proto::MAX_RANGES {
        return Err(FetchError::File("too many ranges for one request".into()));
    }
    let fetched = recipe.remote_bytes();
    let rebuilt = rebuild(t, w, recipe, older.as_ref(), out).await?;
    if let Some(Older {
        file,
        trusted: Some(k),
        ..
    }) = &older
    {
        let now = file
            .metadata()
            .map_err(|e| FetchError::File(e.to_string()))?;
        if !k.unchanged(&omirr_fs::local::stat_key_of(&now)) {
            return Err(FetchError::File(
                "the older version changed while it was being reused".into(),
            ));
        }
    }
    if rebuilt.hash != w.hash {
        return Err(FetchError::File(
            "the rebuilt file does not match the peer's change".into(),
        ));
    }
    tracing::debug!(
        "delta transfer of {}: {} fetched, {} reused",
        w.path,
        omirr_fs::shown::Size(fetched),
        omirr_fs::shown::Size(w.size.saturating_sub(fetched))
    );
    // Cached only now that the list has proved right.
    if let Err(e) = engine
        .store
        .index
        .set_chunk_list(&w.hash, &omirr_chunk::encode(&rebuilt.list))
    {
        tracing::warn!("cannot cache a chunk list: {e}");
    }
    // A delta transfer in the counters' sense is one that used an older
    // version; a new file's zeros are no reuse.
    if older.is_some() {
        engine.counters.peer(&t.peer, |p| {
            p.files_delta += 1;
            p.file_bytes_reused += w.size.saturating_sub(fetched + rebuilt.zero_bytes);
        });
    }
    Ok(())
}

/// The peer's chunk list: whole hashes, or digests if asked for.
enum PeerList {
    Whole(Vec<Chunk>),
    Compact(Vec<Digest>),
}

impl PeerList {
    fn bytes(&self) -> u64 {
        match self {
            PeerList::Whole(c) => c.iter().map(|c| c.len as u64).sum(),
            PeerList::Compact(d) => d.iter().map(|d| d.len as u64).sum(),
        }
    }
}

/// The older version here: its chunk list, the open file, and the stat
/// key that vouches for its content (`None`: each chunk reused is
/// hashed again).
struct Older {
    chunks: Vec<Chunk>,
    file: std::fs::File,
    trusted: Option<omirr_index::StatKey>,
}

/// Asks for `w`'s chunk list (compact if the peer speaks it).
async fn request_list<'t>(t: &'t Transfers, w: &Wanted) -> Result<Answer<'t>, FetchError> {
    let size = w.size;
    let compact = t.digests;
    let answer = t
        .request(
            |id| {
                let (path, hash) = (w.path.clone(), w.hash);
                if compact {
                    Message::DigestRequest {
                        id,
                        path,
                        hash,
                        size,
                    }
                } else {
                    Message::ChunkRequest {
                        id,
                        path,
                        hash,
                        size,
                    }
                }
            },
            Expect::Chunks(size / omirr_chunk::MIN as u64 + 1),
        )
        .await?;
    Ok(answer)
}

/// The pages of the peer's chunk list, until the last.
async fn receive_list(answer: &mut Answer<'_>) -> Result<PeerList, FetchError> {
    let (mut theirs, mut digests) = (Vec::new(), Vec::new());
    loop {
        match answer.next().await? {
            Piece::Chunks(c, last) => {
                theirs.extend(c);
                if last {
                    break;
                }
            }
            Piece::Digests(d, last) => {
                digests.extend(d);
                if last {
                    break;
                }
            }
            Piece::Unavailable(why) => {
                return Err(FetchError::File(format!("the peer cannot cut it: {why}")))
            }
            _ => return Err(FetchError::File("file data for a chunk request".into())),
        }
    }
    match (theirs.is_empty(), digests.is_empty()) {
        (false, false) => Err(FetchError::File("a chunk list of two kinds".into())),
        (_, true) => Ok(PeerList::Whole(theirs)),
        (true, false) => Ok(PeerList::Compact(digests)),
    }
}

/// The older version `old` at `w`'s path, opened, with its chunk list.
fn older_chunks(engine: &Engine, w: &Wanted, old: (Hash, u64)) -> Result<Older, String> {
    let file = serve::open_for_peer(engine, &w.path, &old.0, old.1)?;
    let trusted = serve::vouched(engine, &w.path, &file);
    let chunks = serve::chunk_list(engine, &file, &old.0, old.1, trusted.is_some())?;
    Ok(Older {
        chunks,
        file,
        trusted,
    })
}

/// How to make the peer's version: each of its chunks from our older
/// version (`ours`), from zeros, or from the peer.
fn recipe(theirs: &PeerList, ours: &[Chunk]) -> Recipe {
    let mut zeros = ZeroChunks::default();
    match theirs {
        PeerList::Whole(theirs) => {
            let mut have: HashMap<Hash, (usize, u64)> = omirr_chunk::offsets(ours)
                .into_iter()
                .map(|(h, at)| (h, (OLDER, at)))
                .collect();
            for c in zeros.candidates(theirs.iter().map(|c| c.len)) {
                have.entry(c.hash).or_insert((ZEROS, 0));
            }
            Recipe::new(theirs, &have)
        }
        PeerList::Compact(digests) => {
            let mut have = HashMap::with_capacity(ours.len());
            let mut at = 0u64;
            for c in ours {
                have.entry(c.digest()).or_insert((OLDER, at, *c));
                at += c.len as u64;
            }
            for c in zeros.candidates(digests.iter().map(|d| d.len)) {
                have.entry(c.digest()).or_insert((ZEROS, 0, c));
            }
            Recipe::from_digests(digests, &have)
        }
    }
}

/// What [`rebuild`] made.
struct Rebuilt {
    /// The new version's list with whole hashes, for the index's cache: a
    /// compact list has none, so each is the local chunk's or, for the
    /// peer's bytes, hashed here.
    list: Vec<Chunk>,
    /// The hash of everything written.
    hash: Hash,
    /// Zeros written as holes, neither fetched nor taken from the older
    /// version.
    zero_bytes: u64,
}

/// Writes the peer's version into `out` by `recipe`.
async fn rebuild(
    t: &Transfers,
    w: &Wanted,
    recipe: Recipe,
    older: Option<&Older>,
    out: &std::fs::File,
) -> Result<Rebuilt, FetchError> {
    let mut remote = Ranges::new(t, w, &recipe.ranges);
    let mut hasher = blake3::Hasher::new();
    let mut out = StageWriter::new(out);
    let mut at = 0u64;
    let mut buf = Vec::new();
    let mut list = Vec::with_capacity(recipe.steps.len());
    let mut zero_bytes = 0u64;
    let mut steps = recipe.steps.into_iter().peekable();
    while let Some(step) = steps.next() {
        match step {
            Step::Local {
                source: ZEROS,
                chunk,
                ..
            } => {
                // Left as a hole by the writer below.
                zero_bytes += chunk.len as u64;
                list.push(chunk);
                buf.clear();
                buf.resize(chunk.len as usize, 0);
            }
            Step::Local { from, chunk, .. } => {
                let Some(older) = older else {
                    return Err(FetchError::File(
                        "a local chunk without a local file".into(),
                    ));
                };
                // With the local chunks that follow it in the older
                // version too, up to LOCAL_RUN bytes: one read and one
                // write for many chunks (an edit leaves long runs).
                let first = list.len();
                list.push(chunk);
                let mut end = from + chunk.len as u64;
                while let Some(&Step::Local {
                    source: OLDER,
                    from: next,
                    chunk,
                }) = steps.peek()
                {
                    if next != end || end - from + chunk.len as u64 > LOCAL_RUN {
                        break;
                    }
                    list.push(chunk);
                    end += chunk.len as u64;
                    steps.next();
                }
                buf.resize((end - from) as usize, 0);
                read_older(older, &mut buf, from, &list[first..])?;
            }
            Step::Remote { len } => {
                buf.resize(len as usize, 0);
                remote.read_exact(&mut buf).await?;
                list.push(Chunk {
                    len,
                    hash: *blake3::hash(&buf).as_bytes(),
                });
            }
        }
        hasher.update(&buf);
        out.write_at(&buf, at)?;
        at += buf.len() as u64;
    }
    out.finish(w.size)?;
    if at != w.size {
        return Err(FetchError::File(
            "the rebuilt file does not match the peer's change".into(),
        ));
    }
    Ok(Rebuilt {
        list,
        hash: *hasher.finalize().as_bytes(),
        zero_bytes,
    })
}

/// Reads `chunks` of the older version, which start at `from`, into
/// `buf`; unless its stat key vouches for it, checks each chunk's hash.
fn read_older(
    older: &Older,
    buf: &mut [u8],
    from: u64,
    chunks: &[Chunk],
) -> Result<(), FetchError> {
    tokio::task::block_in_place(|| older.file.read_exact_at(buf, from))
        .map_err(|e| FetchError::File(format!("reading the older version: {e}")))?;
    if older.trusted.is_none() {
        let mut o = 0;
        for c in chunks {
            let bytes = &buf[o..o + c.len as usize];
            if *blake3::hash(bytes).as_bytes() != c.hash {
                return Err(FetchError::File(
                    "the older version changed while it was being reused".into(),
                ));
            }
            o += c.len as usize;
        }
    }
    Ok(())
}

/// The sources a delta transfer's [`Step::Local`] names: the older
/// version of the file here, or zeros.
const OLDER: usize = 0;
const ZEROS: usize = 1;

/// The chunks of zeros a chunk list may hold, by length, hashed once
/// each. A run of zeros is cut into chunks of [`omirr_chunk::MAX`] bytes
/// but for its last; the lengths tried are bounded
/// ([`ZeroChunks::LENGTHS`]), so that a list of chunks of many lengths
/// (an ordinary file's) costs at most that many hashes of zeros here.
#[derive(Default)]
struct ZeroChunks {
    by_len: HashMap<u32, Chunk>,
}

impl ZeroChunks {
    /// Distinct lengths besides [`omirr_chunk::MAX`] hashed per list.
    const LENGTHS: usize = 16;

    /// The chunk of zeros of every length in `lens` worth trying: the
    /// largest chunk's, and the first [`ZeroChunks::LENGTHS`] others.
    fn candidates(&mut self, lens: impl Iterator<Item = u32>) -> Vec<Chunk> {
        let mut tried = 0;
        for len in lens {
            if self.by_len.contains_key(&len) {
                continue;
            }
            if len != omirr_chunk::MAX {
                if tried == Self::LENGTHS {
                    continue;
                }
                tried += 1;
            }
            let hash = *blake3::hash(&vec![0u8; len as usize]).as_bytes();
            self.by_len.insert(len, Chunk { len, hash });
        }
        self.by_len.values().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_of_zeros_are_known_by_their_hash() {
        let mut z = ZeroChunks::default();
        let max = omirr_chunk::MAX;
        let got = z.candidates([max, 100, max].into_iter());
        let of = |len: u32| *blake3::hash(&vec![0u8; len as usize]).as_bytes();
        assert!(got.contains(&Chunk {
            len: max,
            hash: of(max)
        }));
        assert!(got.contains(&Chunk {
            len: 100,
            hash: of(100)
        }));
        assert_eq!(got.len(), 2);
        // The cut of a run of zeros is what is recognised.
        let cut = omirr_chunk::chunk_bytes(&vec![0u8; 3 * max as usize]);
        assert!(cut.iter().all(|c| got.contains(c)), "{cut:?}");
        // Lengths other than the largest are bounded.
        let mut z = ZeroChunks::default();
        let many = z.candidates(1..=(ZeroChunks::LENGTHS as u32 + 10));
        assert_eq!(many.len(), ZeroChunks::LENGTHS);
    }
}
