//! Writing a large file into the staging directory: zeros left as holes,
//! writeback started as it goes.

use super::{FetchError, WRITEBACK};
use std::os::unix::fs::FileExt;

/// Hashes `n` zero bytes: a hole the peer did not send.
pub(super) fn hash_zeros(hasher: &mut blake3::Hasher, mut n: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// A large file being staged, written front to back. Every [`WRITEBACK`]
/// bytes it starts the kernel's writeback of what it wrote, without
/// waiting for it: the disk writes while the rest arrives, and the fsync
/// the applier makes before its rename (durability is the applier's, not
/// this) finds little left to write.
///
/// Blocks of [`HOLE_BLOCK`] zero bytes are not written: the staging file
/// is new, so they stay holes, and a sparse file arrives sparse (the
/// applier moves the staged file into the tree). [`StageWriter::finish`]
/// gives the file its full length, so trailing zeros are a hole too.
pub(super) struct StageWriter<'f> {
    file: &'f std::fs::File,
    /// Bytes before this offset have had their writeback started.
    started: u64,
}

/// The granularity at which zeros become holes: a filesystem block.
const HOLE_BLOCK: usize = 4096;

impl<'f> StageWriter<'f> {
    pub(super) fn new(file: &'f std::fs::File) -> StageWriter<'f> {
        StageWriter { file, started: 0 }
    }

    pub(super) fn write_at(&mut self, data: &[u8], at: u64) -> Result<(), FetchError> {
        let end = at + data.len() as u64;
        tokio::task::block_in_place(|| {
            for (offset, run) in data_runs(data) {
                self.file.write_all_at(run, at + offset as u64)?;
            }
            if end >= self.started + WRITEBACK {
                start_writeback(self.file, self.started, end - self.started);
                self.started = end;
            }
            Ok(())
        })
        .map_err(|e: std::io::Error| FetchError::File(format!("cannot stage it: {e}")))
    }

    /// Gives the staged file its length `size` (zeros not written at its
    /// end are then a hole, not missing).
    pub(super) fn finish(self, size: u64) -> Result<(), FetchError> {
        tokio::task::block_in_place(|| self.file.set_len(size))
            .map_err(|e| FetchError::File(format!("cannot stage it: {e}")))
    }
}

/// The runs of `data` to write, as (offset in `data`, bytes): everything
/// but whole [`HOLE_BLOCK`]s of zeros (block-aligned within `data`, which
/// callers write at block-aligned offsets but for a file's last piece).
fn data_runs(data: &[u8]) -> Vec<(usize, &[u8])> {
    let mut runs: Vec<(usize, &[u8])> = Vec::new();
    let mut start = None;
    for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
        let zero = block.len() == HOLE_BLOCK && block.iter().all(|&b| b == 0);
        match (zero, start) {
            (false, None) => start = Some(i * HOLE_BLOCK),
            (true, Some(s)) => {
                runs.push((s, &data[s..i * HOLE_BLOCK]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, &data[s..]));
    }
    runs
}

/// Starts the writeback of `len` bytes at `offset` of `file`
/// (`sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`: it waits for no
/// write to finish, and makes nothing durable). A hint only, so its
/// failure (a filesystem without it) is ignored.
#[allow(unsafe_code)] // see the SAFETY comment within
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the call takes a descriptor, which `file` keeps open for
    // its duration, and integers; it reads or writes no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_are_left_out_and_everything_else_written() {
        let mut data = vec![0u8; 5 * HOLE_BLOCK + 100];
        data[HOLE_BLOCK + 7] = 1; // block 1
        data[3 * HOLE_BLOCK] = 2; // block 3
        data[5 * HOLE_BLOCK + 99] = 3; // the short tail
        let runs: Vec<(usize, usize)> = data_runs(&data)
            .iter()
            .map(|(at, run)| (*at, run.len()))
            .collect();
        assert_eq!(
            runs,
            [
                (HOLE_BLOCK, HOLE_BLOCK),
                (3 * HOLE_BLOCK, HOLE_BLOCK),
                (5 * HOLE_BLOCK, 100)
            ]
        );
        // What is written, laid over zeros, is the data.
        let mut back = vec![0u8; data.len()];
        for (at, run) in data_runs(&data) {
            back[at..at + run.len()].copy_from_slice(run);
        }
        assert!(back == data);
        assert!(data_runs(&[0; 3 * HOLE_BLOCK]).is_empty());
        // A short block of zeros is written: it is no hole.
        assert_eq!(data_runs(&[0; 10]).len(), 1);
    }
}
