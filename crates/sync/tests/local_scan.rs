//! The start-up scan against a real disk and a persisted index: offline
//! changes become versioned changes; unchanged files are not read again;
//! renames made while the daemon was down are found through the inode
//! cache and cost no hashing; what this host renders of a peer's entry
//! (owners, kept modes) is no change of its own.

use omirr_core::{Change, Content, Entry, Hlc, HostId, IndexView, Meta, RelPath};
use omirr_core::{Timestamp, Version};
use omirr_fs::owners::{Check, MetaRules, Uniform};
use omirr_index::Index;
use omirr_sync::record::scan_into_index;
use omirr_testkit::p;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn scan(state: &Path, root: &Path, hlc: &mut Hlc) -> omirr_sync::record::StartupScan {
    // A fresh open each time: what a restart sees.
    let index = Index::open(state).expect("open index");
    let exclude = |p: &RelPath| p.file_name().ends_with(b".swp");
    scan_into_index(
        &index,
        hlc,
        &HostId::new("alpha"),
        root,
        &[p("srv/www")],
        &exclude,
        &omirr_fs::owners::Uniform::default(),
    )
    .expect("scan")
}

fn hash_of(state: &Path, path: &str) -> Option<[u8; 32]> {
    let index = Index::open(state).expect("open index");
    match index.entry(&p(path)).expect("entry")?.content {
        Content::File { hash, .. } => Some(hash),
        _ => None,
    }
}

#[test]
fn offline_changes_renames_and_an_unchanged_rescan() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
    let www = root.join("srv/www");
    fs::create_dir_all(www.join("d")).expect("mkdir");
    fs::create_dir_all(&state).expect("mkdir");
    fs::write(www.join("a"), b"alpha").expect("write");
    fs::write(www.join("b"), b"beta").expect("write");
    fs::write(www.join("d/x"), vec![7u8; 300_000]).expect("write");
    fs::write(www.join("skip.swp"), b"editor").expect("write");
    std::os::unix::fs::symlink("a", www.join("l")).expect("symlink");
    fs::write(root.join("srv/outside"), b"not mirrored").expect("write");
    // Files changed within the last 2 s are read again by every scan (their
    // stat cannot prove they are unchanged); let these age.
    std::thread::sleep(std::time::Duration::from_millis(2100));

    let mut hlc = Hlc::default();
    let first = scan(&state, &root, &mut hlc);
    // srv/www itself, a, b, d, d/x, l.
    assert_eq!(first.changes, 6, "{first:?}");
    assert_eq!(first.stats.hashed_files, 3);
    assert_eq!(
        hash_of(&state, "srv/www/a"),
        Some(*blake3::hash(b"alpha").as_bytes())
    );
    let index = Index::open(&state).expect("open");
    assert!(
        index.entry(&p("srv")).expect("entry").is_none(),
        "above the mirrored top"
    );
    assert!(index.entry(&p("srv/outside")).expect("entry").is_none());
    assert!(
        index
            .entry(&p("srv/www/skip.swp"))
            .expect("entry")
            .is_none(),
        "excluded"
    );
    let seq_after_first = index.last_seq().expect("seq");
    drop(index);

    // Nothing changed: nothing recorded, nothing read.
    let again = scan(&state, &root, &mut hlc);
    assert_eq!(again.changes, 0);
    assert_eq!(again.stats.hashed_files, 0);
    assert_eq!(
        Index::open(&state).expect("open").last_seq().expect("seq"),
        seq_after_first
    );

    // While the daemon is down: a file and a directory are renamed, one
    // file is deleted.
    let x_hash = hash_of(&state, "srv/www/d/x");
    fs::rename(www.join("a"), www.join("c")).expect("rename");
    fs::rename(www.join("d"), www.join("e")).expect("rename");
    fs::remove_file(www.join("b")).expect("rm");
    let floor = hlc.last();
    let third = scan(&state, &root, &mut hlc);
    assert_eq!(third.stats.hashed_files, 0, "renames cost no reading");
    // a to c, d to e and d/x to e/x (the rename pairs themselves are
    // checked in scan.rs's tests; a start-up scan only counts them).
    assert_eq!(third.renamed, 3, "{third:?}");
    assert_eq!(
        hash_of(&state, "srv/www/c"),
        Some(*blake3::hash(b"alpha").as_bytes())
    );
    assert_eq!(hash_of(&state, "srv/www/e/x"), x_hash);
    let index = Index::open(&state).expect("open");
    for gone in ["srv/www/a", "srv/www/b", "srv/www/d"] {
        let e = index.entry(&p(gone)).expect("entry").expect("a tombstone");
        assert_eq!(e.content, Content::Deleted, "{gone}");
        assert!(
            e.version.ts > floor,
            "above everything seen before the scan"
        );
    }
    index.verify().expect("consistent index");
    drop(index);

    // The renamed files' ctimes are fresh, so their stat keys were not
    // trusted yet; once they have aged, the inode cache holds them under
    // their new names, and a rescan records nothing.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let fourth = scan(&state, &root, &mut hlc);
    assert_eq!(fourth.changes, 0);
    let meta = fs::metadata(www.join("c")).expect("stat");
    let (dev, ino) = (
        std::os::unix::fs::MetadataExt::dev(&meta),
        std::os::unix::fs::MetadataExt::ino(&meta),
    );
    let index = Index::open(&state).expect("open");
    assert_eq!(
        index.path_of_inode(dev, ino).expect("lookup"),
        Some(p("srv/www/c"))
    );
    index.verify().expect("consistent index");
}

#[test]
fn live_batches_record_what_the_watcher_reported() {
    use omirr_sync::record::record_live;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
    let www = root.join("srv/www");
    fs::create_dir_all(www.join("d/sub")).expect("mkdir");
    fs::create_dir_all(&state).expect("mkdir");
    fs::write(www.join("d/sub/x"), vec![1u8; 100_000]).expect("write");
    fs::write(www.join("f"), b"one").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mut hlc = Hlc::default();
    scan(&state, &root, &mut hlc);
    let index = Index::open(&state).expect("open");
    let _ = &state;
    let host = HostId::new("alpha");
    let tops = [p("srv/www")];
    let wall = omirr_core::Timestamp(hlc.last().0 + 1_000);
    let live = |hlc: &mut Hlc, dirty: &[&str]| {
        let dirty: Vec<RelPath> = dirty.iter().map(|d| p(d)).collect();
        record_live(
            &index,
            hlc,
            &host,
            &root,
            &tops,
            &dirty,
            &|_| false,
            &omirr_fs::owners::Uniform::default(),
            wall,
        )
        .expect("live")
    };

    // A directory renamed: the watcher names only the two directories.
    fs::rename(www.join("d"), www.join("e")).expect("rename");
    let r = live(&mut hlc, &["srv/www/d", "srv/www/e"]);
    assert_eq!(
        r.report.stats.hashed_files, 0,
        "the files below are known by inode"
    );
    let content = |path: &str| index.entry(&p(path)).expect("entry").map(|e| e.content);
    let x = Content::File {
        size: 100_000,
        hash: *blake3::hash(&[1u8; 100_000]).as_bytes(),
    };
    assert_eq!(content("srv/www/e/sub/x"), Some(x));
    assert_eq!(content("srv/www/d"), Some(Content::Deleted));
    let v = index
        .entry(&p("srv/www/e"))
        .expect("entry")
        .expect("new dir")
        .version;
    assert!(v.ts >= wall, "stamped live, not at the ctime");

    // An edit and a delete, each reported by name.
    fs::write(www.join("f"), b"two").expect("write");
    let r = live(&mut hlc, &["srv/www/f"]);
    assert_eq!(r.changes, 1);
    assert_eq!(
        content("srv/www/f"),
        Some(Content::File {
            size: 3,
            hash: *blake3::hash(b"two").as_bytes()
        })
    );
    fs::remove_file(www.join("f")).expect("rm");
    let r = live(&mut hlc, &["srv/www/f"]);
    assert_eq!(r.changes, 1);
    assert_eq!(content("srv/www/f"), Some(Content::Deleted));

    // A report about something that did not change records nothing, and
    // paths outside the mirrored tops are ignored.
    let r = live(&mut hlc, &["srv/www/e/sub/x", "srv/elsewhere"]);
    assert_eq!(r.changes, 0);
}

#[test]
fn the_old_children_of_a_renamed_directory_are_not_found_vanished_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
    let www = root.join("srv/www");
    fs::create_dir_all(www.join("d")).expect("mkdir");
    fs::create_dir_all(&state).expect("mkdir");
    for i in 0..50 {
        fs::write(www.join(format!("d/f{i}")), format!("{i}")).expect("write");
    }
    let mut hlc = Hlc::default();
    scan(&state, &root, &mut hlc);
    fs::rename(www.join("d"), www.join("e")).expect("rename");
    // The rename: d becomes a tombstone, which hides the entries of its
    // old children (they are not recorded one by one).
    let renamed = scan(&state, &root, &mut hlc);
    assert!(renamed.changes > 0);
    let again = scan(&state, &root, &mut hlc);
    assert_eq!(again.changes, 0);
    assert!(
        again.vanished == 0,
        "hidden entries found vanished at every start: {:?}",
        again.vanished
    );
}

// The start-up scan runs in pieces (see omirr_sync::record): under the top
// `srv/www`, each directory up to two levels down is a piece without its
// subdirectories, and each directory below those a piece of its own. The
// tree below has pieces www, www/p, www/p/a, www/p/z, www/q, www/q/sub,
// in that order.

/// What the index says is on disk below the root: path, content and mode.
fn present_tree(state: &Path) -> Vec<(String, Content, u32)> {
    let index = Index::open(state).expect("open index");
    let mut out = Vec::new();
    for (path, _) in index.below(&RelPath::root()).expect("below") {
        if let Some(n) = omirr_core::tree::present(&index, &path).expect("present") {
            out.push((path.to_string(), n.content, n.meta.mode));
        }
    }
    out
}

fn stat_paths(state: &Path) -> Vec<String> {
    let index = Index::open(state).expect("open index");
    index
        .stats_below(&RelPath::root())
        .expect("stats")
        .into_iter()
        .map(|(p, _)| p.to_string())
        .collect()
}

/// A fresh index's view of `root` as it is now: what any sequence of
/// scans must end up agreeing with.
fn reference(root: &Path) -> Vec<(String, Content, u32)> {
    let state = tempfile::tempdir().expect("tempdir");
    scan(state.path(), root, &mut Hlc::default());
    present_tree(state.path())
}

fn piece_tree(root: &Path) {
    let www = root.join("srv/www");
    for d in ["p/a/deep", "p/z", "q/sub"] {
        fs::create_dir_all(www.join(d)).expect("mkdir");
    }
    fs::write(www.join("top-file"), b"top").expect("write");
    fs::write(www.join("p/a/big"), vec![1u8; 200_000]).expect("write");
    fs::write(www.join("p/a/deep/x"), vec![2u8; 100_000]).expect("write");
    fs::write(www.join("p/a/keep"), b"keep").expect("write");
    fs::write(www.join("p/z/zz"), vec![3u8; 50_000]).expect("write");
    fs::write(www.join("q/sub/s"), vec![4u8; 70_000]).expect("write");
    fs::write(www.join("q/qf"), b"qf").expect("write");
}

fn hooks(stop_after: usize) -> omirr_sync::record::PieceHooks {
    omirr_sync::record::PieceHooks {
        stop_after,
        // A commit after every piece, so that a stop between two pieces
        // leaves the earlier ones recorded.
        group_entries: 1,
    }
}

fn scan_with(
    state: &Path,
    root: &Path,
    hlc: &mut Hlc,
    hooks: omirr_sync::record::PieceHooks,
) -> omirr_sync::record::StartupScan {
    let index = Index::open(state).expect("open index");
    omirr_sync::record::scan_into_index_with(
        &index,
        hlc,
        &HostId::new("alpha"),
        root,
        &[p("srv/www")],
        &|p: &RelPath| p.file_name().ends_with(b".swp"),
        &omirr_fs::owners::Uniform::default(),
        hooks,
    )
    .expect("scan")
}

#[test]
fn renames_across_pieces_while_down_are_recognised_both_ways() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
    fs::create_dir_all(&state).expect("mkdir");
    piece_tree(&root);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mut hlc = Hlc::default();
    let first = scan_with(&state, &root, &mut hlc, hooks(usize::MAX));
    assert_eq!(first.pieces, 6, "{first:?}");
    let big = hash_of(&state, "srv/www/p/a/big").expect("big");
    let zz = hash_of(&state, "srv/www/p/z/zz").expect("zz");

    let www = root.join("srv/www");
    // From an earlier piece to a later one: the later piece meets the
    // inode after the earlier one recorded the old path gone.
    fs::rename(www.join("p/a/big"), www.join("q/sub/big")).expect("rename");
    // From a later piece to an earlier one.
    fs::rename(www.join("p/z/zz"), www.join("p/a/zz")).expect("rename");
    // A directory, from a piece into a piece split around its own
    // subdirectories.
    fs::rename(www.join("p/a/deep"), www.join("q/deep")).expect("rename");
    let second = scan_with(&state, &root, &mut hlc, hooks(usize::MAX));
    assert_eq!(
        second.stats.hashed_files, 0,
        "renames cost no reading: {second:?}"
    );
    // big, zz, deep and deep/x.
    assert_eq!(second.renamed, 4, "{second:?}");
    assert_eq!(hash_of(&state, "srv/www/q/sub/big"), Some(big));
    assert_eq!(hash_of(&state, "srv/www/p/a/zz"), Some(zz));
    assert_eq!(present_tree(&state), reference(&root));
    let third = scan_with(&state, &root, &mut hlc, hooks(usize::MAX));
    assert_eq!((third.changes, third.vanished), (0, 0), "{third:?}");
}

#[test]
fn vanished_directories_are_found_whichever_piece_they_were_in() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
    fs::create_dir_all(&state).expect("mkdir");
    piece_tree(&root);
    let mut hlc = Hlc::default();
    scan(&state, &root, &mut hlc);

    let www = root.join("srv/www");
    // A piece of its own, gone whole.
    fs::remove_dir_all(www.join("p/z")).expect("rm -r");
    // A directory of a split piece, with a piece of its own below it.
    fs::remove_dir_all(www.join("q")).expect("rm -r");
    // A directory turned into a file.
    fs::remove_dir_all(www.join("p/a/deep")).expect("rm -r");
    fs::write(www.join("p/a/deep"), b"now a file").expect("write");
    let r = scan(&state, &root, &mut hlc);
    // z, z/zz, q, q/qf, q/sub, q/sub/s, deep/x (deep itself changed).
    assert_eq!(r.vanished, 7, "{r:?}");
    assert_eq!(present_tree(&state), reference(&root));
    let stats = stat_paths(&state);
    for gone in ["srv/www/p/z/zz", "srv/www/q/sub/s", "srv/www/p/a/deep/x"] {
        assert!(!stats.contains(&gone.to_string()), "{gone}: {stats:?}");
    }
    let again = scan(&state, &root, &mut hlc);
    assert_eq!((again.changes, again.vanished), (0, 0), "{again:?}");
}

#[test]
fn a_scan_stopped_between_pieces_is_healed_by_the_next() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
    fs::create_dir_all(&state).expect("mkdir");
    piece_tree(&root);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mut hlc = Hlc::default();
    scan(&state, &root, &mut hlc);
    let saved = tmp.path().join("saved");
    fs::create_dir_all(&saved).expect("mkdir");
    fs::copy(state.join("index.redb"), saved.join("index.redb")).expect("copy");

    // Changes made while down, in every piece.
    let www = root.join("srv/www");
    fs::rename(www.join("p/a/big"), www.join("q/sub/big")).expect("rename");
    fs::rename(www.join("p/z/zz"), www.join("p/a/zz")).expect("rename");
    fs::remove_file(www.join("top-file")).expect("rm");
    fs::write(www.join("q/qf"), b"qf, edited").expect("write");
    fs::remove_dir_all(www.join("p/a/deep")).expect("rm -r");
    fs::create_dir_all(www.join("p/new/dir")).expect("mkdir");
    fs::write(www.join("p/new/dir/n"), b"new").expect("write");
    let want = reference(&root);

    for stop in 0..8 {
        fs::copy(saved.join("index.redb"), state.join("index.redb")).expect("copy");
        let mut hlc = Hlc::default();
        let stopped = scan_with(&state, &root, &mut hlc, hooks(stop));
        assert!(stopped.pieces <= stop, "{stopped:?}");
        let healed = scan(&state, &root, &mut hlc);
        assert_eq!(present_tree(&state), want, "stopped after {stop} pieces");
        Index::open(&state).expect("open").verify().expect("verify");
        // Only what the stopped scan did not record is recorded now: the
        // two add up to the changes found in one go.
        let again = scan(&state, &root, &mut hlc);
        assert_eq!(
            (again.changes, again.vanished),
            (0, 0),
            "stopped after {stop}, healed by {healed:?}"
        );
    }
}

#[test]
fn an_excluded_directory_in_a_split_piece_is_left_alone_not_vanished() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
    fs::create_dir_all(&state).expect("mkdir");
    piece_tree(&root);
    let www = root.join("srv/www");
    let mut hlc = Hlc::default();
    scan(&state, &root, &mut hlc);
    // Known to the index, then excluded (the helper excludes `*.swp`).
    fs::rename(www.join("q"), www.join("q.swp")).expect("rename");
    fs::create_dir_all(www.join("p/cache.swp/inner")).expect("mkdir");
    fs::write(www.join("p/cache.swp/inner/c"), b"c").expect("write");
    let r = scan(&state, &root, &mut hlc);
    // q and what was below it are gone from where the index knew them;
    // nothing at or below the excluded directories is recorded.
    assert_eq!(r.vanished, 4, "{r:?}");
    let tree = present_tree(&state);
    assert!(tree.iter().all(|(p, _, _)| !p.contains(".swp")), "{tree:?}");
    assert_eq!(tree, reference(&root));
}

/// The scan compares what it finds with what this host would have made
/// of the index's entry: a peer's owner rendered here, or a mode the
/// rules keep, is no local change; a real local change still is.
#[test]
fn the_scan_takes_no_local_rendering_or_kept_field_for_a_change() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
    fs::create_dir_all(root.join("srv/www")).expect("mkdir");
    fs::create_dir_all(&state).expect("mkdir");
    let f = root.join("srv/www/f");
    fs::write(&f, b"x").expect("write");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).expect("chmod");
    let md = fs::metadata(&f).expect("stat");
    let index = Index::open(&state).expect("index");
    let mtime_ns = md.mtime() * 1_000_000_000 + md.mtime_nsec();
    // A peer's entry: its own numbers, names that are this file's here.
    let owner = omirr_fs::owners::users().user_name(md.uid());
    let group = omirr_fs::owners::users().group_name(md.gid());
    assert!(
        !owner.is_empty() && !group.is_empty(),
        "the test's user has names"
    );
    let peer = Meta {
        mode: 0o600,
        uid: md.uid() + 1000,
        gid: md.gid() + 1000,
        mtime_ns,
        owner,
        group,
        ..Default::default()
    };
    index
        .record(&[Change {
            path: p("srv/www/f"),
            entry: Entry {
                content: Content::File {
                    size: 1,
                    hash: *blake3::hash(b"x").as_bytes(),
                },
                meta: peer,
                version: Version {
                    ts: Timestamp(1),
                    host: HostId::new("beta"),
                },
                base: None,
            },
        }])
        .expect("record");
    let look = |rules: MetaRules| {
        let mut hlc = Hlc::default();
        omirr_sync::record::record_live(
            &index,
            &mut hlc,
            &HostId::new("alpha"),
            &root,
            &[p("srv/www")],
            &[p("srv/www/f")],
            &|_| false,
            &Uniform(rules),
            Timestamp(10),
        )
        .expect("look")
        .changes
    };
    // Each look after the first needs a new stat key (a scan that finds
    // nothing new vouches for the key it saw): a chmod changes the ctime.
    let chmod = |mode: u32| {
        std::thread::sleep(std::time::Duration::from_millis(30));
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let kept = || MetaRules {
        keep_mode: true,
        ..MetaRules::default()
    };
    assert_eq!(look(kept()), 0, "owner and group by name, mode kept");
    chmod(0o644);
    let by_number = MetaRules {
        owner: Check::ByNumber,
        group: Check::ByNumber,
        keep_mode: true,
        ..MetaRules::default()
    };
    assert_eq!(look(by_number), 1, "by number, the owners differ");
    // The index holds this host's entry now, with the mode kept (0600).
    chmod(0o640);
    assert_eq!(look(kept()), 0, "nochkmode: a chmod is no change");
    chmod(0o641);
    assert_eq!(look(MetaRules::default()), 1, "with modes checked it is");
}

/// A restart with nothing changed takes each file's extended attributes
/// from the index instead of reading them; one set while the daemon was
/// down moves the file's ctime, so the next scan reads and records it.
/// Skipped, saying why, where the filesystem keeps no `user.*` attributes.
#[test]
fn an_attribute_set_while_down_is_recorded_and_unchanged_ones_are_not_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root, state) = (tmp.path().join("root"), tmp.path().join("state"));
    let www = root.join("srv/www");
    fs::create_dir_all(&www).expect("mkdir");
    fs::create_dir_all(&state).expect("mkdir");
    let (a, b) = (www.join("a"), www.join("b"));
    fs::write(&a, b"alpha").expect("write");
    fs::write(&b, b"beta").expect("write");
    let set = |value: &[u8]| {
        rustix::fs::lsetxattr(&a, "user.comment", value, rustix::fs::XattrFlags::empty())
    };
    if let Err(e) = set(b"one") {
        eprintln!("SKIP: {} keeps no user.* attributes: {e}", www.display());
        return;
    }
    let comment = || {
        let index = Index::open(&state).expect("open index");
        let e = index.entry(&p("srv/www/a")).expect("entry").expect("a");
        e.meta.xattrs.get(b"user.comment").map(<[u8]>::to_vec)
    };
    // Let the files age past the racy window, so that their keys vouch.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mut hlc = Hlc::default();
    let first = scan(&state, &root, &mut hlc);
    assert_eq!(first.stats.xattr_reads, 3, "srv/www, a and b");
    assert_eq!(comment(), Some(b"one".to_vec()));

    // Nothing changed: only the directory's attributes are read.
    let again = scan(&state, &root, &mut hlc);
    assert_eq!(again.changes, 0);
    assert_eq!(again.stats.xattr_reads, 1, "{:?}", again.stats);

    set(b"two").expect("setxattr");
    let third = scan(&state, &root, &mut hlc);
    assert_eq!(third.changes, 1, "{third:?}");
    assert_eq!(third.stats.xattr_reads, 2, "srv/www and a");
    assert_eq!(comment(), Some(b"two".to_vec()));
}
