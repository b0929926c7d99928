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

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, PoisonError, RwLock};

use omirr_config::peers::{Fingerprint, Peers};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::NoServerSessionStorage;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, CommonState, DigitallySignedStruct,
    DistinguishedName, OtherError, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::identity::{fingerprint_of_cert, Identity};

/// The only protocol version omirrd speaks.
static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

// ---------------------------------------------------------------------------
// Pins

/// The fingerprints pinned in the peers file, by host name and by key.
///
/// A host listed without a fingerprint is never trusted; it is remembered
/// only so that a refusal can say why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinSet {
    by_name: HashMap<String, Fingerprint>,
    by_fingerprint: HashMap<Fingerprint, String>,
    unpinned: BTreeSet<String>,
}

impl PinSet {
    /// The pins of a parsed peers file, which already guarantees that names
    /// and fingerprints are unique.
    pub fn from_peers(peers: &Peers) -> PinSet {
        let mut pins = PinSet::default();
        for peer in peers {
            match peer.fingerprint {
                Some(fp) => {
                    pins.by_name.insert(peer.name.clone(), fp);
                    pins.by_fingerprint.insert(fp, peer.name.clone());
                }
                None => {
                    pins.unpinned.insert(peer.name.clone());
                }
            }
        }
        pins
    }

    /// The host whose key has this fingerprint.
    pub fn host_of(&self, fingerprint: &Fingerprint) -> Option<&str> {
        self.by_fingerprint.get(fingerprint).map(String::as_str)
    }

    /// The fingerprint pinned for `host`, if it has one.
    pub fn pin_of(&self, host: &str) -> Option<&Fingerprint> {
        self.by_name.get(host)
    }

    /// Whether `host` is in the peers file without a fingerprint.
    pub fn is_listed_without_pin(&self, host: &str) -> bool {
        self.unpinned.contains(host)
    }

    /// How many hosts are pinned (hosts without a fingerprint not counted).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no host at all is pinned: every handshake will be refused.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl From<&Peers> for PinSet {
    fn from(peers: &Peers) -> PinSet {
        PinSet::from_peers(peers)
    }
}

/// The pins in force, shared by every configuration built with it and
/// replaced whole on reload.
///
/// An `RwLock` around an `Arc`: a handshake holds the read lock only to
/// clone the `Arc`, so a reload never waits for a handshake, and each
/// handshake checks against one set, the old or the new, never a mix.
/// Cloning a `SharedPins` shares it.
#[derive(Clone, Debug, Default)]
pub struct SharedPins(Arc<RwLock<Arc<PinSet>>>);

impl SharedPins {
    /// Puts `pins` in force, to be shared by cloning the result.
    pub fn new(pins: PinSet) -> SharedPins {
        SharedPins(Arc::new(RwLock::new(Arc::new(pins))))
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<PinSet> {
        // The lock guards one `Arc` assignment, which a panic cannot leave
        // half done, so a poisoned lock still holds a consistent set.
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `pins` in force for every handshake from now on.
    pub fn replace(&self, pins: PinSet) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pins);
    }
}

impl From<PinSet> for SharedPins {
    fn from(pins: PinSet) -> SharedPins {
        SharedPins::new(pins)
    }
}

// ---------------------------------------------------------------------------
// Errors

/// Why a peer's certificate was refused. Every message names the key that
/// was presented, so the administrator can pin it or knows who knocked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A client (or, after a reload, a connected peer) whose key no host
    /// has pinned.
    #[error("refused a certificate with key {presented}: not pinned in the peers file")]
    NotPinned { presented: Fingerprint },

    /// The host we dialed answered with a key pinned for nobody.
    #[error("refused a certificate with key {presented} from '{dialed}': not pinned in the peers file, which pins {expected} for '{dialed}'")]
    NotPinnedFor {
        presented: Fingerprint,
        dialed: String,
        expected: Fingerprint,
    },

    /// The host we dialed answered with the key of another host.
    #[error("refused a certificate with key {presented} from '{dialed}': it is pinned for '{pinned_for}', not '{dialed}'")]
    PinnedForOther {
        presented: Fingerprint,
        pinned_for: String,
        dialed: String,
    },

    #[error("refused a certificate with key {presented} from '{dialed}': the peers file gives '{dialed}' no fingerprint, so it is never trusted")]
    NoFingerprint {
        presented: Fingerprint,
        dialed: String,
    },

    #[error("refused a certificate with key {presented} from '{dialed}': '{dialed}' is not in the peers file")]
    UnknownHost {
        presented: Fingerprint,
        dialed: String,
    },

    /// The certificate is pinned but the peer could not sign with its key.
    #[error("refused a certificate with key {presented}: its handshake signature does not verify ({reason}); the peer does not hold the matching private key")]
    BadSignature {
        presented: Fingerprint,
        reason: String,
    },

    /// Not a certificate we can take a fingerprint of.
    #[error("refused the peer's certificate: {reason}")]
    Unreadable { reason: String },
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
    #[error(transparent)]
    Refused(#[from] Refusal),

    #[error("cannot use this host's key and certificate for TLS: {0}")]
    Identity(rustls::Error),

    #[error("cannot set up TLS 1.3 with the ring provider: {0}")]
    Config(rustls::Error),

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
    RefusedByPeer { alert: AlertDescription },

    /// The peer does not speak TLS 1.3 with the ring provider's suites.
    #[error("the peer's TLS is incompatible with omirrd's (TLS 1.3 only): {detail}")]
    Incompatible { detail: String },

    /// Anything else, such as a reset connection: the error's own text.
    #[error("{detail}")]
    Other { detail: String },
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
fn refuse(refusal: Refusal) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Carried(
        refusal,
    )))))
}

// ---------------------------------------------------------------------------
// Checks

fn presented_fingerprint(cert: &CertificateDer<'_>) -> Result<Fingerprint, Refusal> {
    fingerprint_of_cert(cert.as_ref()).map_err(|e| Refusal::Unreadable {
        reason: e.to_string(),
    })
}

/// Accepts a client whose key is pinned for any host; returns which.
fn check_client(pins: &PinSet, presented: Fingerprint) -> Result<&str, Refusal> {
    pins.host_of(&presented)
        .ok_or(Refusal::NotPinned { presented })
}

/// Accepts a server only if its key is the one pinned for `dialed`.
fn check_server(pins: &PinSet, dialed: &str, presented: Fingerprint) -> Result<(), Refusal> {
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

// ---------------------------------------------------------------------------
// Verifiers

/// The server's check of client certificates: pinned for some host.
#[derive(Debug)]
struct PinnedClientVerifier {
    pins: SharedPins,
    algorithms: WebPkiSupportedAlgorithms,
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
struct PinnedServerVerifier {
    pins: SharedPins,
    dialed: String,
    algorithms: WebPkiSupportedAlgorithms,
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

// ---------------------------------------------------------------------------
// Configurations

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
mod tests {
    use super::*;
    use crate::identity;
    use rustls::sign::{CertifiedKey, SingleCertAndKey};
    use std::path::Path;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// A host's identity, with the directory that holds its key.
    struct Host {
        id: Identity,
        _dir: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Host {
            let dir = tempfile::tempdir().expect("tempdir");
            let id = identity::generate(dir.path()).expect("generate");
            Host { id, _dir: dir }
        }

        fn fp(&self) -> Fingerprint {
            self.id.fingerprint
        }
    }

    /// Pins parsed from a real peers file, as the daemon builds them.
    fn pins(entries: &[(&str, Option<Fingerprint>)]) -> PinSet {
        let mut text = String::new();
        for (name, fp) in entries {
            text.push_str(name);
            text.push_str(" 127.0.0.1");
            if let Some(fp) = fp {
                text.push_str(&format!(" {fp}"));
            }
            text.push('\n');
        }
        let (peers, _warnings) = Peers::parse(&text, Path::new("peers")).expect("peers file");
        PinSet::from_peers(&peers)
    }

    fn shared(entries: &[(&str, Option<Fingerprint>)]) -> SharedPins {
        SharedPins::new(pins(entries))
    }

    type Side = Result<(String, Fingerprint), io::Error>;

    /// What each side of one connection got.
    struct Outcome {
        server: Side,
        client: Side,
    }

    impl Outcome {
        fn server_err(&self) -> &io::Error {
            match &self.server {
                Ok(who) => panic!("the server accepted {who:?}"),
                Err(e) => e,
            }
        }

        fn client_err(&self) -> &io::Error {
            match &self.client {
                Ok(who) => panic!("the client accepted {who:?}"),
                Err(e) => e,
            }
        }
    }

    /// Connects a client to a server over loopback, each side identifies
    /// the other, then `payload` goes server -> client and back. The server
    /// speaks first so that a refused client reads the server's alert
    /// rather than a reset caused by data the server never read.
    async fn exchange_with(
        server: Arc<ServerConfig>,
        server_pins: &SharedPins,
        client: Arc<ClientConfig>,
        client_pins: &SharedPins,
        dialed: &str,
        payload: &[u8],
    ) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let acceptor = TlsAcceptor::from(server);
        let connector = TlsConnector::from(client);

        let server_side = async {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let who = peer_identity(tls.get_ref().1, server_pins).map_err(io::Error::other)?;
            tls.write_all(payload).await?;
            tls.flush().await?;
            let mut back = vec![0; payload.len()];
            tls.read_exact(&mut back).await?;
            if back != payload {
                return Err(io::Error::other("the payload came back changed"));
            }
            Ok(who)
        };
        let client_side = async {
            let tcp = TcpStream::connect(addr).await?;
            let mut tls = connector.connect(server_name(dialed), tcp).await?;
            let who = peer_identity(tls.get_ref().1, client_pins).map_err(io::Error::other)?;
            let mut got = vec![0; payload.len()];
            tls.read_exact(&mut got).await?;
            tls.write_all(&got).await?;
            tls.shutdown().await?;
            Ok(who)
        };
        let (server, client) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(server_side, client_side)
        })
        .await
        .expect("the exchange hung");
        Outcome { server, client }
    }

    async fn exchange(
        server: Arc<ServerConfig>,
        server_pins: &SharedPins,
        client: Arc<ClientConfig>,
        client_pins: &SharedPins,
        dialed: &str,
    ) -> Outcome {
        exchange_with(server, server_pins, client, client_pins, dialed, b"hello").await
    }

    fn refused(err: &io::Error) -> Refusal {
        match handshake_failure(err) {
            HandshakeFailure::Refused(r) => r,
            other => panic!("expected our refusal, got {other:?} from {err}"),
        }
    }

    fn refused_by_peer(err: &io::Error) -> AlertDescription {
        match handshake_failure(err) {
            HandshakeFailure::RefusedByPeer { alert } => alert,
            other => panic!("expected the peer's refusal, got {other:?} from {err}"),
        }
    }

    #[tokio::test]
    async fn pinned_hosts_handshake_and_learn_each_others_names() {
        let (alpha, beta) = (Host::new(), Host::new());
        let both = [("alpha", Some(alpha.fp())), ("beta", Some(beta.fp()))];
        let (alpha_pins, beta_pins) = (shared(&both), shared(&both));

        // beta listens, alpha dials it.
        let server = server_config(&beta.id, beta_pins.clone()).expect("server config");
        let client = client_config(&alpha.id, alpha_pins.clone(), "beta").expect("client config");
        let out = exchange(server, &beta_pins, client, &alpha_pins, "beta").await;
        assert_eq!(
            out.server.expect("server"),
            ("alpha".to_string(), alpha.fp())
        );
        assert_eq!(out.client.expect("client"), ("beta".to_string(), beta.fp()));
    }

    #[tokio::test]
    async fn application_data_round_trips() {
        let (alpha, beta) = (Host::new(), Host::new());
        let both = shared(&[("alpha", Some(alpha.fp())), ("beta", Some(beta.fp()))]);
        let server = server_config(&beta.id, both.clone()).expect("server config");
        let client = client_config(&alpha.id, both.clone(), "beta").expect("client config");
        // Many TLS records (16 KiB each), with a pattern that shows any
        // reordering or loss.
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let out = exchange_with(server, &both, client, &both, "beta", &payload).await;
        out.server.expect("server");
        out.client.expect("client");
    }

    #[tokio::test]
    async fn client_with_unpinned_key_is_refused_by_the_server() {
        let (stranger, beta) = (Host::new(), Host::new());
        let beta_pins = shared(&[("beta", Some(beta.fp()))]);
        // The stranger trusts beta; beta does not know the stranger.
        let stranger_pins = shared(&[("beta", Some(beta.fp()))]);
        let server = server_config(&beta.id, beta_pins.clone()).expect("server config");
        let client = client_config(&stranger.id, stranger_pins.clone(), "beta").expect("client");
        let out = exchange(server, &beta_pins, client, &stranger_pins, "beta").await;

        let err = out.server_err();
        assert_eq!(
            refused(err),
            Refusal::NotPinned {
                presented: stranger.fp()
            }
        );
        let logged = err.to_string();
        assert!(
            logged.contains(&format!(
                "refused a certificate with key {}: not pinned in the peers file",
                stranger.fp()
            )),
            "{logged}"
        );
        assert_eq!(
            refused_by_peer(out.client_err()),
            AlertDescription::CertificateUnknown
        );
    }

    #[tokio::test]
    async fn server_with_unpinned_key_is_refused_by_the_client() {
        let (alpha, impostor) = (Host::new(), Host::new());
        let real_beta = Host::new();
        // alpha pins the real beta; the impostor answers at beta's address.
        let alpha_pins = shared(&[("alpha", Some(alpha.fp())), ("beta", Some(real_beta.fp()))]);
        let impostor_pins = shared(&[("alpha", Some(alpha.fp()))]);
        let server = server_config(&impostor.id, impostor_pins.clone()).expect("server config");
        let client = client_config(&alpha.id, alpha_pins.clone(), "beta").expect("client config");
        let out = exchange(server, &impostor_pins, client, &alpha_pins, "beta").await;

        let err = out.client_err();
        assert_eq!(
            refused(err),
            Refusal::NotPinnedFor {
                presented: impostor.fp(),
                dialed: "beta".to_string(),
                expected: real_beta.fp(),
            }
        );
        assert!(
            err.to_string().contains(&impostor.fp().to_string()),
            "{err}"
        );
        assert_eq!(
            refused_by_peer(out.server_err()),
            AlertDescription::CertificateUnknown
        );
    }

    #[tokio::test]
    async fn server_pinned_under_another_name_is_refused() {
        let (alpha, beta, gamma) = (Host::new(), Host::new(), Host::new());
        let all = [
            ("alpha", Some(alpha.fp())),
            ("beta", Some(beta.fp())),
            ("gamma", Some(gamma.fp())),
        ];
        let (alpha_pins, gamma_pins) = (shared(&all), shared(&all));
        // alpha dials beta, but gamma answers: a trusted key, the wrong host.
        let server = server_config(&gamma.id, gamma_pins.clone()).expect("server config");
        let client = client_config(&alpha.id, alpha_pins.clone(), "beta").expect("client config");
        let out = exchange(server, &gamma_pins, client, &alpha_pins, "beta").await;

        let err = out.client_err();
        let refusal = refused(err);
        assert_eq!(
            refusal,
            Refusal::PinnedForOther {
                presented: gamma.fp(),
                pinned_for: "gamma".to_string(),
                dialed: "beta".to_string(),
            }
        );
        assert_eq!(
            refusal.to_string(),
            format!(
                "refused a certificate with key {} from 'beta': it is pinned for 'gamma', not 'beta'",
                gamma.fp()
            )
        );
        assert!(out.server.is_err());
    }

    #[tokio::test]
    async fn host_without_fingerprint_is_refused_both_ways() {
        let (alpha, delta) = (Host::new(), Host::new());
        // Both peers files list delta without a fingerprint.
        let entries = [("alpha", Some(alpha.fp())), ("delta", None)];
        let (alpha_pins, delta_pins) = (shared(&entries), shared(&entries));

        // delta dials alpha: alpha refuses delta's key.
        let server = server_config(&alpha.id, alpha_pins.clone()).expect("server config");
        let client = client_config(&delta.id, delta_pins.clone(), "alpha").expect("client config");
        let out = exchange(server, &alpha_pins, client, &delta_pins, "alpha").await;
        assert_eq!(
            refused(out.server_err()),
            Refusal::NotPinned {
                presented: delta.fp()
            }
        );
        assert!(out.client.is_err());

        // alpha dials delta: alpha refuses delta's key, and says why.
        let server = server_config(&delta.id, delta_pins.clone()).expect("server config");
        let client = client_config(&alpha.id, alpha_pins.clone(), "delta").expect("client config");
        let out = exchange(server, &delta_pins, client, &alpha_pins, "delta").await;
        let refusal = refused(out.client_err());
        assert_eq!(
            refusal,
            Refusal::NoFingerprint {
                presented: delta.fp(),
                dialed: "delta".to_string(),
            }
        );
        assert!(
            refusal.to_string().ends_with(
                "from 'delta': the peers file gives 'delta' no fingerprint, so it is never trusted"
            ),
            "{refusal}"
        );
    }

    #[tokio::test]
    async fn tls12_is_not_offered() {
        let (alpha, beta) = (Host::new(), Host::new());
        let both = shared(&[("alpha", Some(alpha.fp())), ("beta", Some(beta.fp()))]);
        let tls12 = [&rustls::version::TLS12];

        // A client that offers only TLS 1.2 is turned away by our server...
        let server = server_config(&beta.id, both.clone()).expect("server config");
        let old_client =
            client_config_with_versions(&alpha.id, both.clone(), "beta", &tls12).expect("client");
        let out = exchange(server.clone(), &both, old_client, &both, "beta").await;
        assert!(
            matches!(
                handshake_failure(out.server_err()),
                HandshakeFailure::Incompatible { .. }
            ),
            "{}",
            out.server_err()
        );
        assert_eq!(
            refused_by_peer(out.client_err()),
            AlertDescription::ProtocolVersion
        );

        // ...while the same client allowed TLS 1.3 gets in: the refusal
        // above was the version, nothing else.
        let client = client_config_with_versions(&alpha.id, both.clone(), "beta", TLS13_ONLY)
            .expect("client");
        let out = exchange(server, &both, client, &both, "beta").await;
        out.server.expect("TLS 1.3 server");
        out.client.expect("TLS 1.3 client");

        // And our client does not fall back to a TLS 1.2 server.
        let old_server =
            server_config_with_versions(&beta.id, both.clone(), &tls12).expect("server");
        let client = client_config(&alpha.id, both.clone(), "beta").expect("client config");
        let out = exchange(old_server, &both, client, &both, "beta").await;
        assert_eq!(
            refused_by_peer(out.client_err()),
            AlertDescription::ProtocolVersion
        );
        assert!(
            matches!(
                handshake_failure(out.server_err()),
                HandshakeFailure::Incompatible { .. }
            ),
            "{}",
            out.server_err()
        );
    }

    #[tokio::test]
    async fn removing_a_pin_refuses_the_next_handshake_without_a_new_config() {
        let (alpha, beta) = (Host::new(), Host::new());
        let both = [("alpha", Some(alpha.fp())), ("beta", Some(beta.fp()))];
        let (alpha_pins, beta_pins) = (shared(&both), shared(&both));
        let server = server_config(&beta.id, beta_pins.clone()).expect("server config");
        let client = client_config(&alpha.id, alpha_pins.clone(), "beta").expect("client config");
        let connect = || {
            exchange(
                server.clone(),
                &beta_pins,
                client.clone(),
                &alpha_pins,
                "beta",
            )
        };

        // A first connection would let a resuming client skip the check.
        let out = connect().await;
        out.server.expect("first connection, server");
        out.client.expect("first connection, client");

        // beta's reload drops alpha.
        beta_pins.replace(pins(&[("beta", Some(beta.fp()))]));
        let out = connect().await;
        assert_eq!(
            refused(out.server_err()),
            Refusal::NotPinned {
                presented: alpha.fp()
            }
        );

        // Pinned again, accepted again.
        beta_pins.replace(pins(&both));
        let out = connect().await;
        out.server.expect("re-pinned, server");
        out.client.expect("re-pinned, client");

        // alpha's reload marks beta as untrusted.
        alpha_pins.replace(pins(&[("alpha", Some(alpha.fp())), ("beta", None)]));
        let out = connect().await;
        assert_eq!(
            refused(out.client_err()),
            Refusal::NoFingerprint {
                presented: beta.fp(),
                dialed: "beta".to_string(),
            }
        );
    }

    /// A certificate that is pinned, presented with a key that is not its
    /// own: only the handshake signature can tell.
    fn stolen_certificate(cert_of: &Host, key_of: &Host) -> Arc<CertifiedKey> {
        let key = provider()
            .key_provider
            .load_private_key(private_key(&key_of.id))
            .expect("key");
        Arc::new(CertifiedKey::new(vec![certificate(&cert_of.id)], key))
    }

    #[tokio::test]
    async fn client_without_the_pinned_key_is_refused() {
        let (alpha, beta, thief) = (Host::new(), Host::new(), Host::new());
        let both = shared(&[("alpha", Some(alpha.fp())), ("beta", Some(beta.fp()))]);
        let server = server_config(&beta.id, both.clone()).expect("server config");
        let provider = provider();
        let verifier = Arc::new(PinnedServerVerifier {
            pins: both.clone(),
            dialed: "beta".to_string(),
            algorithms: provider.signature_verification_algorithms,
        });
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(TLS13_ONLY)
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(stolen_certificate(
                &alpha, &thief,
            ))));
        let out = exchange(server, &both, Arc::new(client), &both, "beta").await;

        let refusal = refused(out.server_err());
        assert!(
            matches!(refusal, Refusal::BadSignature { presented, .. } if presented == alpha.fp()),
            "{refusal:?}"
        );
        assert!(
            refusal
                .to_string()
                .contains("does not hold the matching private key"),
            "{refusal}"
        );
    }

    #[tokio::test]
    async fn server_without_the_pinned_key_is_refused() {
        let (alpha, beta, thief) = (Host::new(), Host::new(), Host::new());
        let both = shared(&[("alpha", Some(alpha.fp())), ("beta", Some(beta.fp()))]);
        let provider = provider();
        let verifier = Arc::new(PinnedClientVerifier {
            pins: both.clone(),
            algorithms: provider.signature_verification_algorithms,
        });
        let server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(TLS13_ONLY)
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(stolen_certificate(
                &beta, &thief,
            ))));
        let client = client_config(&alpha.id, both.clone(), "beta").expect("client config");
        let out = exchange(Arc::new(server), &both, client, &both, "beta").await;

        let refusal = refused(out.client_err());
        assert!(
            matches!(refusal, Refusal::BadSignature { presented, .. } if presented == beta.fp()),
            "{refusal:?}"
        );
    }

    #[test]
    fn pin_set_maps_names_and_keys_both_ways() {
        let (a, b) = (
            Fingerprint::from_bytes([1; 32]),
            Fingerprint::from_bytes([2; 32]),
        );
        let set = pins(&[("alpha", Some(a)), ("beta", Some(b)), ("delta", None)]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.host_of(&a), Some("alpha"));
        assert_eq!(set.host_of(&b), Some("beta"));
        assert_eq!(set.pin_of("beta"), Some(&b));
        assert_eq!(set.pin_of("delta"), None);
        assert!(set.is_listed_without_pin("delta"));
        assert!(!set.is_listed_without_pin("alpha"));
        assert_eq!(set.host_of(&Fingerprint::from_bytes([3; 32])), None);
        assert!(PinSet::default().is_empty());
    }

    #[test]
    fn shared_pins_are_swapped_for_every_holder() {
        let a = Fingerprint::from_bytes([1; 32]);
        let pins_one = SharedPins::new(pins(&[("alpha", Some(a))]));
        let pins_two = pins_one.clone();
        let before = pins_two.current();
        pins_one.replace(PinSet::default());
        assert!(pins_two.current().is_empty());
        // A handshake that took the old set keeps it to its end.
        assert_eq!(before.host_of(&a), Some("alpha"));
    }

    #[test]
    fn server_check_names_the_host_dialed_and_the_key_presented() {
        let (a, b, x) = (
            Fingerprint::from_bytes([1; 32]),
            Fingerprint::from_bytes([2; 32]),
            Fingerprint::from_bytes([9; 32]),
        );
        let set = pins(&[("alpha", Some(a)), ("beta", Some(b)), ("delta", None)]);
        assert_eq!(check_server(&set, "beta", b), Ok(()));
        let message = |dialed: &str, presented| {
            check_server(&set, dialed, presented)
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            message("beta", a),
            format!("refused a certificate with key {a} from 'beta': it is pinned for 'alpha', not 'beta'")
        );
        assert_eq!(
            message("beta", x),
            format!("refused a certificate with key {x} from 'beta': not pinned in the peers file, which pins {b} for 'beta'")
        );
        assert_eq!(
            message("delta", x),
            format!("refused a certificate with key {x} from 'delta': the peers file gives 'delta' no fingerprint, so it is never trusted")
        );
        assert_eq!(
            message("omega", x),
            format!(
                "refused a certificate with key {x} from 'omega': 'omega' is not in the peers file"
            )
        );
        assert_eq!(check_client(&set, a), Ok("alpha"));
        assert_eq!(
            check_client(&set, x).expect_err("refused").to_string(),
            format!("refused a certificate with key {x}: not pinned in the peers file")
        );
    }

    #[test]
    fn handshake_failure_reads_what_it_can() {
        let presented = Fingerprint::from_bytes([7; 32]);
        let ours = io::Error::new(
            io::ErrorKind::InvalidData,
            refuse(Refusal::NotPinned { presented }),
        );
        assert_eq!(refusal(&ours), Some(&Refusal::NotPinned { presented }));
        // What tokio-rustls logs is rustls's text around ours.
        assert!(ours.to_string().contains(&presented.to_string()), "{ours}");

        let theirs = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateUnknown),
        );
        assert_eq!(refusal(&theirs), None);
        assert!(
            handshake_failure(&theirs)
                .to_string()
                .contains("is this host's key pinned in the peer's peers file"),
            "{}",
            handshake_failure(&theirs)
        );

        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(
            handshake_failure(&reset),
            HandshakeFailure::Other {
                detail: reset.to_string()
            }
        );
    }

    #[test]
    fn server_name_is_a_placeholder_that_always_exists() {
        assert_eq!(server_name("beta").to_str(), "beta");
        assert_eq!(server_name("10.0.0.1").to_str(), "10.0.0.1");
        // A peer name need not be a DNS name.
        assert_eq!(server_name("a..b").to_str(), "0.0.0.0");
    }

    #[test]
    fn a_bad_key_is_reported_as_ours() {
        let host = Host::new();
        let mut broken = host.id.clone();
        broken.key_der = vec![0x30, 0x00];
        let pins = SharedPins::default();
        assert!(matches!(
            server_config(&broken, pins.clone()),
            Err(TlsError::Identity(_))
        ));
        assert!(matches!(
            client_config(&broken, pins, "beta"),
            Err(TlsError::Identity(_))
        ));
    }
}
