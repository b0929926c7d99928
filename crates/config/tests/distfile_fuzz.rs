//! The Distfile parser never panics, whatever it is fed.

use omirr_config::distfile::{parse, ParseOptions};
use proptest::prelude::*;
use std::path::Path;

fn opts() -> ParseOptions {
    ParseOptions {
        // A root that exists, so that globbing really walks a directory.
        root: std::env::temp_dir(),
        defines: vec![("D".into(), "( a {b,c} )".into())],
        known_hosts: Some(["a", "host", "h"].iter().map(|s| s.to_string()).collect()),
    }
}

/// Text made of the language's own pieces, so that the parser gets deep
/// rather than failing at the first byte.
fn distfile_like() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "(",
        ")",
        ";",
        "=",
        "->",
        "::",
        ":",
        "-",
        "+",
        "&",
        "\"",
        "\"x y\"",
        "#c\n",
        "\n",
        " ",
        "\t",
        "$",
        "${",
        "}",
        "{",
        ",",
        "${D}",
        "$D",
        "${NOPE}",
        "\\",
        "\\\\",
        "\\$",
        "*",
        "?",
        "[",
        "]",
        "~",
        "~root",
        "/",
        "..",
        "a",
        "host",
        "root@h",
        "h+",
        "install",
        "-o",
        "-oremove,savetargets",
        "-odefowner=x",
        "-Rw",
        "-Z",
        "except",
        "except_pat",
        "special",
        "cmdspecial",
        "notify",
        "lbl:",
        "X",
        "/srv/{a,b}",
        "/tmp/*",
        "é",
        "\u{0}",
    ]);
    prop::collection::vec(atoms, 0..60).prop_map(|v| v.join(" ").replace("  ", " "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse(&bytes, Path::new("fuzz"), &opts());
    }

    #[test]
    fn distfile_like_text_never_panics(text in distfile_like()) {
        let r = parse(text.as_bytes(), Path::new("fuzz"), &opts());
        // Every error carries a real position.
        if let Err(e) = r {
            for d in &e.0 {
                prop_assert!(d.pos.line >= 1 && d.pos.column >= 1, "{d}");
            }
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(text in "\\PC{0,300}") {
        let _ = parse(text.as_bytes(), Path::new("fuzz"), &opts());
    }
}
