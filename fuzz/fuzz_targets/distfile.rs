#![no_main]
//! `cargo +nightly fuzz run distfile`: the stable harness's `distfile` target
//! (crates/fuzz/src/targets/distfile.rs) under libFuzzer. Allocation bounds
//! are the stable harness's to check; run `omirr-fuzz distfile --input FILE`
//! on what libFuzzer saves.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    omirr_fuzz::targets::distfile::run(data);
});
