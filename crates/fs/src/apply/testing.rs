//! Helpers shared by the applier's unit tests: paths, metadata, an
//! in-memory content source, a fresh root, and looks at what is on disk.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Applier, ApplyOptions, ContentSource, SourceError};
use omirr_core::{Action, Hash, Meta, RelPath, Source};

pub(super) use omirr_testkit::p;

pub(super) fn h(content: &[u8]) -> Hash {
    *blake3::hash(content).as_bytes()
}

pub(super) fn meta(mode: u32, mtime_ns: i64) -> Meta {
    Meta {
        mode,
        uid: 0,
        gid: 0,
        mtime_ns,
        ..Default::default()
    }
}

pub(super) const T: i64 = 1_600_000_000_123_456_789;

pub(super) fn write(path: &str, content: &[u8], meta: Meta) -> Action {
    Action::WriteFile {
        path: p(path),
        size: content.len() as u64,
        hash: h(content),
        meta,
        source: Source::Fetch,
    }
}

/// Content by hash, as a peer would serve it.
#[derive(Default)]
pub(super) struct Mem(pub(super) HashMap<Hash, Vec<u8>>);

impl Mem {
    pub(super) fn with(contents: &[&[u8]]) -> Mem {
        Mem(contents.iter().map(|c| (h(c), c.to_vec())).collect())
    }
}

impl ContentSource for Mem {
    fn open(
        &mut self,
        _: &RelPath,
        hash: &Hash,
        _: u64,
    ) -> Result<Box<dyn Read + '_>, SourceError> {
        match self.0.get(hash) {
            Some(c) => Ok(Box::new(c.as_slice())),
            None => Err("no such content".into()),
        }
    }
}

pub(super) fn setup(options: ApplyOptions) -> (tempfile::TempDir, Applier) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ap = Applier::open(dir.path(), options).expect("open root");
    (dir, ap)
}

pub(super) fn default_setup() -> (tempfile::TempDir, Applier) {
    setup(ApplyOptions::default())
}

/// Every name below `dir` that is one of our temporary files.
pub(super) fn temps(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let name = e.file_name();
            if name.to_string_lossy().starts_with(".omirr.") {
                found.push(e.path());
            }
            if e.file_type().expect("type").is_dir() {
                todo.push(e.path());
            }
        }
    }
    found
}

pub(super) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub(super) fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

pub(super) fn mtime_ns(path: &Path) -> i64 {
    let m = fs::symlink_metadata(path).expect("stat");
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

pub(super) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
