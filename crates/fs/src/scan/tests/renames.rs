//! Renames made while nobody watched, and hard links.

use super::*;
use omirr_core::Timestamp;

#[test]
fn rename_while_down_is_detected_without_hashing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    put(root, "d/old", b"content");
    put(root, "d/other", b"x");
    let mut base = trusted(&scan_all(root, &MemBaseline::new()));
    let mut k = base.known(&p("d/old")).expect("ok").expect("known");
    k.content = Content::File {
        size: 7,
        hash: FAKE,
    };
    base.insert(p("d/old"), k);

    fs::rename(root.join("d/old"), root.join("d/new")).expect("rename");
    let r = scan_all(root, &base);
    let f = r.get(&p("d/new")).expect("new");
    assert_eq!(f.renamed_from, Some(p("d/old")));
    assert!(!f.hashed);
    assert_eq!(file_hash(f), FAKE, "hash carried over from the old path");
    assert_eq!(
        r.renames().collect::<Vec<_>>(),
        [(&p("d/old"), &p("d/new"))]
    );
    assert_eq!(
        r.vanished,
        [Vanished {
            path: p("d/old"),
            witness: Timestamp(ctime_ns(&root.join("d"))),
        }]
    );
    assert_eq!(r.stats.hashed_files, 0);
}

#[test]
fn modified_then_renamed_is_rehashed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let old = put(root, "old", b"content");
    let base = trusted(&scan_all(root, &MemBaseline::new()));
    fs::write(&old, b"longer content").expect("write");
    fs::rename(&old, root.join("new")).expect("rename");

    let r = scan_all(root, &base);
    let f = r.get(&p("new")).expect("new");
    assert!(f.hashed);
    assert_eq!(f.renamed_from, None, "not provably the same content");
    assert_eq!(file_hash(f), *blake3::hash(b"longer content").as_bytes());
    assert_eq!(r.vanished.len(), 1);
}

#[test]
fn directory_rename_while_down_rehashes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    for i in 0..5 {
        put(
            root,
            &format!("top/before/f{i}"),
            format!("file {i}").as_bytes(),
        );
    }
    let base = trusted(&scan_all(root, &MemBaseline::new()));
    fs::rename(root.join("top/before"), root.join("top/after")).expect("rename");

    let r = scan_all(root, &base);
    assert_eq!(r.stats.hashed_files, 0);
    let renames: Vec<(String, String)> = r
        .renames()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(renames.len(), 6, "{renames:?}");
    assert!(renames.contains(&("top/before".into(), "top/after".into())));
    assert!(renames.contains(&("top/before/f3".into(), "top/after/f3".into())));
    let witness = Timestamp(ctime_ns(&root.join("top")));
    assert_eq!(r.vanished.len(), 6);
    assert!(r
        .vanished
        .iter()
        .all(|v| v.witness == witness && v.path.is_below(&p("top"))));
}

#[test]
fn hard_links_are_hashed_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let a = put(root, "a", b"shared");
    fs::hard_link(&a, root.join("b")).expect("link");
    put(root, "c", b"single");

    let r = scan_all(root, &MemBaseline::new());
    assert_eq!(
        r.stats.hashed_files, 2,
        "a and b share one read, c has its own"
    );
    let (fa, fb) = (r.get(&p("a")).expect("a"), r.get(&p("b")).expect("b"));
    assert!(fa.hashed && !fb.hashed);
    assert_eq!(file_hash(fa), *blake3::hash(b"shared").as_bytes());
    assert_eq!(fa.node.content, fb.node.content);
    // a leads (the smaller name), b names it.
    assert_eq!(fa.node.meta.link, None);
    assert_eq!(fb.node.meta.link.as_deref(), Some(&p("a")));
    assert_eq!(r.get(&p("c")).expect("c").node.meta.link, None);
    assert_eq!(fb.renamed_from, None);
}

#[test]
fn new_hard_link_to_a_known_file_is_not_a_rename() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let a = put(root, "a", b"shared");
    let base = trusted(&scan_all(root, &MemBaseline::new()));
    fs::hard_link(&a, root.join("b")).expect("link");

    let r = scan_all(root, &base);
    assert_eq!(r.renames().count(), 0);
    assert!(r.vanished.is_empty());
    let fb = r.get(&p("b")).expect("b");
    assert_eq!(file_hash(fb), *blake3::hash(b"shared").as_bytes());
    // The link changed a's ctime, so a is read; b then shares it.
    assert_eq!(r.stats.hashed_files, 1);
}
