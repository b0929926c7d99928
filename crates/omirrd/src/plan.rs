//! What this host mirrors with whom: the Distfile and the peers file,
//! loaded, cross-checked and explained. Shared by `omirrd check` and the
//! daemon's start-up, so both refuse exactly the same mistakes.

use crate::cli::DaemonArgs;
use omirr_config::distfile::{self, Config, Direction, MirrorSet, ParseOptions};
use omirr_config::peers::{Fingerprint, Peers};
use omirr_config::{Diagnostic, Pos};
use omirr_core::RelPath;
use omirr_fs::owners::{Check, MetaRules};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A configuration that loaded without errors.
#[derive(Clone)]
pub struct Plan {
    /// This host's name, as the Distfile and the peers file know it.
    pub host: String,
    pub root: std::path::PathBuf,
    pub config: Config,
    pub peers: Peers,
    pub warnings: Vec<Diagnostic>,
}

/// Loads and cross-checks the Distfile and the peers file. `Err` holds
/// every error found, with the warnings.
pub fn load(args: &DaemonArgs) -> Result<Plan, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let peers = read(&args.peers, &mut diags).and_then(|text| match String::from_utf8(text) {
        Ok(text) => collect(Peers::parse(&text, &args.peers), &mut diags),
        Err(_) => {
            diags.push(Diagnostic::error(
                &args.peers,
                Pos::default(),
                "not valid UTF-8: expected a text file",
            ));
            None
        }
    });
    // The peers file first: the Distfile's hosts are checked against it.
    let config = read(&args.config, &mut diags).and_then(|text| {
        let opts = ParseOptions {
            root: args.root.clone(),
            defines: args.define.clone(),
            known_hosts: peers
                .as_ref()
                .map(|p| p.iter().map(|peer| peer.name.clone()).collect()),
        };
        collect(distfile::parse(&text, &args.config, &opts), &mut diags)
    });
    match std::fs::metadata(&args.root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => diags.push(Diagnostic::error(
            &args.root,
            Pos::default(),
            "--root is not a directory",
        )),
        Err(e) => diags.push(Diagnostic::error(
            &args.root,
            Pos::default(),
            // "No such file or directory", without " (os error 2)".
            format!(
                "--root: {}",
                e.to_string().split(" (os error").next().unwrap_or("")
            ),
        )),
    }
    // chknfs: what lies on NFS here is left out here.
    let config = config.map(|mut config| {
        if config.sets.iter().any(|s| s.options.chknfs) {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let root = args
                .root
                .canonicalize()
                .unwrap_or_else(|_| args.root.clone());
            diags.extend(leave_out_nfs(
                &mut config,
                &nfs_mounts(&mountinfo, &root),
                &args.config,
            ));
        }
        config
    });
    let host = this_host(args, peers.as_ref());
    if let (Some(config), Some(peers)) = (&config, &peers) {
        if peers.get(&host).is_none() {
            diags.push(Diagnostic::error(
                &args.peers,
                Pos::default(),
                format!(
                    "this host, '{host}', has no line in the peers file, so omirrd does not know where to listen (use --host NAME if it goes by another name)"
                ),
            ));
        } else if config.sets_for(&host).next().is_none() {
            diags.push(Diagnostic::warning(
                &args.config,
                Pos::default(),
                format!("host '{host}' takes part in no mirror set: nothing to mirror"),
            ));
        }
    }
    match (config, peers) {
        (Some(config), Some(peers)) if !diags.iter().any(Diagnostic::is_error) => Ok(Plan {
            host,
            // Absolute, so that log lines and the watcher's paths agree.
            root: args
                .root
                .canonicalize()
                .unwrap_or_else(|_| args.root.clone()),
            config,
            peers,
            warnings: diags,
        }),
        _ => Err(diags),
    }
}

/// The NFS mount points (`nfs`, `nfs4`) of `mountinfo` (the text of
/// /proc/self/mountinfo) at or below `root`, as absolute paths of the
/// mirror's namespace (`root` taken off), with their filesystem type.
pub(crate) fn nfs_mounts(mountinfo: &str, root: &Path) -> Vec<(PathBuf, String)> {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(fstype) = right.split(' ').next() else {
            continue;
        };
        if fstype != "nfs" && fstype != "nfs4" {
            continue;
        }
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let point = PathBuf::from(std::ffi::OsString::from_vec(unescape_octal(point)));
        if let Ok(rest) = point.strip_prefix(root) {
            out.push((Path::new("/").join(rest), fstype.to_string()));
        }
    }
    out
}

/// mountinfo's `\ooo` escapes (a blank is `\040`).
fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// `chknfs`: each NFS mount at or below a path of a set with the option
/// becomes an exclusion of that set, with a warning that says so.
pub(crate) fn leave_out_nfs(
    config: &mut Config,
    mounts: &[(PathBuf, String)],
    file: &Path,
) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for set in config.sets.iter_mut().filter(|s| s.options.chknfs) {
        let mut left_out = Vec::new();
        for p in &set.paths {
            for (m, fstype) in mounts {
                let Ok(rest) = m.strip_prefix(&p.target) else {
                    continue;
                };
                let named = if rest.as_os_str().is_empty() {
                    p.source.clone()
                } else {
                    p.source.join(rest)
                };
                diags.push(Diagnostic::warning(
                    file,
                    set.pos,
                    format!(
                        "chknfs: {} is on {fstype} on this host: left out here (neither sent nor written)",
                        m.display()
                    ),
                ));
                left_out.push(distfile::PathMatch::Path(named));
            }
        }
        set.excludes.extend(left_out);
    }
    diags
}

/// Reads a file that decides what this host does; refuses one that group
/// or others can write.
fn read(path: &Path, diags: &mut Vec<Diagnostic>) -> Option<Vec<u8>> {
    match omirr_open::secure::read_secure(path) {
        Ok(text) => Some(text),
        Err(e) => {
            diags.push(Diagnostic::error(path, Pos::default(), e.to_string()));
            None
        }
    }
}

fn collect<T>(
    r: Result<(T, Vec<Diagnostic>), omirr_config::Diagnostics>,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    match r {
        Ok((v, warnings)) => {
            diags.extend(warnings);
            Some(v)
        }
        Err(e) => {
            diags.extend(e.0);
            None
        }
    }
}

/// `--host`, else the machine's host name; a fully qualified name that the
/// peers file knows only by its first label is accepted in that form.
fn this_host(args: &DaemonArgs, peers: Option<&Peers>) -> String {
    if let Some(h) = &args.host {
        return h.clone();
    }
    let full = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    match (full.split_once('.'), peers) {
        (Some((short, _)), Some(p)) if p.get(&full).is_none() && p.get(short).is_some() => {
            short.to_string()
        }
        _ => full,
    }
}

/// A Distfile path (absolute) as a path in the index's namespace.
pub fn rel(path: &Path) -> Option<RelPath> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.strip_prefix("/").ok()?.as_os_str().as_bytes().to_vec();
    RelPath::new(bytes).ok()
}

impl Plan {
    /// The sets this host takes part in, each with its paths as they are
    /// kept here (targets) and as the Distfile names them (sources).
    fn my_paths(&self) -> impl Iterator<Item = (&MirrorSet, RelPath, &Path)> {
        self.config.sets_for(&self.host).flat_map(|set| {
            set.paths
                .iter()
                .filter_map(move |p| rel(&p.target).map(|t| (set, t, p.source.as_path())))
        })
    }

    /// The mirrored trees of this host, relative to its root, without
    /// repeats or trees inside others.
    pub fn tops(&self) -> Vec<RelPath> {
        let mut tops: Vec<RelPath> = self.my_paths().map(|(_, t, _)| t).collect();
        tops.sort();
        tops.dedup();
        let all = tops.clone();
        tops.retain(|t| !all.iter().any(|o| t.is_below(o)));
        tops
    }

    /// The sets covering `path` (kept at a target at or above it), with
    /// the path as the Distfile would name it.
    pub(crate) fn covering<'a>(
        &'a self,
        path: &'a RelPath,
    ) -> impl Iterator<Item = (&'a MirrorSet, PathBuf)> + 'a {
        use std::os::unix::ffi::OsStrExt;
        self.my_paths().filter_map(move |(set, target, source)| {
            let rest = path.rebase(&target, &RelPath::root())?;
            let mut named = source.to_path_buf();
            if !rest.is_root() {
                named.push(std::ffi::OsStr::from_bytes(rest.as_bytes()));
            }
            Some((set, named))
        })
    }

    /// Whether an `except` or `except_pat` leaves `path` out: sets cover
    /// it and every one of them excludes it. A path no set covers is not
    /// "excluded" (the directories above a mirrored tree are walked
    /// through); it is simply not one of the [`Plan::tops`].
    pub fn excluded(&self, path: &RelPath) -> bool {
        let mut covered = false;
        let all_exclude = self.covering(path).all(|(set, named)| {
            covered = true;
            set.is_excluded(&named)
        });
        covered && all_exclude
    }

    /// Whether `peer` may change `path` on this host: a set covering it
    /// lists both hosts and does not exclude it.
    pub fn authorised(&self, peer: &str, path: &RelPath) -> bool {
        self.covering(path)
            .any(|(set, named)| set.has_host(peer) && !set.is_excluded(&named))
    }

    /// A path strictly below `path` that this host mirrors in a set that
    /// does not list `peer`, or that the sets listing `peer` exclude:
    /// what a tombstone or a file from `peer` at `path` would remove or
    /// hide, and `peer` may not.
    pub fn unshared_below(&self, peer: &str, path: &RelPath) -> Option<RelPath> {
        self.my_paths()
            .map(|(_, target, _)| target)
            .filter(|target| target.is_below(path))
            .find(|target| !self.authorised(peer, target))
    }

    /// Whether an overwritten file at `path` is kept (`savetargets`).
    pub fn savetargets(&self, path: &RelPath) -> bool {
        self.covering(path)
            .any(|(set, _)| set.options.savetargets || set.options.history)
    }

    /// Which way this host takes part in `path`: the direction the ruling
    /// set (see [`Plan::ruling_set`]) gives it; [`Direction::Both`]
    /// outside every set.
    pub fn direction(&self, path: &RelPath) -> Direction {
        self.ruling_set(path)
            .map_or(Direction::Both, |set| set.direction(&self.host))
    }

    /// How many conflict copies of the file at `path` are kept: its
    /// ruling set's `conflicts=N` (0 keeps none; no set: none).
    pub fn conflict_copies(&self, path: &RelPath) -> u32 {
        self.ruling_set(path)
            .map_or(0, |set| set.options.conflict_copies())
    }

    /// The set whose install options rule `path`: the first, in the
    /// Distfile's order, that covers it and does not leave it out.
    fn ruling_set<'a>(&'a self, path: &'a RelPath) -> Option<&'a MirrorSet> {
        self.covering(path)
            .find(|(set, named)| !set.is_excluded(named))
            .map(|(set, _)| set)
    }

    /// The mirrored trees this host shares with `peer` (a set lists
    /// both), relative to the root, without repeats or trees inside
    /// others: what `omirrd verify` compares with it.
    pub fn shared_tops(&self, peer: &str) -> Vec<RelPath> {
        let mut tops: Vec<RelPath> = self
            .my_paths()
            .filter(|(set, _, _)| set.has_host(peer))
            .map(|(_, t, _)| t)
            .collect();
        tops.sort();
        tops.dedup();
        let all = tops.clone();
        tops.retain(|t| !all.iter().any(|o| t.is_below(o)));
        tops
    }

    /// The hosts this host mirrors anything with.
    pub fn peer_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .config
            .sets_for(&self.host)
            .flat_map(|s| s.peers_of(&self.host).map(|h| h.name.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// A readable account of what this host mirrors with whom.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let me = self.peers.get(&self.host);
        let _ = writeln!(
            s,
            "host {} listens on {}, root {}",
            self.host,
            me.map_or_else(|| "?".to_string(), |p| p.address.to_string()),
            self.root.display()
        );
        for set in self.config.sets_for(&self.host) {
            self.describe_set(&mut s, set);
        }
        s
    }

    /// [`Plan::describe`] of one mirror set.
    fn describe_set(&self, s: &mut String, set: &MirrorSet) {
        let name = set
            .label
            .as_ref()
            .map_or_else(String::new, |l| format!(" '{l}'"));
        let _ = writeln!(
            s,
            "mirror set{name} ({}:{}):",
            self.config.file.display(),
            set.pos
        );
        let with: Vec<String> = set
            .peers_of(&self.host)
            .map(|h| match self.peers.get(&h.name) {
                Some(p) => format!("{} ({})", h.name, p.address),
                None => h.name.clone(),
            })
            .collect();
        let with = if with.is_empty() {
            "nobody (this host is the set's only member)".to_string()
        } else {
            with.join(", ")
        };
        let _ = writeln!(s, "  with       {with}");
        // Which way each host takes part, when any is one-way.
        if !set.one_way.is_empty() {
            for h in &set.hosts {
                let d = set.direction(&h.name);
                let me = if h.name == self.host {
                    " (this host)"
                } else {
                    ""
                };
                let _ = writeln!(
                    s,
                    "  direction  {}{me}: {}: {}",
                    h.name,
                    d.name(),
                    d.meaning()
                );
            }
        }
        for p in &set.paths {
            if p.target == p.source {
                let _ = writeln!(s, "  path       {}", p.source.display());
            } else {
                let _ = writeln!(
                    s,
                    "  path       {} (kept at {})",
                    p.source.display(),
                    p.target.display()
                );
            }
        }
        if set.paths.is_empty() {
            let _ = writeln!(s, "  path       (none matched under the root)");
        }
        for e in &set.excludes {
            let _ = writeln!(s, "  except     {e}");
        }
        for r in &set.exclude_patterns {
            let _ = writeln!(s, "  except_pat {}", r.as_str());
        }
        // Every option the statement gives, with what it does: the
        // refused ones never get here (they are errors).
        for name in set.options.names() {
            let bare = name.split('=').next().unwrap_or(&name);
            let does = match distfile::install_option(bare) {
                Some(distfile::OptionMeaning::Does(d)) => d,
                Some(distfile::OptionMeaning::Refused(why)) => why,
                None => "?",
            };
            let _ = writeln!(s, "  option     {name}: {does}");
        }
        for c in &set.commands {
            let kind = if c.once_per_batch {
                "cmdspecial"
            } else {
                "special"
            };
            let names = if c.names.is_empty() {
                "(every path)".to_string()
            } else {
                c.names
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(s, "  {kind:<10} {names}: {}", c.command);
        }
        if !set.notify.is_empty() {
            let _ = writeln!(s, "  notify     {}", set.notify.join(", "));
        }
    }
}

impl omirr_fs::owners::Rules for Plan {
    /// The install options of the set that rules `path` (see
    /// [`Plan::ruling_set`]); the defaults outside every set.
    fn rules(&self, path: &RelPath) -> MetaRules {
        self.ruling_set(path)
            .map(|set| meta_rules(&set.options))
            .unwrap_or_default()
    }

    fn undoes_local_changes(&self, path: &RelPath) -> bool {
        self.direction(path) == Direction::ReceiveOnly
    }
}

/// The owner, group, mode, extended attribute and history rules of a
/// set's install options.
pub fn meta_rules(o: &distfile::InstallOptions) -> MetaRules {
    let check = |no: bool, num: bool| match (no, num) {
        (true, _) => Check::Keep,
        (false, true) => Check::ByNumber,
        (false, false) => Check::ByName,
    };
    MetaRules {
        owner: check(o.nochkowner, o.numchkowner),
        group: check(o.nochkgroup, o.numchkgroup),
        keep_mode: o.nochkmode,
        keep_xattrs: o.noxattrs,
        keep_acls: o.noacls,
        defowner: o.defowner.clone(),
        defgroup: o.defgroup.clone(),
        history: if o.history {
            distfile::HISTORY_GENERATIONS
        } else {
            0
        },
    }
}

/// `omirrd check`: every diagnostic, then the plan; success only without
/// errors.
pub fn check(args: &DaemonArgs) -> ExitCode {
    let (plan, mut diags) = match load(args) {
        Ok(mut plan) => {
            let w = std::mem::take(&mut plan.warnings);
            (Some(plan), w)
        }
        Err(d) => (None, d),
    };
    if let Some(plan) = &plan {
        diags.extend(check_identity(args, plan));
    }
    for d in &diags {
        eprintln!("{d}");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    match &plan {
        Some(plan) if errors == 0 => {
            print!("{}", plan.describe());
            match args.tombstone_horizon.0 {
                Some(_) => println!(
                    "deletions are remembered for {} (--tombstone-horizon); a host away for longer reconciles when it comes back",
                    args.tombstone_horizon
                ),
                None => println!("deletions are remembered for ever (--tombstone-horizon never)"),
            }
            println!("ok: {warnings} warning(s)");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("omirrd check: {errors} error(s), {warnings} warning(s)");
            ExitCode::FAILURE
        }
    }
}

/// Compares this host's key, when it has one, with what the peers file
/// pins for it: a mismatch means every peer will refuse this host.
fn check_identity(args: &DaemonArgs, plan: &Plan) -> Vec<Diagnostic> {
    let key = args.state_dir.join(omirr_net::identity::KEY_FILE);
    if !key.exists() {
        return Vec::new();
    }
    match omirr_net::identity::load(&args.state_dir) {
        Err(e) => vec![Diagnostic::error(&key, Pos::default(), e.to_string())],
        Ok(id) => pin_mismatch(args, plan, &id.fingerprint)
            .into_iter()
            .collect(),
    }
}

/// An error if the peers file pins another key for this host.
pub fn pin_mismatch(args: &DaemonArgs, plan: &Plan, ours: &Fingerprint) -> Option<Diagnostic> {
    let me = plan.peers.get(&plan.host)?;
    match me.fingerprint {
        Some(pinned) if pinned != *ours => Some(Diagnostic::error(
            &args.peers,
            Pos::new(me.line, 1),
            format!(
                "the peers file pins {pinned} for '{}', but this host's key is {ours}: every peer will refuse it (fix the peers file everywhere, or restore the key)",
                plan.host
            ),
        )),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;
    use omirr_testkit::p;

    /// A plan from `distfile` for `host` of hosts a, b and c, rooted in
    /// the returned temporary directory. Also used by other modules' tests.
    pub(crate) fn plan(host: &str, distfile: &str) -> (Plan, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .expect("chmod");
            p
        };
        let conf = write("conf", distfile);
        let peers = write("peers", "a 127.0.0.1:1\nb 127.0.0.1:2\nc 127.0.0.1:3\n");
        let cli = crate::cli::Cli::parse_from([
            "omirrd",
            "--config",
            conf.to_str().expect("utf-8"),
            "--peers",
            peers.to_str().expect("utf-8"),
            "--host",
            host,
            "--root",
            dir.path().to_str().expect("utf-8"),
        ]);
        match load(&cli.daemon) {
            Ok(p) => (p, dir),
            Err(d) => panic!("{d:?}"),
        }
    }

    const CONF: &str = "( /srv/www /srv/www/static /etc/app ) -> ( a b )\n\texcept /srv/www/tmp ;\n\texcept_pat ( \\\\.swp$ ) ;\n\tinstall -osavetargets ;\n/srv/www/static -> ( a c )\n/opt/x -> ( b c )\n\tinstall /opt/y ;\n";

    #[test]
    fn tops_authorisation_and_exclusion() {
        let (plan, _dir) = plan("a", CONF);
        assert_eq!(plan.tops(), [p("etc/app"), p("srv/www")]);
        assert_eq!(plan.peer_names(), ["b", "c"]);
        assert!(plan.authorised("b", &p("srv/www/index.html")));
        assert!(
            !plan.authorised("c", &p("srv/www/index.html")),
            "c shares only static"
        );
        assert!(plan.authorised("c", &p("srv/www/static/logo.png")));
        assert!(!plan.authorised("b", &p("srv/www/tmp/x")), "excluded");
        assert!(
            !plan.authorised("b", &p("etc/passwd")),
            "not mirrored at all"
        );
        assert!(plan.excluded(&p("srv/www/tmp/x")));
        assert!(plan.excluded(&p("srv/www/.a.swp")));
        assert!(
            !plan.excluded(&p("srv/www/static/tmp")),
            "only /srv/www/tmp is excluded"
        );
        assert!(!plan.excluded(&p("srv")), "walked through to reach srv/www");
        assert!(!plan.authorised("b", &p("var/log")), "outside every set");
        assert!(plan.savetargets(&p("srv/www/index.html")));
        assert!(
            plan.savetargets(&p("srv/www/static/x")),
            "one covering set keeps them"
        );
    }

    /// The first covering set's `conflicts=N` bounds the conflict copies
    /// of a path (10 when not given); `check` shows the option.
    #[test]
    fn the_ruling_set_bounds_conflict_copies_and_check_shows_it() {
        let conf = "/srv/www/static -> ( a c )\n\tinstall -oconflicts=0 ;\n/srv/www -> ( a b )\n\tinstall -oconflicts=3 ;\n/etc/app -> ( a b )\n";
        let (plan, _dir) = plan("a", conf);
        assert_eq!(plan.conflict_copies(&p("srv/www/static/logo.png")), 0);
        assert_eq!(plan.conflict_copies(&p("srv/www/index.html")), 3);
        assert_eq!(
            plan.conflict_copies(&p("etc/app/x")),
            distfile::DEFAULT_CONFLICT_COPIES
        );
        assert_eq!(plan.conflict_copies(&p("var/x")), 0, "mirrored nowhere");
        let shown = plan.describe();
        assert!(
            shown.contains("  option     conflicts=3: omirrd's own: when two hosts change a file")
                && shown.contains("  option     conflicts=0: "),
            "{shown}"
        );
    }

    /// The install options of the first set that covers a path and does
    /// not leave it out rule its owner, group, mode and history.
    #[test]
    fn the_first_covering_set_rules_owners_modes_and_history() {
        use omirr_fs::owners::Rules;
        let conf = "/srv/www/static -> ( a c )\n\tinstall -onochkowner,numchkgroup,nochkmode,defowner=daemon ;\n\texcept /srv/www/static/own ;\n/srv/www -> ( a b )\n\tinstall -ohistory ;\n";
        let (plan, _dir) = plan("a", conf);
        let r = plan.rules(&p("srv/www/static/logo.png"));
        assert_eq!(
            (r.owner, r.group, r.keep_mode),
            (Check::Keep, Check::ByNumber, true)
        );
        assert_eq!(r.defowner.as_deref(), Some("daemon"));
        assert_eq!(r.history, 0, "the first set keeps no history");
        // Left out of the first set: the second rules it.
        let r = plan.rules(&p("srv/www/static/own/x"));
        assert_eq!((r.owner, r.keep_mode), (Check::ByName, false));
        assert_eq!(r.history, distfile::HISTORY_GENERATIONS);
        assert_eq!(plan.rules(&p("srv/www/index.html")).history, 10);
        assert!(
            plan.savetargets(&p("srv/www/static/logo.png")),
            "any set keeps"
        );
        // Outside every set: the defaults.
        assert_eq!(plan.rules(&p("etc/passwd")), MetaRules::default());
        // Kept versions are this host's alone.
        assert!(plan.excluded(&p("srv/www/index.html.OLD.3")));
        assert!(!plan.authorised("b", &p("srv/www/index.html.OLD")));
        assert!(plan.authorised("b", &p("srv/www/index.html")));
    }

    /// chknfs: an NFS mount below a set's path is left out of that set
    /// (of that set only), also where `install DEST` maps it.
    #[test]
    fn chknfs_leaves_out_what_is_on_nfs_here() {
        let mountinfo = "22 27 0:21 / /proc rw - proc proc rw\n\
            90 27 0:50 / /r/srv/www/shared\\040dir rw - nfs4 server:/x rw\n\
            91 27 0:51 / /r/opt/y/mnt rw - nfs server:/y rw\n\
            92 27 0:52 / /elsewhere rw - nfs server:/z rw\n\
            93 27 0:53 / /r/srv/www/local rw - ext4 /dev/sda1 rw\n";
        let mounts = nfs_mounts(mountinfo, Path::new("/r"));
        assert_eq!(
            mounts,
            [
                (PathBuf::from("/srv/www/shared dir"), "nfs4".to_string()),
                (PathBuf::from("/opt/y/mnt"), "nfs".to_string())
            ]
        );
        let conf = "/srv/www -> ( a b )\n\tinstall -ochknfs ;\n/srv/www/shared\\ dir/sub -> ( a c )\n/opt/x -> ( a b )\n\tinstall -ochknfs /opt/y ;\n";
        let (mut plan, _dir) = plan("a", conf);
        let warnings = leave_out_nfs(&mut plan.config, &mounts, Path::new("conf"));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            plan.excluded(&p("opt/y/mnt/f")),
            "kept at /opt/y, named /opt/x"
        );
        assert!(!plan.excluded(&p("opt/y/other")));
        assert!(!plan.authorised("b", &p("srv/www/shared dir/f")));
        assert!(plan.authorised("b", &p("srv/www/index.html")));
        // The other set, without chknfs, still mirrors its part with c.
        assert!(plan.authorised("c", &p("srv/www/shared dir/sub/f")));
    }

    #[test]
    fn one_way_sets_give_each_path_this_hosts_direction_and_check_shows_it() {
        let conf =
            "/srv/www -> ( a b c )\n\tsendonly a ;\n\treceiveonly ( b ) ;\n/etc/app -> ( a b )\n";
        let (plan_a, _dir) = plan("a", conf);
        assert_eq!(
            plan_a.direction(&p("srv/www/index.html")),
            Direction::SendOnly
        );
        assert_eq!(plan_a.direction(&p("etc/app/x")), Direction::Both);
        assert_eq!(plan_a.direction(&p("var/x")), Direction::Both, "no set");
        let (plan_b, _dir) = plan("b", conf);
        assert_eq!(plan_b.direction(&p("srv/www")), Direction::ReceiveOnly);
        assert_eq!(plan_b.direction(&p("etc/app/x")), Direction::Both);
        let (plan_c, _dir) = plan("c", conf);
        assert_eq!(plan_c.direction(&p("srv/www/x")), Direction::Both);
        let shown = plan_b.describe();
        assert!(
            shown.contains(
                "  direction  a: sendonly: sends its changes, never applies the others'\n"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("  direction  b (this host): receiveonly: "),
            "{shown}"
        );
        assert!(shown.contains("  direction  c: both: "), "{shown}");
        // The symmetric set shows no directions.
        assert_eq!(shown.matches("direction").count(), 3, "{shown}");
    }

    #[test]
    fn destinations_are_where_paths_live() {
        let (plan, _dir) = plan("c", CONF);
        assert_eq!(plan.tops(), [p("opt/y"), p("srv/www/static")]);
        assert!(plan.authorised("b", &p("opt/y/bin")));
        assert!(!plan.authorised("b", &p("opt/x/bin")));
    }

    #[test]
    fn nested_sets_a_peer_is_not_part_of_are_found_below_a_path() {
        // The issue's case: c shares /srv/www but not /srv/www/private,
        // which one statement excludes and another mirrors with b only.
        let conf =
            "/srv/www -> ( a b c )\n\texcept /srv/www/private ;\n/srv/www/private -> ( a b )\n";
        let (plan, _dir) = plan("a", conf);
        assert_eq!(
            plan.unshared_below("c", &p("srv/www")),
            Some(p("srv/www/private"))
        );
        assert_eq!(
            plan.unshared_below("c", &p("srv")),
            Some(p("srv/www/private"))
        );
        assert_eq!(
            plan.unshared_below("b", &p("srv/www")),
            None,
            "b is in both"
        );
        assert_eq!(plan.unshared_below("c", &p("srv/www/x")), None);
        assert_eq!(
            plan.unshared_below("c", &p("srv/www/private")),
            None,
            "strictly below"
        );
        // In CONF, c shares static only; b shares www and static.
        let (plan, _dir) = self::plan("a", CONF);
        assert_eq!(plan.unshared_below("b", &p("srv/www")), None);
        assert_eq!(plan.unshared_below("c", &p("srv/www/static")), None);
    }
}
