//! `omirrd`, the omirr daemon: command line, logging and the glue between
//! the configuration, the host's identity and (later) the live mirror.
//!
//! This crate owns the process edge: parsing arguments ([`cli`]), setting
//! up logging ([`logging`]), loading and explaining what this host mirrors
//! ([`plan`]), and turning every failure into a message that names what was
//! wrong. The rules and the I/O live in the library crates.

mod cli;
mod logging;
mod plan;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("omirrd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Some(Command::Check) => Ok(plan::check(&cli.daemon)),
        Some(Command::Keygen) => {
            let identity = omirr_net::identity::generate(&cli.daemon.state_dir)?;
            println!("{}", identity.fingerprint);
            eprintln!(
                "omirrd: new identity in {}; pin the line above for this host in every host's peers file",
                cli.daemon.state_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Id) => {
            let dir = &cli.daemon.state_dir;
            let key = dir.join(omirr_net::identity::KEY_FILE);
            let identity = match omirr_net::identity::load(dir) {
                Ok(id) => id,
                Err(e) if !key.exists() => {
                    return Err(e).with_context(|| {
                        format!(
                            "no identity in {} yet (create one with: omirrd keygen --state-dir {})",
                            dir.display(),
                            dir.display()
                        )
                    })
                }
                Err(e) => return Err(e.into()),
            };
            println!("{}", identity.fingerprint);
            Ok(ExitCode::SUCCESS)
        }
        None => daemon(&cli),
    }
}

/// Runs the daemon. Until the live mirror exists this loads and validates
/// everything the daemon needs, logs what it would mirror and exits.
fn daemon(cli: &Cli) -> Result<ExitCode> {
    logging::init(&cli.daemon)?;
    let plan = match plan::load(&cli.daemon) {
        Ok(p) => p,
        Err(diags) => {
            for d in &diags {
                if d.is_error() {
                    tracing::error!("{d}");
                } else {
                    tracing::warn!("{d}");
                }
            }
            anyhow::bail!(
                "{} error(s) in the configuration; nothing started (run 'omirrd check' for the full report)",
                diags.iter().filter(|d| d.is_error()).count()
            );
        }
    };
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let (identity, created) = omirr_net::identity::load_or_generate(&cli.daemon.state_dir)?;
    if created {
        tracing::info!(
            state_dir = %cli.daemon.state_dir.display(),
            "created a new identity {}; pin it in the peers file of every host",
            identity.fingerprint
        );
    }
    tracing::info!(host = %plan.host, fingerprint = %identity.fingerprint, "identity loaded");
    if let Some(d) = plan::pin_mismatch(&cli.daemon, &plan, &identity.fingerprint) {
        anyhow::bail!("{d}");
    }
    for line in plan.describe().lines() {
        tracing::info!("{line}");
    }
    startup_scan(cli, &plan)?;
    tracing::warn!(
        peers = ?plan.peer_names(),
        "this build has no peer sessions yet: configuration, peers, identity and index are ready; exiting"
    );
    Ok(ExitCode::SUCCESS)
}

/// Brings the index up to date with the disk: what changed while the
/// daemon was down becomes local changes.
fn startup_scan(cli: &Cli, plan: &plan::Plan) -> Result<()> {
    let state = &cli.daemon.state_dir;
    let index = omirr_index::Index::open(state)?;
    let applier = omirr_fs::apply::Applier::open(&plan.root, Default::default())
        .with_context(|| format!("cannot use the root {}", plan.root.display()))?;
    // Temporary files a killed daemon left behind are nobody's data.
    let stale = applier.cleanup_stale_temps_tree()?;
    if stale > 0 {
        tracing::info!(
            files = stale,
            "removed temporary files left by an interrupted run"
        );
    }
    let mut hlc = omirr_core::Hlc::default();
    let host = omirr_core::HostId::new(&plan.host);
    let tops = plan.tops();
    tracing::debug!(tops = ?tops, "mirrored trees");
    let started = std::time::Instant::now();
    let scan =
        omirr_fs::local::scan_into_index(&index, &mut hlc, &host, &plan.root, &tops, &|p| {
            plan.excluded(p)
        })?;
    for issue in &scan.report.issues {
        tracing::warn!("{issue}");
    }
    tracing::info!(
        entries = scan.report.found.len(),
        hashed = scan.report.stats.hashed_files,
        changes = scan.changes,
        ms = started.elapsed().as_millis() as u64,
        "start-up scan done"
    );
    Ok(())
}
