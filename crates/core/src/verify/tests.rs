//! The comparison, run between two in-memory indexes: what it finds,
//! how many questions it asks, and the answers it refuses.

use super::*;
use crate::entry::Content;
use crate::entry::Meta;
use crate::mem::MemIndex;
use crate::testing::p;
use crate::version::{HostId, Timestamp, Version};
use crate::Change;

fn file(ts: u64, byte: u8) -> Entry {
    Entry {
        content: Content::File {
            size: 1,
            hash: [byte; 32],
        },
        meta: Meta::default(),
        version: Version {
            ts: Timestamp(ts),
            host: HostId::new("a"),
        },
        base: None,
    }
}

/// A tree of `dirs` directories of `files` files each under `top`.
fn tree(top: &str, dirs: usize, files: usize) -> MemIndex {
    let mut m = MemIndex::default();
    for d in 0..dirs {
        for f in 0..files {
            m.record(Change {
                path: p(&format!("{top}/d{d:03}/f{f:03}")),
                entry: file(1, 1),
            });
        }
    }
    m
}

/// Runs a comparison of `tops` between `ours` and `theirs` as the
/// daemon does, the peer's side answered by the same functions.
fn compare(ours: &MemIndex, theirs: &MemIndex, tops: &[&str]) -> Verifier {
    let mut v = Verifier::new(tops.iter().map(|t| p(t)));
    while let Some(ask) = v.next_ask() {
        assert!(v.asked() < 10_000, "runaway");
        match ask {
            Ask::Summary(span) => {
                let Ok(buckets) = summarize(theirs, &span);
                v.on_summary(ours, &span, &buckets).expect("summary");
            }
            Ask::Entries(span) => {
                let Ok((page, complete)) = entries_page(theirs, &span, 1 << 20);
                v.on_entries(ours, &span, page, complete).expect("entries");
            }
        }
    }
    v
}

#[test]
fn equal_trees_cost_one_question_per_top() {
    let a = tree("srv", 50, 40);
    let v = compare(&a, &a.clone(), &["srv", "etc"]);
    assert_eq!(v.found(), 0);
    assert_eq!(v.asked(), 2);
}

#[test]
fn one_changed_path_is_found_in_few_questions() {
    let a = tree("srv", 100, 100); // 10,000 entries
    for (i, changed) in ["srv/d000/f000", "srv/d057/f031", "srv/d099/f099"]
        .iter()
        .enumerate()
    {
        let mut b = a.clone();
        b.record(Change {
            path: p(changed),
            entry: file(2, 9),
        });
        let v = compare(&a, &b, &["srv"]);
        assert_eq!(v.found(), 1, "{changed}");
        let d = &v.differences()[0];
        assert_eq!(d.path, p(changed));
        assert_eq!(d.ours, Some(file(1, 1)));
        assert_eq!(d.theirs, Some(file(2, 9)));
        // 10,000 / 16 / 16 = 39 <= LEAF: two summaries, one page.
        assert!(v.asked() <= 4, "case {i}: {} questions", v.asked());
    }
}

#[test]
fn paths_on_one_side_only_are_listed_with_the_side() {
    let a = tree("srv", 3, 3);
    let mut b = a.clone();
    b.record(Change {
        path: p("srv/d001/new"),
        entry: file(5, 5),
    });
    let mut a2 = a.clone();
    a2.record(Change {
        path: p("srv/zzz"),
        entry: file(6, 6),
    });
    let v = compare(&a2, &b, &["srv"]);
    let got: Vec<(String, bool, bool)> = v
        .differences()
        .iter()
        .map(|d| (d.path.to_string(), d.ours.is_some(), d.theirs.is_some()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("srv/d001/new".to_string(), false, true),
            ("srv/zzz".to_string(), true, false)
        ]
    );
}

#[test]
fn a_tree_missing_on_one_side_is_listed_whole_both_ways() {
    let a = tree("srv", 20, 20);
    let empty = MemIndex::default();
    let v = compare(&a, &empty, &["srv"]);
    assert_eq!(v.found(), 400);
    assert!(v.differences().iter().all(|d| d.theirs.is_none()));
    // The other way the peer's entries come in pages.
    let v = compare(&empty, &a, &["srv"]);
    assert_eq!(v.found(), 400);
    assert!(v.differences().iter().all(|d| d.ours.is_none()));
}

#[test]
fn paths_outside_the_top_are_not_compared() {
    let a = tree("srv", 2, 2);
    let mut b = a.clone();
    // Beside the top, sorting between `srv` and `srv/...`.
    b.record(Change {
        path: p("srv-old/x"),
        entry: file(1, 1),
    });
    b.record(Change {
        path: p("srv.bak"),
        entry: file(1, 1),
    });
    assert_eq!(compare(&a, &b, &["srv"]).found(), 0);
    // The top itself is.
    b.record(Change {
        path: p("srv"),
        entry: file(1, 1),
    });
    assert_eq!(compare(&a, &b, &["srv"]).found(), 1);
}

#[test]
fn long_pages_are_asked_for_in_parts() {
    let a = tree("srv", 3, 10);
    let empty = MemIndex::default();
    let span = Span::whole(p("srv"));
    let Ok((page, complete)) = entries_page(&a, &span, 600);
    assert!(!complete);
    assert!(page.len() < 30 && !page.is_empty());
    let mut v = Verifier::new([]);
    v.on_entries(&empty, &span, page.clone(), false)
        .expect("page");
    assert_eq!(v.found(), page.len() as u64);
    let Some(Ask::Entries(rest)) = v.next_ask() else {
        panic!("no question for the rest");
    };
    assert_eq!(rest.after.as_ref(), page.last().map(|c| &c.path));
}

#[test]
fn malformed_answers_are_refused() {
    let a = tree("srv", 2, 2);
    let span = Span::whole(p("srv"));
    let bucket = |upto: Option<&str>| Bucket {
        upto: upto.map(p),
        count: 1,
        hash: [0; 32],
    };
    for bad in [
        vec![],
        vec![bucket(Some("srv/a"))],
        vec![bucket(Some("etc/a")), bucket(None)],
        vec![bucket(Some("srv/b")), bucket(Some("srv/a")), bucket(None)],
        vec![bucket(None), bucket(None)],
        vec![bucket(None); FANOUT + 1],
    ] {
        let mut v = Verifier::new([]);
        assert!(
            matches!(
                v.on_summary(&a, &span, &bad),
                Err(VerifyError::Malformed(_))
            ),
            "{bad:?}"
        );
    }
    let change = |s: &str| Change {
        path: p(s),
        entry: file(1, 1),
    };
    for (bad, complete) in [
        (vec![change("etc/x")], true),
        (vec![change("srv/b"), change("srv/a")], true),
        (vec![change("srv/a"), change("srv/a")], true),
        (vec![], false),
    ] {
        let mut v = Verifier::new([]);
        assert!(
            matches!(
                v.on_entries(&a, &span, bad.clone(), complete),
                Err(VerifyError::Malformed(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn a_summary_that_does_not_split_ends_in_pages_not_a_loop() {
    let a = tree("srv", 10, 10);
    let b = tree("srv", 10, 11);
    let mut v = Verifier::new([p("srv")]);
    while let Some(ask) = v.next_ask() {
        assert!(v.asked() < 100, "runaway");
        match ask {
            Ask::Summary(span) => {
                // A lazy peer: one bucket for the whole span.
                let Ok(mut one) = bucket_with(&b, &span, std::slice::from_ref(&span.upto));
                one.truncate(1);
                v.on_summary(&a, &span, &one).expect("summary");
            }
            Ask::Entries(span) => {
                let Ok((page, complete)) = entries_page(&b, &span, 1 << 20);
                v.on_entries(&a, &span, page, complete).expect("entries");
            }
        }
    }
    assert_eq!(v.found(), 10);
}

#[test]
fn span_bounds_agree_with_contains() {
    let mut m = tree("srv", 3, 3);
    for extra in ["srv", "srv-x", "srv.y", "srw", "sr"] {
        m.record(Change {
            path: p(extra),
            entry: file(1, 1),
        });
    }
    let keys: Vec<RelPath> = m.iter().map(|(k, _)| k.clone()).collect();
    let mut bounds: Vec<Option<RelPath>> = keys.iter().cloned().map(Some).collect();
    bounds.push(None);
    for after in &bounds {
        for upto in &bounds {
            let span = Span {
                top: p("srv"),
                after: after.clone(),
                upto: upto.clone(),
            };
            let mut by_bounds: Vec<&RelPath> = Vec::new();
            if span.contains(&span.top) && keys.contains(&span.top) {
                by_bounds.push(&span.top);
            }
            if let Some(b) = span.below_bounds() {
                let range = (
                    b.0.as_ref().map(|v| v.as_slice()),
                    b.1.as_ref().map(|v| v.as_slice()),
                );
                by_bounds.extend(
                    keys.iter()
                        .filter(|k| std::ops::RangeBounds::contains(&range, &k.as_bytes())),
                );
            }
            let by_contains: Vec<&RelPath> = keys.iter().filter(|k| span.contains(k)).collect();
            assert_eq!(by_bounds, by_contains, "{span:?}");
        }
    }
}

#[test]
fn fingerprints_see_every_field() {
    let path = p("a");
    let base = file(1, 1);
    let fp = fingerprint(&path, &base);
    let mut variants = vec![file(2, 1), file(1, 2)];
    let mut e = base.clone();
    e.version.host = HostId::new("b");
    variants.push(e);
    let mut e = base.clone();
    e.base = Some(file(0, 1).version);
    variants.push(e);
    let mut e = base.clone();
    e.meta.xattrs = crate::Xattrs::new(vec![(b"user.a".to_vec(), b"1".to_vec())]).expect("xattrs");
    variants.push(e);
    let mut e = base.clone();
    e.meta.link = Some(Box::new(p("leader")));
    variants.push(e);
    for f in [
        |m: &mut Meta| m.mode = 0o600,
        |m: &mut Meta| m.uid = 7,
        |m: &mut Meta| m.gid = 7,
        |m: &mut Meta| m.mtime_ns = 7,
        |m: &mut Meta| m.owner = crate::Name::new(b"x").expect("name"),
        |m: &mut Meta| m.group = crate::Name::new(b"x").expect("name"),
    ] {
        let mut e = base.clone();
        f(&mut e.meta);
        variants.push(e);
    }
    for content in [
        Content::Dir,
        Content::Deleted,
        Content::Fifo,
        Content::Symlink {
            target: b"t".to_vec(),
        },
    ] {
        variants.push(Entry {
            content,
            ..base.clone()
        });
    }
    for v in &variants {
        assert_ne!(fingerprint(&path, v), fp, "{v:?}");
    }
    assert_ne!(fingerprint(&p("b"), &base), fp);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever two indexes hold, the comparison finds exactly the
    /// paths at or below the top whose entries differ.
    #[test]
    fn finds_exactly_the_paths_that_differ(
        shared in proptest::collection::vec((0u16..400, 0u8..3), 0..300),
        only_a in proptest::collection::vec((0u16..400, 0u8..3), 0..20),
        only_b in proptest::collection::vec((0u16..400, 0u8..3), 0..20),
    ) {
        let name = |n: u16| {
            // Nested and beside the top, so spans cut across levels.
            let dir = ["t", "t/a", "t/a/b", "t-x", "t/c"][usize::from(n % 5)];
            p(&format!("{dir}/f{n}"))
        };
        let entry = |k: u8| match k {
            0 => file(1, 1),
            1 => file(2, 2),
            _ => Entry { content: Content::Deleted, ..file(3, 0) },
        };
        let (mut a, mut b) = (MemIndex::default(), MemIndex::default());
        for (n, k) in &shared {
            for m in [&mut a, &mut b] {
                m.record(Change { path: name(*n), entry: entry(*k) });
            }
        }
        for (n, k) in &only_a {
            a.record(Change { path: name(*n), entry: entry(*k) });
        }
        for (n, k) in &only_b {
            b.record(Change { path: name(*n), entry: entry(*k) });
        }
        let top = p("t");
        let direct: Vec<RelPath> = {
            let mut paths: Vec<RelPath> = a.iter().chain(b.iter()).map(|(k, _)| k.clone()).collect();
            paths.sort();
            paths.dedup();
            paths.retain(|k| (k == &top || k.is_below(&top)) && {
                use crate::tree::IndexView;
                let (Ok(x), Ok(y)) = (a.entry(k), b.entry(k));
                x != y
            });
            paths
        };
        let v = compare(&a, &b, &["t"]);
        let mut found: Vec<RelPath> = v.differences().iter().map(|d| d.path.clone()).collect();
        found.sort();
        proptest::prop_assert_eq!(found, direct);
    }
}
