//! Logging setup. `OMIRR_LOG` (an `EnvFilter` directive such as
//! `omirr_net=trace,info`) wins over `-v`/`-D`.

use crate::cli::DaemonArgs;
use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

pub fn init(args: &DaemonArgs) -> Result<()> {
    let level = if args.debug {
        "trace"
    } else {
        match args.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = match std::env::var("OMIRR_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .with_context(|| format!("OMIRR_LOG='{directives}' is not a valid log filter"))?,
        _ => EnvFilter::new(level),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(args.debug || args.verbose > 0)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
