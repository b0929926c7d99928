//! A group applied under the daemon's write lock: resolved (again, if the
//! index moved since it was resolved before staging), applied, recorded,
//! and, for a batch's last group, committed with the peer's cursor and the
//! changes set aside ([`Tail`]) in one transaction. A change whose own
//! action fails is set aside and the rest applied without it
//! ([`apply_isolated`]); a failure of the host as a whole goes back to the
//! caller, which retries the batch.

use super::super::fetch::{NotStaged, Staged};
use crate::engine::Engine;
use crate::record::ApplyRemoteError;
use omirr_core::resolve::Action;
use omirr_core::{Change, HostId, IndexView, Seq};
use omirr_fs::apply::ApplyError;
use omirr_index::{Aside, Batch};

/// A group's resolution, made before staging.
pub(super) struct Resolved {
    pub(super) res: omirr_core::resolve::Resolution,
    pub(super) at: Seq,
}

/// What a group's apply came to.
#[derive(Default)]
pub(super) struct Outcome {
    pub(super) recorded: usize,
    pub(super) actions: Vec<Action>,
    /// Changes set aside, with their reasons.
    pub(super) aside: Vec<(Change, String)>,
    /// Changes whose content must be staged for another round.
    pub(super) unstaged: Vec<Change>,
    /// The conflicts met (see [`omirr_core::conflict`]).
    pub(super) conflicts: Vec<omirr_core::resolve::Conflict>,
    /// The group's [`Tail`] committed with its last changes.
    pub(super) tail_committed: bool,
}

/// What commits with a batch's last group if all of it is applied: the
/// changes set aside (with those of the group that failed on their own)
/// and the peer's cursor. In the group's transaction, a crash leaves
/// either the group recorded and the cursor past it, or neither: the
/// batch is neither applied twice nor skipped.
#[derive(Clone)]
pub(super) struct Tail {
    pub(super) peer: HostId,
    /// The batch's changes set aside before this group, with reasons.
    pub(super) before: Vec<(Change, String)>,
    /// The records of the set-aside changes being retried.
    pub(super) retried: Vec<Aside>,
    pub(super) cursor: Option<Seq>,
    /// Unix seconds: when a change first set aside now was set aside.
    pub(super) now: u64,
}

impl Tail {
    /// The tail as a batch, with `more` changes of the group set aside.
    pub(super) fn batch(&self, more: &[(Change, String)]) -> Batch {
        tail_batch(
            &self.peer,
            &self.before,
            more,
            &self.retried,
            self.cursor,
            self.now,
        )
    }
}

/// The changes set aside (`before`, then `more`; of those being retried,
/// `retried` are the records, and those no longer set aside are
/// dropped), and the peer's cursor, as one batch.
pub(super) fn tail_batch(
    peer: &HostId,
    before: &[(Change, String)],
    more: &[(Change, String)],
    retried: &[Aside],
    cursor: Option<Seq>,
    now: u64,
) -> Batch {
    let mut batch = Batch::new();
    for (c, reason) in before.iter().chain(more) {
        let was = retried.iter().find(|a| a.change == *c);
        batch.set_aside(
            peer.clone(),
            Aside {
                change: c.clone(),
                reason: reason.clone(),
                attempts: was.map_or(1, |a| a.attempts.saturating_add(1)),
                since: was.map_or(now, |a| a.since),
            },
        );
    }
    for a in retried {
        if !before.iter().chain(more).any(|(c, _)| *c == a.change) {
            batch.clear_aside(peer.clone(), a.change.path.clone());
        }
    }
    if let Some(seq) = cursor {
        batch.set_cursor(peer.clone(), seq);
    }
    batch
}

/// Resolves `changes` from a peer against the index under the engine's
/// policy: `savetargets`, and conflicts told by this host's name with
/// each set's bound on conflict copies.
pub(super) fn resolve(
    engine: &Engine,
    changes: &[Change],
) -> Result<omirr_core::resolve::Resolution, omirr_index::IndexError> {
    let plan = engine.policy();
    let host = HostId::new(plan.host());
    let rules = omirr_core::resolve::Rules {
        savetargets: &|p| plan.savetargets(p),
        conflicts: Some(omirr_core::resolve::ConflictRules {
            host: &host,
            keep: &|p| plan.conflict_copies(p),
        }),
    };
    omirr_core::resolve::resolve_with(&engine.store.index, changes, &rules, &mut |d| {
        tracing::trace!("decided {d}")
    })
}

/// Applies `group` with the write lock held, setting aside the changes
/// whose own action fails and applying the rest; `tail` commits with the
/// group's last changes if nothing is left for a second round. `Err` for
/// a failure of the host as a whole.
pub(super) fn apply_isolated(
    engine: &Engine,
    group: Vec<Change>,
    staged: &Staged,
    resolved: Option<Resolved>,
    tail: Option<&Tail>,
) -> Result<Outcome, ApplyRemoteError> {
    let mut out = Outcome::default();
    let mut rest = group;
    let mut w = engine.disk.lock();
    let w = &mut *w;
    // The resolution made before staging still holds if nothing was
    // recorded since.
    let mut resolved = match (resolved, engine.store.index.last_seq()) {
        (Some(r), Ok(now)) if r.at == now => Some(r.res),
        _ => None,
    };
    loop {
        let mut source = staged;
        let index = &engine.store.index;
        // Committed with this try if it applies everything; content left
        // for a second round keeps the cursor back.
        let tail = tail.filter(|_| out.unstaged.is_empty());
        let mut with = tail.map_or_else(Batch::new, |t| t.batch(&out.aside));
        let result = match resolved.take().map_or_else(|| resolve(engine, &rest), Ok) {
            Ok(res) => crate::record::apply_resolved(
                index,
                &w.applier,
                &mut w.hlc,
                &rest,
                res,
                &mut source,
                &mut with,
            ),
            Err(e) => Err(e.into()),
        };
        let (error, recorded, action) = match result {
            Ok(applied) => {
                out.recorded += applied.recorded;
                out.actions.extend(applied.actions);
                out.conflicts.extend(applied.conflicts);
                out.tail_committed = tail.is_some();
                return Ok(out);
            }
            Err(e) if e.is_host_fault() => return Err(e),
            Err(ApplyRemoteError::Apply {
                error,
                recorded,
                action: Some(action),
                conflicts,
            }) => {
                out.conflicts.extend(conflicts);
                (error, recorded, action)
            }
            Err(e) => return Err(e),
        };
        out.recorded += recorded;
        let paths = action.paths();
        // Changes the actions before the failure recorded are done.
        let recorded = |c: &Change| {
            engine
                .store
                .index
                .entry(&c.path)
                .ok()
                .flatten()
                .is_some_and(|e| e.version >= c.entry.version)
        };
        let Some((failed, kept)) = crate::isolate(rest, &paths, recorded) else {
            // Nothing to blame: no change is to be set aside, so the same
            // batch would fail again.
            return Err(ApplyRemoteError::Apply {
                error,
                recorded: 0,
                action: Some(action),
                conflicts: Vec::new(),
            });
        };
        let not_staged =
            matches!(&error.error, ApplyError::Source { error, .. } if error.is::<NotStaged>());
        if not_staged {
            out.unstaged.extend(failed);
        } else {
            let reason = error.error.to_string();
            out.aside
                .extend(failed.into_iter().map(|c| (c, reason.clone())));
        }
        rest = kept;
        if rest.is_empty() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Disk, Policy, Store, WriteSide};
    use omirr_core::RelPath;
    use omirr_core::{Content, Entry, Hlc, Meta, Timestamp, Version};
    use omirr_fs::apply::{Applier, ApplyOptions};
    use omirr_index::Index;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::Mutex;

    /// Every path mirrored both ways with one peer, `there`.
    struct Everything;

    impl crate::engine::Policy for Everything {
        fn host(&self) -> &str {
            "here"
        }
        fn authorised(&self, _: &str, _: &RelPath) -> bool {
            true
        }
        fn unshared_below(&self, _: &str, _: &RelPath) -> Option<RelPath> {
            None
        }
        fn excluded(&self, _: &RelPath) -> bool {
            false
        }
        fn savetargets(&self, _: &RelPath) -> bool {
            false
        }
        fn conflict_copies(&self, _: &RelPath) -> u32 {
            0
        }
        fn after_batch(&self, _: &str, _: &[Action]) {}
    }

    fn engine(dir: &Path) -> Engine {
        let (root, state) = (dir.join("root"), dir.join("state"));
        std::fs::create_dir(&root).expect("root");
        std::fs::create_dir(&state).expect("state");
        let options = ApplyOptions {
            set_owner: false,
            ..ApplyOptions::default()
        };
        let policy: Arc<dyn Policy> = Arc::new(Everything);
        Engine::new(
            Store::new(Index::open(&state).expect("index")).expect("store"),
            Disk {
                write: Mutex::new(WriteSide {
                    hlc: Hlc::starting_at(Timestamp(0)),
                    applier: Applier::open(&root, options).expect("applier"),
                }),
                root,
                tops: vec![RelPath::root()],
                stage_dir: state.join("stage"),
            },
            policy,
            &["there".to_string()],
            1 << 20,
        )
    }

    fn change(path: &str, content: Content) -> Change {
        Change {
            path: RelPath::new(path.as_bytes().to_vec()).expect("path"),
            entry: Entry {
                content,
                meta: Meta {
                    mode: 0o755,
                    mtime_ns: 1_000_000_000,
                    ..Meta::default()
                },
                version: Version {
                    ts: Timestamp(1_000),
                    host: HostId::new("there"),
                },
                base: None,
            },
        }
    }

    fn tail(cursor: Seq) -> Tail {
        Tail {
            peer: HostId::new("there"),
            before: vec![(change("x", Content::Dir), "in the way".to_string())],
            retried: Vec::new(),
            cursor: Some(cursor),
            now: 7,
        }
    }

    /// A batch's last group that applies whole commits the cursor and the
    /// changes set aside in its own transaction: no second commit after
    /// it, which a crash could separate from the group's.
    #[test]
    fn the_cursor_commits_with_the_group_that_applies_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let group = vec![change("a", Content::Dir), change("b", Content::Dir)];
        let tail = tail(42);
        let out =
            apply_isolated(&engine, group, &Staged::default(), None, Some(&tail)).expect("applied");
        assert!(out.tail_committed);
        let index = &engine.store.index;
        let peer = HostId::new("there");
        assert_eq!(index.cursor(&peer).expect("cursor"), 42);
        let kept = index.aside(Some(&peer)).expect("aside");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].1.change.path.to_string(), "x");
        assert_eq!((kept[0].1.attempts, kept[0].1.since), (1, 7));
        assert_eq!(index.last_seq().expect("last_seq"), 2, "a and b recorded");
    }

    /// A group that leaves content for a second round records what it
    /// applied but not the cursor: the batch is not done.
    #[test]
    fn content_left_for_another_round_keeps_the_cursor_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine(dir.path());
        let file = Content::File {
            size: 5,
            hash: [1; 32],
        };
        let group = vec![change("a", Content::Dir), change("f", file)];
        let tail = tail(42);
        let out =
            apply_isolated(&engine, group, &Staged::default(), None, Some(&tail)).expect("applied");
        assert!(!out.tail_committed);
        assert_eq!(out.unstaged.len(), 1, "f waits for its content");
        let index = &engine.store.index;
        let peer = HostId::new("there");
        assert_eq!(index.cursor(&peer).expect("cursor"), 0);
        assert!(index.aside(Some(&peer)).expect("aside").is_empty());
        let a = RelPath::new(b"a".to_vec()).expect("path");
        assert!(index.entry(&a).expect("entry").is_some(), "a recorded");
    }
}
