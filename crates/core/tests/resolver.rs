//! The resolver, case by case: what a batch of remote changes turns into.

use omirr_core::mem::MemIndex;
use omirr_core::resolve::{resolve, resolve_explained, Action, Decision, Resolution, Source};
use omirr_core::{Change, Content, Entry, HostId, Meta, RelPath, Timestamp, Version};
use omirr_testkit::p;

fn v(ts: u64, host: &str) -> Version {
    Version {
        ts: Timestamp(ts),
        host: HostId::new(host),
    }
}

fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        uid: 0,
        gid: 0,
        mtime_ns: 7,
        ..Default::default()
    }
}

fn file(path: &str, ts: u64, h: u8) -> Change {
    Change {
        path: p(path),
        entry: Entry {
            content: Content::File {
                size: 10,
                hash: [h; 32],
            },
            meta: meta(0o644),
            version: v(ts, "remote"),
            base: None,
        },
    }
}

fn with_mode(mut c: Change, mode: u32) -> Change {
    c.entry.meta.mode = mode;
    c
}

fn dir(path: &str, ts: u64) -> Change {
    Change {
        path: p(path),
        entry: Entry {
            content: Content::Dir,
            meta: meta(0o755),
            version: v(ts, "remote"),
            base: None,
        },
    }
}

fn link(path: &str, ts: u64, target: &str) -> Change {
    Change {
        path: p(path),
        entry: Entry {
            content: Content::Symlink {
                target: target.as_bytes().to_vec(),
            },
            meta: meta(0o777),
            version: v(ts, "remote"),
            base: None,
        },
    }
}

fn gone(path: &str, ts: u64) -> Change {
    Change {
        path: p(path),
        entry: Entry {
            content: Content::Deleted,
            meta: Meta::default(),
            version: v(ts, "remote"),
            base: None,
        },
    }
}

fn local(mut c: Change) -> Change {
    c.entry.version.host = HostId::new("local");
    c
}

fn index(changes: Vec<Change>) -> MemIndex {
    let mut ix = MemIndex::default();
    for c in changes {
        ix.record(local(c));
    }
    ix
}

fn run(ix: &MemIndex, batch: &[Change]) -> Resolution {
    resolve(ix, batch, &|_| false).expect("infallible")
}

fn run_saving(ix: &MemIndex, batch: &[Change]) -> Resolution {
    resolve(ix, batch, &|_| true).expect("infallible")
}

/// The paths where this host's version is newer than the peer's (each
/// told as [`Decision::Loses`]): what a peer could be sent back.
fn ours_newer(ix: &MemIndex, batch: &[Change]) -> Vec<RelPath> {
    let mut paths = Vec::new();
    resolve_explained(ix, batch, &|_| false, &mut |d| {
        if let Decision::Loses { path, .. } = d {
            paths.push(path.clone());
        }
    })
    .expect("infallible");
    paths
}

#[test]
fn new_file_is_fetched() {
    let ix = index(vec![]);
    let r = run(&ix, &[file("f", 5, 1)]);
    assert_eq!(r.accepted.len(), 1);
    assert_eq!(
        r.actions,
        [Action::WriteFile {
            path: p("f"),
            size: 10,
            hash: [1; 32],
            meta: meta(0o644),
            source: Source::Fetch
        }]
    );
}

#[test]
fn content_already_here_is_copied_not_fetched() {
    let ix = index(vec![file("other", 1, 1)]);
    let r = run(&ix, &[file("f", 5, 1)]);
    assert!(
        matches!(&r.actions[0], Action::WriteFile { source: Source::CopyFrom(s), .. } if *s == p("other"))
    );
}

#[test]
fn metadata_only() {
    let ix = index(vec![file("f", 1, 1)]);
    let r = run(&ix, &[with_mode(file("f", 5, 1), 0o600)]);
    assert_eq!(
        r.actions,
        [Action::SetMeta {
            path: p("f"),
            meta: meta(0o600)
        }]
    );
}

#[test]
fn directory_and_symlink_are_created() {
    let ix = index(vec![]);
    let r = run(&ix, &[link("d/l", 5, "../x"), dir("d", 4)]);
    assert_eq!(
        r.actions,
        [
            Action::MakeDir {
                path: p("d"),
                meta: meta(0o755)
            },
            Action::MakeSymlink {
                path: p("d/l"),
                target: b"../x".to_vec(),
                meta: meta(0o777)
            }
        ],
        "parents first, whatever the batch order"
    );
}

#[test]
fn rename_moves_no_data() {
    let ix = index(vec![dir("d", 1), file("d/a", 1, 3), file("d/b", 1, 4)]);
    // The peer renamed directory d to e.
    let r = run(
        &ix,
        &[
            gone("d", 5),
            gone("d/a", 5),
            gone("d/b", 5),
            dir("e", 6),
            file("e/a", 6, 3),
            file("e/b", 6, 4),
        ],
    );
    let renames: Vec<(String, String)> = r
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Rename { from, to, .. } => Some((from.to_string(), to.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(
        renames,
        [("d/a".into(), "e/a".into()), ("d/b".into(), "e/b".into())]
    );
    assert!(
        !r.actions
            .iter()
            .any(|a| matches!(a, Action::WriteFile { .. })),
        "{:?}",
        r.actions
    );
    assert!(r.actions.contains(&Action::Remove {
        path: p("d"),
        was: Content::Dir
    }));
}

#[test]
fn newer_tombstone_deletes() {
    let ix = index(vec![file("f", 1, 1)]);
    let r = run(&ix, &[gone("f", 5)]);
    assert_eq!(
        r.actions,
        [Action::Remove {
            path: p("f"),
            was: Content::File {
                size: 10,
                hash: [1; 32]
            }
        }]
    );
}

#[test]
fn ours_newer_is_kept_and_reported() {
    let ix = index(vec![file("f", 9, 1)]);
    let batch = [file("f", 5, 2), gone("f", 6)];
    let r = run(&ix, &batch);
    assert!(r.accepted.is_empty() && r.actions.is_empty());
    assert_eq!(ours_newer(&ix, &batch), [p("f")]);
}

#[test]
fn equal_versions_break_ties_by_host() {
    // Same timestamp: "remote" > "local" by name, on every host alike.
    let ix = index(vec![file("f", 5, 1)]);
    let r = run(&ix, &[file("f", 5, 2)]);
    assert_eq!(r.accepted.len(), 1);
}

#[test]
fn savetargets_keeps_the_overwritten_file() {
    let ix = index(vec![file("f", 1, 1), file("g", 1, 2), file("h", 1, 3)]);
    let r = run_saving(
        &ix,
        &[
            file("f", 5, 9),
            gone("g", 5),
            gone("h", 5),
            file("moved", 5, 3),
        ],
    );
    let saved: Vec<String> = r
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::SaveOld { path } => Some(path.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(saved, ["f", "g"], "h only moved: nothing to save");
    assert!(
        matches!(r.actions[0], Action::SaveOld { .. }),
        "saved before anything changes"
    );
    assert!(run(&ix, &[file("f", 5, 9)])
        .actions
        .iter()
        .all(|a| !matches!(a, Action::SaveOld { .. })));
}

#[test]
fn savetargets_keeps_nothing_in_a_directory_that_goes() {
    let ix = index(vec![dir("d", 1), file("d/f", 1, 1), file("top", 1, 2)]);
    let r = run_saving(&ix, &[gone("d", 5), gone("d/f", 5), gone("top", 5)]);
    let saved: Vec<String> = r
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::SaveOld { path } => Some(path.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(saved, ["top"]);
}

#[test]
fn file_becomes_directory() {
    let ix = index(vec![file("x", 1, 1)]);
    let r = run(&ix, &[dir("x", 5), file("x/y", 5, 2)]);
    assert_eq!(
        r.actions[0],
        Action::Remove {
            path: p("x"),
            was: Content::File {
                size: 10,
                hash: [1; 32]
            }
        }
    );
    assert!(matches!(r.actions[1], Action::MakeDir { .. }));
    assert!(matches!(r.actions[2], Action::WriteFile { .. }));
}

#[test]
fn directory_becomes_file() {
    let ix = index(vec![dir("x", 1), file("x/y", 1, 1)]);
    let r = run(&ix, &[gone("x/y", 5), file("x", 6, 2)]);
    let kinds: Vec<String> = r
        .actions
        .iter()
        .map(|a| format!("{a:?}").split(' ').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds, ["Remove", "Remove", "WriteFile"], "{:?}", r.actions);
    assert_eq!(
        r.actions[0].path(),
        &p("x/y"),
        "children before their directory"
    );
}

#[test]
fn newer_file_below_keeps_a_directory_that_became_a_file() {
    // Remote: x became a file at 5. Here: x/new was written at 7.
    let ix = index(vec![dir("x", 1), file("x/old", 1, 1), file("x/new", 7, 2)]);
    let r = run(&ix, &[file("x", 5, 3), gone("x/old", 5)]);
    assert!(
        !r.actions.iter().any(|a| a.path() == &p("x/new")),
        "{:?}",
        r.actions
    );
    assert!(!r
        .actions
        .iter()
        .any(|a| matches!(a, Action::WriteFile { path, .. } if *path == p("x"))));
}

#[test]
fn delete_versus_modify_the_higher_version_wins() {
    // Modify newer than the delete: the file stays.
    let ix = index(vec![file("f", 8, 2)]);
    let r = run(&ix, &[gone("f", 5)]);
    assert!(r.actions.is_empty() && ours_newer(&ix, &[gone("f", 5)]) == [p("f")]);
    // Delete newer than the modify: it goes.
    let r = run(&ix, &[gone("f", 9)]);
    assert!(matches!(r.actions[..], [Action::Remove { .. }]));
    // A modify newer than our tombstone brings the file back.
    let ix = index(vec![gone("f", 5)]);
    let r = run(&ix, &[file("f", 6, 3)]);
    assert!(matches!(r.actions[..], [Action::WriteFile { .. }]));
}

#[test]
fn directory_delete_spares_children_changed_later_elsewhere() {
    // Here: d/old untouched since 1, d/new changed at 7. The peer deleted d
    // at 5, not knowing of d/new's change.
    let ix = index(vec![dir("d", 1), file("d/old", 1, 1), file("d/new", 7, 2)]);
    let r = run(&ix, &[gone("d", 5), gone("d/old", 5)]);
    assert_eq!(
        r.actions,
        [
            Action::Remove {
                path: p("d/old"),
                was: Content::File {
                    size: 10,
                    hash: [1; 32]
                }
            },
            Action::MakeDir {
                path: p("d"),
                meta: Meta::IMPLIED_DIR
            }
        ],
        "d stays, for d/new"
    );
    // Even if the peer sent only the directory's tombstone, older children
    // go with it.
    let r = run(&ix, &[gone("d", 5)]);
    assert!(r.actions.contains(&Action::Remove {
        path: p("d/old"),
        was: Content::File {
            size: 10,
            hash: [1; 32]
        }
    }));
}

#[test]
fn duplicate_batches_and_duplicates_within_a_batch() {
    let mut ix = index(vec![]);
    let batch = [file("f", 5, 1), file("f", 3, 2), file("f", 5, 1)];
    let r = run(&ix, &batch);
    assert_eq!(
        r.accepted,
        [file("f", 5, 1)],
        "the newest of the duplicates"
    );
    for c in r.accepted {
        ix.record(c);
    }
    let again = run(&ix, &batch);
    assert!(
        again.accepted.is_empty() && again.actions.is_empty() && ours_newer(&ix, &batch).is_empty()
    );
}

#[test]
fn out_of_order_batches_end_the_same() {
    let first = [dir("d", 1), file("d/f", 2, 1)];
    let second = [gone("d/f", 3), link("d/f", 4, "t")];
    let mut a = index(vec![]);
    for batch in [&first[..], &second[..]] {
        for c in run(&a, batch).accepted {
            a.record(c);
        }
    }
    let mut b = index(vec![]);
    for batch in [&second[..], &first[..]] {
        for c in run(&b, batch).accepted {
            b.record(c);
        }
    }
    let entries = |ix: &MemIndex| {
        ix.iter()
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(entries(&a), entries(&b));
}

/// Every change of a batch gets one decision, with the reason the log
/// shows: a newer version wins, an older one loses, the same one is
/// already here, and within a batch the newest of a path supersedes.
#[test]
fn every_change_gets_a_decision_with_its_reason() {
    let mut ours_newer = file("srv/kept", 50, 1);
    ours_newer.entry.version = v(50, "local");
    let mut same_time = file("srv/tie", 20, 2);
    same_time.entry.version = v(20, "alpha");
    let mut ix = MemIndex::default();
    ix.record(ours_newer.clone());
    ix.record(same_time);
    ix.record(file("srv/dup", 30, 3));
    let batch = [
        file("srv/kept", 40, 4),
        file("srv/tie", 20, 5),
        file("srv/dup", 30, 3),
        file("srv/new", 10, 6),
        file("srv/new", 12, 7),
    ];
    let mut said = Vec::new();
    let mut lost = Vec::new();
    let res = resolve_explained(&ix, &batch, &|_| false, &mut |d: Decision<'_>| {
        if let Decision::Loses { path, .. } = d {
            lost.push(path.clone());
        }
        said.push(d.to_string())
    })
    .expect("resolve");
    assert_eq!(
        said,
        [
            "srv/new: the peer's version 10@remote is superseded by 12@remote in the same batch",
            "srv/dup: this host has the peer's version 30@remote already",
            "srv/kept: this host's version 50@local wins over the peer's 40@remote (written 10.0ns later): not applied",
            "srv/new: the peer's version 12@remote wins: this host has no entry for it",
            "srv/tie: the peer's version 20@remote wins over this host's 20@alpha (the same time, and remote sorts after alpha)",
        ]
    );
    assert_eq!(lost, [p("srv/kept")]);
    let accepted: Vec<&RelPath> = res.accepted.iter().map(|c| &c.path).collect();
    assert_eq!(accepted, [&p("srv/new"), &p("srv/tie")]);
}

// ------------------------------------------------ restore (receive-only hosts)

fn undo(ix: &MemIndex, local_changes: &[Change], saving: bool) -> Vec<Action> {
    omirr_core::resolve::restore(ix, local_changes, &|_| saving).expect("infallible")
}

#[test]
fn restore_puts_the_sets_content_back_over_a_local_edit() {
    let ix = index(vec![dir("d", 1), file("d/f", 2, 1), file("other", 2, 3)]);
    // Edited here: the set's content is fetched again...
    let acts = undo(&ix, &[local(file("d/f", 9, 2))], false);
    assert_eq!(
        acts,
        [Action::WriteFile {
            path: p("d/f"),
            size: 10,
            hash: [1; 32],
            meta: meta(0o644),
            source: Source::Fetch
        }]
    );
    // ... and the edit kept as NAME.OLD with savetargets.
    let acts = undo(&ix, &[local(file("d/f", 9, 2))], true);
    assert_eq!(acts[0], Action::SaveOld { path: p("d/f") });
    // A new file beside it goes.
    let acts = undo(
        &ix,
        &[local(file("d/f", 9, 2)), local(file("d/g", 9, 3))],
        false,
    );
    assert!(
        acts.contains(&Action::Remove {
            path: p("d/g"),
            was: Content::File {
                size: 10,
                hash: [3; 32]
            }
        }),
        "{acts:?}"
    );
    // A mode changed here only: the set's mode back.
    let acts = undo(&ix, &[local(with_mode(file("d/f", 9, 1), 0o600))], false);
    assert_eq!(
        acts,
        [Action::SetMeta {
            path: p("d/f"),
            meta: meta(0o644)
        }]
    );
}

#[test]
fn restore_removes_what_the_set_lacks_and_recreates_what_was_deleted() {
    let ix = index(vec![dir("d", 1), file("d/f", 2, 1)]);
    // A new file and a new directory with a file in it: removed, deepest
    // first.
    let acts = undo(
        &ix,
        &[
            local(file("d/new", 9, 2)),
            local(dir("d/sub", 9)),
            local(file("d/sub/x", 9, 4)),
        ],
        false,
    );
    let removed: Vec<&RelPath> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Remove { path, .. } => Some(path),
            _ => None,
        })
        .collect();
    assert_eq!(
        removed,
        [&p("d/sub/x"), &p("d/sub"), &p("d/new")],
        "{acts:?}"
    );
    assert_eq!(acts.len(), 3, "{acts:?}");
    // A file deleted here comes back; so does a deleted directory with
    // what it held.
    let acts = undo(&ix, &[local(gone("d/f", 9))], false);
    assert!(
        matches!(&acts[..], [Action::WriteFile { path, source: Source::Fetch, .. }] if *path == p("d/f")),
        "{acts:?}"
    );
    let acts = undo(&ix, &[local(gone("d", 9)), local(gone("d/f", 9))], false);
    assert!(
        matches!(&acts[..], [Action::MakeDir { path: d, .. }, Action::WriteFile { path: f, .. }] if *d == p("d") && *f == p("d/f")),
        "{acts:?}"
    );
    // A directory replaced here by a file: the file goes, the directory
    // and its content come back.
    let acts = undo(&ix, &[local(file("d", 9, 5)), local(gone("d/f", 9))], false);
    assert!(
        matches!(&acts[0], Action::Remove { path, was: Content::File { .. } } if *path == p("d")),
        "{acts:?}"
    );
    assert_eq!(acts.len(), 3, "{acts:?}");
    // Nothing changed: nothing to do.
    assert!(undo(&ix, &[], false).is_empty());
}

fn hard_link(path: &str, ts: u64, h: u8, leader: &str) -> Change {
    let mut c = file(path, ts, h);
    c.entry.meta.link = Some(Box::new(p(leader)));
    c
}

#[test]
fn a_second_name_of_a_file_is_linked_after_the_writes_not_written() {
    let ix = MemIndex::default();
    // The follower sorts before its leader: the link still comes after
    // the leader's write.
    let batch = [file("z/big", 5, 1), hard_link("a/alias", 5, 1, "z/big")];
    let r = resolve(&ix, &batch, &|_| false).expect("resolve");
    let kinds: Vec<(&str, String)> = r
        .actions
        .iter()
        .filter(|a| !matches!(a, Action::MakeDir { .. }))
        .map(|a| match a {
            Action::WriteFile { path, .. } => ("write", path.to_string()),
            Action::Link { from, to, .. } => ("link", format!("{to}->{from}")),
            other => ("other", format!("{other:?}")),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("write", "z/big".to_string()),
            ("link", "a/alias->z/big".to_string())
        ]
    );
}

#[test]
fn a_link_to_a_name_that_is_not_there_or_holds_other_content_is_written() {
    // The leader is not in the index nor in the batch.
    let ix = MemIndex::default();
    let r = resolve(&ix, &[hard_link("alias", 5, 1, "big")], &|_| false).expect("resolve");
    assert!(
        matches!(&r.actions[..], [Action::WriteFile { path, .. }] if *path == p("alias")),
        "{:?}",
        r.actions
    );
    // The leader holds other content.
    let mut ix = MemIndex::default();
    ix.record(file("big", 1, 2));
    let r = resolve(&ix, &[hard_link("alias", 5, 1, "big")], &|_| false).expect("resolve");
    assert!(
        matches!(&r.actions[..], [Action::WriteFile { .. }]),
        "{:?}",
        r.actions
    );
    // The leader is here with that content: linked.
    let mut ix = MemIndex::default();
    ix.record(file("big", 1, 1));
    let r = resolve(&ix, &[hard_link("alias", 5, 1, "big")], &|_| false).expect("resolve");
    assert_eq!(
        r.actions,
        [Action::Link {
            from: p("big"),
            to: p("alias"),
            meta: hard_link("alias", 5, 1, "big").entry.meta,
        }]
    );
}

#[test]
fn fifos_are_made_and_their_metadata_alone_set() {
    let fifo = |ts, mode| Change {
        path: p("pipe"),
        entry: Entry {
            content: Content::Fifo,
            meta: meta(mode),
            version: v(ts, "remote"),
            base: None,
        },
    };
    let ix = MemIndex::default();
    let r = resolve(&ix, &[fifo(5, 0o600)], &|_| false).expect("resolve");
    assert_eq!(
        r.actions,
        [Action::MakeFifo {
            path: p("pipe"),
            meta: meta(0o600)
        }]
    );
    let mut ix = MemIndex::default();
    ix.record(fifo(1, 0o600));
    let r = resolve(&ix, &[fifo(5, 0o644)], &|_| false).expect("resolve");
    assert_eq!(
        r.actions,
        [Action::SetMeta {
            path: p("pipe"),
            meta: meta(0o644)
        }]
    );
    // A file where the FIFO was: removed first, then written.
    let r = resolve(&ix, &[file("pipe", 6, 1)], &|_| false).expect("resolve");
    assert!(
        matches!(
            &r.actions[..],
            [
                Action::Remove {
                    was: Content::Fifo,
                    ..
                },
                Action::WriteFile { .. }
            ]
        ),
        "{:?}",
        r.actions
    );
}

#[test]
fn an_extended_attribute_alone_is_a_metadata_change() {
    let mut ix = MemIndex::default();
    ix.record(file("f", 1, 1));
    let mut tagged = file("f", 5, 1);
    tagged.entry.meta.xattrs =
        omirr_core::Xattrs::new(vec![(b"user.x".to_vec(), b"1".to_vec())]).expect("xattrs");
    let r = resolve(&ix, std::slice::from_ref(&tagged), &|_| false).expect("resolve");
    assert_eq!(
        r.actions,
        [Action::SetMeta {
            path: p("f"),
            meta: tagged.entry.meta.clone()
        }]
    );
}
