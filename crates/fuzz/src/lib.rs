//! A fuzz harness for omirr's decoders that runs on stable Rust.
//!
//! `cargo fuzz` needs a nightly compiler, which omirr's CI does not have.
//! This crate drives the same kind of targets from a plain loop: inputs are
//! generated deterministically from a seed (random bytes, and mutations of
//! valid inputs made by the crates' own encoders), each is passed to a
//! target's entry point under [`std::panic::catch_unwind`], its time is
//! measured, and a counting global allocator ([`alloc`]) measures the most
//! memory it had live at once. A panic, an input slower than the limit, or
//! a peak above the target's bound stops the run with the input saved.
//!
//! The targets ([`targets`]) take raw bytes, the shape of a libFuzzer
//! target, so that `fuzz/` (a `cargo fuzz` skeleton, outside the
//! workspace) reuses them unchanged. `docs/fuzzing.md` says how to run
//! them and what they found.

pub mod alloc;
pub mod gen;
pub mod harness;
pub mod targets;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;
