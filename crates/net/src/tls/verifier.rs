//! The checks of a peer's certificate against the pins, as rustls
//! verifiers: a server accepts a client whose key is pinned for any host
//! ([`PinnedClientVerifier`]); a client accepts a server only with the key
//! pinned for the host it dialed ([`PinnedServerVerifier`]). Each still
//! checks the handshake signature with rustls's own code, so the peer
//! proves it holds the key. TLS 1.2 signatures are refused.

use omirr_config::peers::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::failure::{refuse, Refusal};
use super::pins::{PinSet, SharedPins};
use crate::identity::fingerprint_of_cert;

pub(super) fn presented_fingerprint(cert: &CertificateDer<'_>) -> Result<Fingerprint, Refusal> {
    fingerprint_of_cert(cert.as_ref()).map_err(|e| Refusal::Unreadable {
        reason: e.to_string(),
    })
}

/// Accepts a client whose key is pinned for any host; returns which.
pub(super) fn check_client(pins: &PinSet, presented: Fingerprint) -> Result<&str, Refusal> {
    pins.host_of(&presented)
        .ok_or(Refusal::NotPinned { presented })
}

/// Accepts a server only if its key is the one pinned for `dialed`.
pub(super) fn check_server(
    pins: &PinSet,
    dialed: &str,
    presented: Fingerprint,
) -> Result<(), Refusal> {
    if pins.pin_of(dialed) == Some(&presented) {
        return Ok(());
    }
    let dialed = dialed.to_string();
    Err(if let Some(owner) = pins.host_of(&presented) {
        Refusal::PinnedForOther {
            presented,
            pinned_for: owner.to_string(),
            dialed,
        }
    } else if let Some(&expected) = pins.pin_of(&dialed) {
        Refusal::NotPinnedFor {
            presented,
            dialed,
            expected,
        }
    } else if pins.is_listed_without_pin(&dialed) {
        Refusal::NoFingerprint { presented, dialed }
    } else {
        Refusal::UnknownHost { presented, dialed }
    })
}

/// The proof of key possession, checked with rustls's code; a failure is
/// reported with the fingerprint of the key the peer claimed.
fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms).map_err(|e| {
        match presented_fingerprint(cert) {
            Ok(presented) => refuse(Refusal::BadSignature {
                presented,
                reason: e.to_string(),
            }),
            Err(unreadable) => refuse(unreadable),
        }
    })
}

/// TLS 1.2 is never negotiated (both configurations offer only 1.3); should
/// that ever change by mistake, its signatures are refused rather than
/// trusted unchecked.
fn tls12_refused() -> rustls::Error {
    rustls::Error::General("omirrd does not accept TLS 1.2".to_string())
}

/// The server's check of client certificates: pinned for some host.
#[derive(Debug)]
pub(super) struct PinnedClientVerifier {
    pub(super) pins: SharedPins,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA to hint at: the client has exactly one certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Validity dates are not checked: pinning replaces expiry.
        let presented = presented_fingerprint(end_entity).map_err(refuse)?;
        check_client(&self.pins.current(), presented).map_err(refuse)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client's check of the server: the key pinned for the host dialed.
#[derive(Debug)]
pub(super) struct PinnedServerVerifier {
    pub(super) pins: SharedPins,
    pub(super) dialed: String,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        // The name is a placeholder (see `server_name`): the pin for the
        // host we dialed decides, not DNS.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = presented_fingerprint(end_entity).map_err(refuse)?;
        check_server(&self.pins.current(), &self.dialed, presented).map_err(refuse)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
