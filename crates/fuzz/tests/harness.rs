//! The harness itself: each target runs clean for a while, and a target
//! that panics, allocates too much or hangs is caught, so that a clean
//! run means something.

use omirr_fuzz::harness::{self, FailureKind, Options};
use omirr_fuzz::targets::{self, Target};
use std::time::Duration;

fn opts(iterations: u64) -> Options {
    Options {
        iterations: Some(iterations),
        // Debug builds on a busy machine: a second is not a hang here.
        slow: Duration::from_secs(5),
        ..Options::default()
    }
}

#[track_caller]
fn clean_run(name: &str, iterations: u64) {
    let t = targets::by_name(name).unwrap_or_else(|| panic!("no target {name}"));
    match harness::run(&t, &opts(iterations)) {
        Ok(r) => {
            assert_eq!(r.inputs, iterations);
            // The seeds and mutations reach more than one outcome.
            assert!(r.features > 5, "{r}");
            assert!(r.peak > 0, "nothing was measured: {r}");
        }
        Err(f) => panic!("{f}\ninput: {:?}", String::from_utf8_lossy(&f.input)),
    }
}

#[test]
fn proto_runs_clean() {
    clean_run("proto", 3000);
}

#[test]
fn distfile_runs_clean() {
    clean_run("distfile", 1500);
    targets::distfile::cleanup();
}

#[test]
fn peers_runs_clean() {
    clean_run("peers", 3000);
}

#[test]
fn index_runs_clean() {
    clean_run("index", 5000);
}

#[test]
fn every_seed_passes_its_target() {
    for t in targets::all() {
        for (i, s) in (t.seeds)().iter().chain((t.big_seeds)().iter()).enumerate() {
            let input = (t.shape)(&mut omirr_fuzz::gen::Rng::new(0), s.clone(), &[]);
            if let Err(f) = harness::replay(&t, &input, Duration::from_secs(5)) {
                panic!("seed {i} of {}: {f}", t.name);
            }
        }
    }
    targets::distfile::cleanup();
}

#[test]
fn the_same_seed_makes_the_same_inputs() {
    let t = targets::proto::target();
    let a = harness::run(&t, &opts(500)).map_err(|f| f.to_string());
    let b = harness::run(&t, &opts(500)).map_err(|f| f.to_string());
    let (a, b) = (a.expect("clean"), b.expect("clean"));
    assert_eq!(
        (a.features, a.corpus, a.longest_input),
        (b.features, b.corpus, b.longest_input)
    );
    let c = harness::run(
        &t,
        &Options {
            seed: 1,
            ..opts(500)
        },
    )
    .expect("clean");
    assert_ne!(
        (a.features, a.corpus, a.longest_input),
        (c.features, c.corpus, c.longest_input)
    );
}

/// A target that is fine until its input holds a given byte.
fn bad(run: fn(&[u8]) -> u64) -> Target {
    Target {
        name: "bad",
        about: "a deliberately broken target",
        run,
        seeds: || vec![b"seed".to_vec()],
        big_seeds: targets::none,
        dict: &[b"X"],
        shape: targets::as_is,
        text: false,
        max_len: 64,
        bound: |len| 4096 + len,
        bound_text: "4 KiB",
        init: targets::nothing,
    }
}

#[test]
fn a_panic_is_caught_with_its_input() {
    let t = bad(|d| {
        if d.contains(&b'X') {
            panic!("found an X");
        }
        d.len() as u64
    });
    let f = harness::run(&t, &opts(100_000)).expect_err("must find the X");
    assert_eq!(f.kind, FailureKind::Panic("found an X".into()));
    assert!(f.input.contains(&b'X'));
    // Replaying the saved input fails the same way.
    let again = harness::replay(&t, &f.input, Duration::from_secs(5)).expect_err("replays");
    assert_eq!(again.kind, f.kind);
}

#[test]
fn an_allocation_over_the_bound_is_caught() {
    let t = bad(|d| {
        let n = if d.contains(&b'X') { 1 << 20 } else { 16 };
        let v = std::hint::black_box(vec![1u8; n]);
        v.len() as u64
    });
    let f = harness::run(&t, &opts(100_000)).expect_err("must see the megabyte");
    match f.kind {
        FailureKind::OverAllocation { peak, bound } => {
            assert!(peak >= 1 << 20, "{peak}");
            assert_eq!(bound, 4096 + f.input.len());
        }
        other => panic!("expected an over-allocation, got {other:?}"),
    }
    // Freed memory does not count: many small blocks, one at a time.
    let fine = bad(|d| {
        let mut n = 0;
        for _ in 0..1000 {
            n += std::hint::black_box(vec![0u8; 2048]).len() + d.len();
        }
        n as u64
    });
    let r = harness::run(&fine, &opts(200)).expect("within the bound");
    assert!(r.peak >= 2048 && r.peak < 4096, "{r}");
}

#[test]
fn a_slow_input_is_caught() {
    let t = bad(|d| {
        if d.contains(&b'X') {
            std::thread::sleep(Duration::from_millis(300));
        }
        0
    });
    let f = harness::run(
        &t,
        &Options {
            slow: Duration::from_millis(100),
            ..opts(100_000)
        },
    )
    .expect_err("must see the slow input");
    assert!(matches!(f.kind, FailureKind::Slow(d) if d >= Duration::from_millis(300)));
}
