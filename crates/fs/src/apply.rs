//! Carrying the resolver's [`Action`]s out on a real disk, inside one mirror
//! root, without ever following a symlink out of it.
//!
//! This module owns the only code that changes a mirrored tree on behalf of
//! a peer, so it owns the rules that keep a peer from reaching outside it
//! and keep readers from seeing half a file:
//!
//! - **Path safety.** Every path is a checked [`RelPath`] (see
//!   [`wire_path`] for bytes from the wire). It is resolved from a
//!   descriptor of the root by opening each parent component with
//!   `openat(O_NOFOLLOW | O_DIRECTORY)`; a symlink anywhere among the
//!   parents is refused ([`ApplyError::SymlinkInPath`]). The final
//!   operation is made relative to the parent's descriptor with the `*at`
//!   calls, never following a symlink in the last component either: a
//!   symlink there is replaced (rename over it), never written through,
//!   and never `chmod`ed (Linux cannot chmod a link; chmod would follow).
//! - **Atomic replacement.** Files and symlinks are made under a
//!   temporary name in the target's directory (`.omirr.NAME.TAG.tmp`, see
//!   [`is_temp_name`]) and renamed over the target. File content is
//!   streamed through a bounded buffer and its BLAKE3 hash and size are
//!   checked before the file can become visible; a mismatch deletes the
//!   temporary file.
//! - **Durability per batch** (see [`Applier::apply`]): one barrier for
//!   all of a batch's new file contents before any of them is renamed
//!   into place, one more for the directories after the renames. A small
//!   batch always flushes only its own files and directories.
//! - **Directory times kept.** The directories a batch writes in get
//!   their mtimes back afterwards (the batch's own or those they had).
//!
//! What it does not do: decide what to do (that is `omirr-core`), talk to
//! peers (content arrives through a [`ContentSource`]), or record anything
//! in the index (the caller does that once [`Applier::apply`] says the
//! actions are durable).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::owners::{self, Check, MetaRules, Rules};
use omirr_core::{Action, Content, Hash, Meta, PathError, RelPath, Source};
use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, RenameFlags, Uid};
use rustix::fs::{Timespec, Timestamps};
use rustix::io::Errno;

/// Why a source could not produce content. The network side has its own
/// error types; they only need to be displayable here.
pub type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where `WriteFile` content with [`Source::Fetch`] comes from: the peer
/// connection in the daemon, an in-memory map in tests.
///
/// The returned reader is read to its end through a bounded buffer; the
/// applier itself checks the size and hash, so a source need not.
pub trait ContentSource {
    /// A file that already holds exactly this content (checked by the
    /// source), which the applier may move into the tree as its
    /// temporary file instead of copying it. `None` (the default): the
    /// content is read through [`ContentSource::open`]. If the move fails
    /// (another filesystem), the file must still be there for `open`.
    fn take_file(&mut self, _hash: &Hash, _size: u64) -> Option<PathBuf> {
        None
    }

    /// A reader for the content of `path` that has `hash` and `size`.
    fn open(
        &mut self,
        path: &RelPath,
        hash: &Hash,
        size: u64,
    ) -> Result<Box<dyn Read + '_>, SourceError>;
}

/// The files `actions` fetch from their [`ContentSource`], in order.
pub fn wanted(actions: &[Action]) -> Vec<Wanted> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::WriteFile {
                path,
                size,
                hash,
                source: Source::Fetch,
                ..
            } if *size > 0 => Some(Wanted {
                path: path.clone(),
                hash: *hash,
                size: *size,
            }),
            _ => None,
        })
        .collect()
}

/// A file a batch wants from its [`ContentSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub path: RelPath,
    pub hash: Hash,
    pub size: u64,
}

/// How the applier makes a batch durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barrier {
    /// One `syncfs(2)` on the root's filesystem for each barrier. One
    /// flush however many files the batch holds; it also flushes
    /// unrelated dirty data on the same filesystem.
    Syncfs,
    /// `fsync(2)` on each new file (issued from a few threads at once),
    /// then on each directory whose entries or times changed and each
    /// file whose metadata changed. Touches only our own inodes.
    Fsync,
}

/// Settings of an [`Applier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Give files the owner and group of their [`Meta`]. Only root can;
    /// the default is whether we run as root. When false, owners are left
    /// as the kernel makes them.
    pub set_owner: bool,
    /// How many old versions `SaveOld` keeps. `0` keeps one, named
    /// `NAME.OLD` (rdist's `savetargets`); `N > 0` keeps `NAME.OLD.1`
    /// (newest) to `NAME.OLD.N`, dropping the oldest. The default of the
    /// applier's [`Rules`] until [`Applier::set_rules`] replaces them.
    pub history: usize,
    /// How barriers are made. Batches of up to 16 actions use
    /// [`Barrier::Fsync`] whatever this says.
    pub barrier: Barrier,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            set_owner: nix::unistd::geteuid().is_root(),
            history: 0,
            barrier: Barrier::Syncfs,
        }
    }
}

/// Why an action (or a barrier) failed. Paths are relative to the mirror
/// root; the root itself is shown as "the mirror root".
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot open mirror root {}: {}", root.display(), describe(error))]
    OpenRoot { root: PathBuf, error: io::Error },

    /// The reason is part of the message; `error` is deliberately not the
    /// `source()`, so error chains do not print it twice.
    #[error("cannot {op} {}: {}", shown(path), describe(error))]
    Io {
        path: RelPath,
        op: &'static str,
        error: io::Error,
    },

    #[error(
        "refusing {}: {} is a symbolic link, and omirr never follows one inside a mirror root",
        shown(path),
        shown(component)
    )]
    SymlinkInPath { path: RelPath, component: RelPath },

    #[error(
        "cannot reach {}: {} is not a directory",
        shown(path),
        shown(component)
    )]
    NotADirectory { path: RelPath, component: RelPath },

    #[error("cannot {op} the mirror root itself")]
    RootPath { op: &'static str },

    #[error(
        "{} is a directory that is not empty; refusing to delete what the index does not know about",
        shown(path)
    )]
    DirNotEmpty { path: RelPath },

    #[error("{} is a {found} on disk where a {expected} was expected", shown(path))]
    Unexpected {
        path: RelPath,
        expected: &'static str,
        found: &'static str,
    },

    #[error(
        "cannot rename to {}: something the index does not know about is already there",
        shown(path)
    )]
    TargetExists { path: RelPath },

    #[error("cannot get the content of {}: {error}", shown(path))]
    Source { path: RelPath, error: SourceError },

    #[error("reading the content of {} failed: {}", shown(path), describe(error))]
    ContentRead { path: RelPath, error: io::Error },

    #[error("content of {} is {got} bytes, expected {expected}", shown(path))]
    SizeMismatch {
        path: RelPath,
        expected: u64,
        got: u64,
    },

    #[error(
        "content of {} is longer than the expected {expected} bytes",
        shown(path)
    )]
    TooLong { path: RelPath, expected: u64 },

    #[error(
        "content of {} has BLAKE3 hash {}, expected {}",
        shown(path),
        blake3::Hash::from_bytes(*got).to_hex(),
        blake3::Hash::from_bytes(*expected).to_hex()
    )]
    HashMismatch {
        path: RelPath,
        expected: Hash,
        got: Hash,
    },

    #[error("cannot make symbolic link {}: its target {reason}", shown(path))]
    BadSymlinkTarget { path: RelPath, reason: &'static str },

    #[error("cannot give {} owner {uid}:{gid}: -1 is not an id", shown(path))]
    InvalidOwner { path: RelPath, uid: u32, gid: u32 },

    #[error(
        "{} changed on this host since the index recorded it (a local write not yet recorded); it is recorded first, then the newer of the two wins",
        shown(path)
    )]
    ChangedLocally { path: RelPath },
}

/// What the index knows of the files an apply is about to replace or
/// remove: a file whose `lstat` no longer matches what was recorded was
/// written locally since, and the watcher has not recorded that yet.
/// Replacing it would lose that write (see [`ApplyError::ChangedLocally`]).
pub trait LocalGuard {
    /// Whether the non-directory at `path`, with `now` from `lstat`, is
    /// still what the index recorded there (`true` when the index has no
    /// stat for it to compare).
    fn unchanged(&self, path: &RelPath, now: &omirr_index::StatKey) -> bool;
}

impl ApplyError {
    /// Whether this is "no such file or directory" (a path or one of its
    /// parents is missing).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApplyError::Io { error, .. } if error.kind() == io::ErrorKind::NotFound)
    }
}

/// A batch that stopped early, or whose final barrier failed.
///
/// Actions `[0, durable)` were carried out and are durable: the caller
/// may record exactly those in its index. `index` is the action that
/// failed. Actions after it were not attempted, except that a staged
/// file's rename is deferred to the barrier (see [`Applier::apply`]), so
/// when a deferred rename fails, actions between it and the end of the
/// batch may have been carried out too, as after a crash: a later scan
/// sees them.
#[derive(Debug, thiserror::Error)]
#[error("{}", batch_message(self))]
pub struct BatchError {
    /// The failed action; `None` if every action was carried out but the
    /// final barrier failed (then nothing is known to be durable).
    pub index: Option<usize>,
    /// How many leading actions are carried out and durable.
    pub durable: usize,
    /// Why `index` failed, or the barrier's error when `index` is `None`.
    pub error: ApplyError,
    /// The barrier after a failed action failed too; `durable` is then 0.
    pub sync_error: Option<Box<ApplyError>>,
}

/// What [`Applier::cleanup_stale_temps_tree`] did.
#[derive(Debug, Default)]
pub struct Cleanup {
    /// Temporary files removed.
    pub removed: usize,
    /// Directories that could not be listed and files that could not be
    /// removed: skipped, for the caller to report.
    pub skipped: Vec<ApplyError>,
}

fn batch_message(e: &BatchError) -> String {
    let mut s = match e.index {
        Some(i) => format!("action {i} of the batch failed: {}", e.error),
        None => format!("syncing the batch failed: {}", e.error),
    };
    if let Some(sync) = &e.sync_error {
        s.push_str(&format!(
            "; syncing the actions before it failed too: {sync}"
        ));
    }
    s
}

/// Checks a path received from a peer: relative, no `..` or `.`
/// component, no empty component, no NUL. The empty path is the mirror
/// root.
pub fn wire_path(bytes: &[u8]) -> Result<RelPath, PathError> {
    RelPath::new(bytes)
}

const TEMP_PREFIX: &[u8] = b".omirr.";
const TEMP_SUFFIX: &[u8] = b".tmp";
/// Hex digits of the random tag in a temporary name.
const TEMP_TAG_LEN: usize = 16;
/// How much of the target's name a temporary name repeats: enough to tell
/// what it was for, short enough to stay within NAME_MAX (255).
const TEMP_NAME_KEEP: usize = 200;
/// O_EXCL collisions tolerated before giving up on a temporary name.
const TEMP_ATTEMPTS: usize = 16;

/// Whether `name` is one of our temporary names,
/// `.omirr.NAME.<16 hex digits>.tmp`. The watcher and scanner should skip
/// such names; [`Applier::cleanup_stale_temps`] deletes them. The tag
/// makes a clash with a user's own file unlikely.
pub fn is_temp_name(name: &[u8]) -> bool {
    let min = TEMP_PREFIX.len() + 1 + 1 + TEMP_TAG_LEN + TEMP_SUFFIX.len();
    if name.len() < min || !name.starts_with(TEMP_PREFIX) || !name.ends_with(TEMP_SUFFIX) {
        return false;
    }
    let tag_end = name.len() - TEMP_SUFFIX.len();
    let tag_start = tag_end - TEMP_TAG_LEN;
    name[tag_start - 1] == b'.'
        && name[tag_start..tag_end]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Whether `name` is one of our temporary names made for `target` (see
/// [`temp_name`]).
fn is_temp_name_for(name: &[u8], target: &[u8]) -> bool {
    let kept = &target[..target.len().min(TEMP_NAME_KEEP)];
    is_temp_name(name)
        && name.len() == TEMP_PREFIX.len() + kept.len() + 1 + TEMP_TAG_LEN + TEMP_SUFFIX.len()
        && &name[TEMP_PREFIX.len()..TEMP_PREFIX.len() + kept.len()] == kept
}

/// A fresh temporary name for `name`. Uniqueness comes from O_EXCL (and
/// retrying); the tag only makes collisions rare, between processes too.
fn temp_name(name: &[u8]) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(&nanos.to_le_bytes());
    let tag = h.finalize().to_hex();
    let tag = &tag[..TEMP_TAG_LEN];
    let mut t = TEMP_PREFIX.to_vec();
    t.extend_from_slice(&name[..name.len().min(TEMP_NAME_KEEP)]);
    t.push(b'.');
    t.extend_from_slice(tag.as_bytes());
    t.extend_from_slice(TEMP_SUFFIX);
    t
}

/// `NAME.OLD` (generation 0) or `NAME.OLD.G`.
fn old_name(name: &[u8], generation: usize) -> Vec<u8> {
    let mut n = name.to_vec();
    n.extend_from_slice(b".OLD");
    if generation > 0 {
        n.extend_from_slice(format!(".{generation}").as_bytes());
    }
    n
}

/// Files staged before a barrier is forced: bounds memory and, with
/// [`Barrier::Fsync`], open descriptors (one per staged file).
const MAX_STAGED: usize = 4096;
const MAX_STAGED_FSYNC: usize = 256;
/// Directories held open for staged files before a barrier is forced.
const MAX_STAGED_DIRS: usize = 256;
/// Batches of at most this many actions are flushed with fsyncs of their
/// own files and directories, whatever [`ApplyOptions::barrier`] says.
const FSYNC_BATCH_MAX: usize = 16;
/// Threads issuing a barrier's fsyncs at once.
const FSYNC_THREADS: usize = 8;
/// The copy buffer: content is streamed, never held whole. As large as the
/// largest chunk (`omirr_chunk::MAX`), so that a rebuilt file's reused
/// chunks are read straight into it; page-aligned (see `scan::AlignedBuf`).
const COPY_BUF: usize = 256 * 1024;

/// Carries out actions inside one mirror root.
pub struct Applier {
    root_path: PathBuf,
    root: OwnedFd,
    options: ApplyOptions,
    /// The mirrored trees (see [`Applier::with_tops`]); `None`: all of
    /// the root.
    tops: Option<Vec<RelPath>>,
    /// How owners, groups, modes and old versions are kept, per path.
    rules: Arc<dyn Rules>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("root", &self.root_path)
            .field("options", &self.options)
            .field("tops", &self.tops)
            .finish_non_exhaustive()
    }
}

/// Where the owner, group or mode that the rules keep comes from.
#[derive(Clone, Copy)]
enum Was {
    /// The object being changed, which is there already: kept fields stay
    /// as they are.
    Itself,
    /// A new object that replaces what `lstat` found (nothing: `None`):
    /// kept fields are copied from it, or, for something new, come from
    /// the entry.
    Replacing(Option<rfs::Stat>),
}

impl Applier {
    /// Opens the mirror root `root` (which must be a directory; symlinks
    /// in `root` itself are the administrator's and are followed).
    ///
    /// Stale temporary files are not removed here: call
    /// [`Applier::cleanup_stale_temps_tree`] once at startup, before the
    /// first batch.
    pub fn open(root: &Path, options: ApplyOptions) -> Result<Applier, ApplyError> {
        let fd = rfs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ApplyError::OpenRoot {
            root: root.to_path_buf(),
            error: e.into(),
        })?;
        let rules = Arc::new(owners::Uniform(MetaRules {
            history: options.history,
            ..MetaRules::default()
        }));
        Ok(Applier {
            root_path: root.to_path_buf(),
            root: fd,
            options,
            tops: None,
            rules,
        })
    }

    /// Puts `rules` in force for the next batches: which owners, groups
    /// and modes are mirrored, and how many old versions are kept (the
    /// Distfile's install options; see [`crate::owners`]).
    pub fn set_rules(&mut self, rules: Arc<dyn Rules>) {
        self.rules = rules;
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<dyn Rules> {
        self.rules.clone()
    }

    /// Says which trees of the root are mirrored (the tops of the mirror
    /// sets); without it, all of the root is. The directories above a top
    /// belong to the host, not to the mirror: the applier never changes,
    /// removes or replaces one (the tree rule only implies them, with
    /// [`Meta::IMPLIED_DIR`]), and makes a missing one with the mode and
    /// owner of its nearest existing ancestor, saying so in the log.
    pub fn with_tops(mut self, tops: Vec<RelPath>) -> Applier {
        self.tops = Some(tops);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root_path
    }

    pub fn options(&self) -> &ApplyOptions {
        &self.options
    }

    /// Carries out `actions` in order, stopping at the first failure.
    ///
    /// Durability scheme, per batch rather than per file:
    ///
    /// 1. Each `WriteFile` is *staged*: its content is streamed into a
    ///    temporary file next to the target, checked, and given its mode,
    ///    owner and mtime; the rename is deferred. Other actions are
    ///    carried out at once, except that staged files are first
    ///    committed (steps 2–3) when an action touches a staged path, one
    ///    of its ancestors (other than fixing a directory's metadata) or
    ///    something below it, so the order of the batch is kept; also
    ///    when too many files are staged.
    /// 2. Barrier 1: the staged files' content and metadata are flushed
    ///    (`syncfs` on the root, or `fsync` of each temporary file).
    /// 3. The staged files are renamed over their targets, in order.
    /// 4. At the end of the batch, directories whose times the batch set
    ///    get them again: creating and renaming entries inside a
    ///    directory changes its mtime.
    /// 5. Barrier 2: the directories whose entries changed (and, with
    ///    [`Barrier::Fsync`], the directories and files whose metadata
    ///    changed) are flushed (`syncfs`, or `fsync` of each).
    ///
    /// Only then is `Ok` returned and may the caller commit its index.
    /// A crash before barrier 2 leaves each target either old or new,
    /// never half written, and possibly temporary files, which
    /// [`Applier::cleanup_stale_temps_tree`] removes at the next start.
    ///
    /// On failure, no temporary file is left behind; staged files of
    /// earlier actions are still committed and barrier 2 is still made,
    /// so that the actions before the failed one are durable
    /// ([`BatchError::durable`]).
    pub fn apply(
        &self,
        actions: &[Action],
        source: &mut dyn ContentSource,
    ) -> Result<(), BatchError> {
        self.apply_with(actions, source, None)
    }

    /// [`Applier::apply`], refusing to replace or remove a file that
    /// `guard` says changed locally since it was recorded: that action
    /// fails with [`ApplyError::ChangedLocally`]. The check is made just
    /// before the file is renamed over or removed, so that only a write in
    /// that moment can still be lost.
    pub fn apply_guarded(
        &self,
        actions: &[Action],
        source: &mut dyn ContentSource,
        guard: &dyn LocalGuard,
    ) -> Result<(), BatchError> {
        self.apply_with(actions, source, Some(guard))
    }

    fn apply_with(
        &self,
        actions: &[Action],
        source: &mut dyn ContentSource,
        guard: Option<&dyn LocalGuard>,
    ) -> Result<(), BatchError> {
        let mut batch = Batch::new(self);
        batch.guard = guard;
        // A few actions are flushed file by file even in syncfs mode: a
        // syncfs would also wait for every other writer's dirty data on
        // the filesystem, which on a busy host costs far more than a few
        // fsyncs of our own.
        if actions.len() <= FSYNC_BATCH_MAX {
            batch.barrier = Barrier::Fsync;
        }
        batch.keep_dir_times(actions);
        let mut failure: Option<(usize, ApplyError)> = None;
        for (i, action) in actions.iter().enumerate() {
            if batch.must_commit_before(action) {
                if let Err(f) = batch.commit_staged() {
                    failure = Some(f);
                    break;
                }
            }
            if let Err(e) = batch.run(i, action, source) {
                failure = Some((i, e));
                break;
            }
        }
        // Whatever is staged belongs to actions before any failure.
        if let Err(f) = batch.commit_staged() {
            failure = earliest(failure, f);
        }
        if let Err(f) = batch.reapply_dir_times() {
            failure = earliest(failure, f);
        }
        let synced = batch.final_barrier();
        match (failure, synced) {
            (None, Ok(())) => Ok(()),
            (Some((i, error)), Ok(())) => Err(BatchError {
                index: Some(i),
                durable: i,
                error,
                sync_error: None,
            }),
            (Some((i, error)), Err(sync)) => Err(BatchError {
                index: Some(i),
                durable: 0,
                error,
                sync_error: Some(Box::new(sync)),
            }),
            (None, Err(error)) => Err(BatchError {
                index: None,
                durable: 0,
                error,
                sync_error: None,
            }),
        }
    }

    /// Removes our temporary files (see [`is_temp_name`]) from the
    /// directory `dir`, and returns how many.
    ///
    /// A `kill -9` or a power cut during a batch can leave them behind;
    /// nothing else refers to them, since a temporary file becomes part of
    /// the tree only by being renamed. Call this only when no batch is
    /// running on this root (at startup): it would delete a running
    /// batch's staged files. Directories with such names are left alone.
    pub fn cleanup_stale_temps(&self, dir: &RelPath) -> Result<usize, ApplyError> {
        let done = self.cleanup_dir(dir, &|_| true)?;
        match done.failed.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(done.removed),
        }
    }

    /// Removes the stale temporary files of the mirrored trees `tops`
    /// (see [`Applier::cleanup_stale_temps`]): in every directory at or
    /// below a top (never descending through a symlink; mount points below
    /// a top are crossed, as the scanner crosses them), and, in the
    /// directory above each top, those made for the top itself (a top
    /// that is a file is replaced through one). Nothing else under the
    /// root is looked at: with the root `/`, a walk of all of it would
    /// cross /proc, /sys and network mounts.
    ///
    /// Nothing stops the clean-up: a directory that cannot be listed or a
    /// file that cannot be removed is skipped, and reported in
    /// [`Cleanup::skipped`]. A top that does not exist (yet) or is not a
    /// directory has nothing below it to clean.
    pub fn cleanup_stale_temps_tree(&self, tops: &[RelPath]) -> Cleanup {
        let mut out = Cleanup::default();
        let tops: BTreeSet<&RelPath> = tops.iter().collect();
        for &top in &tops {
            // A top inside another is walked with it.
            if tops.iter().any(|t| top.is_below(t)) {
                continue;
            }
            if let Some(parent) = top.parent() {
                let own = |n: &[u8]| is_temp_name_for(n, top.file_name());
                self.cleanup_walk_step(&parent, &own, &mut out);
            }
            let mut todo = vec![top.clone()];
            while let Some(dir) = todo.pop() {
                let subdirs = self.cleanup_walk_step(&dir, &|_| true, &mut out);
                todo.extend(subdirs.iter().filter_map(|name| dir.join(name).ok()));
            }
        }
        out
    }

    /// One directory of [`Applier::cleanup_stale_temps_tree`]: removes
    /// the temporary files there that `ours` accepts, and returns the
    /// names of its subdirectories. Failures go to `out.skipped`.
    fn cleanup_walk_step(
        &self,
        dir: &RelPath,
        ours: &dyn Fn(&[u8]) -> bool,
        out: &mut Cleanup,
    ) -> Vec<Vec<u8>> {
        match self.cleanup_dir(dir, ours) {
            Ok(done) => {
                out.removed += done.removed;
                out.skipped.extend(done.failed);
                done.subdirs
            }
            // Absent, or removed or replaced since it was listed.
            Err(ApplyError::SymlinkInPath { .. } | ApplyError::NotADirectory { .. }) => Vec::new(),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => {
                out.skipped.push(e);
                Vec::new()
            }
        }
    }

    /// Removes the temporary files in `dir` that `ours` accepts.
    fn cleanup_dir(
        &self,
        dir: &RelPath,
        ours: &dyn Fn(&[u8]) -> bool,
    ) -> Result<DirCleanup, ApplyError> {
        let fd = self.open_dir(dir, None)?;
        let listing = list_dir(&fd, dir)?;
        let mut removed = 0;
        let mut failed = Vec::new();
        for name in listing.temps.iter().filter(|n| ours(n)) {
            match rfs::unlinkat(&fd, name.as_slice(), AtFlags::empty()) {
                Ok(()) => removed += 1,
                // Made a directory, or removed, since it was listed.
                Err(Errno::ISDIR | Errno::NOENT) => {}
                Err(e) => failed.push(io_error(
                    &join_lossy(dir, name),
                    "remove stale temporary file",
                    e,
                )),
            }
        }
        Ok(DirCleanup {
            removed,
            subdirs: listing.subdirs,
            failed,
        })
    }

    /// Opens the directory `dir`, one component at a time, refusing
    /// symlinks. With `create`, missing components are made (mode 0755,
    /// owned by us; above the mirrored trees, with the mode and owner of
    /// their parent) and their parents recorded in it.
    fn open_dir(
        &self,
        dir: &RelPath,
        mut create: Option<&mut BTreeSet<RelPath>>,
    ) -> Result<OwnedFd, ApplyError> {
        // Most directories exist: one call resolves them beneath the root
        // ([`omirr_open::beneath`]); the walk below makes what is missing and
        // says why a path cannot be opened.
        if let Ok(fd) = omirr_open::beneath::open_dir(&self.root, dir) {
            return Ok(fd);
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut cur = rfs::openat(&self.root, ".", flags, Mode::empty())
            .map_err(|e| io_error(&RelPath::root(), "open", e))?;
        for (depth, comp) in dir.components().enumerate() {
            let next = match rfs::openat(&cur, comp, flags, Mode::empty()) {
                Err(Errno::NOENT) if create.is_some() => {
                    let here = prefix(dir, depth + 1);
                    let made = match rfs::mkdirat(&cur, comp, Mode::from_raw_mode(0o700)) {
                        Ok(()) => true,
                        // Someone made it meanwhile: use theirs.
                        Err(Errno::EXIST) => false,
                        Err(e) => return Err(io_error(&here, "create directory", e)),
                    };
                    if let Some(touched) = create.as_deref_mut() {
                        touched.insert(prefix(dir, depth));
                    }
                    let fd = rfs::openat(&cur, comp, flags, Mode::empty())
                        .map_err(|e| self.walk_error(&cur, comp, dir, depth, e))?;
                    // Created 0700 so it is never wider than intended;
                    // then what an implied directory gets, or, above the
                    // mirrored trees, what its parent has.
                    if !self.outside_tops(&here) {
                        rfs::fchmod(&fd, Mode::from_raw_mode(0o755))
                            .map_err(|e| io_error(&here, "set the mode of", e))?;
                    } else if made {
                        self.like_parent(&cur, &fd, &here)?;
                    }
                    Ok(fd)
                }
                other => other,
            };
            cur = next.map_err(|e| self.walk_error(&cur, comp, dir, depth, e))?;
        }
        Ok(cur)
    }

    /// Whether `path` lies outside every mirrored tree (see
    /// [`Applier::with_tops`]): a directory above a top, which is the
    /// host's and never changed.
    fn outside_tops(&self, path: &RelPath) -> bool {
        self.tops
            .as_ref()
            .is_some_and(|tops| !tops.iter().any(|t| path == t || path.is_below(t)))
    }

    /// Gives the directory `fd`, just made at `path` above the mirrored
    /// trees, the mode and owner of its parent `parent` (the nearest
    /// existing ancestor: the walk makes the missing ones top down), and
    /// says so in the log.
    fn like_parent(
        &self,
        parent: &OwnedFd,
        fd: &OwnedFd,
        path: &RelPath,
    ) -> Result<(), ApplyError> {
        let like = path.parent().unwrap_or_else(RelPath::root);
        let st = rfs::fstat(parent).map_err(|e| io_error(&like, "inspect", e))?;
        if self.options.set_owner {
            rfs::fchown(
                fd,
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .map_err(|e| io_error(path, "set the owner of", e))?;
        }
        let mode = st.st_mode & 0o7777;
        rfs::fchmod(fd, Mode::from_raw_mode(mode))
            .map_err(|e| io_error(path, "set the mode of", e))?;
        tracing::info!(
            "created {} above the mirrored trees, with mode {mode:04o} and owner {}:{} as {} has",
            shown(path),
            st.st_uid,
            st.st_gid,
            shown(&like)
        );
        Ok(())
    }

    /// Explains why component `depth` of `dir` could not be opened.
    fn walk_error(
        &self,
        parent: &OwnedFd,
        comp: &[u8],
        dir: &RelPath,
        depth: usize,
        e: Errno,
    ) -> ApplyError {
        let component = prefix(dir, depth + 1);
        if matches!(e, Errno::LOOP | Errno::NOTDIR) {
            if let Ok(st) = rfs::statat(parent, comp, AtFlags::SYMLINK_NOFOLLOW) {
                return if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                    ApplyError::SymlinkInPath {
                        path: dir.clone(),
                        component,
                    }
                } else {
                    ApplyError::NotADirectory {
                        path: dir.clone(),
                        component,
                    }
                };
            }
        }
        io_error(&component, "open directory", e)
    }

    /// The parent directory of `path`, opened safely, and the last
    /// component's name.
    fn parent<'p>(
        &self,
        path: &'p RelPath,
        op: &'static str,
        create: Option<&mut BTreeSet<RelPath>>,
    ) -> Result<(OwnedFd, &'p [u8]), ApplyError> {
        let parent = path.parent().ok_or(ApplyError::RootPath { op })?;
        let fd = self.open_dir(&parent, create).map_err(|e| match e {
            // Name the path being worked on, not only its parent.
            ApplyError::SymlinkInPath { component, .. } => ApplyError::SymlinkInPath {
                path: path.clone(),
                component,
            },
            ApplyError::NotADirectory { component, .. } => ApplyError::NotADirectory {
                path: path.clone(),
                component,
            },
            e => e,
        })?;
        Ok((fd, path.file_name()))
    }

    /// Opens a regular file of the tree for reading (`Source::CopyFrom`).
    fn open_local_file(&self, path: &RelPath) -> Result<File, ApplyError> {
        let (dir, name) = self.parent(path, "read", None)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = rfs::openat(&dir, name, flags | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
            if e == Errno::LOOP {
                unexpected(path, "file", FileType::Symlink)
            } else {
                io_error(path, "open", e)
            }
        })?;
        let st = rfs::fstat(&fd).map_err(|e| io_error(path, "inspect", e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(unexpected(path, "file", kind));
        }
        Ok(File::from(fd))
    }

    /// Owner, mode and mtime on an open file or directory, as the rules
    /// for `path` say (`was`: where kept fields come from). Owner first:
    /// chown clears the set-id bits, so chmod must come after it.
    fn set_meta_fd(
        &self,
        fd: BorrowedFd<'_>,
        path: &RelPath,
        meta: &Meta,
        was: Was,
    ) -> Result<(), ApplyError> {
        let rules = self.rules.rules(path);
        let (uid, gid) = self.owner(path, meta, &rules, was)?;
        let mode = match (rules.keep_mode, was) {
            (false, _) | (true, Was::Replacing(None)) => Some(meta.mode & 0o7777),
            (true, Was::Replacing(Some(old))) => {
                let now = rfs::fstat(fd).map_err(|e| io_error(path, "inspect", e))?;
                // Only a file's mode is a file's, a directory's a
                // directory's.
                if FileType::from_raw_mode(now.st_mode) == FileType::from_raw_mode(old.st_mode) {
                    Some(old.st_mode & 0o7777)
                } else {
                    Some(meta.mode & 0o7777)
                }
            }
            // Kept as it is; but a chown below clears the set-id bits,
            // which are then put back.
            (true, Was::Itself) if uid.is_some() || gid.is_some() => Some(
                rfs::fstat(fd)
                    .map_err(|e| io_error(path, "inspect", e))?
                    .st_mode
                    & 0o7777,
            ),
            (true, Was::Itself) => None,
        };
        if uid.is_some() || gid.is_some() {
            rfs::fchown(fd, uid, gid).map_err(|e| io_error(path, "set the owner of", e))?;
        }
        if let Some(mode) = mode {
            rfs::fchmod(fd, Mode::from_raw_mode(mode))
                .map_err(|e| io_error(path, "set the mode of", e))?;
        }
        // After the mode: an access ACL sets the group bits as it needs.
        crate::xattrs::set_fd(fd, &meta.xattrs, &|n| rules.mirrors_xattr(n)).map_err(|e| {
            ApplyError::Io {
                path: path.clone(),
                op: "set the extended attributes of",
                error: e,
            }
        })?;
        rfs::futimens(fd, &mtime(meta.mtime_ns)).map_err(|e| io_error(path, "set the mtime of", e))
    }

    /// Owner and mtime of the symlink `name` in `dir` (never its mode).
    fn set_symlink_meta(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        path: &RelPath,
        meta: &Meta,
        was: Was,
    ) -> Result<(), ApplyError> {
        let rules = self.rules.rules(path);
        let (uid, gid) = self.owner(path, meta, &rules, was)?;
        if uid.is_some() || gid.is_some() {
            rfs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_error(path, "set the owner of", e))?;
        }
        rfs::utimensat(dir, name, &mtime(meta.mtime_ns), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_error(path, "set the mtime of", e))
    }

    /// The owner and group to set, if we set owners: this host's rendering
    /// of the entry's (see [`crate::owners`]); for a kept one, nothing on
    /// the object itself, the old object's on a replacement, and the
    /// entry's (by name) on something new.
    fn owner(
        &self,
        path: &RelPath,
        meta: &Meta,
        rules: &MetaRules,
        was: Was,
    ) -> Result<(Option<Uid>, Option<Gid>), ApplyError> {
        if !self.options.set_owner {
            return Ok((None, None));
        }
        let by_name = MetaRules {
            owner: Check::ByName,
            group: Check::ByName,
            ..rules.clone()
        };
        let uid = match (owners::local_uid(path, meta, rules), was) {
            (Some(uid), _) => Some(uid),
            (None, Was::Itself) => None,
            (None, Was::Replacing(Some(old))) => Some(old.st_uid),
            (None, Was::Replacing(None)) => owners::local_uid(path, meta, &by_name),
        };
        let gid = match (owners::local_gid(path, meta, rules), was) {
            (Some(gid), _) => Some(gid),
            (None, Was::Itself) => None,
            (None, Was::Replacing(Some(old))) => Some(old.st_gid),
            (None, Was::Replacing(None)) => owners::local_gid(path, meta, &by_name),
        };
        // -1 means "leave unchanged" to chown; from a peer it is garbage.
        if uid == Some(u32::MAX) || gid == Some(u32::MAX) {
            return Err(ApplyError::InvalidOwner {
                path: path.clone(),
                uid: meta.uid,
                gid: meta.gid,
            });
        }
        Ok((uid.map(Uid::from_raw), gid.map(Gid::from_raw)))
    }

    /// Sets `meta` on whatever is at `name` in `dir` (a symlink gets owner
    /// and mtime only) and returns its kind; `expect` refuses other kinds.
    fn set_meta_at(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        path: &RelPath,
        meta: &Meta,
        expect: Option<FileType>,
        was: Was,
    ) -> Result<FileType, ApplyError> {
        let kind = match lstat(dir, name, path)? {
            Some(st) => FileType::from_raw_mode(st.st_mode),
            None => return Err(io_error(path, "set the metadata of", Errno::NOENT)),
        };
        if let Some(want) = expect {
            if kind != want {
                return Err(unexpected(path, kind_name(want), kind));
            }
        }
        match kind {
            FileType::Symlink => self.set_symlink_meta(dir, name, path, meta, was)?,
            FileType::RegularFile | FileType::Directory | FileType::Fifo => {
                // O_NOFOLLOW: if it was swapped for a symlink since the
                // lstat, this fails rather than following it.
                // O_NONBLOCK: nor may a FIFO planted there hang us.
                let flags = OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC;
                let fd = rfs::openat(dir, name, flags, Mode::empty())
                    .map_err(|e| io_error(path, "open", e))?;
                let st = rfs::fstat(&fd).map_err(|e| io_error(path, "inspect", e))?;
                let now = FileType::from_raw_mode(st.st_mode);
                if now != kind {
                    return Err(unexpected(path, kind_name(kind), now));
                }
                self.set_meta_fd(fd.as_fd(), path, meta, was)?;
            }
            other => return Err(unexpected(path, "file, directory, symlink or FIFO", other)),
        }
        Ok(kind)
    }

    /// Clears the way for renaming a file or symlink over `name`: rename
    /// replaces files and symlinks atomically by itself, and an empty
    /// directory is removed first; a non-empty one is refused.
    fn make_room(&self, dir: &OwnedFd, name: &[u8], path: &RelPath) -> Result<(), ApplyError> {
        match lstat(dir, name, path)? {
            Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                rfs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(|e| match e {
                    Errno::NOTEMPTY | Errno::EXIST => {
                        ApplyError::DirNotEmpty { path: path.clone() }
                    }
                    e => io_error(path, "remove directory", e),
                })
            }
            _ => Ok(()),
        }
    }
}

/// A staged file: content written, checked and synced-to-be, waiting for
/// its rename.
struct Staged {
    index: usize,
    path: RelPath,
    dir: Rc<OwnedFd>,
    tmp: Vec<u8>,
    /// Kept open for [`Barrier::Fsync`] only.
    file: Option<File>,
}

/// The state of one [`Applier::apply`] call.
struct Batch<'a> {
    ap: &'a Applier,
    /// See [`Applier::apply_guarded`].
    guard: Option<&'a dyn LocalGuard>,
    /// Paths this batch changed in place (a hard link for `SaveOld`, a
    /// `chmod`): their stat no longer matches the index, by our doing.
    changed_here: BTreeSet<RelPath>,
    staged: Vec<Staged>,
    /// The paths of `staged`, for the checks of
    /// [`Batch::must_commit_before`] without a scan per action.
    staged_paths: BTreeSet<RelPath>,
    /// Parent directories of staged files, opened once per commit
    /// segment. Safe to reuse: an action that could rename or replace one
    /// of them touches an ancestor of a staged path and so commits (and
    /// clears) them first.
    dirs: HashMap<RelPath, Rc<OwnedFd>>,
    /// Directories whose entries changed: barrier 2 flushes them.
    touched: BTreeSet<RelPath>,
    /// Non-directories whose metadata changed in place (fsync mode).
    meta_changed: BTreeSet<RelPath>,
    /// Directory mtimes the batch set, with the action that set them.
    dir_times: BTreeMap<RelPath, (usize, i64)>,
    /// The mtimes, before the batch, of the directories it writes in; put
    /// back at the end unless the batch set them itself. Otherwise a
    /// peer's change would leave a new mtime on this host's directory,
    /// which its next scan would record as a change of its own.
    kept_times: BTreeMap<RelPath, i64>,
    /// This batch's barrier: the applier's, or per-file fsyncs for a
    /// small batch.
    barrier: Barrier,
    buf: Option<crate::scan::AlignedBuf>,
}

fn earliest(
    prev: Option<(usize, ApplyError)>,
    new: (usize, ApplyError),
) -> Option<(usize, ApplyError)> {
    match prev {
        Some(p) if p.0 <= new.0 => Some(p),
        _ => Some(new),
    }
}

impl<'a> Batch<'a> {
    fn new(ap: &'a Applier) -> Self {
        Batch {
            ap,
            guard: None,
            changed_here: BTreeSet::new(),
            staged: Vec::new(),
            staged_paths: BTreeSet::new(),
            dirs: HashMap::new(),
            touched: BTreeSet::new(),
            meta_changed: BTreeSet::new(),
            dir_times: BTreeMap::new(),
            kept_times: BTreeMap::new(),
            barrier: ap.options.barrier,
            buf: None,
        }
    }

    /// Notes the mtimes of the directories `actions` write in (see
    /// [`Batch::kept_times`]): one `lstat` per directory.
    fn keep_dir_times(&mut self, actions: &[Action]) {
        let parents: BTreeSet<RelPath> = actions
            .iter()
            .flat_map(|a| match a {
                Action::Rename { from, to, .. } => vec![from.parent(), to.parent()],
                other => vec![other.path().parent()],
            })
            .flatten()
            .filter(|p| !p.is_root())
            .collect();
        for p in parents {
            let Ok((dir, name)) = self.ap.parent(&p, "look at", None) else {
                continue;
            };
            if let Ok(Some(st)) = lstat(&dir, name, &p) {
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    self.kept_times.insert(p, crate::scan::key_of(&st).mtime_ns);
                }
            }
        }
    }

    /// Whether staged files must be committed before `action` runs, to
    /// keep the batch's order (see [`Applier::apply`]) or bound the
    /// resources staged files hold.
    fn must_commit_before(&self, action: &Action) -> bool {
        if self.staged.is_empty() {
            return false;
        }
        if matches!(action, Action::WriteFile { .. }) {
            let cap = match self.barrier {
                Barrier::Syncfs => MAX_STAGED,
                Barrier::Fsync => MAX_STAGED_FSYNC,
            };
            if self.staged.len() >= cap || self.dirs.len() >= MAX_STAGED_DIRS {
                return true;
            }
        }
        // Fixing a directory's metadata leaves the files staged in it be.
        let meta_only = matches!(action, Action::SetMeta { .. } | Action::MakeDir { .. });
        let mut paths: Vec<&RelPath> = vec![action.path()];
        match action {
            Action::Rename { from, .. } | Action::Link { from, .. } => paths.push(from),
            Action::WriteFile {
                source: Source::CopyFrom(from),
                ..
            } => paths.push(from),
            _ => {}
        }
        let saves = matches!(action, Action::SaveOld { .. });
        paths.iter().any(|p| {
            // The path itself or an ancestor of it is staged.
            self.staged_paths.contains(*p)
                || p.ancestors().any(|a| self.staged_paths.contains(&a))
                // Staged paths that start with its bytes: those below it,
                // and, for SaveOld, its NAME.OLD* siblings.
                || self
                    .staged_paths
                    .range::<RelPath, _>(*p..)
                    .take_while(|s| s.as_bytes().starts_with(p.as_bytes()))
                    .any(|s| {
                        (s.is_below(p) && !meta_only)
                            || (saves
                                && s.parent() == p.parent()
                                && s.file_name().starts_with(p.file_name()))
                    })
        })
    }

    fn run(
        &mut self,
        index: usize,
        action: &Action,
        source: &mut dyn ContentSource,
    ) -> Result<(), ApplyError> {
        if let Some(done) = self.above_tops(action) {
            return done;
        }
        match action {
            Action::SaveOld { path } => self.save_old(path),
            Action::Rename { from, to, meta } => self.rename(index, from, to, meta),
            Action::Remove { path, was } => self.remove(path, was),
            Action::MakeDir { path, meta } => self.make_dir(index, path, meta),
            Action::WriteFile {
                path,
                size,
                hash,
                meta,
                source: from,
            } => self.stage_write(index, path, *size, hash, meta, from, source),
            Action::MakeSymlink { path, target, meta } => self.make_symlink(path, target, meta),
            Action::MakeFifo { path, meta } => self.make_fifo(index, path, meta),
            Action::Link { from, to, meta } => self.link(index, from, to, meta),
            Action::SetMeta { path, meta } => self.set_meta(index, path, meta),
            Action::KeepConflictCopy {
                path,
                copy,
                size,
                hash,
                meta,
                prune,
            } => self.keep_conflict_copy(index, path, copy, (*size, hash), meta, prune, source),
        }
    }

    /// Keeps this host's file at `path`, which lost a conflict, as
    /// `copy`: its content copied (and checked against `hash`) into a
    /// temporary file, flushed, renamed into place and the directory
    /// flushed, all before any later action of the batch may replace or
    /// remove `path`. Then the oldest copies, `prune`, go.
    #[allow(clippy::too_many_arguments)]
    fn keep_conflict_copy(
        &mut self,
        index: usize,
        path: &RelPath,
        copy: &RelPath,
        (size, hash): (u64, &Hash),
        meta: &Meta,
        prune: &[RelPath],
        source: &mut dyn ContentSource,
    ) -> Result<(), ApplyError> {
        let (dir, name) = self.ap.parent(path, "keep a conflict copy of", None)?;
        // What is kept must be what the index recorded.
        self.check_unchanged(&dir, name, path)?;
        let copy_dir = copy.parent().ok_or(ApplyError::RootPath {
            op: "keep a conflict copy at",
        })?;
        // A copy may go into a directory of its own (a copy of a directory
        // that gives way to a file): made as implied directories are.
        let copy_dir_fd = self.ap.open_dir(&copy_dir, Some(&mut self.touched))?;
        self.stage_write(
            index,
            copy,
            size,
            hash,
            meta,
            &Source::CopyFrom(path.clone()),
            source,
        )?;
        self.commit_staged().map_err(|(_, e)| e)?;
        rfs::fsync(&copy_dir_fd).map_err(|e| io_error(&copy_dir, "flush", e))?;
        for old in prune {
            self.remove(
                old,
                &Content::File {
                    size: 0,
                    hash: [0; 32],
                },
            )?;
        }
        Ok(())
    }

    /// With a guard, fails if the non-directory `name` in `dir` changed
    /// since the index recorded it (see [`LocalGuard`]).
    fn check_unchanged(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        path: &RelPath,
    ) -> Result<(), ApplyError> {
        let Some(guard) = self.guard else {
            return Ok(());
        };
        if self.changed_here.contains(path) {
            return Ok(());
        }
        match lstat(dir, name, path)? {
            Some(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {
                if guard.unchanged(path, &crate::scan::key_of(&st)) {
                    Ok(())
                } else {
                    Err(ApplyError::ChangedLocally { path: path.clone() })
                }
            }
            _ => Ok(()),
        }
    }

    /// An action on a directory above the mirrored trees (see
    /// [`Applier::with_tops`]): making one only makes sure it exists,
    /// removing one leaves it. `None` for any other action.
    fn above_tops(&mut self, action: &Action) -> Option<Result<(), ApplyError>> {
        let path = action.path();
        if !self.ap.outside_tops(path) {
            return None;
        }
        match action {
            Action::MakeDir { .. } => {
                Some(self.ap.open_dir(path, Some(&mut self.touched)).map(|_| ()))
            }
            Action::Remove {
                was: Content::Dir, ..
            } => Some(Ok(())),
            _ => None,
        }
    }

    fn touch_parent(&mut self, path: &RelPath) {
        if let Some(parent) = path.parent() {
            self.touched.insert(parent);
        }
    }

    fn set_root_meta(&mut self, index: usize, meta: &Meta) -> Result<(), ApplyError> {
        self.ap
            .set_meta_fd(self.ap.root.as_fd(), &RelPath::root(), meta, Was::Itself)?;
        self.dir_times
            .insert(RelPath::root(), (index, meta.mtime_ns));
        self.touched.insert(RelPath::root());
        Ok(())
    }

    /// Records what a metadata change on `path` (of `kind`) needs later.
    fn meta_set(&mut self, index: usize, path: &RelPath, kind: FileType, meta: &Meta) {
        if kind == FileType::Directory {
            self.dir_times.insert(path.clone(), (index, meta.mtime_ns));
            self.touched.insert(path.clone());
        } else if kind == FileType::RegularFile {
            self.meta_changed.insert(path.clone());
        } else {
            // A symlink cannot be opened to fsync; its directory's
            // barrier carries it.
            self.touch_parent(path);
        }
    }

    /// Keeps the file at `path` as `NAME.OLD`, or as generation 1 of
    /// `NAME.OLD.1..N`. A hard link to a temporary name is renamed into
    /// place, so each step is atomic and the current file stays where it
    /// is. Nothing at `path` is nothing to keep.
    fn save_old(&mut self, path: &RelPath) -> Result<(), ApplyError> {
        let (dir, name) = self.ap.parent(path, "keep an old version of", None)?;
        match lstat(&dir, name, path)? {
            None => return Ok(()),
            Some(st) => {
                let kind = FileType::from_raw_mode(st.st_mode);
                if kind != FileType::RegularFile {
                    return Err(unexpected(path, "file", kind));
                }
            }
        }
        // What is kept must be what was recorded; the link then changes
        // the file's ctime, by our doing.
        self.check_unchanged(&dir, name, path)?;
        self.changed_here.insert(path.clone());
        let tmp = temp_link(&dir, name, path)?;
        let result = self.shift_generations(&dir, name, path, &tmp);
        if result.is_err() {
            let _ = rfs::unlinkat(&dir, tmp.as_slice(), AtFlags::empty());
        }
        self.touch_parent(path);
        result
    }

    fn shift_generations(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        path: &RelPath,
        tmp: &[u8],
    ) -> Result<(), ApplyError> {
        let history = self.ap.rules.rules(path).history;
        let newest = if history == 0 {
            old_name(name, 0)
        } else {
            // OLD.(N-1) over OLD.N drops the oldest; a crash between two
            // steps loses at most a generation's place, never the file.
            for g in (1..history).rev() {
                let from = old_name(name, g);
                match rfs::renameat(dir, from.as_slice(), dir, old_name(name, g + 1)) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(io_error(&join_lossy_parent(path, &from), "rename", e)),
                }
            }
            old_name(name, 1)
        };
        rfs::renameat(dir, tmp, dir, newest.as_slice())
            .map_err(|e| io_error(&join_lossy_parent(path, &newest), "create", e))
    }

    fn rename(
        &mut self,
        index: usize,
        from: &RelPath,
        to: &RelPath,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        let (fdir, fname) = self.ap.parent(from, "rename", None)?;
        let mut created = BTreeSet::new();
        let (tdir, tname) = self.ap.parent(to, "rename onto", Some(&mut created))?;
        self.touched.append(&mut created);
        // RENAME_NOREPLACE: what is at `to` is unknown to the index, and a
        // plain rename would silently destroy it.
        match rfs::renameat_with(&fdir, fname, &tdir, tname, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(ApplyError::TargetExists { path: to.clone() }),
            // Filesystems without RENAME_NOREPLACE: check, then rename.
            Err(Errno::INVAL | Errno::NOSYS) => {
                if lstat(&tdir, tname, to)?.is_some() {
                    return Err(ApplyError::TargetExists { path: to.clone() });
                }
                rfs::renameat(&fdir, fname, &tdir, tname)
                    .map_err(|e| io_error(from, "rename", e))?;
            }
            Err(e) => return Err(io_error(from, "rename", e)),
        }
        self.touch_parent(from);
        self.touch_parent(to);
        // What the batch recorded below `from` now lives below `to`.
        self.dir_times = std::mem::take(&mut self.dir_times)
            .into_iter()
            .map(|(p, v)| (p.rebase(from, to).unwrap_or(p), v))
            .collect();
        self.touched = std::mem::take(&mut self.touched)
            .into_iter()
            .map(|p| p.rebase(from, to).unwrap_or(p))
            .collect();
        // The file moved is the one this host had: kept fields stay.
        let kind = self
            .ap
            .set_meta_at(&tdir, tname, to, meta, None, Was::Itself)?;
        self.meta_set(index, to, kind, meta);
        Ok(())
    }

    /// Removes `path`, which the index believed to be `was`. Already gone
    /// is success (a batch may be replayed after a crash); another kind
    /// than expected, or a directory that is not empty, is refused.
    fn remove(&mut self, path: &RelPath, was: &Content) -> Result<(), ApplyError> {
        let (dir, name) = match self.ap.parent(path, "remove", None) {
            Ok(found) => found,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let kind = match lstat(&dir, name, path)? {
            None => return Ok(()),
            Some(st) => FileType::from_raw_mode(st.st_mode),
        };
        let expected = match was {
            Content::File { .. } => Some(FileType::RegularFile),
            Content::Dir => Some(FileType::Directory),
            Content::Symlink { .. } => Some(FileType::Symlink),
            Content::Fifo => Some(FileType::Fifo),
            Content::Deleted => None,
        };
        if expected.is_some_and(|want| want != kind) {
            return Err(unexpected(path, was.kind(), kind));
        }
        self.check_unchanged(&dir, name, path)?;
        if kind == FileType::Directory {
            rfs::unlinkat(&dir, name, AtFlags::REMOVEDIR).map_err(|e| match e {
                Errno::NOTEMPTY | Errno::EXIST => ApplyError::DirNotEmpty { path: path.clone() },
                e => io_error(path, "remove directory", e),
            })?;
        } else {
            rfs::unlinkat(&dir, name, AtFlags::empty()).map_err(|e| io_error(path, "remove", e))?;
        }
        self.touch_parent(path);
        Ok(())
    }

    fn make_dir(&mut self, index: usize, path: &RelPath, meta: &Meta) -> Result<(), ApplyError> {
        if path.is_root() {
            return self.set_root_meta(index, meta);
        }
        let (dir, name) = self.ap.parent(path, "make a directory at", None)?;
        let existing = lstat(&dir, name, path)?.map(|st| FileType::from_raw_mode(st.st_mode));
        let was = if existing == Some(FileType::Directory) {
            Was::Itself
        } else {
            Was::Replacing(None)
        };
        if existing != Some(FileType::Directory) {
            if existing.is_some() {
                rfs::unlinkat(&dir, name, AtFlags::empty())
                    .map_err(|e| io_error(path, "remove (to make a directory)", e))?;
            }
            // 0700 until owner and mode are set: never wider than asked.
            rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                .map_err(|e| io_error(path, "create directory", e))?;
            self.touch_parent(path);
        }
        let kind = self
            .ap
            .set_meta_at(&dir, name, path, meta, Some(FileType::Directory), was)?;
        self.meta_set(index, path, kind, meta);
        Ok(())
    }

    fn set_meta(&mut self, index: usize, path: &RelPath, meta: &Meta) -> Result<(), ApplyError> {
        if path.is_root() {
            return self.set_root_meta(index, meta);
        }
        let (dir, name) = self.ap.parent(path, "set the metadata of", None)?;
        self.changed_here.insert(path.clone());
        let kind = self
            .ap
            .set_meta_at(&dir, name, path, meta, None, Was::Itself)?;
        self.meta_set(index, path, kind, meta);
        Ok(())
    }

    fn make_symlink(
        &mut self,
        path: &RelPath,
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        let reason = if target.is_empty() {
            Some("is empty")
        } else if target.contains(&0) {
            Some("holds a NUL byte")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ApplyError::BadSymlinkTarget {
                path: path.clone(),
                reason,
            });
        }
        let (dir, name) = self.ap.parent(path, "make a symbolic link at", None)?;
        let old = lstat(&dir, name, path)?;
        let tmp = temp_symlink(target, &dir, name, path)?;
        let set = self
            .ap
            .set_symlink_meta(&dir, &tmp, path, meta, Was::Replacing(old));
        self.put_in_place(
            &dir,
            &tmp,
            name,
            path,
            set,
            "rename symbolic link into place",
        )?;
        self.touch_parent(path);
        Ok(())
    }

    /// The last steps of making a symlink, FIFO or hard link: `tmp`, made
    /// beside `name` in `dir` and given its metadata (`set`), is renamed
    /// over `name` once `path` is still as planned and room is made for
    /// it. On any failure `tmp` is removed.
    fn put_in_place(
        &self,
        dir: &OwnedFd,
        tmp: &[u8],
        name: &[u8],
        path: &RelPath,
        set: Result<(), ApplyError>,
        op: &'static str,
    ) -> Result<(), ApplyError> {
        let placed = set
            .and_then(|()| self.check_unchanged(dir, name, path))
            .and_then(|()| self.ap.make_room(dir, name, path))
            .and_then(|()| rfs::renameat(dir, tmp, dir, name).map_err(|e| io_error(path, op, e)));
        if placed.is_err() {
            let _ = rfs::unlinkat(dir, tmp, AtFlags::empty());
        }
        placed
    }

    /// Makes `path` a named pipe: made under a temporary name with its
    /// metadata, then renamed into place, as a symlink is.
    fn make_fifo(&mut self, index: usize, path: &RelPath, meta: &Meta) -> Result<(), ApplyError> {
        let (dir, name) = self.ap.parent(path, "make a FIFO at", None)?;
        let old = lstat(&dir, name, path)?;
        let (tmp, ()) = with_temp_name(name, path, "create a temporary FIFO for", |tmp| {
            // 0600 until owner and mode are set: never wider than asked.
            rfs::mknodat(&dir, tmp, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
        })?;
        let set = self
            .ap
            .set_meta_at(
                &dir,
                &tmp,
                path,
                meta,
                Some(FileType::Fifo),
                Was::Replacing(old),
            )
            .map(|_| ());
        self.put_in_place(&dir, &tmp, name, path, set, "rename FIFO into place")?;
        self.touch_parent(path);
        self.meta_set(index, path, FileType::Fifo, meta);
        Ok(())
    }

    /// Makes `to` another name of the regular file at `from` (a hard
    /// link made under a temporary name, given `meta`, renamed into
    /// place). If `to` is that inode already, only `meta` is set.
    fn link(
        &mut self,
        index: usize,
        from: &RelPath,
        to: &RelPath,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        let (fdir, fname) = self.ap.parent(from, "make a hard link to", None)?;
        let leader = lstat(&fdir, fname, from)?
            .ok_or_else(|| io_error(from, "make a hard link to", Errno::NOENT))?;
        let kind = FileType::from_raw_mode(leader.st_mode);
        if kind != FileType::RegularFile {
            return Err(unexpected(from, "file", kind));
        }
        let (dir, name) = self.ap.parent(to, "make a hard link at", None)?;
        let old = lstat(&dir, name, to)?;
        if old
            .as_ref()
            .is_some_and(|o| (o.st_dev, o.st_ino) == (leader.st_dev, leader.st_ino))
        {
            return self.set_meta(index, to, meta);
        }
        let (tmp, ()) = with_temp_name(name, to, "link a temporary name to", |tmp| {
            rfs::linkat(&fdir, fname, &dir, tmp, AtFlags::empty())
        })?;
        let set = self
            .ap
            .set_meta_at(
                &dir,
                &tmp,
                to,
                meta,
                Some(FileType::RegularFile),
                Was::Replacing(old),
            )
            .map(|_| ());
        self.put_in_place(&dir, &tmp, name, to, set, "rename hard link into place")?;
        // The first name's inode changed too (its link count, its ctime),
        // by our doing.
        self.changed_here.insert(from.clone());
        self.touch_parent(to);
        self.meta_set(index, to, FileType::RegularFile, meta);
        Ok(())
    }

    /// The parent of `path`, from the segment's cache.
    fn staging_dir(&mut self, path: &RelPath) -> Result<Rc<OwnedFd>, ApplyError> {
        let parent = path.parent().ok_or(ApplyError::RootPath {
            op: "write a file at",
        })?;
        if let Some(fd) = self.dirs.get(&parent) {
            return Ok(fd.clone());
        }
        let (fd, _) = self.ap.parent(path, "write a file at", None)?;
        let fd = Rc::new(fd);
        self.dirs.insert(parent, fd.clone());
        Ok(fd)
    }

    /// Step 1 of the scheme in [`Applier::apply`]: content into a checked
    /// temporary file with its metadata; the rename waits for a barrier.
    #[allow(clippy::too_many_arguments)]
    fn stage_write(
        &mut self,
        index: usize,
        path: &RelPath,
        size: u64,
        hash: &Hash,
        meta: &Meta,
        from: &Source,
        source: &mut dyn ContentSource,
    ) -> Result<(), ApplyError> {
        let dir = self.staging_dir(path)?;
        let name = path.file_name();
        // Refuse a doomed write before any content moves.
        let old = lstat(&dir, name, path)?;
        if let Some(st) = &old {
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory
                && !dir_is_empty(&dir, name, path)?
            {
                return Err(ApplyError::DirNotEmpty { path: path.clone() });
            }
        }
        let was = Was::Replacing(old);
        if let Source::Fetch = from {
            if let Some(moved) =
                self.take_staged(&dir, name, path, size, hash, meta, was, source)?
            {
                self.staged_paths.insert(path.clone());
                self.staged.push(Staged {
                    index,
                    path: path.clone(),
                    dir,
                    tmp: moved.0,
                    file: match self.barrier {
                        Barrier::Fsync => Some(moved.1),
                        Barrier::Syncfs => None,
                    },
                });
                return Ok(());
            }
        }
        let mut reader: Box<dyn Read + '_> = match from {
            Source::Fetch => source
                .open(path, hash, size)
                .map_err(|error| ApplyError::Source {
                    path: path.clone(),
                    error,
                })?,
            Source::CopyFrom(local) => Box::new(self.ap.open_local_file(local)?),
        };
        let (tmp, file) = temp_file(&dir, name, path)?;
        let buf = self
            .buf
            .get_or_insert_with(|| crate::scan::AlignedBuf::new(COPY_BUF))
            .get();
        let filled = fill(&file, &mut reader, buf, path, size, hash)
            .and_then(|()| self.ap.set_meta_fd(file.as_fd(), path, meta, was));
        if let Err(e) = filled {
            let _ = rfs::unlinkat(&*dir, tmp.as_slice(), AtFlags::empty());
            return Err(e);
        }
        let file = match self.barrier {
            Barrier::Fsync => Some(file),
            Barrier::Syncfs => None,
        };
        self.staged_paths.insert(path.clone());
        self.staged.push(Staged {
            index,
            path: path.clone(),
            dir,
            tmp,
            file,
        });
        Ok(())
    }

    /// A file the source holds ready ([`ContentSource::take_file`]),
    /// moved into `dir` under a temporary name and given `meta`: no copy.
    /// `None` if the source has none or it cannot be moved here (another
    /// filesystem): then the content is copied.
    #[allow(clippy::too_many_arguments)]
    fn take_staged(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        path: &RelPath,
        size: u64,
        hash: &Hash,
        meta: &Meta,
        was: Was,
        source: &mut dyn ContentSource,
    ) -> Result<Option<(Vec<u8>, File)>, ApplyError> {
        let Some(from) = source.take_file(hash, size) else {
            return Ok(None);
        };
        let moved = with_temp_name(name, path, "move fetched content to", |tmp| {
            rfs::renameat_with(rfs::CWD, &from, dir, tmp, RenameFlags::NOREPLACE)
        });
        let Ok((tmp, ())) = moved else {
            return Ok(None);
        };
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let placed = rfs::openat(dir, tmp.as_slice(), flags, Mode::empty())
            .map(File::from)
            .map_err(|e| io_error(path, "open fetched content at", e))
            .and_then(|file| {
                let got = file
                    .metadata()
                    .map_err(|e| ApplyError::ContentRead {
                        path: path.clone(),
                        error: e,
                    })?
                    .len();
                if got != size {
                    return Err(ApplyError::SizeMismatch {
                        path: path.clone(),
                        expected: size,
                        got,
                    });
                }
                self.ap.set_meta_fd(file.as_fd(), path, meta, was)?;
                Ok(file)
            });
        match placed {
            Ok(file) => Ok(Some((tmp, file))),
            Err(e) => {
                let _ = rfs::unlinkat(dir, tmp.as_slice(), AtFlags::empty());
                Err(e)
            }
        }
    }

    /// Steps 2 and 3: barrier 1, then the renames. On failure, every
    /// staged file not yet renamed is deleted, and the failing action's
    /// index is returned.
    fn commit_staged(&mut self) -> Result<(), (usize, ApplyError)> {
        self.dirs.clear();
        self.staged_paths.clear();
        let staged = std::mem::take(&mut self.staged);
        let Some(first) = staged.first().map(|s| s.index) else {
            return Ok(());
        };
        if let Err(e) = self.barrier_files(&staged) {
            staged.iter().for_each(discard);
            return Err((first, e));
        }
        let mut rest = staged.iter();
        while let Some(s) = rest.next() {
            let name = s.path.file_name();
            let placed = self
                .check_unchanged(&s.dir, name, &s.path)
                .and_then(|()| self.ap.make_room(&s.dir, name, &s.path))
                .and_then(|()| {
                    rfs::renameat(&*s.dir, s.tmp.as_slice(), &*s.dir, name)
                        .map_err(|e| io_error(&s.path, "rename into place", e))
                });
            if let Err(e) = placed {
                discard(s);
                rest.for_each(discard);
                return Err((s.index, e));
            }
            self.touch_parent(&s.path);
        }
        Ok(())
    }

    /// Barrier 1: the staged files' data and metadata reach the disk.
    fn barrier_files(&self, staged: &[Staged]) -> Result<(), ApplyError> {
        match self.barrier {
            Barrier::Syncfs => syncfs(&self.ap.root),
            Barrier::Fsync => {
                let jobs: Vec<(&File, &RelPath)> = staged
                    .iter()
                    .filter_map(|s| s.file.as_ref().map(|f| (f, &s.path)))
                    .collect();
                fsync_parallel(&jobs)
            }
        }
    }

    /// Step 4: gives directories the mtimes the batch set, which later
    /// entries created or renamed inside them have moved. Directories
    /// gone or replaced since are skipped.
    fn reapply_dir_times(&mut self) -> Result<(), (usize, ApplyError)> {
        // Best effort: a directory that could not be given its old mtime
        // back costs one needless change record, nothing else.
        for (path, &ns) in &self.kept_times {
            if !self.dir_times.contains_key(path) {
                let _ = self.set_dir_mtime(path, ns);
            }
        }
        for (path, &(index, ns)) in &self.dir_times {
            self.set_dir_mtime(path, ns)
                .map_err(|e| (index, io_error(path, "set the mtime of", e)))?;
        }
        Ok(())
    }

    /// Sets the mtime of the directory at `path`, if one is still there.
    fn set_dir_mtime(&self, path: &RelPath, ns: i64) -> Result<(), Errno> {
        if path.is_root() {
            return rfs::futimens(&self.ap.root, &mtime(ns));
        }
        let Ok((dir, name)) = self.ap.parent(path, "set the mtime of", None) else {
            return Ok(());
        };
        match lstat(&dir, name, path) {
            Ok(Some(st)) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                rfs::utimensat(&dir, name, &mtime(ns), AtFlags::SYMLINK_NOFOLLOW)
            }
            _ => Ok(()),
        }
    }

    /// Step 5: barrier 2, for the directories (and in fsync mode the
    /// metadata) the batch changed.
    fn final_barrier(&self) -> Result<(), ApplyError> {
        if self.touched.is_empty() && self.meta_changed.is_empty() && self.dir_times.is_empty() {
            return Ok(());
        }
        if self.barrier == Barrier::Syncfs {
            return syncfs(&self.ap.root);
        }
        let all: BTreeSet<&RelPath> = self
            .touched
            .iter()
            .chain(self.meta_changed.iter())
            .chain(self.dir_times.keys())
            .collect();
        for path in all {
            if path.is_root() {
                rfs::fsync(&self.ap.root).map_err(|e| io_error(path, "sync", e))?;
                continue;
            }
            // Gone or replaced since: its parent's flush records that.
            let Ok((dir, name)) = self.ap.parent(path, "sync", None) else {
                continue;
            };
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
            let fd = match rfs::openat(&dir, name, flags | OFlags::CLOEXEC, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::LOOP) => continue,
                Err(e) => return Err(io_error(path, "open", e)),
            };
            rfs::fsync(&fd).map_err(|e| io_error(path, "sync", e))?;
        }
        Ok(())
    }
}

/// Deletes a staged file that will not be renamed.
fn discard(s: &Staged) {
    let _ = rfs::unlinkat(&*s.dir, s.tmp.as_slice(), AtFlags::empty());
}

fn syncfs(root: &OwnedFd) -> Result<(), ApplyError> {
    rfs::syncfs(root).map_err(|e| io_error(&RelPath::root(), "sync the filesystem of", e))
}

/// fsyncs `jobs` from up to [`FSYNC_THREADS`] threads: a flush waits on
/// the device, and several in flight let it batch them.
fn fsync_parallel(jobs: &[(&File, &RelPath)]) -> Result<(), ApplyError> {
    let sync = |chunk: &[(&File, &RelPath)]| -> Result<(), ApplyError> {
        for (file, path) in chunk {
            file.sync_all().map_err(|error| ApplyError::Io {
                path: (*path).clone(),
                op: "sync",
                error,
            })?;
        }
        Ok(())
    };
    if jobs.len() <= 1 {
        return sync(jobs);
    }
    let per_thread = jobs.len().div_ceil(FSYNC_THREADS.min(jobs.len()));
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || sync(chunk)))
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h.join().unwrap_or_else(|_| {
                Err(ApplyError::Io {
                    path: RelPath::root(),
                    op: "sync files below",
                    error: io::Error::other("an fsync thread panicked"),
                })
            });
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// Streams `reader` into `file` through `buf`, checking size and hash.
fn fill(
    mut file: &File,
    reader: &mut dyn Read,
    buf: &mut [u8],
    path: &RelPath,
    size: u64,
    hash: &Hash,
) -> Result<(), ApplyError> {
    let mut hasher = blake3::Hasher::new();
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(ApplyError::ContentRead {
                    path: path.clone(),
                    error,
                })
            }
        };
        total = total.saturating_add(n as u64);
        // Checked as it arrives: a source must not fill the disk.
        if total > size {
            return Err(ApplyError::TooLong {
                path: path.clone(),
                expected: size,
            });
        }
        let chunk = &buf[..n];
        hasher.update(chunk);
        file.write_all(chunk).map_err(|error| ApplyError::Io {
            path: path.clone(),
            op: "write the temporary file for",
            error,
        })?;
    }
    if total != size {
        return Err(ApplyError::SizeMismatch {
            path: path.clone(),
            expected: size,
            got: total,
        });
    }
    let got = *hasher.finalize().as_bytes();
    if &got != hash {
        return Err(ApplyError::HashMismatch {
            path: path.clone(),
            expected: *hash,
            got,
        });
    }
    Ok(())
}

/// Creates a temporary file (O_EXCL, 0600) for `name` in `dir`.
fn temp_file(dir: &OwnedFd, name: &[u8], path: &RelPath) -> Result<(Vec<u8>, File), ApplyError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    with_temp_name(name, path, "create a temporary file for", |tmp| {
        rfs::openat(dir, tmp, flags, Mode::from_raw_mode(0o600)).map(File::from)
    })
}

/// Creates a symlink to `target` under a temporary name in `dir`.
fn temp_symlink(
    target: &[u8],
    dir: &OwnedFd,
    name: &[u8],
    path: &RelPath,
) -> Result<Vec<u8>, ApplyError> {
    with_temp_name(name, path, "create a temporary symbolic link for", |tmp| {
        rfs::symlinkat(target, dir, tmp)
    })
    .map(|(tmp, ())| tmp)
}

/// Hard-links `name` in `dir` to a temporary name.
fn temp_link(dir: &OwnedFd, name: &[u8], path: &RelPath) -> Result<Vec<u8>, ApplyError> {
    with_temp_name(name, path, "link a temporary name to", |tmp| {
        rfs::linkat(dir, name, dir, tmp, AtFlags::empty())
    })
    .map(|(tmp, ())| tmp)
}

/// Runs `create` on fresh temporary names until one does not exist yet.
fn with_temp_name<T>(
    name: &[u8],
    path: &RelPath,
    op: &'static str,
    mut create: impl FnMut(&[u8]) -> rustix::io::Result<T>,
) -> Result<(Vec<u8>, T), ApplyError> {
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = temp_name(name);
        match create(&tmp) {
            Ok(t) => return Ok((tmp, t)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(io_error(path, op, e)),
        }
    }
    Err(io_error(path, op, Errno::EXIST))
}

/// lstat relative to `dir`; `None` if nothing is there.
fn lstat(dir: &OwnedFd, name: &[u8], path: &RelPath) -> Result<Option<rfs::Stat>, ApplyError> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(io_error(path, "inspect", e)),
    }
}

/// Whether the directory `name` in `dir` has no entries.
fn dir_is_empty(dir: &OwnedFd, name: &[u8], path: &RelPath) -> Result<bool, ApplyError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::empty()).map_err(|e| io_error(path, "open", e))?;
    let mut entries = rfs::Dir::new(fd).map_err(|e| io_error(path, "list", e))?;
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| io_error(path, "list", e))?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What [`Applier::cleanup_dir`] did in one directory.
struct DirCleanup {
    /// Temporary files removed.
    removed: usize,
    /// The names of its subdirectories, to clean next.
    subdirs: Vec<Vec<u8>>,
    /// The temporary files that could not be removed.
    failed: Vec<ApplyError>,
}

/// What [`Applier::cleanup_dir`] needs of a directory.
#[derive(Default)]
struct Listing {
    /// Non-directories with temporary names.
    temps: Vec<Vec<u8>>,
    /// Subdirectories (never symlinks).
    subdirs: Vec<Vec<u8>>,
}

fn list_dir(fd: &OwnedFd, dir: &RelPath) -> Result<Listing, ApplyError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let own = rfs::openat(fd, ".", flags, Mode::empty()).map_err(|e| io_error(dir, "open", e))?;
    let mut entries = rfs::Dir::new(own).map_err(|e| io_error(dir, "list", e))?;
    let mut listing = Listing::default();
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| io_error(dir, "list", e))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut kind = entry.file_type();
        if kind == FileType::Unknown {
            // Some filesystems do not fill d_type.
            kind = match rfs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => continue,
            };
        }
        if kind == FileType::Directory {
            listing.subdirs.push(name.to_vec());
        } else if is_temp_name(name) {
            listing.temps.push(name.to_vec());
        }
    }
    Ok(listing)
}

/// The first `depth` components of `path`.
fn prefix(path: &RelPath, depth: usize) -> RelPath {
    std::iter::once(path.clone())
        .chain(path.ancestors())
        .find(|a| a.components().count() <= depth)
        .unwrap_or_else(RelPath::root)
}

/// `dir/name` for messages; `dir` itself if that is not a valid path.
fn join_lossy(dir: &RelPath, name: &[u8]) -> RelPath {
    dir.join(name).unwrap_or_else(|_| dir.clone())
}

/// A sibling of `path` named `name`, for messages.
fn join_lossy_parent(path: &RelPath, name: &[u8]) -> RelPath {
    join_lossy(&path.parent().unwrap_or_else(RelPath::root), name)
}

/// Only the mtime; the access time is left alone (UTIME_OMIT).
fn mtime(ns: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: ns.div_euclid(1_000_000_000),
            tv_nsec: ns.rem_euclid(1_000_000_000),
        },
    }
}

fn io_error(path: &RelPath, op: &'static str, e: Errno) -> ApplyError {
    ApplyError::Io {
        path: path.clone(),
        op,
        error: e.into(),
    }
}

fn unexpected(path: &RelPath, expected: &'static str, found: FileType) -> ApplyError {
    ApplyError::Unexpected {
        path: path.clone(),
        expected,
        found: kind_name(found),
    }
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "named pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown kind",
    }
}

fn shown(path: &RelPath) -> String {
    if path.is_root() {
        "the mirror root".to_string()
    } else {
        path.to_string()
    }
}

/// The system's description of an I/O error, without Rust's
/// "(os error N)" suffix.
fn describe(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn p(s: &str) -> RelPath {
        RelPath::new(s.as_bytes()).expect("valid path")
    }

    fn h(content: &[u8]) -> Hash {
        *blake3::hash(content).as_bytes()
    }

    fn meta(mode: u32, mtime_ns: i64) -> Meta {
        Meta {
            mode,
            uid: 0,
            gid: 0,
            mtime_ns,
            ..Default::default()
        }
    }

    const T: i64 = 1_600_000_000_123_456_789;

    fn write(path: &str, content: &[u8], meta: Meta) -> Action {
        Action::WriteFile {
            path: p(path),
            size: content.len() as u64,
            hash: h(content),
            meta,
            source: Source::Fetch,
        }
    }

    /// Content by hash, as a peer would serve it.
    #[derive(Default)]
    struct Mem(HashMap<Hash, Vec<u8>>);

    impl Mem {
        fn with(contents: &[&[u8]]) -> Mem {
            Mem(contents.iter().map(|c| (h(c), c.to_vec())).collect())
        }
    }

    impl ContentSource for Mem {
        fn open(
            &mut self,
            _: &RelPath,
            hash: &Hash,
            _: u64,
        ) -> Result<Box<dyn Read + '_>, SourceError> {
            match self.0.get(hash) {
                Some(c) => Ok(Box::new(c.as_slice())),
                None => Err("no such content".into()),
            }
        }
    }

    /// Serves `good` bytes, then `fill` bytes forever, or fails after
    /// `fail_after` bytes.
    struct Rogue {
        served: usize,
        fail_after: Option<usize>,
    }

    impl Read for Rogue {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if let Some(limit) = self.fail_after {
                if self.served >= limit {
                    return Err(io::Error::other("peer went away"));
                }
            }
            let n = buf.len().min(1000);
            buf[..n].fill(b'x');
            self.served += n;
            Ok(n)
        }
    }

    struct RogueSource {
        fail_after: Option<usize>,
    }

    impl ContentSource for RogueSource {
        fn open(
            &mut self,
            _: &RelPath,
            _: &Hash,
            _: u64,
        ) -> Result<Box<dyn Read + '_>, SourceError> {
            Ok(Box::new(Rogue {
                served: 0,
                fail_after: self.fail_after,
            }))
        }
    }

    fn setup(options: ApplyOptions) -> (tempfile::TempDir, Applier) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ap = Applier::open(dir.path(), options).expect("open root");
        (dir, ap)
    }

    fn default_setup() -> (tempfile::TempDir, Applier) {
        setup(ApplyOptions::default())
    }

    /// Every name below `dir` that is one of our temporary files.
    fn temps(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).expect("read_dir") {
                let e = e.expect("entry");
                let name = e.file_name();
                if name.to_string_lossy().starts_with(".omirr.") {
                    found.push(e.path());
                }
                if e.file_type().expect("type").is_dir() {
                    todo.push(e.path());
                }
            }
        }
        found
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    fn mtime_ns(path: &Path) -> i64 {
        let m = fs::symlink_metadata(path).expect("stat");
        m.mtime() * 1_000_000_000 + m.mtime_nsec()
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn writes_a_new_file_with_content_mode_and_mtime_to_the_ns() {
        let (dir, ap) = default_setup();
        let content = b"hello, mirror\n";
        ap.apply(
            &[write("f", content, meta(0o640, T))],
            &mut Mem::with(&[content]),
        )
        .expect("apply");
        let f = dir.path().join("f");
        assert_eq!(fs::read(&f).expect("read"), content);
        assert_eq!(mode_of(&f), 0o640);
        assert_eq!(mtime_ns(&f), T);
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn negative_mtimes_are_set_exactly() {
        let (dir, ap) = default_setup();
        let t = -1_500_000_001; // 1.5 s before the epoch, plus a ns
        ap.apply(
            &[write("old", b"x", meta(0o644, t))],
            &mut Mem::with(&[b"x"]),
        )
        .expect("apply");
        assert_eq!(mtime_ns(&dir.path().join("old")), t);
    }

    #[test]
    fn overwrite_replaces_the_file_atomically() {
        let (dir, ap) = default_setup();
        let mut src = Mem::with(&[b"one", b"two, longer"]);
        ap.apply(&[write("f", b"one", meta(0o644, T))], &mut src)
            .expect("first");
        let f = dir.path().join("f");
        // A reader holding the old file keeps the old content: the new one
        // is a different inode renamed over it, not a rewrite in place.
        let before = fs::File::open(&f).expect("open");
        let old_ino = fs::metadata(&f).expect("stat").ino();
        ap.apply(&[write("f", b"two, longer", meta(0o600, T + 1))], &mut src)
            .expect("second");
        assert_eq!(fs::read(&f).expect("read"), b"two, longer");
        assert_ne!(fs::metadata(&f).expect("stat").ino(), old_ino);
        let mut old = String::new();
        (&before).read_to_string(&mut old).expect("read old");
        assert_eq!(old, "one");
        assert_eq!(mode_of(&f), 0o600);
        assert_eq!(mtime_ns(&f), T + 1);
        assert!(temps(dir.path()).is_empty());
    }

    #[test]
    fn hash_mismatch_is_refused_and_leaves_no_temp() {
        let (dir, ap) = default_setup();
        // The source serves other bytes of the same length.
        let mut src = Mem(HashMap::from([(h(b"good"), b"evil".to_vec())]));
        let err = ap
            .apply(&[write("f", b"good", meta(0o644, T))], &mut src)
            .expect_err("must be refused");
        assert_eq!(err.index, Some(0));
        assert_eq!(err.durable, 0);
        assert!(
            matches!(&err.error, ApplyError::HashMismatch { path, .. } if *path == p("f")),
            "{err:?}"
        );
        assert!(err.to_string().contains("BLAKE3"), "{err}");
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn oversized_content_is_cut_off_and_leaves_no_temp() {
        let (dir, ap) = default_setup();
        // A source that never stops: refused as soon as it passes the size.
        let err = ap
            .apply(
                &[write("f", &[b'x'; 5000], meta(0o644, T))],
                &mut RogueSource { fail_after: None },
            )
            .expect_err("must be refused");
        assert!(
            matches!(err.error, ApplyError::TooLong { expected: 5000, .. }),
            "{err:?}"
        );
        assert_eq!(names(dir.path()), Vec::<String>::new());

        // Short content is refused too.
        let mut src = Mem(HashMap::from([(h(b"long"), b"lo".to_vec())]));
        let err = ap
            .apply(&[write("f", b"long", meta(0o644, T))], &mut src)
            .expect_err("short");
        assert!(
            matches!(
                err.error,
                ApplyError::SizeMismatch {
                    expected: 4,
                    got: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn source_error_mid_stream_leaves_no_temp() {
        let (dir, ap) = default_setup();
        fs::create_dir(dir.path().join("d")).expect("mkdir");
        let big = vec![b'x'; 300_000];
        let err = ap
            .apply(
                &[write("d/f", &big, meta(0o644, T))],
                &mut RogueSource {
                    fail_after: Some(150_000),
                },
            )
            .expect_err("must fail");
        assert!(
            matches!(&err.error, ApplyError::ContentRead { path, .. } if *path == p("d/f")),
            "{err:?}"
        );
        assert!(err.to_string().contains("peer went away"), "{err}");
        assert!(temps(dir.path()).is_empty());
        assert_eq!(names(&dir.path().join("d")), Vec::<String>::new());

        // A source that cannot even start is reported the same way.
        let err = ap
            .apply(&[write("d/g", b"zz", meta(0o644, T))], &mut Mem::default())
            .expect_err("no content");
        assert!(matches!(err.error, ApplyError::Source { .. }), "{err:?}");
        assert!(temps(dir.path()).is_empty());
    }

    #[test]
    fn a_failure_reports_its_index_and_keeps_earlier_actions() {
        let (dir, ap) = default_setup();
        let mut src = Mem::with(&[b"a", b"b"]);
        let actions = [
            write("a", b"a", meta(0o644, T)),
            Action::MakeDir {
                path: p("d"),
                meta: meta(0o755, T),
            },
            write("b", b"b", meta(0o644, T)),
            write("c", b"missing", meta(0o644, T)),
            write("e", b"a", meta(0o644, T)),
        ];
        let err = ap.apply(&actions, &mut src).expect_err("c fails");
        assert_eq!(err.index, Some(3));
        assert_eq!(err.durable, 3);
        assert!(err.sync_error.is_none());
        assert!(
            err.to_string().starts_with("action 3 of the batch failed"),
            "{err}"
        );
        // The staged writes before the failure were still renamed into
        // place; nothing after it was attempted.
        assert_eq!(names(dir.path()), ["a", "b", "d"]);
    }

    #[test]
    fn a_symlinked_parent_is_refused() {
        let (dir, ap) = default_setup();
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("a")).expect("symlink");
        fs::write(dir.path().join("x"), b"x").expect("write");
        let attempts = [
            write("a/x", b"x", meta(0o644, T)),
            write("a/b/x", b"x", meta(0o644, T)),
            Action::MakeDir {
                path: p("a/d"),
                meta: meta(0o755, T),
            },
            Action::MakeSymlink {
                path: p("a/l"),
                target: b"/etc/passwd".to_vec(),
                meta: meta(0o777, T),
            },
            Action::Rename {
                from: p("x"),
                to: p("a/x"),
                meta: meta(0o644, T),
            },
            Action::Remove {
                path: p("a/y"),
                was: Content::Dir,
            },
            Action::SetMeta {
                path: p("a/y"),
                meta: meta(0o777, T),
            },
            Action::SaveOld { path: p("a/y") },
        ];
        fs::write(elsewhere.path().join("y"), b"outside").expect("write");
        for action in attempts {
            let err = ap
                .apply(std::slice::from_ref(&action), &mut Mem::with(&[b"x"]))
                .expect_err("must be refused");
            match &err.error {
                ApplyError::SymlinkInPath { component, .. } => assert_eq!(*component, p("a")),
                other => panic!("{action:?}: wrong error {other:?}"),
            }
            assert!(err.to_string().contains("is a symbolic link"), "{err}");
        }
        assert_eq!(names(elsewhere.path()), ["y"]);
        assert_eq!(mode_of(&elsewhere.path().join("y")), 0o644);
        assert_eq!(fs::read(dir.path().join("x")).expect("x stays"), b"x");
    }

    #[test]
    fn a_file_as_parent_is_not_a_directory() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("f"), b"x").expect("write");
        let err = ap
            .apply(
                &[write("f/x", b"x", meta(0o644, T))],
                &mut Mem::with(&[b"x"]),
            )
            .expect_err("refused");
        assert!(
            matches!(&err.error, ApplyError::NotADirectory { component, .. } if *component == p("f")),
            "{err:?}"
        );
    }

    #[test]
    fn a_symlink_as_last_component_is_replaced_not_followed() {
        let (dir, ap) = default_setup();
        let outside = tempfile::tempdir().expect("tempdir");
        let victim = outside.path().join("victim");
        fs::write(&victim, b"precious").expect("write");
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink(&victim, dir.path().join("l")).expect("symlink");
        std::os::unix::fs::symlink(&victim, dir.path().join("l2")).expect("symlink");

        ap.apply(
            &[
                write("l", b"mirrored", meta(0o666, T)),
                // SetMeta on a symlink: owner and mtime of the link only.
                Action::SetMeta {
                    path: p("l2"),
                    meta: meta(0o777, T + 5),
                },
            ],
            &mut Mem::with(&[b"mirrored"]),
        )
        .expect("apply");
        let l = dir.path().join("l");
        assert!(fs::symlink_metadata(&l).expect("stat").is_file());
        assert_eq!(fs::read(&l).expect("read"), b"mirrored");
        assert_eq!(fs::read(&victim).expect("read"), b"precious");
        assert_eq!(mode_of(&victim), 0o600);
        let l2 = dir.path().join("l2");
        assert!(fs::symlink_metadata(&l2).expect("stat").is_symlink());
        assert_eq!(mtime_ns(&l2), T + 5);
        assert_ne!(mtime_ns(&victim), T + 5);
    }

    #[test]
    fn wire_paths_are_checked() {
        assert!(matches!(
            wire_path(b"/etc/passwd"),
            Err(PathError::Absolute(_))
        ));
        assert!(matches!(wire_path(b".."), Err(PathError::DotDot(_))));
        assert!(matches!(wire_path(b"a/../../b"), Err(PathError::DotDot(_))));
        assert!(matches!(wire_path(b"a/\0b"), Err(PathError::Nul(_))));
        assert!(matches!(
            wire_path(b"a//b"),
            Err(PathError::EmptyComponent(_))
        ));
        assert_eq!(wire_path(b"a/b").expect("fine"), p("a/b"));
        assert!(wire_path(b"a/\xff\nname").is_ok(), "names are bytes");
    }

    #[test]
    fn root_path_is_refused_where_a_name_is_needed() {
        let (_dir, ap) = default_setup();
        for action in [
            write("", b"x", meta(0o644, T)),
            Action::Remove {
                path: RelPath::root(),
                was: Content::Dir,
            },
            Action::SaveOld {
                path: RelPath::root(),
            },
        ] {
            let err = ap
                .apply(&[action], &mut Mem::with(&[b"x"]))
                .expect_err("refused");
            assert!(matches!(err.error, ApplyError::RootPath { .. }), "{err:?}");
        }
    }

    #[test]
    fn make_dir_creates_fixes_and_replaces() {
        let (dir, ap) = default_setup();
        fs::create_dir(dir.path().join("exists")).expect("mkdir");
        fs::set_permissions(dir.path().join("exists"), fs::Permissions::from_mode(0o700))
            .expect("chmod");
        fs::write(dir.path().join("file"), b"x").expect("write");
        std::os::unix::fs::symlink("/", dir.path().join("link")).expect("symlink");
        let actions: Vec<Action> = ["new", "exists", "file", "link"]
            .iter()
            .map(|n| Action::MakeDir {
                path: p(n),
                meta: meta(0o2750, T),
            })
            .collect();
        ap.apply(&actions, &mut Mem::default()).expect("apply");
        for n in ["new", "exists", "file", "link"] {
            let d = dir.path().join(n);
            assert!(fs::symlink_metadata(&d).expect("stat").is_dir(), "{n}");
            assert_eq!(mode_of(&d), 0o2750, "{n}");
            assert_eq!(mtime_ns(&d), T, "{n}");
        }
    }

    #[test]
    fn directory_mtimes_survive_writes_inside_them() {
        let (dir, ap) = default_setup();
        ap.apply(
            &[
                Action::MakeDir {
                    path: p("d"),
                    meta: meta(0o755, T),
                },
                write("d/f", b"f", meta(0o644, T + 1)),
                Action::MakeSymlink {
                    path: p("d/l"),
                    target: b"f".to_vec(),
                    meta: meta(0o777, T + 2),
                },
            ],
            &mut Mem::with(&[b"f"]),
        )
        .expect("apply");
        assert_eq!(mtime_ns(&dir.path().join("d")), T);
        assert_eq!(mtime_ns(&dir.path().join("d/f")), T + 1);
        assert_eq!(mtime_ns(&dir.path().join("d/l")), T + 2);
    }

    #[test]
    fn remove_takes_files_symlinks_and_empty_directories() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("f"), b"x").expect("write");
        std::os::unix::fs::symlink("f", dir.path().join("l")).expect("symlink");
        fs::create_dir(dir.path().join("d")).expect("mkdir");
        ap.apply(
            &[
                Action::Remove {
                    path: p("f"),
                    was: Content::File {
                        size: 1,
                        hash: h(b"x"),
                    },
                },
                Action::Remove {
                    path: p("l"),
                    was: Content::Symlink {
                        target: b"f".to_vec(),
                    },
                },
                Action::Remove {
                    path: p("d"),
                    was: Content::Dir,
                },
                // Already gone, or its parent is: nothing to do.
                Action::Remove {
                    path: p("gone"),
                    was: Content::Dir,
                },
                Action::Remove {
                    path: p("gone/too"),
                    was: Content::Dir,
                },
            ],
            &mut Mem::default(),
        )
        .expect("apply");
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn remove_of_a_non_empty_directory_is_an_error() {
        let (dir, ap) = default_setup();
        fs::create_dir(dir.path().join("d")).expect("mkdir");
        fs::write(dir.path().join("d/unknown"), b"data").expect("write");
        let err = ap
            .apply(
                &[Action::Remove {
                    path: p("d"),
                    was: Content::Dir,
                }],
                &mut Mem::default(),
            )
            .expect_err("refused");
        assert!(
            matches!(&err.error, ApplyError::DirNotEmpty { path } if *path == p("d")),
            "{err:?}"
        );
        assert_eq!(
            fs::read(dir.path().join("d/unknown")).expect("kept"),
            b"data"
        );
    }

    #[test]
    fn remove_refuses_another_kind_than_expected() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("f"), b"x").expect("write");
        let err = ap
            .apply(
                &[Action::Remove {
                    path: p("f"),
                    was: Content::Symlink {
                        target: b"t".to_vec(),
                    },
                }],
                &mut Mem::default(),
            )
            .expect_err("refused");
        assert!(
            matches!(
                err.error,
                ApplyError::Unexpected {
                    expected: "symlink",
                    found: "file",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(dir.path().join("f").exists());
    }

    #[test]
    fn rename_moves_a_file_making_missing_parents() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("f"), b"content").expect("write");
        let ino = fs::metadata(dir.path().join("f")).expect("stat").ino();
        ap.apply(
            &[Action::Rename {
                from: p("f"),
                to: p("x/y/z"),
                meta: meta(0o604, T),
            }],
            &mut Mem::default(),
        )
        .expect("apply");
        let z = dir.path().join("x/y/z");
        assert_eq!(fs::read(&z).expect("read"), b"content");
        assert_eq!(
            fs::metadata(&z).expect("stat").ino(),
            ino,
            "moved, not copied"
        );
        assert_eq!(mode_of(&z), 0o604);
        assert_eq!(mtime_ns(&z), T);
        assert_eq!(mode_of(&dir.path().join("x")), 0o755);
        assert_eq!(mode_of(&dir.path().join("x/y")), 0o755);
        assert!(!dir.path().join("f").exists());
    }

    #[test]
    fn rename_moves_a_non_empty_directory() {
        let (dir, ap) = default_setup();
        fs::create_dir_all(dir.path().join("d/sub")).expect("mkdir");
        fs::write(dir.path().join("d/f1"), b"1").expect("write");
        fs::write(dir.path().join("d/sub/f2"), b"2").expect("write");
        ap.apply(
            &[Action::Rename {
                from: p("d"),
                to: p("e"),
                meta: meta(0o750, T),
            }],
            &mut Mem::default(),
        )
        .expect("apply");
        assert_eq!(names(dir.path()), ["e"]);
        assert_eq!(fs::read(dir.path().join("e/f1")).expect("read"), b"1");
        assert_eq!(fs::read(dir.path().join("e/sub/f2")).expect("read"), b"2");
        assert_eq!(mode_of(&dir.path().join("e")), 0o750);
        assert_eq!(mtime_ns(&dir.path().join("e")), T);
    }

    #[test]
    fn rename_does_not_overwrite_what_the_index_does_not_know() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("a"), b"a").expect("write");
        fs::write(dir.path().join("b"), b"unknown").expect("write");
        let err = ap
            .apply(
                &[Action::Rename {
                    from: p("a"),
                    to: p("b"),
                    meta: meta(0o644, T),
                }],
                &mut Mem::default(),
            )
            .expect_err("refused");
        assert!(
            matches!(err.error, ApplyError::TargetExists { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(dir.path().join("b")).expect("kept"), b"unknown");
        assert_eq!(fs::read(dir.path().join("a")).expect("kept"), b"a");
    }

    #[test]
    fn make_symlink_creates_and_replaces_atomically() {
        let (dir, ap) = default_setup();
        let l = dir.path().join("l");
        ap.apply(
            &[Action::MakeSymlink {
                path: p("l"),
                target: b"one".to_vec(),
                meta: meta(0o777, T),
            }],
            &mut Mem::default(),
        )
        .expect("create");
        assert_eq!(fs::read_link(&l).expect("readlink"), Path::new("one"));
        assert_eq!(mtime_ns(&l), T);
        fs::write(dir.path().join("f"), b"file").expect("write");
        fs::create_dir(dir.path().join("emptydir")).expect("mkdir");
        ap.apply(
            &[
                Action::MakeSymlink {
                    path: p("l"),
                    target: b"/elsewhere/two".to_vec(),
                    meta: meta(0o777, T + 1),
                },
                Action::MakeSymlink {
                    path: p("f"),
                    target: b"l".to_vec(),
                    meta: meta(0o777, T + 2),
                },
                Action::MakeSymlink {
                    path: p("emptydir"),
                    target: b"f".to_vec(),
                    meta: meta(0o777, T + 3),
                },
            ],
            &mut Mem::default(),
        )
        .expect("replace");
        assert_eq!(
            fs::read_link(&l).expect("readlink"),
            Path::new("/elsewhere/two")
        );
        assert_eq!(mtime_ns(&l), T + 1);
        assert_eq!(
            fs::read_link(dir.path().join("f")).expect("readlink"),
            Path::new("l")
        );
        assert_eq!(
            fs::read_link(dir.path().join("emptydir")).expect("readlink"),
            Path::new("f")
        );
        assert!(temps(dir.path()).is_empty());

        let err = ap
            .apply(
                &[Action::MakeSymlink {
                    path: p("bad"),
                    target: b"a\0b".to_vec(),
                    meta: meta(0o777, T),
                }],
                &mut Mem::default(),
            )
            .expect_err("NUL");
        assert!(
            matches!(err.error, ApplyError::BadSymlinkTarget { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn set_meta_changes_mode_owner_and_mtime_but_not_content() {
        let (dir, ap) = default_setup();
        let f = dir.path().join("f");
        fs::write(&f, b"content").expect("write");
        let ino = fs::metadata(&f).expect("stat").ino();
        let mut m = meta(0o4710, T);
        if is_root() {
            m.uid = 12345;
            m.gid = 23456;
        }
        ap.apply(
            &[Action::SetMeta {
                path: p("f"),
                meta: m,
            }],
            &mut Mem::default(),
        )
        .expect("apply");
        let st = fs::metadata(&f).expect("stat");
        assert_eq!(st.ino(), ino);
        assert_eq!(fs::read(&f).expect("read"), b"content");
        // Set-id bits survive because the owner is set before the mode.
        assert_eq!(mode_of(&f), 0o4710);
        assert_eq!(mtime_ns(&f), T);
        if is_root() {
            assert_eq!((st.uid(), st.gid()), (12345, 23456));
        } else {
            eprintln!("not root: owner not checked");
        }
    }

    #[test]
    fn owners_are_set_on_files_directories_and_symlinks_when_root() {
        if !is_root() {
            eprintln!("not root: skipped");
            return;
        }
        let (dir, ap) = default_setup();
        let m = Meta {
            mode: 0o2755,
            uid: 12345,
            gid: 23456,
            mtime_ns: T,
            ..Default::default()
        };
        ap.apply(
            &[
                Action::MakeDir {
                    path: p("d"),
                    meta: m.clone(),
                },
                write("d/f", b"f", m.clone()),
                Action::MakeSymlink {
                    path: p("d/l"),
                    target: b"f".to_vec(),
                    meta: m.clone(),
                },
            ],
            &mut Mem::with(&[b"f"]),
        )
        .expect("apply");
        for n in ["d", "d/f", "d/l"] {
            let st = fs::symlink_metadata(dir.path().join(n)).expect("stat");
            assert_eq!((st.uid(), st.gid()), (12345, 23456), "{n}");
        }
        assert_eq!(mode_of(&dir.path().join("d/f")), 0o2755);

        // Without set_owner the owner is left as made.
        let (dir, ap) = setup(ApplyOptions {
            set_owner: false,
            ..ApplyOptions::default()
        });
        ap.apply(&[write("f", b"f", m.clone())], &mut Mem::with(&[b"f"]))
            .expect("apply");
        assert_eq!(fs::metadata(dir.path().join("f")).expect("stat").uid(), 0);
    }

    #[test]
    fn invalid_owner_is_refused() {
        let (dir, ap) = setup(ApplyOptions {
            set_owner: true,
            ..ApplyOptions::default()
        });
        let mut m = meta(0o644, T);
        m.uid = u32::MAX;
        let err = ap
            .apply(&[write("f", b"f", m)], &mut Mem::with(&[b"f"]))
            .expect_err("refused");
        assert!(
            matches!(err.error, ApplyError::InvalidOwner { .. }),
            "{err:?}"
        );
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn save_old_keeps_the_replaced_and_the_removed_file() {
        let (dir, ap) = default_setup();
        let mut src = Mem::with(&[b"v1", b"v2"]);
        ap.apply(&[write("f", b"v1", meta(0o644, T))], &mut src)
            .expect("v1");
        ap.apply(
            &[
                Action::SaveOld { path: p("f") },
                write("f", b"v2", meta(0o644, T)),
            ],
            &mut src,
        )
        .expect("v2");
        assert_eq!(fs::read(dir.path().join("f")).expect("f"), b"v2");
        assert_eq!(fs::read(dir.path().join("f.OLD")).expect("old"), b"v1");
        ap.apply(
            &[
                Action::SaveOld { path: p("f") },
                Action::Remove {
                    path: p("f"),
                    was: Content::File {
                        size: 2,
                        hash: h(b"v2"),
                    },
                },
            ],
            &mut src,
        )
        .expect("remove");
        assert_eq!(names(dir.path()), ["f.OLD"]);
        assert_eq!(fs::read(dir.path().join("f.OLD")).expect("old"), b"v2");
        // Nothing there: nothing to keep.
        ap.apply(&[Action::SaveOld { path: p("f") }], &mut src)
            .expect("nothing");
        assert_eq!(names(dir.path()), ["f.OLD"]);
    }

    /// A guard that knows one file's stat, taken before the batch.
    struct KnownStat(RelPath, omirr_index::StatKey);

    impl LocalGuard for KnownStat {
        fn unchanged(&self, path: &RelPath, now: &omirr_index::StatKey) -> bool {
            *path != self.0 || self.1.unchanged(now)
        }
    }

    fn key(path: &Path) -> omirr_index::StatKey {
        crate::local::stat_key_of(&fs::symlink_metadata(path).expect("lstat"))
    }

    #[test]
    fn the_guard_refuses_to_replace_or_remove_a_file_changed_since_it_was_recorded() {
        let (dir, ap) = default_setup();
        let mut src = Mem::with(&[b"v1", b"v2"]);
        ap.apply(&[write("f", b"v1", meta(0o644, T))], &mut src)
            .expect("v1");
        let recorded = KnownStat(p("f"), key(&dir.path().join("f")));
        // Keeping the old version links it (a new ctime, by our doing):
        // not a local change.
        ap.apply_guarded(
            &[
                Action::SaveOld { path: p("f") },
                write("f", b"v2", meta(0o644, T)),
            ],
            &mut src,
            &recorded,
        )
        .expect("unchanged since recorded");
        assert_eq!(fs::read(dir.path().join("f")).expect("f"), b"v2");
        // Written locally since: neither replaced nor removed.
        let recorded = KnownStat(p("f"), key(&dir.path().join("f")));
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(dir.path().join("f"), b"local").expect("write");
        let mut src = Mem::with(&[b"v3"]);
        let err = ap
            .apply_guarded(&[write("f", b"v3", meta(0o644, T))], &mut src, &recorded)
            .expect_err("changed locally");
        assert!(
            matches!(err.error, ApplyError::ChangedLocally { .. }),
            "{err:?}"
        );
        let remove = Action::Remove {
            path: p("f"),
            was: Content::File {
                size: 2,
                hash: h(b"v2"),
            },
        };
        let err = ap
            .apply_guarded(std::slice::from_ref(&remove), &mut src, &recorded)
            .expect_err("changed locally");
        assert!(
            matches!(err.error, ApplyError::ChangedLocally { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(dir.path().join("f")).expect("f"), b"local");
        assert!(temps(dir.path()).is_empty(), "no temporary file left");
    }

    #[test]
    fn save_old_history_keeps_n_generations() {
        let (dir, ap) = setup(ApplyOptions {
            history: 3,
            ..ApplyOptions::default()
        });
        let versions: [&[u8]; 5] = [b"v0", b"v1", b"v2", b"v3", b"v4"];
        let mut src = Mem::with(&versions);
        ap.apply(&[write("f", b"v0", meta(0o644, T))], &mut src)
            .expect("v0");
        for v in &versions[1..] {
            ap.apply(
                &[
                    Action::SaveOld { path: p("f") },
                    write("f", v, meta(0o644, T)),
                ],
                &mut src,
            )
            .expect("overwrite");
        }
        assert_eq!(names(dir.path()), ["f", "f.OLD.1", "f.OLD.2", "f.OLD.3"]);
        let read = |n: &str| fs::read(dir.path().join(n)).expect(n);
        assert_eq!(read("f"), b"v4");
        assert_eq!(read("f.OLD.1"), b"v3");
        assert_eq!(read("f.OLD.2"), b"v2");
        assert_eq!(read("f.OLD.3"), b"v1");
    }

    #[test]
    fn staged_writes_keep_the_batch_order() {
        // The rename of a staged file is deferred; an action on the same
        // path must still see it in place.
        let (dir, ap) = default_setup();
        ap.apply(
            &[
                write("f", b"v1", meta(0o644, T)),
                Action::SaveOld { path: p("f") },
                write("f", b"v2", meta(0o644, T)),
                write("g", b"v1", meta(0o644, T)),
                Action::Rename {
                    from: p("g"),
                    to: p("h"),
                    meta: meta(0o600, T),
                },
            ],
            &mut Mem::with(&[b"v1", b"v2"]),
        )
        .expect("apply");
        assert_eq!(names(dir.path()), ["f", "f.OLD", "h"]);
        assert_eq!(fs::read(dir.path().join("f.OLD")).expect("old"), b"v1");
        assert_eq!(fs::read(dir.path().join("f")).expect("f"), b"v2");
        assert_eq!(fs::read(dir.path().join("h")).expect("h"), b"v1");
    }

    #[test]
    fn write_over_a_directory_only_if_it_is_empty() {
        let (dir, ap) = default_setup();
        fs::create_dir(dir.path().join("empty")).expect("mkdir");
        fs::create_dir(dir.path().join("full")).expect("mkdir");
        fs::write(dir.path().join("full/x"), b"x").expect("write");
        let mut src = Mem::with(&[b"f"]);
        ap.apply(&[write("empty", b"f", meta(0o644, T))], &mut src)
            .expect("empty dir replaced");
        assert_eq!(fs::read(dir.path().join("empty")).expect("read"), b"f");
        let err = ap
            .apply(&[write("full", b"f", meta(0o644, T))], &mut src)
            .expect_err("refused");
        assert!(
            matches!(err.error, ApplyError::DirNotEmpty { .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(dir.path().join("full/x")).expect("kept"), b"x");
        assert!(temps(dir.path()).is_empty());
    }

    #[test]
    fn copy_from_reads_a_local_file_but_never_a_symlink() {
        let (dir, ap) = default_setup();
        fs::write(dir.path().join("src"), b"local").expect("write");
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("secret"), b"local").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link"))
            .expect("symlink");
        let copy = |from: &str, to: &str| Action::WriteFile {
            path: p(to),
            size: 5,
            hash: h(b"local"),
            meta: meta(0o644, T),
            source: Source::CopyFrom(p(from)),
        };
        // No content source is consulted.
        ap.apply(&[copy("src", "dst")], &mut Mem::default())
            .expect("copy");
        assert_eq!(fs::read(dir.path().join("dst")).expect("read"), b"local");
        let err = ap
            .apply(&[copy("link", "dst2")], &mut Mem::default())
            .expect_err("refused");
        assert!(
            matches!(
                err.error,
                ApplyError::Unexpected {
                    found: "symlink",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!dir.path().join("dst2").exists());
    }

    #[test]
    fn fsync_barrier_applies_a_batch_of_many_files() {
        let (dir, ap) = setup(ApplyOptions {
            barrier: Barrier::Fsync,
            ..ApplyOptions::default()
        });
        let contents: Vec<Vec<u8>> = (0..300).map(|i| format!("file {i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
        let mut actions = vec![Action::MakeDir {
            path: p("d"),
            meta: meta(0o755, T),
        }];
        actions.extend(
            contents
                .iter()
                .enumerate()
                .map(|(i, c)| write(&format!("d/f{i}"), c, meta(0o644, T))),
        );
        ap.apply(&actions, &mut Mem::with(&refs)).expect("apply");
        for (i, c) in contents.iter().enumerate() {
            assert_eq!(
                &fs::read(dir.path().join(format!("d/f{i}"))).expect("read"),
                c
            );
        }
        assert_eq!(mtime_ns(&dir.path().join("d")), T);
        assert!(temps(dir.path()).is_empty());
    }

    #[test]
    fn temp_names_are_recognised() {
        let t = temp_name(b"index.html");
        assert!(t.starts_with(b".omirr.index.html."), "{t:?}");
        assert!(is_temp_name(&t));
        let long = temp_name(&[b'n'; 255]);
        assert!(long.len() <= 255, "{}", long.len());
        assert!(is_temp_name(&long));
        assert!(!is_temp_name(b".omirr.notes.tmp"));
        assert!(!is_temp_name(b".omirr.x.0123456789ABCDEF.tmp"));
        assert!(!is_temp_name(b"omirr.x.0123456789abcdef.tmp"));
        assert!(is_temp_name(b".omirr.x.0123456789abcdef.tmp"));
    }

    #[test]
    fn cleanup_removes_stale_temps_only() {
        let (dir, ap) = default_setup();
        let stale = ".omirr.f.0123456789abcdef.tmp";
        fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        fs::write(dir.path().join(stale), b"half").expect("write");
        fs::write(dir.path().join("a/b").join(stale), b"half").expect("write");
        std::os::unix::fs::symlink("t", dir.path().join("a/.omirr.l.fedcba9876543210.tmp"))
            .expect("symlink");
        // Not ours: a user's file, and a directory with our pattern.
        fs::write(dir.path().join(".omirr.notes.tmp"), b"mine").expect("write");
        fs::create_dir(dir.path().join(".omirr.d.0000000000000000.tmp")).expect("mkdir");
        // Never descended through a symlink.
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join(stale), b"not ours").expect("write");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).expect("symlink");

        assert_eq!(ap.cleanup_stale_temps(&p("a/b")).expect("one dir"), 1);
        let done = ap.cleanup_stale_temps_tree(&[RelPath::root()]);
        assert_eq!(done.removed, 2);
        assert!(done.skipped.is_empty(), "{:?}", done.skipped);
        assert_eq!(
            names(dir.path()),
            [
                ".omirr.d.0000000000000000.tmp",
                ".omirr.notes.tmp",
                "a",
                "out"
            ]
        );
        assert_eq!(names(&dir.path().join("a")), ["b"]);
        assert!(outside.path().join(stale).exists());
    }

    #[test]
    fn cleanup_looks_only_inside_the_tops_and_skips_what_it_cannot_read() {
        let (dir, ap) = default_setup();
        let tag = "0123456789abcdef";
        let at = |rel: &str| dir.path().join(rel);
        for d in ["srv/www/a", "srv/www/locked", "etc", "proc"] {
            fs::create_dir_all(at(d)).expect("mkdir");
        }
        let inside = [
            format!("srv/www/.omirr.x.{tag}.tmp"),
            format!("srv/www/a/.omirr.y.{tag}.tmp"),
            // Made for the top itself, in the directory above it.
            format!("srv/.omirr.www.{tag}.tmp"),
            // A top that is a file.
            format!("etc/.omirr.hosts.{tag}.tmp"),
        ];
        let outside = [
            format!("proc/.omirr.z.{tag}.tmp"),
            format!(".omirr.srv.{tag}.tmp"),
            format!("srv/.omirr.other.{tag}.tmp"),
            format!("srv/.omirr.wwwx.{tag}.tmp"),
            format!("etc/.omirr.passwd.{tag}.tmp"),
        ];
        let locked_temp = format!("srv/www/locked/.omirr.l.{tag}.tmp");
        for f in inside.iter().chain(&outside).chain([&locked_temp]) {
            fs::write(at(f), b"half").expect("write");
        }
        fs::write(at("etc/hosts"), b"127.0.0.1 localhost").expect("write");

        // An unreadable directory: a mode that bars us, and for root
        // (whom modes do not bar) a file-system identity that is not root,
        // on the thread that cleans.
        let root = nix::unistd::geteuid().is_root();
        let nobody = nix::unistd::Uid::from_raw(65534);
        if root {
            for d in ["", "srv", "srv/www", "srv/www/a", "etc", "proc"] {
                nix::unistd::chown(&at(d), Some(nobody), None).expect("chown");
            }
        }
        fs::set_permissions(at("srv/www/locked"), fs::Permissions::from_mode(0o000))
            .expect("chmod");
        let tops = [
            p("srv/www"),
            p("etc/hosts"),
            p("srv/www/a"),
            p("absent/top"),
        ];
        let done = std::thread::scope(|s| {
            s.spawn(|| {
                if root {
                    nix::unistd::setfsuid(nobody);
                }
                ap.cleanup_stale_temps_tree(&tops)
            })
            .join()
            .expect("cleanup thread")
        });
        fs::set_permissions(at("srv/www/locked"), fs::Permissions::from_mode(0o755))
            .expect("chmod");

        for f in &inside {
            assert!(!at(f).exists(), "{f} was not removed");
        }
        for f in &outside {
            assert!(at(f).exists(), "{f}, outside the tops, was removed");
        }
        assert!(at(&locked_temp).exists());
        assert!(at("etc/hosts").exists());
        assert_eq!(done.removed, inside.len());
        assert_eq!(done.skipped.len(), 1, "{:?}", done.skipped);
        assert_eq!(
            done.skipped[0].to_string(),
            "cannot open directory srv/www/locked: Permission denied"
        );
    }

    #[test]
    fn directories_above_the_tops_are_never_changed_and_made_like_their_parent() {
        let (dir, ap) = default_setup();
        let ap = ap.with_tops(vec![p("home/alice/www"), p("opt/x")]);
        let at = |rel: &str| dir.path().join(rel);
        // The host's own /home: private, someone else's, old.
        let old = 1_500_000_000_000_000_000;
        let owner = if is_root() {
            1234
        } else {
            nix::unistd::geteuid().as_raw()
        };
        fs::create_dir(at("home")).expect("mkdir");
        if is_root() {
            nix::unistd::chown(&at("home"), Some(owner.into()), Some(4321.into())).expect("chown");
        }
        fs::set_permissions(at("home"), fs::Permissions::from_mode(0o711)).expect("chmod");
        fs::write(at("opt"), b"a file where a directory is implied").expect("write");
        let set_old = || {
            filetime::set_file_mtime(
                at("home"),
                filetime::FileTime::from_unix_time(1_500_000_000, 0),
            )
            .expect("mtime")
        };
        set_old();

        // What the resolver asks of a new host: the directories above the
        // top exist only because the top does (Meta::IMPLIED_DIR).
        let www = meta(0o750, T);
        let actions = vec![
            Action::MakeDir {
                path: p("home"),
                meta: Meta::IMPLIED_DIR,
            },
            Action::MakeDir {
                path: p("home/alice"),
                meta: Meta::IMPLIED_DIR,
            },
            Action::MakeDir {
                path: p("home/alice/www"),
                meta: www,
            },
            write("home/alice/www/index.html", b"hi", meta(0o644, T)),
        ];
        ap.apply(&actions, &mut Mem::with(&[b"hi"])).expect("apply");
        let mode = |rel: &str| fs::symlink_metadata(at(rel)).expect("stat").mode() & 0o7777;
        let ids = |rel: &str| {
            let m = fs::symlink_metadata(at(rel)).expect("stat");
            (m.uid(), m.gid())
        };
        assert_eq!(
            mode("home"),
            0o711,
            "an existing directory above a top was changed"
        );
        assert_eq!(mtime_ns(&at("home")), old);
        let gid = if is_root() { 4321 } else { ids("home").1 };
        assert_eq!(ids("home"), (owner, gid));
        // Made like its nearest existing ancestor.
        assert_eq!(mode("home/alice"), 0o711);
        assert_eq!(ids("home/alice"), (owner, gid));
        // The top itself is mirrored.
        assert_eq!(mode("home/alice/www"), 0o750);
        assert_eq!(mtime_ns(&at("home/alice/www")), T);
        assert_eq!(
            fs::read(at("home/alice/www/index.html")).expect("read"),
            b"hi"
        );

        // Nor are they removed when the top goes, nor fixed again.
        set_old();
        let actions = vec![
            Action::Remove {
                path: p("home/alice/www/index.html"),
                was: Content::File {
                    size: 2,
                    hash: h(b"hi"),
                },
            },
            Action::Remove {
                path: p("home/alice/www"),
                was: Content::Dir,
            },
            Action::Remove {
                path: p("home/alice"),
                was: Content::Dir,
            },
            Action::Remove {
                path: p("home"),
                was: Content::Dir,
            },
        ];
        ap.apply(&actions, &mut Mem::default()).expect("apply");
        assert!(!at("home/alice/www").exists());
        assert_eq!(mode("home/alice"), 0o711);
        assert_eq!(mode("home"), 0o711);
        assert_eq!(mtime_ns(&at("home")), old);

        // What is there instead of an implied directory is not replaced.
        let err = ap
            .apply(
                &[Action::MakeDir {
                    path: p("opt"),
                    meta: Meta::IMPLIED_DIR,
                }],
                &mut Mem::default(),
            )
            .expect_err("a file above a top");
        assert!(
            matches!(err.error, ApplyError::NotADirectory { .. }),
            "{err}"
        );
        assert!(at("opt").is_file());
        // Nor is a symbolic link (/home -> /data/home): it is refused,
        // never followed, never removed.
        fs::create_dir(at("data")).expect("mkdir");
        std::os::unix::fs::symlink("data", at("srv")).expect("symlink");
        let ap = ap.with_tops(vec![p("srv/www")]);
        let err = ap
            .apply(
                &[Action::MakeDir {
                    path: p("srv"),
                    meta: Meta::IMPLIED_DIR,
                }],
                &mut Mem::default(),
            )
            .expect_err("a symlink above a top");
        assert!(
            matches!(err.error, ApplyError::SymlinkInPath { .. }),
            "{err}"
        );
        assert!(fs::symlink_metadata(at("srv")).expect("kept").is_symlink());
    }
}
