//! `omirr-fuzz TARGET|all|list [--iterations N] [--seconds T] [--seed S]
//! [--slow-ms MS] [--out DIR] [--input FILE]`: see docs/fuzzing.md.

use omirr_fuzz::harness::{self, Failure, Options};
use omirr_fuzz::targets::{self, Target};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: omirr-fuzz TARGET|all|list [--iterations N] [--seconds T] [--seed S] \
[--slow-ms MS] [--out DIR] [--input FILE] [--quiet] [--trace]
  TARGET      proto, distfile, peers or index; all runs each in turn
  --iterations N   stop each target after N inputs
  --seconds T      stop each target after T seconds (default 10 if neither is given)
  --seed S         the run's seed (default 0): the same seed, the same inputs
  --slow-ms MS     an input slower than this fails the run (default 1000)
  --out DIR        where a failing input is saved (default: the current directory)
  --input FILE     run this one input (a saved failure) instead of generating
  --quiet          no progress lines
  --trace          print each input's number before running it (to find what killed the process)";

struct Args {
    which: String,
    opts: Options,
    out: PathBuf,
    input: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut which = None;
    let mut opts = Options {
        iterations: None,
        duration: None,
        watchdog: true,
        progress: Some(Duration::from_secs(30)),
        ..Options::default()
    };
    let mut out = PathBuf::from(".");
    let mut input = None;
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse()
            .map_err(|_| format!("{flag}: '{v}' is not a number"))
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "--iterations" => opts.iterations = Some(num("--iterations", it.next())?),
            "--seconds" => {
                let s: f64 = num("--seconds", it.next())?;
                opts.duration = Some(
                    Duration::try_from_secs_f64(s).map_err(|_| format!("--seconds: bad {s}"))?,
                );
            }
            "--seed" => opts.seed = num("--seed", it.next())?,
            "--slow-ms" => opts.slow = Duration::from_millis(num("--slow-ms", it.next())?),
            "--out" => out = it.next().ok_or("--out needs a directory")?.into(),
            "--input" => input = Some(it.next().ok_or("--input needs a file")?.into()),
            "--quiet" => opts.progress = None,
            "--trace" => opts.trace = true,
            "-h" | "--help" => return Err(String::new()),
            _ if a.starts_with('-') => return Err(format!("unknown option {a}")),
            _ if which.is_none() => which = Some(a),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    if opts.iterations.is_none() && opts.duration.is_none() {
        opts.duration = Some(Duration::from_secs(10));
    }
    Ok(Args {
        which: which.ok_or("which target?")?,
        opts,
        out,
        input,
    })
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// Saves a failing input and says how to replay it.
fn save(out: &Path, name: &str, iteration: u64, input: &[u8]) -> String {
    let file = out.join(format!("fuzz-failure-{name}-{iteration}.bin"));
    match std::fs::write(&file, input) {
        Ok(()) => format!(
            "saved to {} (replay: omirr-fuzz {name} --input {})",
            file.display(),
            file.display()
        ),
        Err(e) => format!("could not save it to {}: {e}", file.display()),
    }
}

fn report_failure(f: &Failure, out: &Path, seed: u64) {
    eprintln!("omirr-fuzz: FAILED {f}");
    let shown = &f.input[..f.input.len().min(512)];
    let more = if f.input.len() > shown.len() {
        "..."
    } else {
        ""
    };
    eprintln!("omirr-fuzz: input (hex): {}{more}", hex(shown));
    eprintln!(
        "omirr-fuzz: {}; or regenerate it: --seed {seed} --iterations {}",
        save(out, f.target, f.iteration, &f.input),
        f.iteration + 1
    );
}

fn on_hang(name: &str, iteration: u64, input: &[u8], running: Duration) {
    eprintln!(
        "omirr-fuzz: FAILED {name}: input {iteration} ({} bytes) has run for {:.1} s and not returned (a hang)",
        input.len(),
        running.as_secs_f64()
    );
    eprintln!(
        "omirr-fuzz: input (hex): {}",
        hex(&input[..input.len().min(512)])
    );
    eprintln!(
        "omirr-fuzz: {}",
        save(Path::new("."), name, iteration, input)
    );
    std::process::exit(3);
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("omirr-fuzz: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.which == "list" {
        for t in targets::all() {
            println!(
                "{:9} {}\n          bound: {}",
                t.name, t.about, t.bound_text
            );
        }
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<Target> = if args.which == "all" {
        targets::all()
    } else {
        match targets::by_name(&args.which) {
            Some(t) => vec![t],
            None => {
                eprintln!("omirr-fuzz: no target '{}'\n{USAGE}", args.which);
                return ExitCode::from(2);
            }
        }
    };
    if let Some(file) = &args.input {
        let input = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("omirr-fuzz: cannot read {}: {e}", file.display());
                return ExitCode::from(2);
            }
        };
        let mut failed = false;
        for t in &chosen {
            match harness::replay(t, &input, args.opts.slow) {
                Ok(r) => println!("{r}"),
                Err(f) => {
                    eprintln!("omirr-fuzz: FAILED {f}");
                    failed = true;
                }
            }
        }
        targets::distfile::cleanup();
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    // Ten times the slow limit, at least ten seconds: an input still
    // running then is not coming back.
    harness::watch((args.opts.slow * 10).max(Duration::from_secs(10)), on_hang);
    let mut code = ExitCode::SUCCESS;
    for t in &chosen {
        match harness::run(t, &args.opts) {
            Ok(r) => println!("{r}"),
            Err(f) => {
                report_failure(&f, &args.out, args.opts.seed);
                code = ExitCode::FAILURE;
                break;
            }
        }
    }
    targets::distfile::cleanup();
    code
}
