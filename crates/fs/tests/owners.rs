//! Owners, groups, modes and kept versions as the install options ask
//! (`omirr_fs::owners`): the applier sets what the rules say. (That the
//! scan does not take this host's rendering of a peer's entry for a change
//! of its own is tested with the recording, in omirr-sync's
//! `tests/local_scan.rs`.)
//!
//! Setting owners needs root: those tests say so and pass trivially
//! otherwise.

use omirr_core::{Action, Hash, Meta, Name, RelPath, Source};
use omirr_fs::apply::{Applier, ApplyOptions, ContentSource, SourceError};
use omirr_fs::owners::{Check, MetaRules, Uniform};
use omirr_testkit::p;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn name(s: &str) -> Name {
    Name::new(s.as_bytes()).expect("name")
}

fn meta(mode: u32, uid: u32, owner: &str, gid: u32, group: &str) -> Meta {
    Meta {
        mode,
        uid,
        gid,
        mtime_ns: 1_000_000_000_000_000_000,
        owner: name(owner),
        group: name(group),
        ..Default::default()
    }
}

struct Bytes(Vec<u8>);

impl ContentSource for Bytes {
    fn open(&mut self, _: &RelPath, _: &Hash, _: u64) -> Result<Box<dyn Read + '_>, SourceError> {
        Ok(Box::new(&self.0[..]))
    }
}

fn write(path: &str, content: &[u8], meta: Meta) -> Action {
    Action::WriteFile {
        path: p(path),
        size: content.len() as u64,
        hash: *blake3::hash(content).as_bytes(),
        meta,
        source: Source::Fetch,
    }
}

fn applier(dir: &Path, rules: MetaRules) -> Applier {
    let mut ap = Applier::open(dir, ApplyOptions::default()).expect("applier");
    ap.set_rules(Arc::new(Uniform(rules)));
    ap
}

/// By default the owner and group go by name: a peer's "root" is root
/// here whatever its number there; with numchkowner and numchkgroup, the
/// number.
#[test]
fn owners_and_groups_go_by_name_unless_by_number() {
    if !is_root() {
        eprintln!("not root: owners cannot be set; skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let m = meta(0o640, 4321, "root", 4322, "root");
    let ap = applier(dir.path(), MetaRules::default());
    ap.apply(&[write("f", b"x", m.clone())], &mut Bytes(b"x".to_vec()))
        .expect("apply");
    let md = fs::metadata(dir.path().join("f")).expect("stat");
    assert_eq!((md.uid(), md.gid()), (0, 0), "by name");

    let numbers = MetaRules {
        owner: Check::ByNumber,
        group: Check::ByNumber,
        ..MetaRules::default()
    };
    let ap = applier(dir.path(), numbers);
    ap.apply(&[write("g", b"x", m.clone())], &mut Bytes(b"x".to_vec()))
        .expect("apply");
    let md = fs::metadata(dir.path().join("g")).expect("stat");
    assert_eq!((md.uid(), md.gid()), (4321, 4322), "by number");

    // A name unknown here: defowner and defgroup, else the number.
    let unknown = meta(
        0o640,
        4321,
        "omirr-no-such-user",
        4322,
        "omirr-no-such-group",
    );
    let ap = applier(dir.path(), MetaRules::default());
    ap.apply(
        &[write("h", b"x", unknown.clone())],
        &mut Bytes(b"x".to_vec()),
    )
    .expect("apply");
    let md = fs::metadata(dir.path().join("h")).expect("stat");
    assert_eq!((md.uid(), md.gid()), (4321, 4322), "the number");
    let defaults = MetaRules {
        defowner: Some("root".into()),
        defgroup: Some("root".into()),
        ..MetaRules::default()
    };
    let ap = applier(dir.path(), defaults);
    ap.apply(
        &[write("i", b"x", unknown.clone())],
        &mut Bytes(b"x".to_vec()),
    )
    .expect("apply");
    let md = fs::metadata(dir.path().join("i")).expect("stat");
    assert_eq!((md.uid(), md.gid()), (0, 0), "defowner, defgroup");
}

/// nochkowner, nochkgroup, nochkmode: an existing file keeps this host's
/// owner, group and mode when a peer's content replaces it or its
/// metadata changes; a new file gets the peer's.
#[test]
fn kept_owner_group_and_mode_stay_on_existing_files_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("f");
    fs::write(&f, b"old").expect("write");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).expect("chmod");
    let keep = MetaRules {
        owner: Check::Keep,
        group: Check::Keep,
        keep_mode: true,
        ..MetaRules::default()
    };
    let ap = applier(dir.path(), keep);
    let theirs = meta(0o600, 1234, "", 1234, "");
    ap.apply(
        &[write("f", b"new", theirs.clone())],
        &mut Bytes(b"new".to_vec()),
    )
    .expect("apply");
    let md = fs::metadata(&f).expect("stat");
    assert_eq!(fs::read(&f).expect("read"), b"new", "the content changes");
    assert_eq!(md.mode() & 0o7777, 0o644, "the mode stays");
    if is_root() {
        assert_eq!((md.uid(), md.gid()), (0, 0), "owner and group stay");
    }
    assert_eq!(md.mtime(), 1_000_000_000, "the mtime is the peer's");

    ap.apply(
        &[Action::SetMeta {
            path: p("f"),
            meta: theirs.clone(),
        }],
        &mut Bytes(Vec::new()),
    )
    .expect("apply");
    let md = fs::metadata(&f).expect("stat");
    assert_eq!(md.mode() & 0o7777, 0o644, "a chmod alone does not come");
    if is_root() {
        assert_eq!((md.uid(), md.gid()), (0, 0), "nor a chown");
    }

    ap.apply(
        &[write("new", b"x", theirs.clone())],
        &mut Bytes(b"x".to_vec()),
    )
    .expect("apply");
    let md = fs::metadata(dir.path().join("new")).expect("stat");
    assert_eq!(md.mode() & 0o7777, 0o600, "a new file gets the peer's mode");
    if is_root() {
        assert_eq!((md.uid(), md.gid()), (1234, 1234), "and owner");
    }
}

/// `history`: numbered generations, per the rules of the path.
#[test]
fn history_keeps_numbered_generations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ap = applier(
        dir.path(),
        MetaRules {
            history: 2,
            ..MetaRules::default()
        },
    );
    let m = meta(0o644, 0, "root", 0, "root");
    for v in ["v1", "v2", "v3", "v4"] {
        ap.apply(
            &[
                Action::SaveOld { path: p("f") },
                write("f", v.as_bytes(), m.clone()),
            ],
            &mut Bytes(v.as_bytes().to_vec()),
        )
        .expect("apply");
    }
    let read = |n: &str| fs::read_to_string(dir.path().join(n)).ok();
    assert_eq!(read("f").as_deref(), Some("v4"));
    assert_eq!(read("f.OLD.1").as_deref(), Some("v3"));
    assert_eq!(read("f.OLD.2").as_deref(), Some("v2"));
    assert_eq!(read("f.OLD.3"), None, "two generations");
    assert_eq!(read("f.OLD"), None);
}
