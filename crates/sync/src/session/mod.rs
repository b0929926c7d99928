//! One peer session over an authenticated TLS stream (see
//! `proto/PROTOCOL.md` for the messages, their order, and the flow
//! control that keeps this free of deadlocks).
//!
//! The change stream's rules and state are `omirr-sync`'s sans-IO
//! [`PeerFlow`] (what the peer may send and how much, the window, batches,
//! acknowledgements); this module drives it with tokio. A violation of the
//! protocol ends the session with `Error BadMessage` naming it. The other
//! parts, each its own module:
//! - [`fetch`]: content from the peer, staged before it is applied;
//! - [`apply`]: the peer's pages applied in batches, changes that cannot
//!   be applied set aside, the cursor moved and acknowledged;
//! - [`serve`]: the peer's requests for our content.
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
pub mod progress;
pub mod reconcile;
pub mod serve;

use crate::engine::Engine;
use crate::SessionError;
use crate::{PeerFlow, Violation};
use omirr_core::{Change, Seq};
use omirr_fs::shown::{Shown, Size};
use omirr_proto::{read_frame, ErrorCode, Hello, Message, ReadError, WriteError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};
use tracing::Instrument;

/// A session's change stream, engine by the reader, the pusher and the
/// applier; each holds the lock only for a step of the state machine.
pub struct Flow {
    state: Mutex<PeerFlow>,
    /// Wakes the pusher: an Ack opened the window, or the peer pulled.
    pub pusher: Notify,
    /// Wakes the applier: a page arrived.
    pub applier: Notify,
}

impl Flow {
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
    let writer = spawn_in_span(write_all(
        engine.clone(),
        peer.clone(),
        wr,
        out_rx,
        control_rx,
        pong_rx,
    ));
    let _writer = AbortOnDrop(writer.abort_handle());

    let _ = control.send(Message::Hello(Hello::new(engine.policy().host())));
    let index_id = engine.store.index.id();
    let _ = control.send(Message::Clock {
        wall: crate::engine::wall().0,
        index: index_id,
    });
    let first = tokio::time::timeout(SILENCE, read_traced(&mut rd))
        .await
        .map_err(|_| SessionError::NoHello(SILENCE.as_secs()))??
        .ok_or(SessionError::ClosedBeforeHello)?
        .0;
    let hello = omirr_proto::expect_hello(first).and_then(|h| {
        omirr_proto::check_hello(&h, &peer)?;
        Ok(h)
    });
    let hello = match hello {
        Ok(h) => h,
        Err(e) => {
            if let Some(m) = e.to_message() {
                tell(&control, writer, m).await;
            }
            return Err(e.into());
        }
    };
    // The peer's clock, second: a session with a host whose clock is too
    // far off ours never starts.
    let second = tokio::time::timeout(SILENCE, read_traced(&mut rd))
        .await
        .map_err(|_| SessionError::NoHello(SILENCE.as_secs()))??
        .ok_or(SessionError::ClosedBeforeHello)?
        .0;
    let checked = match second {
        Message::Clock { wall, index } => check_clock(&engine, &peer, wall).map(|()| index),
        Message::Error { code, message } => {
            return Err(SessionError::Peer {
                code,
                message: message.escape_debug().to_string(),
            })
        }
        other => {
            let v = Violation(format!("expected Clock after Hello, got {}", other.kind()));
            tell(
                &control,
                writer,
                Message::error(ErrorCode::BadMessage, v.to_string()),
            )
            .await;
            return Err(v.into());
        }
    };
    let their_index = match checked {
        Ok(index) => index,
        Err(e) => {
            let m = Message::error(ErrorCode::ClockOffset, e.to_peer(engine.policy().host()));
            tell(&control, writer, m).await;
            return Err(e.into());
        }
    };
    let peer_id = omirr_core::HostId::new(&peer);
    if engine.store.index.meet_peer_index(&peer_id, their_index)? {
        tracing::warn!(%peer, "the peer's index is not the one this host's cursor counts in (it was made anew or restored): asking it for everything again");
    }
    let cursor = engine.store.index.cursor(&peer_id)?;
    let negotiated = omirr_proto::negotiate(omirr_proto::CAPABILITIES, &hello.capabilities);
    // What each side forgot, third: a host whose cursor is older than
    // the peer's forgetting reconciles (see `reconcile`).
    let expiry = if negotiated.iter().any(|c| c == omirr_proto::CAP_EXPIRY) {
        let _ = control.send(forgotten_message(&engine, &peer_id)?);
        let third = tokio::time::timeout(SILENCE, read_traced(&mut rd))
            .await
            .map_err(|_| SessionError::NoHello(SILENCE.as_secs()))??
            .ok_or(SessionError::ClosedBeforeHello)?
            .0;
        match third {
            Message::Forgotten {
                forgot_seq,
                forgot_below,
                cursor: their_cursor,
                last,
            } => {
                let peer_forgot = omirr_core::expiry::Forgotten {
                    seq: forgot_seq,
                    below: forgot_below,
                };
                start_expiry(&engine, &peer, cursor, peer_forgot, their_cursor, last)?
            }
            Message::Error { code, message } => {
                return Err(SessionError::Peer {
                    code,
                    message: message.escape_debug().to_string(),
                })
            }
            other => {
                let v = Violation(format!(
                    "expected Forgotten after Clock, got {}",
                    other.kind()
                ));
                tell(
                    &control,
                    writer,
                    Message::error(ErrorCode::BadMessage, v.to_string()),
                )
                .await;
                return Err(v.into());
            }
        }
    } else {
        reconcile::Expiry::default()
    };
    let expiry = Arc::new(expiry);
    // A reconciliation asks for everything, as a new host does.
    let cursor = if expiry.reconciling() { 0 } else { cursor };
    let mut was_down = None;
    engine.counters.peer(&peer, |p| {
        // Down since then (the daemon's record of it): this is the line
        // that says it is back.
        was_down = p.since.filter(|_| !p.connected);
        p.connected = true;
        p.since = Some(crate::counters::now_secs());
        p.cursor = cursor;
        p.last_error = None;
    });
    match was_down {
        Some(t) => {
            let down = crate::counters::now_secs().saturating_sub(t);
            let down = progress::duration(Duration::from_secs(down));
            tracing::info!(%peer, cursor, "peer {peer} is back (down for {down}): connected");
        }
        None => tracing::info!(%peer, cursor, "connected"),
    }
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

    let chunks = negotiated.iter().any(|c| c == omirr_proto::CAP_CHUNKS);
    let backlog = negotiated.iter().any(|c| c == omirr_proto::CAP_BACKLOG);
    let digests = negotiated.iter().any(|c| c == omirr_proto::CAP_DIGESTS);
    let verify = negotiated.iter().any(|c| c == omirr_proto::CAP_VERIFY);
    let holes = negotiated.iter().any(|c| c == omirr_proto::CAP_HOLES);
    let (verify_link, _registered) = engine.verify_links.register(&peer, out.clone(), verify);
    let progress = Arc::new(progress::Progress::new(&peer, cursor, backlog));
    engine.counters.peer(&peer, |p| {
        p.caught_up = progress.caught_up();
        p.backlog_in = Default::default();
        p.backlog_out = Default::default();
    });
    let reporter = spawn_in_span(progress::report(engine.clone(), progress.clone()));
    let _reporter = AbortOnDrop(reporter.abort_handle());
    let transfers = Arc::new(
        fetch::Transfers::new(&peer, out.clone(), chunks, engine.in_flight)
            .with_digests(digests)
            .with_holes(holes),
    );
    let _close = CloseTransfers(transfers.clone());
    let applier = apply::PeerApplier {
        engine: engine.clone(),
        peer: peer.clone(),
        transfers: transfers.clone(),
        control: control.clone(),
        flow: flow.clone(),
        progress: progress.clone(),
        expiry: expiry.clone(),
    };
    let mut applying = spawn_in_span(applier.run());
    let _applier = AbortOnDrop(applying.abort_handle());
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let server = spawn_in_span(serve::serve_requests(
        engine.clone(),
        peer.clone(),
        out.clone(),
        requests_rx,
        queued.clone(),
        holes,
    ));
    let _server = AbortOnDrop(server.abort_handle());
    let pinger = spawn_in_span(ping(
        control.clone(),
        index_id,
        expiry.enabled.then(|| (engine.clone(), peer_id.clone())),
    ));
    let _pinger = AbortOnDrop(pinger.abort_handle());
    let mut pusher: Option<AbortOnDrop> = None;
    let mut counter: Option<AbortOnDrop> = None;

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
                    tell(
                        &control,
                        writer,
                        Message::error(ErrorCode::BadMessage, d.to_string()),
                    )
                    .await;
                }
                return Err(e.into());
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(m))) => m,
        };
        let (msg, size) = msg;
        engine.counters.peer(&peer, |p| {
            p.frames_received += 1;
            p.bytes_received += size as u64;
        });
        log_changes_in(&msg);
        let checked = match msg {
            Message::Pull { after, own_after } => flow.lock().on_pull(after).map(|()| {
                let returning = Returning {
                    own_after,
                    recorded_by: engine.store.index.last_seq().unwrap_or(0),
                };
                let task = spawn_in_span(push(
                    engine.clone(),
                    peer.clone(),
                    out.clone(),
                    flow.clone(),
                    returning,
                    progress.clone(),
                ));
                pusher = Some(AbortOnDrop(task.abort_handle()));
                let counting = spawn_in_span(send_backlog(
                    engine.clone(),
                    peer.clone(),
                    out.clone(),
                    after,
                    returning,
                    progress.clone(),
                    backlog,
                ));
                counter = Some(AbortOnDrop(counting.abort_handle()));
            }),
            Message::Changes {
                changes,
                upto,
                done,
            } => flow
                .lock()
                .on_changes(changes, upto, done)
                .map(|()| flow.applier.notify_one()),
            Message::Ack { upto } => flow.lock().on_ack(upto).map(|()| {
                expiry.raise_their_cursor(upto);
                progress.on_ack(upto);
                flow.pusher.notify_one()
            }),
            // Optional requests only from a peer that negotiated them: an
            // older peer never sends them, so one that does is broken.
            Message::ChunkRequest { .. } if !chunks => Err(Violation(
                "ChunkRequest without the capability chunks".into(),
            )),
            Message::DigestRequest { .. } if !digests => Err(Violation(
                "DigestRequest without the capability chunk-digests".into(),
            )),
            m @ (Message::FileRequest { .. }
            | Message::RangeRequest { .. }
            | Message::ChunkRequest { .. }
            | Message::DigestRequest { .. }) => match serve::Ask::of(m) {
                Some((ask, job)) => request(&queued, &requests, ask, job),
                None => Ok(()),
            },
            m @ (Message::FileData { .. }
            | Message::FileEnd { .. }
            | Message::ChunkList { .. }
            | Message::ChunkDigests { .. }
            | Message::FileUnavailable { .. }) => {
                if let Message::FileData { data, .. } = &m {
                    let n = data.len() as u64;
                    engine.counters.peer(&peer, |p| p.file_bytes_received += n);
                }
                transfers.route(m)
            }
            Message::Ping { nonce } => {
                pong.send_replace(Some(nonce));
                Ok(())
            }
            Message::Pong { .. } => Ok(()),
            Message::Clock { wall, .. } => {
                if let Err(e) = check_clock(&engine, &peer, wall) {
                    let m =
                        Message::error(ErrorCode::ClockOffset, e.to_peer(engine.policy().host()));
                    tell(&control, writer, m).await;
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
                crate::verify::answer(&engine, &verify_link, &peer, m)
            }
            m @ (Message::Summary { .. } | Message::Entries { .. }) => {
                if verify {
                    verify_link.route(m)
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
                if !expiry.enabled {
                    Err(Violation("Forgotten without the capability expiry".into()))
                } else {
                    expiry.raise_their_cursor(their_cursor);
                    let peer_forgot = omirr_core::expiry::Forgotten {
                        seq: forgot_seq,
                        below: forgot_below,
                    };
                    let ours = engine.store.index.cursor(&peer_id)?;
                    if !expiry.reconciling()
                        && omirr_core::expiry::must_reconcile(ours, &peer_forgot)
                    {
                        engine.store.index.set_must_reconcile(&peer_id, true)?;
                        tracing::warn!(%peer, cursor = ours, forgot = forgot_seq, "{peer} has forgotten deletions this host has not received yet: ending the session to reconcile with it");
                        return Err(SessionError::MustReconcile);
                    }
                    Ok(())
                }
            }
            Message::Backlog {
                upto,
                changes,
                files,
                bytes,
            } => {
                if backlog {
                    let total = crate::counters::Backlog {
                        changes,
                        files,
                        bytes,
                    };
                    progress.settle(&engine, progress.on_backlog(upto, total));
                    Ok(())
                } else {
                    Err(Violation("Backlog without the capability backlog".into()))
                }
            }
        };
        if let Err(v) = checked {
            tell(
                &control,
                writer,
                Message::error(ErrorCode::BadMessage, v.to_string()),
            )
            .await;
            return Err(v.into());
        }
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
async fn tell(
    control: &mpsc::UnboundedSender<Message>,
    writer: tokio::task::JoinHandle<Result<(), SessionError>>,
    m: Message,
) {
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

/// This host's `Forgotten` for `peer`.
fn forgotten_message(
    engine: &Engine,
    peer: &omirr_core::HostId,
) -> Result<Message, omirr_index::IndexError> {
    let ix = &engine.store.index;
    let ours = ix.forgotten()?;
    Ok(Message::Forgotten {
        forgot_seq: ours.seq,
        forgot_below: ours.below,
        cursor: ix.cursor(peer)?,
        last: ix.last_seq()?,
    })
}

/// What the session knows of the peer's forgetting, and the
/// reconciliation to run if this host's cursor is below it (or one is
/// pending from before).
fn start_expiry(
    engine: &Engine,
    peer: &str,
    cursor: Seq,
    peer_forgot: omirr_core::expiry::Forgotten,
    their_cursor: Seq,
    last: Seq,
) -> Result<reconcile::Expiry, SessionError> {
    let peer_id = omirr_core::HostId::new(peer);
    let mut pending = engine.store.index.must_reconcile(&peer_id)?;
    if !pending && omirr_core::expiry::must_reconcile(cursor, &peer_forgot) {
        engine.store.index.set_must_reconcile(&peer_id, true)?;
        pending = true;
    }
    let reconcile = pending.then(|| {
        tracing::warn!(%peer, cursor, forgot = peer_forgot.seq, "this host was away for longer than {peer} remembers deletions (its cursor {cursor} is below what {peer} has forgotten, sequence {}): reconciling as a new host would, asking for its whole index; what {peer} deleted is deleted here, this host's own changes made while away are kept and sent", peer_forgot.seq);
        reconcile::Reconcile {
            peer_forgot,
            peer_cursor: their_cursor,
            end: last,
            floor: cursor,
            sent: Default::default(),
        }
    });
    Ok(reconcile::Expiry::new(true, their_cursor, reconcile))
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

/// Measures the peer's clock against ours from its `Clock` message, shows
/// it in the status, and checks it against the limit.
fn check_clock(engine: &Engine, peer: &str, wall: u64) -> Result<(), crate::admit::ClockOffset> {
    let offset = crate::admit::clock_offset(wall, crate::engine::wall());
    let ms = i64::try_from(offset / 1_000_000).unwrap_or(i64::MAX);
    engine.counters.peer(peer, |p| p.clock_offset_ms = Some(ms));
    crate::admit::check_clock(peer, offset, engine.max_clock_offset)
}

/// Which of the peer's own changes go back to it: those we recorded
/// before its `Pull` (at or below `recorded_by`) with a timestamp above
/// the latest of its own its index holds (`own_after`). A host with its
/// index intact has them all; one whose index is new or restored gets
/// back what it wrote. Those recorded later came from it, or through a
/// host that had them from it, during this session.
#[derive(Debug, Clone, Copy)]
struct Returning {
    own_after: omirr_core::Timestamp,
    recorded_by: Seq,
}

impl Returning {
    fn wanted(&self, seq: Seq, change: &Change, peer: &str) -> bool {
        change.entry.version.host.as_str() != peer
            || (seq <= self.recorded_by && change.entry.version.ts > self.own_after)
    }

    /// Why the change recorded at `seq` is not sent to `peer`, or `None`
    /// if it is: the one rule for what the pusher sends and what the
    /// `Backlog` counts.
    fn not_sent(
        &self,
        plan: &dyn crate::Policy,
        peer: &str,
        seq: Seq,
        change: &Change,
    ) -> Option<&'static str> {
        if !self.wanted(seq, change, peer) {
            Some("the peer wrote it, and has it")
        } else if !plan.authorised(peer, &change.path) {
            Some("not in a mirror set this host shares with the peer")
        } else {
            None
        }
    }
}

/// Sends the peer everything after its `Pull` that it shares with us,
/// then follows the index as it moves, as far as the window allows.
async fn push(
    engine: Arc<Engine>,
    peer: String,
    out: mpsc::Sender<Message>,
    flow: Arc<Flow>,
    returning: Returning,
    progress: Arc<progress::Progress>,
) -> Result<(), SessionError> {
    let mut moved = engine.store.last_seq.subscribe();
    let page = flow.lock().limits().page;
    loop {
        let from = flow.lock().read_from();
        if let Some(after) = from {
            moved.mark_unchanged();
            let read = engine.store.index.since(after, page)?;
            let mut raw_upto = read.last().map(|(s, _)| *s);
            let last_seq = engine.store.index.last_seq()?;
            // The last sequences may be gone (forgotten by expiry): the
            // peer's cursor still moves up to the last one, or it would
            // stay below what this host forgot and the peer reconcile
            // at every session.
            if raw_upto.is_none() && last_seq > after {
                raw_upto = Some(last_seq);
            }
            let last = match raw_upto {
                Some(u) => last_seq == u,
                None => true,
            };
            // Only what the peer may have, and not its own changes back
            // unless it lacks them.
            let plan = engine.policy();
            let changes: Vec<(Seq, Change)> = read
                .into_iter()
                .filter(|(s, c)| {
                    let why_not = returning.not_sent(plan.as_ref(), &peer, *s, c);
                    match why_not {
                        Some(why) => tracing::trace!("not sent {}: {why}", Shown(c)),
                        None => tracing::debug!("change out {}", Shown(c)),
                    }
                    why_not.is_none()
                })
                .collect();
            let n = changes.len() as u64;
            engine.counters.peer(&peer, |p| p.changes_sent += n);
            if let Some(u) = raw_upto {
                let amount = crate::counters::Backlog::of(changes.iter().map(|(_, c)| c));
                let initial = crate::counters::Backlog::of(
                    changes
                        .iter()
                        .filter(|(s, _)| *s <= returning.recorded_by)
                        .map(|(_, c)| c),
                );
                progress.on_read(u, amount, initial);
            }
            flow.lock().on_read(raw_upto, changes, last)?;
        }
        loop {
            let next = flow.lock().next_page();
            let Some(m) = next else { break };
            out.send(m).await?;
        }
        let (can_read, caught_up) = {
            let f = flow.lock();
            (f.read_from().is_some(), f.caught_up())
        };
        if caught_up {
            tokio::select! {
                r = moved.changed() => r?,
                _ = flow.pusher.notified() => {}
            }
        } else if !can_read {
            // The window is full: an Ack opens it.
            flow.pusher.notified().await;
        }
    }
}

/// Counts what the answer to the peer's `Pull { after }` holds (what the
/// pusher sends of what we had recorded by then), for the status, and
/// tells the peer if it speaks `backlog`. One read of those changes, on a
/// blocking thread, while the pusher sends them.
async fn send_backlog(
    engine: Arc<Engine>,
    peer: String,
    out: mpsc::Sender<Message>,
    after: Seq,
    returning: Returning,
    progress: Arc<progress::Progress>,
    tell: bool,
) -> Result<(), SessionError> {
    let upto = returning.recorded_by;
    let e = engine.clone();
    let counted = tokio::task::spawn_blocking(move || {
        let page = crate::Limits::default().page;
        let plan = e.policy();
        progress::count(&e, after, upto, page, |seq, c| {
            returning.not_sent(plan.as_ref(), &peer, seq, c).is_none()
        })
    })
    .await?;
    let total = counted?;
    progress.on_total_out(upto, total);
    if tell {
        out.send(Message::Backlog {
            upto,
            changes: total.changes,
            files: total.files,
            bytes: total.bytes,
        })
        .await?;
    }
    Ok(())
}
