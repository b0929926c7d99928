#![no_main]
//! `cargo +nightly fuzz run proto`: the stable harness's `proto` target
//! (crates/fuzz/src/targets/proto.rs) under libFuzzer. Allocation bounds
//! are the stable harness's to check; run `omirr-fuzz proto --input FILE`
//! on what libFuzzer saves.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    omirr_fuzz::targets::proto::run(data);
});
