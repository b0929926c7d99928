//! Trees on disk: described entry by entry ([`manifest`]), digested
//! ([`digest`]), compared ([`diff_summary`]) and waited for until they
//! are the same ([`wait_same`]); and files written for a test
//! ([`write_file`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes `text` to `path` with `mode`, creating parent directories.
pub fn write_file(path: &Path, text: &str, mode: u32) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("create directory");
    }
    fs::write(path, text).expect("write file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// What is in a tree: for every path below `dir` (relative, as bytes), its
/// type, full `st_mode` in octal, and symlink target or content hash.
/// `dir` itself is not described. `None` if `dir` does not exist.
///
/// Symbolic links are not followed. An entry that cannot be read (it
/// changed during the walk) is described by the error, so that it differs
/// from every real state and a poll tries again.
pub fn manifest(dir: &Path) -> Option<BTreeMap<Vec<u8>, String>> {
    fs::symlink_metadata(dir).ok()?;
    let mut out = BTreeMap::new();
    walk(dir, Vec::new(), &mut out);
    Some(out)
}

fn walk(dir: &Path, rel: Vec<u8>, out: &mut BTreeMap<Vec<u8>, String>) {
    let mut names: Vec<Vec<u8>> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().as_bytes().to_vec())
            .collect(),
        Err(e) => {
            out.insert(rel, format!("unreadable directory: {e}"));
            return;
        }
    };
    names.sort();
    for name in names {
        let path = dir.join(std::ffi::OsStr::from_bytes(&name));
        let mut r = rel.clone();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(&name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                out.insert(r, format!("unreadable: {e}"));
                continue;
            }
        };
        let mode = meta.mode();
        let ft = meta.file_type();
        let desc = if ft.is_dir() {
            format!("dir {mode:o}")
        } else if ft.is_symlink() {
            match fs::read_link(&path) {
                Ok(t) => format!(
                    "symlink {mode:o} -> {}",
                    t.as_os_str().as_bytes().escape_ascii()
                ),
                Err(e) => format!("unreadable symlink: {e}"),
            }
        } else if ft.is_file() {
            match hash_file(&path) {
                Ok((len, hash)) => format!("file {mode:o} {len} bytes blake3:{hash}"),
                Err(e) => format!("unreadable file: {e}"),
            }
        } else {
            format!("other {mode:o}")
        };
        out.insert(r.clone(), desc);
        if ft.is_dir() {
            walk(&path, r, out);
        }
    }
}

fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut hasher = blake3::Hasher::new();
    let len = io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok((len, hasher.finalize().to_hex()[..16].to_string()))
}

/// A digest of the tree below `dir`: paths (as bytes), types, modes,
/// symlink targets and contents, as `/work/shared/bench/workloads.py
/// digest` takes into account (with BLAKE3 instead of SHA-256, and its own
/// order, so the values differ from the script's). `"absent"` if `dir`
/// does not exist; an empty directory has the digest of no entries.
pub fn digest(dir: &Path) -> String {
    match manifest(dir) {
        None => "absent".to_string(),
        Some(m) => digest_of(&m),
    }
}

fn digest_of(m: &BTreeMap<Vec<u8>, String>) -> String {
    let mut h = blake3::Hasher::new();
    for (path, desc) in m {
        h.update(path);
        h.update(b"\0");
        h.update(desc.as_bytes());
        h.update(b"\0");
    }
    h.finalize().to_hex().to_string()
}

/// Waits until every tree of `trees` (named by `names`, in order) has
/// the same [`digest`]. On timeout, returns [`diff_summary`]: which paths
/// differ from the first tree's.
pub fn wait_same(names: &[&str], trees: &[PathBuf], timeout: Duration) -> Result<(), String> {
    let same = || {
        let mut digests = trees.iter().map(|t| digest(t));
        let first = digests.next();
        digests.all(|d| Some(d) == first)
    };
    if crate::wait_until(timeout, same) {
        return Ok(());
    }
    Err(diff_summary(names, trees))
}

/// Which paths of each tree differ from the first one's.
pub fn diff_summary(names: &[&str], trees: &[PathBuf]) -> String {
    const MAX: usize = 20;
    let manifests: Vec<_> = trees.iter().map(|t| manifest(t)).collect();
    let mut s = String::new();
    let (first, first_m) = (names[0], &manifests[0]);
    for (name, m) in names.iter().zip(&manifests).skip(1) {
        let (a, b) = match (first_m, m) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => (a, b),
            (None, None) => continue,
            (None, Some(_)) => {
                let _ = writeln!(s, "  {first} has no such directory; {name} has it");
                continue;
            }
            (Some(_), None) => {
                let _ = writeln!(s, "  {name} has no such directory; {first} has it");
                continue;
            }
        };
        let _ = writeln!(s, "  {first} vs {name}:");
        let paths: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
        let mut shown = 0;
        let mut differ = 0;
        for p in paths {
            let line = match (a.get(p), b.get(p)) {
                (Some(x), Some(y)) if x == y => continue,
                (Some(x), Some(y)) => format!("{first}: {x}; {name}: {y}"),
                (Some(x), None) => format!("only on {first}: {x}"),
                (None, Some(y)) => format!("only on {name}: {y}"),
                (None, None) => continue,
            };
            differ += 1;
            if shown < MAX {
                shown += 1;
                let _ = writeln!(s, "    {}: {line}", p.escape_ascii());
            }
        }
        if differ > shown {
            let _ = writeln!(s, "    ... and {} more", differ - shown);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait_until;
    use std::os::unix::fs::symlink;

    /// Digests see paths, types, modes, link targets and contents, and the
    /// convergence check says which paths differ.
    #[test]
    fn digests_and_differences() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for t in [&a, &b] {
            fs::create_dir_all(t.join("d")).expect("mkdir");
            fs::write(t.join("d/f"), "same").expect("write");
            symlink("d/f", t.join("l")).expect("symlink");
        }
        assert_eq!(digest(&a), digest(&b));
        assert_eq!(digest(&dir.path().join("none")), "absent");
        type Change = (&'static str, fn(&std::path::Path));
        let changes: [Change; 5] = [
            ("content", |t| {
                fs::write(t.join("d/f"), "other").expect("write")
            }),
            ("mode", |t| {
                fs::set_permissions(t.join("d/f"), fs::Permissions::from_mode(0o600))
                    .expect("chmod")
            }),
            ("link target", |t| {
                fs::remove_file(t.join("l")).expect("rm");
                symlink("d", t.join("l")).expect("symlink");
            }),
            ("new file", |t| fs::write(t.join("d/g"), "").expect("write")),
            ("type", |t| {
                fs::remove_file(t.join("d/f")).expect("rm");
                fs::create_dir(t.join("d/f")).expect("mkdir");
            }),
        ];
        for (what, change) in changes {
            let c = dir.path().join(format!("c-{what}"));
            fs::create_dir_all(c.join("d")).expect("mkdir");
            fs::write(c.join("d/f"), "same").expect("write");
            symlink("d/f", c.join("l")).expect("symlink");
            assert_eq!(digest(&a), digest(&c), "{what}: copy");
            change(&c);
            assert_ne!(digest(&a), digest(&c), "{what} is seen");
            let summary = diff_summary(&["a", "c"], &[a.clone(), c.clone()]);
            assert!(summary.contains("a vs c:"), "{what}: {summary}");
        }
        let summary = diff_summary(&["a", "c"], &[a.clone(), dir.path().join("c-new file")]);
        assert!(
            summary.contains("d/g: only on c: file 100") && summary.contains(" 0 bytes"),
            "{summary}"
        );
        let summary = diff_summary(&["a", "c"], &[a.clone(), dir.path().join("c-content")]);
        assert!(
            summary.contains("d/f: a: file 100") && summary.contains("4 bytes"),
            "{summary}"
        );
        assert!(wait_until(Duration::from_millis(100), || true));
        assert!(!wait_until(Duration::from_millis(50), || false));
    }
}
