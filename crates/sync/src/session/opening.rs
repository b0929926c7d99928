//! The opening of a session: `Hello` both ways, then each side's
//! `Clock` (a peer whose clock is too far off ours is refused), then, with
//! capability expiry, what each side forgot (a host away for longer than
//! its peer remembers deletions reconciles; see [`super::reconcile`]).
//! Also the two checks that go on with every ping: the clock, and this
//! host's `Forgotten`. A refusal is told to the peer before the session
//! ends.

use super::{progress, read_traced, reconcile, tell, Writer, SILENCE};
use crate::engine::Engine;
use crate::{SessionError, Violation};
use omirr_core::Seq;
use omirr_proto::{ErrorCode, Hello, Message};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

/// What the opening exchange settled.
pub(super) struct Opened {
    /// The capabilities both hosts speak.
    pub(super) negotiated: Vec<String>,
    /// Where this host's cursor for the peer starts (0 to reconcile).
    pub(super) cursor: Seq,
    /// What the peer forgot, and a reconciliation with it, if any.
    pub(super) expiry: Arc<reconcile::Expiry>,
    /// This host's index, as its `Clock` messages name it.
    pub(super) index_id: u64,
}

/// The opening exchange: `Hello`, then each side's `Clock` (a session with
/// a host whose clock is too far off ours never starts), then, with
/// capability expiry, what each side forgot. A refusal is told to the
/// peer before the session ends.
pub(super) async fn open<R>(
    engine: &Arc<Engine>,
    peer: &str,
    rd: &mut R,
    control: &mpsc::UnboundedSender<Message>,
    writer: &mut Writer,
) -> Result<Opened, SessionError>
where
    R: AsyncRead + Unpin,
{
    let _ = control.send(Message::Hello(Hello::new(engine.policy().host())));
    let index_id = engine.store.index.id();
    let _ = control.send(Message::Clock {
        wall: crate::engine::wall().0,
        index: index_id,
    });
    let first = read_opening(rd).await?;
    let hello = omirr_proto::expect_hello(first).and_then(|h| {
        omirr_proto::check_hello(&h, peer)?;
        Ok(h)
    });
    let hello = match hello {
        Ok(h) => h,
        Err(e) => {
            if let Some(m) = e.to_message() {
                tell(control, writer, m).await;
            }
            return Err(e.into());
        }
    };
    // The peer's clock, second: a session with a host whose clock is too
    // far off ours never starts.
    let checked = match read_opening(rd).await? {
        Message::Clock { wall, index } => check_clock(engine, peer, wall).map(|()| index),
        Message::Error { code, message } => {
            return Err(SessionError::Peer {
                code,
                message: message.escape_debug().to_string(),
            })
        }
        other => {
            let v = Violation(format!("expected Clock after Hello, got {}", other.kind()));
            tell(
                control,
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
            tell(control, writer, m).await;
            return Err(e.into());
        }
    };
    let peer_id = omirr_core::HostId::new(peer);
    if engine.store.index.meet_peer_index(&peer_id, their_index)? {
        tracing::warn!(%peer, "the peer's index is not the one this host's cursor counts in (it was made anew or restored): asking it for everything again");
    }
    let cursor = engine.store.index.cursor(&peer_id)?;
    let negotiated = omirr_proto::negotiate(omirr_proto::CAPABILITIES, &hello.capabilities);
    let expiry = if negotiated.iter().any(|c| c == omirr_proto::CAP_EXPIRY) {
        exchange_forgotten(engine, peer, cursor, rd, control, writer).await?
    } else {
        reconcile::Expiry::default()
    };
    // A reconciliation asks for everything, as a new host does.
    let cursor = if expiry.reconciling() { 0 } else { cursor };
    Ok(Opened {
        negotiated,
        cursor,
        expiry: Arc::new(expiry),
        index_id,
    })
}

/// What each side forgot, third in the opening: a host whose cursor is
/// older than the peer's forgetting reconciles (see `reconcile`).
async fn exchange_forgotten<R>(
    engine: &Arc<Engine>,
    peer: &str,
    cursor: Seq,
    rd: &mut R,
    control: &mpsc::UnboundedSender<Message>,
    writer: &mut Writer,
) -> Result<reconcile::Expiry, SessionError>
where
    R: AsyncRead + Unpin,
{
    let peer_id = omirr_core::HostId::new(peer);
    let _ = control.send(forgotten_message(engine, &peer_id)?);
    match read_opening(rd).await? {
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
            start_expiry(engine, peer, cursor, peer_forgot, their_cursor, last)
        }
        Message::Error { code, message } => Err(SessionError::Peer {
            code,
            message: message.escape_debug().to_string(),
        }),
        other => {
            let v = Violation(format!(
                "expected Forgotten after Clock, got {}",
                other.kind()
            ));
            tell(
                control,
                writer,
                Message::error(ErrorCode::BadMessage, v.to_string()),
            )
            .await;
            Err(v.into())
        }
    }
}

/// The next message of the opening exchange, within [`SILENCE`].
async fn read_opening<R>(rd: &mut R) -> Result<Message, SessionError>
where
    R: AsyncRead + Unpin,
{
    Ok(tokio::time::timeout(SILENCE, read_traced(rd))
        .await
        .map_err(|_| SessionError::NoHello(SILENCE.as_secs()))??
        .ok_or(SessionError::ClosedBeforeHello)?
        .0)
}

/// The peer is connected: in the status, and in the log (which says how
/// long it was down, if it was).
pub(super) fn mark_connected(engine: &Engine, peer: &str, cursor: Seq) {
    let mut was_down = None;
    engine.counters.peer(peer, |p| {
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
}

/// This host's `Forgotten` for `peer`.
pub(super) fn forgotten_message(
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

/// Measures the peer's clock against ours from its `Clock` message, shows
/// it in the status, and checks it against the limit.
pub(super) fn check_clock(
    engine: &Engine,
    peer: &str,
    wall: u64,
) -> Result<(), crate::admit::ClockOffset> {
    let offset = crate::admit::clock_offset(wall, crate::engine::wall());
    let ms = i64::try_from(offset / 1_000_000).unwrap_or(i64::MAX);
    engine.counters.peer(peer, |p| p.clock_offset_ms = Some(ms));
    crate::admit::check_clock(peer, offset, engine.max_clock_offset)
}
