//! The pins at work: real handshakes over loopback between hosts with
//! real keys, and the checks and messages on their own.

use super::failure::refuse;
use super::verifier::check_server;
use super::*;
use crate::identity;
use omirr_config::peers::Peers;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::AlertDescription;
use std::io;
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
    let client =
        client_config_with_versions(&alpha.id, both.clone(), "beta", TLS13_ONLY).expect("client");
    let out = exchange(server, &both, client, &both, "beta").await;
    out.server.expect("TLS 1.3 server");
    out.client.expect("TLS 1.3 client");

    // And our client does not fall back to a TLS 1.2 server.
    let old_server = server_config_with_versions(&beta.id, both.clone(), &tls12).expect("server");
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
        format!(
            "refused a certificate with key {a} from 'beta': it is pinned for 'alpha', not 'beta'"
        )
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
