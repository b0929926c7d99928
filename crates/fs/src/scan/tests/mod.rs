//! The scanner's tests, by the part of the scan they exercise, and the
//! helpers they share.

use super::*;
use omirr_core::{Content, Hash, StatKey};
use omirr_testkit::p;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

mod hash;
mod renames;
mod vanished;
mod walk;
mod xattrs;

fn put(root: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
    fs::write(&path, bytes).expect("write");
    path
}

fn scan_all(root: &Path, baseline: &dyn ScanBaseline) -> ScanReport {
    scan(root, &[RelPath::root()], &|_| false, baseline).expect("scan")
}

/// A baseline that trusts every key in `report`, as the index would
/// for files older than the racy window (test files are all new).
fn trusted(report: &ScanReport) -> MemBaseline {
    let mut b = MemBaseline::new();
    for f in &report.found {
        b.insert(
            f.path.clone(),
            Known {
                racy: false,
                ..f.known()
            },
        );
    }
    b
}

fn paths(report: &ScanReport) -> Vec<String> {
    report.found.iter().map(|f| f.path.to_string()).collect()
}

fn file_hash(f: &Found) -> Hash {
    match f.node.content {
        Content::File { hash, .. } => hash,
        ref other => panic!("{} is a {}, not a file", f.path, other.kind()),
    }
}

fn ctime_ns(path: &Path) -> u64 {
    let m = fs::symlink_metadata(path).expect("lstat");
    u64::try_from(m.ctime() * 1_000_000_000 + m.ctime_nsec()).expect("after 1970")
}

const FAKE: Hash = [7; 32];
