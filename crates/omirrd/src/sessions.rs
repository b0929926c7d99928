//! The sessions with peers: accepting them and dialing them (the sockets
//! and the TLS handshake are `omirr-net`'s), keeping one session per pair
//! of hosts, and what the status and the log say when a session ends or
//! an attempt fails (see [`crate::health`]). The session itself is
//! `omirr_sync::session`'s.

use crate::shared::{Live, Shared};
use anyhow::{Context, Result};
use omirr_net::socket::{self, AcceptError, DialError, PeerListener};
use std::sync::Arc;
use std::time::Duration;

/// Accepts peers' connections (the handshake cap and the pause after a
/// failed accept are [`PeerListener`]'s), and runs a session with each
/// authenticated host that shares a mirror set with this one.
pub async fn accept(shared: Arc<Shared>, mut listener: PeerListener) {
    loop {
        let incoming = listener.next().await;
        let shared = shared.clone();
        tokio::spawn(async move {
            let from = incoming.from;
            let (peer, tls) = match incoming.handshake(&shared.identity, &shared.pins).await {
                Ok(authenticated) => authenticated,
                Err(AcceptError::Setup(e)) => return tracing::error!("TLS setup failed: {e}"),
                Err(AcceptError::TimedOut) => {
                    return tracing::warn!(%from, "TLS handshake timed out")
                }
                Err(e) => return refused(&shared, &from, &e.to_string()),
            };
            let plan = shared.plan();
            if peer == plan.host || !plan.peer_names().contains(&peer) {
                return tracing::warn!(%from, %peer, "refused a connection: this host shares no mirror set with it");
            }
            run_session(shared, tls, peer, false).await;
        });
    }
}

/// Keeps a session with `peer` going from this side: dials it whenever no
/// session with it runs, backing off while attempts fail, until it is no
/// longer a peer.
pub async fn dial(shared: Arc<Shared>, peer: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if !shared.plan().peer_names().contains(&peer) {
            return tracing::info!(%peer, "no longer a peer: not dialing it");
        }
        // The peer dialed us (or we it, and that session runs): one
        // session per pair is enough.
        while shared.has_session(&peer) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let started = std::time::Instant::now();
        match connect(&shared, &peer).await {
            Ok(tls) => run_session(shared.clone(), tls, peer.clone(), true).await,
            Err(e) => {
                tracing::debug!(%peer, "cannot connect: {e:#}");
                let unreachable = matches!(
                    e.downcast_ref::<DialError>(),
                    Some(DialError::Unreachable { .. })
                );
                let e = format!("{e:#}");
                let (c, r) = (&shared.engine.counters, &shared.repeats);
                crate::health::attempt_failed(c, r, &peer, &e, unreachable);
            }
        }
        // A session that lasted resets the backoff; quick failures grow it.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Dials `peer` at its address in the peers file now in force.
async fn connect(
    shared: &Arc<Shared>,
    peer: &str,
) -> Result<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> {
    let address = shared
        .plan()
        .peers
        .get(peer)
        .map(|p| p.address.clone())
        .with_context(|| format!("{peer} is not in the peers file"))?;
    Ok(socket::dial(&address, peer, &shared.identity, &shared.pins).await?)
}

/// Runs one session with `peer`, opened by this host (`outbound`) or by
/// the peer. Both hosts dial; when two sessions meet, both hosts keep the
/// one opened by the host whose name sorts first, and close the other.
/// Otherwise a new session replaces an old one (the peer knows its old one
/// is dead).
pub async fn run_session<S>(shared: Arc<Shared>, stream: S, peer: String, outbound: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let me = shared.plan().host.clone();
    let opened_by = if outbound { me.clone() } else { peer.clone() };
    let keeper = if me < peer { me } else { peer.clone() };
    let task = {
        let mut sessions = shared.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = sessions.get(&peer) {
            if !live.task.is_finished() && live.opened_by == keeper && opened_by != keeper {
                drop(sessions);
                return tracing::debug!(%peer, "both hosts dialed: keeping the session {keeper} opened");
            }
        }
        let task = tokio::spawn(omirr_sync::session::run(
            shared.engine.clone(),
            stream,
            peer.clone(),
        ));
        let new = Live {
            task: task.abort_handle(),
            opened_by,
        };
        if let Some(old) = sessions.insert(peer.clone(), new) {
            old.task.abort();
        }
        task
    };
    let id = task.id();
    let result = task.await;
    // Only the session registered for the peer speaks for it: one that was
    // replaced (or lost to the other host's) must not mark the peer down.
    let current = shared
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&peer)
        .is_some_and(|l| l.task.id() == id);
    if !current {
        return tracing::debug!(%peer, "session closed: another one with this peer runs");
    }
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(e) if e.is_cancelled() => Some("session cancelled".to_string()),
        Err(e) => Some(format!("session failed: {e}")),
    };
    let mut frames = (0, 0);
    let mut was_up = false;
    shared.engine.counters.peer(&peer, |p| {
        was_up = p.connected;
        p.connected = false;
        if was_up {
            // Down since now; a session that never connected leaves the
            // peer down since whenever it went.
            p.since = Some(omirr_sync::counters::now_secs());
        }
        p.queue = 0;
        // Nothing moves until the next session, which catches up anew.
        p.caught_up = false;
        p.rate_in = 0;
        p.rate_out = 0;
        frames = (p.frames_sent, p.frames_received);
        if error.is_some() {
            p.last_error = error.clone();
        }
    });
    if was_up {
        crate::health::session_lost(&shared.repeats, &peer, error.as_deref(), frames);
    } else {
        let e = error.unwrap_or_else(|| "the peer closed the session before it began".into());
        crate::health::attempt_failed(&shared.engine.counters, &shared.repeats, &peer, &e, false);
    }
}

/// A connection refused before its session: logged once per
/// [`crate::health::REPEAT_WINDOW`] for the same address and reason.
fn refused(shared: &Shared, from: &std::net::SocketAddr, reason: &str) {
    let key = format!("{}\0{reason}", from.ip());
    if let Some(repeated) = shared.repeats.pass(&key) {
        tracing::warn!(%from, "refused a connection: {reason}{repeated}");
    }
}
