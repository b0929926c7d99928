//! What the scanner needs to know of the disk as it was: the
//! [`ScanBaseline`] trait (the persisted index implements it, in
//! `omirr_sync::record`; `mem.rs` holds its in-memory model).

use omirr_core::{Content, RelPath, StatKey, Xattrs};

#[cfg(doc)]
use omirr_core::Meta;

/// What a baseline knows about one path: its stat key when it was last
/// scanned (or written by the daemon), and the content and extended
/// attributes recorded then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// What `lstat` said then; a file whose stat key still matches (and
    /// was not racy) is not read again.
    pub key: StatKey,
    /// The content recorded then (for a file, its size and hash).
    pub content: Content,
    /// A file's extended attributes recorded then, which a matching stat
    /// key vouches for as it does for the content (the scan takes them
    /// instead of reading them); `None` where the baseline cannot say, and
    /// the scan reads them.
    pub xattrs: Option<Xattrs>,
    /// The key was taken while the file was racy ([`Found::racy`](super::Found::racy)): it
    /// proves nothing, and the next scan reads the file again.
    pub racy: bool,
}

/// A baseline's failure (e.g. a database read error), boxed so that the
/// trait stays object safe and free of the index's error type.
pub type BaselineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What the scanner needs to know about the previous state of the disk.
///
/// The persisted index implements this;
/// [`MemBaseline`](super::MemBaseline) is the in-memory model. Only paths
/// believed present on disk are known: tombstones and entries not yet
/// applied must not be returned.
pub trait ScanBaseline {
    /// What was recorded for `path`, if anything.
    fn known(&self, path: &RelPath) -> Result<Option<Known>, BaselineError>;

    /// The path last recorded for inode `ino` on device `dev` (any one, if
    /// it has several hard links).
    fn path_of_inode(&self, dev: u64, ino: u64) -> Result<Option<RelPath>, BaselineError>;

    /// Every path recorded for inode `ino` on device `dev`: the names of
    /// a hard-linked file that the index knows.
    fn paths_of_inode(&self, dev: u64, ino: u64) -> Result<Vec<RelPath>, BaselineError> {
        Ok(self.path_of_inode(dev, ino)?.into_iter().collect())
    }

    /// For a path the index holds as a live file: the hard link its
    /// entry names ([`Meta::link`]; `Some(None)`: none, it leads).
    /// `None` for anything else.
    fn recorded_link(&self, _path: &RelPath) -> Result<Option<Option<RelPath>>, BaselineError> {
        Ok(None)
    }

    /// Whether `path` is believed present on disk, stat key or not (a file
    /// written moments ago has none yet, and may vanish all the same).
    fn is_live(&self, path: &RelPath) -> Result<bool, BaselineError> {
        Ok(self.known(path)?.is_some())
    }

    /// Calls `f` with every known path strictly below `dir`. A callback
    /// rather than a list, so that an index of millions of paths can
    /// stream them.
    fn for_each_below(
        &self,
        dir: &RelPath,
        f: &mut dyn FnMut(&RelPath),
    ) -> Result<(), BaselineError>;
}
