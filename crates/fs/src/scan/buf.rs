//! The scan's read buffer, page-aligned (the applier's copies use it too).

/// The read buffer; large reads keep the syscall count low and let blake3
/// hash many chunks at once with SIMD.
pub(super) const BUF_SIZE: usize = 1 << 20;

/// The read buffer's alignment. The kernel copies file data into it with
/// `rep movsb`, which on the AMD EPYC we measured ran at half speed into a
/// buffer 16 bytes past a page boundary (where glibc puts large
/// allocations) — see docs/benchmarks.md.
pub(super) const BUF_ALIGN: usize = 4096;

/// A page-aligned read buffer, carved out of a slightly larger vector so
/// that no unsafe code is needed.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    pub(crate) fn new(size: usize) -> AlignedBuf {
        let raw = vec![0; size + BUF_ALIGN];
        // `align_offset` may decline (usize::MAX); an unaligned buffer is
        // only slower.
        let start = raw.as_ptr().align_offset(BUF_ALIGN).min(BUF_ALIGN);
        AlignedBuf { raw, start }
    }

    pub(crate) fn get(&mut self) -> &mut [u8] {
        let end = self.raw.len() - BUF_ALIGN + self.start;
        &mut self.raw[self.start..end]
    }
}
