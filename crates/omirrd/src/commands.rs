//! The Distfile's commands: `special`, `cmdspecial` and `notify`, run on
//! this host after a peer's batch has been applied here.
//!
//! This module owns what happens between "the applier changed these paths
//! on disk" and "the administrator's commands ran and the outcome is in the
//! log". It never touches the index or the disk lock, and nothing it does
//! can fail the session: every outcome, good or bad, ends as a log line.
//!
//! What counts, derived from the applied [`Action`]s ([`effects`]), the
//! last action on a path winning:
//! - *updated*: `WriteFile`, `MakeSymlink`, `SetMeta`, `MakeDir` and the
//!   `to` of a `Rename`;
//! - *removed*: `Remove` and the `from` of a `Rename`;
//! - `SaveOld` is ignored: the `.OLD` copy is a by-product, not a change
//!   the peer made.
//!
//! Who gets what, for each set that covers a path and does not exclude it:
//! - `special` runs once per updated path it names (no names: every path
//!   of the set), in path order, with `FILE` (the path on this host's disk,
//!   under `--root`), `REMFILE` (the path as the Distfile names it, which
//!   is the peer's view when `install DEST` maps it) and `BASEFILE` (the
//!   last component). As in rdist, it runs for installed files: not for a
//!   path that is a directory when the command's turn comes (a directory's
//!   metadata changes with every entry added to it), not for a removal,
//!   and not for a path that is gone by then;
//! - `cmdspecial` runs once per set and batch if any path it names was
//!   updated or removed (deleting a `conf.d` file needs a reload as much as
//!   writing one), with `FILES` = the updated files it names, separated by
//!   blanks and quoted for sh(1) where needed (see [`join`]), and, an omirr
//!   extension, `REMOVED` = the removed ones likewise;
//! - `notify` reports every updated or removed path, directories included:
//!   one mail per address through `sendmail -t -oi` if a mailer is
//!   installed, otherwise one INFO log line per address.
//!
//! How, so that a burst of changes cannot hurt the daemon: each set with
//! commands or addresses has one worker thread that runs its jobs one at a
//! time, fed by a bounded queue of batches ([`Settings::queue`]); a full
//! queue drops that batch's commands with a warning rather than hold up
//! the session. So 10,000 updated files run a matching `special` 10,000
//! times, but one after another, never 10,000 shells at once. Every
//! command has a time limit ([`Settings::timeout`], 5 minutes by default):
//! then its process group gets SIGTERM, and SIGKILL
//! [`crate::process::KILL_GRACE`] later ([`crate::process`] runs each
//! one). Threads rather than tokio tasks: the work is blocking process
//! handling, and the caller, async or not, only classifies paths and
//! queues a job.
//!
//! Who holds the runner: the daemon, one [`Commands`] for the
//! configuration in force, built with the plan and built anew when SIGHUP
//! brings a new plan (see `crate::daemon`); the old runner's workers
//! finish what they have queued, then end. So commands run one at a time
//! per set across all peers' sessions.

use crate::plan::Plan;
use crate::process::{run, shell, Outcome};
use omirr_config::distfile::{MirrorSet, Special};
use omirr_core::path::escape;
use omirr_core::{Action, RelPath};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::Duration;

/// How long a command may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Batches waiting per set.
const QUEUE: usize = 256;
/// Files named in a notify log line, and in a notify mail.
const LOG_FILES: usize = 10;
const MAIL_FILES: usize = 1000;

/// How commands are run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The time limit of every command, `sendmail` included.
    pub timeout: Duration,
    /// The `sendmail` program for `notify`; `None`: notify logs instead.
    pub mailer: Option<PathBuf>,
    /// Batches waiting per set before new ones are dropped.
    pub queue: usize,
}

impl Settings {
    /// The defaults, with the mailer this host has.
    pub fn from_system() -> Settings {
        Settings {
            timeout: TIMEOUT,
            mailer: find_mailer(),
            queue: QUEUE,
        }
    }
}

/// `/usr/sbin/sendmail`, else `sendmail` in `PATH`, if executable.
pub fn find_mailer() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let fixed = PathBuf::from("/usr/sbin/sendmail");
    if executable(&fixed) {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("sendmail"))
        .find(|p| executable(p))
}

/// What a batch did to a path, as far as commands care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Updated,
    Removed,
}

/// The paths a batch's actions changed on disk, and how (see the module
/// documentation for which actions count).
pub fn effects(actions: &[Action]) -> BTreeMap<RelPath, Effect> {
    let mut out = BTreeMap::new();
    for a in actions {
        match a {
            Action::SaveOld { .. } => {}
            Action::Remove { path, .. } => {
                out.insert(path.clone(), Effect::Removed);
            }
            Action::Rename { from, to, .. } => {
                out.insert(from.clone(), Effect::Removed);
                out.insert(to.clone(), Effect::Updated);
            }
            Action::MakeDir { path, .. }
            | Action::WriteFile { path, .. }
            | Action::MakeSymlink { path, .. }
            | Action::MakeFifo { path, .. }
            | Action::Link { to: path, .. }
            | Action::SetMeta { path, .. } => {
                out.insert(path.clone(), Effect::Updated);
            }
            Action::KeepConflictCopy { copy, prune, .. } => {
                out.insert(copy.clone(), Effect::Updated);
                for old in prune {
                    out.insert(old.clone(), Effect::Removed);
                }
            }
        }
    }
    out
}

/// Runs the Distfile's commands for this host's sets; see the module
/// documentation.
pub struct Commands {
    plan: Plan,
    /// A worker's queue per set of `plan.config.sets`, for the sets this
    /// host is in that have commands or addresses.
    queues: Vec<Option<SyncSender<Job>>>,
    /// Their length, for the log.
    queue: usize,
    #[cfg_attr(not(test), allow(dead_code))]
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// One batch's paths for one set.
struct Job {
    peer: String,
    items: Vec<Item>,
}

struct Item {
    rel: RelPath,
    /// As the Distfile names it.
    named: PathBuf,
    effect: Effect,
}

impl Commands {
    /// Starts a worker per set of this host with commands or addresses.
    pub fn new(plan: &Plan, settings: Settings) -> Commands {
        let mut queues = Vec::new();
        let mut workers = Vec::new();
        for set in &plan.config.sets {
            if !set.has_host(&plan.host) || (set.commands.is_empty() && set.notify.is_empty()) {
                queues.push(None);
                continue;
            }
            let at = format!("{}:{}", plan.config.file.display(), set.pos);
            let (tx, rx) = mpsc::sync_channel::<Job>(settings.queue.max(1));
            let work = SetWork {
                set: set.clone(),
                at: at.clone(),
                host: plan.host.clone(),
                root: plan.root.clone(),
                settings: settings.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("omirrd-cmd-{}", set.pos.line))
                .spawn(move || {
                    for job in rx {
                        work.run(&job);
                    }
                });
            match spawned {
                Ok(handle) => {
                    queues.push(Some(tx));
                    workers.push(handle);
                }
                Err(e) => {
                    tracing::warn!(set = %at, "cannot start a thread for this set's commands, which will not run: {e}");
                    queues.push(None);
                }
            }
        }
        let notifies = plan
            .config
            .sets_for(&plan.host)
            .any(|s| !s.notify.is_empty());
        match &settings.mailer {
            Some(m) if notifies => tracing::info!("notify mails through {}", m.display()),
            // Said once, so that nobody waits for mail that cannot come.
            None if notifies => {
                tracing::info!("no sendmail on this host: notify writes to this log instead")
            }
            _ => {}
        }
        Commands {
            plan: plan.clone(),
            queues,
            queue: settings.queue.max(1),
            workers,
        }
    }

    /// Queues the commands for what `peer`'s batch did (its applied
    /// `actions`). Returns at once: never waits for a command, nor for a
    /// full queue.
    pub fn after_batch(&self, peer: &str, actions: &[Action]) {
        if self.queues.iter().all(Option::is_none) {
            return;
        }
        let mut jobs: Vec<Vec<Item>> = self.queues.iter().map(|_| Vec::new()).collect();
        for (rel, effect) in effects(actions) {
            for (set, named) in self.plan.covering(&rel) {
                let Some(i) = self.set_index(set) else {
                    continue;
                };
                // A set listing the path twice (a path and one inside it)
                // covers it twice; once is enough.
                if self.queues[i].is_none()
                    || set.is_excluded(&named)
                    || jobs[i].last().is_some_and(|it| it.rel == rel)
                {
                    continue;
                }
                jobs[i].push(Item {
                    rel: rel.clone(),
                    named,
                    effect,
                });
            }
        }
        for (i, items) in jobs.into_iter().enumerate() {
            let Some(queue) = &self.queues[i] else {
                continue;
            };
            if items.is_empty() {
                continue;
            }
            let n = items.len();
            let job = Job {
                peer: peer.to_string(),
                items,
            };
            let at = || {
                format!(
                    "{}:{}",
                    self.plan.config.file.display(),
                    self.plan.config.sets[i].pos
                )
            };
            match queue.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => tracing::warn!(
                    %peer, set = %at(),
                    "this set's commands are {} batches behind: not running them for {n} path(s) of this batch",
                    self.queue
                ),
                Err(TrySendError::Disconnected(_)) => tracing::warn!(
                    %peer, set = %at(),
                    "this set's command thread has stopped: not running its commands for {n} path(s)"
                ),
            }
        }
    }

    /// Which of the plan's sets `set` is: `covering` hands out references
    /// into our own plan.
    fn set_index(&self, set: &MirrorSet) -> Option<usize> {
        self.plan
            .config
            .sets
            .iter()
            .position(|s| std::ptr::eq(s, set))
    }

    /// Lets the workers finish what is queued and waits for them.
    #[cfg(test)]
    fn finish(self) {
        drop(self.queues);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// One set's commands, on its worker thread.
struct SetWork {
    set: MirrorSet,
    /// `file:line:column` of the set, for the log.
    at: String,
    host: String,
    root: PathBuf,
    settings: Settings,
}

impl SetWork {
    fn run(&self, job: &Job) {
        let peer = job.peer.as_str();
        let local = |it: &Item| {
            if it.rel.is_root() {
                self.root.clone()
            } else {
                self.root.join(OsStr::from_bytes(it.rel.as_bytes()))
            }
        };
        // Installed files only: see the module documentation.
        let installed = |it: &Item| {
            it.effect == Effect::Updated
                && std::fs::symlink_metadata(local(it)).is_ok_and(|m| !m.is_dir())
        };
        let names = |c: &Special, it: &Item| {
            c.names.is_empty() || c.names.iter().any(|m| m.matches(&it.named))
        };
        let specials: Vec<&Special> = self
            .set
            .commands
            .iter()
            .filter(|c| !c.once_per_batch)
            .collect();
        if !specials.is_empty() {
            for it in job.items.iter().filter(|it| installed(it)) {
                for c in specials.iter().filter(|c| names(c, it)) {
                    let file = local(it);
                    let mut cmd = shell(&c.command);
                    cmd.env("FILE", &file)
                        .env("REMFILE", &it.named)
                        .env("BASEFILE", OsStr::from_bytes(it.rel.file_name()))
                        .env_remove("FILES")
                        .env_remove("REMOVED");
                    let outcome = run(cmd, None, self.settings.timeout);
                    self.report("special", &c.command, peer, &shown(&file), &outcome);
                }
            }
        }
        for c in self.set.commands.iter().filter(|c| c.once_per_batch) {
            let mut files = Vec::new();
            let mut removed = Vec::new();
            for it in job.items.iter().filter(|it| names(c, it)) {
                if it.effect == Effect::Removed {
                    removed.push(local(it));
                } else if installed(it) {
                    files.push(local(it));
                }
            }
            if files.is_empty() && removed.is_empty() {
                continue;
            }
            let mut cmd = shell(&c.command);
            cmd.env("FILES", join(&files))
                .env("REMOVED", join(&removed))
                .env_remove("FILE")
                .env_remove("REMFILE")
                .env_remove("BASEFILE");
            let outcome = run(cmd, None, self.settings.timeout);
            let what = format!("{} updated, {} removed file(s)", files.len(), removed.len());
            self.report("cmdspecial", &c.command, peer, &what, &outcome);
        }
        if !self.set.notify.is_empty() {
            let listed: Vec<String> = job
                .items
                .iter()
                .map(|it| listed(&shown(&local(it)), it.effect))
                .collect();
            self.notify(peer, &listed);
        }
    }

    fn notify(&self, peer: &str, listed: &[String]) {
        for address in &self.set.notify {
            let Some(mailer) = &self.settings.mailer else {
                tracing::info!(%peer, set = %self.at, "{}", notice_line(address, &self.host, peer, listed, LOG_FILES));
                continue;
            };
            let message = mail(address, &self.host, peer, &self.at, listed);
            let mut cmd = Command::new(mailer);
            // -t: the recipient comes from the To: header, so an address
            // is never read as an option; -oi: a line "." is not the end.
            cmd.args(["-t", "-oi"]);
            let outcome = run(cmd, Some(message), self.settings.timeout);
            let what = format!("mail to {address} ({} file(s))", listed.len());
            self.report(
                "notify",
                &mailer.display().to_string(),
                peer,
                &what,
                &outcome,
            );
        }
    }

    fn report(&self, kind: &str, command: &str, peer: &str, what: &str, o: &Outcome) {
        if o.ok() && self.set.options.quiet {
            tracing::debug!(%peer, set = %self.at, command = ?command, "{kind} for {what}: {}", o.summary());
        } else if o.ok() {
            tracing::info!(%peer, set = %self.at, command = ?command, "{kind} for {what}: {}", o.summary());
        } else {
            tracing::warn!(%peer, set = %self.at, command = ?command, "{kind} for {what}: {}", o.summary());
        }
    }
}

/// Paths for `FILES` and `REMOVED`: separated by blanks, as rdist's, and
/// each quoted for sh(1) when it holds anything but letters, digits and
/// `/._-+,:@%=`, so that every name (blanks, colons, quotes and newlines
/// included) comes back exactly with `eval "set -- $FILES"`, while a list
/// of ordinary names reads as rdist's (`for f in $FILES`).
fn join(paths: &[PathBuf]) -> OsString {
    let mut out = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        sh_quote(p.as_os_str().as_bytes(), &mut out);
    }
    OsString::from_vec(out)
}

/// `word` as one sh(1) word: as it is if that is safe, else in single
/// quotes, each `'` written `'\''`.
fn sh_quote(word: &[u8], out: &mut Vec<u8>) {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(b);
    if !word.is_empty() && word.iter().all(plain) {
        out.extend_from_slice(word);
        return;
    }
    out.push(b'\'');
    for &b in word {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

/// A path for the log or a mail: one line, whatever its bytes.
fn shown(path: &Path) -> String {
    escape(path.as_os_str().as_bytes())
}

fn listed(shown: &str, effect: Effect) -> String {
    match effect {
        Effect::Updated => shown.to_string(),
        Effect::Removed => format!("{shown} (removed)"),
    }
}

fn subject(host: &str, peer: &str, n: usize) -> String {
    let files = if n == 1 { "file" } else { "files" };
    format!("omirrd: {n} {files} updated on {host} from {peer}")
}

/// The log line `notify` writes for `address` when there is no mailer:
/// the mail's subject and the first `cap` files.
pub(crate) fn notice_line(
    address: &str,
    host: &str,
    peer: &str,
    listed: &[String],
    cap: usize,
) -> String {
    let mut s = format!(
        "notify {address}: {}: {}",
        subject(host, peer, listed.len()),
        listed
            .iter()
            .take(cap)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if listed.len() > cap {
        let _ = write!(s, " and {} more", listed.len() - cap);
    }
    s
}

/// The message handed to `sendmail -t`.
pub(crate) fn mail(to: &str, host: &str, peer: &str, at: &str, listed: &[String]) -> Vec<u8> {
    // Header values from the Distfile and the peers file, kept to one line.
    let one_line = |s: &str| s.replace(|c: char| c.is_control(), " ");
    let mut m = String::new();
    let _ = write!(
        m,
        "To: {}\nSubject: {}\nAuto-Submitted: auto-generated\nContent-Type: text/plain; charset=utf-8\n\n",
        one_line(to),
        one_line(&subject(host, peer, listed.len()))
    );
    let _ = writeln!(
        m,
        "Changes from {peer} applied on {host} (mirror set {at}):\n"
    );
    for l in listed.iter().take(MAIL_FILES) {
        let _ = writeln!(m, "{l}");
    }
    if listed.len() > MAIL_FILES {
        let _ = writeln!(m, "... and {} more", listed.len() - MAIL_FILES);
    }
    m.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Status;
    use omirr_core::{Content, Meta, Source};
    use omirr_testkit::p;

    fn write(path: &str) -> Action {
        Action::WriteFile {
            path: p(path),
            size: 0,
            hash: [0; 32],
            meta: Meta::default(),
            source: Source::Fetch,
        }
    }

    fn settings(timeout: Duration) -> Settings {
        Settings {
            timeout,
            mailer: None,
            queue: QUEUE,
        }
    }

    /// Host a's plan for `distfile`, in which `OUT` stands for a scratch
    /// directory; `files` are created under the root (directories for
    /// names ending in '/').
    struct Setup {
        plan: Plan,
        out: tempfile::TempDir,
        _root: tempfile::TempDir,
    }

    fn setup(distfile: &str, files: &[&str]) -> Setup {
        let out = tempfile::tempdir().expect("tempdir");
        let text = distfile.replace("OUT", out.path().to_str().expect("utf-8"));
        let (plan, root) = crate::plan::tests::plan("a", &text);
        for f in files {
            let full = plan.root.join(f.trim_end_matches('/'));
            if f.ends_with('/') {
                std::fs::create_dir_all(&full).expect("mkdir");
            } else {
                std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
                std::fs::write(&full, b"x").expect("write");
            }
        }
        Setup {
            plan,
            out,
            _root: root,
        }
    }

    impl Setup {
        /// Runs `peer`'s batch through the commands and waits for them.
        fn after(&self, actions: &[Action], timeout: Duration) {
            let c = Commands::new(&self.plan, settings(timeout));
            c.after_batch("b", actions);
            c.finish();
        }

        /// The lines a command wrote to OUT/`name`; `None` if it never ran.
        fn lines(&self, name: &str) -> Option<Vec<String>> {
            let text = std::fs::read_to_string(self.out.path().join(name)).ok()?;
            Some(text.lines().map(str::to_string).collect())
        }

        fn local(&self, rel: &str) -> String {
            self.plan
                .root
                .join(rel)
                .to_str()
                .expect("utf-8")
                .to_string()
        }
    }

    const SPECIALS: &str = "/srv/www -> ( a b )\n\tinstall /srv/site ;\n\tspecial /srv/www/a.conf \"echo $FILE $REMFILE $BASEFILE >> OUT/special\" ;\n\tspecial ( /srv/www/other /srv/www/*.txt ) \"echo $FILE >> OUT/nomatch\" ;\n/srv/else -> ( a c )\n\tspecial \"echo $FILE >> OUT/else\" ;\n";

    #[test]
    fn special_runs_for_a_matching_file_with_its_environment() {
        let s = setup(SPECIALS, &["srv/site/a.conf", "srv/site/b.conf"]);
        s.after(
            &[write("srv/site/a.conf"), write("srv/site/b.conf")],
            TIMEOUT,
        );
        assert_eq!(
            s.lines("special"),
            Some(vec![format!(
                "{} /srv/www/a.conf a.conf",
                s.local("srv/site/a.conf")
            )]),
            "FILE is the path on disk, REMFILE the Distfile's name for it"
        );
        assert_eq!(s.lines("else"), None, "another set's path was not updated");
    }

    #[test]
    fn special_with_other_names_does_not_run() {
        let s = setup(SPECIALS, &["srv/site/b.conf", "srv/site/x.txt"]);
        s.after(&[write("srv/site/b.conf")], TIMEOUT);
        assert_eq!(s.lines("nomatch"), None);
        assert_eq!(s.lines("special"), None);
        // The glob does match a .txt file: the test above is not vacuous.
        s.after(&[write("srv/site/x.txt")], TIMEOUT);
        assert_eq!(s.lines("nomatch"), Some(vec![s.local("srv/site/x.txt")]));
    }

    #[test]
    fn special_skips_directories_removals_and_excluded_paths() {
        let s = setup(
            "/srv/www -> ( a b )\n\texcept /srv/www/tmp ;\n\tspecial \"echo $FILE >> OUT/all\" ;\n",
            &["srv/www/sub/", "srv/www/x", "srv/www/tmp/y"],
        );
        s.after(
            &[
                Action::MakeDir {
                    path: p("srv/www/sub"),
                    meta: Meta::default(),
                },
                Action::Remove {
                    path: p("srv/www/gone"),
                    was: Content::Dir,
                },
                write("srv/www/tmp/y"),
                write("srv/www/x"),
            ],
            TIMEOUT,
        );
        assert_eq!(s.lines("all"), Some(vec![s.local("srv/www/x")]));
    }

    #[test]
    fn cmdspecial_runs_once_with_files_separated_by_blanks() {
        let s = setup(
            "/srv/www -> ( a b )\n\tcmdspecial \"echo \\\"$FILES|$REMOVED|${FILE-none}\\\" >> OUT/cmd\" ;\n\tcmdspecial /srv/www/nothing \"echo ran >> OUT/never\" ;\n",
            &["srv/www/a", "srv/www/d/b", "srv/www/d/"],
        );
        s.after(
            &[
                write("srv/www/d/b"),
                write("srv/www/a"),
                Action::SetMeta {
                    path: p("srv/www/d"),
                    meta: Meta::default(),
                },
                Action::Remove {
                    path: p("srv/www/old"),
                    was: Content::Dir,
                },
            ],
            TIMEOUT,
        );
        assert_eq!(
            s.lines("cmd"),
            Some(vec![format!(
                "{} {}|{}|none",
                s.local("srv/www/a"),
                s.local("srv/www/d/b"),
                s.local("srv/www/old")
            )])
        );
        assert_eq!(s.lines("never"), None, "names no updated path");
    }

    /// `:` is legal in a name, and so are blanks, quotes and newlines:
    /// `FILES` and `REMOVED` give every name back exactly.
    #[test]
    fn cmdspecial_names_with_colons_blanks_quotes_and_newlines_come_back_exactly() {
        let names = [
            "srv/www/a:b",
            "srv/www/c d",
            "srv/www/it's",
            "srv/www/new\nline",
        ];
        let s = setup(
            "/srv/www -> ( a b )\n\tcmdspecial \"eval \\\"set -- $FILES\\\"; for f; do printf '%s|' \\\"$f\\\"; done >> OUT/files; eval \\\"set -- $REMOVED\\\"; printf '%s|' \\\"$@\\\" >> OUT/removed\" ;\n",
            &names,
        );
        let mut actions: Vec<Action> = names.iter().map(|n| write(n)).collect();
        actions.push(Action::Remove {
            path: p("srv/www/gone:x y"),
            was: Content::Dir,
        });
        s.after(&actions, TIMEOUT);
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        let expected: String = sorted.iter().map(|n| format!("{}|", s.local(n))).collect();
        let got = std::fs::read_to_string(s.out.path().join("files")).expect("cmdspecial ran");
        assert_eq!(got, expected);
        let removed = std::fs::read_to_string(s.out.path().join("removed")).expect("ran");
        assert_eq!(removed, format!("{}|", s.local("srv/www/gone:x y")));
    }

    #[test]
    fn a_failing_command_is_reported_not_propagated() {
        let o = run(shell("echo fine; echo oops >&2; exit 3"), None, TIMEOUT);
        assert_eq!(o.status, Status::Exited(3));
        assert!(!o.ok());
        let line = o.summary();
        assert!(line.starts_with("exit status 3 after "), "{line}");
        assert!(line.ends_with("; stdout: fine; stderr: oops"), "{line}");

        // The set's worker goes on with the next command and file.
        let s = setup(
            "/srv/www -> ( a b )\n\tspecial \"exit 3\" ;\n\tspecial \"echo $BASEFILE >> OUT/after\" ;\n",
            &["srv/www/a", "srv/www/b"],
        );
        s.after(&[write("srv/www/a"), write("srv/www/b")], TIMEOUT);
        assert_eq!(s.lines("after"), Some(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn effects_keep_the_last_action_per_path() {
        let e = effects(&[
            Action::SaveOld { path: p("f") },
            Action::Remove {
                path: p("f"),
                was: Content::Dir,
            },
            write("f"),
            Action::Rename {
                from: p("old"),
                to: p("new"),
                meta: Meta::default(),
            },
            Action::Remove {
                path: p("gone"),
                was: Content::Dir,
            },
        ]);
        let e: Vec<(String, Effect)> = e.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(
            e,
            [
                ("f".to_string(), Effect::Updated),
                ("gone".to_string(), Effect::Removed),
                ("new".to_string(), Effect::Updated),
                ("old".to_string(), Effect::Removed),
            ]
        );
    }

    #[test]
    fn notify_without_a_mailer_logs_the_files() {
        let files: Vec<String> = ["/r/a", "/r/b", "/r/c", "/r/d"]
            .iter()
            .map(|f| listed(f, Effect::Updated))
            .chain([listed("/r/e", Effect::Removed)])
            .collect();
        assert_eq!(
            notice_line("root", "a", "b", &files, 3),
            "notify root: omirrd: 5 files updated on a from b: /r/a, /r/b, /r/c and 2 more"
        );
        assert!(notice_line("root", "a", "b", &files[..4], 3).ends_with("/r/c and 1 more"));
        assert!(notice_line("root", "a", "b", &files[..3], 3).ends_with("/r/b, /r/c"));
        assert_eq!(
            notice_line("ops@x", "a", "b", &files[4..], 3),
            "notify ops@x: omirrd: 1 file updated on a from b: /r/e (removed)"
        );

        let m = String::from_utf8(mail("ops@x\nBcc: evil", "a", "b", "conf:3:1", &files))
            .expect("utf-8");
        assert!(
            m.starts_with("To: ops@x Bcc: evil\nSubject: omirrd: 5 files updated on a from b\n"),
            "{m}"
        );
        assert!(m.contains("\n\nChanges from b applied on a (mirror set conf:3:1):\n\n/r/a\n"));
        assert!(m.ends_with("/r/d\n/r/e (removed)\n"), "{m}");
    }

    #[test]
    fn a_set_without_commands_gets_no_worker() {
        let s = setup(
            "/srv/www -> ( a b )\n/srv/x -> ( b c )\n\tspecial \"true\" ;\n",
            &[],
        );
        let c = Commands::new(&s.plan, settings(TIMEOUT));
        assert!(
            c.queues.iter().all(Option::is_none),
            "a is not in the second set"
        );
        assert!(c.workers.is_empty());
    }
}
