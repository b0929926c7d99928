//! Removing the stale temporary files a crash left behind, once at
//! startup, in the mirrored trees only ([`Applier::cleanup_stale_temps_tree`]).

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;

use super::error::io_error;
use super::open::join_lossy;
use super::temp::{is_temp_name, is_temp_name_for};
use super::Applier;
use super::ApplyError;
use omirr_core::RelPath;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// What [`Applier::cleanup_stale_temps_tree`] did.
#[derive(Debug, Default)]
pub struct Cleanup {
    /// Temporary files removed.
    pub removed: usize,
    /// Directories that could not be listed and files that could not be
    /// removed: skipped, for the caller to report.
    pub skipped: Vec<ApplyError>,
}

impl Applier {
    /// Removes our temporary files (see [`is_temp_name`]) from the
    /// directory `dir`, and returns how many.
    ///
    /// A `kill -9` or a power cut during a batch can leave them behind;
    /// nothing else refers to them, since a temporary file becomes part of
    /// the tree only by being renamed. Call this only when no batch is
    /// running on this root (at startup): it would delete a running
    /// batch's staged files. Directories with such names are left alone.
    pub fn cleanup_stale_temps(&self, dir: &RelPath) -> Result<usize, ApplyError> {
        let done = self.cleanup_dir(dir, &|_| true)?;
        match done.failed.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(done.removed),
        }
    }

    /// Removes the stale temporary files of the mirrored trees `tops`
    /// (see [`Applier::cleanup_stale_temps`]): in every directory at or
    /// below a top (never descending through a symlink; mount points below
    /// a top are crossed, as the scanner crosses them), and, in the
    /// directory above each top, those made for the top itself (a top
    /// that is a file is replaced through one). Nothing else under the
    /// root is looked at: with the root `/`, a walk of all of it would
    /// cross /proc, /sys and network mounts.
    ///
    /// Nothing stops the clean-up: a directory that cannot be listed or a
    /// file that cannot be removed is skipped, and reported in
    /// [`Cleanup::skipped`]. A top that does not exist (yet) or is not a
    /// directory has nothing below it to clean.
    pub fn cleanup_stale_temps_tree(&self, tops: &[RelPath]) -> Cleanup {
        let mut out = Cleanup::default();
        let tops: BTreeSet<&RelPath> = tops.iter().collect();
        for &top in &tops {
            // A top inside another is walked with it.
            if tops.iter().any(|t| top.is_below(t)) {
                continue;
            }
            if let Some(parent) = top.parent() {
                let own = |n: &[u8]| is_temp_name_for(n, top.file_name());
                self.cleanup_walk_step(&parent, &own, &mut out);
            }
            let mut todo = vec![top.clone()];
            while let Some(dir) = todo.pop() {
                let subdirs = self.cleanup_walk_step(&dir, &|_| true, &mut out);
                todo.extend(subdirs.iter().filter_map(|name| dir.join(name).ok()));
            }
        }
        out
    }

    /// One directory of [`Applier::cleanup_stale_temps_tree`]: removes
    /// the temporary files there that `ours` accepts, and returns the
    /// names of its subdirectories. Failures go to `out.skipped`.
    fn cleanup_walk_step(
        &self,
        dir: &RelPath,
        ours: &dyn Fn(&[u8]) -> bool,
        out: &mut Cleanup,
    ) -> Vec<Vec<u8>> {
        match self.cleanup_dir(dir, ours) {
            Ok(done) => {
                out.removed += done.removed;
                out.skipped.extend(done.failed);
                done.subdirs
            }
            // Absent, or removed or replaced since it was listed.
            Err(ApplyError::SymlinkInPath { .. } | ApplyError::NotADirectory { .. }) => Vec::new(),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => {
                out.skipped.push(e);
                Vec::new()
            }
        }
    }

    /// Removes the temporary files in `dir` that `ours` accepts.
    fn cleanup_dir(
        &self,
        dir: &RelPath,
        ours: &dyn Fn(&[u8]) -> bool,
    ) -> Result<DirCleanup, ApplyError> {
        let fd = self.open_dir(dir, None)?;
        let listing = list_dir(&fd, dir)?;
        let mut removed = 0;
        let mut failed = Vec::new();
        for name in listing.temps.iter().filter(|n| ours(n)) {
            match rfs::unlinkat(&fd, name.as_slice(), AtFlags::empty()) {
                Ok(()) => removed += 1,
                // Made a directory, or removed, since it was listed.
                Err(Errno::ISDIR | Errno::NOENT) => {}
                Err(e) => failed.push(io_error(
                    &join_lossy(dir, name),
                    "remove stale temporary file",
                    e,
                )),
            }
        }
        Ok(DirCleanup {
            removed,
            subdirs: listing.subdirs,
            failed,
        })
    }
}

/// What [`Applier::cleanup_dir`] did in one directory.
struct DirCleanup {
    /// Temporary files removed.
    removed: usize,
    /// The names of its subdirectories, to clean next.
    subdirs: Vec<Vec<u8>>,
    /// The temporary files that could not be removed.
    failed: Vec<ApplyError>,
}

/// What [`Applier::cleanup_dir`] needs of a directory.
#[derive(Default)]
struct Listing {
    /// Non-directories with temporary names.
    temps: Vec<Vec<u8>>,
    /// Subdirectories (never symlinks).
    subdirs: Vec<Vec<u8>>,
}

fn list_dir(fd: &OwnedFd, dir: &RelPath) -> Result<Listing, ApplyError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let own = rfs::openat(fd, ".", flags, Mode::empty()).map_err(|e| io_error(dir, "open", e))?;
    let mut entries = rfs::Dir::new(own).map_err(|e| io_error(dir, "list", e))?;
    let mut listing = Listing::default();
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| io_error(dir, "list", e))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut kind = entry.file_type();
        if kind == FileType::Unknown {
            // Some filesystems do not fill d_type.
            kind = match rfs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => continue,
            };
        }
        if kind == FileType::Directory {
            listing.subdirs.push(name.to_vec());
        } else if is_temp_name(name) {
            listing.temps.push(name.to_vec());
        }
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cleanup_removes_stale_temps_only() {
        let (dir, ap) = default_setup();
        let stale = ".omirr.f.0123456789abcdef.tmp";
        fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        fs::write(dir.path().join(stale), b"half").expect("write");
        fs::write(dir.path().join("a/b").join(stale), b"half").expect("write");
        std::os::unix::fs::symlink("t", dir.path().join("a/.omirr.l.fedcba9876543210.tmp"))
            .expect("symlink");
        // Not ours: a user's file, and a directory with our pattern.
        fs::write(dir.path().join(".omirr.notes.tmp"), b"mine").expect("write");
        fs::create_dir(dir.path().join(".omirr.d.0000000000000000.tmp")).expect("mkdir");
        // Never descended through a symlink.
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join(stale), b"not ours").expect("write");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).expect("symlink");

        assert_eq!(ap.cleanup_stale_temps(&p("a/b")).expect("one dir"), 1);
        let done = ap.cleanup_stale_temps_tree(&[RelPath::root()]);
        assert_eq!(done.removed, 2);
        assert!(done.skipped.is_empty(), "{:?}", done.skipped);
        assert_eq!(
            names(dir.path()),
            [
                ".omirr.d.0000000000000000.tmp",
                ".omirr.notes.tmp",
                "a",
                "out"
            ]
        );
        assert_eq!(names(&dir.path().join("a")), ["b"]);
        assert!(outside.path().join(stale).exists());
    }

    #[test]
    fn cleanup_looks_only_inside_the_tops_and_skips_what_it_cannot_read() {
        let (dir, ap) = default_setup();
        let tag = "0123456789abcdef";
        let at = |rel: &str| dir.path().join(rel);
        for d in ["srv/www/a", "srv/www/locked", "etc", "proc"] {
            fs::create_dir_all(at(d)).expect("mkdir");
        }
        let inside = [
            format!("srv/www/.omirr.x.{tag}.tmp"),
            format!("srv/www/a/.omirr.y.{tag}.tmp"),
            // Made for the top itself, in the directory above it.
            format!("srv/.omirr.www.{tag}.tmp"),
            // A top that is a file.
            format!("etc/.omirr.hosts.{tag}.tmp"),
        ];
        let outside = [
            format!("proc/.omirr.z.{tag}.tmp"),
            format!(".omirr.srv.{tag}.tmp"),
            format!("srv/.omirr.other.{tag}.tmp"),
            format!("srv/.omirr.wwwx.{tag}.tmp"),
            format!("etc/.omirr.passwd.{tag}.tmp"),
        ];
        let locked_temp = format!("srv/www/locked/.omirr.l.{tag}.tmp");
        for f in inside.iter().chain(&outside).chain([&locked_temp]) {
            fs::write(at(f), b"half").expect("write");
        }
        fs::write(at("etc/hosts"), b"127.0.0.1 localhost").expect("write");

        // An unreadable directory: a mode that bars us, and for root
        // (whom modes do not bar) a file-system identity that is not root,
        // on the thread that cleans.
        let root = nix::unistd::geteuid().is_root();
        let nobody = nix::unistd::Uid::from_raw(65534);
        if root {
            for d in ["", "srv", "srv/www", "srv/www/a", "etc", "proc"] {
                nix::unistd::chown(&at(d), Some(nobody), None).expect("chown");
            }
        }
        fs::set_permissions(at("srv/www/locked"), fs::Permissions::from_mode(0o000))
            .expect("chmod");
        let tops = [
            p("srv/www"),
            p("etc/hosts"),
            p("srv/www/a"),
            p("absent/top"),
        ];
        let done = std::thread::scope(|s| {
            s.spawn(|| {
                if root {
                    nix::unistd::setfsuid(nobody);
                }
                ap.cleanup_stale_temps_tree(&tops)
            })
            .join()
            .expect("cleanup thread")
        });
        fs::set_permissions(at("srv/www/locked"), fs::Permissions::from_mode(0o755))
            .expect("chmod");

        for f in &inside {
            assert!(!at(f).exists(), "{f} was not removed");
        }
        for f in &outside {
            assert!(at(f).exists(), "{f}, outside the tops, was removed");
        }
        assert!(at(&locked_temp).exists());
        assert!(at("etc/hosts").exists());
        assert_eq!(done.removed, inside.len());
        assert_eq!(done.skipped.len(), 1, "{:?}", done.skipped);
        assert_eq!(
            done.skipped[0].to_string(),
            "cannot open directory srv/www/locked: Permission denied"
        );
    }
}
