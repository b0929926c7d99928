//! The peers' sockets: listening on the peer port, accepting under the
//! handshake cap, dialing a peer, and driving the TLS handshake on each
//! connection within [`HANDSHAKE_TIMEOUT`].
//!
//! What comes out is an authenticated TLS stream and the pinned name of
//! the host at the other end; what the session over it does is
//! `omirr-sync`'s. Which peers to dial, whether an authenticated host
//! shares a mirror set with this one, and how failures are logged (held
//! back while they repeat) are the daemon's. Failures come back typed:
//! [`DialError`] says whether the peer could be reached at all (the
//! expected failure of a host that is down) or failed later;
//! [`AcceptError`] whether the handshake was refused or timed out.
//!
//! Every connection has `TCP_NODELAY` set: requests, answers and `Ack`s
//! are small writes that wait for each other, and Nagle's algorithm would
//! hold each behind the peer's delayed ACK (40 ms).

use std::io;
use std::net::SocketAddr;

use omirr_config::peers::PeerAddress;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::error::Elapsed;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use crate::identity::Identity;
use crate::listen::{accept_failed, Handshakes, Throttle, HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};
use crate::tls::{self, HandshakeFailure, SharedPins, TlsError};

/// The peer port, accepting at most [`MAX_HANDSHAKES`] unauthenticated
/// connections at once (see [`crate::listen`]).
pub struct PeerListener {
    listener: TcpListener,
    handshakes: Handshakes,
    failures: Throttle,
}

impl PeerListener {
    /// Listens on `address`.
    pub async fn bind(address: &PeerAddress) -> io::Result<PeerListener> {
        let listener = TcpListener::bind((address.host.as_str(), address.port)).await?;
        Ok(PeerListener {
            listener,
            handshakes: Handshakes::new(MAX_HANDSHAKES),
            failures: Throttle::default(),
        })
    }

    /// The next connection that gets a handshake slot. A failed accept
    /// pauses and logs ([`accept_failed`]); a connection beyond the cap is
    /// closed at once ([`Handshakes::admit`]); neither ends the wait.
    pub async fn next(&mut self) -> Incoming {
        loop {
            let (stream, from) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    accept_failed("peer listener", &e, &mut self.failures).await;
                    continue;
                }
            };
            let Some(slot) = self.handshakes.admit(&from) else {
                drop(stream);
                continue;
            };
            // On whichever host accepted the session, as on the dialing
            // side (see the module documentation).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%from, "cannot set TCP_NODELAY: {e}");
            }
            return Incoming { stream, from, slot };
        }
    }
}

/// An accepted connection, not yet authenticated: it holds one of the
/// listener's handshake slots until [`Incoming::handshake`] is done.
pub struct Incoming {
    stream: TcpStream,
    /// The address it came from.
    pub from: SocketAddr,
    slot: OwnedSemaphorePermit,
}

/// Why an accepted connection did not become an authenticated one.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// This host's own TLS configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Setup(TlsError),
    /// No handshake within [`HANDSHAKE_TIMEOUT`].
    #[error("TLS handshake timed out")]
    TimedOut,
    /// The handshake failed: we refused the client's key, or it ours.
    #[error("{0}")]
    Handshake(HandshakeFailure),
    /// The handshake completed, but the key is not (or no longer) pinned.
    #[error("{0}")]
    Unidentified(TlsError),
}

impl Incoming {
    /// Runs the server's side of the TLS handshake, at most
    /// [`HANDSHAKE_TIMEOUT`], and names the pinned host at the other end.
    /// The handshake slot is given back either way.
    pub async fn handshake(
        self,
        identity: &Identity,
        pins: &SharedPins,
    ) -> Result<(String, server::TlsStream<TcpStream>), AcceptError> {
        let config = tls::server_config(identity, pins.clone()).map_err(AcceptError::Setup)?;
        let acceptor = TlsAcceptor::from(config);
        let stream =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(self.stream)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => return Err(AcceptError::Handshake(tls::handshake_failure(&e))),
                Err(_) => return Err(AcceptError::TimedOut),
            };
        let (peer, _) =
            tls::peer_identity(stream.get_ref().1, pins).map_err(AcceptError::Unidentified)?;
        // Authenticated: the session is no longer a handshake.
        drop(self.slot);
        Ok((peer, stream))
    }
}

/// Why dialing a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// No connection was made at all (refused, timed out, no route): what
    /// dialing a host that is down looks like.
    #[error("connecting to {address}")]
    Unreachable {
        /// The address dialed, as the peers file gives it.
        address: String,
        /// Why: a timeout or the system's error.
        #[source]
        source: Unreached,
    },
    /// The connection could not be set up (`TCP_NODELAY`).
    #[error(transparent)]
    Socket(io::Error),
    /// This host's own TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No handshake within [`HANDSHAKE_TIMEOUT`].
    #[error("TLS handshake timed out")]
    HandshakeTimedOut(#[source] Elapsed),
    /// The handshake failed: we refused the server's key, or it ours.
    #[error("TLS handshake failed: {0}")]
    Handshake(HandshakeFailure),
}

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum Unreached {
    /// No answer within [`HANDSHAKE_TIMEOUT`].
    #[error("connection timed out")]
    TimedOut(#[source] Elapsed),
    /// Refused, no route, a name that does not resolve: the system's word.
    #[error(transparent)]
    Io(io::Error),
}

/// Dials `peer` at `address` and runs the client's side of the TLS
/// handshake, accepting only the key pinned for `peer`: the connection and
/// the handshake within [`HANDSHAKE_TIMEOUT`] each.
pub async fn dial(
    address: &PeerAddress,
    peer: &str,
    identity: &Identity,
    pins: &SharedPins,
) -> Result<client::TlsStream<TcpStream>, DialError> {
    let unreachable = |source| DialError::Unreachable {
        address: address.to_string(),
        source,
    };
    let stream = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TcpStream::connect((address.host.as_str(), address.port)),
    )
    .await
    .map_err(|e| unreachable(Unreached::TimedOut(e)))?
    .map_err(|e| unreachable(Unreached::Io(e)))?;
    stream.set_nodelay(true).map_err(DialError::Socket)?;
    let config = tls::client_config(identity, pins.clone(), peer)?;
    let connector = TlsConnector::from(config);
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        connector.connect(tls::server_name(peer), stream),
    )
    .await
    .map_err(DialError::HandshakeTimedOut)?
    .map_err(|e| DialError::Handshake(tls::handshake_failure(&e)))
}
