//! The directories above the mirrored trees (see [`Applier::with_tops`]):
//! they are the host's, not the mirror's. The applier never changes,
//! removes or replaces one, and makes a missing one like its nearest
//! existing ancestor.

use std::os::fd::OwnedFd;

use super::error::{io_error, shown};
use super::Applier;
use super::ApplyError;
use super::Batch;
use omirr_core::{Action, Content, RelPath};
use rustix::fs::{self as rfs, Gid, Mode, Uid};

impl Applier {
    /// Whether `path` lies outside every mirrored tree (see
    /// [`Applier::with_tops`]): a directory above a top, which is the
    /// host's and never changed.
    pub(super) fn outside_tops(&self, path: &RelPath) -> bool {
        self.tops
            .as_ref()
            .is_some_and(|tops| !path.is_within_any(tops))
    }

    /// Gives the directory `fd`, just made at `path` above the mirrored
    /// trees, the mode and owner of its parent `parent` (the nearest
    /// existing ancestor: the walk makes the missing ones top down), and
    /// says so in the log.
    pub(super) fn like_parent(
        &self,
        parent: &OwnedFd,
        fd: &OwnedFd,
        path: &RelPath,
    ) -> Result<(), ApplyError> {
        let like = path.parent().unwrap_or_else(RelPath::root);
        let st = rfs::fstat(parent).map_err(|e| io_error(&like, "inspect", e))?;
        if self.options.set_owner {
            rfs::fchown(
                fd,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(|e| io_error(path, "set the owner of", e))?;
        }
        let mode = st.st_mode & 0o7777;
        rfs::fchmod(fd, Mode::from_raw_mode(mode))
            .map_err(|e| io_error(path, "set the mode of", e))?;
        tracing::info!(
            "created {} above the mirrored trees, with mode {mode:04o} and owner {}:{} as {} has",
            shown(path),
            st.st_uid,
            st.st_gid,
            shown(&like)
        );
        Ok(())
    }
}

impl Batch<'_> {
    /// An action on a directory above the mirrored trees (see
    /// [`Applier::with_tops`]): making one only makes sure it exists,
    /// removing one leaves it. `None` for any other action.
    pub(super) fn above_tops(&mut self, action: &Action) -> Option<Result<(), ApplyError>> {
        let path = action.path();
        if !self.ap.outside_tops(path) {
            return None;
        }
        match action {
            Action::MakeDir { .. } => {
                Some(self.ap.open_dir(path, Some(&mut self.touched)).map(|_| ()))
            }
            Action::Remove {
                was: Content::Dir, ..
            } => Some(Ok(())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;
    use omirr_core::Meta;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn directories_above_the_tops_are_never_changed_and_made_like_their_parent() {
        let (dir, ap) = default_setup();
        let ap = ap.with_tops(vec![p("home/alice/www"), p("opt/x")]);
        let at = |rel: &str| dir.path().join(rel);
        // The host's own /home: private, someone else's, old.
        let old = 1_500_000_000_000_000_000;
        let owner = if is_root() {
            1234
        } else {
            nix::unistd::geteuid().as_raw()
        };
        fs::create_dir(at("home")).expect("mkdir");
        if is_root() {
            nix::unistd::chown(&at("home"), Some(owner.into()), Some(4321.into())).expect("chown");
        }
        fs::set_permissions(at("home"), fs::Permissions::from_mode(0o711)).expect("chmod");
        let set_old = || {
            filetime::set_file_mtime(
                at("home"),
                filetime::FileTime::from_unix_time(1_500_000_000, 0),
            )
            .expect("mtime")
        };
        set_old();

        // What the resolver asks of a new host: the directories above the
        // top exist only because the top does (Meta::IMPLIED_DIR).
        let www = meta(0o750, T);
        let actions = vec![
            Action::MakeDir {
                path: p("home"),
                meta: Meta::IMPLIED_DIR,
            },
            Action::MakeDir {
                path: p("home/alice"),
                meta: Meta::IMPLIED_DIR,
            },
            Action::MakeDir {
                path: p("home/alice/www"),
                meta: www,
            },
            write("home/alice/www/index.html", b"hi", meta(0o644, T)),
        ];
        ap.apply(&actions, &mut Mem::with(&[b"hi"])).expect("apply");
        let mode = |rel: &str| fs::symlink_metadata(at(rel)).expect("stat").mode() & 0o7777;
        let ids = |rel: &str| {
            let m = fs::symlink_metadata(at(rel)).expect("stat");
            (m.uid(), m.gid())
        };
        assert_eq!(
            mode("home"),
            0o711,
            "an existing directory above a top was changed"
        );
        assert_eq!(mtime_ns(&at("home")), old);
        let gid = if is_root() { 4321 } else { ids("home").1 };
        assert_eq!(ids("home"), (owner, gid));
        // Made like its nearest existing ancestor.
        assert_eq!(mode("home/alice"), 0o711);
        assert_eq!(ids("home/alice"), (owner, gid));
        // The top itself is mirrored.
        assert_eq!(mode("home/alice/www"), 0o750);
        assert_eq!(mtime_ns(&at("home/alice/www")), T);
        assert_eq!(
            fs::read(at("home/alice/www/index.html")).expect("read"),
            b"hi"
        );

        // Nor are they removed when the top goes, nor fixed again.
        set_old();
        let actions = vec![
            Action::Remove {
                path: p("home/alice/www/index.html"),
                was: Content::File {
                    size: 2,
                    hash: h(b"hi"),
                },
            },
            Action::Remove {
                path: p("home/alice/www"),
                was: Content::Dir,
            },
            Action::Remove {
                path: p("home/alice"),
                was: Content::Dir,
            },
            Action::Remove {
                path: p("home"),
                was: Content::Dir,
            },
        ];
        ap.apply(&actions, &mut Mem::default()).expect("apply");
        assert!(!at("home/alice/www").exists());
        assert_eq!(mode("home/alice"), 0o711);
        assert_eq!(mode("home"), 0o711);
        assert_eq!(mtime_ns(&at("home")), old);
    }

    #[test]
    fn what_stands_above_a_top_instead_of_a_directory_is_never_replaced() {
        let (dir, ap) = default_setup();
        let ap = ap.with_tops(vec![p("home/alice/www"), p("opt/x")]);
        let at = |rel: &str| dir.path().join(rel);
        fs::write(at("opt"), b"a file where a directory is implied").expect("write");

        // What is there instead of an implied directory is not replaced.
        let err = ap
            .apply(
                &[Action::MakeDir {
                    path: p("opt"),
                    meta: Meta::IMPLIED_DIR,
                }],
                &mut Mem::default(),
            )
            .expect_err("a file above a top");
        assert!(
            matches!(err.error, ApplyError::NotADirectory { .. }),
            "{err}"
        );
        assert!(at("opt").is_file());
        // Nor is a symbolic link (/home -> /data/home): it is refused,
        // never followed, never removed.
        fs::create_dir(at("data")).expect("mkdir");
        std::os::unix::fs::symlink("data", at("srv")).expect("symlink");
        let ap = ap.with_tops(vec![p("srv/www")]);
        let err = ap
            .apply(
                &[Action::MakeDir {
                    path: p("srv"),
                    meta: Meta::IMPLIED_DIR,
                }],
                &mut Mem::default(),
            )
            .expect_err("a symlink above a top");
        assert!(
            matches!(err.error, ApplyError::SymlinkInPath { .. }),
            "{err}"
        );
        assert!(fs::symlink_metadata(at("srv")).expect("kept").is_symlink());
    }
}
