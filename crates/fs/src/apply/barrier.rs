//! Durability: how a batch's barriers flush what it wrote ([`Barrier`]),
//! barrier 1 for the staged files before their renames and barrier 2 for
//! the directories and metadata at the end (see
//! [`Applier::apply`](super::Applier::apply)).

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use super::error::io_error;
use super::stage::Staged;
use super::ApplyError;
use super::Batch;
use omirr_core::RelPath;
use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

/// How the applier makes a batch durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barrier {
    /// One `syncfs(2)` on the root's filesystem for each barrier. One
    /// flush however many files the batch holds; it also flushes
    /// unrelated dirty data on the same filesystem.
    Syncfs,
    /// `fsync(2)` on each new file (issued from a few threads at once),
    /// then on each directory whose entries or times changed and each
    /// file whose metadata changed. Touches only our own inodes.
    Fsync,
}

/// Batches of at most this many actions are flushed with fsyncs of their
/// own files and directories, whatever
/// [`ApplyOptions::barrier`](super::ApplyOptions::barrier) says.
pub(super) const FSYNC_BATCH_MAX: usize = 16;

/// Threads issuing a barrier's fsyncs at once.
const FSYNC_THREADS: usize = 8;

impl Batch<'_> {
    /// Barrier 1: the staged files' data and metadata reach the disk.
    pub(super) fn barrier_files(&self, staged: &[Staged]) -> Result<(), ApplyError> {
        match self.barrier {
            Barrier::Syncfs => syncfs(&self.ap.root),
            Barrier::Fsync => {
                let jobs: Vec<(&File, &RelPath)> = staged
                    .iter()
                    .filter_map(|s| s.file.as_ref().map(|f| (f, &s.path)))
                    .collect();
                fsync_parallel(&jobs)
            }
        }
    }

    /// Step 5: barrier 2, for the directories (and in fsync mode the
    /// metadata) the batch changed.
    pub(super) fn final_barrier(&self) -> Result<(), ApplyError> {
        if self.touched.is_empty() && self.meta_changed.is_empty() && self.dir_times.is_empty() {
            return Ok(());
        }
        if self.barrier == Barrier::Syncfs {
            return syncfs(&self.ap.root);
        }
        let all: BTreeSet<&RelPath> = self
            .touched
            .iter()
            .chain(self.meta_changed.iter())
            .chain(self.dir_times.keys())
            .collect();
        for path in all {
            if path.is_root() {
                rfs::fsync(&self.ap.root).map_err(|e| io_error(path, "sync", e))?;
                continue;
            }
            // Gone or replaced since: its parent's flush records that.
            let Ok((dir, name)) = self.ap.parent(path, "sync", None) else {
                continue;
            };
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
            let fd = match rfs::openat(&dir, name, flags | OFlags::CLOEXEC, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::LOOP) => continue,
                Err(e) => return Err(io_error(path, "open", e)),
            };
            rfs::fsync(&fd).map_err(|e| io_error(path, "sync", e))?;
        }
        Ok(())
    }
}

fn syncfs(root: &OwnedFd) -> Result<(), ApplyError> {
    rfs::syncfs(root).map_err(|e| io_error(&RelPath::root(), "sync the filesystem of", e))
}

/// fsyncs `jobs` from up to [`FSYNC_THREADS`] threads: a flush waits on
/// the device, and several in flight let it batch them.
fn fsync_parallel(jobs: &[(&File, &RelPath)]) -> Result<(), ApplyError> {
    let sync = |chunk: &[(&File, &RelPath)]| -> Result<(), ApplyError> {
        for (file, path) in chunk {
            file.sync_all().map_err(|error| ApplyError::Io {
                path: (*path).clone(),
                op: "sync",
                error,
            })?;
        }
        Ok(())
    };
    if jobs.len() <= 1 {
        return sync(jobs);
    }
    let per_thread = jobs.len().div_ceil(FSYNC_THREADS.min(jobs.len()));
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || sync(chunk)))
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h.join().unwrap_or_else(|_| {
                Err(ApplyError::Io {
                    path: RelPath::root(),
                    op: "sync files below",
                    error: io::Error::other("an fsync thread panicked"),
                })
            });
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::*;
    use crate::apply::ApplyOptions;
    use omirr_core::Action;
    use std::fs;

    #[test]
    fn fsync_barrier_applies_a_batch_of_many_files() {
        let (dir, ap) = setup(ApplyOptions {
            barrier: Barrier::Fsync,
            ..ApplyOptions::default()
        });
        let contents: Vec<Vec<u8>> = (0..300).map(|i| format!("file {i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
        let mut actions = vec![Action::MakeDir {
            path: p("d"),
            meta: meta(0o755, T),
        }];
        actions.extend(
            contents
                .iter()
                .enumerate()
                .map(|(i, c)| write(&format!("d/f{i}"), c, meta(0o644, T))),
        );
        ap.apply(&actions, &mut Mem::with(&refs)).expect("apply");
        for (i, c) in contents.iter().enumerate() {
            assert_eq!(
                &fs::read(dir.path().join(format!("d/f{i}"))).expect("read"),
                c
            );
        }
        assert_eq!(mtime_ns(&dir.path().join("d")), T);
        assert!(temps(dir.path()).is_empty());
    }
}
