//! This host's TLS identity: its key pair, certificate and fingerprint.
//!
//! A host is its key. Peers pin the BLAKE3 fingerprint of its public key
//! (see [`omirr_config::peers::Fingerprint`]), not of its certificate, so
//! the certificate is only a wrapper TLS requires: self-signed, long-lived
//! (pinning replaces expiry), and reissued from the key whenever it is
//! missing or does not match. The key, on the other hand, is created once
//! and never replaced silently, because a new key means every peer must
//! re-pin.
//!
//! Both live in the state directory: `key.pem` (PKCS#8, mode 0600) and
//! `cert.pem` (mode 0644). They are read and written through
//! `omirr_open::secure`, which refuses files others can write.

use std::fmt;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use omirr_config::peers::Fingerprint;
use omirr_open::secure::{self, describe, SecureFileError, Who};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::{Date, OffsetDateTime};
use x509_parser::pem::Pem;

/// The private key's file name in the state directory.
pub const KEY_FILE: &str = "key.pem";
/// The certificate's file name in the state directory.
pub const CERT_FILE: &str = "cert.pem";

/// The subject of every certificate. Host names are not part of the
/// identity: peers recognise the key, whatever the host is called.
const SUBJECT_CN: &str = "omirrd";
/// Certificate lifetime. Fingerprint pinning, not expiry, decides trust,
/// and an expired certificate would only break a working mirror.
const VALIDITY_YEARS: i32 = 100;

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
const STATE_DIR_MODE: u32 = 0o700;

/// A host's TLS identity.
#[derive(Clone)]
pub struct Identity {
    /// The self-signed certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// What peers pin: the hash of the certificate's public key.
    pub fingerprint: Fingerprint,
}

impl fmt::Debug for Identity {
    // Written by hand so that logging an identity never leaks the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &format_args!("{}", self.fingerprint))
            .field("cert_der", &format_args!("<{} bytes>", self.cert_der.len()))
            .field("key_der", &format_args!("<redacted>"))
            .finish()
    }
}

/// Why an identity could not be created, loaded or read from a certificate.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A key or certificate file is unsafe or unreadable; the message names
    /// the path.
    #[error(transparent)]
    File(#[from] SecureFileError),

    /// [`generate`] found a key already in place; holds the key's path.
    #[error(
        "{} already exists; a new key would give this host a new fingerprint that every peer would have to re-pin. If that is really wanted, remove {} first",
        path.display(),
        path.display()
    )]
    KeyExists {
        /// The existing key file.
        path: PathBuf,
    },

    /// [`load`] found a key file that its group or others can read,
    /// write or execute.
    #[error(
        "{} is {access} by {who} (mode {mode:04o}); the private key must be accessible only by its owner. Fix: chmod 600 {}",
        path.display(),
        path.display()
    )]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// "writable", "readable" or, for execute-only bits,
        /// "accessible".
        access: &'static str,
        /// Who has the access: the group, others or both.
        who: Who,
        /// The file's permission bits.
        mode: u32,
    },

    /// The key file is not one PKCS#8 private key that can sign: bad PEM,
    /// an OpenSSL traditional or encrypted key, or an unusable algorithm.
    #[error("{}: {reason}; expected a PKCS#8 private key (-----BEGIN PRIVATE KEY-----)", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// [`generate`] could not create the state directory.
    #[error("cannot create state directory {}: {reason}", path.display())]
    StateDir {
        /// The state directory.
        path: PathBuf,
        /// The system's error, described.
        reason: String,
    },

    /// Generating a key, or issuing a certificate for one, failed.
    #[error("cannot create a key and certificate for {}: {reason}", path.display())]
    Generate {
        /// The state directory.
        path: PathBuf,
        /// rcgen's error.
        reason: String,
    },

    /// Only from [`fingerprint_of_cert`], whose certificate may come off the
    /// wire and so has no path; the caller adds which peer sent it.
    #[error("not a valid X.509 certificate: {reason}")]
    BadCertificate {
        /// What the X.509 parser found wrong, or the trailing bytes.
        reason: String,
    },
}

/// The fingerprint of a DER certificate's public key. The TLS layer uses
/// this same function on a peer's certificate, so what an administrator
/// pins is exactly what the handshake checks.
pub fn fingerprint_of_cert(cert_der: &[u8]) -> Result<Fingerprint, IdentityError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| {
        IdentityError::BadCertificate {
            reason: e.to_string(),
        }
    })?;
    // Trailing bytes would let two different inputs share a fingerprint.
    if !rest.is_empty() {
        return Err(IdentityError::BadCertificate {
            reason: format!("{} bytes after the certificate", rest.len()),
        });
    }
    Ok(Fingerprint::of_spki(cert.tbs_certificate.subject_pki.raw))
}

/// Creates a new identity in `state_dir` (made, mode 0700, if missing).
/// Refuses if a key already exists there: replacing a key is a decision
/// for the administrator, not something to do on the way.
pub fn generate(state_dir: &Path) -> Result<Identity, IdentityError> {
    let key_path = state_dir.join(KEY_FILE);
    if key_exists(&key_path)? {
        return Err(IdentityError::KeyExists { path: key_path });
    }
    create_state_dir(state_dir)?;

    let generate_error = |reason: String| IdentityError::Generate {
        path: state_dir.to_path_buf(),
        reason,
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| generate_error(e.to_string()))?;
    let cert = issue_certificate(&key).map_err(|e| generate_error(e.to_string()))?;

    // The key first: a crash before the certificate is written is repaired
    // by the next load, which reissues it.
    secure::write_new(&key_path, key.serialize_pem().as_bytes(), KEY_MODE).map_err(|e| {
        match e {
            // Another process created it since the check above.
            SecureFileError::Exists { path } => IdentityError::KeyExists { path },
            other => other.into(),
        }
    })?;
    let cert_der = cert.der().to_vec();
    secure::write_atomic(&state_dir.join(CERT_FILE), cert.pem().as_bytes(), CERT_MODE)?;
    Ok(Identity {
        fingerprint: fingerprint_of_cert(&cert_der)?,
        cert_der,
        key_der: key.serialize_der(),
    })
}

/// Loads the identity in `state_dir`. The key must exist, be readable by
/// its owner only and be writable by nobody else. A missing, unreadable or
/// mismatched certificate is reissued from the key, which keeps the
/// fingerprint.
pub fn load(state_dir: &Path) -> Result<Identity, IdentityError> {
    let key_path = state_dir.join(KEY_FILE);
    // A private key others can write is reported like one they can read,
    // so that the fix given (chmod 600) is the whole fix.
    let (key_pem, mode) = match secure::read_secure_with_mode(&key_path) {
        Err(SecureFileError::Writable { path, who, mode }) => {
            return Err(IdentityError::KeyExposed {
                path,
                access: "writable",
                who,
                mode,
            })
        }
        r => r?,
    };
    // read_secure has refused write access for group and others; a private
    // key must not even be readable by them.
    if let Some(who) = Who::having(mode, 0o7) {
        let access = if Who::having(mode, 0o4).is_some() {
            "readable"
        } else {
            "accessible"
        };
        return Err(IdentityError::KeyExposed {
            path: key_path,
            access,
            who,
            mode,
        });
    }
    let key = parse_key(&key_path, &key_pem)?;
    let spki = key.subject_public_key_info();

    let cert_path = state_dir.join(CERT_FILE);
    let cert_der = match read_cert(&cert_path, &spki)? {
        Some(der) => der,
        None => {
            let cert = issue_certificate(&key).map_err(|e| IdentityError::Generate {
                path: state_dir.to_path_buf(),
                reason: e.to_string(),
            })?;
            secure::write_atomic(&cert_path, cert.pem().as_bytes(), CERT_MODE)?;
            cert.der().to_vec()
        }
    };
    Ok(Identity {
        fingerprint: fingerprint_of_cert(&cert_der)?,
        cert_der,
        key_der: key.serialize_der(),
    })
}

/// Loads the identity in `state_dir`, creating one if there is no key yet.
/// The flag is true when a new identity was created: its fingerprint must
/// be added to the peers file before any peer will trust this host.
pub fn load_or_generate(state_dir: &Path) -> Result<(Identity, bool), IdentityError> {
    if key_exists(&state_dir.join(KEY_FILE))? {
        return load(state_dir).map(|id| (id, false));
    }
    match generate(state_dir) {
        Ok(id) => Ok((id, true)),
        // Created concurrently by another process: use it.
        Err(IdentityError::KeyExists { .. }) => load(state_dir).map(|id| (id, false)),
        Err(e) => Err(e),
    }
}

/// Whether anything (even a dangling symlink) is at the key's path, so it
/// is never overwritten. Errors other than "not found" are reported, not
/// taken as absence.
fn key_exists(key_path: &Path) -> Result<bool, IdentityError> {
    match std::fs::symlink_metadata(key_path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SecureFileError::Io {
            path: key_path.to_path_buf(),
            action: "inspect",
            error: e,
        }
        .into()),
    }
}

fn create_state_dir(state_dir: &Path) -> Result<(), IdentityError> {
    DirBuilder::new()
        .recursive(true)
        .mode(STATE_DIR_MODE)
        .create(state_dir)
        .map_err(|e| IdentityError::StateDir {
            path: state_dir.to_path_buf(),
            reason: describe(&e),
        })
}

/// Decodes key.pem: one PKCS#8 `PRIVATE KEY` block, of a kind rcgen signs
/// with.
fn parse_key(path: &Path, pem: &[u8]) -> Result<KeyPair, IdentityError> {
    let bad = |reason: String| IdentityError::BadKey {
        path: path.to_path_buf(),
        reason,
    };
    let mut der = None;
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| bad(format!("malformed PEM: {e}")))?;
        match block.label.as_str() {
            "PRIVATE KEY" => {
                der = Some(block.contents);
                break;
            }
            // Say what to do with the usual mistake: an OpenSSL
            // "traditional" key instead of PKCS#8.
            label @ ("EC PRIVATE KEY" | "RSA PRIVATE KEY") => {
                return Err(bad(format!(
                    "found a {label} block; convert it with `openssl pkcs8 -topk8 -nocrypt`"
                )))
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(bad(
                    "the key is encrypted, and omirrd starts unattended".to_string()
                ))
            }
            _ => {}
        }
    }
    let der = der.ok_or_else(|| bad("no PRIVATE KEY block".to_string()))?;
    KeyPair::try_from(der.as_slice()).map_err(|e| bad(format!("cannot use the key: {e}")))
}

/// Reads cert.pem and returns its DER if it holds a certificate for the key
/// whose SubjectPublicKeyInfo is `spki`. `None` means "reissue": missing,
/// unparsable or for another key. Unsafe permissions are still an error.
fn read_cert(path: &Path, spki: &[u8]) -> Result<Option<Vec<u8>>, IdentityError> {
    let pem = match secure::read_secure(path) {
        Ok(pem) => pem,
        Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(Ok(block)) = Pem::iter_from_buffer(&pem).next() else {
        return Ok(None);
    };
    if block.label != "CERTIFICATE" {
        return Ok(None);
    }
    // The whole SPKI, byte for byte: the fingerprint hashes those bytes, so
    // anything less than equality could change the fingerprint.
    let matches = match x509_parser::parse_x509_certificate(&block.contents) {
        Ok((rest, cert)) => rest.is_empty() && cert.tbs_certificate.subject_pki.raw == spki,
        Err(_) => false,
    };
    Ok(matches.then_some(block.contents))
}

/// A self-signed certificate for `key`, valid from yesterday (tolerating
/// clock skew between peers) for [`VALIDITY_YEARS`].
fn issue_certificate(key: &KeyPair) -> Result<rcgen::Certificate, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, SUBJECT_CN);
    params.distinguished_name = name;
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every host is both client and server of its peers.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let yesterday = (OffsetDateTime::now_utc() - time::Duration::DAY).date();
    params.not_before = yesterday.midnight().assume_utc();
    // The first of the month exists in every year, unlike 29 February.
    params.not_after =
        Date::from_calendar_date(yesterday.year() + VALIDITY_YEARS, yesterday.month(), 1)
            .unwrap_or(Date::MAX)
            .midnight()
            .assume_utc();

    // A fresh serial per issue; rcgen's default derives it from the key,
    // which would give a reissued certificate the same serial.
    let mut seed = key.subject_public_key_info();
    seed.extend_from_slice(&now.as_nanos().to_be_bytes());
    let mut serial = blake3::hash(&seed).as_bytes()[..16].to_vec();
    serial[0] &= 0x7f; // a positive INTEGER
    params.serial_number = Some(SerialNumber::from(serial));

    params.self_signed(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn generate_creates_key_and_certificate() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state").join("omirrd");
        let id = generate(&state).expect("generate");

        assert_eq!(mode_of(&state), 0o700);
        assert_eq!(mode_of(&state.join(KEY_FILE)), 0o600);
        assert_eq!(mode_of(&state.join(CERT_FILE)), 0o644);

        let key_pem = fs::read_to_string(state.join(KEY_FILE)).expect("key");
        assert!(
            key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{key_pem}"
        );
        let cert_pem = fs::read(state.join(CERT_FILE)).expect("cert");
        let block = Pem::iter_from_buffer(&cert_pem)
            .next()
            .expect("a block")
            .expect("valid");
        assert_eq!(block.label, "CERTIFICATE");
        assert_eq!(block.contents, id.cert_der);

        assert_eq!(
            fingerprint_of_cert(&id.cert_der).expect("fp"),
            id.fingerprint
        );
        let shown = id.fingerprint.to_string();
        let pattern = regex::Regex::new("^blake3:[0-9a-f]{64}$").expect("regex");
        assert!(pattern.is_match(&shown), "{shown}");

        let (_, cert) = x509_parser::parse_x509_certificate(&id.cert_der).expect("parse");
        assert_eq!(cert.subject().to_string(), "CN=omirrd");
        assert_eq!(cert.issuer().to_string(), "CN=omirrd");
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert!(lifetime > 99 * 365 * 86_400, "lifetime {lifetime}s");
        assert!(cert.validity().is_valid(), "valid now");
        // The key on disk is the key in the identity and in the certificate.
        let key = KeyPair::try_from(id.key_der.as_slice()).expect("key");
        assert_eq!(
            key.subject_public_key_info(),
            cert.tbs_certificate.subject_pki.raw
        );
        assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
    }

    #[test]
    fn load_gives_the_same_identity() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let created = generate(tmp.path()).expect("generate");
        let loaded = load(tmp.path()).expect("load");
        assert_eq!(loaded.fingerprint, created.fingerprint);
        assert_eq!(loaded.cert_der, created.cert_der);
        assert_eq!(loaded.key_der, created.key_der);
    }

    #[test]
    fn missing_certificate_is_reissued_with_the_same_fingerprint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let created = generate(tmp.path()).expect("generate");
        let cert_path = tmp.path().join(CERT_FILE);
        fs::remove_file(&cert_path).expect("rm cert");

        let loaded = load(tmp.path()).expect("load");
        assert_ne!(loaded.cert_der, created.cert_der);
        assert_eq!(loaded.fingerprint, created.fingerprint);
        assert_eq!(
            fingerprint_of_cert(&loaded.cert_der).expect("fp"),
            created.fingerprint
        );
        assert_eq!(mode_of(&cert_path), 0o644);
        // The reissued certificate was written, so the next load reads it.
        assert_eq!(load(tmp.path()).expect("reload").cert_der, loaded.cert_der);
    }

    #[test]
    fn certificate_for_another_key_is_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ours = generate(&tmp.path().join("a")).expect("a");
        let theirs = generate(&tmp.path().join("b")).expect("b");
        fs::copy(
            tmp.path().join("b").join(CERT_FILE),
            tmp.path().join("a").join(CERT_FILE),
        )
        .expect("copy");
        let loaded = load(&tmp.path().join("a")).expect("load");
        assert_eq!(loaded.fingerprint, ours.fingerprint);
        assert_ne!(loaded.cert_der, theirs.cert_der);

        // Garbage in cert.pem is replaced too.
        fs::write(tmp.path().join("a").join(CERT_FILE), b"not a certificate").expect("write");
        assert_eq!(
            load(&tmp.path().join("a")).expect("load").fingerprint,
            ours.fingerprint
        );
    }

    #[test]
    fn generate_refuses_an_existing_key() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = generate(tmp.path()).expect("generate");
        let key_path = tmp.path().join(KEY_FILE);
        let before = fs::read(&key_path).expect("key");

        let err = generate(tmp.path()).expect_err("second generate");
        assert!(matches!(err, IdentityError::KeyExists { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{} already exists", key_path.display())),
            "{message}"
        );
        assert!(message.contains("re-pin"), "{message}");
        assert!(
            message.contains(&format!("remove {} first", key_path.display())),
            "{message}"
        );
        assert_eq!(fs::read(&key_path).expect("key"), before);
        assert_eq!(
            load(tmp.path()).expect("load").fingerprint,
            first.fingerprint
        );
    }

    #[test]
    fn key_readable_by_others_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        generate(tmp.path()).expect("generate");
        let key_path = tmp.path().join(KEY_FILE);
        let shown = key_path.display();

        chmod(&key_path, 0o644);
        let err = load(tmp.path()).expect_err("0644 key");
        assert_eq!(
            err.to_string(),
            format!(
                "{shown} is readable by group and others (mode 0644); the private key must be \
                 accessible only by its owner. Fix: chmod 600 {shown}"
            )
        );

        chmod(&key_path, 0o640);
        let err = load(tmp.path()).expect_err("0640 key");
        assert!(
            matches!(
                err,
                IdentityError::KeyExposed {
                    who: Who::Group,
                    mode: 0o640,
                    ..
                }
            ),
            "{err:?}"
        );

        chmod(&key_path, 0o601);
        let err = load(tmp.path()).expect_err("0601 key");
        assert!(
            err.to_string()
                .contains("is accessible by others (mode 0601)"),
            "{err}"
        );

        // Group-writable is refused too, with the one fix that suffices
        // (chmod 600), not chmod go-w, which would leave it readable.
        chmod(&key_path, 0o660);
        let err = load(tmp.path()).expect_err("0660 key");
        assert!(
            matches!(
                err,
                IdentityError::KeyExposed {
                    access: "writable",
                    who: Who::Group,
                    mode: 0o660,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("{shown} is writable by group")),
            "{err}"
        );

        chmod(&key_path, 0o600);
        load(tmp.path()).expect("0600 is fine");
    }

    #[test]
    fn missing_key_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = load(tmp.path()).expect_err("no key");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read {}: No such file or directory",
                tmp.path().join(KEY_FILE).display()
            )
        );
    }

    #[test]
    fn malformed_keys_are_explained() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let key_path = tmp.path().join(KEY_FILE);
        let cases: &[(&[u8], &str)] = &[
            (b"hello\n", "no PRIVATE KEY block"),
            (
                b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                "openssl pkcs8 -topk8 -nocrypt",
            ),
            (
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "cannot use the key",
            ),
        ];
        for (content, expected) in cases {
            secure::write_atomic(&key_path, content, 0o600).expect("write");
            let err = load(tmp.path()).expect_err("bad key");
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("{}: ", key_path.display())),
                "{message}"
            );
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn load_or_generate_creates_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (first, created) = load_or_generate(tmp.path()).expect("first");
        assert!(created);
        let (second, created_again) = load_or_generate(tmp.path()).expect("second");
        assert!(!created_again);
        assert_eq!(second.fingerprint, first.fingerprint);
    }

    #[test]
    fn identities_differ() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = generate(&tmp.path().join("a")).expect("a");
        let b = generate(&tmp.path().join("b")).expect("b");
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let id = generate(tmp.path()).expect("generate");
        let shown = format!("{id:?}");
        assert!(shown.contains(&id.fingerprint.to_string()), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let key_bytes = format!("{:?}", id.key_der);
        assert!(!shown.contains(&key_bytes[1..20]), "{shown}");
    }

    #[test]
    fn fingerprint_of_cert_rejects_garbage() {
        let err = fingerprint_of_cert(b"\x30\x03\x02\x01\x00").expect_err("not a certificate");
        assert!(
            matches!(err, IdentityError::BadCertificate { .. }),
            "{err:?}"
        );

        let tmp = tempfile::tempdir().expect("tempdir");
        let id = generate(tmp.path()).expect("generate");
        let mut padded = id.cert_der.clone();
        padded.push(0);
        assert!(fingerprint_of_cert(&padded).is_err());
    }

    #[test]
    fn certificate_is_valid_from_yesterday_for_a_century() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let id = generate(tmp.path()).expect("generate");
        let (_, cert) = x509_parser::parse_x509_certificate(&id.cert_der).expect("parse");
        let validity = cert.validity();
        let now = OffsetDateTime::now_utc();
        let from = validity.not_before.to_datetime();
        let to = validity.not_after.to_datetime();
        assert!(from <= now - time::Duration::hours(24), "{from} vs {now}");
        assert!(from > now - time::Duration::hours(48), "{from} vs {now}");
        assert_eq!(
            to.year(),
            (now - time::Duration::DAY).year() + VALIDITY_YEARS
        );
        assert_eq!(to.day(), 1);
    }
}
