//! Why a session ended.

use omirr_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no Hello from the peer within {0}s")]
    NoHello(u64),
    #[error("the peer closed before its Hello")]
    ClosedBeforeHello,
    #[error("handshake: {0}")]
    Handshake(#[from] omirr_proto::HandshakeError),
    #[error(transparent)]
    Read(#[from] omirr_proto::ReadError),
    #[error(transparent)]
    Write(#[from] omirr_proto::WriteError),
    #[error(transparent)]
    Index(#[from] omirr_index::IndexError),
    #[error("cannot page the index: {0}")]
    Encode(#[from] omirr_proto::EncodeError),
    #[error("writing to the peer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer has been silent for {0}s")]
    Silent(u64),
    #[error("the peer reports {code:?}: {message}")]
    Peer { code: ErrorCode, message: String },
    #[error("the peer broke the protocol: {0}")]
    Protocol(#[from] crate::Violation),
    #[error(transparent)]
    Clock(#[from] crate::admit::ClockOffset),
    #[error("the session ended")]
    Ended,
    #[error("ended to reconcile with the peer, which has forgotten deletions this host has not received")]
    MustReconcile,
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
