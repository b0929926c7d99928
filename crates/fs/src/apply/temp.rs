//! Temporary names, `.omirr.NAME.TAG.tmp`: what files, symlinks, FIFOs
//! and links are made under before a rename puts them in place (making
//! them, and that rename), and how to recognise one ([`is_temp_name`])
//! so that the watcher and scanner skip it and the clean-up at startup
//! removes it.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::io_error;
use super::open::lstat;
use super::remove::remove_empty_dir;
use super::Applier;
use super::ApplyError;
use super::Batch;
use omirr_core::RelPath;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

const TEMP_PREFIX: &[u8] = b".omirr.";
const TEMP_SUFFIX: &[u8] = b".tmp";
/// Hex digits of the random tag in a temporary name.
const TEMP_TAG_LEN: usize = 16;
/// How much of the target's name a temporary name repeats: enough to tell
/// what it was for, short enough to stay within NAME_MAX (255).
const TEMP_NAME_KEEP: usize = 200;
/// O_EXCL collisions tolerated before giving up on a temporary name.
const TEMP_ATTEMPTS: usize = 16;

/// Whether `name` is one of our temporary names,
/// `.omirr.NAME.<16 hex digits>.tmp`. The watcher and scanner should skip
/// such names; [`Applier::cleanup_stale_temps`](super::Applier::cleanup_stale_temps)
/// deletes them. The tag makes a clash with a user's own file unlikely.
pub fn is_temp_name(name: &[u8]) -> bool {
    let min = TEMP_PREFIX.len() + 1 + 1 + TEMP_TAG_LEN + TEMP_SUFFIX.len();
    if name.len() < min || !name.starts_with(TEMP_PREFIX) || !name.ends_with(TEMP_SUFFIX) {
        return false;
    }
    let tag_end = name.len() - TEMP_SUFFIX.len();
    let tag_start = tag_end - TEMP_TAG_LEN;
    name[tag_start - 1] == b'.'
        && name[tag_start..tag_end]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Whether `name` is one of our temporary names made for `target` (see
/// [`temp_name`]).
pub(super) fn is_temp_name_for(name: &[u8], target: &[u8]) -> bool {
    let kept = &target[..target.len().min(TEMP_NAME_KEEP)];
    is_temp_name(name)
        && name.len() == TEMP_PREFIX.len() + kept.len() + 1 + TEMP_TAG_LEN + TEMP_SUFFIX.len()
        && &name[TEMP_PREFIX.len()..TEMP_PREFIX.len() + kept.len()] == kept
}

/// A fresh temporary name for `name`. Uniqueness comes from O_EXCL (and
/// retrying); the tag only makes collisions rare, between processes too.
fn temp_name(name: &[u8]) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(&nanos.to_le_bytes());
    let tag = h.finalize().to_hex();
    let tag = &tag[..TEMP_TAG_LEN];
    let mut t = TEMP_PREFIX.to_vec();
    t.extend_from_slice(&name[..name.len().min(TEMP_NAME_KEEP)]);
    t.push(b'.');
    t.extend_from_slice(tag.as_bytes());
    t.extend_from_slice(TEMP_SUFFIX);
    t
}

/// Creates a temporary file (O_EXCL, 0600) for `name` in `dir`.
pub(super) fn temp_file(
    dir: &OwnedFd,
    name: &[u8],
    path: &RelPath,
) -> Result<(Vec<u8>, File), ApplyError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    with_temp_name(name, path, "create a temporary file for", |tmp| {
        rfs::openat(dir, tmp, flags, Mode::from_raw_mode(0o600)).map(File::from)
    })
}

/// Creates a symlink to `target` under a temporary name in `dir`.
pub(super) fn temp_symlink(
    target: &[u8],
    dir: &OwnedFd,
    name: &[u8],
    path: &RelPath,
) -> Result<Vec<u8>, ApplyError> {
    with_temp_name(name, path, "create a temporary symbolic link for", |tmp| {
        rfs::symlinkat(target, dir, tmp)
    })
    .map(|(tmp, ())| tmp)
}

/// Hard-links `name` in `dir` to a temporary name.
pub(super) fn temp_link(dir: &OwnedFd, name: &[u8], path: &RelPath) -> Result<Vec<u8>, ApplyError> {
    with_temp_name(name, path, "link a temporary name to", |tmp| {
        rfs::linkat(dir, name, dir, tmp, AtFlags::empty())
    })
    .map(|(tmp, ())| tmp)
}

/// Runs `create` on fresh temporary names until one does not exist yet.
pub(super) fn with_temp_name<T>(
    name: &[u8],
    path: &RelPath,
    op: &'static str,
    mut create: impl FnMut(&[u8]) -> rustix::io::Result<T>,
) -> Result<(Vec<u8>, T), ApplyError> {
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = temp_name(name);
        match create(&tmp) {
            Ok(t) => return Ok((tmp, t)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(io_error(path, op, e)),
        }
    }
    Err(io_error(path, op, Errno::EXIST))
}

impl Applier {
    /// Clears the way for renaming a file or symlink over `name`: rename
    /// replaces files and symlinks atomically by itself, and an empty
    /// directory is removed first; a non-empty one is refused.
    fn make_room(&self, dir: &OwnedFd, name: &[u8], path: &RelPath) -> Result<(), ApplyError> {
        match lstat(dir, name, path)? {
            Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                remove_empty_dir(dir, name, path)
            }
            _ => Ok(()),
        }
    }
}

impl Batch<'_> {
    /// The last steps of making a file, symlink, FIFO or hard link: `tmp`,
    /// made beside `name` in `dir` and given its metadata (`set`), is
    /// renamed over `name` once `path` is still as planned and room is
    /// made for it. On any failure `tmp` is removed.
    pub(super) fn put_in_place(
        &self,
        dir: &OwnedFd,
        tmp: &[u8],
        name: &[u8],
        path: &RelPath,
        set: Result<(), ApplyError>,
        op: &'static str,
    ) -> Result<(), ApplyError> {
        let placed = set
            .and_then(|()| self.check_unchanged(dir, name, path))
            .and_then(|()| self.ap.make_room(dir, name, path))
            .and_then(|()| rfs::renameat(dir, tmp, dir, name).map_err(|e| io_error(path, op, e)));
        if placed.is_err() {
            let _ = rfs::unlinkat(dir, tmp, AtFlags::empty());
        }
        placed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised() {
        let t = temp_name(b"index.html");
        assert!(t.starts_with(b".omirr.index.html."), "{t:?}");
        assert!(is_temp_name(&t));
        let long = temp_name(&[b'n'; 255]);
        assert!(long.len() <= 255, "{}", long.len());
        assert!(is_temp_name(&long));
        assert!(!is_temp_name(b".omirr.notes.tmp"));
        assert!(!is_temp_name(b".omirr.x.0123456789ABCDEF.tmp"));
        assert!(!is_temp_name(b"omirr.x.0123456789abcdef.tmp"));
        assert!(is_temp_name(b".omirr.x.0123456789abcdef.tmp"));
    }
}
