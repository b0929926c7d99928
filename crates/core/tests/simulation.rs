//! Convergence, proven on simulated peers.
//!
//! Each schedule runs 3 to 5 peers, each with an in-memory index, a
//! simulated disk and a clock skewed by up to an hour, over the sans-IO
//! core. Peers make random local changes (create, modify, delete, rename
//! files and non-empty directories, mkdir, rmdir, symlink, chmod), push
//! them to the peers they can reach, and pull "everything after my cursor"
//! from time to time. The network drops, duplicates and reorders messages
//! and is partitioned at random. At the end the network heals and peers
//! pull until nothing moves; then every peer must hold the same tree, that
//! tree must be what its index says (`tree::present`), and every path's
//! entry must be the highest version written for it anywhere.
//!
//! `cargo test` runs 2,000 schedules. `OMIRR_SIM_SCHEDULES=N` runs more;
//! `OMIRR_SIM_SEED=S` replays one schedule (the seed is printed on
//! failure).

use omirr_core::mem::MemIndex;
use omirr_core::observe::{self, observe, When};
use omirr_core::resolve::{resolve, Action, Source};
use omirr_core::tree::{present, Node};
use omirr_core::{Change, Content, Hlc, HostId, IndexView, Meta, RelPath, Seq, Timestamp, Version};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};

const HOUR: i64 = 3_600_000_000_000;

/// A simulated disk: every present path and what it holds. A path's
/// parent is always a directory here (or the root).
type Disk = BTreeMap<RelPath, Node>;

struct Peer {
    host: HostId,
    index: MemIndex,
    hlc: Hlc,
    disk: Disk,
    /// Paths the simulated watcher has reported and that are not yet
    /// observed.
    dirty: BTreeSet<RelPath>,
    skew_ns: i64,
    /// The last sequence pushed live to the others.
    pushed: Seq,
    /// The daemon is stopped: local edits go unobserved, nothing is sent
    /// or received; at restart a scan finds the edits.
    down: bool,
    /// When each path last changed (on this host's skewed clock), for the
    /// scan's timestamps.
    ctimes: HashMap<RelPath, Timestamp>,
}

struct Msg {
    from: usize,
    to: usize,
    /// Sequences in `(after, upto]` of the sender.
    after: Seq,
    upto: Seq,
    changes: Vec<Change>,
}

struct World {
    rng: StdRng,
    peers: Vec<Peer>,
    net: Vec<Msg>,
    /// `connected[a][b]`: messages from a to b get through.
    connected: Vec<Vec<bool>>,
    now_ns: i64,
    /// The highest version written for each path, anywhere.
    written: HashMap<RelPath, Version>,
    trace: Vec<String>,
}

fn children(disk: &Disk, dir: &RelPath) -> Vec<RelPath> {
    disk.range(dir.below_path_range())
        .map(|(p, _)| p.clone())
        .filter(|c| c.parent().as_ref() == Some(dir))
        .collect()
}

fn subtree(disk: &Disk, dir: &RelPath) -> Vec<RelPath> {
    disk.range(dir.below_path_range())
        .map(|(p, _)| p.clone())
        .collect()
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.random_range(3..=5);
        let peers = (0..n)
            .map(|i| Peer {
                host: HostId::new(&format!("h{i}")),
                index: MemIndex::default(),
                hlc: Hlc::default(),
                disk: Disk::new(),
                dirty: BTreeSet::new(),
                skew_ns: rng.random_range(-HOUR..=HOUR),
                pushed: 0,
                down: false,
                ctimes: HashMap::new(),
            })
            .collect();
        World {
            rng,
            peers,
            net: Vec::new(),
            connected: vec![vec![true; n]; n],
            now_ns: 10 * 24 * HOUR,
            written: HashMap::new(),
            trace: Vec::new(),
        }
    }

    /// Keeps a trace line; printed as it happens when replaying a seed.
    fn log(&mut self, line: String) {
        if std::env::var_os("OMIRR_SIM_SEED").is_some() {
            eprintln!("{line}");
        }
        self.trace.push(line);
    }

    fn wall(&self, i: usize) -> Timestamp {
        Timestamp((self.now_ns + self.peers[i].skew_ns) as u64)
    }

    fn random_name(&mut self) -> &'static [u8] {
        const NAMES: [&[u8]; 5] = [b"a", b"b", b"c", b"d\n\xff", b"e"];
        NAMES[self.rng.random_range(0..NAMES.len())]
    }

    /// A random directory of peer `i` (the root included) to work in.
    fn random_dir(&mut self, i: usize) -> RelPath {
        let mut dirs: Vec<RelPath> = vec![RelPath::root()];
        dirs.extend(
            self.peers[i]
                .disk
                .iter()
                .filter(|(p, n)| n.content.is_dir() && p.components().count() < 3)
                .map(|(p, _)| p.clone()),
        );
        dirs[self.rng.random_range(0..dirs.len())].clone()
    }

    fn random_existing(&mut self, i: usize) -> Option<RelPath> {
        let paths: Vec<&RelPath> = self.peers[i].disk.keys().collect();
        if paths.is_empty() {
            return None;
        }
        Some(paths[self.rng.random_range(0..paths.len())].clone())
    }

    fn random_meta(&mut self) -> Meta {
        Meta {
            mode: [0o644, 0o600, 0o755][self.rng.random_range(0..3)],
            uid: 0,
            gid: 0,
            mtime_ns: self.rng.random_range(0..1000),
        }
    }

    fn random_file(&mut self) -> Content {
        // Few distinct contents, so that renames and copies find matches.
        let h = self.rng.random_range(0..6u8);
        Content::File {
            size: h as u64 * 100,
            hash: [h; 32],
        }
    }

    /// One random local operation on peer `i`'s disk, as a user would do
    /// it; the paths it touches are reported to the watcher.
    fn local_op(&mut self, i: usize) {
        let op = self.rng.random_range(0..9);
        let dir = self.random_dir(i);
        let name = self.random_name();
        let Ok(fresh) = dir.join(name) else { return };
        let existing = self.random_existing(i);
        let meta = self.random_meta();
        let content = self.random_file();
        let disk = &mut self.peers[i].disk;
        let mut touched = vec![];
        match op {
            // Create or overwrite a file.
            0 | 1 => match disk.get(&fresh) {
                None
                | Some(Node {
                    content: Content::File { .. },
                    ..
                }) => {
                    disk.insert(fresh.clone(), Node { content, meta });
                    touched.push(fresh);
                }
                _ => {}
            },
            // mkdir
            2 if !disk.contains_key(&fresh) => {
                disk.insert(
                    fresh.clone(),
                    Node {
                        content: Content::Dir,
                        meta,
                    },
                );
                touched.push(fresh);
            }
            // symlink
            3 if !disk.contains_key(&fresh) => {
                let target = name.to_vec();
                disk.insert(
                    fresh.clone(),
                    Node {
                        content: Content::Symlink { target },
                        meta,
                    },
                );
                touched.push(fresh);
            }
            // Delete a file or symlink; rmdir an empty directory; or rm -r.
            4 | 5 => {
                if let Some(e) = existing {
                    let recursive = op == 5;
                    if disk[&e].content.is_dir() && !recursive && !children(disk, &e).is_empty() {
                        return;
                    }
                    for s in subtree(disk, &e) {
                        disk.remove(&s);
                        touched.push(s);
                    }
                    disk.remove(&e);
                    touched.push(e);
                }
            }
            // Rename a file or a whole directory, possibly over a file.
            6 | 7 => {
                let Some(from) = existing else { return };
                if fresh == from || fresh.is_below(&from) {
                    return;
                }
                let moving_dir = disk[&from].content.is_dir();
                match disk.get(&fresh) {
                    None => {}
                    Some(Node {
                        content: Content::File { .. },
                        ..
                    }) if !moving_dir => {}
                    _ => return,
                }
                let node = disk.remove(&from).expect("exists");
                touched.push(from.clone());
                touched.push(fresh.clone());
                let below = subtree(disk, &from);
                for s in below {
                    let n = disk.remove(&s).expect("exists");
                    let to = s.rebase(&from, &fresh).expect("below");
                    touched.push(s);
                    touched.push(to.clone());
                    disk.insert(to, n);
                }
                disk.insert(fresh, node);
            }
            // chmod
            _ => {
                if let Some(e) = existing {
                    if let Some(n) = disk.get_mut(&e) {
                        if !matches!(n.content, Content::Symlink { .. }) {
                            n.meta.mode = meta.mode;
                            touched.push(e);
                        }
                    }
                }
            }
        }
        self.log(format!("h{i} local op {op}: {touched:?}"));
        let wall = self.wall(i);
        for t in &touched {
            // The path's own ctime, and its directory's (a deletion's
            // witness).
            self.peers[i].ctimes.insert(t.clone(), wall);
            if let Some(parent) = t.parent() {
                self.peers[i].ctimes.insert(parent, wall);
            }
        }
        self.peers[i].dirty.extend(touched);
    }

    /// The watcher's batch: every reported path is compared with the
    /// index and new changes are recorded (parents first).
    fn flush_watcher(&mut self, i: usize) {
        if self.peers[i].down {
            return;
        }
        self.observe_dirty(i, false);
    }

    /// Observes the reported paths: live, or as a scan at restart.
    fn observe_dirty(&mut self, i: usize, scanned: bool) {
        let wall = self.wall(i);
        let peer = &mut self.peers[i];
        let floor = peer.hlc.last();
        let ctimes = &peer.ctimes;
        let when = |p: &RelPath| {
            if scanned {
                // A deletion's witness is its directory's ctime.
                let t = ctimes
                    .get(p)
                    .or_else(|| p.parent().and_then(|d| ctimes.get(&d)))
                    .copied()
                    .unwrap_or(wall);
                When::Scanned { ctime: t, floor }
            } else {
                When::Live { wall }
            }
        };
        let dirty = std::mem::take(&mut peer.dirty);
        let disk = &peer.disk;
        let changes = observe(
            &peer.index,
            &mut peer.hlc,
            &peer.host,
            dirty,
            observe::Disk {
                at: &mut |p| disk.get(p).cloned(),
                when: &when,
                in_scope: &|_| true,
            },
        )
        .expect("infallible");
        for c in changes {
            let best = self
                .written
                .entry(c.path.clone())
                .or_insert_with(|| c.entry.version.clone());
            if c.entry.version > *best {
                *best = c.entry.version.clone();
            }
            peer.index
                .record(c)
                .expect("a new local version always wins");
        }
        if let Err(e) = self.check_disk(i) {
            panic!("after observing local changes: {e}");
        }
    }

    /// Live push of everything recorded since the last push.
    fn push(&mut self, i: usize) {
        if self.peers[i].down {
            return;
        }
        self.flush_watcher(i);
        let last = self.peers[i].index.last_seq();
        let after = self.peers[i].pushed;
        if last == after {
            return;
        }
        let changes: Vec<Change> = self.peers[i]
            .index
            .since(after)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        for to in 0..self.peers.len() {
            if to != i {
                self.net.push(Msg {
                    from: i,
                    to,
                    after,
                    upto: last,
                    changes: changes.clone(),
                });
            }
        }
        self.peers[i].pushed = last;
    }

    /// `to` asks `from` for everything after its cursor.
    fn pull(&mut self, to: usize, from: usize) {
        let after = self.peers[to].index.cursor(&self.peers[from].host);
        let upto = self.peers[from].index.last_seq();
        let changes = self.peers[from]
            .index
            .since(after)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        self.net.push(Msg {
            from,
            to,
            after,
            upto,
            changes,
        });
    }

    /// Delivers message `k`, perhaps dropping or duplicating it.
    fn deliver(&mut self, k: usize) {
        let roll = self.rng.random_range(0..100);
        let msg = if roll < 10 {
            // Duplicate: deliver a copy, keep the original in flight.
            let m = &self.net[k];
            Msg {
                from: m.from,
                to: m.to,
                after: m.after,
                upto: m.upto,
                changes: m.changes.clone(),
            }
        } else {
            self.net.swap_remove(k)
        };
        let down = self.peers[msg.from].down || self.peers[msg.to].down;
        if roll >= 90 || !self.connected[msg.from][msg.to] || down {
            self.log(format!("drop {}->{}", msg.from, msg.to));
            return;
        }
        self.receive(msg);
    }

    fn receive(&mut self, msg: Msg) {
        let to = msg.to;
        // The watcher's pending events are handled before a remote batch,
        // so a local change is never overwritten unseen.
        self.flush_watcher(to);
        let from_host = self.peers[msg.from].host.clone();
        let peer = &mut self.peers[to];
        for c in &msg.changes {
            peer.hlc.observe(c.entry.version.ts);
        }
        let res = resolve(&peer.index, &msg.changes, &|_| false).expect("infallible");
        let line = format!(
            "h{to} <- h{} ({}..{}]: {} accepted, actions {:?}",
            msg.from,
            msg.after,
            msg.upto,
            res.accepted.len(),
            res.actions
        );
        self.log(line);
        let peer = &mut self.peers[to];
        for a in &res.actions {
            if let Err(e) = apply(&mut peer.disk, a) {
                panic!("h{to}: action {a:?} failed: {e}");
            }
        }
        for c in res.accepted {
            peer.index.record(c);
        }
        if let Err(e) = self.check_disk(to) {
            panic!("after a remote batch: {e}");
        }
        let peer = &mut self.peers[to];
        // Sequences arrive in order only if nothing in between was lost.
        if msg.after <= peer.index.cursor(&from_host) && msg.upto > peer.index.cursor(&from_host) {
            peer.index.set_cursor(&from_host, msg.upto);
        }
    }

    fn step(&mut self) {
        self.now_ns += self.rng.random_range(0..2_000_000_000);
        let n = self.peers.len();
        match self.rng.random_range(0..100) {
            0..40 => {
                let i = self.rng.random_range(0..n);
                self.local_op(i);
                if self.rng.random_bool(0.5) {
                    self.push(i);
                }
            }
            40..50 => {
                let i = self.rng.random_range(0..n);
                self.push(i);
            }
            50..80 if !self.net.is_empty() => {
                let k = self.rng.random_range(0..self.net.len());
                self.deliver(k);
            }
            80..88 => {
                let (a, b) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
                if a != b && !self.peers[a].down && !self.peers[b].down {
                    self.pull(a, b);
                }
            }
            88..90 => {
                // Stop a daemon, or start a stopped one (which scans).
                let i = self.rng.random_range(0..n);
                if self.peers[i].down {
                    self.restart(i);
                } else {
                    self.flush_watcher(i);
                    self.peers[i].down = true;
                    self.log(format!("h{i} stopped"));
                }
            }
            90..95 => {
                // A new partition: each link up with probability 1/2.
                for a in 0..n {
                    for b in 0..n {
                        self.connected[a][b] = self.rng.random_bool(0.5);
                    }
                }
                self.log(format!("partition {:?}", self.connected));
            }
            _ => {
                self.connected = vec![vec![true; n]; n];
            }
        }
    }

    fn restart(&mut self, i: usize) {
        self.peers[i].down = false;
        self.log(format!("h{i} restarted"));
        self.observe_dirty(i, true);
    }

    /// Heals the network and pulls until a whole round moves nothing.
    fn heal_and_settle(&mut self) {
        let n = self.peers.len();
        for i in 0..n {
            if self.peers[i].down {
                self.restart(i);
            }
        }
        self.connected = vec![vec![true; n]; n];
        for i in 0..n {
            self.flush_watcher(i);
        }
        for round in 0.. {
            assert!(round < 50, "no quiescence after 50 rounds");
            let before: Vec<Seq> = self.peers.iter().map(|p| p.index.last_seq()).collect();
            for to in 0..n {
                for from in 0..n {
                    if to != from {
                        self.pull(to, from);
                        let m = self.net.pop().expect("just pushed");
                        self.receive(m);
                    }
                }
            }
            let after: Vec<Seq> = self.peers.iter().map(|p| p.index.last_seq()).collect();
            if before == after {
                break;
            }
        }
    }

    /// The disk of peer `i` is what its index says (once the watcher's
    /// pending events are handled).
    fn check_disk(&self, i: usize) -> Result<(), String> {
        let peer = &self.peers[i];
        let mut paths: BTreeSet<RelPath> = peer.disk.keys().cloned().collect();
        paths.extend(peer.index.iter().map(|(p, _)| p.clone()));
        for path in &paths {
            let want = present(&peer.index, path).expect("infallible");
            if want.as_ref() != peer.disk.get(path) {
                return Err(format!(
                    "{}: disk at {path:?} is {:?}, index says {want:?}",
                    peer.host,
                    peer.disk.get(path)
                ));
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        let reference = &self.peers[0];
        for (i, peer) in self.peers.iter().enumerate() {
            self.check_disk(i)?;
            // Every peer holds the same tree.
            if peer.disk != reference.disk {
                return Err(format!(
                    "{} and {} differ:\n{:?}\n{:?}",
                    peer.host, reference.host, peer.disk, reference.disk
                ));
            }
            // Every path holds the highest version written for it.
            for (path, best) in &self.written {
                let got = peer
                    .index
                    .entry(path)
                    .expect("infallible")
                    .map(|e| e.version);
                if got.as_ref() != Some(best) {
                    return Err(format!(
                        "{}: {path:?} holds {got:?}, the highest written is {best:?}",
                        peer.host
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The simulated applier: the same preconditions a real disk imposes.
fn apply(disk: &mut Disk, a: &Action) -> Result<(), String> {
    let ensure_parents = |disk: &mut Disk, path: &RelPath| -> Result<(), String> {
        let mut missing = Vec::new();
        for anc in path.ancestors() {
            if anc.is_root() {
                break;
            }
            match disk.get(&anc) {
                Some(n) if n.content.is_dir() => break,
                Some(n) => return Err(format!("parent {anc:?} is a {}", n.content.kind())),
                None => missing.push(anc),
            }
        }
        for m in missing.into_iter().rev() {
            disk.insert(
                m,
                Node {
                    content: Content::Dir,
                    meta: Meta::IMPLIED_DIR,
                },
            );
        }
        Ok(())
    };
    match a {
        Action::SaveOld { .. } => Ok(()),
        Action::Rename { from, to, meta } => {
            let mut node = disk.remove(from).ok_or("rename source missing")?;
            if !matches!(node.content, Content::File { .. }) {
                return Err("rename source is not a file".into());
            }
            ensure_parents(disk, to)?;
            if let Some(old) = disk.get(to) {
                if old.content.is_dir() {
                    return Err("rename over a directory".into());
                }
            }
            node.meta = *meta;
            disk.insert(to.clone(), node);
            Ok(())
        }
        Action::Remove { path, .. } => {
            if !children(disk, path).is_empty() {
                return Err("rmdir of a non-empty directory".into());
            }
            disk.remove(path)
                .map(|_| ())
                .ok_or_else(|| "remove of a missing path".into())
        }
        Action::MakeDir { path, meta } => {
            ensure_parents(disk, path)?;
            match disk.get(path) {
                Some(n) if !n.content.is_dir() => Err(format!("mkdir over a {}", n.content.kind())),
                _ => {
                    disk.insert(
                        path.clone(),
                        Node {
                            content: Content::Dir,
                            meta: *meta,
                        },
                    );
                    Ok(())
                }
            }
        }
        Action::WriteFile {
            path,
            size,
            hash,
            meta,
            source,
        } => {
            ensure_parents(disk, path)?;
            if let Some(n) = disk.get(path) {
                if !matches!(n.content, Content::File { .. }) {
                    return Err(format!("write over a {}", n.content.kind()));
                }
            }
            if let Source::CopyFrom(from) = source {
                match disk.get(from) {
                    Some(Node {
                        content: Content::File { hash: h, .. },
                        ..
                    }) if h == hash => {}
                    other => return Err(format!("copy source {from:?} holds {other:?}")),
                }
            }
            disk.insert(
                path.clone(),
                Node {
                    content: Content::File {
                        size: *size,
                        hash: *hash,
                    },
                    meta: *meta,
                },
            );
            Ok(())
        }
        Action::MakeSymlink { path, target, meta } => {
            ensure_parents(disk, path)?;
            if let Some(n) = disk.get(path) {
                if !matches!(n.content, Content::Symlink { .. }) {
                    return Err(format!("symlink over a {}", n.content.kind()));
                }
            }
            disk.insert(
                path.clone(),
                Node {
                    content: Content::Symlink {
                        target: target.clone(),
                    },
                    meta: *meta,
                },
            );
            Ok(())
        }
        Action::SetMeta { path, meta } => {
            let n = disk.get_mut(path).ok_or("set meta on a missing path")?;
            n.meta = *meta;
            Ok(())
        }
    }
}

fn run(seed: u64) -> Result<World, String> {
    let mut w = World::new(seed);
    let steps = w.rng.random_range(20..120);
    for _ in 0..steps {
        w.step();
    }
    w.heal_and_settle();
    w.check().map(|()| w)
}

fn run_catching(seed: u64) -> Result<(), String> {
    match std::panic::catch_unwind(|| run(seed)) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())),
    }
}

#[test]
fn peers_converge_under_loss_reordering_partitions_and_skew() {
    if let Ok(seed) = std::env::var("OMIRR_SIM_SEED") {
        let seed: u64 = seed.parse().expect("OMIRR_SIM_SEED is a number");
        let mut w = World::new(seed);
        let steps = w.rng.random_range(20..120);
        for _ in 0..steps {
            w.step();
        }
        w.heal_and_settle();
        w.check().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        return;
    }
    let schedules: u64 = std::env::var("OMIRR_SIM_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut failures = Vec::new();
    for seed in 0..schedules {
        if let Err(e) = run_catching(seed) {
            failures.push(format!("seed {seed}: {e}"));
            if failures.len() >= 5 {
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} schedule(s) failed (replay one with OMIRR_SIM_SEED=N):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_schedule_really_exchanges_changes() {
    // Guards the simulation itself: schedules do produce, lose and heal
    // changes, so convergence is not vacuous.
    let mut total_written = 0;
    let mut nonempty = 0;
    for seed in 0..50 {
        let w = run(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        total_written += w.written.len();
        if !w.peers[0].disk.is_empty() {
            nonempty += 1;
        }
    }
    assert!(
        total_written > 200,
        "only {total_written} paths written in 50 schedules"
    );
    assert!(
        nonempty > 25,
        "only {nonempty} of 50 schedules end with files"
    );
}
