//! The Distfile language through its public interface: every statement and
//! command form, expansion and its order, globbing under a root, and each
//! class of error with its position.

use omirr_config::distfile::{
    install_option, parse, Config, Direction, OptionMeaning, ParseOptions, PathMatch,
    INSTALL_OPTIONS,
};
use omirr_config::{Diagnostic, Pos, Severity};
use std::fs;
use std::path::{Path, PathBuf};

fn opts(root: &Path) -> ParseOptions {
    ParseOptions {
        root: root.to_path_buf(),
        defines: Vec::new(),
        known_hosts: None,
    }
}

fn empty_root() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[track_caller]
fn parse_ok_in(text: &str, o: &ParseOptions) -> (Config, Vec<Diagnostic>) {
    match parse(text.as_bytes(), Path::new("omirrd.conf"), o) {
        Ok(r) => r,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

#[track_caller]
fn parse_ok(text: &str) -> Config {
    let root = empty_root();
    parse_ok_in(text, &opts(root.path())).0
}

/// The errors of `text` as (line, column, message).
#[track_caller]
fn errors(text: &str) -> Vec<(u32, u32, String)> {
    let root = empty_root();
    match parse(
        text.as_bytes(),
        Path::new("omirrd.conf"),
        &opts(root.path()),
    ) {
        Ok(_) => panic!("expected errors in:\n{text}"),
        Err(e) => e
            .errors()
            .map(|d| (d.pos.line, d.pos.column, d.message.clone()))
            .collect(),
    }
}

#[track_caller]
fn one_error(text: &str) -> (u32, u32, String) {
    let mut e = errors(text);
    assert_eq!(e.len(), 1, "expected exactly one error, got {e:#?}");
    e.remove(0)
}

fn sources(c: &Config, set: usize) -> Vec<String> {
    c.sets[set]
        .paths
        .iter()
        .map(|p| p.source.display().to_string())
        .collect()
}

fn hosts(c: &Config, set: usize) -> Vec<&str> {
    c.sets[set].hosts.iter().map(|h| h.name.as_str()).collect()
}

// ---------------------------------------------------------------- statements

#[test]
fn definition_and_distribution() {
    let c = parse_ok(
        "HOSTS = ( alpha beta gamma )\nFILES = ( /srv/www /etc/nginx )\n${FILES} -> ${HOSTS}\n\tinstall ;\n",
    );
    assert_eq!(c.sets.len(), 1);
    assert_eq!(hosts(&c, 0), ["alpha", "beta", "gamma"]);
    assert_eq!(sources(&c, 0), ["/srv/www", "/etc/nginx"]);
    assert_eq!(c.sets[0].paths[0].target, PathBuf::from("/srv/www"));
    assert_eq!(c.sets[0].label, None);
}

#[test]
fn statement_without_commands_still_mirrors() {
    let c = parse_ok("/a -> ( x y )\n/b -> ( x z )");
    assert_eq!(c.sets.len(), 2);
    assert_eq!(c.sets_for("x").count(), 2);
    assert_eq!(c.sets_for("y").count(), 1);
    assert_eq!(c.hosts(), ["x", "y", "z"]);
    let peers: Vec<_> = c.sets[0].peers_of("x").map(|h| h.name.as_str()).collect();
    assert_eq!(peers, ["y"]);
}

#[test]
fn labels() {
    let c = parse_ok("srcs:\n/usr/src -> ( a b )\nimagen: /x -> ( a b )");
    assert_eq!(c.sets[0].label.as_deref(), Some("srcs"));
    assert_eq!(c.sets[1].label.as_deref(), Some("imagen"));
}

#[test]
fn stamp_statement_is_parsed_and_ignored_with_a_warning() {
    let root = empty_root();
    let (c, warnings) = parse_ok_in(
        "FILES = ( /a )\n${FILES} :: stamp.cory\n\tnotify root@cory ;\n",
        &opts(root.path()),
    );
    assert!(c.sets.is_empty());
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].severity, Severity::Warning);
    assert_eq!(warnings[0].pos, Pos::new(2, 1));
    assert!(warnings[0].message.contains("'::'"));
}

#[test]
fn login_and_nfs_suffix_on_hosts() {
    let c = parse_ok("/a -> ( root@arpa matisse+ )");
    assert_eq!(hosts(&c, 0), ["arpa", "matisse"]);
    assert_eq!(c.sets[0].hosts[0].login.as_deref(), Some("root"));
}

// ------------------------------------------------------------------ commands

#[test]
fn install_options_attached_separate_and_legacy() {
    let c = parse_ok("/a -> ( x y )\n install -osavetargets,nochkmode ;\n install -o history,defowner=daemon ;\n install -R -b ;");
    let o = &c.sets[0].options;
    assert!(o.savetargets && o.nochkmode && o.history && o.remove && o.compare);
    assert_eq!(o.defowner.as_deref(), Some("daemon"));
    assert_eq!(o.defgroup, None);
    assert!(!o.whole);
}

/// `conflicts=N` bounds the conflict copies per file; 0 turns them off;
/// it needs a number, and a bad one names the option and where it is.
#[test]
fn conflicts_option_takes_a_bound() {
    let c = parse_ok("/a -> ( x y )\n install -oconflicts=3 ;\n/b -> ( x y )\n install -o conflicts=0 ;\n/c -> ( x y )");
    assert_eq!(c.sets[0].options.conflicts, Some(3));
    assert_eq!(c.sets[0].options.conflict_copies(), 3);
    assert_eq!(c.sets[1].options.conflict_copies(), 0);
    assert_eq!(c.sets[2].options.conflicts, None);
    assert_eq!(
        c.sets[2].options.conflict_copies(),
        omirr_config::distfile::DEFAULT_CONFLICT_COPIES
    );
    assert!(c.sets[0]
        .options
        .names()
        .contains(&"conflicts=3".to_string()));
    for bad in [
        "conflicts",
        "conflicts=",
        "conflicts=many",
        "conflicts=-1",
        "conflicts=1001",
    ] {
        let (l, col, m) = one_error(&format!("/a -> ( h k )\n install -o{bad} ;"));
        assert_eq!((l, col), (2, 12), "{bad}");
        assert!(
            m.starts_with("install option 'conflicts' needs a number of conflict copies"),
            "{bad}: {m}"
        );
    }
}

/// Every rdist option is either carried out, and parses without a word,
/// or refused with an error that says why; none is accepted and ignored.
#[test]
fn every_rdist_option_is_carried_out_or_refused_with_its_reason() {
    let accepted = "chknfs,chkreadonly,compare,defgroup=wheel,defowner,history,noacls,nochkgroup,nochkmode,nochkowner,nodescend,noxattrs,numchkgroup,numchkowner,quiet,remove,savetargets,sparse,updateperm,whole";
    let root = empty_root();
    let (c, warnings) = parse_ok_in(
        &format!("/a -> ( x y )\n install -o{accepted} ;"),
        &opts(root.path()),
    );
    let names = c.sets[0].options.names();
    assert_eq!(names.len(), 20, "{names:?}");
    assert!(
        names.contains(&"defowner=bin".to_string()),
        "rdist's default owner"
    );
    assert!(names.contains(&"defgroup=wheel".to_string()));
    assert!(
        warnings.iter().all(|w| w.pos.line != 2),
        "accepted options say nothing: {warnings:?}"
    );
    let refused = ["chksym", "follow", "ignlnks", "noexec", "verify", "younger"];
    let text = format!("/a -> ( x y )\n install -o{} ;", refused.join(","));
    let e = errors(&text);
    assert_eq!(e.len(), refused.len(), "{e:#?}");
    for ((line, col, msg), name) in e.iter().zip(refused) {
        assert_eq!(*line, 2);
        // The error points at the option itself and gives the reason.
        let at = 1 + text.lines().nth(1).expect("line").find(name).expect("name") as u32;
        assert_eq!(*col, at, "{msg}");
        match install_option(name) {
            Some(OptionMeaning::Refused(why)) => {
                assert_eq!(*msg, format!("install option '{name}' is refused: {why}"))
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // rdist's one-letter flags for them too.
    for (flag, name) in [("-h", "follow"), ("-i", "ignlnks"), ("-y", "younger")] {
        let (_, _, msg) = one_error(&format!("/a -> ( x y )\n install {flag} ;"));
        assert!(
            msg.starts_with(&format!("install option '{name}' is refused: ")),
            "{msg}"
        );
    }
    // The table has every option once, in order.
    let all: Vec<&str> = INSTALL_OPTIONS.iter().map(|(n, _)| *n).collect();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(all, sorted);
    assert_eq!(all.len(), 27);
}

/// The table of omirrd.conf(5) says, for every option, what `omirrd
/// check` says: the same words.
#[test]
fn the_manual_table_matches_the_options() {
    let manual = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/omirrd.conf.5.md"),
    )
    .expect("docs/omirrd.conf.5.md");
    for (name, meaning) in INSTALL_OPTIONS {
        let row = manual
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}")))
            .unwrap_or_else(|| panic!("no row for {name} in the manual"));
        let (kind, text) = match meaning {
            OptionMeaning::Does(t) => ("accepted", t),
            OptionMeaning::Refused(t) => ("refused", t),
        };
        assert!(
            row.ends_with(&format!("| {kind} | {text} |")),
            "the manual's row for {name} does not say what omirrd check says:\n{row}\nexpected: | {kind} | {text} |"
        );
    }
}

/// Kept versions are left out of sets that keep them, and `nodescend`
/// mirrors only the listed paths themselves.
#[test]
fn kept_versions_and_nodescend_leave_paths_out() {
    let c = parse_ok("/a -> ( x y )\n install -osavetargets ;\n/b -> ( x y )\n/c -> ( x y )\n install -onodescend ;");
    let (keep, plain, flat) = (&c.sets[0], &c.sets[1], &c.sets[2]);
    for kept in ["/a/f.OLD", "/a/d/f.OLD.3", "/a/f.OLD.OLD"] {
        assert!(keep.is_excluded(Path::new(kept)), "{kept}");
    }
    for mirrored in ["/a/f", "/a/f.OLDER", "/a/f.OLD.x", "/a/f.OLD."] {
        assert!(!keep.is_excluded(Path::new(mirrored)), "{mirrored}");
    }
    assert!(!plain.is_excluded(Path::new("/b/f.OLD")), "no savetargets");
    assert!(!flat.is_excluded(Path::new("/c")));
    assert!(flat.is_excluded(Path::new("/c/f")));
    assert!(flat.is_excluded(Path::new("/c/d/f")));
}

#[test]
fn install_destination_maps_targets() {
    let c = parse_ok("/usr/local/ips -> ( a b )\n install /opt/ips ;");
    assert_eq!(c.sets[0].paths[0].target, PathBuf::from("/opt/ips"));
    let c = parse_ok(
        "/usr/local/${I} -> ( a b )\n install /usr/local/lib ;"
            .replace("${I}", "{ips,dviimp}")
            .as_str(),
    );
    let t: Vec<_> = c.sets[0].paths.iter().map(|p| p.target.clone()).collect();
    assert_eq!(
        t,
        [
            PathBuf::from("/usr/local/lib/ips"),
            PathBuf::from("/usr/local/lib/dviimp")
        ]
    );
    let c = parse_ok("( /a/b /c ) -> ( a b )\n install -owhole /backup ;");
    assert_eq!(c.sets[0].paths[0].target, PathBuf::from("/backup/a/b"));
    assert_eq!(c.sets[0].paths[1].target, PathBuf::from("/backup/c"));
}

#[test]
fn except_paths_and_patterns() {
    let c = parse_ok(
        "/etc -> ( a b )\n except ( /etc/local.conf /etc/ssh/*_key ) ;\n except_pat ( \\\\.swp$ ~$ /SCCS\\$ ) ;",
    );
    let s = &c.sets[0];
    assert!(matches!(&s.excludes[0], PathMatch::Path(p) if p == Path::new("/etc/local.conf")));
    assert!(matches!(&s.excludes[1], PathMatch::Glob(_)));
    assert!(s.is_excluded(Path::new("/etc/local.conf")));
    assert!(
        s.is_excluded(Path::new("/etc/ssh/ssh_host_rsa_key")),
        "glob excludes match files that appear later"
    );
    assert!(!s.is_excluded(Path::new("/etc/ssh/ssh_host_rsa_key.pub")));
    {
        use std::os::unix::ffi::OsStrExt;
        let latin1 = std::ffi::OsStr::from_bytes(b"h\xf4te_key");
        assert!(
            s.is_excluded(&Path::new("/etc/ssh").join(latin1)),
            "a name that is not UTF-8 matches a pattern too"
        );
    }
    assert!(s.is_excluded(Path::new("/etc/x/.vimrc.swp")));
    assert!(
        !s.is_excluded(Path::new("/etc/x/swp")),
        "\\\\. is a literal dot"
    );
    assert!(s.is_excluded(Path::new("/etc/motd~")));
    assert!(s.is_excluded(Path::new("/etc/src/SCCS")));
    assert!(
        !s.is_excluded(Path::new("/etc/src/SCCS/x")),
        "anchored with \\$"
    );
    assert!(!s.is_excluded(Path::new("/etc/hosts")));
}

#[test]
fn except_covers_everything_below() {
    let c = parse_ok("/srv -> ( a b )\n except /srv/cache ;");
    assert!(c.sets[0].is_excluded(Path::new("/srv/cache/x/y")));
    assert!(!c.sets[0].is_excluded(Path::new("/srv/cache2")));
}

#[test]
fn special_cmdspecial_notify() {
    let c = parse_ok(
        "/etc -> ( a b )\n special /etc/nginx \"systemctl reload nginx\" ;\n special \"logger changed $FILE\" ;\n cmdspecial ( /etc/a /etc/b ) \"echo $FILES\n  | wc\" ;\n notify ( ops@example.org root ) ;",
    );
    let s = &c.sets[0];
    assert_eq!(s.commands.len(), 3);
    assert_eq!(s.commands[0].command, "systemctl reload nginx");
    assert!(s.commands[0].names[0].matches(Path::new("/etc/nginx/nginx.conf")));
    assert!(!s.commands[0].once_per_batch);
    assert!(s.commands[1].names.is_empty(), "no names: every file");
    assert_eq!(
        s.commands[1].command, "logger changed $FILE",
        "strings are not expanded"
    );
    assert!(s.commands[2].once_per_batch);
    assert_eq!(s.commands[2].command, "echo $FILES\n  | wc");
    assert_eq!(s.commands[2].names.len(), 2);
    assert_eq!(s.notify, ["ops@example.org", "root"]);
}

#[test]
fn sendonly_and_receiveonly_give_hosts_a_direction() {
    let c = parse_ok(
        "HOSTS = ( alpha beta gamma delta )\n/srv -> ${HOSTS}\n\tinstall ;\n\tsendonly alpha ;\n\treceiveonly ( beta root@gamma+ ) ;\n",
    );
    let s = &c.sets[0];
    assert_eq!(s.direction("alpha"), Direction::SendOnly);
    assert_eq!(s.direction("beta"), Direction::ReceiveOnly);
    assert_eq!(
        s.direction("gamma"),
        Direction::ReceiveOnly,
        "login and + dropped"
    );
    assert_eq!(s.direction("delta"), Direction::Both, "named in neither");
    assert_eq!(s.one_way.len(), 3);
    // Variables, braces and repeats within one direction are fine.
    let c =
        parse_ok("R = ( h{2,3} )\n/srv -> ( h1 h2 h3 )\n receiveonly ${R} ;\n receiveonly h2 ;\n");
    assert_eq!(c.sets[0].direction("h3"), Direction::ReceiveOnly);
    assert_eq!(c.sets[0].direction("h1"), Direction::Both);
    // Without the commands every host is symmetric.
    let c = parse_ok("/srv -> ( a b )\n");
    assert!(c.sets[0].one_way.is_empty());
    assert_eq!(c.sets[0].direction("a"), Direction::Both);
}

#[test]
fn one_way_errors_name_the_host_and_the_line() {
    let (line, col, m) =
        one_error("/srv -> ( a b )\n install ;\n sendonly a ;\n receiveonly ( b a ) ;\n");
    assert_eq!((line, col), (4, 18), "{m}");
    assert_eq!(
        m,
        "host 'a' is both sendonly (line 3) and receiveonly (line 4): a host of a set is one or the other"
    );
    let (line, col, m) = one_error("/srv -> ( a b )\n receiveonly c ;\n");
    assert_eq!((line, col), (2, 14), "{m}");
    assert_eq!(
        m,
        "receiveonly names 'c', which is not a host of this set (line 1): expected one of a, b"
    );
    let (line, _, m) = one_error("/srv -> ( a b )\n sendonly a\n");
    assert_eq!(line, 3, "{m}");
    assert!(m.contains("expected ';' after the sendonly list"), "{m}");
    let (_, _, m) = one_error("/srv -> ( a b )\n sendonly ;\n");
    assert!(m.contains("expected a host list after 'sendonly'"), "{m}");
    // A set whose every host only receives can change nothing: a warning.
    let (_, warnings) = parse_ok_in(
        "/srv -> ( a b )\n receiveonly ( a b ) ;\n",
        &opts(empty_root().path()),
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.message.contains("every host of this set is receiveonly")),
        "{warnings:?}"
    );
}

// ------------------------------------------------------- expansion and order

#[test]
fn variables_distribute_over_words() {
    let c = parse_ok(
        "EX = ( a b )\nD = ( x y )\n/usr/lib/${EX} -> ( h1 h2 )\n/${D}/${EX} -> ( h1 h2 )",
    );
    assert_eq!(sources(&c, 0), ["/usr/lib/a", "/usr/lib/b"]);
    assert_eq!(sources(&c, 1), ["/x/a", "/x/b", "/y/a", "/y/b"]);
}

#[test]
fn one_letter_variables_and_empty_lists() {
    let c = parse_ok("H = ( a b )\nE = ( )\n( /x /y/${E} ) -> $H");
    assert_eq!(hosts(&c, 0), ["a", "b"]);
    assert_eq!(
        sources(&c, 0),
        ["/x"],
        "a word with an empty list variable vanishes"
    );
}

#[test]
fn set_algebra() {
    let c = parse_ok(
        "ALL = ( a b c d )\nSOME = ( b d )\nX = ${ALL} - ${SOME}\nY = ${SOME} + ( e b )\nZ = ${ALL} & ( d c z )\n\
         /x -> ${X}\n/y -> ${Y}\n/z -> ${Z}\n/w -> ${ALL} - ( a ) - ( b ) + ( q )",
    );
    assert_eq!(hosts(&c, 0), ["a", "c"]);
    assert_eq!(hosts(&c, 1), ["b", "d", "e"]);
    assert_eq!(hosts(&c, 2), ["c", "d"], "left operand's order");
    assert_eq!(hosts(&c, 3), ["c", "d", "q"], "left to right");
}

#[test]
fn braces_expand_after_variables_and_before_algebra() {
    // The variable's value holds the braces; they expand where it is used.
    let c = parse_ok("N = web{1,2}\nB = ( {a,b} )\n/srv/${B}{x,y} -> ( ${N} db ) - ( web2 )");
    assert_eq!(sources(&c, 0), ["/srv/ax", "/srv/ay", "/srv/bx", "/srv/by"]);
    assert_eq!(hosts(&c, 0), ["web1", "db"]);
    // Nested braces and the literal {}.
    let c = parse_ok("/a/{b,c{1,2}}/{} -> ( h k )");
    assert_eq!(sources(&c, 0), ["/a/b/{}", "/a/c1/{}", "/a/c2/{}"]);
}

#[test]
fn glob_against_root_then_algebra() {
    let root = empty_root();
    for d in ["srv/www", "srv/tmp", "srv/.hidden", "etc/nginx"] {
        fs::create_dir_all(root.path().join(d)).expect("mkdir");
    }
    fs::write(root.path().join("srv/star*"), b"").expect("write");
    let o = opts(root.path());
    // Globs are expanded under the root and name Distfile paths.
    let (c, w) = parse_ok_in("/srv/* -> ( a b )", &o);
    assert_eq!(
        sources(&c, 0),
        ["/srv/star*", "/srv/tmp", "/srv/www"],
        "sorted, no dot files"
    );
    assert!(w.is_empty(), "{w:?}");
    // Subtracting from a glob works at the use site, after globbing...
    let (c, _) = parse_ok_in("FILES = ( /srv/* )\n${FILES} - ( /srv/tmp ) -> ( a b )", &o);
    assert_eq!(sources(&c, 0), ["/srv/star*", "/srv/www"]);
    // ...while a definition's algebra compares words as written.
    let (c, _) = parse_ok_in("FILES = ( /srv/* ) - ( /srv/tmp )\n${FILES} -> ( a b )", &o);
    assert_eq!(sources(&c, 0), ["/srv/star*", "/srv/tmp", "/srv/www"]);
    // An escaped metacharacter is literal.
    let (c, _) = parse_ok_in("/srv/star\\* -> ( a b )", &o);
    assert_eq!(sources(&c, 0), ["/srv/star*"]);
    // Character classes and '?'.
    let (c, _) = parse_ok_in("/[es][rt]?/* -> ( a b )", &o);
    assert_eq!(
        sources(&c, 0),
        ["/etc/nginx", "/srv/star*", "/srv/tmp", "/srv/www"]
    );
}

#[test]
fn glob_matching_nothing_warns() {
    let root = empty_root();
    let (c, w) = parse_ok_in("/usr/man/man? -> ( a b )", &opts(root.path()));
    assert!(c.sets[0].paths.is_empty());
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].pos, Pos::new(1, 1));
    assert!(w[0].message.contains("matches nothing"), "{}", w[0].message);
}

#[test]
fn tilde_expands_to_home_directories() {
    let root = empty_root();
    let home = nix::unistd::User::from_name("root")
        .ok()
        .flatten()
        .map(|u| u.dir)
        .expect("root in passwd");
    let (c, _) = parse_ok_in("( ~root/.profile ~root ) -> ( a b )", &opts(root.path()));
    assert_eq!(c.sets[0].paths[0].source, home.join(".profile"));
    assert_eq!(c.sets[0].paths[1].source, home);
    let (line, col, msg) = one_error("/a -> ( a b )\n except ~nosuchuser4242/x ;");
    assert_eq!((line, col), (2, 9));
    assert!(msg.contains("unknown user 'nosuchuser4242'"), "{msg}");
}

#[test]
fn command_line_defines_override() {
    let root = empty_root();
    let mut o = opts(root.path());
    o.defines = vec![
        ("HOSTS".into(), "( x y )".into()),
        ("EXTRA".into(), "/opt".into()),
        ("NONE".into(), "".into()),
    ];
    let (c, _) = parse_ok_in(
        "HOSTS = ( a b )\n( /srv ${EXTRA} /n/${NONE} ) -> ${HOSTS}",
        &o,
    );
    assert_eq!(hosts(&c, 0), ["x", "y"]);
    assert_eq!(sources(&c, 0), ["/srv", "/opt"]);
    o.defines = vec![("1BAD".into(), "x".into())];
    assert!(parse(b"/a -> b", Path::new("f"), &o).is_err());
}

#[test]
fn rdist_manual_example_parses() {
    let text = include_str!("data/rdist-example.distfile");
    let root = empty_root();
    fs::create_dir_all(root.path().join("usr/man/man1")).expect("mkdir");
    fs::create_dir_all(root.path().join("usr/include/sys")).expect("mkdir");
    fs::write(root.path().join("usr/include/stdio.h"), b"").expect("write");
    fs::write(root.path().join("usr/include/sys/types.h"), b"").expect("write");
    let (c, warnings) = parse_ok_in(text, &opts(root.path()));
    assert_eq!(c.sets.len(), 3);
    assert_eq!(hosts(&c, 0), ["matisse", "arpa"]);
    let s = sources(&c, 0);
    assert!(s.contains(&"/usr/man/man1".to_string()), "{s:?}");
    assert!(s.contains(&"/usr/include/stdio.h".to_string()), "{s:?}");
    assert!(s.contains(&"/usr/include/sys/types.h".to_string()), "{s:?}");
    assert!(c.sets[0].options.remove && c.sets[0].options.chknfs);
    assert!(c.sets[0].is_excluded(Path::new("/usr/lib/aliases.dir")));
    assert!(c.sets[0].is_excluded(Path::new("/usr/games/lib/fortunes")));
    assert!(!c.sets[0].is_excluded(Path::new("/usr/lib/libc.a")));
    assert_eq!(c.sets[0].commands[0].command, "/usr/lib/sendmail -bz");
    assert_eq!(c.sets[1].label.as_deref(), Some("srcs"));
    assert!(c.sets[1].is_excluded(Path::new("/usr/src/bin/ls.o")));
    assert!(c.sets[1].is_excluded(Path::new("/usr/src/bin/SCCS")));
    assert_eq!(c.sets[2].label.as_deref(), Some("imagen"));
    assert_eq!(
        c.sets[2].paths[1].target,
        PathBuf::from("/usr/local/lib/dviimp")
    );
    assert_eq!(c.sets[2].notify, ["ralph"]);
    // The '::' statement is reported, not fatal.
    assert!(warnings.iter().any(|w| w.message.contains("'::'")));
}

#[test]
fn distfile_md_example_parses() {
    let c = parse_ok(
        r#"HOSTS = ( alpha beta gamma )
FILES = ( /srv/www /etc/nginx )

${FILES} -> ${HOSTS}
        install -osavetargets ;
        except /etc/nginx/local.conf ;
        except_pat ( \\.swp$ ~$ ) ;
        special /etc/nginx "systemctl reload nginx" ;
"#,
    );
    assert!(c.sets[0].options.savetargets);
    assert!(c.sets[0].is_excluded(Path::new("/srv/www/.index.html.swp")));
}

// -------------------------------------------------------------------- errors

#[test]
fn error_undefined_variable() {
    let (l, c, m) = one_error("A = ( x )\n/a -> ( h ${B} )");
    assert_eq!((l, c), (2, 11));
    assert!(m.starts_with("undefined variable 'B'"), "{m}");
    let (l, c, m) = one_error("FILES = ( /a )\n$FILES -> ( h k )");
    assert_eq!((l, c), (2, 1));
    assert!(
        m.contains("write ${FILES}"),
        "hint for rdist's one-letter names: {m}"
    );
}

#[test]
fn error_unknown_command() {
    let (l, c, m) = one_error("/a -> ( h k )\n\tinstall ;\n\tinstal -oremove ;\n\texcept /a/b ;");
    assert_eq!((l, c), (3, 2));
    assert!(m.starts_with("unknown command 'instal'"), "{m}");
}

#[test]
fn error_missing_semicolon() {
    let (l, c, m) = one_error("/a -> ( h k )\n install -osavetargets\n except /a/x ;");
    assert_eq!((l, c), (3, 2));
    assert_eq!(m, "expected ';' after install options, found 'except'");
}

#[test]
fn error_unterminated_string() {
    let (l, c, m) = one_error("/a -> ( h k )\n special \"make -C /a ;\n");
    assert_eq!((l, c), (2, 10));
    assert!(m.starts_with("unterminated string"), "{m}");
}

#[test]
fn error_unterminated_list() {
    let e = errors("H = ( a b\n/a -> $H");
    assert_eq!((e[0].0, e[0].1), (1, 5));
    assert!(e[0].2.starts_with("unterminated list"), "{}", e[0].2);
}

#[test]
fn error_unknown_install_option() {
    let (l, c, m) = one_error("/a -> ( h k )\n install -osavetargets,turbo ;");
    assert_eq!((l, c), (2, 24));
    assert!(m.starts_with("unknown install option 'turbo'"), "{m}");
    let (l, c, m) = one_error("/a -> ( h k )\n install -R -x ;");
    assert_eq!((l, c), (2, 14));
    assert!(m.starts_with("unknown install flag '-x'"), "{m}");
}

#[test]
fn error_bad_regex_host_path_brace_arrow() {
    let (l, c, m) = one_error("/a -> ( h k )\n except_pat ( ok [oops ) ;");
    assert_eq!((l, c), (2, 18));
    assert!(m.starts_with("invalid regular expression '[oops'"), "{m}");
    let (l, c, m) = one_error("/a -> ( h k/j )");
    assert_eq!((l, c), (1, 11));
    assert!(m.starts_with("invalid host name 'k/j'"), "{m}");
    let (l, c, m) = one_error("/a/../etc -> ( h k )");
    assert_eq!((l, c), (1, 1));
    assert!(m.contains("'..'"), "{m}");
    let (l, c, m) = one_error("/a/{b,c -> ( h k )");
    assert_eq!((l, c), (1, 4));
    assert!(m.starts_with("unmatched '{'"), "{m}");
    let (l, c, m) = one_error("/a ( h k )");
    assert_eq!((l, c), (1, 4));
    assert_eq!(m, "expected '->' or '::' after the source list, found '('");
    let (l, c, m) = one_error("/a -> ( h k )\n install /x /y ;");
    assert_eq!((l, c), (2, 13));
    assert!(
        m.starts_with("expected ';' after the install destination"),
        "{m}"
    );
}

#[test]
fn error_command_outside_statement() {
    let (l, c, m) = one_error("except /a ;");
    assert_eq!((l, c), (1, 1));
    assert!(m.contains("outside a statement"), "{m}");
}

#[test]
fn all_errors_are_reported_in_order() {
    let text = "HOSTS = ( a b )\n\
                /srv -> ${HOSTZ}\n\
                \tinstall -osavetargets ;\n\
                \tcopy /srv/x ;\n\
                /etc -> ${HOSTS}\n\
                \tspecial /etc/x \"oops ;\n";
    let e = errors(text);
    let at: Vec<(u32, u32)> = e.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(at, [(2, 9), (4, 2), (6, 17)], "{e:#?}");
}

#[test]
fn invalid_utf8_is_an_error_with_position() {
    let root = empty_root();
    let e = parse(
        b"/a -> ( h k )\n/b\xff -> ( h k )",
        Path::new("f"),
        &opts(root.path()),
    )
    .expect_err("not UTF-8");
    assert_eq!(e.0[0].pos, Pos::new(2, 3));
}

#[test]
fn diagnostics_print_file_line_column() {
    let root = empty_root();
    let e = parse(
        b"/a -> ( h k )\n install -osavetargets\n except /x ;",
        Path::new("omirrd.conf"),
        &opts(root.path()),
    )
    .expect_err("error");
    let printed = e.to_string();
    assert!(
        printed
            .lines()
            .any(|l| l
                == "omirrd.conf:3:2: error: expected ';' after install options, found 'except'"),
        "{printed}"
    );
}

#[test]
fn error_host_not_in_peers_file() {
    let root = empty_root();
    let mut o = opts(root.path());
    o.known_hosts = Some(["alpha".to_string(), "beta".to_string()].into());
    let e = parse(
        b"HOSTS = ( alpha beta\n  delta )\n/a -> ${HOSTS}\n/b -> ( root@alpha gamma+ )",
        Path::new("f"),
        &o,
    )
    .expect_err("unknown hosts");
    let at: Vec<_> = e.errors().map(|d| (d.pos, d.message.as_str())).collect();
    assert_eq!(at.len(), 2, "{at:?}");
    // Points into the definition, where the name was written.
    assert_eq!(at[0].0, Pos::new(2, 3));
    assert!(
        at[0].1.starts_with("host 'delta' is not in the peers file"),
        "{}",
        at[0].1
    );
    assert_eq!(at[1].0, Pos::new(4, 20));
    assert!(
        at[1].1.starts_with("host 'gamma' is not in the peers file"),
        "{}",
        at[1].1
    );
}

#[test]
fn a_broken_statement_hides_no_later_error() {
    // The first statement's head is broken and has no ';' of its own.
    let e = errors("/srv/a ( x y )\n/etc -> ( a b )\n install -ox ;\n/b -> $U\n");
    let at: Vec<(u32, u32)> = e.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(at, [(1, 8), (3, 12), (4, 7)], "{e:#?}");
}

#[test]
fn option_columns_when_the_list_is_a_separate_word() {
    let (l, c, m) = one_error("/a -> ( h k )\n install -o   savetargets,turbo ;");
    assert_eq!((l, c), (2, 27));
    assert!(m.starts_with("unknown install option 'turbo'"), "{m}");
}

#[test]
fn install_destination_is_not_a_pattern() {
    let (l, c, m) = one_error("/a -> ( h k )\n install /dest/* ;");
    assert_eq!((l, c), (2, 10));
    assert!(m.contains("is a pattern"), "{m}");
}

// ------------------------------------------------ found by the fuzz harness

/// Found by the fuzz harness (crates/fuzz): MAX_WORDS bounded how many
/// names a word expands to, not how long they are. Four brace groups of
/// eight after a 7,000-character name made 4,096 names of 7 KB: over 600
/// MB held for a 7.5 KB Distfile. Expansion is now capped in characters.
#[test]
fn brace_expansion_of_long_names_is_bounded() {
    let long = "r".repeat(7000);
    let group = "{a,b,c,d,e,f,g,h}";
    let text = format!("/{long}{group}{long}{group}{long}{group}{group} -> ( a b )");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].2.contains("characters in all"), "{}", e[0].2);
    assert_eq!((e[0].0, e[0].1), (1, 1));
}

/// The same through variables: each definition holds its own copy, so
/// the cap counts what every expansion of the Distfile produces.
#[test]
fn variable_expansion_is_bounded_in_all() {
    let words: Vec<String> = (0..300).map(|i| format!("name{i:06}")).collect();
    let mut text = format!("A = ( {} )\n", words.join(" "));
    // 90,000 names of 20 characters: about 2 M characters each.
    for i in 0..3 {
        text.push_str(&format!("B{i} = ${{A}}${{A}}\n"));
    }
    text.push_str("/x -> ( a b )\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].2.contains("characters in all"), "{}", e[0].2);
    // The first two definitions fit; the third does not.
    assert_eq!(e[0].0, 4);
    // One definition that size alone is fine.
    let one = format!(
        "A = ( {} )\nB = ${{A}}${{A}}\n/x -> ( a b )\n",
        words.join(" ")
    );
    parse_ok(&one);
}

/// Found by the fuzz harness (crates/fuzz): the glob crate walks a pattern
/// one component per stack frame, so `/./././…/*` in a 16 KB Distfile
/// overflowed the stack of a test thread (2 MiB), and a longer one that of
/// omirrd. A pattern longer than PATH_MAX is refused before it is walked.
#[test]
fn a_glob_pattern_longer_than_path_max_is_refused() {
    // A pattern as long as a path may be is walked (on this thread's
    // stack, the test harness's 2 MiB)...
    let depth = (4096 - 2) / 2;
    let text = format!("/{}* -> ( a b )", "./".repeat(depth));
    let root = empty_root();
    fs::write(root.path().join("f"), b"").expect("write");
    let (c, _) = parse_ok_in(&text, &opts(root.path()));
    assert_eq!(sources(&c, 0), ["/f"]);
    // ... a longer one is refused.
    let text = format!("/{}* -> ( a b )", "./".repeat(100_000));
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].2.contains("no path is longer than 4096 bytes"),
        "{}",
        e[0].2
    );
}

/// Found by the fuzz harness (crates/fuzz): each statement counted all
/// the errors so far, and each host was looked up in the list so far, so
/// many bad statements, or one list of many hosts, took quadratic time
/// (32,000 bad statements: 9 s; 59,049 hosts from 107 bytes: 6.5 s, in a
/// release build). The limits leave room for a slow debug build.
#[test]
fn many_statements_and_many_hosts_take_linear_time() {
    let started = std::time::Instant::now();
    let e = errors(&"/a -> ( -bad- )\n".repeat(20_000));
    // The first thousand problems (half of them warnings that /a does
    // not exist), and one that says more errors were left out.
    assert_eq!(e.len(), 501);
    assert!(
        e[500]
            .2
            .starts_with("more errors from here on are not shown"),
        "{:?}",
        e[500]
    );
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");

    let started = std::time::Instant::now();
    let nine = "{1,2,3,4,5,6,7,8,9}";
    let c = parse_ok(&format!("/a -> ( h{nine}{nine}{nine}{nine}{nine} h11111 )"));
    assert_eq!(c.sets[0].hosts.len(), 59_049);
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}

/// Found by the fuzz harness (crates/fuzz): one word can expand to
/// thousands, each with a problem per character, and every diagnostic
/// quotes what it is about: 65,536 of them held 60 MB beside the
/// expansion. At most 1,000 are recorded, and one more says so.
#[test]
fn diagnostics_of_one_distfile_are_capped() {
    let d = "$D".repeat(16);
    let o = ParseOptions {
        defines: vec![("D".into(), "( x y )".into())],
        ..opts(empty_root().path())
    };
    let text = format!("/a -> ( h k )\n install -Z{d} ;");
    let e = match parse(text.as_bytes(), Path::new("omirrd.conf"), &o) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0,
    };
    // A thousand, and one or two that say more errors and warnings were
    // left out.
    assert!((1001..=1002).contains(&e.len()), "{}", e.len());
    assert!(
        e.iter().any(|d| d
            .message
            .starts_with("more errors from here on are not shown")),
        "{:?}",
        e.last()
    );
}

/// An unknown `~user` before a large brace expansion is one error, not one
/// per word. (That the password database is asked once per user, not once
/// per word, is counted by a unit test in `expand.rs`.)
#[test]
fn an_unknown_home_directory_is_one_error() {
    let nine = "{1,2,3,4,5,6,7,8,9}";
    let text = format!("( ~nosuchuser4242/{nine}{nine}{nine}{nine}{nine} ) -> ( a b )");
    let e = errors(&text);
    assert!(
        e[0].2.contains("unknown user 'nosuchuser4242'"),
        "{:?}",
        e[0]
    );
}
