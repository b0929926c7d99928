//! The handshake rules, sans-IO.
//!
//! After TLS, each side sends its [`Hello`] at once (not waiting for the
//! other's: no round trip, and no deadlock, as a Hello is small) and reads
//! the peer's with [`expect_hello`] and [`check_hello`]. On an error it
//! sends [`HandshakeError::to_message`] and closes. Otherwise both sides
//! use [`negotiate`]d capabilities, which they compute alike.
//!
//! What this module cannot check, the session code must: that
//! `expected_host` is the host whose pinned certificate the TLS layer
//! verified on this very connection, not a name taken from the Hello.

use crate::{ErrorCode, Hello, Message, PROTOCOL_VERSION};

/// The capabilities this build supports and lists in its [`Hello`]. A
/// capability names optional messages or behaviour that a session uses
/// only when both sides list it.
pub const CAPABILITIES: &[&str] = &[
    crate::CAP_CHUNKS,
    crate::CAP_BACKLOG,
    crate::CAP_DIGESTS,
    crate::CAP_VERIFY,
    crate::CAP_EXPIRY,
    crate::CAP_HOLES,
];

/// Why a session ends at the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's Hello names another [`PROTOCOL_VERSION`] than ours.
    #[error("peer speaks protocol version {theirs}; this build speaks {ours}")]
    ProtocolVersion {
        /// This build's [`PROTOCOL_VERSION`].
        ours: u32,
        /// The version the peer's Hello names.
        theirs: u32,
    },
    /// The peer's Hello names another host than the one the TLS layer
    /// authenticated.
    #[error("peer introduced itself as {claimed:?}, but its certificate is that of {expected:?}")]
    WrongHost {
        /// The host the TLS layer authenticated.
        expected: String,
        /// The host the peer's Hello names.
        claimed: String,
    },
    /// The peer's first message is neither a Hello nor an `Error`.
    #[error("expected Hello as the first message, got {got}")]
    NotHello {
        /// That message's variant name ([`Message::kind`]).
        got: &'static str,
    },
    /// The peer sent `Error` instead of its Hello.
    #[error("peer refused the session ({code:?}): {message:?}")]
    Refused {
        /// The `Error`'s code.
        code: ErrorCode,
        /// The `Error`'s text.
        message: String,
    },
}

impl HandshakeError {
    /// The code to send the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            HandshakeError::ProtocolVersion { .. } => ErrorCode::ProtocolVersion,
            HandshakeError::WrongHost { .. } => ErrorCode::UnknownHost,
            HandshakeError::NotHello { .. } => ErrorCode::BadMessage,
            HandshakeError::Refused { code, .. } => *code,
        }
    }

    /// The `Error` to send before closing; `None` when the peer already
    /// refused (answering its `Error` would be noise).
    pub fn to_message(&self) -> Option<Message> {
        match self {
            HandshakeError::Refused { .. } => None,
            _ => Some(Message::error(self.code(), self.to_string())),
        }
    }
}

/// The peer's first message, which must be its Hello.
pub fn expect_hello(first: Message) -> Result<Hello, HandshakeError> {
    match first {
        Message::Hello(h) => Ok(h),
        Message::Error { code, message } => Err(HandshakeError::Refused { code, message }),
        other => Err(HandshakeError::NotHello { got: other.kind() }),
    }
}

/// Checks the peer's Hello: it speaks our [`PROTOCOL_VERSION`], and names
/// itself `expected_host`, the host the TLS layer authenticated (compared
/// byte for byte, as the peers file spells it). The version is checked
/// first: under another version the name might not mean the same.
pub fn check_hello(hello: &Hello, expected_host: &str) -> Result<(), HandshakeError> {
    if hello.protocol != PROTOCOL_VERSION {
        return Err(HandshakeError::ProtocolVersion {
            ours: PROTOCOL_VERSION,
            theirs: hello.protocol,
        });
    }
    if hello.host != expected_host {
        return Err(HandshakeError::WrongHost {
            expected: expected_host.to_owned(),
            claimed: hello.host.clone(),
        });
    }
    Ok(())
}

/// The capabilities a session uses: those both sides list, in `ours`'
/// order, each once. Both sides get the same set.
pub fn negotiate(ours: &[&str], theirs: &[String]) -> Vec<String> {
    let mut both: Vec<String> = Vec::new();
    for c in ours {
        if theirs.iter().any(|t| t == c) && !both.iter().any(|b| b == c) {
            both.push((*c).to_owned());
        }
    }
    both
}
