//! Conflicts, case by case: which batches are conflicts, where the losing
//! content goes, and what a host that knows no bases would have done.

use omirr_core::mem::MemIndex;
use omirr_core::observe::{observe, Disk, When};
use omirr_core::resolve::{resolve_with, Action, ConflictRules, Decision, Resolution, Rules};
use omirr_core::tree::present;
use omirr_core::{
    Change, Content, Entry, Hlc, HostId, IndexView, Meta, RelPath, Timestamp, Version,
};
use omirr_testkit::p;

fn v(ts: u64, host: &str) -> Version {
    Version {
        ts: Timestamp(ts),
        host: HostId::new(host),
    }
}

fn meta() -> Meta {
    Meta {
        mode: 0o644,
        mtime_ns: 7,
        ..Default::default()
    }
}

fn entry(content: Content, ver: Version, base: Option<Version>) -> Entry {
    let meta = if content.is_live() {
        meta()
    } else {
        Meta::default()
    };
    Entry {
        content,
        meta,
        version: ver,
        base,
    }
}

fn file(h: u8) -> Content {
    Content::File {
        size: 10,
        hash: [h; 32],
    }
}

fn change(path: &str, e: Entry) -> Change {
    Change {
        path: p(path),
        entry: e,
    }
}

const ME: &str = "a";

fn run_keeping(ix: &MemIndex, batch: &[Change], keep: u32) -> Resolution {
    run_deciding(ix, batch, keep, &mut |_| {})
}

fn run_deciding(
    ix: &MemIndex,
    batch: &[Change],
    keep: u32,
    decided: &mut dyn FnMut(Decision<'_>),
) -> Resolution {
    let me = HostId::new(ME);
    let rules = Rules {
        savetargets: &|_| false,
        conflicts: Some(ConflictRules {
            host: &me,
            keep: &|_| keep,
        }),
    };
    resolve_with(ix, batch, &rules, decided).expect("infallible")
}

/// The paths where this host's version is newer than the peer's (each
/// told as [`Decision::Loses`]).
fn ours_newer(ix: &MemIndex, batch: &[Change]) -> Vec<RelPath> {
    let mut paths = Vec::new();
    run_deciding(ix, batch, 10, &mut |d| {
        if let Decision::Loses { path, .. } = d {
            paths.push(path.clone());
        }
    });
    paths
}

fn run(ix: &MemIndex, batch: &[Change]) -> Resolution {
    run_keeping(ix, batch, 10)
}

fn index(changes: Vec<Change>) -> MemIndex {
    let mut ix = MemIndex::default();
    for c in changes {
        ix.record(c);
    }
    ix
}

fn accepted(res: &Resolution, path: &str) -> Option<Entry> {
    res.accepted
        .iter()
        .find(|c| c.path == p(path))
        .map(|c| c.entry.clone())
}

/// The case: a and b both edit report.txt (b's found by a scan);
/// b's edit is later. On a, b's version wins the name and a's content is
/// kept as a copy named after a's version.
#[test]
fn a_concurrent_edit_that_wins_keeps_ours_as_a_conflict_copy() {
    let v0 = v(100, "c");
    let ix = index(vec![
        change("d", entry(Content::Dir, v(50, "c"), None)),
        change("d/report.txt", entry(file(2), v(200, ME), Some(v0.clone()))),
    ]);
    let theirs = change("d/report.txt", entry(file(3), v(300, "b"), Some(v0)));
    let res = run(&ix, std::slice::from_ref(&theirs));
    let copy = p("d/report.conflict-a-19700101T000000.txt");
    assert_eq!(res.conflicts.len(), 1, "{:?}", res.conflicts);
    let c = &res.conflicts[0];
    assert!(!c.ours_won);
    assert_eq!(c.copy.as_ref(), Some(&copy));
    assert_eq!((&c.ours, &c.theirs), (&v(200, ME), &v(300, "b")));
    assert!(
        c.to_string().contains("is kept as d/report.conflict-a-"),
        "{c}"
    );
    // The copy comes first, then the peer's write.
    assert!(
        matches!(&res.actions[0], Action::KeepConflictCopy { path, copy: to, hash, prune, .. }
            if *path == p("d/report.txt") && *to == copy && *hash == [2; 32] && prune.is_empty()),
        "{:?}",
        res.actions
    );
    assert!(res
        .actions
        .iter()
        .any(|a| matches!(a, Action::WriteFile { path, .. } if *path == p("d/report.txt"))));
    // The copy is this host's change, above the batch.
    let kept = accepted(&res, "d/report.conflict-a-19700101T000000.txt").expect("copy recorded");
    assert_eq!(kept.content, file(2));
    assert_eq!(kept.version.host, HostId::new(ME));
    assert!(kept.version.ts > Timestamp(300));
    assert_eq!(
        accepted(&res, "d/report.txt").map(|e| e.version),
        Some(v(300, "b"))
    );
}

/// Not conflicts: an update that knew our version, and our version
/// coming back; and a peer's version of a path we did not write.
#[test]
fn an_update_that_knew_our_version_is_no_conflict() {
    let ix = index(vec![
        change("f", entry(file(1), v(200, ME), None)),
        change("g", entry(file(1), v(200, "c"), None)),
    ]);
    let res = run(
        &ix,
        &[
            change("f", entry(file(2), v(300, "b"), Some(v(200, ME)))),
            change("g", entry(file(2), v(300, "b"), Some(v(100, "c")))),
        ],
    );
    assert!(res.conflicts.is_empty(), "{:?}", res.conflicts);
    assert!(!res
        .actions
        .iter()
        .any(|a| matches!(a, Action::KeepConflictCopy { .. })));
}

/// When ours wins, this host notes the conflict and makes no copy: the
/// peer's host keeps its own content.
#[test]
fn a_concurrent_edit_that_loses_is_noted_and_copied_by_its_own_host() {
    let ix = index(vec![change("f", entry(file(1), v(400, ME), None))]);
    let batch = [change("f", entry(file(2), v(300, "b"), None))];
    let res = run(&ix, &batch);
    assert_eq!(res.conflicts.len(), 1);
    assert!(res.conflicts[0].ours_won);
    assert!(res.conflicts[0]
        .to_string()
        .contains("host b keeps its content"));
    assert!(res.actions.is_empty() && res.accepted.is_empty());
    assert_eq!(ours_newer(&ix, &batch), vec![p("f")]);
}

/// Delete versus edit: a later deletion takes the name, and the edit is
/// kept as a conflict copy; an edit later than the deletion just wins.
#[test]
fn an_edit_is_never_lost_to_a_concurrent_deletion() {
    let ix = index(vec![change(
        "f.txt",
        entry(file(1), v(200, ME), Some(v(100, "b"))),
    )]);
    let res = run(
        &ix,
        &[change(
            "f.txt",
            entry(Content::Deleted, v(300, "b"), Some(v(100, "b"))),
        )],
    );
    let copy = res.conflicts[0].copy.clone().expect("a copy");
    assert!(res
        .actions
        .iter()
        .any(|a| matches!(a, Action::Remove { path, .. } if *path == p("f.txt"))));
    assert_eq!(
        accepted(&res, &copy.to_string()).map(|e| e.content),
        Some(file(1))
    );
    // On the deleting host the edit arrives later than its deletion:
    // it just wins there.
    let deleter = index(vec![change(
        "f.txt",
        entry(Content::Deleted, v(300, "b"), Some(v(100, "b"))),
    )]);
    let res = run(
        &deleter,
        &[change(
            "f.txt",
            entry(file(1), v(400, "c"), Some(v(100, "b"))),
        )],
    );
    assert!(res.conflicts.is_empty(), "the tombstone is not ours");
    assert!(res
        .actions
        .iter()
        .any(|a| matches!(a, Action::WriteFile { path, .. } if *path == p("f.txt"))));
}

/// A directory deleted on a peer that never knew our new file in it: the
/// file is kept, in a copy of the directory (the directory stays deleted).
#[test]
fn a_file_in_a_directory_a_peer_deleted_is_kept() {
    let ix = index(vec![
        change("d", entry(Content::Dir, v(100, "b"), None)),
        change("d/new", entry(file(4), v(200, ME), None)),
    ]);
    let res = run(
        &ix,
        &[change(
            "d",
            entry(Content::Deleted, v(300, "b"), Some(v(100, "b"))),
        )],
    );
    let copy = res.conflicts[0].copy.clone().expect("a copy");
    assert_eq!(copy, p("d.conflict-a-19700101T000000/new"));
    // The copy is present once the batch is recorded; d is not.
    let mut after = ix.clone();
    for c in &res.accepted {
        after.record(c.clone());
    }
    assert!(present(&after, &copy).expect("infallible").is_some());
    assert!(present(&after, &p("d")).expect("infallible").is_none());
    assert!(present(&after, &p("d/new")).expect("infallible").is_none());
}

/// Directory versus file: a peer's file replaces our directory; our own
/// files in it are kept in a copy of the directory; and our file that a
/// peer's directory replaces is kept next to it.
#[test]
fn directory_versus_file_keeps_the_files() {
    let ix = index(vec![
        change("x", entry(Content::Dir, v(100, ME), None)),
        change("x/y", entry(file(5), v(110, ME), None)),
    ]);
    let res = run(&ix, &[change("x", entry(file(6), v(300, "b"), None))]);
    let copies: Vec<_> = res
        .conflicts
        .iter()
        .filter_map(|c| c.copy.clone())
        .collect();
    assert_eq!(copies, vec![p("x.conflict-a-19700101T000000/y")]);
    let ix = index(vec![change("x", entry(file(5), v(200, ME), None))]);
    let res = run(
        &ix,
        &[
            change("x", entry(Content::Dir, v(300, "b"), None)),
            change("x/z", entry(file(6), v(301, "b"), None)),
        ],
    );
    assert_eq!(
        res.conflicts[0].copy.clone(),
        Some(p("x.conflict-a-19700101T000000"))
    );
}

/// conflicts=0 keeps no copy (the conflict is still noted); conflicts=2
/// removes the oldest copies beyond two.
#[test]
fn the_bound_removes_the_oldest_copies() {
    let olds = [(10, "b"), (20, "c"), (30, "a")];
    let mut ix = index(vec![change(
        "f.txt",
        entry(file(1), v(5_000_000_000_000, ME), None),
    )]);
    for (i, (ts, host)) in olds.iter().enumerate() {
        let name = omirr_core::conflict::copy_name(&p("f.txt"), &v(*ts, host), 0).expect("name");
        ix.record(Change {
            path: name,
            entry: entry(file(10 + i as u8), v(1000 + *ts, ME), None),
        });
    }
    let batch = [change(
        "f.txt",
        entry(file(2), v(6_000_000_000_000, "b"), None),
    )];
    let none = run_keeping(&ix, &batch, 0);
    assert_eq!(none.conflicts.len(), 1);
    assert_eq!(none.conflicts[0].copy, None);
    assert_eq!(none.accepted.len(), 1, "only the peer's change");
    let res = run_keeping(&ix, &batch, 2);
    let Some(Action::KeepConflictCopy { prune, .. }) = res.actions.first() else {
        panic!("{:?}", res.actions)
    };
    let pruned: Vec<String> = prune.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        pruned,
        [
            "f.conflict-b-19700101T000000.txt",
            "f.conflict-c-19700101T000000.txt"
        ]
    );
    for q in prune {
        assert_eq!(
            accepted(&res, &q.to_string()).map(|e| e.content),
            Some(Content::Deleted)
        );
    }
}

/// No copy where it would not be mirrored: a set whose top is the file
/// itself does not cover its sibling, the copy.
#[test]
fn no_copy_outside_the_sets() {
    let ix = index(vec![change(
        "etc/app.conf",
        entry(file(1), v(200, ME), None),
    )]);
    let me = HostId::new(ME);
    let rules = Rules {
        savetargets: &|_| false,
        conflicts: Some(ConflictRules {
            host: &me,
            keep: &|p| u32::from(*p == RelPath::new(&b"etc/app.conf"[..]).expect("path")) * 10,
        }),
    };
    let batch = [change("etc/app.conf", entry(file(2), v(300, "b"), None))];
    let res = resolve_with(&ix, &batch, &rules, &mut |_| {}).expect("infallible");
    assert_eq!(res.conflicts.len(), 1);
    assert_eq!(res.conflicts[0].copy, None);
    assert_eq!(res.accepted.len(), 1, "only the peer's change");
}

/// A run of local edits keeps the base of the last version from
/// elsewhere, so a peer that saw only the last one finds the base it
/// knows; a scan sets the base too.
#[test]
fn local_edits_in_a_row_keep_the_base_from_elsewhere() {
    let me = HostId::new(ME);
    let mut ix = index(vec![change("f", entry(file(1), v(100, "b"), None))]);
    let mut hlc = Hlc::default();
    for (h, when) in [
        (
            2u8,
            When::Live {
                wall: Timestamp(200),
            },
        ),
        (
            3,
            When::Scanned {
                ctime: Timestamp(300),
                floor: Timestamp(200),
            },
        ),
    ] {
        let node = omirr_core::tree::Node {
            content: file(h),
            meta: meta(),
        };
        let changes = observe(
            &ix,
            &mut hlc,
            &me,
            [p("f")],
            Disk {
                at: &mut |_| Some(node.clone()),
                when: &|_| when,
                in_scope: &|_| true,
            },
        )
        .expect("infallible");
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].entry.base, Some(v(100, "b")), "edit {h}");
        ix.record(changes[0].clone());
    }
    // b, which wrote 100@b, sees our last edit only: no conflict there.
    let mut at_b = index(vec![change("f", entry(file(1), v(100, "b"), None))]);
    let ours = ix.entry(&p("f")).expect("infallible").expect("our entry");
    let b = HostId::new("b");
    let rules = Rules {
        savetargets: &|_| false,
        conflicts: Some(ConflictRules {
            host: &b,
            keep: &|_| 10,
        }),
    };
    let res = resolve_with(&at_b, &[change("f", ours)], &rules, &mut |_| {}).expect("infallible");
    assert!(res.conflicts.is_empty(), "{:?}", res.conflicts);
    at_b.record(res.accepted[0].clone());
}
