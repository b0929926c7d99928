//! Decoding untrusted bytes never panics and never allocates beyond the
//! frame limit. A counting allocator measures, per thread, the peak of
//! live heap bytes while the decoder runs.
#![allow(unsafe_code)] // a counting allocator implements GlobalAlloc, which is unsafe

mod common;

use common::*;
use omirr_proto::{encode, DecodeError, FrameDecoder, Message, MAX_FRAME};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // try_with: the allocator also runs while thread-locals are torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        count(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            count(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Runs `f` and returns its result and the most heap it held at once
/// beyond what was live when it started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, peak.max(0) as usize)
}

/// Feeds the bytes, pulls until nothing more or an error, then finishes.
fn run_decoder(bytes: &[u8]) -> usize {
    let mut d = FrameDecoder::new();
    d.feed(bytes);
    let mut n = 0;
    while let Ok(Some(_)) = d.next_message() {
        n += 1;
    }
    let _ = d.finish();
    n
}

/// What decoding `input` may take at most: the decoder's copy of the
/// input; one field's worth of frame (a string's declared length, checked
/// against the limit before it is reserved); serde's up-front reservation
/// for a sequence (1 MiB at most); and the decoded messages, which hold at
/// most a few dozen bytes of memory per input byte.
fn bound(input: usize) -> usize {
    MAX_FRAME + (1 << 20) + 64 * input + 64 * 1024
}

/// Random bytes, a valid header over random bytes, and valid frames with
/// bytes changed, cut or appended: the last two reach past the header.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (1u32..600, prop::collection::vec(any::<u8>(), 0..600)).prop_map(|(len, body)| {
            let mut v = header(len).to_vec();
            v.extend(body);
            v
        }),
        (
            prop::collection::vec(message(), 1..3),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 0..8),
        )
            .prop_map(|(msgs, flips, cut, tail)| {
                let mut v: Vec<u8> = msgs
                    .iter()
                    .flat_map(|m| encode(m).expect("valid message encodes"))
                    .collect();
                for (at, byte) in flips {
                    let i = at.index(v.len());
                    v[i] = byte;
                }
                v.truncate(cut.index(v.len() + 1));
                v.extend(tail);
                v
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn hostile_bytes_never_panic_nor_allocate_past_the_limit(input in hostile()) {
        let (_, peak) = peak_of(|| run_decoder(&input));
        prop_assert!(
            peak <= bound(input.len()),
            "decoding {} bytes held {} bytes at once", input.len(), peak
        );
    }
}

#[test]
fn an_oversized_header_is_refused_before_allocating() {
    let (err, peak) = peak_of(|| {
        let mut d = FrameDecoder::new();
        d.feed(&header(u32::MAX));
        d.next_message()
    });
    assert!(matches!(err, Err(DecodeError::FrameTooLarge { .. })));
    assert!(peak < 1024, "held {peak} bytes for a refused header");
}

#[test]
fn a_header_alone_reserves_nothing_for_its_payload() {
    let (r, peak) = peak_of(|| {
        let mut d = FrameDecoder::new();
        d.feed(&header(MAX_FRAME as u32));
        d.feed(&[0; 100]);
        d.next_message()
    });
    assert_eq!(r, Ok(None));
    assert!(peak < 4096, "held {peak} bytes for 104 bytes of input");
}

/// Text fields are read in place: a declared length is not reserved
/// before the bytes are there.
#[test]
fn a_long_declared_string_is_not_reserved_up_front() {
    // Error (variant 1), code 4, message length 4,000,000 as a varint
    // (252, then a little-endian u32), and only three bytes of it.
    let mut payload = vec![1, 4, 252];
    payload.extend(4_000_000u32.to_le_bytes());
    payload.extend(b"abc");
    let mut frame = header(payload.len() as u32).to_vec();
    frame.extend(payload);
    let (n, peak) = peak_of(|| run_decoder(&frame));
    assert_eq!(n, 0);
    assert!(
        peak < 64 * 1024,
        "held {peak} bytes for a {}-byte frame",
        frame.len()
    );
}

/// The measurement itself works: a decoder that reserved a frame's
/// declared length would be caught.
#[test]
fn the_allocation_counter_sees_allocations() {
    let (_, peak) = peak_of(|| std::hint::black_box(vec![0u8; MAX_FRAME]));
    assert!(peak >= MAX_FRAME);
    let (_, peak) = peak_of(|| run_decoder(&encode(&Message::Ping { nonce: 1 }).expect("encodes")));
    assert!(peak < 1024);
}
