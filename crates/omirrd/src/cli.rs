//! The command line. Its names are an interface used by tooling outside the
//! project: do not rename them.

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

/// Where the Distfile is unless `--config` names another.
pub const DEFAULT_CONFIG: &str = "/etc/omirrd/omirrd.conf";

/// Where the Distfile was before it moved into `/etc/omirrd/`; still read
/// when only it exists.
pub const LEGACY_CONFIG: &str = "/etc/omirrd.conf";

/// The commands that use few of the daemon's options, with the ones they
/// use: their `--help` and completions list only these (see [`command`]).
const NARROW_COMMANDS: &[(&str, &[&str])] = &[
    ("keygen", &["state_dir"]),
    ("id", &["state_dir"]),
    ("status", &["state_dir"]),
    ("verify", &["state_dir"]),
    ("completions", &[]),
];

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
    /// Print the shell completion script for SHELL on standard output.
    Completions {
        /// The shell to complete for.
        #[arg(value_name = "SHELL")]
        shell: CompletionShell,
    },
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
    /// Ask the running daemon whether this host and each peer hold the
    /// same tree: it compares its index with every peer's, mirrored tree
    /// by mirrored tree, and lists every path that differs with both
    /// hosts' versions.
    ///
    /// Exits 0 when every peer agrees, 1 when something differs, 2 when a
    /// peer cannot be asked (down, refusing, or an omirrd without verify)
    /// or no daemon answers. Meaningful on a quiet mesh: a change still on
    /// its way shows as a difference (one found is checked again after a
    /// second).
    Verify {
        /// Also re-read this host's files against its index: kind, size,
        /// mode, mtime and content (re-hashed) of every file, symlink
        /// targets, directories.
        #[arg(long)]
        deep: bool,
        /// Print the result as one JSON object (schema: omirrd(8)).
        #[arg(long)]
        json: bool,
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
    /// The Distfile [without --config, /etc/omirrd.conf is read if only
    /// it exists].
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = DEFAULT_CONFIG
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
    /// Also log what moves, per peer: changes, files fetched and served,
    /// actions applied (DEBUG). -vv is -D.
    #[arg(short = 'v', long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Also log every watcher event, every frame and why each change wins
    /// or loses (TRACE).
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
    /// How long a deletion is remembered (its tombstone kept): a host
    /// away for longer reconciles with its peers when it comes back (see
    /// docs/sync-model.md, "Tombstone expiry"). Expiry runs at start and
    /// every hour (or every TIME, if shorter). Seconds, or with an s, m,
    /// h or d suffix; "never" keeps tombstones for ever.
    #[arg(long, global = true, value_name = "TIME", default_value = "30d", value_parser = parse_horizon)]
    pub tombstone_horizon: Horizon,
    /// Define or override a Distfile variable, as rdist's -d. VALUE is
    /// empty, one name, or a parenthesised list.
    #[arg(short = 'd', global = true, value_name = "VAR=VALUE", value_parser = parse_define)]
    pub define: Vec<(String, String)>,
}

/// The shells `omirrd completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(shell: CompletionShell) -> Self {
        match shell {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// The command line as `omirrd` parses it, help and completions included.
///
/// The daemon's options are global, so that they may come before or after
/// a command; `keygen`, `id`, `status` and `completions` still accept
/// them but do not list them, except the ones they use.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    for (name, used) in NARROW_COMMANDS {
        // clap copies a global option into a command only if the command
        // has none of that name: a hidden copy keeps it accepted but out
        // of the command's help.
        let hidden = globals
            .iter()
            .filter(|a| !used.contains(&a.get_id().as_str()))
            .map(|a| a.clone().hide(true));
        cmd = cmd.mut_subcommand(name, |sub| sub.args(hidden));
    }
    cmd
}

/// Parses the process's arguments; exits with clap's message and status 2
/// on a usage error, or after printing help or the version.
pub fn parse() -> Parsed {
    let matches = command().get_matches();
    let config_given =
        matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => Parsed { cli, config_given },
        Err(e) => e.exit(),
    }
}

/// The parsed command line, and what clap knows beyond the values.
pub struct Parsed {
    pub cli: Cli,
    /// Whether `--config` was on the command line (not the default).
    pub config_given: bool,
}

/// The Distfile to read when `--config` was not given: `new` (the
/// default), unless it does not exist and `legacy` does. Returns the path
/// and whether it is the legacy one, which the caller warns about once.
pub fn default_config(new: &Path, legacy: &Path) -> (PathBuf, bool) {
    // Only a missing file falls back: an unreadable or dangling one at the
    // new path is the administrator's, and its error should name it.
    let missing = |p: &Path| {
        p.symlink_metadata()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    };
    if missing(new) && !missing(legacy) {
        (legacy.to_path_buf(), true)
    } else {
        (new.to_path_buf(), false)
    }
}

/// The completion script for `shell`. Built in memory: clap_complete
/// panics if its writer fails, and standard output may be a closed pipe.
pub fn completions(shell: CompletionShell) -> Vec<u8> {
    // The generators offer hidden options too: here each command gets
    // only the daemon options it uses, as plain (not global) options.
    let mut cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.clone().global(false))
        .collect();
    cmd = cmd.mut_args(|a| a.global(false));
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        let used = NARROW_COMMANDS
            .iter()
            .find(|(narrow, _)| *narrow == name)
            .map(|(_, used)| *used);
        let options = globals
            .iter()
            .filter(|a| used.is_none_or(|used| used.contains(&a.get_id().as_str())))
            .cloned();
        cmd = cmd.mut_subcommand(name, |sub| sub.args(options));
    }
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut cmd,
        name,
        &mut script,
    );
    script
}

/// How long tombstones are kept: `--tombstone-horizon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon(pub Option<std::time::Duration>);

impl std::fmt::Display for Horizon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => write!(f, "never"),
            Some(d) => {
                let s = d.as_secs();
                match s {
                    _ if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
                    _ if s % 3600 == 0 => write!(f, "{}h", s / 3600),
                    _ if s % 60 == 0 => write!(f, "{}m", s / 60),
                    _ => write!(f, "{s}s"),
                }
            }
        }
    }
}

fn parse_horizon(s: &str) -> Result<Horizon, String> {
    if s == "never" {
        return Ok(Horizon(None));
    }
    parse_time(s, true)
        .map(|d| Horizon(Some(d)))
        .map_err(|e| format!("{e} (or \"never\")"))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    parse_time(s, false)
}

/// Seconds, with an optional s, m or h (and d, if `days`) suffix; at
/// least 1 second.
fn parse_time(s: &str, days: bool) -> Result<std::time::Duration, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" if days => 86_400,
        _ if days => {
            return Err(format!(
                "expected a number of seconds with an optional s, m, h or d, found '{s}'"
            ))
        }
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
        Some(0) if days => Err("a tombstone horizon must be at least 1 second".into()),
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
        command().debug_assert();
    }

    fn long_help(name: &str) -> String {
        let mut cmd = command();
        cmd.build();
        let sub = cmd.find_subcommand_mut(name).expect("a command");
        sub.render_long_help().to_string()
    }

    #[test]
    fn narrow_commands_list_only_their_own_options() {
        for (name, own) in [
            ("keygen", &["--state-dir"][..]),
            ("id", &["--state-dir"]),
            ("status", &["--state-dir", "--json"]),
            ("verify", &["--state-dir", "--deep", "--json"]),
            ("completions", &[]),
        ] {
            let help = long_help(name);
            for option in own {
                assert!(
                    help.contains(option),
                    "{name} --help lacks {option}:\n{help}"
                );
            }
            for option in [
                "--config",
                "--peers",
                "--root",
                "--foreground",
                "--in-flight",
                "-d ",
            ] {
                assert!(
                    !help.contains(option),
                    "{name} --help lists {option}:\n{help}"
                );
            }
        }
        // The commands that use them still list the daemon's options.
        for name in ["check", "demo"] {
            let help = long_help(name);
            for option in ["--config", "--peers", "--root", "--verbose"] {
                assert!(
                    help.contains(option),
                    "{name} --help lacks {option}:\n{help}"
                );
            }
        }
    }

    #[test]
    fn narrow_commands_still_accept_the_daemon_options() {
        let parse = |args: &[&str]| {
            let m = command().try_get_matches_from(args).expect("parses");
            Cli::from_arg_matches(&m).expect("a command line")
        };
        let c = parse(&["omirrd", "--state-dir", "/s", "keygen"]);
        assert!(matches!(c.command, Some(Command::Keygen)));
        assert_eq!(c.daemon.state_dir, PathBuf::from("/s"));
        let c = parse(&["omirrd", "id", "--root", "/r", "--state-dir", "/s"]);
        assert!(matches!(c.command, Some(Command::Id)));
        assert_eq!(c.daemon.state_dir, PathBuf::from("/s"));
        assert_eq!(c.daemon.root, PathBuf::from("/r"));
        let c = parse(&["omirrd", "status", "--json", "--state-dir", "/s", "-v"]);
        assert!(matches!(
            c.command,
            Some(Command::Status { json: true, .. })
        ));
        assert_eq!(c.daemon.state_dir, PathBuf::from("/s"));
        assert_eq!(c.daemon.verbose, 1);
    }

    #[test]
    fn completions_name_every_command_for_each_shell() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let script = String::from_utf8(completions(shell)).expect("UTF-8");
            for word in [
                "check",
                "keygen",
                "id",
                "status",
                "verify",
                "demo",
                "completions",
                "state-dir",
            ] {
                assert!(script.contains(word), "{shell:?} completions lack {word}");
            }
        }
    }

    #[test]
    fn committed_completions_are_current() {
        let etc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/completions");
        for (shell, file) in [
            (CompletionShell::Bash, "omirrd.bash"),
            (CompletionShell::Zsh, "_omirrd"),
            (CompletionShell::Fish, "omirrd.fish"),
        ] {
            let path = etc.join(file);
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == completions(shell),
                "{} is stale; regenerate with: cargo run -p omirrd -- completions {} > etc/completions/{file}",
                path.display(),
                format!("{shell:?}").to_lowercase()
            );
        }
    }

    #[test]
    fn the_old_distfile_path_is_read_only_when_the_new_one_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new = dir.path().join("omirrd/omirrd.conf");
        let legacy = dir.path().join("omirrd.conf");
        // Neither: the new path, whose error names it.
        assert_eq!(default_config(&new, &legacy), (new.clone(), false));
        std::fs::write(&legacy, "").expect("write");
        assert_eq!(default_config(&new, &legacy), (legacy.clone(), true));
        std::fs::create_dir(dir.path().join("omirrd")).expect("mkdir");
        std::fs::write(&new, "").expect("write");
        assert_eq!(default_config(&new, &legacy), (new.clone(), false));
        // A dangling link at the new path is not missing: it is an error
        // to report, not a reason to read another file.
        std::fs::remove_file(&new).expect("rm");
        std::os::unix::fs::symlink(dir.path().join("gone"), &new).expect("symlink");
        assert_eq!(default_config(&new, &legacy), (new.clone(), false));
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
        assert_eq!(c.daemon.config, PathBuf::from("/etc/omirrd/omirrd.conf"));
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
