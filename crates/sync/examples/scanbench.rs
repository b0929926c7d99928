//! Times `omirr_fs::scan::scan` on a directory; driven by `bench/scan.sh`.
//!
//! ```text
//! scanbench cold DIR         one scan with an empty baseline (everything hashed)
//! scanbench warm DIR RUNS    one scan to build the baseline, then RUNS rescans
//!                            against it with nothing changed
//! scanbench index DIR RUNS   the daemon's start-up scan into a persisted index
//!                            in a fresh state directory: once cold, then RUNS
//!                            times with nothing changed; and the index's size
//! scanbench index DIR RUNS STATE
//!                            the same in the state directory STATE, kept: a
//!                            second call is a restart (no cold pass if the
//!                            index already holds entries), for profiling it
//!                            in a process of its own
//! ```
//!
//! Each timed scan prints one line of `key=value` pairs for the script to
//! parse. The warm baseline is the previous scan's results in memory
//! ([`MemBaseline`]), the best case: a persisted index adds its lookup
//! costs on top.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use omirr_core::RelPath;
use omirr_fs::scan::{scan, MemBaseline, ScanBaseline, ScanReport};

fn timed(dir: &Path, baseline: &dyn ScanBaseline) -> Result<(ScanReport, f64), String> {
    let start = Instant::now();
    let report = scan(dir, &[RelPath::root()], &|_| false, baseline).map_err(|e| e.to_string())?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if let Some(issue) = report.issues.first() {
        return Err(format!("{} issues, first: {issue}", report.issues.len()));
    }
    Ok((report, ms))
}

fn line(kind: &str, r: &ScanReport, ms: f64) {
    let s = r.stats;
    let mib_s = s.hashed_bytes as f64 / (1 << 20) as f64 / (ms / 1000.0);
    println!(
        "{kind}_ms={ms:.2} entries={} files={} hashed_files={} hashed_bytes={} hash_mib_s={mib_s:.1}",
        r.found.len(),
        s.files,
        s.hashed_files,
        s.hashed_bytes
    );
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [mode, dir] if mode == "cold" => {
            let (r, ms) = timed(Path::new(dir), &MemBaseline::new())?;
            line("cold", &r, ms);
        }
        [mode, dir, runs, rest @ ..] if mode == "index" && rest.len() <= 1 => {
            let runs: u32 = runs.parse().map_err(|e| format!("RUNS {runs:?}: {e}"))?;
            let fresh = tempfile::tempdir().map_err(|e| e.to_string())?;
            let state = rest.first().map_or(fresh.path(), Path::new);
            let index = omirr_index::Index::open(state).map_err(|e| e.to_string())?;
            let restart = !index.is_empty().map_err(|e| e.to_string())?;
            let mut hlc = omirr_core::Hlc::default();
            let host = omirr_core::HostId::new("bench");
            let tops = [RelPath::root()];
            let mut pass = |kind: &str| -> Result<(), String> {
                let start = Instant::now();
                let r = omirr_sync::record::scan_into_index(
                    &index,
                    &mut hlc,
                    &host,
                    Path::new(dir),
                    &tops,
                    &|_| false,
                    &omirr_fs::owners::Uniform::default(),
                )
                .map_err(|e| e.to_string())?;
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                println!(
                    "{kind}_ms={ms:.2} entries={} changes={} hashed_files={} pieces={}",
                    r.entries, r.changes, r.stats.hashed_files, r.pieces
                );
                Ok(())
            };
            if !restart {
                pass("index_cold")?;
            }
            for _ in 0..runs {
                pass("index_warm")?;
            }
            let size = std::fs::metadata(index.path())
                .map_err(|e| e.to_string())?
                .len();
            println!("index_bytes={size}");
        }
        [mode, dir, runs] if mode == "warm" => {
            let runs: u32 = runs.parse().map_err(|e| format!("RUNS {runs:?}: {e}"))?;
            let (first, _) = timed(Path::new(dir), &MemBaseline::new())?;
            let racy = first.found.iter().filter(|f| f.racy).count();
            if racy > 0 {
                // Racy keys are re-hashed by design; the warm figure would
                // then measure hashing, not the stat-only path.
                return Err(format!(
                    "{racy} files changed within the racy window; wait 2 s"
                ));
            }
            let baseline = MemBaseline::from_report(&first);
            for _ in 0..runs {
                let (r, ms) = timed(Path::new(dir), &baseline)?;
                line("warm", &r, ms);
            }
        }
        _ => return Err("usage: scanbench cold DIR | scanbench warm DIR RUNS | scanbench index DIR RUNS [STATE]".into()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scanbench: {e}");
            ExitCode::FAILURE
        }
    }
}
