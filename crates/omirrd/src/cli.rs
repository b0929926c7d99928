//! The command line. Its names are an interface used by tooling outside the
//! project: do not rename them.

use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "omirrd",
    version,
    about = "omirr: a symmetric multi-master directory mirror daemon",
    long_about = "omirr keeps directory trees identical on several hosts. Every host runs omirrd; \
                  changes stream to every peer over TLS and the last writer wins everywhere.\n\n\
                  Without a command, omirrd runs the daemon."
)]
pub struct Cli {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the Distfile and the peers file and show what this host
    /// mirrors with whom. Exits 0 only if there is no error.
    Check,
    /// Create this host's key pair and certificate in the state directory
    /// and print its fingerprint.
    Keygen,
    /// Print this host's fingerprint, in the form the peers file takes.
    Id,
    /// Show the running daemon's peers (connected or not, since when,
    /// changes and frames each way, queue, last error) and local counters,
    /// read from its status socket in the state directory.
    ///
    /// Exits 0 when every peer is connected and caught up, 1 when one is
    /// not, 2 when no daemon answers.
    Status {
        /// Print the status as one JSON object (schema: omirrd(8)).
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Print the status as metrics in the Prometheus text format, for
        /// node_exporter's textfile collector.
        #[arg(long)]
        prometheus: bool,
    },
    /// Try omirr out: run three hosts on this machine that mirror one tree.
    ///
    /// Sets up DIR with three hosts, alpha, beta and gamma: for each a root
    /// (DIR/NAME/root, whose srv/demo is the mirrored tree), a state
    /// directory with a new key, and a free port on 127.0.0.1; a peers file
    /// pinning the three keys (DIR/peers) and a Distfile mirroring /srv/demo
    /// among them (DIR/omirrd.conf). Then runs one omirrd per host, each
    /// logging to DIR/NAME/omirrd.log, and prints how to try it.
    ///
    /// Runs until Ctrl-C, SIGTERM or SIGHUP, or until every host has exited;
    /// then stops the hosts and exits, 1 if a host failed on its own. DIR is
    /// kept. -v and -D are passed on to the hosts; the options naming a
    /// configuration, root or state directory do not apply.
    Demo {
        /// Where to set up the demo: an empty or absent directory [default:
        /// a new directory under /tmp, printed].
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// The Distfile.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/omirrd.conf"
    )]
    pub config: PathBuf,
    /// The peers file: how to reach and recognise each host.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/omirrd/peers"
    )]
    pub peers: PathBuf,
    /// This host's name in the Distfile and the peers file [default: the
    /// machine's host name].
    #[arg(long, global = true, value_name = "NAME")]
    pub host: Option<String>,
    /// Resolve every absolute Distfile path under DIR on this host.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Where the key pair, certificate and index live.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/var/lib/omirrd"
    )]
    pub state_dir: PathBuf,
    /// Stay in the foreground and log to stderr.
    #[arg(short = 'f', long, global = true)]
    pub foreground: bool,
    /// More log output; repeat for more.
    #[arg(short = 'v', long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Copious debug output: every event, every frame.
    #[arg(short = 'D', long, global = true)]
    pub debug: bool,
    /// File content that may be in flight from each peer at once: fetched
    /// ahead, or queued for the file being written. Takes K, M and G
    /// suffixes (powers of 1024).
    #[arg(long, global = true, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    pub in_flight: u64,
    /// The most another host's wall clock may differ from this host's:
    /// a peer further off is refused, and a change stamped further ahead
    /// than this is set aside. Seconds, or with an s, m or h suffix.
    #[arg(long, global = true, value_name = "TIME", default_value = "5m", value_parser = parse_duration)]
    pub max_clock_offset: std::time::Duration,
    /// Define or override a Distfile variable, as rdist's -d. VALUE is
    /// empty, one name, or a parenthesised list.
    #[arg(short = 'd', global = true, value_name = "VAR=VALUE", value_parser = parse_define)]
    pub define: Vec<(String, String)>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "expected a number of seconds with an optional s, m or h, found '{s}'"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a number of seconds, found '{s}'"))?;
    match n.checked_mul(scale) {
        Some(0) => Err("the maximum clock offset must be at least 1 second".into()),
        Some(v) => Ok(std::time::Duration::from_secs(v)),
        None => Err(format!("'{s}' is too large")),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => {
            return Err(format!(
                "expected a number of bytes with an optional K, M or G, found '{s}'"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a number of bytes, found '{s}'"))?;
    match n.checked_mul(1 << shift) {
        Some(0) => Err("the in-flight budget must be at least 1 byte".into()),
        Some(v) => Ok(v),
        None => Err(format!("'{s}' is too large")),
    }
}

fn parse_define(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected VAR=VALUE, found '{s}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn sizes_take_suffixes_and_refuse_nonsense() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        for bad in ["", "M", "0", "12X", "-1", "99999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn interface_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_parse_before_and_after_the_command() {
        let c = Cli::parse_from([
            "omirrd", "--root", "/r", "check", "--host", "h", "-d", "A=(x y)", "-vv", "-D",
        ]);
        assert!(matches!(c.command, Some(Command::Check)));
        assert_eq!(c.daemon.root, PathBuf::from("/r"));
        assert_eq!(c.daemon.host.as_deref(), Some("h"));
        assert_eq!(c.daemon.define, [("A".to_string(), "(x y)".to_string())]);
        assert_eq!(c.daemon.verbose, 2);
        assert!(c.daemon.debug);
        let c = Cli::parse_from(["omirrd", "-f"]);
        assert!(c.command.is_none() && c.daemon.foreground);
        assert_eq!(c.daemon.config, PathBuf::from("/etc/omirrd.conf"));
        assert_eq!(c.daemon.peers, PathBuf::from("/etc/omirrd/peers"));
        assert_eq!(c.daemon.state_dir, PathBuf::from("/var/lib/omirrd"));
    }

    #[test]
    fn demo_takes_an_optional_directory() {
        let c = Cli::parse_from(["omirrd", "demo"]);
        assert!(matches!(c.command, Some(Command::Demo { dir: None })));
        let c = Cli::parse_from(["omirrd", "demo", "/tmp/d", "-v"]);
        match c.command {
            Some(Command::Demo { dir }) => assert_eq!(dir, Some(PathBuf::from("/tmp/d"))),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.daemon.verbose, 1);
    }

    #[test]
    fn define_needs_an_equals_sign() {
        assert!(Cli::try_parse_from(["omirrd", "-d", "NOVALUE"]).is_err());
        assert!(Cli::try_parse_from(["omirrd", "-d", "=x"]).is_err());
        let c = Cli::parse_from(["omirrd", "-d", "E="]);
        assert_eq!(c.daemon.define, [("E".to_string(), String::new())]);
    }
}
