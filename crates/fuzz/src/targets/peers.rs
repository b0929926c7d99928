//! The peers file ([`omirr_config::peers::Peers::parse`]), and the field
//! parsers it uses (addresses, fingerprints, host names) on every word.
//!
//! Checked: every diagnostic has a real position; a parsed file's hosts
//! are found by name and by fingerprint, and print back to something
//! that parses to the same address and fingerprint.

use super::{Target, KIB, MIB};
use crate::gen::Fnv;
use omirr_config::peers::{check_host_name, Fingerprint, PeerAddress, Peers};
use std::path::Path;

/// This target, for [`super::all`].
pub fn target() -> Target {
    Target {
        name: "peers",
        about: "the peers file: lines, names, addresses with ports and IPv6, fingerprints",
        run,
        seeds,
        big_seeds: super::none,
        dict: DICT,
        shape: super::as_is,
        text: true,
        max_len: 16 * KIB,
        bound,
        bound_text: "1 MiB + 512 bytes per input byte: no bound is documented; the parser \
                     keeps a diagnostic per problem, at most a few per line of two bytes or \
                     more, each about 200 bytes besides the words it quotes, so what it \
                     holds must grow linearly with the file",
        init: super::nothing,
    }
}

fn bound(len: usize) -> usize {
    MIB + 512 * len
}

/// The entry point: each word of `data` as an address, a fingerprint
/// and a host name, then the whole as a peers file. What parses must
/// print back to itself, and a parsed file's lookups must agree.
pub fn run(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    let mut sig = Fnv::default();
    for word in text.split_whitespace().take(64) {
        if let Ok(a) = word.parse::<PeerAddress>() {
            sig.str("address");
            let again = a.to_string().parse::<PeerAddress>();
            assert_eq!(again.as_ref(), Ok(&a), "{a} does not parse back");
        }
        if let Ok(fp) = word.parse::<Fingerprint>() {
            sig.str("fingerprint");
            assert_eq!(fp.to_string().parse::<Fingerprint>(), Ok(fp));
        }
        if check_host_name(word).is_ok() {
            sig.str("name");
        }
    }
    match Peers::parse(&text, Path::new("fuzz-peers")) {
        Ok((peers, warnings)) => {
            sig.str("ok").num(peers.len().min(4) as u64);
            for w in &warnings {
                assert!(w.pos.line >= 1 && w.pos.column >= 1, "{w}");
            }
            for p in &peers {
                assert_eq!(peers.get(&p.name).map(|q| &q.name), Some(&p.name));
                if let Some(fp) = &p.fingerprint {
                    assert_eq!(peers.by_fingerprint(fp).map(|q| &q.name), Some(&p.name));
                }
                let shown = p.address.to_string();
                assert_eq!(
                    shown.parse::<PeerAddress>().as_ref(),
                    Ok(&p.address),
                    "{shown}"
                );
            }
        }
        Err(diags) => {
            assert!(diags.has_errors(), "Err without an error");
            for d in &diags.0 {
                assert!(d.pos.line >= 1 && d.pos.column >= 1, "{d}");
            }
            if let Some(d) = diags.errors().next() {
                let kind: String = d.message.split_whitespace().take(3).collect();
                sig.str("err").str(&kind);
            }
        }
    }
    sig.finish()
}

fn seeds() -> Vec<Vec<u8>> {
    let mut v = vec![include_bytes!("../../../../etc/peers").to_vec()];
    v.extend(SEEDS.iter().map(|s| s.as_bytes().to_vec()));
    v
}

const SEEDS: &[&str] = &[
    "alpha 10.0.0.1:808 blake3:3f1c000000000000000000000000000000000000000000000000000000000001\n",
    "beta beta.example blake3:9a07000000000000000000000000000000000000000000000000000000000002 # c\n",
    "gamma [2001:db8::12]:808 blake3:00000000000000000000000000000000000000000000000000000000deadbeef\n",
    "delta [::1]\n# a comment\n\n\tepsilon host-1.example.org.:65535\n",
    "a 10.1 blake3:XYZ\nb a:b:c\nc [::1]x\nd h:0\ne h:+80\nf -bad-.example\n",
    "a 1.2.3.4\na 1.2.3.5\nb 1.2.3.4 blake3:3f1c000000000000000000000000000000000000000000000000000000000001\nc 1.2.3.4 blake3:3f1c000000000000000000000000000000000000000000000000000000000001 extra\n",
    "_x 1.1.1.1\nx_y 1.1.1.1\nhost\n",
];

const DICT: &[&[u8]] = &[
    b" ",
    b"\t",
    b"\n",
    b"\r\n",
    b"#",
    b":",
    b"::",
    b"[",
    b"]",
    b"[::1]",
    b"[fe80::1%eth0]",
    b"10.0.0.1",
    b"256.1.1.1",
    b"1.2.3",
    b":808",
    b":0",
    b":65536",
    b":99999999999999999999",
    b"blake3:",
    b"blake3:3f1c000000000000000000000000000000000000000000000000000000000001",
    b"blake3:3F1C",
    b"alpha",
    b"beta.example",
    b".",
    b"-",
    b"_",
    b"a.",
    b"..",
    b"\xc3\xa9",
    b"\xe2\x80\x83",
    b"\0",
    b"\xff",
];
