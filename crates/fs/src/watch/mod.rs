//! Watching the mirrored trees: kernel events in, batches of dirty paths
//! out.
//!
//! [`Watcher`] puts an inotify watch on every directory of every mirrored
//! top (and on each directory created or moved in later) and turns each
//! event into the path it names, relative to the root. One thread reads
//! the kernel's events straight from the inotify descriptor, many per
//! read, and batches them: no thread hand-off or allocation per event,
//! and no events for opening or reading files are asked for. Paths are gathered for a few milliseconds ([`Debounce`]: a
//! batch is due once events have paused for `quiet`, or `max_delay` after
//! its first event, whichever is first) and handed to the caller, who
//! looks at them with `omirr_sync::record::record_live`. The watcher says
//! *where* to look, never *what* changed: the scan that follows decides.
//!
//! When the kernel drops events (its queue overflowed) the caller is told
//! to rescan the tops. When the inotify watch limit is reached, the caller
//! is told which top is no longer fully watched and which sysctl to raise;
//! it should rescan that top periodically instead of going silent.
//!
//! Symbolic links are not followed; the applier's temporary files and
//! excluded paths are dropped here.

use omirr_core::RelPath;
use rustix::fd::OwnedFd;
use rustix::fs::inotify::{self, ReadFlags, WatchFlags};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod debounce;
pub use debounce::{Debounce, RENAME_PAIRING};

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Paths where something may have changed: a file, or a directory
    /// and everything below it, except for the directories among
    /// `attrs_only` (a subset of `paths`), which were reported for their
    /// own metadata alone (`IN_ATTRIB`: a chmod, a chown, times set): what
    /// lies below them had no event, and need not be walked.
    /// `still_written` are files being written (created or modified and
    /// not yet closed) when the batch was cut: a walk of a directory
    /// above one must leave it alone, or a peer would get it
    /// half-written. Each comes in a batch of its own once its writer
    /// closes it (or it settles).
    Changed {
        /// Where to look, relative to the root, in path order.
        paths: Vec<RelPath>,
        /// The entries of `paths` whose own metadata alone changed; for a
        /// directory, nothing below it need be walked.
        attrs_only: Vec<RelPath>,
        /// Files still open for writing when the batch was cut; not
        /// necessarily among `paths`.
        still_written: Vec<RelPath>,
    },
    /// Events were lost (the kernel's queue overflowed): these tops must
    /// be rescanned.
    Rescan(Vec<RelPath>),
    /// `top` is not (fully) watched; `reason` says why and what to do.
    /// The caller rescans it periodically.
    Degraded {
        /// The top, relative to the root.
        top: RelPath,
        /// Why, for the log: e.g. that the top does not exist, or which
        /// sysctl to raise.
        reason: String,
    },
}

/// Why [`Watcher::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The inotify descriptor, the stop descriptor or the watcher's
    /// thread could not be made; the string is the system's reason.
    #[error("cannot start watching: {0}")]
    Start(String),
}

/// A running watch over the mirrored tops; dropping it stops it.
pub struct Watcher {
    watches: Arc<Mutex<Watches>>,
    /// Wakes the watcher's thread to stop.
    stop: OwnedFd,
    _batcher: std::thread::JoinHandle<()>,
}

/// Which paths the watcher drops: `true` for a path not to report (an
/// excluded one). Paths outside the tops and the applier's temporary
/// files are dropped whatever it says.
pub type PathFilter = Arc<dyn Fn(&RelPath) -> bool + Send + Sync>;

/// What every directory is watched for. Not `IN_OPEN`, `IN_ACCESS` or
/// `IN_CLOSE_NOWRITE`: reading changes nothing, and the scanner's and the
/// server's own reads would each cost an event. Never through a symlink.
const WATCH: WatchFlags = WatchFlags::ATTRIB
    .union(WatchFlags::CREATE)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DONT_FOLLOW)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::EXCL_UNLINK);

/// A top is watched for its own removal or move too (its parent is not
/// watched).
const WATCH_TOP: WatchFlags = WATCH
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF);

/// Bytes read from the inotify descriptor at once: hundreds of events.
const READ_BUF: usize = 64 << 10;

/// Why a directory could not be watched.
#[derive(Debug)]
enum WatchFailure {
    /// `fs.inotify.max_user_watches` is reached.
    Limit,
    NotFound,
    Other(std::io::Error),
}

/// The inotify descriptor and which directory each watch is on.
struct Watches {
    fd: Arc<OwnedFd>,
    root: PathBuf,
    by_wd: HashMap<i32, RelPath>,
    by_path: BTreeMap<RelPath, i32>,
}

impl Watches {
    /// Watches `dir` and every directory below it (not through symlinks).
    /// Directories that vanish meanwhile are skipped; the watch limit
    /// stops the walk. `Err` only for `dir` itself or the limit.
    fn add_tree(&mut self, dir: &RelPath, top: bool) -> Result<(), WatchFailure> {
        let mut stack = vec![dir.clone()];
        let mut first = true;
        while let Some(d) = stack.pop() {
            let flags = if top && first { WATCH_TOP } else { WATCH };
            match self.add_one(&d, flags) {
                Ok(()) => {}
                Err(WatchFailure::Limit) => return Err(WatchFailure::Limit),
                Err(e) if first => return Err(e),
                // Gone, or not a directory any more: its parent's event
                // says so.
                Err(_) => continue,
            }
            first = false;
            let Ok(entries) = std::fs::read_dir(under(&self.root, &d)) else {
                continue;
            };
            for entry in entries.flatten() {
                // The entry's own type, from the listing: a symlink to a
                // directory is not followed.
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if let Ok(child) = d.join(entry.file_name().as_bytes()) {
                        stack.push(child);
                    }
                }
            }
        }
        Ok(())
    }

    fn add_one(&mut self, dir: &RelPath, flags: WatchFlags) -> Result<(), WatchFailure> {
        let full = under(&self.root, dir);
        match inotify::add_watch(&*self.fd, &full, flags) {
            Ok(wd) => {
                // The same directory again (or another path to it) has
                // the same descriptor: the newest path wins.
                if let Some(old) = self.by_wd.insert(wd, dir.clone()) {
                    if old != *dir {
                        self.by_path.remove(&old);
                    }
                }
                self.by_path.insert(dir.clone(), wd);
                Ok(())
            }
            Err(rustix::io::Errno::NOSPC) => Err(WatchFailure::Limit),
            Err(rustix::io::Errno::NOENT) => Err(WatchFailure::NotFound),
            Err(e) => Err(WatchFailure::Other(e.into())),
        }
    }

    /// Stops watching `dir` and everything below it (moved away: if it
    /// was moved inside the tree, its new name is watched anew).
    fn remove_tree(&mut self, dir: &RelPath) {
        let below: Vec<RelPath> = std::iter::once(dir.clone())
            .filter(|d| self.by_path.contains_key(d))
            .chain(
                self.by_path
                    .range(dir.below_path_range())
                    .map(|(p, _)| p.clone()),
            )
            .collect();
        for p in below {
            if let Some(wd) = self.by_path.remove(&p) {
                self.by_wd.remove(&wd);
                let _ = inotify::remove_watch(&*self.fd, wd);
            }
        }
    }

    /// The kernel dropped watch `wd` (its directory is gone).
    fn forget(&mut self, wd: i32) {
        if let Some(p) = self.by_wd.remove(&wd) {
            if self.by_path.get(&p) == Some(&wd) {
                self.by_path.remove(&p);
            }
        }
    }
}

impl Watcher {
    /// Watches `tops` under `root` and calls `sink` with every batch, from
    /// a thread of its own. Tops that cannot be watched are reported as
    /// [`WatchEvent::Degraded`] through `sink` (then watching goes on for
    /// the others); only a failure to start watching at all is an error.
    pub fn start(
        root: &Path,
        tops: &[RelPath],
        exclude: PathFilter,
        debounce: Debounce,
        sink: impl Fn(WatchEvent) + Send + 'static,
    ) -> Result<Watcher, WatchError> {
        let start = |e: rustix::io::Errno| WatchError::Start(std::io::Error::from(e).to_string());
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .map_err(start)?;
        let stop = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(start)?;
        let stop_for_thread = stop
            .try_clone()
            .map_err(|e| WatchError::Start(e.to_string()))?;
        // Paths are kept relative to the root, whatever it was given as.
        let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        let mut watches = Watches {
            fd: Arc::new(fd),
            root: root.clone(),
            by_wd: HashMap::new(),
            by_path: BTreeMap::new(),
        };
        let tops = tops.to_vec();
        let mut degraded = Vec::new();
        for top in &tops {
            if let Err(e) = watches.add_tree(top, true) {
                degraded.push(WatchEvent::Degraded {
                    top: top.clone(),
                    reason: describe(&e, &under(&root, top)),
                });
            }
        }
        for d in degraded {
            sink(d);
        }
        let watches = Arc::new(Mutex::new(watches));
        let w = watches.clone();
        let batcher = std::thread::Builder::new()
            .name("omirr-watch".into())
            .spawn(move || {
                batch_loop(&w, &stop_for_thread, &tops, &exclude, debounce, &sink);
            })
            .map_err(|e| WatchError::Start(e.to_string()))?;
        Ok(Watcher {
            watches,
            stop,
            _batcher: batcher,
        })
    }

    /// Tries again to watch a top reported [`WatchEvent::Degraded`] (it
    /// did not exist, or the watch limit was reached). `Err` says why not.
    pub fn retry(&self, top: &RelPath) -> Result<(), String> {
        let mut w = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let dir = under(&w.root, top);
        w.add_tree(top, true).map_err(|e| describe(&e, &dir))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
    }
}

/// Waits for the inotify descriptor to be readable, or `stop`, or the
/// debounce's deadline; whether to go on.
fn wait(fd: &OwnedFd, stop: &OwnedFd, deadline: Option<Instant>) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let timeout = deadline.map(|at| {
        let d = at.saturating_duration_since(Instant::now());
        Timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        }
    });
    let mut fds = [
        PollFd::new(fd, PollFlags::IN),
        PollFd::new(stop, PollFlags::IN),
    ];
    match rustix::event::poll(&mut fds, timeout.as_ref()) {
        Ok(_) => fds[1].revents().is_empty(),
        Err(rustix::io::Errno::INTR) => true,
        Err(e) => {
            tracing::error!("watching stopped: {}", std::io::Error::from(e));
            false
        }
    }
}

fn batch_loop(
    watches: &Mutex<Watches>,
    stop: &OwnedFd,
    tops: &[RelPath],
    exclude: &PathFilter,
    mut debounce: Debounce,
    sink: &impl Fn(WatchEvent),
) {
    let fd = watches.lock().unwrap_or_else(|e| e.into_inner()).fd.clone();
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); READ_BUF];
    loop {
        if !wait(&fd, stop, debounce.deadline()) {
            return;
        }
        let mut reader = inotify::Reader::new(&*fd, &mut buf);
        let mut w = watches.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let event = match reader.next() {
                Ok(e) => e,
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => break,
                Err(e) => {
                    tracing::error!("cannot read file events: {}", std::io::Error::from(e));
                    break;
                }
            };
            on_event(&mut w, &event, tops, exclude, &mut debounce, sink);
        }
        drop(w);
        if let Some((paths, attrs_only)) = debounce.take_due_split(Instant::now()) {
            tracing::trace!(
                "watch batch of {} paths ({} for their metadata alone): {:?}",
                paths.len(),
                attrs_only.len(),
                paths
            );
            let still_written = debounce.still_written();
            sink(WatchEvent::Changed {
                paths,
                attrs_only,
                still_written,
            });
        }
    }
}

/// What one inotify event means: a rescan on overflow, a watch forgotten
/// or added, and the path's change for the debouncer (or nothing, for the
/// applier's temporary files and paths outside the tops or excluded).
fn on_event(
    w: &mut Watches,
    event: &inotify::Event<'_>,
    tops: &[RelPath],
    exclude: &PathFilter,
    debounce: &mut Debounce,
    sink: &impl Fn(WatchEvent),
) {
    let now = Instant::now();
    let flags = event.events();
    let name = event.file_name().map(|n| n.to_bytes());
    if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
        tracing::trace!("watch event Q_OVERFLOW");
        sink(WatchEvent::Rescan(tops.to_vec()));
        return;
    }
    if flags.contains(ReadFlags::IGNORED) {
        w.forget(event.wd());
        return;
    }
    let Some(dir) = w.by_wd.get(&event.wd()) else {
        return;
    };
    // The applier's temporary files are never anyone's changes:
    // dropped before they cost anything.
    let temp = name.is_some_and(crate::apply::is_temp_name);
    tracing::trace!(
        "watch event {} {dir}{}{}{}",
        Kinds(flags),
        if name.is_some() { "/" } else { "" },
        String::from_utf8_lossy(name.unwrap_or_default()),
        if temp {
            " (the applier's temporary file: ignored)"
        } else {
            ""
        }
    );
    if temp {
        return;
    }
    let rel = match name {
        Some(n) => match dir.join(n) {
            Ok(p) => p,
            Err(_) => return,
        },
        None => dir.clone(),
    };
    let is_dir = flags.contains(ReadFlags::ISDIR);
    if flags.contains(ReadFlags::MOVED_FROM) {
        debounce.rename_from(event.cookie() as usize, now);
        if is_dir {
            w.remove_tree(&rel);
        }
    }
    if flags.contains(ReadFlags::MOVED_TO) {
        debounce.rename_to(event.cookie() as usize);
    }
    if is_dir && flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
        // What is created in it before its watch begins is found
        // by the walk of the dirty directory that follows.
        if let Err(WatchFailure::Limit) = w.add_tree(&rel, false) {
            let root = w.root.clone();
            for top in tops.iter().filter(|t| rel.is_within(t)) {
                sink(WatchEvent::Degraded {
                    top: top.clone(),
                    reason: describe(&WatchFailure::Limit, &under(&root, top)),
                });
            }
        }
    }
    let inside = rel.is_within_any(tops);
    if !inside || exclude(&rel) {
        return;
    }
    if flags.contains(ReadFlags::CREATE) && !is_dir {
        // A symlink, a FIFO or a socket has no writer to wait for.
        if is_file(&under(&w.root, &rel)) {
            debounce.written(rel, now);
        } else {
            debounce.push(rel, now);
        }
    } else if flags.contains(ReadFlags::MODIFY) {
        // IN_MODIFY on a directory means only that its mtime was
        // set alone (utimensat with UTIME_OMIT), which is how the
        // applier puts back the times of the directories it wrote
        // in. Reporting it would rescan the whole directory after
        // every applied batch; a change of its entries has events
        // of its own.
        if !is_dir {
            debounce.written(rel, now);
        }
    } else if flags.contains(ReadFlags::CLOSE_WRITE) {
        debounce.closed(rel, now);
    } else if flags.contains(ReadFlags::ATTRIB) {
        debounce.touched(rel, now);
    } else if flags.intersects(ReadFlags::DELETE | ReadFlags::MOVED_FROM) {
        debounce.gone(rel, now);
    } else {
        // Created directories, removals, both names of renames, a
        // top removed or moved itself.
        debounce.push(rel, now);
    }
}

/// An event's kinds by their inotify names, for the trace log.
struct Kinds(ReadFlags);

impl std::fmt::Display for Kinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [(ReadFlags, &str); 10] = [
            (ReadFlags::CREATE, "CREATE"),
            (ReadFlags::MODIFY, "MODIFY"),
            (ReadFlags::CLOSE_WRITE, "CLOSE_WRITE"),
            (ReadFlags::ATTRIB, "ATTRIB"),
            (ReadFlags::MOVED_FROM, "MOVED_FROM"),
            (ReadFlags::MOVED_TO, "MOVED_TO"),
            (ReadFlags::DELETE, "DELETE"),
            (ReadFlags::DELETE_SELF, "DELETE_SELF"),
            (ReadFlags::MOVE_SELF, "MOVE_SELF"),
            (ReadFlags::ISDIR, "ISDIR"),
        ];
        let mut first = true;
        for (flag, name) in NAMES {
            if self.0.contains(flag) {
                write!(f, "{}{name}", if first { "" } else { "|" })?;
                first = false;
            }
        }
        Ok(())
    }
}

fn is_file(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
}

/// What an administrator should read about a watch failure.
fn describe(e: &WatchFailure, dir: &Path) -> String {
    match e {
        WatchFailure::Limit => format!(
            "the inotify watch limit is reached while watching {}: changes there are found by periodic rescans until the limit is raised (sysctl fs.inotify.max_user_watches=N; see /proc/sys/fs/inotify/max_user_watches)",
            dir.display()
        ),
        WatchFailure::NotFound => format!(
            "{} does not exist yet: it is looked at by periodic rescans",
            dir.display()
        ),
        WatchFailure::Other(e) => format!("cannot watch {}: {e}", dir.display()),
    }
}

fn under(root: &Path, p: &RelPath) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(p.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_testkit::p;
    use std::collections::BTreeSet;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A watcher of `tops` under `root` whose events arrive on the
    /// returned channel.
    fn watch_into_channel(
        root: &Path,
        tops: &[RelPath],
        exclude: PathFilter,
        debounce: Debounce,
    ) -> (Watcher, mpsc::Receiver<WatchEvent>) {
        let (tx, rx) = mpsc::channel();
        let w = Watcher::start(root, tops, exclude, debounce, move |e| {
            let _ = tx.send(e);
        })
        .expect("watch");
        (w, rx)
    }

    #[test]
    fn reports_changes_below_the_tops_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("srv/www")).expect("mkdir");
        std::fs::create_dir_all(root.join("srv/other")).expect("mkdir");
        let tops = [p("srv/www"), p("missing/top")];
        let exclude: PathFilter = Arc::new(|p: &RelPath| p.file_name().ends_with(b".swp"));
        let ms = Duration::from_millis;
        let (_w, rx) = watch_into_channel(&root, &tops, exclude, Debounce::new(ms(5), ms(100)));
        // The missing top is reported, not fatal.
        match rx.recv_timeout(ms(2000)).expect("degraded") {
            WatchEvent::Degraded { top, reason } => {
                assert_eq!(top, p("missing/top"));
                assert!(reason.contains("does not exist"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Reading reports nothing.
        let _ = std::fs::read_dir(root.join("srv/www"))
            .expect("list")
            .count();
        std::fs::write(root.join("srv/other/x"), b"outside").expect("write");
        std::fs::write(root.join("srv/www/a.swp"), b"excluded").expect("write");
        std::fs::create_dir(root.join("srv/www/d")).expect("mkdir");
        std::fs::write(root.join("srv/www/d/f"), b"inside").expect("write");
        std::fs::rename(root.join("srv/www/d"), root.join("srv/www/e")).expect("rename");
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + ms(3000);
        while !(seen.contains(&p("srv/www/e")) && seen.contains(&p("srv/www/d"))) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(WatchEvent::Changed { paths, .. }) => seen.extend(paths),
                Ok(other) => panic!("{other:?}"),
                Err(_) => break,
            }
        }
        // The missing top, once it exists, can be watched.
        std::fs::create_dir_all(root.join("missing/top")).expect("mkdir");
        _w.retry(&p("missing/top")).expect("now it exists");
        assert!(seen.contains(&p("srv/www/d")), "{seen:?}");
        assert!(seen.contains(&p("srv/www/e")), "{seen:?}");
        assert!(
            !seen.iter().any(|s| s.is_below(&p("srv/other"))),
            "{seen:?}"
        );
        assert!(!seen.contains(&p("srv/www/a.swp")), "{seen:?}");
    }

    /// Every path reported until nothing has come for `quiet`.
    fn gather(rx: &mpsc::Receiver<WatchEvent>, quiet: Duration) -> BTreeSet<RelPath> {
        let mut seen = BTreeSet::new();
        while let Ok(e) = rx.recv_timeout(quiet) {
            match e {
                WatchEvent::Changed { paths, .. } => seen.extend(paths),
                other => panic!("{other:?}"),
            }
        }
        seen
    }

    #[test]
    fn directories_created_or_moved_in_are_watched_at_their_new_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("srv/www")).expect("mkdir");
        std::fs::create_dir_all(root.join("outside/moved/deep")).expect("mkdir");
        let ms = Duration::from_millis;
        let (w, rx) = watch_into_channel(
            &root,
            &[p("srv/www")],
            Arc::new(|_: &RelPath| false),
            Debounce::new(ms(5), ms(100)),
        );
        std::fs::create_dir_all(root.join("srv/www/a/b")).expect("mkdir");
        std::fs::rename(root.join("outside/moved"), root.join("srv/www/in")).expect("mv");
        let seen = gather(&rx, ms(300));
        assert!(seen.contains(&p("srv/www/a")), "{seen:?}");
        assert!(seen.contains(&p("srv/www/in")), "{seen:?}");
        // Now watched, below too, at the names they have now.
        std::fs::write(root.join("srv/www/a/b/f"), b"x").expect("write");
        std::fs::write(root.join("srv/www/in/deep/g"), b"y").expect("write");
        std::fs::rename(root.join("srv/www/a"), root.join("srv/www/c")).expect("mv");
        let seen = gather(&rx, ms(300));
        assert!(seen.contains(&p("srv/www/a/b/f")), "{seen:?}");
        assert!(seen.contains(&p("srv/www/in/deep/g")), "{seen:?}");
        std::fs::write(root.join("srv/www/c/b/h"), b"z").expect("write");
        // Moved out of the tops: no longer reported.
        std::fs::rename(root.join("srv/www/in"), root.join("outside/back")).expect("mv");
        std::fs::write(root.join("outside/back/deep/k"), b"k").expect("write");
        let seen = gather(&rx, ms(300));
        assert!(seen.contains(&p("srv/www/c/b/h")), "{seen:?}");
        assert!(seen.contains(&p("srv/www/in")), "{seen:?}");
        assert!(seen.iter().all(|s| s.is_below(&p("srv/www"))), "{seen:?}");
        assert!(!seen.contains(&p("srv/www/in/deep/k")), "{seen:?}");
        // Dropping the watcher stops its thread (and drops the sink).
        drop(w);
        assert_eq!(
            rx.recv_timeout(ms(2000)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_directory_whose_mode_changed_is_reported_for_its_metadata_alone() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("srv/www/old")).expect("mkdir");
        let ms = Duration::from_millis;
        // Long enough a pause that the mkdir and the chmod share a
        // batch.
        let (_w, rx) = watch_into_channel(
            &root,
            &[p("srv/www")],
            Arc::new(|_: &RelPath| false),
            Debounce::new(ms(100), ms(1000)),
        );
        let mode = std::fs::Permissions::from_mode(0o700);
        std::fs::set_permissions(root.join("srv/www/old"), mode.clone()).expect("chmod");
        // A new directory whose mode is set at once is still walked.
        std::fs::create_dir(root.join("srv/www/new")).expect("mkdir");
        std::fs::set_permissions(root.join("srv/www/new"), mode).expect("chmod");
        let deadline = Instant::now() + ms(1500);
        let (mut seen, mut attrs) = (BTreeSet::new(), BTreeSet::new());
        while let Ok(e) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            match e {
                WatchEvent::Changed {
                    paths, attrs_only, ..
                } => {
                    assert!(attrs_only.iter().all(|a| paths.contains(a)), "a subset");
                    seen.extend(paths);
                    attrs.extend(attrs_only);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(seen.contains(&p("srv/www/old")), "{seen:?}");
        assert!(seen.contains(&p("srv/www/new")), "{seen:?}");
        assert!(attrs.contains(&p("srv/www/old")), "{attrs:?}");
        assert!(!attrs.contains(&p("srv/www/new")), "{attrs:?}");
    }

    #[test]
    fn a_directory_whose_mtime_alone_is_set_is_neither_held_nor_rescanned() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("srv/www/d")).expect("mkdir");
        let ms = Duration::from_millis;
        // A writer is waited for for 300 ms: a directory held as one
        // would turn up after that.
        let (_w, rx) = watch_into_channel(
            &root,
            &[p("srv/www")],
            Arc::new(|_: &RelPath| false),
            Debounce::with_hold(ms(5), ms(100), ms(300), ms(600)),
        );
        // Setting only the mtime is IN_MODIFY, as for a write (the
        // applier does this to the directories it puts entries in).
        filetime::set_file_mtime(
            root.join("srv/www/d"),
            filetime::FileTime::from_unix_time(1_000_000_000, 0),
        )
        .expect("set mtime");
        std::fs::write(root.join("srv/www/d/f"), b"x").expect("write");
        let deadline = Instant::now() + ms(1500);
        let mut seen = BTreeSet::new();
        while let Ok(e) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            match e {
                WatchEvent::Changed { paths, .. } => seen.extend(paths),
                other => panic!("{other:?}"),
            }
        }
        assert!(seen.contains(&p("srv/www/d/f")), "{seen:?}");
        assert!(!seen.contains(&p("srv/www/d")), "{seen:?}");
    }
}
