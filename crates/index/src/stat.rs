//! The stat cache's key: what a file's `stat` must still say for the
//! scanner to trust the index's hash without reading the file again.

use crate::schema::StatTuple;
use serde::{Deserialize, Serialize};

/// The parts of a local `stat(2)` that change whenever a file's content
/// may have: a file whose `StatKey` equals the cached one is not re-hashed.
/// `ctime` is in it because `mtime` can be set back by anyone (`touch -d`,
/// `cp -p`), while `ctime` cannot. `dev` and `ino` also feed the inode
/// cache (see [`crate::Index::path_of_inode`]).
///
/// These are local facts: they never leave the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct StatKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl From<StatKey> for StatTuple {
    fn from(k: StatKey) -> StatTuple {
        (k.dev, k.ino, k.size, k.mtime_ns, k.ctime_ns)
    }
}

impl From<StatTuple> for StatKey {
    fn from((dev, ino, size, mtime_ns, ctime_ns): StatTuple) -> StatKey {
        StatKey {
            dev,
            ino,
            size,
            mtime_ns,
            ctime_ns,
        }
    }
}
