//! One peer session over an authenticated TLS stream (see
//! `proto/PROTOCOL.md` for the messages and their order).
//!
//! Tasks, all ending with the session:
//! - the writer: the only task that writes the stream, fed by a bounded
//!   queue, so that a slow peer pushes back on whoever sends to it;
//! - the reader (the session's own task): routes every incoming message;
//! - the pusher: answers the peer's `Pull`, then follows the index live;
//! - the applier: applies the peer's `Changes` pages in order (pages sent
//!   back to back as one batch, so that a rename split across pages moves
//!   no content), fetching file content over this same session, then
//!   advances the cursor and acknowledges;
//! - the pinger, and a task per file the peer asks for (at most
//!   [`SERVING`] of them read the disk at once).
//!
//! A failure to apply a page ends the session without moving the cursor:
//! the dialer reconnects and the peer sends the page again.
//!
//! File content (see [`NetSource`]) is pipelined: when a page's batch
//! starts, the small files it needs are all requested at once, within the
//! in-flight budget, and arrive while the applier works through the batch.
//! A large file is requested when the applier reaches it and streams
//! through a bounded queue. With the `chunks` capability, a large file the
//! host holds an older version of is rebuilt from that version's chunks
//! plus the ranges it lacks (delta transfer, `omirr-chunk`).

use crate::daemon::Shared;
use anyhow::{bail, Context, Result};
use omirr_chunk::{Chunk, Recipe, Step};
use omirr_core::{Change, Content, Hash, IndexView, RelPath, Seq};
use omirr_fs::apply::{ContentSource, SourceError, Wanted};
use omirr_proto::{read_message, write_message, Hello, Message, MAX_CHUNK};
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// How many changes the pusher reads from the index at a time.
const PAGE: usize = 4096;
/// The most changes the applier resolves and applies as one batch: pages
/// that follow one another back to back are merged up to this many. A
/// rename of a directory with up to this many entries moves no content.
const BATCH_MAX: usize = 65_536;
/// Messages waiting for the writer; a full queue holds back the senders.
const QUEUE: usize = 64;
/// The writer's buffer: about one TLS record's worth of small messages.
const WRITE_BUFFER: usize = 64 << 10;
const PING_EVERY: Duration = Duration::from_secs(15);
/// A peer silent for this long is gone.
const SILENCE: Duration = Duration::from_secs(45);
/// How long the applier waits for the next piece of a fetched file.
const FETCH_STALL: Duration = Duration::from_secs(60);
/// Files up to this size are fetched ahead; larger ones when the applier
/// reaches them (and, with the `chunks` capability, by delta).
const AHEAD_MAX_FILE: u64 = omirr_chunk::DELTA_MIN;
/// The most files fetched ahead at once.
const AHEAD_MAX_COUNT: usize = 1024;
/// Requests of the peer's served at once (each reads the disk).
const SERVING: usize = 16;

enum Piece {
    Data(Vec<u8>),
    Chunks(Vec<Chunk>, bool),
    End,
    Unavailable(String),
}

/// Where one transfer's pieces go; the applier reads them on a blocking
/// thread, with a time limit.
enum Inbox {
    /// A file fetched ahead. Never full, so routing never waits on it:
    /// the in-flight budget bounds what such inboxes hold.
    Ahead(std::sync::mpsc::Sender<Piece>),
    /// The file the applier is reading: bounded, so a full one holds up
    /// the reader, and so the peer (backpressure).
    Now(std::sync::mpsc::SyncSender<Piece>),
}

/// A session's transfers from the peer: the inboxes by request id, and
/// what making a request needs.
struct Transfers {
    inboxes: Mutex<HashMap<u64, Inbox>>,
    ids: AtomicU64,
    out: mpsc::Sender<Message>,
    /// Whether the peer speaks `chunks`.
    chunks: bool,
    /// Bytes of file content that may be requested and not yet consumed.
    budget: u64,
}

impl Transfers {
    fn inboxes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Inbox>> {
        self.inboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `request(id)` with a fresh id and an inbox for its answer.
    fn request(
        &self,
        request: impl FnOnce(u64) -> Message,
        ahead: bool,
    ) -> Result<(u64, std::sync::mpsc::Receiver<Piece>), SourceError> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (inbox, rx) = if ahead {
            let (tx, rx) = std::sync::mpsc::channel();
            (Inbox::Ahead(tx), rx)
        } else {
            let depth = (self.budget / MAX_CHUNK as u64).clamp(2, 1024) as usize;
            let (tx, rx) = std::sync::mpsc::sync_channel(depth);
            (Inbox::Now(tx), rx)
        };
        self.inboxes().insert(id, inbox);
        if self.out.blocking_send(request(id)).is_err() {
            self.inboxes().remove(&id);
            return Err("the session ended".into());
        }
        Ok((id, rx))
    }

    fn forget(&self, id: u64) {
        self.inboxes().remove(&id);
    }

    /// Puts a piece in its transfer's inbox without waiting; `last` ends
    /// the transfer. An unknown id (a transfer given up) drops the piece.
    /// `Err` gives back a piece that a full inbox cannot take yet.
    #[allow(clippy::result_large_err)]
    fn offer(
        &self,
        id: u64,
        piece: Piece,
        last: bool,
    ) -> Result<(), (std::sync::mpsc::SyncSender<Piece>, Piece)> {
        let mut map = self.inboxes();
        let tx = match map.get(&id) {
            None => return Ok(()),
            Some(Inbox::Ahead(tx)) => {
                let _ = tx.send(piece);
                if last {
                    map.remove(&id);
                }
                return Ok(());
            }
            Some(Inbox::Now(tx)) => tx.clone(),
        };
        if last {
            map.remove(&id);
        }
        drop(map);
        match tx.try_send(piece) {
            Err(std::sync::mpsc::TrySendError::Full(piece)) => Err((tx, piece)),
            _ => Ok(()),
        }
    }
}

pub async fn run<S>(shared: Arc<Shared>, stream: S, peer: String) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let (out, mut out_rx) = mpsc::channel::<Message>(QUEUE);
    let s = shared.clone();
    let name = peer.clone();
    let writer = tokio::spawn(async move {
        // Messages queued back to back share TLS records and system calls;
        // the stream is flushed whenever the queue runs dry.
        let mut wr = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, wr);
        while let Some(m) = out_rx.recv().await {
            write_message(&mut wr, &m).await?;
            let queued = out_rx.len();
            if queued == 0 {
                wr.flush().await?;
            }
            s.counters.peer(&name, |p| {
                p.frames_sent += 1;
                p.queue = queued;
            });
        }
        anyhow::Ok(())
    });
    let _writer = AbortOnDrop(writer.abort_handle());

    out.send(Message::Hello(Hello::new(&shared.plan().host)))
        .await?;
    let first = tokio::time::timeout(SILENCE, read_message(&mut rd))
        .await
        .context("no Hello from the peer")??
        .context("the peer closed before its Hello")?;
    let hello = omirr_proto::expect_hello(first).and_then(|h| {
        omirr_proto::check_hello(&h, &peer)?;
        Ok(h)
    });
    if let Err(e) = hello {
        if let Some(m) = e.to_message() {
            let _ = out.send(m).await;
        }
        bail!("handshake: {e}");
    }
    let cursor = shared.index.cursor(&omirr_core::HostId::new(&peer))?;
    tracing::info!(%peer, cursor, "connected");
    shared.counters.peer(&peer, |p| {
        p.connected = true;
        p.since = Some(crate::status::now_secs());
        p.cursor = cursor;
        p.last_error = None;
    });
    out.send(Message::Pull { after: cursor }).await?;

    let their_caps = match &hello {
        Ok(h) => h.capabilities.clone(),
        Err(_) => Vec::new(),
    };
    let transfers = Arc::new(Transfers {
        inboxes: Mutex::new(HashMap::new()),
        ids: AtomicU64::new(1),
        out: out.clone(),
        chunks: omirr_proto::negotiate(omirr_proto::CAPABILITIES, &their_caps)
            .iter()
            .any(|c| c == omirr_proto::CAP_CHUNKS),
        budget: shared.in_flight,
    });
    let (pages_tx, pages_rx) = mpsc::channel::<Page>(4);
    let applier = tokio::spawn(apply_pages(
        shared.clone(),
        peer.clone(),
        pages_rx,
        out.clone(),
        transfers.clone(),
    ));
    let _applier = AbortOnDrop(applier.abort_handle());
    let pinger = tokio::spawn(ping(out.clone()));
    let _pinger = AbortOnDrop(pinger.abort_handle());
    let mut pusher: Option<AbortOnDrop> = None;
    let mut serving = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(SERVING));

    loop {
        let msg = match tokio::time::timeout(SILENCE, read_message(&mut rd)).await {
            Err(_) => bail!("the peer has been silent for {}s", SILENCE.as_secs()),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(m))) => m,
        };
        shared.counters.peer(&peer, |p| p.frames_received += 1);
        if applier.is_finished() {
            // It stops only on a failure, which it has logged.
            bail!("applying the peer's changes failed");
        }
        match msg {
            Message::Pull { after } => {
                if pusher.is_some() {
                    bail!("the peer sent a second Pull");
                }
                let task = tokio::spawn(push(shared.clone(), peer.clone(), after, out.clone()));
                pusher = Some(AbortOnDrop(task.abort_handle()));
            }
            Message::Changes {
                changes,
                upto,
                done,
            } => {
                pages_tx
                    .send(Page {
                        changes,
                        upto,
                        done,
                    })
                    .await
                    .context("the applier stopped")?;
            }
            Message::FileRequest {
                id,
                path,
                hash,
                size,
            } => {
                let ask = Ask {
                    id,
                    path,
                    hash,
                    size,
                };
                let job = Job::Ranges(vec![(0, size)]);
                serving.spawn(serve(
                    shared.clone(),
                    out.clone(),
                    permits.clone(),
                    ask,
                    job,
                ));
                while serving.try_join_next().is_some() {}
            }
            Message::RangeRequest {
                id,
                path,
                hash,
                size,
                ranges,
            } => {
                let ask = Ask {
                    id,
                    path,
                    hash,
                    size,
                };
                let job = Job::Ranges(ranges);
                serving.spawn(serve(
                    shared.clone(),
                    out.clone(),
                    permits.clone(),
                    ask,
                    job,
                ));
                while serving.try_join_next().is_some() {}
            }
            Message::ChunkRequest {
                id,
                path,
                hash,
                size,
            } => {
                let ask = Ask {
                    id,
                    path,
                    hash,
                    size,
                };
                serving.spawn(serve(
                    shared.clone(),
                    out.clone(),
                    permits.clone(),
                    ask,
                    Job::Chunks,
                ));
                while serving.try_join_next().is_some() {}
            }
            Message::FileData { id, data, .. } => {
                let n = data.len() as u64;
                shared.counters.peer(&peer, |p| p.file_bytes_received += n);
                route(&transfers, id, Piece::Data(data), false).await
            }
            Message::ChunkList { id, chunks, last } => {
                route(&transfers, id, Piece::Chunks(chunks, last), last).await
            }
            Message::FileEnd { id } => route(&transfers, id, Piece::End, true).await,
            Message::FileUnavailable { id, reason } => {
                route(&transfers, id, Piece::Unavailable(reason), true).await
            }
            Message::Ping { nonce } => {
                out.send(Message::Pong { nonce }).await?;
            }
            Message::Pong { .. } => {}
            Message::Ack { upto } => tracing::trace!(%peer, upto, "acknowledged"),
            Message::Error { code, message } => bail!("the peer reports {code:?}: {message}"),
            Message::Hello(_) => bail!("the peer sent a second Hello"),
        }
    }
}

/// Aborts a task when the session ends, however it ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands a piece to its transfer's inbox, waiting while that inbox is
/// full.
async fn route(transfers: &Transfers, id: u64, piece: Piece, last: bool) {
    if let Err((tx, piece)) = transfers.offer(id, piece, last) {
        // Waiting here holds the reader, and so the peer: backpressure.
        let _ = tokio::task::spawn_blocking(move || tx.send(piece)).await;
    }
}

async fn ping(out: mpsc::Sender<Message>) {
    let mut tick = tokio::time::interval(PING_EVERY);
    let mut nonce = 0;
    loop {
        tick.tick().await;
        nonce += 1;
        if out.send(Message::Ping { nonce }).await.is_err() {
            return;
        }
    }
}

/// Sends the peer everything after `after` that it shares with us, then
/// follows the index as it moves.
async fn push(
    shared: Arc<Shared>,
    peer: String,
    mut after: Seq,
    out: mpsc::Sender<Message>,
) -> Result<()> {
    let mut moved = shared.last_seq.subscribe();
    let mut told_done = false;
    loop {
        moved.mark_unchanged();
        let page = shared.index.since(after, PAGE)?;
        let Some(&(upto, _)) = page.last() else {
            if !told_done {
                out.send(Message::Changes {
                    changes: Vec::new(),
                    upto: after,
                    done: true,
                })
                .await?;
                told_done = true;
            }
            moved.changed().await?;
            continue;
        };
        // Only what the peer may have, and not its own changes back.
        let plan = shared.plan();
        let changes: Vec<(Seq, Change)> = page
            .into_iter()
            .filter(|(_, c)| {
                c.entry.version.host.as_str() != peer && plan.authorised(&peer, &c.path)
            })
            .collect();
        let last_page = shared.index.last_seq()? == upto;
        let n = changes.len() as u64;
        shared.counters.peer(&peer, |p| p.changes_sent += n);
        for msg in omirr_proto::paginate(changes, upto, last_page)? {
            out.send(msg).await?;
        }
        told_done = last_page;
        after = upto;
    }
}

/// One `Changes` message, as the reader hands it to the applier.
struct Page {
    changes: Vec<(Seq, Change)>,
    upto: Seq,
    done: bool,
}

/// Takes the next batch to apply: a page, and the pages that the peer said
/// follow right away (`done` unset), up to [`BATCH_MAX`] changes. One
/// resolution over all of them pairs the two halves of a rename that the
/// sender's paging split (a directory's tombstone in one page, its new
/// name's files in the next), which would otherwise be a delete and a
/// fetch. `None` once the session is over.
async fn next_batch(pages: &mut mpsc::Receiver<Page>) -> Option<(Vec<(Seq, Change)>, Seq)> {
    let first = pages.recv().await?;
    let (mut changes, mut upto, mut done) = (first.changes, first.upto, first.done);
    while !done && changes.len() < BATCH_MAX {
        let Some(next) = pages.recv().await else {
            break;
        };
        changes.extend(next.changes);
        upto = next.upto;
        done = next.done;
    }
    Some((changes, upto))
}

/// Applies the peer's pages in order; a page's cursor moves only once it
/// is durably applied and recorded.
async fn apply_pages(
    shared: Arc<Shared>,
    peer: String,
    mut pages: mpsc::Receiver<Page>,
    out: mpsc::Sender<Message>,
    transfers: Arc<Transfers>,
) {
    let peer_id = omirr_core::HostId::new(&peer);
    while let Some((changes, upto)) = next_batch(&mut pages).await {
        let plan = shared.plan();
        let (allowed, refused): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .map(|(_, c)| c)
            .partition(|c| plan.authorised(&peer, &c.path));
        for c in &refused {
            tracing::warn!(%peer, path = %c.path, "refused a change: not in a mirror set this host shares with the peer");
        }
        let s = shared.clone();
        let source = NetSource::new(shared.clone(), peer.clone(), transfers.clone());
        let pid = peer_id.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut source = source;
            let mut w = s.write.lock().unwrap_or_else(|e| e.into_inner());
            let w = &mut *w;
            let plan = s.plan();
            let applied = omirr_fs::local::apply_remote(
                &s.index,
                &w.applier,
                &mut w.hlc,
                &allowed,
                &|p| plan.savetargets(p),
                &mut source,
            )?;
            s.index.set_cursor(&pid, upto)?;
            anyhow::Ok(applied)
        })
        .await;
        match result {
            Ok(Ok(applied)) => {
                if applied.recorded >= crate::daemon::LARGE_BATCH {
                    crate::daemon::release_freed_memory();
                }
                if !applied.actions.is_empty() {
                    tracing::debug!(%peer, actions = applied.actions.len(), recorded = applied.recorded, "applied");
                }
                // Queues the Distfile's commands for what changed; never waits.
                crate::commands::after_batch(&shared.plan(), &peer, &applied.actions);
                let n = applied.recorded as u64;
                shared.counters.add_applied(n);
                shared.counters.peer(&peer, |p| {
                    p.changes_received += n;
                    p.cursor = upto;
                });
                if applied.recorded > 0 {
                    shared.announce();
                }
                if out.send(Message::Ack { upto }).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(%peer, "cannot apply the peer's changes: {e:#}");
                return;
            }
            Err(e) => {
                tracing::error!(%peer, "the apply task failed: {e}");
                return;
            }
        }
    }
}

/// The small files of a batch, requested ahead of the applier within the
/// in-flight budget, so that their content arrives while it works.
struct Ahead {
    t: Arc<Transfers>,
    /// Not yet requested, in the applier's order.
    queue: VecDeque<Wanted>,
    /// Requested, not yet taken: (request id, inbox, size).
    asked: HashMap<(RelPath, Hash), (u64, std::sync::mpsc::Receiver<Piece>, u64)>,
    /// The sum of their sizes.
    bytes: u64,
}

impl Ahead {
    fn new(t: Arc<Transfers>) -> Ahead {
        Ahead {
            t,
            queue: VecDeque::new(),
            asked: HashMap::new(),
            bytes: 0,
        }
    }

    /// Queues the small ones of `wanted` and requests what fits.
    fn plan(&mut self, wanted: &[Wanted]) {
        self.queue
            .extend(wanted.iter().filter(|w| w.size <= AHEAD_MAX_FILE).cloned());
        self.top_up();
    }

    /// The inbox of a file requested ahead, if it was.
    fn take(&mut self, path: &RelPath, hash: &Hash) -> Option<std::sync::mpsc::Receiver<Piece>> {
        let (_, rx, size) = self.asked.remove(&(path.clone(), *hash))?;
        self.bytes -= size;
        self.top_up();
        Some(rx)
    }

    /// Requests queued files while the budget allows (always one, so that
    /// a file larger than the budget still moves).
    fn top_up(&mut self) {
        while let Some(w) = self.queue.front() {
            let room = self.bytes + w.size <= self.t.budget || self.asked.is_empty();
            if !room || self.asked.len() >= AHEAD_MAX_COUNT {
                return;
            }
            let Some(w) = self.queue.pop_front() else {
                return;
            };
            let key = (w.path.clone(), w.hash);
            if self.asked.contains_key(&key) {
                continue;
            }
            let asked = self.t.request(
                |id| Message::FileRequest {
                    id,
                    path: w.path,
                    hash: w.hash,
                    size: w.size,
                },
                true,
            );
            let Ok((id, rx)) = asked else {
                // The session is over; opening the file will say so.
                self.queue.clear();
                return;
            };
            self.bytes += w.size;
            self.asked.insert(key, (id, rx, w.size));
        }
    }
}

impl Drop for Ahead {
    /// Files requested and never taken (the batch failed): their late
    /// pieces are dropped.
    fn drop(&mut self) {
        for (id, _, _) in self.asked.values() {
            self.t.forget(*id);
        }
    }
}

/// Fetches file content from the peer for the applier, which runs on a
/// blocking thread. One per batch.
struct NetSource {
    shared: Arc<Shared>,
    peer: String,
    t: Arc<Transfers>,
    ahead: Ahead,
}

impl NetSource {
    fn new(shared: Arc<Shared>, peer: String, t: Arc<Transfers>) -> NetSource {
        NetSource {
            shared,
            peer,
            ahead: Ahead::new(t.clone()),
            t,
        }
    }

    fn count(&self, f: impl FnOnce(&mut crate::status::PeerStatus)) {
        self.shared.counters.peer(&self.peer, f);
    }

    /// Delta transfer: the new version's chunk list from the peer, the
    /// chunks this host holds from the old version at `path`, and a
    /// request for the rest. `Err` (before anything of the file was
    /// read) means: fetch it whole instead.
    fn delta(
        &mut self,
        path: &RelPath,
        hash: &Hash,
        size: u64,
    ) -> Result<Box<dyn Read + 'static>, String> {
        let old = match self.shared.index.entry(path) {
            Ok(Some(e)) => match e.content {
                Content::File {
                    size: old_size,
                    hash: old_hash,
                } if old_size >= omirr_chunk::DELTA_MIN && old_hash != *hash => {
                    (old_hash, old_size)
                }
                _ => return Err("no older version here".into()),
            },
            _ => return Err("no older version here".into()),
        };
        // The peer cuts its version while this host cuts its own.
        let (id, rx) = self
            .t
            .request(
                |id| Message::ChunkRequest {
                    id,
                    path: path.clone(),
                    hash: *hash,
                    size,
                },
                false,
            )
            .map_err(|e| e.to_string())?;
        let local = open_for_peer(&self.shared, path, &old.0, old.1).and_then(|file| {
            let trusted = vouched(&self.shared, path, &file);
            let list = chunk_list(&self.shared, &file, &old.0, old.1, trusted.is_some())?;
            Ok((list, file, trusted))
        });
        let theirs = receive_chunk_list(&rx);
        self.t.forget(id);
        let (ours, file, trusted) = local?;
        let theirs = theirs?;
        let total: u64 = theirs.iter().map(|c| c.len as u64).sum();
        if total != size {
            return Err(format!(
                "the peer's chunk list covers {total} bytes, not {size}"
            ));
        }
        if let Err(e) = self
            .shared
            .index
            .set_chunk_list(hash, &omirr_chunk::encode(&theirs))
        {
            tracing::warn!("cannot cache a chunk list: {e}");
        }
        let have = omirr_chunk::offsets(&ours)
            .into_iter()
            .map(|(h, at)| (h, (0, at)))
            .collect();
        let recipe = Recipe::new(&theirs, &have);
        if recipe.ranges.len() > omirr_proto::MAX_RANGES {
            return Err("too many ranges for one request".into());
        }
        let fetched = recipe.remote_bytes();
        let incoming = if recipe.ranges.is_empty() {
            None
        } else {
            let (_, rx) = self
                .t
                .request(
                    |id| Message::RangeRequest {
                        id,
                        path: path.clone(),
                        hash: *hash,
                        size,
                        ranges: recipe.ranges.clone(),
                    },
                    false,
                )
                .map_err(|e| e.to_string())?;
            Some(Incoming::new(rx))
        };
        tracing::debug!(peer = %self.peer, %path, size, fetched, "delta transfer");
        self.count(|p| {
            p.files_delta += 1;
            p.file_bytes_reused += size - fetched;
        });
        // A trusted old version's chunks are not hashed again as they are
        // reused; its stat key is checked again at the end.
        Ok(Box::new(Rebuild {
            steps: recipe.steps.into(),
            old: file,
            trusted,
            old_hash: old.0,
            shared: self.shared.clone(),
            incoming,
            buf: Vec::new(),
            pos: 0,
        }))
    }
}

impl ContentSource for NetSource {
    fn prepare(&mut self, wanted: &[Wanted]) {
        self.ahead.plan(wanted);
    }

    fn open(
        &mut self,
        path: &RelPath,
        hash: &Hash,
        size: u64,
    ) -> Result<Box<dyn Read + '_>, SourceError> {
        if size == 0 {
            return Ok(Box::new(std::io::empty()));
        }
        self.count(|p| p.files_fetched += 1);
        if let Some(rx) = self.ahead.take(path, hash) {
            return Ok(Box::new(Incoming::new(rx)));
        }
        if size >= omirr_chunk::DELTA_MIN && self.t.chunks {
            match self.delta(path, hash, size) {
                Ok(r) => return Ok(r),
                Err(why) => {
                    tracing::debug!(peer = %self.peer, %path, "whole transfer: {why}")
                }
            }
        }
        let (_, rx) = self.t.request(
            |id| Message::FileRequest {
                id,
                path: path.clone(),
                hash: *hash,
                size,
            },
            false,
        )?;
        Ok(Box::new(Incoming::new(rx)))
    }
}

fn recv(rx: &std::sync::mpsc::Receiver<Piece>) -> std::io::Result<Option<Piece>> {
    match rx.recv_timeout(FETCH_STALL) {
        Ok(p) => Ok(Some(p)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Ok(None),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer stopped sending",
        )),
    }
}

fn receive_chunk_list(rx: &std::sync::mpsc::Receiver<Piece>) -> Result<Vec<Chunk>, String> {
    let mut all = Vec::new();
    loop {
        match recv(rx).map_err(|e| e.to_string())? {
            Some(Piece::Chunks(chunks, last)) => {
                all.extend(chunks);
                if last {
                    return Ok(all);
                }
            }
            Some(Piece::Unavailable(reason)) => {
                return Err(format!("the peer cannot cut the file: {reason}"))
            }
            Some(_) => return Err("the peer answered a chunk request with file data".into()),
            None => return Err("the session ended".into()),
        }
    }
}

/// The stat key of the open `file` at `path`, if it is still the one the
/// index holds for that path: then the file has the content the index
/// says (the scanner's rule), and need not be hashed to know it.
fn vouched(shared: &Shared, path: &RelPath, file: &std::fs::File) -> Option<omirr_index::StatKey> {
    let key = shared.index.stat(path).ok().flatten()?;
    let now = omirr_fs::local::stat_key_of(&file.metadata().ok()?);
    key.unchanged(&now).then_some(key)
}

/// The chunk list of the content `hash` in `file`: from the index's cache,
/// or cut now and cached. Unless `trusted` ([`vouched`]), the cut checks
/// that the file still has that content.
fn chunk_list(
    shared: &Shared,
    file: &std::fs::File,
    hash: &Hash,
    size: u64,
    trusted: bool,
) -> Result<Vec<Chunk>, String> {
    if let Some(list) = shared
        .index
        .chunk_list(hash)
        .map_err(|e| e.to_string())?
        .and_then(|b| omirr_chunk::decode(&b))
    {
        return Ok(list);
    }
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let cut = omirr_chunk::chunk_reader_with(reader, !trusted).map_err(|e| e.to_string())?;
    if (!trusted && cut.hash != *hash) || cut.size != size {
        return Err("the file changed since it was recorded".into());
    }
    if let Err(e) = shared
        .index
        .set_chunk_list(hash, &omirr_chunk::encode(&cut.chunks))
    {
        tracing::warn!("cannot cache a chunk list: {e}");
    }
    Ok(cut.chunks)
}

/// One transfer's bytes, as a reader.
struct Incoming {
    rx: std::sync::mpsc::Receiver<Piece>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Incoming {
    fn new(rx: std::sync::mpsc::Receiver<Piece>) -> Incoming {
        Incoming {
            rx,
            buf: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for Incoming {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match recv(&self.rx)? {
                Some(Piece::Data(d)) => {
                    self.buf = d;
                    self.pos = 0;
                }
                Some(Piece::End) => self.done = true,
                Some(Piece::Unavailable(reason)) => {
                    return Err(std::io::Error::other(format!(
                        "the peer cannot send the file: {reason}"
                    )));
                }
                Some(Piece::Chunks(..)) => {
                    return Err(std::io::Error::other(
                        "the peer sent a chunk list for a file request",
                    ))
                }
                None => return Err(std::io::Error::other("the session ended during a transfer")),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A large file rebuilt by a [`Recipe`]: chunks of the old version,
/// checked against their hashes as they are copied, and the peer's bytes
/// for the rest. The applier checks the whole file's hash at the end.
struct Rebuild {
    steps: VecDeque<Step>,
    old: std::fs::File,
    /// The old version's stat key, when it vouches for its content: its
    /// chunks are then not hashed one by one.
    trusted: Option<omirr_index::StatKey>,
    old_hash: Hash,
    shared: Arc<Shared>,
    incoming: Option<Incoming>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for Rebuild {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.steps.pop_front() {
                None => {
                    if let Some(k) = &self.trusted {
                        let now = self.old.metadata()?;
                        if !k.unchanged(&omirr_fs::local::stat_key_of(&now)) {
                            return Err(std::io::Error::other(
                                "the older version changed while it was being reused",
                            ));
                        }
                    }
                    return Ok(0);
                }
                Some(Step::Local { from, chunk, .. }) => {
                    let len = chunk.len as usize;
                    // Straight into the caller's buffer when it fits: one
                    // copy fewer of nearly the whole file.
                    let direct = len > 0 && out.len() >= len;
                    let into = if direct {
                        &mut out[..len]
                    } else {
                        self.buf.resize(len, 0);
                        &mut self.buf[..]
                    };
                    self.old.read_exact_at(into, from)?;
                    if self.trusted.is_none() && *blake3::hash(into).as_bytes() != chunk.hash {
                        // The old version changed under us, or its cached
                        // list is wrong: cut it afresh next time.
                        let _ = self.shared.index.set_chunk_list(&self.old_hash, &[]);
                        return Err(std::io::Error::other(
                            "the older version changed while it was being reused",
                        ));
                    }
                    if direct {
                        return Ok(len);
                    }
                }
                Some(Step::Remote { len }) => {
                    let incoming = self.incoming.as_mut().ok_or_else(|| {
                        std::io::Error::other("a recipe step without a range request")
                    })?;
                    self.buf.resize(len as usize, 0);
                    incoming.read_exact(&mut self.buf)?;
                }
            }
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What the peer asked of a file.
struct Ask {
    id: u64,
    path: RelPath,
    hash: Hash,
    size: u64,
}

/// What to send of it.
enum Job {
    /// These byte ranges, in order (a `FileRequest` is the whole file).
    Ranges(Vec<(u64, u64)>),
    /// Its chunk list.
    Chunks,
}

/// Answers one request of the peer's, if this host still holds that
/// content at that path; otherwise, or if reading fails, says why.
///
/// The whole answer is read and queued from one blocking thread (a
/// `blocking_send` waits while the writer's queue is full); at most
/// [`SERVING`] run at once.
async fn serve(
    shared: Arc<Shared>,
    out: mpsc::Sender<Message>,
    permits: Arc<tokio::sync::Semaphore>,
    ask: Ask,
    job: Job,
) {
    let Ok(permit) = permits.acquire_owned().await else {
        return;
    };
    let _ = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let id = ask.id;
        let result = match job {
            Job::Ranges(ranges) => send_ranges(&shared, &out, ask, ranges),
            Job::Chunks => send_chunk_list(&shared, &out, ask),
        };
        if let Err(reason) = result {
            let _ = out.blocking_send(Message::FileUnavailable { id, reason });
        }
    })
    .await;
}

/// `Ok` also when the session ended meanwhile: there is nobody to tell.
fn send_chunk_list(shared: &Shared, out: &mpsc::Sender<Message>, ask: Ask) -> Result<(), String> {
    let file = open_for_peer(shared, &ask.path, &ask.hash, ask.size)?;
    let trusted = vouched(shared, &ask.path, &file).is_some();
    let chunks = chunk_list(shared, &file, &ask.hash, ask.size, trusted)?;
    let pages: Vec<&[Chunk]> = chunks.chunks(omirr_proto::MAX_CHUNK_LIST).collect();
    for (i, page) in pages.iter().enumerate() {
        let msg = Message::ChunkList {
            id: ask.id,
            chunks: page.to_vec(),
            last: i + 1 == pages.len(),
        };
        if out.blocking_send(msg).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn send_ranges(
    shared: &Shared,
    out: &mpsc::Sender<Message>,
    ask: Ask,
    ranges: Vec<(u64, u64)>,
) -> Result<(), String> {
    let file = open_for_peer(shared, &ask.path, &ask.hash, ask.size)?;
    for (start, len) in ranges {
        let mut offset = start;
        while offset < start + len {
            let want = (start + len - offset).min(MAX_CHUNK as u64) as usize;
            let mut data = vec![0u8; want];
            file.read_exact_at(&mut data, offset)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => "the file shrank while being read".into(),
                    _ => e.to_string(),
                })?;
            let msg = Message::FileData {
                id: ask.id,
                offset,
                data,
            };
            if out.blocking_send(msg).is_err() {
                return Ok(());
            }
            offset += want as u64;
        }
    }
    let _ = out.blocking_send(Message::FileEnd { id: ask.id });
    Ok(())
}

/// Opens `path` for a peer (or for reusing its chunks): only if the index
/// says this host holds that content there, and never through a symbolic
/// link.
fn open_for_peer(
    shared: &Shared,
    path: &RelPath,
    hash: &Hash,
    size: u64,
) -> Result<std::fs::File, String> {
    match shared.index.entry(path) {
        Ok(Some(e)) if e.content == (Content::File { size, hash: *hash }) => {}
        Ok(_) => return Err("this host no longer holds that content there".into()),
        Err(e) => return Err(e.to_string()),
    }
    if shared.ignored(path) {
        return Err("not mirrored here".into());
    }
    let full = shared
        .plan()
        .root
        .join(std::ffi::OsStr::from_bytes(path.as_bytes()));
    // No component may be a symbolic link: the file must lie inside the
    // mirrored tree.
    let mut at = shared.plan().root.clone();
    for c in path
        .components()
        .take(path.components().count().saturating_sub(1))
    {
        at.push(std::ffi::OsStr::from_bytes(c));
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            _ => return Err("a directory on the way is missing or a symbolic link".into()),
        }
    }
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&full)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfers(budget: u64) -> (Transfers, mpsc::Receiver<Message>) {
        let (out, requests) = mpsc::channel(16);
        let t = Transfers {
            inboxes: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(1),
            out,
            chunks: true,
            budget,
        };
        (t, requests)
    }

    fn ask(id: u64) -> Message {
        Message::FileRequest {
            id,
            path: RelPath::new(b"f".to_vec()).expect("path"),
            hash: [0; 32],
            size: 1 << 30,
        }
    }

    #[test]
    fn a_file_being_read_holds_the_peer_back_at_the_in_flight_budget() {
        let (t, _requests) = transfers(1 << 20);
        let (id, rx) = t.request(ask, false).expect("request");
        let piece = || Piece::Data(vec![0; MAX_CHUNK]);
        // 1 MiB of 256 KiB pieces waits for the applier; the next does not
        // fit, whatever the file's size.
        for _ in 0..4 {
            assert!(t.offer(id, piece(), false).is_ok());
        }
        let Err((_, held)) = t.offer(id, piece(), false) else {
            panic!("a fifth piece went past the budget");
        };
        // Once the applier takes one, there is room for one more.
        assert!(matches!(rx.try_recv(), Ok(Piece::Data(_))));
        assert!(t.offer(id, held, false).is_ok());
        assert!(t.offer(id, piece(), false).is_err());
    }

    #[test]
    fn files_fetched_ahead_never_hold_the_reader_and_unknown_ids_are_dropped() {
        let (t, _requests) = transfers(1 << 20);
        let (id, rx) = t.request(ask, true).expect("request");
        for _ in 0..8 {
            assert!(t.offer(id, Piece::Data(vec![0; MAX_CHUNK]), false).is_ok());
        }
        assert!(t.offer(id, Piece::End, true).is_ok());
        assert_eq!(rx.try_iter().count(), 9);
        assert!(t.offer(id, Piece::Data(vec![1]), false).is_ok(), "ended");
        assert!(t.inboxes().is_empty());
    }

    #[test]
    fn fetching_ahead_stays_within_the_budget() {
        let (t, mut requests) = transfers(100_000);
        let wanted: Vec<Wanted> = (0..10)
            .map(|i| Wanted {
                path: RelPath::new(format!("f{i}").into_bytes()).expect("path"),
                hash: [i as u8; 32],
                size: 30_000,
            })
            .collect();
        let mut ahead = Ahead::new(Arc::new(t));
        ahead.plan(&wanted);
        let asked =
            |r: &mut mpsc::Receiver<Message>| std::iter::from_fn(|| r.try_recv().ok()).count();
        assert_eq!(asked(&mut requests), 3, "3 x 30,000 bytes fit 100,000");
        assert!(ahead.take(&wanted[0].path, &wanted[0].hash).is_some());
        assert_eq!(asked(&mut requests), 1, "one consumed, one more asked");
        assert!(
            ahead.take(&wanted[9].path, &wanted[9].hash).is_none(),
            "not asked yet"
        );
    }
}
