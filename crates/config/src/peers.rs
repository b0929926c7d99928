//! The peers file: how to reach each host and how to recognise it.
//!
//! The Distfile names hosts; this file gives each name an address and the
//! fingerprint of the public key it must present. It is the trust root of
//! the whole mirror: a connection is accepted only from a key listed here,
//! so parsing is strict and reports every problem (with line and column)
//! before anything is trusted. The format, one host per line:
//!
//! ```text
//! # name   address[:port]    fingerprint
//! alpha    10.0.0.1:808      blake3:3f1c…
//! beta     beta.example      blake3:9a07…
//! ```
//!
//! This module only turns text into a validated [`Peers`]; reading the file
//! safely is `omirr-fs`'s job and checking certificates is `omirr-net`'s.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use crate::diag::{Diagnostic, Diagnostics, Pos};

/// The TCP port used when an address names none. It mirrors
/// `omirr_proto::DEFAULT_PORT`; it is repeated here because the
/// configuration crate must not depend on the wire protocol.
pub const DEFAULT_PORT: u16 = 808;

/// The only hash algorithm fingerprints use; the prefix leaves room for
/// another one without making old peers files ambiguous.
const FINGERPRINT_PREFIX: &str = "blake3:";

/// Hex digits in a fingerprint: 32 bytes of BLAKE3.
const FINGERPRINT_HEX_LEN: usize = 64;

/// What a peers line looks like, for error messages.
const LINE_SHAPE: &str = "`name address[:port] fingerprint`";

// ---------------------------------------------------------------------------
// Fingerprint

/// The BLAKE3 hash of a host's SubjectPublicKeyInfo (DER). Hashing the key
/// rather than the certificate lets a host reissue its certificate without
/// its peers having to re-pin anything.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a public key, given as SubjectPublicKeyInfo DER.
    pub fn of_spki(spki_der: &[u8]) -> Fingerprint {
        Fingerprint(*blake3::hash(spki_der).as_bytes())
    }

    /// A fingerprint from its raw hash bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Fingerprint {
        Fingerprint(bytes)
    }

    /// The raw hash bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(FINGERPRINT_PREFIX)?;
        f.write_str(&blake3::Hash::from_bytes(self.0).to_hex())
    }
}

/// Why a fingerprint could not be parsed. Every message says what a
/// fingerprint should look like, so the administrator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// The text does not start with `blake3:`; holds the whole text.
    #[error("fingerprint '{0}' does not start with 'blake3:'; expected 'blake3:' followed by 64 lowercase hex digits")]
    MissingPrefix(String),
    /// The hex part is not 64 digits long; holds its length.
    #[error("fingerprint has {0} hex digits after 'blake3:'; expected 64")]
    WrongLength(usize),
    /// An uppercase hex digit: fingerprints are written in lowercase so
    /// that equal keys read the same.
    #[error(
        "fingerprint has an uppercase hex digit '{0}'; expected lowercase hex digits (0-9, a-f)"
    )]
    Uppercase(char),
    /// A character that is not a hex digit.
    #[error("fingerprint has '{0}', which is not a hex digit; expected 64 lowercase hex digits (0-9, a-f)")]
    NotHex(char),
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix(FINGERPRINT_PREFIX)
            .ok_or_else(|| FingerprintError::MissingPrefix(s.to_string()))?;
        // Characters before length: "has 'x'" is more useful than a count
        // that is off because of a stray character.
        for c in hex.chars() {
            match c {
                '0'..='9' | 'a'..='f' => {}
                'A'..='F' => return Err(FingerprintError::Uppercase(c)),
                _ => return Err(FingerprintError::NotHex(c)),
            }
        }
        if hex.len() != FINGERPRINT_HEX_LEN {
            return Err(FingerprintError::WrongLength(hex.len()));
        }
        // Checked above, so this cannot fail; the length is what could.
        blake3::Hash::from_hex(hex)
            .map(|h| Fingerprint(*h.as_bytes()))
            .map_err(|_| FingerprintError::WrongLength(hex.len()))
    }
}

// ---------------------------------------------------------------------------
// PeerAddress

/// Where a host listens: a host name, IPv4 or IPv6 address, and a port.
/// IPv6 addresses are kept without their brackets.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PeerAddress {
    /// A DNS name, an IPv4 address or an IPv6 address (without brackets).
    pub host: String,
    /// The TCP port, 1 to 65535; [`DEFAULT_PORT`] when the file names none.
    pub port: u16,
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only IPv6 addresses hold colons; they need brackets so the port
        // stays unambiguous.
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why an address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing before the `:port`, or empty brackets.
    #[error("address '{0}' has no host; expected host[:port]")]
    EmptyHost(String),
    /// A `:` with nothing after it.
    #[error("address '{0}' has ':' but no port after it; expected host[:port]")]
    MissingPort(String),
    /// The port has a character other than a decimal digit (a sign
    /// included).
    #[error("port '{0}' is not a number; expected a port from 1 to 65535")]
    PortNotNumeric(String),
    /// The port is 0 or above 65535.
    #[error("port {0} is out of range; expected a port from 1 to 65535")]
    PortOutOfRange(String),
    /// More than one `:` without brackets: an IPv6 address, whose last
    /// group could be taken for a port.
    #[error("IPv6 address '{0}' must be in brackets, e.g. [{0}] or [{0}]:{DEFAULT_PORT}")]
    UnbracketedIpv6(String),
    /// The text in brackets is not an IPv6 address.
    #[error("'{0}' is not a valid IPv6 address")]
    BadIpv6(String),
    /// A `[` with no `]` after it.
    #[error("address '{0}' has a '[' without a matching ']'")]
    UnclosedBracket(String),
    /// Something other than `:port` after the closing `]`.
    #[error("unexpected '{found}' after ']' in address '{address}'; expected ':port' or nothing")]
    AfterBracket {
        /// The whole address.
        address: String,
        /// What follows the `]`.
        found: String,
    },
    /// Digits and dots only, but not a complete dotted-quad IPv4 address
    /// (a resolver would read short forms like `10.1` as one).
    #[error("'{0}' is not a valid IPv4 address")]
    BadIpv4(String),
    /// A host name with a character other than an ASCII letter, digit,
    /// `.` or `-`.
    #[error(
        "host name '{name}' has '{found}'; a host name holds only letters, digits, '.' and '-'"
    )]
    BadHostChar {
        /// The host name.
        name: String,
        /// The first character not allowed.
        found: char,
    },
    /// A host name that breaks RFC 1123's rules on length or labels.
    #[error("host name '{name}' is invalid: {reason}")]
    BadHostLabel {
        /// The host name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

impl FromStr for PeerAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| AddressError::UnclosedBracket(s.to_string()))?;
            if inside.is_empty() {
                return Err(AddressError::EmptyHost(s.to_string()));
            }
            if inside.parse::<Ipv6Addr>().is_err() {
                return Err(AddressError::BadIpv6(inside.to_string()));
            }
            let port = if after.is_empty() {
                DEFAULT_PORT
            } else if let Some(port) = after.strip_prefix(':') {
                parse_port(port, s)?
            } else {
                return Err(AddressError::AfterBracket {
                    address: s.to_string(),
                    found: after.to_string(),
                });
            };
            return Ok(PeerAddress {
                host: inside.to_string(),
                port,
            });
        }

        // Two colons or more can only be an IPv6 address, and without
        // brackets its last group would be mistaken for a port.
        if s.matches(':').count() > 1 {
            return Err(AddressError::UnbracketedIpv6(s.to_string()));
        }
        let (host, port) = match s.split_once(':') {
            Some((host, port)) => (host, parse_port(port, s)?),
            None => (s, DEFAULT_PORT),
        };
        if host.is_empty() {
            return Err(AddressError::EmptyHost(s.to_string()));
        }
        check_network_host(host)?;
        Ok(PeerAddress {
            host: host.to_string(),
            port,
        })
    }
}

fn parse_port(port: &str, address: &str) -> Result<u16, AddressError> {
    if port.is_empty() {
        return Err(AddressError::MissingPort(address.to_string()));
    }
    // u16::from_str accepts a leading '+'; a port is digits only.
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressError::PortNotNumeric(port.to_string()));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(AddressError::PortOutOfRange(port.to_string())),
        Ok(n) => Ok(n),
    }
}

/// Checks an IPv4 address or DNS host name (RFC 1123).
fn check_network_host(host: &str) -> Result<(), AddressError> {
    if let Some(found) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '-'))
    {
        return Err(AddressError::BadHostChar {
            name: host.to_string(),
            found,
        });
    }
    // Digits and dots only: the resolver would read it as an IPv4 address
    // (even a short form like 10.1), so it must be a complete one.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return match host.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(AddressError::BadIpv4(host.to_string())),
        };
    }
    let bad = |reason| AddressError::BadHostLabel {
        name: host.to_string(),
        reason,
    };
    // One trailing dot marks a fully qualified name; it is not a label.
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad(
                "it has an empty label (two dots in a row, or a leading dot)",
            ));
        }
        if label.len() > 63 {
            return Err(bad("a label is longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label starts or ends with '-'"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Peer names

/// Why a host name (the first field, as the Distfile uses it) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty or starts with something other than an ASCII
    /// letter or digit.
    #[error("invalid host name '{0}': a host name must start with a letter or digit")]
    BadStart(String),
    /// The name has a character other than an ASCII letter, digit, `.`,
    /// `_` or `-`.
    #[error("invalid host name '{name}': '{found}' is not allowed; a host name holds letters, digits, '.', '_' and '-'")]
    BadChar {
        /// The host name.
        name: String,
        /// The first character not allowed.
        found: char,
    },
}

/// Checks a host name as the Distfile and the peers file use it.
pub fn check_host_name(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return Err(NameError::BadStart(name.to_string())),
    }
    match chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        Some(found) => Err(NameError::BadChar {
            name: name.to_string(),
            found,
        }),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Peers

/// One host of the peers file.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Peer {
    /// The host's name, as the Distfile uses it (see [`check_host_name`]).
    pub name: String,
    /// Where the host listens.
    pub address: PeerAddress,
    /// `None` means the host is listed but never trusted.
    pub fingerprint: Option<Fingerprint>,
    /// The line of the peers file that defines the host, for messages.
    pub line: u32,
}

/// A parsed, validated peers file: host names and fingerprints are unique.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    /// In file order, so listings match what the administrator wrote.
    peers: Vec<Peer>,
    by_name: HashMap<String, usize>,
    by_fingerprint: HashMap<Fingerprint, usize>,
}

/// A whitespace-separated word with its 1-based character column.
struct Field<'a> {
    column: u32,
    text: &'a str,
}

/// Splits a line into fields, dropping a `#` comment.
fn fields(line: &str) -> Vec<Field<'_>> {
    let mut out = Vec::new();
    let mut start: Option<(usize, u32)> = None;
    let mut column = 0u32;
    let mut end = line.len();
    for (offset, c) in line.char_indices() {
        column = column.saturating_add(1);
        if c == '#' {
            end = offset;
            break;
        }
        if c.is_whitespace() {
            if let Some((s, col)) = start.take() {
                out.push(Field {
                    column: col,
                    text: &line[s..offset],
                });
            }
        } else if start.is_none() {
            start = Some((offset, column));
        }
    }
    if let Some((s, col)) = start {
        out.push(Field {
            column: col,
            text: &line[s..end],
        });
    }
    out
}

impl Peers {
    /// Parses a peers file. `file` is used only in diagnostics.
    ///
    /// On success, returns the peers and any warnings. On failure, returns
    /// every error and warning found, in file order, not only the first.
    // Over 100 lines: one pass over the lines, each field checked in turn
    // with its own diagnostic; split, the seen-names tables would travel
    // with every piece.
    pub fn parse(text: &str, file: &Path) -> Result<(Peers, Vec<Diagnostic>), Diagnostics> {
        let mut peers = Peers::default();
        let mut diags: Vec<Diagnostic> = Vec::new();
        // Names and fingerprints seen so far, even on lines that are
        // otherwise broken, so a duplicate is reported against its first
        // occurrence however that line fared.
        let mut name_lines: HashMap<&str, u32> = HashMap::new();
        let mut fingerprint_owners: HashMap<Fingerprint, (&str, u32)> = HashMap::new();

        for (index, line) in text.lines().enumerate() {
            let line_no = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let fields = fields(line);
            let Some(name_field) = fields.first() else {
                continue;
            };
            let at = |field: &Field<'_>| Pos::new(line_no, field.column);
            // Only this line's diagnostics are looked at again: counting
            // all of them for every line made a file of many bad lines
            // quadratic (200,000 lines took five minutes; found by the
            // fuzz harness, crates/fuzz).
            let diags_before = diags.len();

            let name = name_field.text;
            let name_ok = match check_host_name(name) {
                Ok(()) => true,
                Err(e) => {
                    diags.push(Diagnostic::error(file, at(name_field), e.to_string()));
                    false
                }
            };
            if name_ok {
                if let Some(first) = name_lines.get(name) {
                    diags.push(Diagnostic::error(
                        file,
                        at(name_field),
                        format!("host {name} is already defined on line {first}"),
                    ));
                } else {
                    name_lines.insert(name, line_no);
                }
            }

            let address = match fields.get(1) {
                None => {
                    diags.push(Diagnostic::error(
                        file,
                        at(name_field),
                        format!("host {name} has no address; expected {LINE_SHAPE}"),
                    ));
                    None
                }
                Some(field) => match field.text.parse::<PeerAddress>() {
                    Ok(address) => Some(address),
                    Err(e) => {
                        diags.push(Diagnostic::error(file, at(field), e.to_string()));
                        None
                    }
                },
            };

            let fingerprint = match fields.get(2) {
                None => None,
                Some(field) => match field.text.parse::<Fingerprint>() {
                    Ok(fp) => {
                        if let Some((owner, owner_line)) = fingerprint_owners.get(&fp) {
                            diags.push(Diagnostic::error(
                                file,
                                at(field),
                                format!(
                                    "host {name} has the same fingerprint as host {owner} \
                                     (line {owner_line}); a key identifies exactly one host"
                                ),
                            ));
                        } else {
                            fingerprint_owners.insert(fp, (name, line_no));
                        }
                        Some(fp)
                    }
                    Err(e) => {
                        diags.push(Diagnostic::error(file, at(field), e.to_string()));
                        None
                    }
                },
            };

            if let Some(extra) = fields.get(3) {
                diags.push(Diagnostic::error(
                    file,
                    at(extra),
                    format!(
                        "unexpected '{}' after the fingerprint; expected {LINE_SHAPE}",
                        extra.text
                    ),
                ));
            }

            // A line with errors adds no peer: a half-valid host is never
            // exposed, and its errors are already recorded.
            let line_ok = !diags[diags_before..].iter().any(Diagnostic::is_error);
            if let (true, Some(address)) = (line_ok, address) {
                if fingerprint.is_none() {
                    diags.push(Diagnostic::warning(
                        file,
                        at(name_field),
                        format!("host {name} has no fingerprint; it will never be trusted"),
                    ));
                }
                peers.insert(Peer {
                    name: name.to_string(),
                    address,
                    fingerprint,
                    line: line_no,
                });
            }
        }

        if diags.iter().any(Diagnostic::is_error) {
            Err(Diagnostics(diags))
        } else {
            Ok((peers, diags))
        }
    }

    /// Adds a peer whose name and fingerprint the caller has checked are new.
    fn insert(&mut self, peer: Peer) {
        let index = self.peers.len();
        self.by_name.insert(peer.name.clone(), index);
        if let Some(fp) = peer.fingerprint {
            self.by_fingerprint.insert(fp, index);
        }
        self.peers.push(peer);
    }

    /// The host called `name`.
    pub fn get(&self, name: &str) -> Option<&Peer> {
        self.by_name.get(name).map(|&i| &self.peers[i])
    }

    /// The host whose key has this fingerprint: who is on the other end of
    /// a connection.
    pub fn by_fingerprint(&self, fp: &Fingerprint) -> Option<&Peer> {
        self.by_fingerprint.get(fp).map(|&i| &self.peers[i])
    }

    /// All hosts, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, Peer> {
        self.peers.iter()
    }

    /// How many hosts the file lists, trusted or not.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the file lists no host.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

impl<'a> IntoIterator for &'a Peers {
    type Item = &'a Peer;
    type IntoIter = std::slice::Iter<'a, Peer>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Severity;

    const FP_A: &str = "blake3:3f1c000000000000000000000000000000000000000000000000000000000001";
    const FP_B: &str = "blake3:9a07000000000000000000000000000000000000000000000000000000000002";
    const FP_C: &str = "blake3:00000000000000000000000000000000000000000000000000000000deadbeef";

    fn file() -> &'static Path {
        Path::new("peers")
    }

    fn parse_ok(text: &str) -> (Peers, Vec<Diagnostic>) {
        match Peers::parse(text, file()) {
            Ok(ok) => ok,
            Err(e) => panic!("expected success, got:\n{e}"),
        }
    }

    fn parse_err(text: &str) -> Vec<Diagnostic> {
        match Peers::parse(text, file()) {
            Ok((peers, _)) => panic!("expected errors, got {peers:?}"),
            Err(Diagnostics(diags)) => diags,
        }
    }

    /// The errors as `line:column: message`, for exact comparisons.
    fn errors(diags: &[Diagnostic]) -> Vec<String> {
        diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}: {}", d.pos, d.message))
            .collect()
    }

    fn single_error(text: &str) -> (Pos, String) {
        let diags = parse_err(text);
        let errs: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
        assert_eq!(errs.len(), 1, "expected one error, got {diags:?}");
        (errs[0].pos, errs[0].message.clone())
    }

    fn addr(s: &str) -> PeerAddress {
        match s.parse() {
            Ok(a) => a,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn comments_and_blank_lines_are_ignored() {
        let text = format!(
            "# the peers\n\n   \t\nalpha 10.0.0.1:808 {FP_A} # first host\n  # indented comment\nbeta beta.example {FP_B}#tight\n\n"
        );
        let (peers, warnings) = parse_ok(&text);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(peers.len(), 2);
        assert!(!peers.is_empty());
        let names: Vec<_> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alpha", "beta"]);
        let alpha = peers.get("alpha").expect("alpha");
        assert_eq!(alpha.line, 4);
        assert_eq!(
            alpha.address,
            PeerAddress {
                host: "10.0.0.1".into(),
                port: 808
            }
        );
        assert_eq!(
            alpha.fingerprint.map(|f| f.to_string()).as_deref(),
            Some(FP_A)
        );
        let beta = peers.get("beta").expect("beta");
        assert_eq!(beta.line, 6);
        assert_eq!(
            beta.fingerprint.map(|f| f.to_string()).as_deref(),
            Some(FP_B)
        );
        assert!(peers.get("gamma").is_none());
    }

    #[test]
    fn empty_file_has_no_peers() {
        let (peers, warnings) = parse_ok("# nobody yet\n");
        assert!(peers.is_empty());
        assert_eq!(peers.len(), 0);
        assert!(warnings.is_empty());
    }

    #[test]
    fn crlf_lines_parse() {
        let (peers, _) = parse_ok(&format!("alpha a.example:9 {FP_A}\r\n"));
        assert_eq!(
            peers
                .get("alpha")
                .and_then(|p| p.fingerprint)
                .map(|f| f.to_string())
                .as_deref(),
            Some(FP_A)
        );
    }

    #[test]
    fn address_forms() {
        let cases: &[(&str, &str, u16, &str)] = &[
            ("host", "host", DEFAULT_PORT, "host:808"),
            (
                "beta.example:9000",
                "beta.example",
                9000,
                "beta.example:9000",
            ),
            ("beta.example.", "beta.example.", 808, "beta.example.:808"),
            ("1.2.3.4", "1.2.3.4", DEFAULT_PORT, "1.2.3.4:808"),
            ("1.2.3.4:9000", "1.2.3.4", 9000, "1.2.3.4:9000"),
            ("[::1]", "::1", DEFAULT_PORT, "[::1]:808"),
            ("[::1]:9000", "::1", 9000, "[::1]:9000"),
            ("[fe80::1:2]:1", "fe80::1:2", 1, "[fe80::1:2]:1"),
            ("h:65535", "h", 65535, "h:65535"),
        ];
        for &(input, host, port, display) in cases {
            let a = addr(input);
            assert_eq!(a.host, host, "{input}");
            assert_eq!(a.port, port, "{input}");
            assert_eq!(a.to_string(), display, "{input}");
            // Display output parses back to the same address.
            assert_eq!(addr(&a.to_string()), a, "{input}");
        }
    }

    #[test]
    fn default_port_is_omirrs() {
        assert_eq!(DEFAULT_PORT, 808);
        let (peers, _) = parse_ok(&format!("alpha alpha.example {FP_A}\n"));
        assert_eq!(peers.get("alpha").map(|p| p.address.port), Some(808));
    }

    #[test]
    fn address_errors() {
        let cases: &[(&str, AddressError)] = &[
            (":808", AddressError::EmptyHost(":808".into())),
            ("[]:808", AddressError::EmptyHost("[]:808".into())),
            ("h:", AddressError::MissingPort("h:".into())),
            ("h:0", AddressError::PortOutOfRange("0".into())),
            ("h:65536", AddressError::PortOutOfRange("65536".into())),
            (
                "h:99999999999999999999",
                AddressError::PortOutOfRange("99999999999999999999".into()),
            ),
            ("h:http", AddressError::PortNotNumeric("http".into())),
            ("h:+80", AddressError::PortNotNumeric("+80".into())),
            ("[::1]:x", AddressError::PortNotNumeric("x".into())),
            ("::1", AddressError::UnbracketedIpv6("::1".into())),
            (
                "fe80::1:808",
                AddressError::UnbracketedIpv6("fe80::1:808".into()),
            ),
            ("[::1", AddressError::UnclosedBracket("[::1".into())),
            ("[zz::1]", AddressError::BadIpv6("zz::1".into())),
            (
                "[::1]808",
                AddressError::AfterBracket {
                    address: "[::1]808".into(),
                    found: "808".into(),
                },
            ),
            ("1.2.3.256", AddressError::BadIpv4("1.2.3.256".into())),
            ("10.1", AddressError::BadIpv4("10.1".into())),
            (
                "under_score.example",
                AddressError::BadHostChar {
                    name: "under_score.example".into(),
                    found: '_',
                },
            ),
            (
                "é.example",
                AddressError::BadHostChar {
                    name: "é.example".into(),
                    found: 'é',
                },
            ),
            (
                "a..b",
                AddressError::BadHostLabel {
                    name: "a..b".into(),
                    reason: "it has an empty label (two dots in a row, or a leading dot)",
                },
            ),
            (
                ".a",
                AddressError::BadHostLabel {
                    name: ".a".into(),
                    reason: "it has an empty label (two dots in a row, or a leading dot)",
                },
            ),
            (
                "-a.example",
                AddressError::BadHostLabel {
                    name: "-a.example".into(),
                    reason: "a label starts or ends with '-'",
                },
            ),
            (
                "a-.example",
                AddressError::BadHostLabel {
                    name: "a-.example".into(),
                    reason: "a label starts or ends with '-'",
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                input.parse::<PeerAddress>().as_ref(),
                Err(expected),
                "{input}"
            );
        }
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(matches!(
            long_label.parse::<PeerAddress>(),
            Err(AddressError::BadHostLabel {
                reason: "a label is longer than 63 characters",
                ..
            })
        ));
        let long_name = vec!["a".repeat(63); 5].join(".");
        assert!(matches!(
            long_name.parse::<PeerAddress>(),
            Err(AddressError::BadHostLabel {
                reason: "longer than 253 characters",
                ..
            })
        ));
    }

    #[test]
    fn fingerprint_round_trip() {
        let fp: Fingerprint = FP_C.parse().expect("valid");
        assert_eq!(fp.to_string(), FP_C);
        assert_eq!(fp.as_bytes()[28..], [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(Fingerprint::from_bytes(*fp.as_bytes()), fp);

        let hashed = Fingerprint::of_spki(b"some key");
        assert_eq!(hashed.as_bytes(), blake3::hash(b"some key").as_bytes());
        let shown = hashed.to_string();
        assert!(shown.starts_with("blake3:"));
        assert_eq!(shown.len(), "blake3:".len() + 64);
        assert!(shown["blake3:".len()..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(shown.parse::<Fingerprint>(), Ok(hashed));
        assert_ne!(Fingerprint::of_spki(b"other key"), hashed);
    }

    #[test]
    fn fingerprint_errors_say_what_was_expected() {
        let hex64 = "0".repeat(64);
        let cases = [
            (
                hex64.clone(),
                FingerprintError::MissingPrefix(hex64.clone()),
            ),
            (
                format!("sha256:{hex64}"),
                FingerprintError::MissingPrefix(format!("sha256:{hex64}")),
            ),
            (
                format!("BLAKE3:{hex64}"),
                FingerprintError::MissingPrefix(format!("BLAKE3:{hex64}")),
            ),
            ("blake3:abc".to_string(), FingerprintError::WrongLength(3)),
            (
                format!("blake3:{hex64}00"),
                FingerprintError::WrongLength(66),
            ),
            ("blake3:".to_string(), FingerprintError::WrongLength(0)),
            (
                format!("blake3:{}A", "0".repeat(63)),
                FingerprintError::Uppercase('A'),
            ),
            (
                format!("blake3:{}g", "0".repeat(63)),
                FingerprintError::NotHex('g'),
            ),
            (
                format!("blake3:{}é", "0".repeat(62)),
                FingerprintError::NotHex('é'),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                input.parse::<Fingerprint>(),
                Err(expected.clone()),
                "{input}"
            );
            let message = expected.to_string();
            assert!(
                message.contains("expected"),
                "message should say what was expected: {message}"
            );
        }
    }

    #[test]
    fn missing_fingerprint_is_a_warning() {
        let (peers, warnings) = parse_ok("alpha 10.0.0.1\n  beta 10.0.0.2\n");
        assert_eq!(peers.len(), 2);
        assert_eq!(peers.get("alpha").map(|p| p.fingerprint), Some(None));
        let shown: Vec<_> = warnings
            .iter()
            .map(|d| (d.severity, d.to_string()))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    Severity::Warning,
                    "peers:1:1: warning: host alpha has no fingerprint; it will never be trusted"
                        .to_string()
                ),
                (
                    Severity::Warning,
                    "peers:2:3: warning: host beta has no fingerprint; it will never be trusted"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn lookup_by_fingerprint() {
        let text = format!("alpha a {FP_A}\nbeta b {FP_B}\ngamma c\n");
        let (peers, _) = parse_ok(&text);
        let fp_b: Fingerprint = FP_B.parse().expect("valid");
        assert_eq!(
            peers.by_fingerprint(&fp_b).map(|p| p.name.as_str()),
            Some("beta")
        );
        let fp_c: Fingerprint = FP_C.parse().expect("valid");
        assert!(peers.by_fingerprint(&fp_c).is_none());
        assert_eq!((&peers).into_iter().count(), 3);
    }

    #[test]
    fn invalid_host_name_is_reported_at_its_column() {
        let (pos, msg) = single_error(&format!("  -alpha a {FP_A}\n"));
        assert_eq!(pos, Pos::new(1, 3));
        assert!(msg.contains("must start with a letter or digit"), "{msg}");

        let (pos, msg) = single_error(&format!("al/pha a {FP_A}\n"));
        assert_eq!(pos, Pos::new(1, 1));
        assert!(msg.contains("'/' is not allowed"), "{msg}");

        // Underscores and dots are fine in a peer name.
        let (peers, _) = parse_ok(&format!("web_1.dc2 a {FP_A}\n"));
        assert!(peers.get("web_1.dc2").is_some());
    }

    #[test]
    fn duplicate_name_mentions_first_line() {
        let text = format!("alpha a {FP_A}\n\n\talpha b {FP_B}\n");
        let (pos, msg) = single_error(&text);
        assert_eq!(pos, Pos::new(3, 2));
        assert_eq!(msg, "host alpha is already defined on line 1");
    }

    #[test]
    fn duplicate_fingerprint_is_an_error() {
        let text = format!("alpha a {FP_A}\nbeta  b {FP_A}\n");
        let (pos, msg) = single_error(&text);
        assert_eq!(pos, Pos::new(2, 9));
        assert_eq!(
            msg,
            "host beta has the same fingerprint as host alpha (line 1); a key identifies exactly one host"
        );
    }

    #[test]
    fn malformed_address_is_reported_at_its_column() {
        let (pos, msg) = single_error(&format!("# c\nalpha   ::1 {FP_A}\n"));
        assert_eq!(pos, Pos::new(2, 9));
        assert!(msg.contains("must be in brackets"), "{msg}");

        let (pos, msg) = single_error(&format!("alpha a:70000 {FP_A}\n"));
        assert_eq!(pos, Pos::new(1, 7));
        assert_eq!(
            msg,
            "port 70000 is out of range; expected a port from 1 to 65535"
        );
    }

    #[test]
    fn malformed_fingerprint_is_reported_at_its_column() {
        let (pos, msg) = single_error("alpha a.example  blake3:0123\n");
        assert_eq!(pos, Pos::new(1, 18));
        assert_eq!(
            msg,
            "fingerprint has 4 hex digits after 'blake3:'; expected 64"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let diags = parse_err("héé a.example blake3:0\n");
        // 'héé' is invalid (non-ASCII) at column 1; the fingerprint starts
        // at character 15 although it is byte 17.
        assert_eq!(
            errors(&diags),
            [
                "1:1: invalid host name 'héé': 'é' is not allowed; a host name holds letters, digits, '.', '_' and '-'",
                "1:15: fingerprint has 1 hex digits after 'blake3:'; expected 64",
            ]
        );
    }

    #[test]
    fn too_many_fields_is_an_error() {
        let (pos, msg) = single_error(&format!("alpha a {FP_A} extra more\n"));
        assert_eq!(pos, Pos::new(1, 81));
        assert_eq!(
            msg,
            "unexpected 'extra' after the fingerprint; expected `name address[:port] fingerprint`"
        );
    }

    #[test]
    fn name_without_address_is_an_error() {
        let (pos, msg) = single_error("alpha   # no address\n");
        assert_eq!(pos, Pos::new(1, 1));
        assert_eq!(
            msg,
            "host alpha has no address; expected `name address[:port] fingerprint`"
        );
    }

    #[test]
    fn all_errors_and_warnings_are_reported_in_order() {
        let text = format!(
            "alpha a {FP_A}\n\
             beta ::1 {FP_B}\n\
             alpha c {FP_C}\n\
             gamma d blake3:nope\n\
             delta e\n\
             _eps f {FP_A}\n\
             zeta g {FP_B} x\n"
        );
        let diags = parse_err(&text);
        assert_eq!(
            errors(&diags),
            [
                "2:6: IPv6 address '::1' must be in brackets, e.g. [::1] or [::1]:808",
                "3:1: host alpha is already defined on line 1",
                "4:9: fingerprint has 'n', which is not a hex digit; expected 64 lowercase hex digits (0-9, a-f)",
                "6:1: invalid host name '_eps': a host name must start with a letter or digit",
                "6:8: host _eps has the same fingerprint as host alpha (line 1); a key identifies exactly one host",
                "7:8: host zeta has the same fingerprint as host beta (line 2); a key identifies exactly one host",
                "7:80: unexpected 'x' after the fingerprint; expected `name address[:port] fingerprint`",
            ]
        );
        // The warning for the line without a fingerprint is kept too, in
        // its place among the errors.
        let warnings: Vec<_> = diags
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            warnings,
            ["peers:5:1: warning: host delta has no fingerprint; it will never be trusted"]
        );
        let order: Vec<u32> = diags.iter().map(|d| d.pos.line).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        let rendered = Diagnostics(diags).to_string();
        assert!(
            rendered.starts_with("peers:2:6: error: IPv6 address"),
            "{rendered}"
        );
    }

    /// Found by the fuzz harness: every line counted all the errors so
    /// far, so a file of many bad lines took quadratic time (200,000 lines
    /// took five minutes in a release build). Now linear: 100,000 bad
    /// lines take well under a second; the limit leaves room for a slow
    /// debug build on a busy machine.
    #[test]
    fn many_bad_lines_take_linear_time() {
        let text = "x\n".repeat(100_000);
        let started = std::time::Instant::now();
        let diags = parse_err(&text);
        let took = started.elapsed();
        // "no address" on each line; "already defined" from the second.
        assert_eq!(errors(&diags).len(), 199_999);
        assert!(
            took < std::time::Duration::from_secs(10),
            "100,000 bad lines took {took:?}"
        );
    }
}
