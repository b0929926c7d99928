#![no_main]
//! `cargo +nightly fuzz run index`: the stable harness's `index` target
//! (crates/fuzz/src/targets/index.rs) under libFuzzer. Allocation bounds
//! are the stable harness's to check; run `omirr-fuzz index --input FILE`
//! on what libFuzzer saves.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    omirr_fuzz::targets::index::run(data);
});
