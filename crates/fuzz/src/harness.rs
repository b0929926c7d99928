//! The loop: generate, run, measure, keep what did something new.

use crate::alloc;
use crate::gen::{mutate_once, random_bytes, random_text, Rng};
use crate::targets::Target;
use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long and how to run a target.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stop after this many inputs.
    pub iterations: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// The run's seed: the same seed gives the same inputs in the same
    /// order.
    pub seed: u64,
    /// An input that takes longer than this is a failure (a hang).
    pub slow: Duration,
    /// Publish each input for a watchdog thread ([`watch`]), which
    /// catches a target that never returns. Costs a copy per input.
    pub watchdog: bool,
    /// Print a progress line this often (to stderr).
    pub progress: Option<Duration>,
    /// Print each input's number before running it (to stderr): what was
    /// running when the process died of something it cannot catch (a
    /// stack overflow).
    pub trace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            iterations: Some(10_000),
            duration: None,
            seed: 0,
            slow: Duration::from_secs(1),
            watchdog: false,
            progress: None,
            trace: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// How many inputs were run.
    pub inputs: u64,
    /// How long the run took, setup included.
    pub elapsed: Duration,
    /// The most bytes live at once during one input, above what was live
    /// before it, and that input's length.
    pub peak: usize,
    /// The length in bytes of the input that reached [`Report::peak`].
    pub peak_input_len: usize,
    /// The least headroom left under the bound, over all inputs.
    pub min_headroom: usize,
    /// The longest one input took.
    pub slowest: Duration,
    /// Which input was slowest (to regenerate it).
    pub slowest_iteration: u64,
    /// The length in bytes of the longest input run.
    pub longest_input: usize,
    /// Distinct outcomes seen (the targets' summaries).
    pub features: usize,
    /// Inputs kept to mutate (seeds included).
    pub corpus: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{}: {} inputs in {:.1} s ({:.0}/s); peak {} live during one input (a {}-byte input), \
             least headroom under the bound {}; slowest input {:.3} ms (input {}); longest input {} bytes; \
             {} outcomes, corpus {}",
            self.target,
            self.inputs,
            secs,
            self.inputs as f64 / secs.max(1e-9),
            human(self.peak),
            self.peak_input_len,
            human(self.min_headroom),
            self.slowest.as_secs_f64() * 1e3,
            self.slowest_iteration,
            self.longest_input,
            self.features,
            self.corpus,
        )
    }
}

/// Bytes in B, KiB or MiB.
pub fn human(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// Why a run stopped early: the input that did it, to save and replay.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The target's name.
    pub target: &'static str,
    /// Which input of the run (from 0): `--seed` and `--iterations` one
    /// more than this regenerate it.
    pub iteration: u64,
    /// The input's bytes, as the target's entry point received them.
    pub input: Vec<u8>,
    /// What went wrong.
    pub kind: FailureKind,
}

/// How an input failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The target panicked (a check failed, or the decoder itself); holds
    /// the panic's message.
    Panic(String),
    /// The input took longer than [`Options::slow`]; holds how long.
    Slow(Duration),
    /// The input had more memory live at once than [`Target::bound`]
    /// allows.
    OverAllocation {
        /// The most bytes live at once, above what was live before.
        peak: usize,
        /// The bound for an input of this length.
        bound: usize,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            FailureKind::Panic(m) => format!("panicked: {m}"),
            FailureKind::Slow(d) => format!("took {:.3} s (a hang)", d.as_secs_f64()),
            FailureKind::OverAllocation { peak, bound } => format!(
                "had {} ({peak} bytes) live at once, over its bound of {} ({bound} bytes)",
                human(*peak),
                human(*bound)
            ),
        };
        write!(
            f,
            "{}: input {} ({} bytes) {what}",
            self.target,
            self.iteration,
            self.input.len()
        )
    }
}

/// Milliseconds since [`epoch`] when the current input started; 0 between
/// inputs.
static STARTED_MS: AtomicU64 = AtomicU64::new(0);
static CURRENT: Mutex<(Vec<u8>, &str)> = Mutex::new((Vec::new(), ""));

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Starts a thread that calls `on_hang` with the target, input number and
/// bytes of an input that has run for longer than `limit` (a target that
/// never returns, which the loop itself cannot catch). Needs
/// [`Options::watchdog`].
pub fn watch(limit: Duration, on_hang: fn(&str, u64, &[u8], Duration)) {
    epoch();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let started = STARTED_MS.load(Ordering::Relaxed);
        if started == 0 {
            continue;
        }
        let now = epoch().elapsed().as_millis() as u64;
        let running = Duration::from_millis(now.saturating_sub(started));
        if running > limit {
            let guard = match CURRENT.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            on_hang(guard.1, alloc::current_iteration(), &guard.0, running);
        }
    });
}

/// Generates input `n` of a run.
fn generate(t: &Target, rng: &mut Rng, corpus: &[Vec<u8>], big: &[Vec<u8>]) -> Vec<u8> {
    if rng.one_in(10) {
        let raw = if t.text && rng.one_in(2) {
            random_text(rng, t.dict, t.max_len)
        } else {
            random_bytes(rng, t.max_len.min(4096))
        };
        return if rng.one_in(2) {
            raw
        } else {
            (t.shape)(rng, raw, corpus)
        };
    }
    let from_big = !big.is_empty() && rng.one_in(2000);
    let pool = if from_big { big } else { corpus };
    let mut data = pool.get(rng.below(pool.len())).cloned().unwrap_or_default();
    // Now and then a long input, to catch what is quadratic.
    let limit = if from_big {
        data.len() + 64
    } else if rng.one_in(LONG_ONE_IN) {
        t.max_len * 16
    } else {
        t.max_len
    };
    let other = corpus
        .get(rng.below(corpus.len()))
        .map_or(&[][..], |v| &v[..]);
    let rounds = 1usize << rng.below(5);
    for _ in 0..rounds {
        mutate_once(rng, &mut data, t.dict, other, limit);
    }
    (t.shape)(rng, data, corpus)
}

/// One input in this many may grow to 16 times the target's `max_len`.
const LONG_ONE_IN: usize = 1000;

/// The most inputs kept besides the seeds.
const MAX_CORPUS: usize = 4096;

/// Runs `t` as `opts` says. `Err` on the first failing input.
pub fn run(t: &Target, opts: &Options) -> Result<Report, Failure> {
    (t.init)();
    let mut corpus = (t.seeds)();
    let seeds = corpus.len();
    let big = (t.big_seeds)();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut report = Report {
        target: t.name,
        min_headroom: usize::MAX,
        ..Report::default()
    };
    let start = Instant::now();
    let mut last_progress = start;
    let mut n: u64 = 0;
    loop {
        if opts.iterations.is_some_and(|max| n >= max) {
            break;
        }
        // The clock is read every 256 inputs: cheap enough, fine enough.
        if n % 256 == 0 {
            let now = Instant::now();
            if opts.duration.is_some_and(|d| now - start >= d) {
                break;
            }
            if let Some(every) = opts.progress {
                if now - last_progress >= every {
                    last_progress = now;
                    eprintln!(
                        "omirr-fuzz: {}: {n} inputs, {:.0} s, peak {}, corpus {}",
                        t.name,
                        (now - start).as_secs_f64(),
                        human(report.peak),
                        corpus.len()
                    );
                }
            }
        }
        let mut rng = Rng::for_input(opts.seed, n);
        // Bodies before shaping are what the corpus keeps; shaping is
        // redone each time.
        let input = generate(t, &mut rng, &corpus, &big);
        alloc::set_iteration(n);
        if opts.trace {
            eprintln!("omirr-fuzz: {}: input {n} ({} bytes)", t.name, input.len());
        }
        if opts.watchdog {
            if let Ok(mut g) = CURRENT.lock() {
                g.0.clear();
                g.0.extend_from_slice(&input);
                g.1 = t.name;
            }
            STARTED_MS.store(epoch().elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        }
        let result = check(t, &input, opts.slow);
        STARTED_MS.store(0, Ordering::Relaxed);
        let one = match result {
            Ok(one) => one,
            Err(kind) => {
                return Err(Failure {
                    target: t.name,
                    iteration: n,
                    input,
                    kind,
                })
            }
        };
        let (feature, peak, took) = (one.feature, one.peak, one.took);
        report.min_headroom = report.min_headroom.min(one.headroom);
        if peak > report.peak {
            report.peak = peak;
            report.peak_input_len = input.len();
        }
        if took > report.slowest {
            report.slowest = took;
            report.slowest_iteration = n;
        }
        report.longest_input = report.longest_input.max(input.len());
        if seen.insert(feature) && corpus.len() < seeds + MAX_CORPUS && input.len() <= t.max_len {
            corpus.push(input);
        }
        n += 1;
    }
    report.inputs = n;
    report.elapsed = start.elapsed();
    report.features = seen.len();
    report.corpus = corpus.len();
    Ok(report)
}

/// Runs one given input through `t` under the same checks (to replay a
/// saved failure).
pub fn replay(t: &Target, input: &[u8], slow: Duration) -> Result<Report, Failure> {
    (t.init)();
    let fail = |kind| Failure {
        target: t.name,
        iteration: 0,
        input: input.to_vec(),
        kind,
    };
    let one = check(t, input, slow).map_err(fail)?;
    Ok(Report {
        target: t.name,
        inputs: 1,
        elapsed: one.took,
        peak: one.peak,
        peak_input_len: input.len(),
        min_headroom: one.headroom,
        slowest: one.took,
        slowest_iteration: 0,
        longest_input: input.len(),
        features: 1,
        corpus: 0,
    })
}

/// What one input did, when it passed.
struct One {
    feature: u64,
    took: Duration,
    peak: usize,
    headroom: usize,
}

/// Runs one input: no panic, not slower than `slow`, within the bound.
fn check(t: &Target, input: &[u8], slow: Duration) -> Result<One, FailureKind> {
    let base = alloc::start();
    let began = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| (t.run)(input)));
    let took = began.elapsed();
    let peak = alloc::peak_since(base);
    let feature = outcome.map_err(|payload| {
        FailureKind::Panic(
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into()),
        )
    })?;
    if took > slow {
        return Err(FailureKind::Slow(took));
    }
    let bound = (t.bound)(input.len());
    if peak > bound {
        return Err(FailureKind::OverAllocation { peak, bound });
    }
    Ok(One {
        feature,
        took,
        peak,
        headroom: bound - peak,
    })
}
