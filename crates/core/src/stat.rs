//! The stat key: what a file's `stat` must still say for a hash recorded
//! earlier to stand without reading the file again.
//!
//! A plain value: `omirr-fs` makes it from a `stat` (its one builder is
//! `omirr_fs::scan::key_of`), `omirr-index` stores it (the stat cache and
//! the inode cache), and [`StatKey::unchanged`] is the rule both the
//! scanner and the applier's guard compare with.

use serde::{Deserialize, Serialize};

/// The parts of a local `stat(2)` that change whenever a file's content
/// may have: a file whose `StatKey` equals the cached one is not re-hashed.
/// `ctime` is in it because `mtime` can be set back by anyone (`touch -d`,
/// `cp -p`), while `ctime` cannot. `dev` and `ino` also feed the index's
/// inode cache (`omirr_index::Index::path_of_inode`).
///
/// These are local facts: they never leave the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct StatKey {
    /// The device number (`st_dev`). [`StatKey::unchanged`] ignores it.
    pub dev: u64,
    /// The inode number (`st_ino`).
    pub ino: u64,
    /// The size in bytes (`st_size`).
    pub size: u64,
    /// The modification time (`st_mtime`), nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// The status change time (`st_ctime`), nanoseconds since the epoch.
    pub ctime_ns: i64,
}

impl StatKey {
    /// Whether a file with key `self` on an earlier scan is still
    /// unchanged if it has key `now`: same inode, size, mtime and ctime.
    ///
    /// The device number is deliberately not compared: some filesystems
    /// (btrfs subvolumes, NFS, overlayfs) get a different one after a
    /// reboot, which would force a full re-hash; an inode number with the
    /// same ctime to the nanosecond on another device is the same data
    /// restored, not a different file.
    pub fn unchanged(&self, now: &StatKey) -> bool {
        self.ino == now.ino
            && self.size == now.size
            && self.mtime_ns == now.mtime_ns
            && self.ctime_ns == now.ctime_ns
    }
}

/// The fields in declaration order: how the index's stat table stores a
/// key (`(dev, ino, size, mtime_ns, ctime_ns)`).
impl From<StatKey> for (u64, u64, u64, i64, i64) {
    fn from(k: StatKey) -> (u64, u64, u64, i64, i64) {
        (k.dev, k.ino, k.size, k.mtime_ns, k.ctime_ns)
    }
}

impl From<(u64, u64, u64, i64, i64)> for StatKey {
    fn from((dev, ino, size, mtime_ns, ctime_ns): (u64, u64, u64, i64, i64)) -> StatKey {
        StatKey {
            dev,
            ino,
            size,
            mtime_ns,
            ctime_ns,
        }
    }
}
