//! Extended attributes on this host's disk: which ones omirr mirrors,
//! reading them for the scan and setting them for the applier.
//!
//! Mirrored, by class ([`Class`]):
//!
//! - `user.*`, always;
//! - the POSIX ACLs, `system.posix_acl_access` and
//!   `system.posix_acl_default` (a directory's default ACL): they are
//!   extended attributes to the kernel, with a binary value that does not
//!   depend on the host (users and groups by number);
//! - `security.*` and `trusted.*`, only when the daemon runs as root:
//!   others cannot read `trusted.*` or set either.
//!
//! Other names (the rest of `system.*`, unknown namespaces) are never
//! read, set or removed. Which classes a path mirrors on this host is its
//! install options' business ([`crate::owners::MetaRules`]: `noxattrs`,
//! `noacls`).
//!
//! Symbolic links carry none: Linux refuses `user.*` on them, and a
//! link's attributes are not what an administrator means to mirror.

use omirr_core::Xattrs;
use rustix::fd::{AsFd, BorrowedFd};
use rustix::io::Errno;
use std::io;
use std::sync::OnceLock;

/// The attribute that holds a file's or directory's access ACL.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// The attribute that holds a directory's default ACL, which new entries
/// in it inherit.
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// What kind of attribute a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `user.*`.
    User,
    /// A POSIX ACL.
    Acl,
    /// `security.*` or `trusted.*`: root only.
    Privileged,
}

/// The class of an attribute name; `None` for one omirr never touches.
pub fn class(name: &[u8]) -> Option<Class> {
    if name.starts_with(b"user.") {
        Some(Class::User)
    } else if name == ACL_ACCESS || name == ACL_DEFAULT {
        Some(Class::Acl)
    } else if name.starts_with(b"security.") || name.starts_with(b"trusted.") {
        Some(Class::Privileged)
    } else {
        None
    }
}

/// Whether this process handles `name` at all: a known class, and root
/// for the privileged ones.
pub fn handled(name: &[u8]) -> bool {
    match class(name) {
        Some(Class::Privileged) => is_root(),
        Some(_) => true,
        None => false,
    }
}

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| nix::unistd::geteuid().is_root())
}

/// Whether an error means "this filesystem or object has no extended
/// attributes", which is an empty set, not a failure.
fn unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP
}

/// The handled attributes of `name` in `dir`, not following a symlink.
/// Read through `/proc/self/fd`, so that the path is resolved from the
/// directory already opened (no parent can be swapped underneath).
pub fn read_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Xattrs> {
    use rustix::fd::AsRawFd;
    static PROC: OnceLock<bool> = OnceLock::new();
    if !*PROC.get_or_init(|| std::path::Path::new("/proc/self/fd").is_dir()) {
        // No /proc: the object itself, opened without following a
        // symlink and without blocking on a FIFO.
        let flags = rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::NONBLOCK
            | rustix::fs::OFlags::NOCTTY
            | rustix::fs::OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir, os(name), flags, rustix::fs::Mode::empty())?;
        return read_fd(fd.as_fd());
    }
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&path);
    read_with(
        || rustix::fs::llistxattr_query(path),
        |buf| rustix::fs::llistxattr(path, buf),
        |n, buf| rustix::fs::lgetxattr(path, n, buf),
    )
}

/// The handled attributes of an open file or directory.
pub fn read_fd(fd: BorrowedFd<'_>) -> io::Result<Xattrs> {
    read_with(
        || rustix::fs::flistxattr_query(fd),
        |buf| rustix::fs::flistxattr(fd, buf),
        |n, buf| rustix::fs::fgetxattr(fd, n, buf),
    )
}

/// The largest list of names and the largest value Linux keeps.
const LIST_MAX: usize = 64 * 1024;

fn read_with(
    query: impl Fn() -> rustix::io::Result<usize>,
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&std::ffi::CStr, &mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Xattrs> {
    // Most files have none: one call that asks only the list's size
    // costs no buffer. A list grown between the two calls (ERANGE) is
    // read with the largest buffer.
    let size = match query() {
        Ok(0) => return Ok(Xattrs::EMPTY),
        Ok(n) => n,
        Err(e) if unsupported(e) => return Ok(Xattrs::EMPTY),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size.min(LIST_MAX)];
    let n = match list(&mut names) {
        Ok(n) => n,
        Err(Errno::RANGE) => {
            names = vec![0u8; LIST_MAX];
            list(&mut names)?
        }
        Err(e) if unsupported(e) => return Ok(Xattrs::EMPTY),
        Err(e) => return Err(e.into()),
    };
    let mut pairs = Vec::new();
    let mut value = Vec::new();
    for name in names[..n.min(names.len())].split(|&b| b == 0) {
        if name.is_empty() || !handled(name) {
            continue;
        }
        let Ok(cname) = std::ffi::CString::new(name) else {
            continue;
        };
        value.resize(Xattrs::MAX_VALUE, 0);
        match get(&cname, &mut value) {
            Ok(len) => pairs.push((name.to_vec(), value[..len.min(value.len())].to_vec())),
            // Removed since the list was read.
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Xattrs::new(pairs).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

fn os(name: &[u8]) -> &std::ffi::OsStr {
    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name)
}

/// Makes the handled attributes of `fd` that `mirrored` accepts exactly
/// those of `want` that it accepts: sets what differs, removes what
/// `want` lacks. Attributes `mirrored` refuses are left as they are.
pub fn set_fd(
    fd: BorrowedFd<'_>,
    want: &Xattrs,
    mirrored: &dyn Fn(&[u8]) -> bool,
) -> io::Result<()> {
    let keep = |n: &[u8]| handled(n) && mirrored(n);
    let want = want.filtered(keep);
    let have = read_fd(fd)?.filtered(keep);
    if have == want {
        return Ok(());
    }
    for (name, _) in have.iter() {
        if want.get(name).is_none() {
            match rustix::fs::fremovexattr(fd.as_fd(), os(name)) {
                Ok(()) | Err(Errno::NODATA) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    for (name, value) in want.iter() {
        if have.get(name) != Some(value) {
            rustix::fs::fsetxattr(fd.as_fd(), os(name), value, rustix::fs::XattrFlags::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_names() {
        assert_eq!(class(b"user.comment"), Some(Class::User));
        assert_eq!(class(ACL_ACCESS), Some(Class::Acl));
        assert_eq!(class(ACL_DEFAULT), Some(Class::Acl));
        assert_eq!(class(b"trusted.x"), Some(Class::Privileged));
        assert_eq!(class(b"security.capability"), Some(Class::Privileged));
        assert_eq!(class(b"system.nfs4_acl"), None);
        assert_eq!(class(b"users.x"), None);
        assert!(!handled(b"system.data"));
    }

    /// Reads what was set, through a directory descriptor and through
    /// the file's own, and `set_fd` removes and replaces. Skipped, saying
    /// why, where the test's filesystem keeps no `user.*` attributes.
    #[test]
    fn set_then_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, "x").expect("write");
        let file = std::fs::File::open(&path).expect("open");
        match rustix::fs::fsetxattr(&file, "user.probe", b"1", rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            Err(e) => {
                eprintln!(
                    "SKIP: {} keeps no user.* attributes: {e}",
                    dir.path().display()
                );
                return;
            }
        }
        let want = Xattrs::new(vec![
            (b"user.a".to_vec(), b"one".to_vec()),
            (b"user.b".to_vec(), Vec::new()),
        ])
        .expect("xattrs");
        set_fd(file.as_fd(), &want, &|_| true).expect("set");
        assert_eq!(
            read_fd(file.as_fd()).expect("read"),
            want,
            "user.probe removed"
        );
        let d = std::fs::File::open(dir.path()).expect("open dir");
        assert_eq!(read_at(d.as_fd(), b"f").expect("read at"), want);
        // Only user.a is this host's to change: user.b stays.
        let only_a = Xattrs::new(vec![(b"user.a".to_vec(), b"two".to_vec())]).expect("xattrs");
        set_fd(file.as_fd(), &only_a, &|n| n == b"user.a").expect("set a");
        let got = read_fd(file.as_fd()).expect("read");
        assert_eq!(got.get(b"user.a"), Some(&b"two"[..]));
        assert_eq!(got.get(b"user.b"), Some(&b""[..]));
    }
}
