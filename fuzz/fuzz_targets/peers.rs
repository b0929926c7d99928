#![no_main]
//! `cargo +nightly fuzz run peers`: the stable harness's `peers` target
//! (crates/fuzz/src/targets/peers.rs) under libFuzzer. Allocation bounds
//! are the stable harness's to check; run `omirr-fuzz peers --input FILE`
//! on what libFuzzer saves.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    omirr_fuzz::targets::peers::run(data);
});
