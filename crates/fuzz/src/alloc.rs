//! A counting global allocator: live bytes and their peak, per thread.
//!
//! Per thread, so that the tests of this crate, which `cargo test` runs on
//! several threads at once, measure only their own target. A block freed
//! on another thread than the one that allocated it makes the counts of
//! both threads off by its size; the decoders under test run on one
//! thread, and the harness measures the peak of one input relative to
//! the live bytes when that input started, so this does not matter here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting.
pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(n: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(n as isize);
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

fn sub(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(n as isize)));
}

/// The input number the harness is running (the harness sets it), for
/// the report of a failed allocation.
static ITERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records that the harness runs input `n`.
pub fn set_iteration(n: u64) {
    ITERATION.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// The input number the harness is running.
pub fn current_iteration() -> u64 {
    ITERATION.load(std::sync::atomic::Ordering::Relaxed)
}

/// Says which allocation failed before the process aborts: the one
/// report a decoder that asks for terabytes leaves. Formats integers only,
/// which allocates nothing.
fn report_failure(size: usize) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "omirr-fuzz: an allocation of {size} bytes failed (input {} of the run); the process aborts",
        current_iteration()
    );
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and only updates thread-local counters beside it.
#[allow(unsafe_code)] // a GlobalAlloc is unsafe to implement
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            report_failure(layout.size());
        } else {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            report_failure(layout.size());
        } else {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            report_failure(new_size);
        } else {
            // Counted as the new block appearing before the old one goes,
            // as a moving realloc does.
            add(new_size);
            sub(layout.size());
        }
        p
    }
}

/// Live bytes on this thread now; starts a new peak measurement from here.
pub fn start() -> isize {
    let live = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(live));
    live
}

/// The most bytes live on this thread since [`start`] returned `base`,
/// above `base`.
pub fn peak_since(base: isize) -> usize {
    let peak = PEAK.with(Cell::get);
    usize::try_from(peak.saturating_sub(base)).unwrap_or(0)
}
