//! Why a handshake failed, in words an administrator can act on: our
//! refusal of a key ([`Refusal`], carried inside the rustls error so that
//! it reaches whoever logs the failure), the peer's refusal of ours, or
//! anything else ([`HandshakeFailure`]); and why a configuration could not
//! be built ([`TlsError`]).

use std::io;
use std::sync::Arc;

use omirr_config::peers::Fingerprint;
use rustls::{AlertDescription, CertificateError, OtherError};

/// Why a peer's certificate was refused. Every message names the key that
/// was presented, so the administrator can pin it or knows who knocked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A client (or, after a reload, a connected peer) whose key no host
    /// has pinned.
    #[error("refused a certificate with key {presented}: not pinned in the peers file")]
    NotPinned {
        /// The fingerprint of the key the client presented.
        presented: Fingerprint,
    },

    /// The host we dialed answered with a key pinned for nobody.
    #[error("refused a certificate with key {presented} from '{dialed}': not pinned in the peers file, which pins {expected} for '{dialed}'")]
    NotPinnedFor {
        /// The fingerprint of the key the server presented.
        presented: Fingerprint,
        /// The name of the host we dialed.
        dialed: String,
        /// The fingerprint the peers file pins for `dialed`.
        expected: Fingerprint,
    },

    /// The host we dialed answered with the key of another host.
    #[error("refused a certificate with key {presented} from '{dialed}': it is pinned for '{pinned_for}', not '{dialed}'")]
    PinnedForOther {
        /// The fingerprint of the key the server presented.
        presented: Fingerprint,
        /// The host the peers file pins that key for.
        pinned_for: String,
        /// The name of the host we dialed.
        dialed: String,
    },

    /// The host we dialed is in the peers file without a fingerprint, so
    /// no key is accepted for it.
    #[error("refused a certificate with key {presented} from '{dialed}': the peers file gives '{dialed}' no fingerprint, so it is never trusted")]
    NoFingerprint {
        /// The fingerprint of the key the server presented.
        presented: Fingerprint,
        /// The name of the host we dialed.
        dialed: String,
    },

    /// The host we dialed is not in the (possibly reloaded) peers file at
    /// all, and the key is pinned for no host.
    #[error("refused a certificate with key {presented} from '{dialed}': '{dialed}' is not in the peers file")]
    UnknownHost {
        /// The fingerprint of the key the server presented.
        presented: Fingerprint,
        /// The name of the host we dialed.
        dialed: String,
    },

    /// The certificate is pinned but the peer could not sign with its key.
    #[error("refused a certificate with key {presented}: its handshake signature does not verify ({reason}); the peer does not hold the matching private key")]
    BadSignature {
        /// The fingerprint of the key the certificate claims.
        presented: Fingerprint,
        /// rustls's error.
        reason: String,
    },

    /// Not a certificate we can take a fingerprint of.
    #[error("refused the peer's certificate: {reason}")]
    Unreadable {
        /// Why no fingerprint could be taken (see
        /// [`crate::identity::fingerprint_of_cert`]).
        reason: String,
    },
}

impl Refusal {
    /// The fingerprint of the key the peer presented, when it had one.
    pub fn presented(&self) -> Option<Fingerprint> {
        match self {
            Refusal::NotPinned { presented }
            | Refusal::NotPinnedFor { presented, .. }
            | Refusal::PinnedForOther { presented, .. }
            | Refusal::NoFingerprint { presented, .. }
            | Refusal::UnknownHost { presented, .. }
            | Refusal::BadSignature { presented, .. } => Some(*presented),
            Refusal::Unreadable { .. } => None,
        }
    }
}

/// Why a TLS configuration could not be built or a peer not identified.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// [`peer_identity`](super::peer_identity) refused the key the peer
    /// presented, or could not read its certificate.
    #[error(transparent)]
    Refused(#[from] Refusal),

    /// rustls would not take this host's certificate and key.
    #[error("cannot use this host's key and certificate for TLS: {0}")]
    Identity(rustls::Error),

    /// rustls would not set up the protocol versions with the ring
    /// provider; not expected to happen.
    #[error("cannot set up TLS 1.3 with the ring provider: {0}")]
    Config(rustls::Error),

    /// [`peer_identity`](super::peer_identity) was called on a connection
    /// whose peer has shown no certificate.
    #[error("the connection has no peer certificate; the TLS handshake is not complete")]
    NoPeerCertificate,
}

/// What went wrong in a handshake, read back out of the `io::Error` that
/// tokio-rustls returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeFailure {
    /// We refused the peer's key.
    #[error(transparent)]
    Refused(Refusal),

    /// The peer ended the handshake; the alert hints at why.
    #[error("the peer refused the handshake with alert {alert:?}{}", alert_hint(.alert))]
    RefusedByPeer {
        /// The alert the peer sent.
        alert: AlertDescription,
    },

    /// The peer does not speak TLS 1.3 with the ring provider's suites.
    #[error("the peer's TLS is incompatible with omirrd's (TLS 1.3 only): {detail}")]
    Incompatible {
        /// rustls's description of the mismatch.
        detail: String,
    },

    /// Anything else, such as a reset connection: the error's own text.
    #[error("{detail}")]
    Other {
        /// The io::Error's text.
        detail: String,
    },
}

/// What an alert most likely means between omirr hosts.
fn alert_hint(alert: &AlertDescription) -> &'static str {
    match alert {
        AlertDescription::CertificateUnknown
        | AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::UnknownCA
        | AlertDescription::AccessDenied => {
            "; is this host's key pinned in the peer's peers file, under this host's name?"
        }
        AlertDescription::CertificateRequired => "; the peer requires a client certificate",
        AlertDescription::ProtocolVersion => "; omirrd speaks only TLS 1.3",
        _ => "",
    }
}

/// The refusal one of our verifiers put into a failed handshake's error.
pub fn refusal(err: &io::Error) -> Option<&Refusal> {
    match err.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<Carried>().map(|carried| &carried.0)
        }
        _ => None,
    }
}

/// A [`Refusal`] inside a rustls error. rustls shows a
/// `CertificateError::Other` with `{:?}`, so this Debug is the readable
/// message: the plain text of the io::Error, which is what ends up logged
/// when nobody calls [`handshake_failure`], names the key.
#[derive(thiserror::Error)]
#[error(transparent)]
struct Carried(Refusal);

impl std::fmt::Debug for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// Why a handshake (or the first read after it) failed, for the log.
pub fn handshake_failure(err: &io::Error) -> HandshakeFailure {
    if let Some(refused) = refusal(err) {
        return HandshakeFailure::Refused(refused.clone());
    }
    let tls = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::AlertReceived(alert)) => {
            HandshakeFailure::RefusedByPeer { alert: *alert }
        }
        Some(rustls::Error::PeerIncompatible(why)) => HandshakeFailure::Incompatible {
            detail: format!("{why:?}"),
        },
        _ => HandshakeFailure::Other {
            detail: err.to_string(),
        },
    }
}

/// A refusal as rustls carries it: an "other" certificate error, which
/// also makes rustls send the peer a `certificate_unknown` alert.
pub(super) fn refuse(refusal: Refusal) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Carried(
        refusal,
    )))))
}
