//! Which parts of a file hold data: a sparse file's holes are found with
//! `lseek(2)`'s `SEEK_DATA` and `SEEK_HOLE`, so that serving a range of
//! a 1 GiB file holding 64 KiB of data reads and sends 64 KiB, not 1 GiB
//! of zeros.
//!
//! A filesystem without hole support reports the whole file as data,
//! which is right (only slower). The answer is a snapshot: the file may
//! change after it, and whoever receives the bytes checks their hash.

use rustix::fs::SeekFrom;
use std::os::unix::fs::MetadataExt;

/// Whether `file` may have holes: it occupies fewer blocks than its
/// length needs. A file that fills its blocks has none, and costs no
/// `lseek` to serve.
pub fn may_have_holes(meta: &std::fs::Metadata) -> bool {
    meta.blocks().saturating_mul(512) < meta.len()
}

/// The data in `[start, start + len)` of `file`, as `(offset, len)` runs
/// in order; the rest of the range is holes (zeros). At most `max` runs
/// are returned: past that, the rest of the range is one run, so that a
/// pathological file costs no more than reading it.
pub fn data_runs(
    file: &std::fs::File,
    start: u64,
    len: u64,
    max: usize,
) -> std::io::Result<Vec<(u64, u64)>> {
    let end = start.saturating_add(len);
    let mut runs = Vec::new();
    let mut pos = start;
    while pos < end {
        if runs.len() + 1 >= max {
            runs.push((pos, end - pos));
            break;
        }
        let data = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // No data at or after `pos`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = match rustix::fs::seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h,
            Err(rustix::io::Errno::NXIO) => end,
            Err(e) => return Err(e.into()),
        };
        let stop = hole.clamp(data + 1, end);
        runs.push((data, stop - data));
        pos = stop;
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_sparse_file_has_runs_only_where_it_was_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        let mib = 1u64 << 20;
        f.set_len(64 * mib).expect("set_len");
        f.write_all_at(&[1u8; 8192], 8 * mib).expect("write");
        f.write_all_at(&[2u8; 8192], 40 * mib).expect("write");
        let meta = f.metadata().expect("metadata");
        let runs = data_runs(&f, 0, 64 * mib, 1024).expect("runs");
        if !may_have_holes(&meta) {
            // A filesystem without holes: everything is data.
            assert_eq!(runs, vec![(0, 64 * mib)]);
            return;
        }
        let total: u64 = runs.iter().map(|r| r.1).sum();
        assert!(total < mib, "{runs:?}");
        let covers = |at: u64| runs.iter().any(|&(o, l)| o <= at && at < o + l);
        assert!(covers(8 * mib) && covers(8 * mib + 8191), "{runs:?}");
        assert!(covers(40 * mib) && covers(40 * mib + 8191), "{runs:?}");
        assert!(!covers(20 * mib), "{runs:?}");
        // A range within: clipped to it.
        let inner = data_runs(&f, 8 * mib + 4096, 30 * mib, 1024).expect("runs");
        assert_eq!(inner.first().map(|r| r.0), Some(8 * mib + 4096));
        assert!(inner.iter().all(|&(o, l)| o + l <= 38 * mib + 4096));
        // Past `max`, the rest is one run.
        let capped = data_runs(&f, 0, 64 * mib, 2).expect("runs");
        assert_eq!(capped.len(), 2);
        assert_eq!(capped[1].0 + capped[1].1, 64 * mib);
    }
}
