//! The Distfile parser ([`omirr_config::distfile::parse`]) on text, with
//! a small tree to glob against, `-d` definitions and known hosts.
//!
//! Checked: every diagnostic has a real position; of a configuration that
//! parses, every mirrored path is absolute, and the model's queries
//! answer. Exclusions are matched against a few paths, one of them with a
//! 255-byte name of `a`s: with the `glob` crate's backtracking matcher,
//! `except /srv/*a*a*a*ab` took seconds for that one name
//! (docs/fuzzing.md); the matcher is linear now, and this keeps it so.

use super::{Target, KIB, MIB};
use crate::gen::Fnv;
use omirr_config::distfile::{parse, ParseOptions};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This target, for [`super::all`].
pub fn target() -> Target {
    Target {
        name: "distfile",
        about: "the Distfile parser: lexing, statements, variables, braces, ~, globs, set algebra",
        run,
        seeds,
        big_seeds: super::none,
        dict: DICT,
        shape: super::as_is,
        text: true,
        max_len: 16 * KIB,
        bound,
        bound_text: "256 MiB + 1 KiB per input byte: what expansion may produce in a whole \
                     Distfile is capped at MAX_EXPANDED, 4 Mi characters, 64 MiB as the \
                     expander holds them (16 bytes each), up to 3 times that while a \
                     substitution builds its product from the step before with vectors' \
                     growth slack; the rest for diagnostics (at most 1,000, \
                     MAX_DIAGNOSTICS) and words quoted, compiled patterns and the model \
                     (crates/config/src/distfile/expand.rs)",
        init,
    }
}

fn bound(len: usize) -> usize {
    256 * MIB + KIB * len
}

/// Two sets of options: with known hosts and `-d` definitions, and
/// without, chosen by the input's length so the entry point stays bytes
/// in, nothing else.
fn options() -> &'static [ParseOptions; 2] {
    static OPTS: OnceLock<[ParseOptions; 2]> = OnceLock::new();
    OPTS.get_or_init(|| {
        let root = root();
        [
            ParseOptions {
                root: root.clone(),
                defines: vec![
                    ("D".into(), "( a {b,c} )".into()),
                    ("HOSTS".into(), "( alpha beta )".into()),
                ],
                known_hosts: Some(
                    ["alpha", "beta", "gamma", "a", "h", "k", "x", "y"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ),
            },
            ParseOptions {
                root,
                defines: Vec::new(),
                known_hosts: None,
            },
        ]
    })
}

/// A small tree for globs to match, made once per process.
fn root() -> PathBuf {
    let root = std::env::temp_dir().join(format!("omirr-fuzz-root-{}", std::process::id()));
    for d in [
        "srv/www/private",
        "etc/nginx",
        "opt/tools",
        "usr/include/sys",
        "usr/man/man1",
    ] {
        let _ = std::fs::create_dir_all(root.join(d));
    }
    for f in [
        "srv/www/index.html",
        "srv/www/.hidden",
        "etc/nginx/local.conf",
        "usr/include/stdio.h",
        "usr/include/sys/types.h",
        "opt/tools/star*",
    ] {
        let _ = std::fs::write(root.join(f), b"");
    }
    root
}

fn init() {
    options();
}

/// Removes the tree `init` made; for the end of a run.
pub fn cleanup() {
    if let Some(o) = options().first() {
        let _ = std::fs::remove_dir_all(&o.root);
    }
}

/// The entry point: parses `data` as a Distfile, with or without known
/// hosts and `-d` definitions as its length is even or odd, and checks
/// the result (see the module's docs). Makes the tree to glob against
/// on first use.
pub fn run(data: &[u8]) -> u64 {
    let opts = &options()[data.len() % 2];
    let mut sig = Fnv::default();
    match parse(data, Path::new("fuzz.conf"), opts) {
        Ok((config, warnings)) => {
            sig.str("ok").num(config.sets.len().min(4) as u64);
            for w in &warnings {
                check_pos(w.pos.line, w.pos.column, &w.to_string());
            }
            if let Some(w) = warnings.first() {
                sig.str(first_words(&w.message));
            }
            config.hosts();
            for set in &config.sets {
                assert!(!set.hosts.is_empty(), "a set without hosts");
                set.options.names();
                for p in &set.paths {
                    assert!(p.source.is_absolute(), "source {:?} is relative", p.source);
                    assert!(p.target.is_absolute(), "target {:?} is relative", p.target);
                }
                for p in SAMPLE_PATHS {
                    set.is_excluded(Path::new(p));
                }
                if let Some(h) = set.hosts.first() {
                    assert!(set.has_host(&h.name));
                    assert_eq!(set.peers_of(&h.name).count(), set.hosts.len() - 1);
                }
            }
        }
        Err(diags) => {
            assert!(diags.has_errors(), "Err without an error");
            for d in &diags.0 {
                check_pos(d.pos.line, d.pos.column, &d.to_string());
            }
            if let Some(d) = diags.errors().next() {
                sig.str("err").str(first_words(&d.message));
            }
        }
    }
    sig.finish()
}

/// Paths to match exclusions against (see the module's docs).
const SAMPLE_PATHS: [&str; 5] = [
    "/srv/www/index.html",
    "/srv/www/.x.swp",
    "/etc/nginx/local.conf",
    "/usr/lib/aliases.dir",
    concat!(
        "/srv/",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "aaa"
    ),
];

fn check_pos(line: u32, column: u32, shown: &str) {
    assert!(
        line >= 1 && column >= 1,
        "a diagnostic without a position: {shown}"
    );
}

/// The first words of a message: what kind of problem, not its details.
fn first_words(s: &str) -> &str {
    let end = s
        .char_indices()
        .filter(|(_, c)| *c == ' ')
        .nth(2)
        .map_or(s.len(), |(i, _)| i);
    s.get(..end).unwrap_or(s)
}

fn seeds() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![include_bytes!("../../../../etc/omirrd.conf").to_vec()];
    v.extend(SEEDS.iter().map(|s| s.as_bytes().to_vec()));
    v
}

const SEEDS: &[&str] = &[
    // rdist(1)'s example, as the config crate's test parses it.
    include_str!("../../../config/tests/data/rdist-example.distfile"),
    "HOSTS = ( alpha beta gamma )\nFILES = ( /srv/www /etc/nginx )\n${FILES} -> ${HOSTS}\n\tinstall ;\n",
    "/a -> ( x y )\n/b -> ( x z )",
    "srcs:\n/usr/src -> ( a b )\nimagen: /x -> ( a b )",
    "/a -> ( root@arpa matisse+ )",
    "/a -> ( x y )\n install -osavetargets,younger ;\n install -o history,defowner=daemon ;\n install -R -b ;",
    "/a -> ( x y )\n install -ochknfs,chkreadonly,chksym,compare,defgroup=wheel,defowner,follow,history,ignlnks,nochkgroup,nochkmode,nochkowner,nodescend,noexec,numchkgroup,numchkowner,quiet,remove,savetargets,sparse,updateperm,verify,whole,younger ;",
    "/usr/local/ips -> ( a b )\n install /opt/ips ;",
    "( /a/b /c ) -> ( a b )\n install -owhole /backup ;",
    "/etc -> ( a b )\n except ( /etc/local.conf /etc/ssh/*_key ) ;\n except_pat ( \\\\.swp$ ~$ /SCCS\\$ ) ;",
    "/etc -> ( a b )\n special /etc/nginx \"systemctl reload nginx\" ;\n special \"logger changed $FILE\" ;\n cmdspecial ( /etc/a /etc/b ) \"echo $FILES\n  | wc\" ;\n notify ( ops@example.org root ) ;",
    "EX = ( a b )\nD = ( x y )\n/usr/lib/${EX} -> ( h1 h2 )\n/${D}/${EX} -> ( h1 h2 )",
    "H = ( a b )\nE = ( )\n( /x /y/${E} ) -> $H",
    "N = web{1,2}\nB = ( {a,b} )\n/srv/${B}{x,y} -> ( ${N} db ) - ( web2 )",
    "/a/{b,c{1,2}}/{} -> ( h k )",
    "FILES = ( /srv/* ) - ( /srv/tmp )\n${FILES} -> ( a b )",
    "/srv/star\\* -> ( a b )\n/[es][rt]?/* -> ( a b )\n/opt/tools/* -> ( a b ) & ( b c )",
    "( ~root/.profile ~root ~ ) -> ( a b )\n except ~nosuchuser4242/x ;",
    "HOSTS = ( a b )\n( /srv ${EXTRA} /n/${NONE} ) -> ${HOSTS}",
    "/a -> ( h k )\n\tinstall ;\n\tinstal -oremove ;\n\texcept /a/b ;",
    "/a -> ( h k )\n special \"make -C /a ;\n",
    "H = ( a b\n/a -> $H",
    "/a -> ( h k )\n except_pat ( ok [oops ) ;",
    "/a/../etc -> ( h k/j )\n/a/{b,c -> ( h k )\n/a -> ( h k )\n install /x /y ;",
    "/srv/${D} -> ${HOSTS}\n except /srv/{a,b}/** ;",
];

const DICT: &[&[u8]] = &[
    b"(",
    b")",
    b";",
    b"=",
    b"->",
    b"::",
    b":",
    b"-",
    b"+",
    b"&",
    b"\"",
    b"\"x y\"",
    b"#c\n",
    b"\n",
    b" ",
    b"\t",
    b"$",
    b"${",
    b"}",
    b"{",
    b",",
    b"${D}",
    b"$D",
    b"${HOSTS}",
    b"${NOPE}",
    b"\\",
    b"\\\\",
    b"\\$",
    b"*",
    b"?",
    b"[",
    b"]",
    b"[!a-z]",
    b"**",
    b"~",
    b"~root",
    b"~nobody",
    b"/",
    b"..",
    b".",
    b"a",
    b"host",
    b"root@h",
    b"h+",
    b"alpha",
    b"install",
    b"-o",
    b"-oremove,savetargets",
    b"-odefowner=x",
    b"-Rw",
    b"-Z",
    b"except",
    b"except_pat",
    b"special",
    b"cmdspecial",
    b"notify",
    b"lbl:",
    b"X",
    b"/srv/{a,b}",
    b"/srv/*",
    b"/srv/www",
    b"/etc/nginx",
    b"/opt/tools/*",
    b"{a,b,c,d,e,f,g,h}",
    b"{,}",
    b"{}",
    b"(.*)*$",
    b"\xc3\xa9",
    b"\0",
    b"\r\n",
];
