//! Regular files: the hash reused when the baseline's stat key, a hard
//! link hashed earlier in the scan, or a rename vouches for it; else the
//! file read through one page-aligned buffer, and checked by one `fstat`
//! to be the inode that was `lstat`ed and unchanged by the read. The
//! extended attributes taken from the baseline when its stat key vouches
//! for the hash, else read.

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;

use omirr_core::tree::Node;
use omirr_core::{Content, Hash, Meta, RelPath, StatKey};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::baseline::Known;
use super::buf::BUF_SIZE;
use super::report::{Found, ScanError};
use super::stat::{ctime_of, key_of, meta_of, now_ns};
use super::walk::{Step, Walker};
use super::RACY_WINDOW_NS;

/// What came of reading a file.
pub(super) enum Reading {
    Hashed(Hash),
    Changed,
    /// Reported as an issue.
    Failed,
}

impl Walker<'_> {
    pub(super) fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &RelPath,
        st: &rustix::fs::Stat,
    ) -> Result<Step, ScanError> {
        let lkey = key_of(st);
        let known = self.known(path)?;
        let mut reuse = None;
        let mut recorded_xattrs = None;
        let mut renamed_from = None;
        if let Some(Known {
            key,
            content: Content::File { size, hash },
            xattrs,
            racy: false,
        }) = &known
        {
            if key.unchanged(&lkey) && *size == lkey.size {
                reuse = Some(*hash);
                // The key's ctime vouches for the attributes too: setting,
                // changing or removing an extended attribute (an ACL is
                // one) always moves the inode's ctime, and a key not taken
                // while racy would have seen it move, however coarse the
                // clock. Reading them (a path walk through /proc per file)
                // costs a restart more than its lstat.
                recorded_xattrs = xattrs.as_ref();
            }
        }
        let linked = st.st_nlink > 1;
        if reuse.is_none() && linked {
            if let Some((k, h)) = self.links.get(&(lkey.dev, lkey.ino)) {
                if *k == lkey {
                    reuse = Some(*h);
                }
            }
        }
        if reuse.is_none() {
            let same = |k: &Known| {
                !k.racy
                    && k.key.size == lkey.size
                    && k.key.mtime_ns == lkey.mtime_ns
                    && matches!(k.content, Content::File { size, .. } if size == lkey.size)
            };
            if let Some((old, k)) = self.moved_from(path, &lkey, known.as_ref(), &same)? {
                if let Content::File { hash, .. } = k.content {
                    reuse = Some(hash);
                    renamed_from = Some(old);
                }
            }
        }
        let (st, hash, hashed) = match reuse {
            Some(h) => (*st, h, false),
            None => match self.read(dir, name, path, &lkey) {
                Reading::Hashed(h) => (*st, h, true),
                Reading::Changed => return Ok(Step::Changed),
                Reading::Failed => return Ok(Step::Done),
            },
        };
        let key = key_of(&st);
        let xattrs = match recorded_xattrs {
            // As a read would give them: the index records names this
            // process does not read (`security.*` from a peer run as root).
            Some(x) => x.filtered(crate::xattrs::handled),
            None => match self.xattrs(dir, name, path) {
                Some(x) => x,
                None => return Ok(Step::Done),
            },
        };
        if linked {
            self.linked
                .entry((key.dev, key.ino))
                .or_default()
                .push(self.report.found.len());
        }
        if linked {
            self.links.insert((key.dev, key.ino), (key, hash));
        }
        let stats = &mut self.report.stats;
        stats.files += 1;
        if hashed {
            stats.hashed_files += 1;
            stats.hashed_bytes += key.size;
        }
        self.report.found.push(Found {
            path: path.clone(),
            node: Node {
                content: Content::File {
                    size: key.size,
                    hash,
                },
                meta: Meta {
                    xattrs,
                    ..meta_of(&st)
                },
            },
            key,
            ctime: ctime_of(&st),
            hashed,
            racy: key.ctime_ns > now_ns().saturating_sub(RACY_WINDOW_NS),
            renamed_from,
        });
        Ok(Step::Done)
    }

    /// Hashes the regular file `name` in `dir`, checking that it is the
    /// inode that was `lstat`ed and that it did not change while read.
    pub(super) fn read(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        path: &RelPath,
        lkey: &StatKey,
    ) -> Reading {
        // O_NONBLOCK: if a FIFO was swapped in since the stat, do not hang.
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            // Removed or replaced by a symlink since the stat.
            Err(Errno::NOENT) | Err(Errno::LOOP) => return Reading::Changed,
            Err(e) => {
                self.io_issue(path, "open", e);
                return Reading::Failed;
            }
        };
        if lkey.size > BUF_SIZE as u64 {
            // A hint for the kernel's readahead; failure changes nothing.
            let _ = rustix::fs::fadvise(&fd, 0, None, rustix::fs::Advice::Sequential);
        }
        let mut file = File::from(fd);
        let (hash, len) = match hash_stream(&mut file, lkey.size, self.buf.get()) {
            Ok(r) => r,
            Err(e) => {
                self.io_issue(path, "read", e);
                return Reading::Failed;
            }
        };
        // One fstat after the read proves both that this is the inode
        // that was lstat'ed and that it did not change since: any write,
        // truncation, chmod or replacement moves the ctime or the inode.
        match rustix::fs::fstat(&file) {
            Ok(after) if len == lkey.size && key_of(&after) == *lkey => Reading::Hashed(hash),
            Ok(_) => Reading::Changed,
            Err(e) => {
                self.io_issue(path, "stat", e);
                Reading::Failed
            }
        }
    }
}

/// Hashes the first `size` bytes of `r` (fewer if it ends first) through
/// `buf`: memory stays at the buffer's size whatever the file's. Returns
/// the hash and the length read, which exceeds `size` only if the file
/// grew. Not reading up to end of file spares a read call per small
/// file; the caller's fstat catches a file that grew.
fn hash_stream(r: &mut impl io::Read, size: u64, buf: &mut [u8]) -> io::Result<(Hash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut len = 0u64;
    while len < size {
        match r.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((*hasher.finalize().as_bytes(), len))
}
