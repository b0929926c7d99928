//! How the daemon runs ([`Mode`]), decided once from `-f` and the
//! environment, and read by both [`crate::logging`] (where the log goes)
//! and [`crate::background`] (whether to fork):
//! - with `-f`: in the foreground, logging to standard error;
//! - without `-f`, under systemd: in the foreground too, since systemd
//!   supervises it, but logging to syslog (the journal). "Under systemd"
//!   means `NOTIFY_SOCKET` is set, or `INVOCATION_ID` is set and standard
//!   input is not a terminal (terminals started by a desktop's systemd
//!   session can inherit `INVOCATION_ID`);
//! - otherwise: in the background.

use crate::cli::DaemonArgs;
use std::io::IsTerminal;

/// How the daemon runs, and so where it logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-f`: attached to the terminal.
    Foreground,
    /// No `-f`, under systemd: not forking, logging to syslog.
    Supervised,
    /// No `-f`: forking into the background, logging to syslog.
    Background,
}

/// How the daemon will run, from `-f` and the environment.
pub fn mode(args: &DaemonArgs) -> Mode {
    let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if args.foreground {
        Mode::Foreground
    } else if set("NOTIFY_SOCKET") || (set("INVOCATION_ID") && !std::io::stdin().is_terminal()) {
        Mode::Supervised
    } else {
        Mode::Background
    }
}
