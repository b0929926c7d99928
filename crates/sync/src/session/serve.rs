//! Serving the peer's requests: a file's bytes, ranges of it, or its
//! chunk list, read from this host's tree only if the index still says
//! the tree holds that content there.
//!
//! Requests wait in a queue that the protocol bounds
//! ([`crate::MAX_QUEUED_REQUESTS`]); they are served in batches of up to
//! [`SERVE_BATCH`], in order, each batch on a blocking thread, at most
//! [`SERVING`] batches at once. The answers go out
//! through the session's bounded data queue, so a peer that reads slowly
//! slows only the serving of its own requests.

use crate::engine::Engine;
use omirr_core::{Chunk, Content, Hash, IndexView, RelPath};
use omirr_proto::{Message, MAX_CHUNK};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Batches of the peer's requests read from disk at once.
pub const SERVING: usize = 16;
/// Requests served by one blocking task, in order: the peer asks for a
/// group's small files hundreds at a time, and a thread hand-off per file
/// cost more than reading it.
pub const SERVE_BATCH: usize = 64;

/// Serves what arrives on `requests` until the session ends; `queued`
/// counts requests not yet answered (the reader checks it).
pub async fn serve_requests(
    engine: Arc<Engine>,
    peer: String,
    out: mpsc::Sender<Message>,
    mut requests: mpsc::UnboundedReceiver<(Ask, Job)>,
    queued: Arc<AtomicUsize>,
    holes: bool,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(SERVING));
    while let Some(first) = requests.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        // Whatever else is queued by now joins the batch.
        let mut batch = vec![first];
        while batch.len() < SERVE_BATCH {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (engine, out, queued, peer) =
            (engine.clone(), out.clone(), queued.clone(), peer.clone());
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let _permit = permit;
            for (ask, job) in batch {
                serve_one(&engine, &peer, &out, ask, job, holes);
                queued.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
}

/// Answers one request (with the content, or with why not). With
/// `holes` (the peer speaks it), a sparse file's holes are not sent.
fn serve_one(
    engine: &Engine,
    peer: &str,
    out: &mpsc::Sender<Message>,
    ask: Ask,
    job: Job,
    holes: bool,
) {
    let id = ask.id;
    // For the debug log only: no clock is read when it is off.
    let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
    let path = started.map(|_| ask.path.clone());
    // Only what the peer shares with us, as for its changes.
    let result = if !engine.policy().authorised(peer, &ask.path) {
        tracing::warn!(%peer, path = %ask.path, "refused a request: not in a mirror set this host shares with the peer");
        Err("not in a mirror set this host shares with you".to_string())
    } else {
        match job {
            Job::Ranges(ranges) => send_ranges(engine, out, ask, ranges, holes).map(Served::Bytes),
            Job::Chunks { compact } => {
                send_chunk_list(engine, out, ask, compact).map(Served::ChunkList)
            }
        }
    };
    if let (Some(started), Some(path)) = (started, path) {
        let took = omirr_fs::shown::Took(started.elapsed());
        match &result {
            Ok(Served::Bytes(n)) => {
                tracing::debug!("served {path} {} in {took}", omirr_fs::shown::Size(*n))
            }
            Ok(Served::ChunkList(n)) => {
                tracing::debug!("served the chunk list of {path} ({n} chunks) in {took}")
            }
            Err(reason) => tracing::debug!("could not serve {path}: {reason}"),
        }
    }
    if let Err(reason) = result {
        let _ = out.blocking_send(Message::FileUnavailable { id, reason });
    }
}

/// The stat key of the open `file` at `path`, if it is still the one the
/// index holds for that path: then the file has the content the index
/// says (the scanner's rule), and need not be hashed to know it.
pub fn vouched(
    engine: &Engine,
    path: &RelPath,
    file: &std::fs::File,
) -> Option<omirr_core::StatKey> {
    let key = engine.store.index.stat(path).ok().flatten()?;
    let now = omirr_fs::scan::fstat_key(file).ok()?;
    key.unchanged(&now).then_some(key)
}

/// The chunk list of the content `hash` in `file`: from the index's cache,
/// or cut now and cached. Unless `trusted` ([`vouched`]), the cut checks
/// that the file still has that content.
pub fn chunk_list(
    engine: &Engine,
    file: &std::fs::File,
    hash: &Hash,
    size: u64,
    trusted: bool,
) -> Result<Vec<Chunk>, String> {
    if let Some(list) = engine
        .store
        .index
        .chunk_list(hash)
        .map_err(|e| e.to_string())?
        .and_then(|b| omirr_chunk::decode(&b))
        // An empty list is never right for a file (a list once found
        // wrong was emptied): cut it afresh.
        .filter(|l| !l.is_empty())
    {
        return Ok(list);
    }
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let cut = omirr_chunk::chunk_reader_with(reader, !trusted).map_err(|e| e.to_string())?;
    if (!trusted && cut.hash != *hash) || cut.size != size {
        return Err("the file changed since it was recorded".into());
    }
    if let Err(e) = engine
        .store
        .index
        .set_chunk_list(hash, &omirr_chunk::encode(&cut.chunks))
    {
        tracing::warn!("cannot cache a chunk list: {e}");
    }
    Ok(cut.chunks)
}

/// What the peer asked of a file.
pub struct Ask {
    /// The request's id, which every piece of the answer carries.
    pub id: u64,
    /// The file's path, relative to the mirror root.
    pub path: RelPath,
    /// The content the peer asks for: served only if this host still
    /// holds it at `path`.
    pub hash: Hash,
    /// That content's size, in bytes.
    pub size: u64,
}

impl Ask {
    /// The request in `m` and what to send for it; `None` if `m` is no
    /// request.
    pub fn of(m: Message) -> Option<(Ask, Job)> {
        let (id, path, hash, size, job) = match m {
            Message::FileRequest {
                id,
                path,
                hash,
                size,
            } => (id, path, hash, size, Job::Ranges(vec![(0, size)])),
            Message::RangeRequest {
                id,
                path,
                hash,
                size,
                ranges,
            } => (id, path, hash, size, Job::Ranges(ranges)),
            Message::ChunkRequest {
                id,
                path,
                hash,
                size,
            } => (id, path, hash, size, Job::Chunks { compact: false }),
            Message::DigestRequest {
                id,
                path,
                hash,
                size,
            } => (id, path, hash, size, Job::Chunks { compact: true }),
            _ => return None,
        };
        let ask = Ask {
            id,
            path,
            hash,
            size,
        };
        Some((ask, job))
    }
}

/// What to send of it.
pub enum Job {
    /// These byte ranges, in order (a `FileRequest` is the whole file).
    Ranges(Vec<(u64, u64)>),
    /// Its chunk list, as [`omirr_core::Digest`]s if `compact`.
    Chunks {
        /// Send [`omirr_core::Digest`]s (`ChunkDigests`) rather than
        /// `ChunkList` pages.
        compact: bool,
    },
}

/// What was sent for a request, for the log.
enum Served {
    /// This many bytes of the file.
    Bytes(u64),
    /// A chunk list of this many chunks.
    ChunkList(usize),
}

/// `Ok` also when the session ended meanwhile: there is nobody to tell.
/// Returns how many chunks the list has.
fn send_chunk_list(
    engine: &Engine,
    out: &mpsc::Sender<Message>,
    ask: Ask,
    compact: bool,
) -> Result<usize, String> {
    let file = open_for_peer(engine, &ask.path, &ask.hash, ask.size)?;
    let trusted = vouched(engine, &ask.path, &file).is_some();
    let chunks = chunk_list(engine, &file, &ask.hash, ask.size, trusted)?;
    for msg in list_pages(ask.id, &chunks, compact) {
        if out.blocking_send(msg).is_err() {
            return Ok(chunks.len());
        }
    }
    Ok(chunks.len())
}

/// The `ChunkList` (or if `compact`, `ChunkDigests`) pages of `chunks`,
/// the last marked: at least one, so that every request is answered (an
/// empty file has an empty list).
fn list_pages(id: u64, chunks: &[Chunk], compact: bool) -> Vec<Message> {
    let mut pages: Vec<&[Chunk]> = chunks.chunks(omirr_proto::MAX_CHUNK_LIST).collect();
    if pages.is_empty() {
        pages.push(&[]);
    }
    let n = pages.len();
    pages
        .into_iter()
        .enumerate()
        .map(|(i, page)| {
            let last = i + 1 == n;
            if compact {
                Message::ChunkDigests {
                    id,
                    digests: page.iter().map(Chunk::digest).collect(),
                    last,
                }
            } else {
                Message::ChunkList {
                    id,
                    chunks: page.to_vec(),
                    last,
                }
            }
        })
        .collect()
}

/// Sends `ranges` of the file, in order, then `FileEnd`. With `holes`,
/// only the data within them ([`omirr_fs::sparse`]): the peer takes what
/// is skipped for zeros.
fn send_ranges(
    engine: &Engine,
    out: &mpsc::Sender<Message>,
    ask: Ask,
    ranges: Vec<(u64, u64)>,
    holes: bool,
) -> Result<u64, String> {
    let file = open_for_peer(engine, &ask.path, &ask.hash, ask.size)?;
    let sparse = holes
        && file
            .metadata()
            .is_ok_and(|m| omirr_fs::sparse::may_have_holes(&m));
    let mut sent = 0;
    for (start, len) in ranges {
        let runs = if sparse {
            omirr_fs::sparse::data_runs(&file, start, len, omirr_proto::MAX_RANGES)
                .map_err(|e| format!("cannot find its holes: {e}"))?
        } else {
            vec![(start, len)]
        };
        for (start, len) in runs {
            let mut offset = start;
            while offset < start + len {
                let want = (start + len - offset).min(MAX_CHUNK as u64) as usize;
                let mut data = vec![0u8; want];
                file.read_exact_at(&mut data, offset)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => {
                            "the file shrank while being read".into()
                        }
                        _ => e.to_string(),
                    })?;
                let msg = Message::FileData {
                    id: ask.id,
                    offset,
                    data,
                };
                if out.blocking_send(msg).is_err() {
                    return Ok(sent);
                }
                offset += want as u64;
                sent += want as u64;
            }
        }
    }
    let _ = out.blocking_send(Message::FileEnd { id: ask.id });
    Ok(sent)
}

/// Opens `path` for a peer (or for reusing its chunks): only if the index
/// says this host holds that content there, by descriptor beneath the
/// root and never through a symbolic link ([`omirr_open::beneath`]), and
/// only a regular file.
pub fn open_for_peer(
    engine: &Engine,
    path: &RelPath,
    hash: &Hash,
    size: u64,
) -> Result<std::fs::File, String> {
    match engine.store.index.entry(path) {
        Ok(Some(e)) if e.content == (Content::File { size, hash: *hash }) => {}
        Ok(_) => return Err("this host no longer holds that content there".into()),
        Err(e) => return Err(e.to_string()),
    }
    if engine.ignored(path) {
        return Err("not mirrored here".into());
    }
    omirr_open::beneath::read_file(&engine.disk.root, path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_request_is_answered_with_a_last_page() {
        let lasts = |pages: &[Message]| {
            pages
                .iter()
                .map(|m| {
                    matches!(
                        m,
                        Message::ChunkList { last: true, .. }
                            | Message::ChunkDigests { last: true, .. }
                    )
                })
                .collect::<Vec<bool>>()
        };
        let chunk = Chunk {
            len: 1,
            hash: [7; 32],
        };
        let many = vec![chunk; omirr_proto::MAX_CHUNK_LIST + 1];
        for compact in [false, true] {
            assert_eq!(lasts(&list_pages(1, &[], compact)), [true], "an empty list");
            assert_eq!(lasts(&list_pages(1, &many, compact)), [false, true]);
            assert_eq!(lasts(&list_pages(1, &many[..3], compact)), [true]);
        }
        let Message::ChunkDigests { digests, .. } = &list_pages(1, &many[..3], true)[0] else {
            panic!("a compact list is digests");
        };
        assert_eq!(digests, &vec![chunk.digest(); 3]);
    }
}
