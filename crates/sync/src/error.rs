//! Why a session ended.

use omirr_proto::ErrorCode;

/// Why a session with a peer ended, or never opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A message of the opening exchange (`Hello`, `Clock`, `Forgotten`)
    /// did not arrive within this many seconds.
    #[error("no Hello from the peer within {0}s")]
    NoHello(u64),
    /// The peer closed the connection during the opening exchange.
    #[error("the peer closed before its Hello")]
    ClosedBeforeHello,
    /// The opening failed: the first message was not a `Hello`, the peer
    /// named another host than its certificate, speaks another protocol
    /// version, or refused the session.
    #[error("handshake: {0}")]
    Handshake(#[from] omirr_proto::HandshakeError),
    /// Reading from the peer failed: the connection broke or was cut, or
    /// a frame did not decode.
    #[error(transparent)]
    Read(#[from] omirr_proto::ReadError),
    /// A frame for the peer did not encode, or writing it failed.
    #[error(transparent)]
    Write(#[from] omirr_proto::WriteError),
    /// This host's index failed.
    #[error(transparent)]
    Index(#[from] omirr_index::IndexError),
    /// Changes read from the index could not be put in `Changes` pages
    /// (one too large for a frame, say).
    #[error("cannot page the index: {0}")]
    Encode(#[from] omirr_proto::EncodeError),
    /// Flushing the buffered stream to the peer failed.
    #[error("writing to the peer: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing arrived from the peer for this many seconds, though a
    /// live peer pings several times within that.
    #[error("the peer has been silent for {0}s")]
    Silent(u64),
    /// The peer sent an `Error` and ended the session.
    #[error("the peer reports {code:?}: {message}")]
    Peer {
        /// The peer's error code.
        code: ErrorCode,
        /// The peer's message, escaped for the log.
        message: String,
    },
    /// The peer broke a rule of the protocol; it is told `Error
    /// BadMessage`.
    #[error("the peer broke the protocol: {0}")]
    Protocol(#[from] crate::Violation),
    /// The peer's clock is too far off ours; it is told `Error
    /// ClockOffset`.
    #[error(transparent)]
    Clock(#[from] crate::admit::ClockOffset),
    /// One of the session's tasks found the session over (a channel
    /// closed): the real cause, if any, is another task's error.
    #[error("the session ended")]
    Ended,
    /// The peer has forgotten deletions this host has not received: the
    /// session ends so that the next one reconciles (see
    /// `session::reconcile`).
    #[error("ended to reconcile with the peer, which has forgotten deletions this host has not received")]
    MustReconcile,
    /// One of the session's tasks panicked or was cancelled.
    #[error("{0}")]
    Task(String),
}

impl From<crate::session::fetch::SessionEnded> for SessionError {
    fn from(_: crate::session::fetch::SessionEnded) -> SessionError {
        SessionError::Ended
    }
}

impl From<tokio::task::JoinError> for SessionError {
    fn from(e: tokio::task::JoinError) -> SessionError {
        SessionError::Task(format!("a session task failed: {e}"))
    }
}

impl<T> From<tokio::sync::mpsc::error::SendError<T>> for SessionError {
    fn from(_: tokio::sync::mpsc::error::SendError<T>) -> SessionError {
        SessionError::Ended
    }
}

impl From<tokio::sync::watch::error::RecvError> for SessionError {
    fn from(_: tokio::sync::watch::error::RecvError) -> SessionError {
        SessionError::Ended
    }
}
