//! Reading and writing files that decide what this host trusts.
//!
//! The Distfile, the peers file and the TLS key say what this host mirrors
//! and whom it believes. Whoever can write one of them, or replace it,
//! controls the host, so ([`read_secure`], [`check_secure`]) refuse rather
//! than read a file
//!
//! - that group or others can write;
//! - that is owned by anyone but root or the user omirrd runs as (the
//!   owner can always make it writable);
//! - that lies in a directory, or below one, that is owned by anyone else
//!   or that group or others can write, unless the directory has the
//!   sticky bit (`/tmp`): there only an entry's owner (checked) or the
//!   directory's owner (checked) can rename or remove it. Every directory
//!   of the file's real path is checked, up to `/`, as sshd's StrictModes
//!   does; symbolic links on the way are resolved first, so what is
//!   checked is where the file really is.
//!
//! The checks of the file are made with `fstat` on the descriptor that is
//! then read, so the file cannot be swapped between the check and the
//! read; its real path is the one the kernel gives for that descriptor.
//!
//! Writing such files goes through [`write_atomic`] (or [`write_new`]): a
//! temporary file created with its final mode, synced, then renamed into
//! place, so a crash leaves the old file or the new one, never half of
//! either, and the content is never briefly readable with a wider mode.

use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::OFlag;

/// Permission classes other than the owner, as chmod(1) names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The file's group only.
    Group,
    /// Everyone else only.
    Others,
    /// Both the group and everyone else.
    GroupAndOthers,
}

impl Who {
    /// Which of group and others have any of `bits` (given as owner-less
    /// `rwx` bits, e.g. `0o2` for write) in `mode`; `None` if neither.
    pub fn having(mode: u32, bits: u32) -> Option<Who> {
        let group = mode & (bits << 3) != 0;
        let others = mode & bits != 0;
        match (group, others) {
            (true, true) => Some(Who::GroupAndOthers),
            (true, false) => Some(Who::Group),
            (false, true) => Some(Who::Others),
            (false, false) => None,
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Who::Group => "group",
            Who::Others => "others",
            Who::GroupAndOthers => "group and others",
        })
    }
}

/// What a path is when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A type the standard library does not name.
    Unknown,
}

impl FileKind {
    fn of(file_type: fs::FileType) -> FileKind {
        if file_type.is_dir() {
            FileKind::Directory
        } else if file_type.is_symlink() {
            FileKind::Symlink
        } else if file_type.is_fifo() {
            FileKind::Fifo
        } else if file_type.is_socket() {
            FileKind::Socket
        } else if file_type.is_char_device() {
            FileKind::CharDevice
        } else if file_type.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Unknown
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a named pipe",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Unknown => "not a file of a known kind",
        })
    }
}

/// Why a protected file could not be read or written. Every message names
/// the path and, where the administrator can fix something, says how.
#[derive(Debug, thiserror::Error)]
pub enum SecureFileError {
    /// Someone other than the owner may write the file.
    #[error(
        "{} is writable by {who} (mode {mode:04o}); anyone who can write it controls what this host mirrors and whom it trusts. Fix: chmod go-w {}",
        path.display(),
        path.display()
    )]
    Writable {
        /// The file.
        path: PathBuf,
        /// Who besides the owner may write it.
        who: Who,
        /// Its permission bits.
        mode: u32,
    },

    /// The file belongs to a user other than root or the daemon's.
    #[error(
        "{} is owned by {}; omirrd trusts only files owned by root or by the user it runs as ({}), since a file's owner can always change it. Fix: chown {} {}",
        path.display(),
        user(*uid),
        fix_owner(*daemon_uid),
        fix_owner(*daemon_uid),
        path.display()
    )]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// The user the daemon runs as.
        daemon_uid: u32,
    },

    /// A directory on the way to the file belongs to a user other than
    /// root or the daemon's.
    #[error(
        "{} lies in {}, which is owned by {}; whoever owns a directory can replace what is in it. Fix: chown {} {}",
        path.display(),
        dir.display(),
        user(*uid),
        fix_owner(*daemon_uid),
        dir.display()
    )]
    DirectoryOwner {
        /// The file.
        path: PathBuf,
        /// The directory with the wrong owner.
        dir: PathBuf,
        /// The directory's owner.
        uid: u32,
        /// The user the daemon runs as.
        daemon_uid: u32,
    },

    /// A directory on the way to the file is writable by others and not
    /// sticky, so they could swap the file.
    #[error(
        "{} lies in {}, which is writable by {who} (mode {mode:04o}) without the sticky bit; whoever can write a directory can replace what is in it. Fix: chmod go-w {}",
        path.display(),
        dir.display(),
        dir.display()
    )]
    DirectoryWritable {
        /// The file.
        path: PathBuf,
        /// The writable directory.
        dir: PathBuf,
        /// Who besides the owner may write it.
        who: Who,
        /// The directory's permission bits.
        mode: u32,
    },

    /// The path is not a regular file.
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: FileKind,
    },

    /// A file that must be created new is already there.
    #[error("{} already exists", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },

    /// The path ends in `..` or `/`, so there is no file name to use.
    #[error("{} names no file", path.display())]
    NoFileName {
        /// The path.
        path: PathBuf,
    },

    /// The reason is part of the message (it is what the administrator
    /// needs); `error` is deliberately not the `source()`, so that error
    /// chains do not print it twice.
    #[error("cannot {action} {}: {}", path.display(), describe(error))]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done to it, as a verb ("read", "replace").
        action: &'static str,
        /// What the operating system said.
        error: io::Error,
    },
}

impl SecureFileError {
    fn io(action: &'static str, path: &Path, error: io::Error) -> Self {
        SecureFileError::Io {
            path: path.to_path_buf(),
            action,
            error,
        }
    }

    /// The kind of the underlying I/O error, if this is one; lets callers
    /// treat a missing file differently from a refused one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            SecureFileError::Io { error, .. } => Some(error.kind()),
            _ => None,
        }
    }
}

/// The system's description of an I/O error, without Rust's
/// "(os error N)" suffix: "No such file or directory". Every message
/// about a file gives its reason this way (the applier's and the TLS
/// identity's too).
pub fn describe(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => error.to_string(),
    }
}

/// A user as messages show it: its name and number, or the number alone.
fn user(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// Whom to give a refused file or directory to: root, or the daemon's
/// user when it is not root.
fn fix_owner(daemon_uid: u32) -> String {
    if daemon_uid == 0 {
        return "root".to_string();
    }
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(daemon_uid)) {
        Ok(Some(u)) => u.name,
        _ => daemon_uid.to_string(),
    }
}

/// Whether `uid` may own what this host trusts: root or the daemon's user.
fn trusted_owner(uid: u32, daemon_uid: u32) -> bool {
    uid == 0 || uid == daemon_uid
}

/// The path of the open file `file` as the kernel knows it (symbolic links
/// resolved), or, without /proc, `path` resolved.
fn real_path(file: &File, path: &Path) -> Result<PathBuf, SecureFileError> {
    use std::os::fd::AsRawFd;
    let proc = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    match fs::read_link(&proc) {
        Ok(real) if real.is_absolute() => Ok(real),
        _ => fs::canonicalize(path).map_err(|e| SecureFileError::io("resolve", path, e)),
    }
}

/// Checks every directory of `real` (the real path of `path`) up to `/`:
/// owned by root or the daemon's user, and not writable by group or
/// others unless sticky. See the module documentation.
fn check_directories(path: &Path, real: &Path, daemon_uid: u32) -> Result<(), SecureFileError> {
    use std::os::unix::fs::MetadataExt;
    for dir in real.ancestors().skip(1) {
        let meta = fs::symlink_metadata(dir).map_err(|e| SecureFileError::io("inspect", dir, e))?;
        if !trusted_owner(meta.uid(), daemon_uid) {
            return Err(SecureFileError::DirectoryOwner {
                path: path.to_path_buf(),
                dir: dir.to_path_buf(),
                uid: meta.uid(),
                daemon_uid,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o1000 == 0 {
            if let Some(who) = Who::having(mode, 0o2) {
                return Err(SecureFileError::DirectoryWritable {
                    path: path.to_path_buf(),
                    dir: dir.to_path_buf(),
                    who,
                    mode,
                });
            }
        }
    }
    Ok(())
}

/// Opens `path` and checks, on the open descriptor, that it is a regular
/// file that neither group nor others can write, owned by root or the
/// daemon's user, in directories only they can change (see the module
/// documentation). Returns the file and its permission bits.
fn open_checked(path: &Path) -> Result<(File, u32), SecureFileError> {
    use std::os::unix::fs::MetadataExt;
    // O_NONBLOCK so that a FIFO planted at the path cannot hang the daemon
    // in open(); it has no effect on reading a regular file.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| SecureFileError::io("read", path, e))?;
    // File::metadata is fstat on this descriptor: what we check is what we
    // read, even if the path is replaced meanwhile.
    let meta = file
        .metadata()
        .map_err(|e| SecureFileError::io("inspect", path, e))?;
    if !meta.file_type().is_file() {
        return Err(SecureFileError::NotRegular {
            path: path.to_path_buf(),
            kind: FileKind::of(meta.file_type()),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if let Some(who) = Who::having(mode, 0o2) {
        return Err(SecureFileError::Writable {
            path: path.to_path_buf(),
            who,
            mode,
        });
    }
    let daemon_uid = nix::unistd::geteuid().as_raw();
    if !trusted_owner(meta.uid(), daemon_uid) {
        return Err(SecureFileError::Owner {
            path: path.to_path_buf(),
            uid: meta.uid(),
            daemon_uid,
        });
    }
    check_directories(path, &real_path(&file, path)?, daemon_uid)?;
    Ok((file, mode))
}

/// Checks that `path` is a regular file that neither group nor others can
/// write, owned and placed as the module documentation says, without
/// reading it.
pub fn check_secure(path: &Path) -> Result<(), SecureFileError> {
    open_checked(path).map(|_| ())
}

/// Reads a configuration, peers or key file, refusing it if it is not a
/// regular file, if group or others can write it, or if someone other than
/// root or the daemon's user owns it or a directory above it (see the
/// module documentation).
pub fn read_secure(path: &Path) -> Result<Vec<u8>, SecureFileError> {
    read_secure_with_mode(path).map(|(data, _)| data)
}

/// Like [`read_secure`], and also returns the permission bits seen on the
/// descriptor that was read, for callers with stricter rules (a private
/// key must not even be readable by others).
pub fn read_secure_with_mode(path: &Path) -> Result<(Vec<u8>, u32), SecureFileError> {
    let (mut file, mode) = open_checked(path)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| SecureFileError::io("read", path, e))?;
    Ok((data, mode))
}

/// Replaces `path` with `data`, atomically, leaving it with permission
/// bits `mode` whatever the umask. Readers see the old content or the new,
/// never a mix, and after a crash the file is one or the other.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), SecureFileError> {
    write_via_temp(path, data, mode, |tmp| {
        fs::rename(tmp, path).map_err(|e| SecureFileError::io("replace", path, e))
    })
}

/// Like [`write_atomic`], but fails with [`SecureFileError::Exists`] if
/// `path` already exists, even if it is created concurrently: for files
/// such as a private key, which must never be overwritten by accident.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), SecureFileError> {
    write_via_temp(path, data, mode, |tmp| {
        // link(2) refuses an existing target, unlike rename(2); the
        // temporary name is removed afterwards.
        match fs::hard_link(tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(SecureFileError::Exists {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(SecureFileError::io("create", path, e)),
        }
    })
}

/// Distinguishes temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `data` to a synced temporary file next to `path`, lets `install`
/// move it into place, then syncs the directory so the new name is
/// durable. The temporary file is removed on every path that leaves it.
fn write_via_temp(
    path: &Path,
    data: &[u8],
    mode: u32,
    install: impl FnOnce(&Path) -> Result<(), SecureFileError>,
) -> Result<(), SecureFileError> {
    let name = path
        .file_name()
        .ok_or_else(|| SecureFileError::NoFileName {
            path: path.to_path_buf(),
        })?;
    // Same directory as the target, so rename is atomic (one filesystem).
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };

    let (tmp, file) = create_temp(dir, name, mode)?;
    let result = fill(&file, &tmp, data, mode).and_then(|()| {
        drop(file);
        install(&tmp)
    });
    // After a rename the temporary name is gone; after a link it is a
    // second name to drop; after a failure it is litter. Remove it in all
    // cases and ignore "not found".
    let _ = fs::remove_file(&tmp);
    result?;

    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SecureFileError::io("sync directory", dir, e))
}

/// Creates a fresh temporary file (O_EXCL) in `dir` with `mode`.
fn create_temp(
    dir: &Path,
    name: &std::ffi::OsStr,
    mode: u32,
) -> Result<(PathBuf, File), SecureFileError> {
    let pid = std::process::id();
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{pid}.{n}.tmp"));
        let tmp = dir.join(tmp_name);
        // The mode is applied at creation so the content is never visible
        // with wider permissions than asked, even for a moment.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            // Left over from a crashed process with our pid: try another.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(SecureFileError::io("create temporary file", &tmp, e)),
        }
    }
}

/// Sets the exact mode (the umask may have narrowed it), writes and syncs.
fn fill(mut file: &File, tmp: &Path, data: &[u8], mode: u32) -> Result<(), SecureFileError> {
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|e| SecureFileError::io("set the mode of", tmp, e))?;
    file.write_all(data)
        .map_err(|e| SecureFileError::io("write", tmp, e))?;
    file.sync_all()
        .map_err(|e| SecureFileError::io("sync", tmp, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_mode(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, b"content\n").expect("write");
        fs::set_permissions(&path, Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn owner_writable_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        for mode in [0o644, 0o600, 0o400, 0o755] {
            let path = file_with_mode(dir.path(), &format!("f{mode:o}"), mode);
            assert_eq!(read_secure(&path).expect("readable"), b"content\n");
            check_secure(&path).expect("secure");
            let (_, seen) = read_secure_with_mode(&path).expect("readable");
            assert_eq!(seen, mode);
        }
    }

    #[test]
    fn group_or_other_writable_files_are_refused_with_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            (0o664, Who::Group, "group"),
            (0o646, Who::Others, "others"),
            (0o666, Who::GroupAndOthers, "group and others"),
            (0o620, Who::Group, "group"),
        ];
        for (mode, who, words) in cases {
            let path = file_with_mode(dir.path(), &format!("f{mode:o}"), mode);
            let err = read_secure(&path).expect_err("must be refused");
            match &err {
                SecureFileError::Writable {
                    path: p,
                    who: w,
                    mode: m,
                } => {
                    assert_eq!(p, &path);
                    assert_eq!(*w, who);
                    assert_eq!(*m, mode);
                }
                other => panic!("wrong error for {mode:o}: {other:?}"),
            }
            let shown = path.display();
            assert_eq!(
                err.to_string(),
                format!(
                    "{shown} is writable by {words} (mode 0{mode:o}); anyone who can write it \
                     controls what this host mirrors and whom it trusts. Fix: chmod go-w {shown}"
                )
            );
            assert!(matches!(
                check_secure(&path),
                Err(SecureFileError::Writable { .. })
            ));
        }
    }

    #[test]
    fn directories_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_secure(dir.path()).expect_err("a directory");
        assert!(
            matches!(
                err,
                SecureFileError::NotRegular {
                    kind: FileKind::Directory,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{} is a directory, not a regular file",
                dir.path().display()
            )
        );
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pipe");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = check_secure(&path).expect_err("a fifo");
        assert!(
            matches!(
                err,
                SecureFileError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("omirrd.conf");
        let err = read_secure(&path).expect_err("missing");
        assert_eq!(err.io_kind(), Some(io::ErrorKind::NotFound));
        assert_eq!(
            err.to_string(),
            format!("cannot read {}: No such file or directory", path.display())
        );
    }

    #[test]
    fn write_atomic_sets_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"secret", 0o600).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"secret");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(dir_entries(dir.path()), ["key.pem"]);

        // Replacing takes the new mode and content; still no litter.
        write_atomic(&path, b"public", 0o644).expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"public");
        assert_eq!(mode_of(&path), 0o644);
        assert_eq!(dir_entries(dir.path()), ["key.pem"]);
    }

    #[test]
    fn write_atomic_mode_is_not_narrowed_by_umask() {
        // The umask is process-wide; other tests only ever ask for modes
        // within 0o644, which this umask does not affect, so setting it
        // here cannot change their outcome.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wide");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let result = write_atomic(&path, b"x", 0o644);
        nix::sys::stat::umask(old);
        result.expect("write");
        assert_eq!(mode_of(&path), 0o644);
    }

    #[test]
    fn write_atomic_failure_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Renaming a file over a non-empty directory fails after the
        // temporary file was written.
        let target = dir.path().join("occupied");
        fs::create_dir(&target).expect("mkdir");
        fs::write(target.join("inside"), b"x").expect("write");
        let err = write_atomic(&target, b"data", 0o644).expect_err("must fail");
        assert!(
            err.to_string().contains(&target.display().to_string()),
            "{err}"
        );
        assert_eq!(dir_entries(dir.path()), ["occupied"]);
    }

    #[test]
    fn write_atomic_into_missing_directory_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent").join("f");
        let err = write_atomic(&path, b"data", 0o644).expect_err("must fail");
        assert_eq!(err.io_kind(), Some(io::ErrorKind::NotFound));
        assert!(
            err.to_string().starts_with(&format!(
                "cannot create temporary file {}/",
                dir.path().join("absent").display()
            )),
            "{err}"
        );
    }

    #[test]
    fn write_new_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        write_new(&path, b"first", 0o600).expect("create");
        assert_eq!(mode_of(&path), 0o600);
        let err = write_new(&path, b"second", 0o600).expect_err("exists");
        assert!(matches!(err, SecureFileError::Exists { .. }), "{err:?}");
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert_eq!(dir_entries(dir.path()), ["key.pem"]);
    }

    #[test]
    fn who_names_the_classes() {
        assert_eq!(Who::having(0o644, 0o2), None);
        assert_eq!(Who::having(0o664, 0o2), Some(Who::Group));
        assert_eq!(Who::having(0o646, 0o2), Some(Who::Others));
        assert_eq!(Who::having(0o666, 0o2), Some(Who::GroupAndOthers));
        assert_eq!(Who::having(0o640, 0o7), Some(Who::Group));
        assert_eq!(Who::having(0o600, 0o7), None);
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn chown(path: &Path, uid: u32) {
        nix::unistd::chown(path, Some(uid.into()), None).expect("chown");
    }

    #[test]
    fn files_owned_by_another_user_are_refused_with_advice() {
        if !is_root() {
            eprintln!("skipped: only root can give a file away");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file_with_mode(dir.path(), "omirrd.conf", 0o644);
        chown(&path, 1234);
        let err = read_secure(&path).expect_err("someone else's file");
        assert!(
            matches!(&err, SecureFileError::Owner { path: p, uid: 1234, daemon_uid: 0 } if p == &path),
            "{err:?}"
        );
        let shown = path.display();
        assert_eq!(
            err.to_string(),
            format!(
                "{shown} is owned by uid 1234; omirrd trusts only files owned by root or by the \
                 user it runs as (root), since a file's owner can always change it. \
                 Fix: chown root {shown}"
            )
        );
        // Root's own file, and the daemon user's, are trusted.
        chown(&path, 0);
        read_secure(&path).expect("root's file");
    }

    #[test]
    fn files_in_directories_others_can_change_are_refused_with_advice() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("etc");
        fs::create_dir(&dir).expect("mkdir");
        let path = file_with_mode(&dir, "peers", 0o644);
        let shown = (path.display(), dir.display());
        for (mode, who) in [
            (0o777, "group and others"),
            (0o775, "group"),
            (0o757, "others"),
        ] {
            fs::set_permissions(&dir, Permissions::from_mode(mode)).expect("chmod");
            let err = read_secure(&path).expect_err("a writable directory");
            assert!(
                matches!(&err, SecureFileError::DirectoryWritable { dir: d, mode: m, .. } if d == &dir && *m == mode),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "{} lies in {}, which is writable by {who} (mode 0{mode:o}) without the \
                     sticky bit; whoever can write a directory can replace what is in it. \
                     Fix: chmod go-w {}",
                    shown.0, shown.1, shown.1
                )
            );
        }
        // Sticky, as /tmp: only the file's owner may replace it there.
        fs::set_permissions(&dir, Permissions::from_mode(0o1777)).expect("chmod");
        read_secure(&path).expect("in a sticky directory");

        // A symbolic link from a safe place does not hide where the file is.
        let safe = base.path().join("safe");
        fs::create_dir(&safe).expect("mkdir");
        std::os::unix::fs::symlink(&path, safe.join("peers")).expect("symlink");
        fs::set_permissions(&dir, Permissions::from_mode(0o777)).expect("chmod");
        assert!(matches!(
            read_secure(&safe.join("peers")),
            Err(SecureFileError::DirectoryWritable { dir: d, .. }) if d == dir
        ));
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
        read_secure(&safe.join("peers")).expect("a safe place again");

        if !is_root() {
            eprintln!("skipped the owner checks: only root can give a directory away");
            return;
        }
        // A directory further up, owned by someone else.
        chown(base.path(), 1234);
        let err = check_secure(&path).expect_err("someone else's directory");
        assert!(
            matches!(&err, SecureFileError::DirectoryOwner { dir: d, uid: 1234, .. } if d == base.path()),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{} lies in {}, which is owned by uid 1234; whoever owns a directory can \
                 replace what is in it. Fix: chown root {}",
                shown.0,
                base.path().display(),
                base.path().display()
            )
        );
        chown(base.path(), 0);
        check_secure(&path).expect("root's again");
    }
}
