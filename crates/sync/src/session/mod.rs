//! One peer session over an authenticated TLS stream (see
//! `proto/PROTOCOL.md` for the messages, their order, and the flow
//! control that keeps this free of deadlocks).
//!
//! The change stream's rules and state are `omirr-sync`'s sans-IO
//! [`PeerFlow`] (what the peer may send and how much, the window, batches,
//! acknowledgements); this module drives it with tokio. A violation of the
//! protocol ends the session with `Error BadMessage` naming it. The other
//! parts, each its own module:
//! - `opening`: `Hello`, the clocks and what each side forgot, before
//!   anything else;
//! - `push`: our changes to the peer (each page read with the index's
//!   last sequence in one transaction), and the count of them;
//! - [`fetch`]: content from the peer, staged before it is applied;
//! - [`apply`]: the peer's pages applied in batches, changes that cannot
//!   be applied set aside, the cursor moved and acknowledged;
//! - [`serve`]: the peer's requests for our content;
//! - `undo`: on a receive-only host, local changes undone with the
//!   set's version fetched from the peer.
//!
//! The tasks of a session, all ending with it:
//! - the reader (the session's own task) reads every message and hands it
//!   on without ever waiting: pages and Acks to the [`Flow`], content to
//!   its transfer, requests to the server's queue. Each of those is
//!   bounded by the protocol (the window, what we asked for, the request
//!   bound), not by waiting, so the reader never stalls on the applier, a
//!   lock or the disk;
//! - the writer, the only one that writes the stream: control messages
//!   (`Ack`, `Pong`, errors) first, then the bounded data queue;
//! - the pusher: answers the peer's `Pull`, then follows the index live,
//!   within the window the peer's `Ack`s open;
//! - the applier, the server, and the pinger;
//! - the catch-up's reporter, and once per `Pull` the counter of what
//!   the answer holds, for the peer's `Backlog` ([`progress`]).
//!
//! Everything a session logs is inside its span, `session{peer=NAME}`, so
//! that every line says which peer it is about; tasks it spawns carry the
//! span along. See docs/omirrd.8.md, LOGGING, for what each level shows.

pub mod apply;
pub mod fetch;
mod opening;
pub mod progress;
mod push;
pub mod reconcile;
pub mod serve;
mod undo;

use crate::engine::Engine;
use crate::SessionError;
use crate::{PeerFlow, Violation};
use omirr_core::Seq;
use omirr_fs::shown::{Shown, Size};
use omirr_proto::{read_frame, ErrorCode, Message, ReadError, WriteError};
use opening::{check_clock, forgotten_message, mark_connected, open, Opened};
use push::{push, send_backlog, Returning};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};
use tracing::Instrument;

/// A session's change stream, shared by the reader, the pusher and the
/// applier; each holds the lock only for a step of the state machine.
pub struct Flow {
    state: Mutex<PeerFlow>,
    /// Wakes the pusher: an Ack opened the window, or the peer pulled.
    pub pusher: Notify,
    /// Wakes the applier: a page arrived.
    pub applier: Notify,
}

impl Flow {
    /// Takes the state machine, even if a holder panicked. Hold it for
    /// one step only, never across an `.await`.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, PeerFlow> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Data messages waiting for the writer; a full queue holds back whoever
/// sends data (the pusher, the server, the fetchers), never the reader.
const QUEUE: usize = 64;
/// The writer's buffer: about one TLS record's worth of small messages.
const WRITE_BUFFER: usize = 64 << 10;
const PING_EVERY: Duration = Duration::from_secs(15);
/// A peer silent for this long is gone.
const SILENCE: Duration = Duration::from_secs(45);

/// Runs the session with `peer` on `stream` until it ends, inside its
/// span.
pub async fn run<S>(engine: Arc<Engine>, stream: S, peer: String) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = tracing::info_span!("session", peer = %peer);
    drive(engine, stream, peer).instrument(span).await
}

async fn drive<S>(engine: Arc<Engine>, stream: S, peer: String) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let (out, out_rx) = mpsc::channel::<Message>(QUEUE);
    let (control, control_rx) = mpsc::unbounded_channel::<Message>();
    let (pong, pong_rx) = watch::channel(None::<u64>);
    let mut writer = spawn_in_span(write_all(
        engine.clone(),
        peer.clone(),
        wr,
        out_rx,
        control_rx,
        pong_rx,
    ));
    let _writer = AbortOnDrop(writer.abort_handle());

    let opened = open(&engine, &peer, &mut rd, &control, &mut writer).await?;
    mark_connected(&engine, &peer, opened.cursor);
    let channels = Channels {
        out,
        control,
        writer,
        pong,
    };
    let (mut session, mut applying) = start(engine, peer, opened, channels)?;

    loop {
        let msg = tokio::select! {
            m = tokio::time::timeout(SILENCE, read_traced(&mut rd)) => m,
            done = &mut applying => {
                return match done {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(e.into()),
                };
            }
        };
        let msg = match msg {
            Err(_) => return Err(SessionError::Silent(SILENCE.as_secs())),
            Ok(Err(e)) => {
                // An undecodable frame is the peer's fault, and it is
                // told; a broken connection has nobody to tell.
                if let omirr_proto::ReadError::Decode(d) = &e {
                    session
                        .tell(Message::error(ErrorCode::BadMessage, d.to_string()))
                        .await;
                }
                return Err(e.into());
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(m))) => m,
        };
        if let Err(v) = session.on_message(msg).await? {
            session
                .tell(Message::error(ErrorCode::BadMessage, v.to_string()))
                .await;
            return Err(v.into());
        }
    }
}

/// The writer's queues, and the writer.
struct Channels {
    /// Data messages, bounded.
    out: mpsc::Sender<Message>,
    /// Control messages, ahead of the data.
    control: mpsc::UnboundedSender<Message>,
    writer: Writer,
    /// The latest `Ping` to answer.
    pong: watch::Sender<Option<u64>>,
}

/// Starts the session proper once it is open: the `Pull`, and the tasks
/// (reporter, applier, server, pinger; the pusher waits for the peer's
/// `Pull`). Returns the reader's side, and the applier, whose end ends the
/// session.
fn start(
    engine: Arc<Engine>,
    peer: String,
    opened: Opened,
    channels: Channels,
) -> Result<(Session, Applying), SessionError> {
    let Channels {
        out,
        control,
        writer,
        pong,
    } = channels;
    let cursor = opened.cursor;
    let flow = pull(&engine, cursor, &control)?;
    let caps = Capabilities::of(&opened.negotiated);
    let (verify_link, registered) = engine
        .verify_links
        .register(&peer, out.clone(), caps.verify);
    let progress = Arc::new(progress::Progress::new(&peer, cursor, caps.backlog));
    engine.counters.peer(&peer, |p| {
        p.caught_up = progress.caught_up();
        p.backlog_in = Default::default();
        p.backlog_out = Default::default();
    });
    let reporter = spawn_in_span(progress::report(engine.clone(), progress.clone()));
    let transfers = Arc::new(
        fetch::Transfers::new(&peer, out.clone(), caps.chunks, engine.in_flight)
            .with_digests(caps.digests)
            .with_holes(caps.holes),
    );
    let close = CloseTransfers(transfers.clone());
    let expiry = opened.expiry;
    let applier = apply::PeerApplier {
        engine: engine.clone(),
        peer: peer.clone(),
        transfers: transfers.clone(),
        control: control.clone(),
        flow: flow.clone(),
        progress: progress.clone(),
        expiry: expiry.clone(),
    };
    let applying = spawn_in_span(applier.run());
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let server = spawn_in_span(serve::serve_requests(
        engine.clone(),
        peer.clone(),
        out.clone(),
        requests_rx,
        queued.clone(),
        caps.holes,
    ));
    let peer_id = omirr_core::HostId::new(&peer);
    let pinger = spawn_in_span(ping(
        control.clone(),
        opened.index_id,
        expiry.enabled.then(|| (engine.clone(), peer_id.clone())),
    ));
    let tasks = vec![
        AbortOnDrop(reporter.abort_handle()),
        AbortOnDrop(applying.abort_handle()),
        AbortOnDrop(server.abort_handle()),
        AbortOnDrop(pinger.abort_handle()),
    ];
    let session = Session {
        engine,
        peer,
        peer_id,
        out,
        control,
        writer,
        pong,
        flow,
        progress,
        expiry,
        transfers,
        requests,
        queued,
        verify_link,
        caps,
        _pusher: None,
        _counter: None,
        _tasks: tasks,
        _close: close,
        _registered: registered,
    };
    Ok((session, applying))
}

/// The session's change stream, started with our `Pull` (sent here).
fn pull(
    engine: &Engine,
    cursor: Seq,
    control: &mpsc::UnboundedSender<Message>,
) -> Result<Arc<Flow>, SessionError> {
    let (flow, pull) = PeerFlow::new(cursor, crate::Limits::default());
    let flow = Arc::new(Flow {
        state: Mutex::new(flow),
        pusher: Notify::new(),
        applier: Notify::new(),
    });
    // Which of our own changes we lack: all of them if we hold nothing
    // from this peer (a new index asks everyone for everything), else
    // those after the latest of ours the index holds.
    let own_after = if cursor == 0 {
        omirr_core::Timestamp(0)
    } else {
        engine.store.index.latest_of(&engine.host)?
    };
    let pull = match pull {
        Message::Pull { after, .. } => Message::Pull { after, own_after },
        other => other,
    };
    let _ = control.send(pull);
    Ok(flow)
}

/// The capabilities both hosts speak, as this session uses them.
#[derive(Debug, Clone, Copy)]
struct Capabilities {
    chunks: bool,
    backlog: bool,
    digests: bool,
    verify: bool,
    holes: bool,
}

impl Capabilities {
    fn of(negotiated: &[String]) -> Capabilities {
        let has = |cap: &str| negotiated.iter().any(|c| c == cap);
        Capabilities {
            chunks: has(omirr_proto::CAP_CHUNKS),
            backlog: has(omirr_proto::CAP_BACKLOG),
            digests: has(omirr_proto::CAP_DIGESTS),
            verify: has(omirr_proto::CAP_VERIFY),
            holes: has(omirr_proto::CAP_HOLES),
        }
    }
}

/// The writer task, whose end [`tell`] waits for.
type Writer = tokio::task::JoinHandle<Result<(), SessionError>>;

/// The applier task, whose end ends the session.
type Applying = tokio::task::JoinHandle<Result<(), SessionError>>;

/// A running session as its reader sees it: where each message of the
/// peer goes.
struct Session {
    engine: Arc<Engine>,
    peer: String,
    peer_id: omirr_core::HostId,
    /// The writer's data queue.
    out: mpsc::Sender<Message>,
    /// The writer's control queue, ahead of the data.
    control: mpsc::UnboundedSender<Message>,
    writer: Writer,
    /// The latest `Ping` to answer.
    pong: watch::Sender<Option<u64>>,
    flow: Arc<Flow>,
    progress: Arc<progress::Progress>,
    expiry: Arc<reconcile::Expiry>,
    transfers: Arc<fetch::Transfers>,
    /// The server's queue of the peer's requests, and its length.
    requests: mpsc::UnboundedSender<(serve::Ask, serve::Job)>,
    queued: Arc<AtomicUsize>,
    verify_link: Arc<crate::verify::links::Link>,
    caps: Capabilities,
    /// The pusher and the backlog's counter, started by the peer's `Pull`.
    _pusher: Option<AbortOnDrop>,
    _counter: Option<AbortOnDrop>,
    /// The other tasks, the transfers and the verify link: all end with
    /// the session.
    _tasks: Vec<AbortOnDrop>,
    _close: CloseTransfers,
    _registered: crate::verify::links::Registered,
}

impl Session {
    /// Sends `m`, a refusal, ahead of everything queued (see [`tell`]).
    async fn tell(&mut self, m: Message) {
        tell(&self.control, &mut self.writer, m).await;
    }

    /// Hands one message of the peer on, never waiting. `Err`: the
    /// session ends (the peer told already if it is to be); `Ok(Err)`:
    /// the peer broke the protocol, to be told so.
    // Over 100 lines: one arm per message kind, the reader's dispatch
    // table, read best in one place; the longer arms are methods.
    async fn on_message(
        &mut self,
        (msg, size): (Message, usize),
    ) -> Result<Result<(), Violation>, SessionError> {
        let (engine, peer) = (&self.engine, self.peer.as_str());
        engine.counters.peer(peer, |p| {
            p.frames_received += 1;
            p.bytes_received += size as u64;
        });
        log_changes_in(&msg);
        let caps = self.caps;
        Ok(match msg {
            Message::Pull { after, own_after } => self.on_pull(after, own_after),
            Message::Changes {
                changes,
                upto,
                done,
            } => self
                .flow
                .lock()
                .on_changes(changes, upto, done)
                .map(|()| self.flow.applier.notify_one()),
            Message::Ack { upto } => self.flow.lock().on_ack(upto).map(|()| {
                self.expiry.raise_their_cursor(upto);
                self.progress.on_ack(upto);
                self.flow.pusher.notify_one()
            }),
            // Optional requests only from a peer that negotiated them: an
            // older peer never sends them, so one that does is broken.
            Message::ChunkRequest { .. } if !caps.chunks => Err(Violation(
                "ChunkRequest without the capability chunks".into(),
            )),
            Message::DigestRequest { .. } if !caps.digests => Err(Violation(
                "DigestRequest without the capability chunk-digests".into(),
            )),
            m @ (Message::FileRequest { .. }
            | Message::RangeRequest { .. }
            | Message::ChunkRequest { .. }
            | Message::DigestRequest { .. }) => match serve::Ask::of(m) {
                Some((ask, job)) => request(&self.queued, &self.requests, ask, job),
                None => Ok(()),
            },
            m @ (Message::FileData { .. }
            | Message::FileEnd { .. }
            | Message::ChunkList { .. }
            | Message::ChunkDigests { .. }
            | Message::FileUnavailable { .. }) => self.on_content(m),
            Message::Ping { nonce } => {
                self.pong.send_replace(Some(nonce));
                Ok(())
            }
            Message::Pong { .. } => Ok(()),
            Message::Clock { wall, .. } => {
                if let Err(e) = check_clock(engine, peer, wall) {
                    let m =
                        Message::error(ErrorCode::ClockOffset, e.to_peer(engine.policy().host()));
                    self.tell(m).await;
                    return Err(e.into());
                }
                Ok(())
            }
            Message::Error { code, message } => {
                return Err(SessionError::Peer {
                    code,
                    message: message.escape_debug().to_string(),
                })
            }
            Message::Hello(_) => Err(Violation("a second Hello".into())),
            m @ (Message::SummaryRequest { .. } | Message::EntriesRequest { .. }) => {
                crate::verify::answer(engine, &self.verify_link, peer, m)
            }
            m @ (Message::Summary { .. } | Message::Entries { .. }) => {
                if caps.verify {
                    self.verify_link.route(m)
                } else {
                    Err(Violation(format!(
                        "{} without the capability verify",
                        m.kind()
                    )))
                }
            }
            Message::Forgotten {
                forgot_seq,
                forgot_below,
                cursor: their_cursor,
                ..
            } => {
                let peer_forgot = omirr_core::expiry::Forgotten {
                    seq: forgot_seq,
                    below: forgot_below,
                };
                self.on_forgotten(peer_forgot, their_cursor)?
            }
            Message::Backlog {
                upto,
                changes,
                files,
                bytes,
            } => {
                let total = crate::counters::Backlog {
                    changes,
                    files,
                    bytes,
                };
                self.on_backlog(upto, total)
            }
        })
    }

    /// Content the peer sends for one of our transfers.
    fn on_content(&self, m: Message) -> Result<(), Violation> {
        if let Message::FileData { data, .. } = &m {
            let n = data.len() as u64;
            self.engine
                .counters
                .peer(&self.peer, |p| p.file_bytes_received += n);
        }
        self.transfers.route(m)
    }

    /// The peer's count of what its answer to our `Pull` holds.
    fn on_backlog(&self, upto: Seq, total: crate::counters::Backlog) -> Result<(), Violation> {
        if self.caps.backlog {
            let settled = self.progress.on_backlog(upto, total);
            self.progress.settle(&self.engine, settled);
            Ok(())
        } else {
            Err(Violation("Backlog without the capability backlog".into()))
        }
    }

    /// The peer's `Pull`: starts the pusher, and the counter of what the
    /// answer holds.
    fn on_pull(&mut self, after: Seq, own_after: omirr_core::Timestamp) -> Result<(), Violation> {
        let engine = &self.engine;
        self.flow.lock().on_pull(after).map(|()| {
            let returning = Returning {
                own_after,
                recorded_by: engine.store.index.last_seq().unwrap_or(0),
            };
            let task = spawn_in_span(push(
                engine.clone(),
                self.peer.clone(),
                self.out.clone(),
                self.flow.clone(),
                returning,
                self.progress.clone(),
            ));
            self._pusher = Some(AbortOnDrop(task.abort_handle()));
            let counting = spawn_in_span(send_backlog(
                engine.clone(),
                self.peer.clone(),
                self.out.clone(),
                after,
                returning,
                self.progress.clone(),
                self.caps.backlog,
            ));
            self._counter = Some(AbortOnDrop(counting.abort_handle()));
        })
    }

    /// The peer's `Forgotten` after the opening (sent with its pings): if
    /// it has forgotten deletions this host has not received yet, the
    /// session ends, to reconcile at the next one.
    fn on_forgotten(
        &self,
        peer_forgot: omirr_core::expiry::Forgotten,
        their_cursor: Seq,
    ) -> Result<Result<(), Violation>, SessionError> {
        if !self.expiry.enabled {
            return Ok(Err(Violation(
                "Forgotten without the capability expiry".into(),
            )));
        }
        self.expiry.raise_their_cursor(their_cursor);
        let (engine, peer) = (&self.engine, self.peer.as_str());
        let ours = engine.store.index.cursor(&self.peer_id)?;
        if !self.expiry.reconciling() && omirr_core::expiry::must_reconcile(ours, &peer_forgot) {
            engine.store.index.set_must_reconcile(&self.peer_id, true)?;
            tracing::warn!(%peer, cursor = ours, forgot = peer_forgot.seq, "{peer} has forgotten deletions this host has not received yet: ending the session to reconcile with it");
            return Err(SessionError::MustReconcile);
        }
        Ok(Ok(()))
    }
}

/// Spawns `task` inside the current span (the session's), so that its
/// lines name the peer too.
fn spawn_in_span<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(task.in_current_span())
}

/// Each change of a `Changes` page, at debug level.
fn log_changes_in(msg: &Message) {
    if let Message::Changes { changes, .. } = msg {
        if tracing::enabled!(tracing::Level::DEBUG) {
            for (_, c) in changes {
                tracing::debug!("change in {}", Shown(c));
            }
        }
    }
}

/// Reads one message, and logs its frame at trace level.
async fn read_traced<R>(rd: &mut R) -> Result<Option<(Message, usize)>, ReadError>
where
    R: AsyncRead + Unpin,
{
    let read = read_frame(rd).await?;
    Ok(read.inspect(|(m, size)| {
        tracing::trace!("frame in {} {}", m.kind(), Size(*size as u64));
    }))
}

/// Sends `m`, a refusal, ahead of everything queued, and gives the writer
/// a moment to put it on the wire before the session ends.
async fn tell(control: &mpsc::UnboundedSender<Message>, writer: &mut Writer, m: Message) {
    let _ = control.send(m);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

/// Queues one of the peer's requests for the server, within the bound.
fn request(
    queued: &AtomicUsize,
    requests: &mpsc::UnboundedSender<(serve::Ask, serve::Job)>,
    ask: serve::Ask,
    job: serve::Job,
) -> Result<(), Violation> {
    let n = queued.fetch_add(1, Ordering::Relaxed) + 1;
    if let Err(v) = crate::check_requests(n) {
        queued.fetch_sub(1, Ordering::Relaxed);
        return Err(v);
    }
    let _ = requests.send((ask, job));
    Ok(())
}

/// The only writer of the stream. Control messages go first; the stream
/// is flushed whenever nothing more is queued. Ends after writing an
/// `Error`.
async fn write_all<W>(
    engine: Arc<Engine>,
    peer: String,
    wr: W,
    mut data: mpsc::Receiver<Message>,
    mut control: mpsc::UnboundedReceiver<Message>,
    mut pong: watch::Receiver<Option<u64>>,
) -> Result<(), SessionError>
where
    W: AsyncWrite + Unpin,
{
    let mut wr = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, wr);
    loop {
        let m = tokio::select! {
            biased;
            m = control.recv() => match m {
                Some(m) => m,
                None => return Ok(()),
            },
            changed = pong.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                match *pong.borrow_and_update() {
                    Some(nonce) => Message::Pong { nonce },
                    None => continue,
                }
            }
            m = data.recv() => match m {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        let last = matches!(m, Message::Error { .. });
        let content = match &m {
            Message::FileData { data, .. } => data.len() as u64,
            _ => 0,
        };
        let frame = omirr_proto::encode(&m).map_err(WriteError::from)?;
        wr.write_all(&frame).await.map_err(WriteError::from)?;
        let queued = data.len();
        if last || (queued == 0 && control.is_empty()) {
            wr.flush().await?;
        }
        engine.counters.peer(&peer, |p| {
            p.frames_sent += 1;
            p.bytes_sent += frame.len() as u64;
            p.file_bytes_sent += content;
            p.queue = queued;
        });
        // Measured again only when the line is written (the writer keeps
        // no size); it was just encoded, so it measures.
        tracing::trace!(
            "frame out {} {}",
            m.kind(),
            Size(omirr_proto::frame_len(&m).unwrap_or(0) as u64)
        );
        if last {
            return Ok(());
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

/// Fails every transfer when the session ends, so that staging stops.
struct CloseTransfers(Arc<fetch::Transfers>);

impl Drop for CloseTransfers {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Pings the peer, with our clock (and, with `expiry`, what this host
/// forgot), every [`PING_EVERY`] (the first at once after the
/// handshake's `Clock`, hence the skipped first tick).
async fn ping(
    control: mpsc::UnboundedSender<Message>,
    index: u64,
    expiry: Option<(Arc<Engine>, omirr_core::HostId)>,
) {
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.tick().await;
    let mut nonce = 0;
    loop {
        tick.tick().await;
        nonce += 1;
        let clock = Message::Clock {
            wall: crate::engine::wall().0,
            index,
        };
        if control.send(clock).is_err() {
            return;
        }
        if let Some((engine, peer)) = &expiry {
            if let Ok(m) = forgotten_message(engine, peer) {
                if control.send(m).is_err() {
                    return;
                }
            }
        }
        if control.send(Message::Ping { nonce }).is_err() {
            return;
        }
    }
}
