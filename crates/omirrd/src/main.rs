//! `omirrd`, the omirr daemon: the process edge of the project.
//!
//! This crate owns what runs as a process: the command line and its shell
//! completions ([`cli`]), how the daemon runs (foreground, under systemd,
//! in the background: [`mode`]), logging ([`logging`]), detaching, the pid
//! file and syslog ([`background`]), the configuration as this host
//! applies it ([`plan`]), the running daemon with its watcher, listener
//! and dialers ([`mod@daemon`]; what its tasks share, [`shared`]; the
//! sessions with peers, [`sessions`]; SIGHUP, [`reload`]), peers going
//! down and coming back and repeated errors in the log ([`health`]), the
//! Distfile's commands after updates ([`commands`]) and the child
//! processes they run ([`process`]), `omirrd status` ([`status`]),
//! `omirrd verify` ([`verify`]) and `omirrd demo` ([`demo`]). The sync
//! engine (peer sessions, recording and applying changes) is
//! `omirr-sync`; the sockets and TLS (listening, dialing, the handshake
//! cap) are `omirr-net`'s; the sync rules, the disk and the wire live in
//! the other library crates. This one wires them together and turns every
//! failure into a message that names what was wrong.

mod background;
mod cli;
mod commands;
mod daemon;
mod demo;
mod health;
mod logging;
mod mode;
mod oneway;
mod plan;
mod process;
mod reload;
mod sessions;
mod shared;
mod status;
mod verify;

use anyhow::{Context, Result};
use cli::{Cli, Command};
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    daemon::limit_malloc_arenas();
    let parsed = cli::parse();
    let mut cli = parsed.cli;
    // Only the daemon and `check` read the Distfile (demo writes its own).
    let legacy_config =
        matches!(cli.command, None | Some(Command::Check)) && !parsed.config_given && {
            let (path, legacy) = cli::default_config(
                Path::new(cli::DEFAULT_CONFIG),
                Path::new(cli::LEGACY_CONFIG),
            );
            cli.daemon.config = path;
            legacy
        };
    match run(cli, legacy_config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("omirrd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The warning for a Distfile found only at its old default path.
fn legacy_config_warning() -> String {
    format!(
        "reading the Distfile from {}, its old default path; move it to {}",
        cli::LEGACY_CONFIG,
        cli::DEFAULT_CONFIG
    )
}

fn run(cli: Cli, legacy_config: bool) -> Result<ExitCode> {
    match &cli.command {
        Some(Command::Check) => {
            if legacy_config {
                eprintln!("omirrd: warning: {}", legacy_config_warning());
            }
            Ok(plan::check(&cli.daemon))
        }
        Some(Command::Completions { shell }) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&cli::completions(*shell))
                .and_then(|()| out.flush())
                .context("cannot write the completions to standard output")?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Status { json, prometheus }) => {
            let form = match (json, prometheus) {
                (true, _) => status::Form::Json,
                (_, true) => status::Form::Prometheus,
                _ => status::Form::Table,
            };
            Ok(status::show(&cli.daemon.state_dir, form))
        }
        Some(Command::Verify { deep, json }) => {
            Ok(verify::show(&cli.daemon.state_dir, *deep, *json))
        }
        Some(Command::Demo { dir }) => demo::run(dir.as_deref(), &cli.daemon),
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
        None => daemon(&cli, legacy_config),
    }
}

/// Runs the daemon: loads and checks everything, then mirrors until
/// SIGTERM or SIGINT.
fn daemon(cli: &Cli, legacy_config: bool) -> Result<ExitCode> {
    logging::init(&cli.daemon)?;
    if legacy_config {
        // SIGHUP reads the path in force, so a moved file needs a restart.
        tracing::warn!(
            "{}, then restart omirrd (a reload reads the old path)",
            legacy_config_warning()
        );
    }
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
    // Without -f, the command exits in here and the daemon goes on; the
    // tokio runtime, and with it every thread, starts only afterwards.
    let running = background::start(&cli.daemon)?;
    let result = daemon::run(plan, identity, running.args());
    running.finish(result)?;
    Ok(ExitCode::SUCCESS)
}
