//! What a `stat` says, in the scan's terms: the stat key (the one
//! builder of an [`omirr_core::StatKey`], [`key_of`], which the applier's
//! guard and the sync engine use too), the ctime a change found is
//! stamped with, and the metadata.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use omirr_core::{Meta, StatKey, Timestamp};
use rustix::fs::FileType;

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// The stat key of what `st` describes: device, inode, size, and mtime
/// and ctime in nanoseconds since the epoch. The one place a
/// [`StatKey`] is built, so that the scan, the applier's guard and the
/// sync engine compare like with like.
// The field types of `Stat` differ between architectures (and are equal to
// the target types on some), hence the casts.
#[allow(clippy::unnecessary_cast)]
pub fn key_of(st: &rustix::fs::Stat) -> StatKey {
    StatKey {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        size: u64::try_from(st.st_size).unwrap_or(0),
        mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
        ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
    }
}

pub(super) fn ctime_of(st: &rustix::fs::Stat) -> Timestamp {
    Timestamp(u64::try_from(key_of(st).ctime_ns).unwrap_or(0))
}

/// The metadata of what `st` describes, with this host's names for its
/// owner and group.
pub(super) fn meta_of(st: &rustix::fs::Stat) -> Meta {
    crate::owners::with_names(Meta {
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime_ns: key_of(st).mtime_ns,
        ..Meta::default()
    })
}

pub(super) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// What messages call a file of type `kind`: the scan's issues and the
/// applier's errors.
pub(crate) fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "named pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown kind",
    }
}

/// The stat key of what is at `path`, without following a symlink.
pub fn lstat_key(path: &Path) -> io::Result<StatKey> {
    Ok(key_of(&rustix::fs::lstat(path)?))
}

/// The stat key of the open file `fd`.
pub fn fstat_key(fd: impl AsFd) -> io::Result<StatKey> {
    Ok(key_of(&rustix::fs::fstat(fd)?))
}
