//! Mutual TLS 1.3 between peers, trusting only the keys pinned in the peers
//! file.
//!
//! A mirror has no certificate authority: every host has a self-signed
//! certificate ([`crate::identity`]) and the peers file pins the fingerprint
//! of each host's public key. This module owns turning those pins into rustls
//! configurations, and turning a refused handshake into a log line an
//! administrator can act on.
//!
//! - [`PinSet`] holds the pins (host name <-> fingerprint); [`SharedPins`]
//!   lets a SIGHUP reload swap them under live configurations. The verifiers
//!   read the current set at every handshake, so removing a pin refuses that
//!   key's next connection without rebuilding anything. Dropping connections
//!   already established is the session layer's job.
//! - [`server_config`] accepts a client whose key is pinned for any host;
//!   [`peer_identity`] then says which host it is.
//! - [`client_config`] accepts a server only if its key is the one pinned for
//!   the host we meant to dial, whatever address answered.
//!
//! The pin replaces the CA chain and nothing else: each side still proves it
//! holds its private key by signing the handshake, and rustls's own code
//! checks that signature. Only TLS 1.3 is offered. Session resumption is off
//! on both sides, because a resumed session skips the certificate, and a
//! ticket would outlive a pin removed since it was issued.
//!
//! A refused key is reported with its fingerprint ([`Refusal`]), carried
//! inside the rustls error so that it reaches whoever logs the failed
//! handshake; [`refusal`] and [`handshake_failure`] get it back out of an
//! `io::Error`. In TLS 1.3 the client's handshake completes before the server
//! has checked the client's certificate, so a refused client learns of it on
//! its first read, as an alert from the peer.
//!
//! The parts, each its own file: the pins (`pins.rs`), the verifiers that
//! check a certificate against them (`verifier.rs`), the refusals and
//! failures (`failure.rs`); this file builds the configurations from them.
//! The sockets these configurations run on are [`crate::socket`]'s.

mod failure;
mod pins;
mod verifier;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use omirr_config::peers::Fingerprint;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, CommonState, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

pub use failure::{handshake_failure, refusal, HandshakeFailure, Refusal, TlsError};
pub use pins::{PinSet, SharedPins};

use crate::identity::Identity;
use verifier::{check_client, presented_fingerprint, PinnedClientVerifier, PinnedServerVerifier};

/// The only protocol version omirrd speaks.
static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// ring, not rustls's default aws-lc-rs, which needs cmake to build.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificate(identity: &Identity) -> CertificateDer<'static> {
    CertificateDer::from(identity.cert_der.clone())
}

fn private_key(identity: &Identity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone()))
}

/// The configuration for accepting peers: TLS 1.3, a client certificate
/// required and accepted if its key is pinned for any host in `pins` as
/// they are at the handshake. Call [`peer_identity`] afterwards to learn
/// which host connected.
pub fn server_config(identity: &Identity, pins: SharedPins) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_versions(identity, pins, TLS13_ONLY)
}

fn server_config_with_versions(
    identity: &Identity,
    pins: SharedPins,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedClientVerifier {
        pins,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![certificate(identity)], private_key(identity))
        .map_err(TlsError::Identity)?;
    // No resumption: every connection must show a certificate checked
    // against the pins in force.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The configuration for dialing the host called `peer`: TLS 1.3, our
/// certificate as the client certificate, and the server accepted only if
/// its key is the one pinned for `peer` at the handshake. Build one per
/// peer (it is cheap) and connect with [`server_name`]`(peer)`.
pub fn client_config(
    identity: &Identity,
    pins: SharedPins,
    peer: &str,
) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_with_versions(identity, pins, peer, TLS13_ONLY)
}

fn client_config_with_versions(
    identity: &Identity,
    pins: SharedPins,
    peer: &str,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedServerVerifier {
        pins,
        dialed: peer.to_string(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![certificate(identity)], private_key(identity))
        .map_err(TlsError::Identity)?;
    config.resumption = Resumption::disabled();
    // The server ignores SNI, and sending it would show on-path observers
    // which host of the mirror we are dialing.
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The name to pass to the TLS connector when dialing `peer`. It is never
/// checked nor sent (SNI is off; the pin decides), but rustls wants one:
/// the peer's name when it is a valid DNS name or IP address, so rustls's
/// debug logs say whom we dialed, else the unspecified address.
pub fn server_name(peer: &str) -> ServerName<'static> {
    ServerName::try_from(peer.to_string()).unwrap_or(ServerName::IpAddress(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED).into(),
    ))
}

/// Who is on the other end of a completed handshake: the pinned host name
/// of the key it presented, and that key's fingerprint.
///
/// Reads `pins` as they are now, so a pin removed since the handshake
/// refuses the peer here too. Pass the connection (`tls.get_ref().1` of a
/// tokio-rustls stream); it dereferences to [`CommonState`].
pub fn peer_identity(
    conn: &CommonState,
    pins: &SharedPins,
) -> Result<(String, Fingerprint), TlsError> {
    let cert = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or(TlsError::NoPeerCertificate)?;
    let presented = presented_fingerprint(cert)?;
    let name = check_client(&pins.current(), presented)?.to_string();
    Ok((name, presented))
}

#[cfg(test)]
mod tests;
