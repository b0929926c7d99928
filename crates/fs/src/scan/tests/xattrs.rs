//! Extended attributes: taken from the baseline while its stat key
//! vouches for them, read again once the ctime moves.

use super::*;
use omirr_core::Xattrs;

/// An attribute no file here carries: finding it in a report proves the
/// attributes were taken from the baseline, not read.
fn fake() -> Xattrs {
    Xattrs::new(vec![(b"user.fake".to_vec(), b"from the baseline".to_vec())]).expect("xattrs")
}

/// `a` and `b` scanned once, and a baseline that trusts their keys, with
/// [`fake`] recorded as `a`'s attributes.
fn scanned_with_fake(root: &Path) -> (ScanReport, MemBaseline) {
    put(root, "a", b"content");
    put(root, "b", b"other");
    let first = scan_all(root, &MemBaseline::new());
    let mut base = trusted(&first);
    let mut k = base.known(&p("a")).expect("ok").expect("known");
    k.xattrs = Some(fake());
    base.insert(p("a"), k);
    (first, base)
}

#[test]
fn an_unchanged_file_takes_its_attributes_from_the_baseline() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let (first, base) = scanned_with_fake(root);
    assert_eq!(first.stats.xattr_reads, 2);

    let r = scan_all(root, &base);
    assert_eq!(r.stats.xattr_reads, 0, "nothing changed, nothing read");
    assert_eq!(r.get(&p("a")).expect("a").node.meta.xattrs, fake());
    assert_eq!(
        r.get(&p("b")).expect("b").node.meta.xattrs,
        first.get(&p("b")).expect("b").node.meta.xattrs
    );
}

#[test]
fn attributes_are_read_where_the_baseline_cannot_vouch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let (_, base) = scanned_with_fake(root);
    let known = base.known(&p("a")).expect("ok").expect("known");
    let cases = [
        (
            "racy",
            Known {
                racy: true,
                ..known.clone()
            },
        ),
        (
            "unknown attributes",
            Known {
                xattrs: None,
                ..known.clone()
            },
        ),
        (
            "another ctime",
            Known {
                key: StatKey {
                    ctime_ns: known.key.ctime_ns - 1,
                    ..known.key
                },
                ..known.clone()
            },
        ),
    ];
    for (why, k) in cases {
        let mut base = base.clone();
        base.insert(p("a"), k);
        let r = scan_all(root, &base);
        assert_eq!(r.stats.xattr_reads, 1, "{why}: a read, b not");
        assert!(
            r.get(&p("a"))
                .expect("a")
                .node
                .meta
                .xattrs
                .get(b"user.fake")
                .is_none(),
            "{why}"
        );
    }
}

/// An attribute set between two scans moves the ctime, so the second
/// scan reads it. Skipped, saying why, where the test's filesystem keeps
/// no `user.*` attributes.
#[test]
fn an_attribute_set_between_scans_is_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let a = put(root, "a", b"content");
    let first = scan_all(root, &MemBaseline::new());
    let base = trusted(&first);
    // Past the clock's tick (a jiffy where timestamps are coarse), as a
    // baseline key that is not racy guarantees.
    std::thread::sleep(std::time::Duration::from_millis(50));
    if let Err(e) =
        rustix::fs::lsetxattr(&a, "user.comment", b"new", rustix::fs::XattrFlags::empty())
    {
        eprintln!("SKIP: {} keeps no user.* attributes: {e}", root.display());
        return;
    }

    let r = scan_all(root, &base);
    assert_eq!(r.stats.xattr_reads, 1);
    let f = r.get(&p("a")).expect("a");
    assert_eq!(f.node.meta.xattrs.get(b"user.comment"), Some(&b"new"[..]));
}
