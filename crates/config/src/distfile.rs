//! The Distfile: rdist's configuration language, read as a mirror plan.
//!
//! [`parse`] turns the text of a Distfile into a [`Config`]: the list of
//! [`MirrorSet`]s it declares, each with its hosts, paths, exclusions,
//! install options and commands. Text goes through three stages, each in
//! its own module:
//!
//! 1. `lex`: characters to tokens, remembering escapes and positions;
//! 2. `parse`: tokens to statements, recovering at `;` after an error;
//! 3. `expand`: statements to the model. Words are expanded in a fixed
//!    order: `$` variables (distributing over words), brace expansion,
//!    `~`, globbing against the host's root, and last the set algebra
//!    `- + &` between lists, left to right.
//!
//! Every stage reports all the problems it finds, with file, line and
//! column; the result is an error only if one of them is an error.
//!
//! The patterns of `except`, `special` and `cmdspecial`, matched against
//! paths as they appear, are [`Pattern`]s (module `pattern`).
//!
//! What a statement means for omirrd: `sources -> hosts` declares that the
//! listed hosts keep the source paths identical among themselves. A host
//! takes part in the sets that name it; the other hosts of a set are its
//! peers for those paths.

mod expand;
mod lex;
mod parse;
mod pattern;

pub use pattern::Pattern;

use crate::diag::{Diagnostic, Diagnostics, Pos};
use std::fmt;
use std::path::{Path, PathBuf};

/// What the caller knows that the Distfile does not.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// Every absolute path of the Distfile is looked up under this
    /// directory on this host: globs are expanded against it. `/` for a
    /// normal installation.
    pub root: PathBuf,
    /// `-d NAME=VALUE` definitions. They override the Distfile's own
    /// definitions of the same names, as in rdist. A value is empty, one
    /// name, or a parenthesised list.
    pub defines: Vec<(String, String)>,
    /// The hosts of the peers file. When given, a host list naming any
    /// other host is an error: omirrd could neither reach nor recognise it.
    pub known_hosts: Option<std::collections::BTreeSet<String>>,
}

/// A parsed Distfile.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file the configuration was read from, for messages.
    pub file: PathBuf,
    /// The `->` statements, in file order.
    pub sets: Vec<MirrorSet>,
}

/// One `sources -> hosts` statement: paths the listed hosts mirror among
/// themselves, and how.
#[derive(Debug, Clone)]
pub struct MirrorSet {
    /// The rdist label written before the statement (`srcs: ... -> ...`),
    /// if any; omirrd uses it only to name the set in messages.
    pub label: Option<String>,
    /// Where the statement starts.
    pub pos: Pos,
    /// The hosts that share these paths, in the order listed, without
    /// repeats.
    pub hosts: Vec<HostRef>,
    /// The mirrored paths, in the order listed, with where each is kept.
    pub paths: Vec<MirrorPath>,
    /// `except` names: these paths and everything below them are not
    /// mirrored.
    pub excludes: Vec<PathMatch>,
    /// `except_pat` regular expressions, matched against the whole path.
    pub exclude_patterns: Vec<regex::bytes::Regex>,
    /// The `install -o` options of the statement's commands.
    pub options: InstallOptions,
    /// `special` and `cmdspecial` commands.
    pub commands: Vec<Special>,
    /// `notify` addresses.
    pub notify: Vec<String>,
    /// The hosts a `sendonly` or `receiveonly` command names, with the
    /// direction it gives them; every other host of the set is
    /// [`Direction::Both`].
    pub one_way: Vec<(HostRef, Direction)>,
}

/// Which way a host of a set takes part: the `sendonly` and
/// `receiveonly` commands (omirrd's own; rdist has no such thing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Sends its changes and applies the others': the symmetric mirror.
    #[default]
    Both,
    /// Sends its changes; never applies another host's.
    SendOnly,
    /// Applies the others' changes; its own are not sent but undone.
    ReceiveOnly,
}

impl Direction {
    /// The command that gives a host this direction, or `both`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::SendOnly => "sendonly",
            Direction::ReceiveOnly => "receiveonly",
        }
    }

    /// What the direction means, for `omirrd check`.
    pub fn meaning(self) -> &'static str {
        match self {
            Direction::Both => "sends its changes and applies the others'",
            Direction::SendOnly => "sends its changes, never applies the others'",
            Direction::ReceiveOnly => {
                "applies the others' changes; its own are not sent but undone (logged)"
            }
        }
    }
}

/// A host named in a host list: `[login@]host[+]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRef {
    /// The host's name, as the peers file knows it.
    pub name: String,
    /// rdist's remote login. omirrd has no remote login; kept for display.
    pub login: Option<String>,
    /// Where the name was written (inside a variable's definition when it
    /// came from one).
    pub pos: Pos,
}

/// A mirrored path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPath {
    /// The path as the Distfile names it, after expansion; absolute.
    pub source: PathBuf,
    /// Where the hosts of the set keep it: `source`, or the place an
    /// `install DEST` maps it to. Absolute; under `--root` on disk.
    pub target: PathBuf,
    /// Where the path was written.
    pub pos: Pos,
}

/// A name in `except` or `special`: a path (with everything below it) or a
/// glob pattern that is matched against paths as they appear.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// A name without glob characters: this absolute path and everything
    /// below it.
    Path(PathBuf),
    /// A name with glob characters, matched against a path or any of its
    /// ancestors.
    Glob(Pattern),
}

impl PathMatch {
    /// Whether `path` or one of its ancestors is named.
    pub fn matches(&self, path: &Path) -> bool {
        match self {
            PathMatch::Path(p) => path.starts_with(p),
            PathMatch::Glob(g) => g.matches_path_or_ancestor(path),
        }
    }
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathMatch::Path(p) => write!(f, "{}", p.display()),
            PathMatch::Glob(g) => write!(f, "{g}"),
        }
    }
}

/// A `special` or `cmdspecial` command.
#[derive(Debug, Clone)]
pub struct Special {
    /// Which paths trigger it; empty means every path of the set.
    pub names: Vec<PathMatch>,
    /// Run with `sh -c`.
    pub command: String,
    /// `cmdspecial`: once after a batch of updates, not once per file.
    pub once_per_batch: bool,
    /// Where the command was written.
    pub pos: Pos,
}

/// What omirrd makes of an rdist install option: what it does, or why it
/// is refused. `omirrd check` prints one or the other for every option a
/// Distfile uses, and the table in omirrd.conf(5) says the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionMeaning {
    /// Accepted; what it does for omirrd.
    Does(&'static str),
    /// An error: why the option cannot mean anything for omirrd.
    Refused(&'static str),
}

/// How many numbered generations `history` keeps.
pub const HISTORY_GENERATIONS: usize = 10;

/// Every rdist install option, in alphabetical order, with its meaning.
pub const INSTALL_OPTIONS: [(&str, OptionMeaning); 27] = {
    use OptionMeaning::{Does, Refused};
    [
        ("chknfs", Does("what lies on an NFS filesystem on this host (by /proc/self/mountinfo, at start and at each reload) is left out here: neither sent nor written; the other hosts mirror it among themselves")),
        ("chkreadonly", Does("always on: a read-only filesystem is found when a change is written; the peer's changes wait and are retried, and the error is logged")),
        ("chksym", Refused("keeping a symbolic link where the other hosts have a file would leave the hosts different for ever")),
        ("compare", Does("always on: contents are compared by BLAKE3 hash whenever size and times do not prove a file unchanged")),
        ("conflicts", Does("omirrd's own: when two hosts change a file and neither knew the other's change, the losing content is kept as NAME.conflict-HOST-TIME.EXT, mirrored, at most N copies per file (10 if not given), the oldest removed first; conflicts=0 keeps none")),
        ("defgroup", Does("a group name unknown on this host becomes this group (bin if no value is given) instead of the peer's group number")),
        ("defowner", Does("an owner name unknown on this host becomes this user (bin if no value is given) instead of the peer's user number")),
        ("follow", Refused("omirrd mirrors symbolic links as links; following them would copy files from outside the mirrored tree")),
        ("history", Does("a file that a peer's change replaces or removes is kept as NAME.OLD.1, older ones moving up to NAME.OLD.10; kept files stay on this host")),
        ("ignlnks", Refused("omirrd never resolves symbolic links, so there are no unresolved links to ignore")),
        ("noacls", Does("omirr's own: POSIX ACLs (the extended attributes system.posix_acl_access and system.posix_acl_default) are neither recorded nor set on this host; what it has stays, other extended attributes are still mirrored")),
        ("nochkgroup", Does("the group of a file or directory that exists on this host is left alone (its content still changes), and a change of group alone is not mirrored; a new file gets its creator's group")),
        ("nochkmode", Does("the permission bits of a file or directory that exists on this host are left alone (its content still changes), and a change of mode alone is not mirrored; a new file gets its creator's mode")),
        ("nochkowner", Does("the owner of a file or directory that exists on this host is left alone (its content still changes), and a change of owner alone is not mirrored; a new file gets its creator's owner")),
        ("nodescend", Does("only the listed paths themselves are mirrored (existence, owner, group, mode), not what lies below a listed directory")),
        ("noexec", Refused("omirrd chooses what to mirror by path, not by content; leave executables out with except or except_pat")),
        ("noxattrs", Does("omirr's own: extended attributes (user.*, security.* and trusted.* as root, and the POSIX ACLs) are neither recorded nor set on this host; what it has stays")),
        ("numchkgroup", Does("groups are mirrored by number (gid), not by name")),
        ("numchkowner", Does("owners are mirrored by number (uid), not by name")),
        ("quiet", Does("successful special, cmdspecial and notify runs are logged at debug level instead of info; failures are still warnings")),
        ("remove", Does("always on: a deletion on one host is mirrored to the others, with or without this option")),
        ("savetargets", Does("a file that a peer's change replaces or removes is kept as NAME.OLD; kept files stay on this host (never mirrored, never kept again)")),
        ("sparse", Does("always on: a file's runs of zeros (a sparse file's holes) are left as holes on the receiving host, and in a file of 1 MiB or more they are not sent")),
        ("updateperm", Does("always on: a change of owner, group or mode alone is applied without sending the content")),
        ("verify", Refused("a daemon that only reports differences would mirror nothing; omirrd check shows the plan and omirrd status the state")),
        ("whole", Does("with install DEST, each source is kept under DEST by its whole path (DEST/srv/www), not by its last name")),
        ("younger", Refused("omirrd orders changes by version, never by file time: a host refusing a newer version for an older mtime would stay different from the others for ever")),
    ]
};

/// What omirrd makes of the install option `name`, if rdist has one.
pub fn install_option(name: &str) -> Option<OptionMeaning> {
    INSTALL_OPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| *m)
}

/// rdist's install options (`install -o ...`). The refused ones (see
/// [`INSTALL_OPTIONS`]) are errors when parsed; a configuration that
/// parsed holds only options omirrd carries out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallOptions {
    /// `chknfs`: paths on an NFS filesystem on this host are left out here.
    pub chknfs: bool,
    /// `chkreadonly`: accepted, no effect (always on).
    pub chkreadonly: bool,
    /// `chksym`: refused, so always false in a parsed configuration.
    pub chksym: bool,
    /// `compare`: accepted, no effect (always on).
    pub compare: bool,
    /// `follow`: refused, so always false in a parsed configuration.
    pub follow: bool,
    /// `history`: replaced or removed files are kept as `NAME.OLD.1` to
    /// `NAME.OLD.`[`HISTORY_GENERATIONS`].
    pub history: bool,
    /// `ignlnks`: refused, so always false in a parsed configuration.
    pub ignlnks: bool,
    /// `noacls`: POSIX ACLs are neither recorded nor set on this host.
    pub noacls: bool,
    /// `nochkgroup`: the group of an existing file is left alone.
    pub nochkgroup: bool,
    /// `nochkmode`: the permission bits of an existing file are left alone.
    pub nochkmode: bool,
    /// `nochkowner`: the owner of an existing file is left alone.
    pub nochkowner: bool,
    /// `nodescend`: only the listed paths are mirrored, not what lies
    /// below them (see [`MirrorSet::is_excluded`]).
    pub nodescend: bool,
    /// `noexec`: refused, so always false in a parsed configuration.
    pub noexec: bool,
    /// `noxattrs`: extended attributes are neither recorded nor set on
    /// this host.
    pub noxattrs: bool,
    /// `numchkgroup`: groups are mirrored by gid, not by name.
    pub numchkgroup: bool,
    /// `numchkowner`: owners are mirrored by uid, not by name.
    pub numchkowner: bool,
    /// `quiet`: successful command and notify runs are logged at debug
    /// level.
    pub quiet: bool,
    /// `remove`: accepted, no effect (deletions are always mirrored).
    pub remove: bool,
    /// `savetargets`: replaced or removed files are kept as `NAME.OLD`.
    pub savetargets: bool,
    /// `sparse`: accepted, no effect (holes are always kept).
    pub sparse: bool,
    /// `updateperm`: accepted, no effect (always on).
    pub updateperm: bool,
    /// `verify`: refused, so always false in a parsed configuration.
    pub verify: bool,
    /// `whole`: with `install DEST`, a source is kept under DEST by its
    /// whole path, not its last name.
    pub whole: bool,
    /// `younger`: refused, so always false in a parsed configuration.
    pub younger: bool,
    /// `defowner[=USER]`: the owner given to files whose owner name is
    /// unknown here (`bin` if no value was given); `None`: keep the
    /// peer's uid.
    pub defowner: Option<String>,
    /// `defgroup[=GROUP]`: the group given to files whose group name is
    /// unknown here (`bin` if no value was given); `None`: keep the
    /// peer's gid.
    pub defgroup: Option<String>,
    /// `conflicts=N`: how many conflict copies to keep per file (omirrd's
    /// own option; `None`: [`DEFAULT_CONFLICT_COPIES`]).
    pub conflicts: Option<u32>,
}

/// How many conflict copies a set keeps per file unless `conflicts=N`
/// says otherwise (Syncthing's `maxConflicts` default is 10 too).
pub const DEFAULT_CONFLICT_COPIES: u32 = 10;

/// The largest `conflicts=N` accepted.
pub const MAX_CONFLICT_COPIES: u32 = 1000;

impl InstallOptions {
    /// The options that are set, in rdist's spelling, for display.
    pub fn names(&self) -> Vec<String> {
        let flags = [
            ("chknfs", self.chknfs),
            ("chkreadonly", self.chkreadonly),
            ("chksym", self.chksym),
            ("compare", self.compare),
            ("follow", self.follow),
            ("history", self.history),
            ("ignlnks", self.ignlnks),
            ("noacls", self.noacls),
            ("nochkgroup", self.nochkgroup),
            ("nochkmode", self.nochkmode),
            ("nochkowner", self.nochkowner),
            ("nodescend", self.nodescend),
            ("noexec", self.noexec),
            ("noxattrs", self.noxattrs),
            ("numchkgroup", self.numchkgroup),
            ("numchkowner", self.numchkowner),
            ("quiet", self.quiet),
            ("remove", self.remove),
            ("savetargets", self.savetargets),
            ("sparse", self.sparse),
            ("updateperm", self.updateperm),
            ("verify", self.verify),
            ("whole", self.whole),
            ("younger", self.younger),
        ];
        let mut out: Vec<String> = flags
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n.to_string())
            .collect();
        if let Some(o) = &self.defowner {
            out.push(format!("defowner={o}"));
        }
        if let Some(g) = &self.defgroup {
            out.push(format!("defgroup={g}"));
        }
        if let Some(n) = self.conflicts {
            out.push(format!("conflicts={n}"));
        }
        out
    }

    /// How many conflict copies to keep per file (0: none).
    pub fn conflict_copies(&self) -> u32 {
        self.conflicts.unwrap_or(DEFAULT_CONFLICT_COPIES)
    }
}

impl Config {
    /// The sets `host` takes part in.
    pub fn sets_for<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a MirrorSet> + 'a {
        self.sets.iter().filter(move |s| s.has_host(host))
    }

    /// Every host any set names, sorted, without repeats.
    pub fn hosts(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .sets
            .iter()
            .flat_map(|s| s.hosts.iter().map(|h| h.name.as_str()))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

impl MirrorSet {
    /// Whether the set names `host` in its host list.
    pub fn has_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.name == host)
    }

    /// Which way `host` takes part in this set.
    pub fn direction(&self, host: &str) -> Direction {
        self.one_way
            .iter()
            .find(|(h, _)| h.name == host)
            .map_or(Direction::Both, |(_, d)| *d)
    }

    /// The other hosts of this set, seen from `host`.
    pub fn peers_of<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a HostRef> + 'a {
        self.hosts.iter().filter(move |h| h.name != host)
    }

    /// Whether `path` (absolute, in the Distfile's namespace) is left out:
    /// by `except` or `except_pat`; below a listed directory with
    /// `nodescend`; or, with `savetargets` or `history`, a version kept by
    /// them (see [`is_kept_name`]), which stays on its host.
    pub fn is_excluded(&self, path: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        self.excludes.iter().any(|m| m.matches(path))
            || self
                .exclude_patterns
                .iter()
                .any(|r| r.is_match(path.as_os_str().as_bytes()))
            || (self.options.nodescend
                && !self.paths.iter().any(|p| p.source == path)
                && self.paths.iter().any(|p| path.starts_with(&p.source)))
            || (self.keeps_old() && path.file_name().is_some_and(|n| is_kept_name(n.as_bytes())))
    }

    /// Whether files a peer's change replaces are kept (`savetargets` or
    /// `history`).
    pub fn keeps_old(&self) -> bool {
        self.options.savetargets || self.options.history
    }
}

/// Whether `name` is one `savetargets` or `history` gives a kept version:
/// `NAME.OLD` or `NAME.OLD.N`.
pub fn is_kept_name(name: &[u8]) -> bool {
    if name.ends_with(b".OLD") {
        return true;
    }
    let digits = name.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && name[..name.len() - digits].ends_with(b".OLD.")
}

/// Parses a Distfile. `Ok` carries the configuration and its warnings;
/// `Err` carries every error found, with the warnings.
pub fn parse(
    text: &[u8],
    file: &Path,
    options: &ParseOptions,
) -> Result<(Config, Vec<Diagnostic>), Diagnostics> {
    let text = match std::str::from_utf8(text) {
        Ok(t) => t,
        Err(e) => {
            let valid = &text[..e.valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count() as u32
                + 1;
            return Err(Diagnostics(vec![Diagnostic::error(
                file,
                Pos::new(line, column),
                "invalid UTF-8: a Distfile must be UTF-8 text",
            )]));
        }
    };
    let (tokens, mut diags) = lex::lex(text, file);
    let (stmts, parse_diags) = parse::parse(tokens, file);
    diags.extend(parse_diags);
    let (sets, expand_diags) = expand::build(&stmts, file, options);
    diags.extend(expand_diags);
    diags.sort_by_key(|d| d.pos);
    if diags.iter().any(Diagnostic::is_error) {
        Err(Diagnostics(diags))
    } else {
        Ok((
            Config {
                file: file.to_path_buf(),
                sets,
            },
            diags,
        ))
    }
}
