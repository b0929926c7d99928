//! One peer session over an authenticated TLS stream (see
//! `proto/PROTOCOL.md` for the messages and their order).
//!
//! Tasks, all ending with the session:
//! - the writer: the only task that writes the stream, fed by a bounded
//!   queue, so that a slow peer pushes back on whoever sends to it;
//! - the reader (the session's own task): routes every incoming message;
//! - the pusher: answers the peer's `Pull`, then follows the index live;
//! - the applier: applies the peer's `Changes` pages in order, fetching
//!   file content over this same session, then advances the cursor and
//!   acknowledges;
//! - the pinger, and a task per file the peer asks for.
//!
//! A failure to apply a page ends the session without moving the cursor:
//! the dialer reconnects and the peer sends the page again.

use crate::daemon::Shared;
use anyhow::{bail, Context, Result};
use omirr_core::{Change, Hash, RelPath, Seq};
use omirr_fs::apply::{ContentSource, SourceError};
use omirr_proto::{read_message, write_message, Hello, Message};
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// How many changes the pusher reads from the index at a time.
const PAGE: usize = 4096;
/// Messages waiting for the writer; a full queue holds back the senders.
const QUEUE: usize = 64;
const PING_EVERY: Duration = Duration::from_secs(15);
/// A peer silent for this long is gone.
const SILENCE: Duration = Duration::from_secs(45);
/// How long the applier waits for the next piece of a fetched file.
const FETCH_STALL: Duration = Duration::from_secs(60);

enum Piece {
    Data(Vec<u8>),
    End,
    Unavailable(String),
}

/// The transfers in flight, by request id. A std channel: the applier
/// reads it on a blocking thread, with a time limit.
type Fetches = Arc<Mutex<HashMap<u64, std::sync::mpsc::SyncSender<Piece>>>>;

pub async fn run<S>(shared: Arc<Shared>, stream: S, peer: String) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out, mut out_rx) = mpsc::channel::<Message>(QUEUE);
    let s = shared.clone();
    let name = peer.clone();
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            write_message(&mut wr, &m).await?;
            let queued = out_rx.len();
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

    let fetches: Fetches = Arc::new(Mutex::new(HashMap::new()));
    let (pages_tx, pages_rx) = mpsc::channel::<(Vec<(Seq, Change)>, Seq)>(4);
    let applier = tokio::spawn(apply_pages(
        shared.clone(),
        peer.clone(),
        pages_rx,
        out.clone(),
        fetches.clone(),
    ));
    let _applier = AbortOnDrop(applier.abort_handle());
    let pinger = tokio::spawn(ping(out.clone()));
    let _pinger = AbortOnDrop(pinger.abort_handle());
    let mut pusher: Option<AbortOnDrop> = None;
    let mut children = Vec::new();

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
            Message::Changes { changes, upto, .. } => {
                pages_tx
                    .send((changes, upto))
                    .await
                    .context("the applier stopped")?;
            }
            Message::FileRequest {
                id,
                path,
                hash,
                size,
            } => {
                let task = tokio::spawn(serve_file(
                    shared.clone(),
                    out.clone(),
                    id,
                    path,
                    hash,
                    size,
                ));
                children.push(AbortOnDrop(task.abort_handle()));
                children.retain(|c| !c.0.is_finished());
            }
            Message::FileData { id, data, .. } => {
                route(&fetches, id, Piece::Data(data), false).await
            }
            Message::FileEnd { id } => route(&fetches, id, Piece::End, true).await,
            Message::FileUnavailable { id, reason } => {
                route(&fetches, id, Piece::Unavailable(reason), true).await
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

async fn route(fetches: &Fetches, id: u64, piece: Piece, last: bool) {
    let tx = {
        let mut map = fetches.lock().unwrap_or_else(|e| e.into_inner());
        if last {
            map.remove(&id)
        } else {
            map.get(&id).cloned()
        }
    };
    if let Some(tx) = tx {
        if let Err(std::sync::mpsc::TrySendError::Full(piece)) = tx.try_send(piece) {
            // Waiting here holds the reader, and so the peer: backpressure.
            let _ = tokio::task::spawn_blocking(move || tx.send(piece)).await;
        }
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

/// Applies the peer's pages in order; a page's cursor moves only once it
/// is durably applied and recorded.
async fn apply_pages(
    shared: Arc<Shared>,
    peer: String,
    mut pages: mpsc::Receiver<(Vec<(Seq, Change)>, Seq)>,
    out: mpsc::Sender<Message>,
    fetches: Fetches,
) {
    let ids = Arc::new(AtomicU64::new(1));
    let peer_id = omirr_core::HostId::new(&peer);
    while let Some((changes, upto)) = pages.recv().await {
        let plan = shared.plan();
        let (allowed, refused): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .map(|(_, c)| c)
            .partition(|c| plan.authorised(&peer, &c.path));
        for c in &refused {
            tracing::warn!(%peer, path = %c.path, "refused a change: not in a mirror set this host shares with the peer");
        }
        let s = shared.clone();
        let source = NetSource {
            out: out.clone(),
            fetches: fetches.clone(),
            ids: ids.clone(),
        };
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

/// Fetches file content from the peer for the applier, which runs on a
/// blocking thread.
struct NetSource {
    out: mpsc::Sender<Message>,
    fetches: Fetches,
    ids: Arc<AtomicU64>,
}

impl ContentSource for NetSource {
    fn open(
        &mut self,
        path: &RelPath,
        hash: &Hash,
        size: u64,
    ) -> Result<Box<dyn Read + '_>, SourceError> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        self.fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        self.out
            .blocking_send(Message::FileRequest {
                id,
                path: path.clone(),
                hash: *hash,
                size,
            })
            .map_err(|_| "the session ended")?;
        Ok(Box::new(Incoming {
            rx,
            buf: Vec::new(),
            pos: 0,
            done: false,
        }))
    }
}

struct Incoming {
    rx: std::sync::mpsc::Receiver<Piece>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for Incoming {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            let piece = match self.rx.recv_timeout(FETCH_STALL) {
                Ok(p) => Some(p),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer stopped sending the file",
                    ));
                }
            };
            match piece {
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
                None => return Err(std::io::Error::other("the session ended during a transfer")),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Streams a file the peer asked for, if this host still holds that
/// content at that path; otherwise, or if reading fails, says why.
async fn serve_file(
    shared: Arc<Shared>,
    out: mpsc::Sender<Message>,
    id: u64,
    path: RelPath,
    hash: Hash,
    size: u64,
) {
    if let Err(reason) = stream_file(shared, &out, id, path, hash, size).await {
        let _ = out.send(Message::FileUnavailable { id, reason }).await;
    }
}

async fn stream_file(
    shared: Arc<Shared>,
    out: &mpsc::Sender<Message>,
    id: u64,
    path: RelPath,
    hash: Hash,
    size: u64,
) -> Result<(), String> {
    let joined = |e: tokio::task::JoinError| e.to_string();
    let mut file = tokio::task::spawn_blocking(move || open_for_peer(&shared, &path, &hash, size))
        .await
        .map_err(joined)??;
    let mut offset = 0u64;
    loop {
        // Reads happen on a blocking thread; the file moves there and back.
        let (f, data) = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; omirr_proto::MAX_CHUNK];
            let n = file.read(&mut buf).map(|n| {
                buf.truncate(n);
                buf
            });
            (file, n)
        })
        .await
        .map_err(joined)?;
        let data = data.map_err(|e| e.to_string())?;
        file = f;
        if data.is_empty() {
            let _ = out.send(Message::FileEnd { id }).await;
            return Ok(());
        }
        let n = data.len() as u64;
        if out
            .send(Message::FileData { id, offset, data })
            .await
            .is_err()
        {
            // The session is over: nobody to tell.
            return Ok(());
        }
        offset += n;
    }
}

/// Opens `path` for a peer: only if the index says this host holds that
/// content there, and never through a symbolic link.
fn open_for_peer(
    shared: &Shared,
    path: &RelPath,
    hash: &Hash,
    size: u64,
) -> Result<std::fs::File, String> {
    use omirr_core::{Content, IndexView};
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
