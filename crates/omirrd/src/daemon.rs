//! The running daemon: the start-up scan, the watcher, the listener, the
//! dialers and the peer sessions, on one tokio runtime.
//!
//! The sync engine itself (sessions, recording, applying) is
//! `omirr-sync`'s [`Engine`]; this module starts it and wires the process
//! to it. Data flows one way in each direction:
//! - watcher -> [`omirr_sync::local::record`] -> index -> (the index's
//!   sequence moves on) -> every session's pusher -> peers;
//! - peer -> session reader -> applier (resolver, staged content, disk) ->
//!   index.

use crate::cli::DaemonArgs;
use crate::commands::{self, Commands};
use crate::plan::Plan;
use anyhow::{Context, Result};
use omirr_core::{Hlc, HostId, RelPath};
use omirr_fs::apply::Applier;
use omirr_fs::watch::{Debounce, PathFilter, WatchEvent, Watcher};
use omirr_index::Index;
use omirr_net::identity::Identity;
use omirr_net::socket::{self, AcceptError, DialError, PeerListener};
use omirr_net::tls::{self, SharedPins};
use omirr_sync::engine::{Disk, Store, WriteSide};
use omirr_sync::{Engine, Policy};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What every task of the daemon shares.
pub struct Shared {
    /// The configuration; SIGHUP swaps it (see [`reload_on_sighup`]).
    plan: std::sync::RwLock<Arc<Plan>>,
    /// The sync engine: index, disk, sessions' state, counters.
    pub engine: Arc<Engine>,
    pub identity: Identity,
    pub pins: SharedPins,
    /// The session with each peer (see [`run_session`] for which one
    /// survives when both hosts dial).
    sessions: Mutex<HashMap<String, Live>>,
    /// Errors logged lately, held back when they repeat.
    repeats: crate::health::Repeats,
}

/// The Distfile plan as the engine's policy, with the runner of its
/// commands: both are built anew when SIGHUP brings a new plan (see
/// [`reload_on_sighup`]), so the runner is the daemon's, one per plan in
/// force.
struct PlanPolicy {
    plan: Arc<Plan>,
    commands: Commands,
}

impl PlanPolicy {
    /// The policy of `plan`, starting its commands' workers.
    fn new(plan: Arc<Plan>) -> PlanPolicy {
        let commands = Commands::new(&plan, commands::Settings::from_system());
        PlanPolicy { plan, commands }
    }
}

impl Policy for PlanPolicy {
    fn host(&self) -> &str {
        &self.plan.host
    }
    fn authorised(&self, peer: &str, path: &RelPath) -> bool {
        self.plan.authorised(peer, path)
    }
    fn unshared_below(&self, peer: &str, path: &RelPath) -> Option<RelPath> {
        self.plan.unshared_below(peer, path)
    }
    fn excluded(&self, path: &RelPath) -> bool {
        self.plan.excluded(path)
    }
    fn savetargets(&self, path: &RelPath) -> bool {
        self.plan.savetargets(path)
    }
    fn direction(&self, path: &RelPath) -> omirr_sync::engine::Direction {
        use omirr_config::distfile::Direction as D;
        use omirr_sync::engine::Direction;
        match self.plan.direction(path) {
            D::Both => Direction::Both,
            D::SendOnly => Direction::SendOnly,
            D::ReceiveOnly => Direction::ReceiveOnly,
        }
    }

    fn conflict_copies(&self, path: &RelPath) -> u32 {
        self.plan.conflict_copies(path)
    }
    fn after_batch(&self, peer: &str, actions: &[omirr_core::resolve::Action]) {
        self.commands.after_batch(peer, actions);
    }
}

/// A session with a peer: its task, and the host that opened it.
struct Live {
    task: tokio::task::AbortHandle,
    opened_by: String,
}

/// Limits glibc's malloc to two arenas (unless `MALLOC_ARENA_MAX` says
/// otherwise), so that memory freed by one thread is reused by the others
/// instead of each keeping its own. Called before any thread starts.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt changes a glibc tunable; no thread is running
        // yet, so no allocation can race with it.
        unsafe {
            nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
        }
    }
}

impl Shared {
    /// The configuration now in force.
    pub fn plan(&self) -> Arc<Plan> {
        self.plan.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a session with `peer` is running.
    fn has_session(&self, peer: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .is_some_and(|l| !l.task.is_finished())
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(plan: Plan, identity: Identity, args: &DaemonArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("omirrd")
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(plan, identity, args))
}

async fn serve(plan: Plan, identity: Identity, args: &DaemonArgs) -> Result<()> {
    // Caught from the start: a SIGTERM during a long start-up scan must
    // stop the daemon cleanly too, not kill it.
    let stop = stop_signals()?;
    // Caught before READY=1 too: systemd may send ExecReload's SIGHUP as
    // soon as the unit is active, and SIGHUP's default action kills.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let state_dir = args.state_dir.as_path();
    let index = open_index(&plan, state_dir)?;
    let plan = Arc::new(plan);
    let applier = open_applier(&plan)?;
    let stage_dir = prepare_stage_dir(state_dir)?;
    let host = HostId::new(&plan.host);
    let tops = plan.tops();
    let pins = SharedPins::new(tls::PinSet::from_peers(&plan.peers));
    let mut hlc = Hlc::default();

    // Watch first, then scan: nothing changed in between is missed.
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    // Exclusion is decided once, by `record_live`, with the configuration
    // in force (SIGHUP may change it); the watcher reports every path.
    let report_all: PathFilter = Arc::new(|_: &RelPath| false);
    let watcher = Arc::new(Watcher::start(
        &plan.root,
        &tops,
        report_all,
        Debounce::new(Duration::from_millis(2), Duration::from_millis(100)),
        move |e| {
            let _ = events_tx.send(e);
        },
    )?);

    let undone = scan_at_start(&index, &mut hlc, &host, &plan, &tops)?;

    let me = plan
        .peers
        .get(&plan.host)
        .map(|p| p.address.clone())
        .context("this host has no line in the peers file")?;
    let listener = PeerListener::bind(&me)
        .await
        .with_context(|| format!("cannot listen on {me}"))?;
    let engine = Arc::new(
        Engine::new(
            Store::new(index)?,
            Disk {
                root: plan.root.clone(),
                tops,
                write: Mutex::new(WriteSide { hlc, applier }),
                stage_dir,
            },
            Arc::new(PlanPolicy::new(plan.clone())),
            &plan.peer_names(),
            args.in_flight,
        )
        .with_max_clock_offset(args.max_clock_offset)
        .with_tombstone_horizon(args.tombstone_horizon.0),
    );
    engine.undo.add(undone);
    let shared = Arc::new(Shared {
        engine,
        identity,
        pins,
        sessions: Mutex::new(HashMap::new()),
        repeats: Default::default(),
        plan: std::sync::RwLock::new(plan),
    });
    serve_status(&shared, state_dir)?;

    tokio::spawn(local_changes(shared.clone(), events_rx, watcher.clone()));
    tokio::spawn(expire_tombstones(
        shared.engine.clone(),
        args.tombstone_horizon,
    ));
    tokio::spawn(accept(shared.clone(), listener));
    for peer in shared.plan().peer_names() {
        tokio::spawn(dial(shared.clone(), peer));
    }
    tokio::spawn(reload_on_sighup(shared.clone(), args.clone(), hup));
    tracing::info!(address = %me, "ready");
    notify_systemd("READY=1");

    stop.wait().await;
    tracing::info!("stopping: finishing the write in progress");
    // Whoever holds the lock is mid-batch; once we have it, nothing is.
    let _idle = shared.engine.disk.lock();
    drop(watcher);
    notify_systemd("STOPPING=1");
    tracing::info!("stopped");
    Ok(())
}

/// Opens the index, and heals what a set that stopped being send-only
/// here left behind (see [`crate::oneway`]).
fn open_index(plan: &Plan, state_dir: &std::path::Path) -> Result<Index> {
    let index = Index::open(state_dir)?;
    let ended = crate::oneway::heal_direction_change(
        state_dir,
        &crate::oneway::sendonly_paths(plan),
        &index,
    )?;
    if !ended.is_empty() {
        tracing::info!(
            "this host no longer only sends {}: every peer is asked for all its changes again",
            ended.join(", ")
        );
    }
    Ok(index)
}

/// The applier for `plan`'s root and trees, with the temporary files an
/// interrupted run left there removed.
fn open_applier(plan: &Arc<Plan>) -> Result<Applier> {
    let mut applier = Applier::open(&plan.root, Default::default())
        .with_context(|| format!("cannot use the root {}", plan.root.display()))?
        .with_tops(plan.tops());
    // Owners, groups, modes and kept versions as the install options say.
    applier.set_rules(plan.clone());
    // Only the mirrored trees: the root may well be `/`.
    let stale = applier.cleanup_stale_temps_tree(&plan.tops());
    for e in &stale.skipped {
        tracing::warn!("start-up clean-up of temporary files skipped: {e}");
    }
    if stale.removed > 0 {
        tracing::info!(
            files = stale.removed,
            "removed temporary files left by an interrupted run"
        );
    }
    Ok(applier)
}

/// The start-up scan: what changed while the daemon was down, recorded in
/// the index. Returns the paths to undo, changed where this host only
/// receives.
fn scan_at_start(
    index: &Index,
    hlc: &mut Hlc,
    host: &HostId,
    plan: &Plan,
    tops: &[RelPath],
) -> Result<Vec<RelPath>> {
    let started = std::time::Instant::now();
    let scan = omirr_fs::local::scan_into_index(
        index,
        hlc,
        host,
        &plan.root,
        tops,
        &|p| plan.excluded(p),
        plan,
    )?;
    for issue in scan.issues.iter().filter(|i| i.worth_logging()) {
        tracing::warn!("{issue}");
    }
    // Changed while the daemon was down where this host only receives:
    // undone once a session has caught up with a peer.
    for path in &scan.undone {
        tracing::warn!("local change to {path}, made while omirrd was down, is not sent: this host only receives it (receiveonly); the set's version is put back");
    }
    tracing::info!(
        entries = scan.entries,
        hashed = scan.stats.hashed_files,
        changes = scan.changes,
        pieces = scan.pieces,
        ms = started.elapsed().as_millis() as u64,
        "start-up scan done"
    );
    // The scan's pieces were freed one by one on the main thread; hand
    // the memory back rather than keep the largest piece's resident.
    omirr_sync::engine::release_freed_memory();
    Ok(scan.undone)
}

/// Serves `omirrd status` and `omirrd verify` on the status socket.
fn serve_status(shared: &Arc<Shared>, state_dir: &std::path::Path) -> Result<()> {
    let status_socket = crate::status::bind(state_dir)?;
    let s = shared.clone();
    let v = shared.clone();
    let verify = move |deep: bool| {
        let v = v.clone();
        async move {
            let report = crate::verify::run(v.plan(), v.engine.clone(), deep).await;
            serde_json::to_vec(&report).unwrap_or_else(|e| {
                serde_json::json!({ "error": e.to_string() })
                    .to_string()
                    .into_bytes()
            })
        }
    };
    tokio::spawn(crate::status::serve(
        status_socket,
        move || {
            let e = &s.engine;
            let aside = e
                .store
                .index
                .aside(None)
                .unwrap_or_default()
                .into_iter()
                .map(|(peer, a)| crate::status::AsideStatus {
                    peer: peer.to_string(),
                    path: a.change.path.to_string(),
                    reason: a.reason,
                    attempts: a.attempts,
                    since: a.since,
                })
                .collect();
            crate::status::snapshot(
                &e.counters,
                &s.plan().host,
                e.store.index.last_seq().unwrap_or(0),
                aside,
            )
        },
        verify,
    ));
    Ok(())
}

/// Empties (or makes) the staging directory: what an interrupted run
/// staged there belongs to batches that were never applied.
fn prepare_stage_dir(state_dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let dir = state_dir.join("stage");
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot empty {}", dir.display())),
    }
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Records what the watcher reports and wakes the pushers.
/// How often expiry runs, at most: every hour, or every horizon if that
/// is shorter.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);

/// Forgets the tombstones older than the horizon, at start and then
/// periodically (see docs/sync-model.md, "Tombstone expiry").
async fn expire_tombstones(engine: Arc<Engine>, horizon: crate::cli::Horizon) {
    let Some(h) = horizon.0 else {
        tracing::debug!("tombstones are kept for ever (--tombstone-horizon never)");
        return;
    };
    let mut tick = tokio::time::interval(EXPIRE_EVERY.min(h));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || e.expire_tombstones()).await {
            Ok(Ok(done)) => {
                if done.forgotten > 0 || !done.buried.is_empty() {
                    let below = engine
                        .store
                        .index
                        .forgotten()
                        .map(|f| f.below.0)
                        .unwrap_or(0);
                    tracing::info!(
                        forgotten = done.forgotten,
                        buried = done.buried.len(),
                        below,
                        "expired {} tombstones older than {horizon} ({} buried first: they hid older entries)",
                        done.forgotten,
                        done.buried.len()
                    );
                }
            }
            Ok(Err(e)) => tracing::warn!("tombstone expiry failed, tried again later: {e}"),
            Err(e) => tracing::warn!("tombstone expiry failed, tried again later: {e}"),
        }
    }
}

async fn local_changes(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<WatchEvent>,
    watcher: Arc<Watcher>,
) {
    while let Some(event) = events.recv().await {
        let dirty = match event {
            WatchEvent::Changed {
                paths,
                attrs_only,
                still_written,
            } => omirr_sync::local::Dirty {
                paths,
                attrs_only,
                still_written,
            },
            WatchEvent::Rescan(tops) => {
                tracing::warn!("the kernel dropped file events: rescanning");
                omirr_sync::local::Dirty::all(tops)
            }
            WatchEvent::Degraded { top, reason } => {
                tracing::warn!("{reason}");
                tokio::spawn(rescan_until_watched(shared.clone(), watcher.clone(), top));
                continue;
            }
        };
        omirr_sync::local::record(&shared.engine, dirty).await;
    }
}

/// A tree the watcher cannot cover (absent, or over the watch limit) is
/// looked at every few seconds instead, until it can be watched: then once
/// more, for what appeared before the watch began.
async fn rescan_until_watched(shared: Arc<Shared>, watcher: Arc<Watcher>, top: RelPath) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let w = watcher.clone();
        let t = top.clone();
        let watched = tokio::task::spawn_blocking(move || w.retry(&t)).await;
        let dirty = omirr_sync::local::Dirty::all(vec![top.clone()]);
        omirr_sync::local::record(&shared.engine, dirty).await;
        if let Ok(Ok(())) = watched {
            tracing::info!(top = %top, "now watching");
            return;
        }
    }
}

/// Accepts peers' connections (the handshake cap and the pause after a
/// failed accept are [`PeerListener`]'s), and runs a session with each
/// authenticated host that shares a mirror set with this one.
async fn accept(shared: Arc<Shared>, mut listener: PeerListener) {
    loop {
        let incoming = listener.next().await;
        let shared = shared.clone();
        tokio::spawn(async move {
            let from = incoming.from;
            let (peer, tls) = match incoming.handshake(&shared.identity, &shared.pins).await {
                Ok(authenticated) => authenticated,
                Err(AcceptError::Setup(e)) => return tracing::error!("TLS setup failed: {e}"),
                Err(AcceptError::TimedOut) => {
                    return tracing::warn!(%from, "TLS handshake timed out")
                }
                Err(e) => return refused(&shared, &from, &e.to_string()),
            };
            let plan = shared.plan();
            if peer == plan.host || !plan.peer_names().contains(&peer) {
                return tracing::warn!(%from, %peer, "refused a connection: this host shares no mirror set with it");
            }
            run_session(shared, tls, peer, false).await;
        });
    }
}

async fn dial(shared: Arc<Shared>, peer: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if !shared.plan().peer_names().contains(&peer) {
            return tracing::info!(%peer, "no longer a peer: not dialing it");
        }
        // The peer dialed us (or we it, and that session runs): one
        // session per pair is enough.
        while shared.has_session(&peer) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let started = std::time::Instant::now();
        match connect(&shared, &peer).await {
            Ok(tls) => run_session(shared.clone(), tls, peer.clone(), true).await,
            Err(e) => {
                tracing::debug!(%peer, "cannot connect: {e:#}");
                let unreachable = matches!(
                    e.downcast_ref::<DialError>(),
                    Some(DialError::Unreachable { .. })
                );
                let e = format!("{e:#}");
                let (c, r) = (&shared.engine.counters, &shared.repeats);
                crate::health::attempt_failed(c, r, &peer, &e, unreachable);
            }
        }
        // A session that lasted resets the backoff; quick failures grow it.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Dials `peer` at its address in the peers file now in force.
async fn connect(
    shared: &Arc<Shared>,
    peer: &str,
) -> Result<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> {
    let address = shared
        .plan()
        .peers
        .get(peer)
        .map(|p| p.address.clone())
        .with_context(|| format!("{peer} is not in the peers file"))?;
    Ok(socket::dial(&address, peer, &shared.identity, &shared.pins).await?)
}

/// Runs one session with `peer`, opened by this host (`outbound`) or by
/// the peer. Both hosts dial; when two sessions meet, both hosts keep the
/// one opened by the host whose name sorts first, and close the other.
/// Otherwise a new session replaces an old one (the peer knows its old one
/// is dead).
async fn run_session<S>(shared: Arc<Shared>, stream: S, peer: String, outbound: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let me = shared.plan().host.clone();
    let opened_by = if outbound { me.clone() } else { peer.clone() };
    let keeper = if me < peer { me } else { peer.clone() };
    let task = {
        let mut sessions = shared.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = sessions.get(&peer) {
            if !live.task.is_finished() && live.opened_by == keeper && opened_by != keeper {
                drop(sessions);
                return tracing::debug!(%peer, "both hosts dialed: keeping the session {keeper} opened");
            }
        }
        let task = tokio::spawn(omirr_sync::session::run(
            shared.engine.clone(),
            stream,
            peer.clone(),
        ));
        let new = Live {
            task: task.abort_handle(),
            opened_by,
        };
        if let Some(old) = sessions.insert(peer.clone(), new) {
            old.task.abort();
        }
        task
    };
    let id = task.id();
    let result = task.await;
    // Only the session registered for the peer speaks for it: one that was
    // replaced (or lost to the other host's) must not mark the peer down.
    let current = shared
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&peer)
        .is_some_and(|l| l.task.id() == id);
    if !current {
        return tracing::debug!(%peer, "session closed: another one with this peer runs");
    }
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(e) if e.is_cancelled() => Some("session cancelled".to_string()),
        Err(e) => Some(format!("session failed: {e}")),
    };
    let mut frames = (0, 0);
    let mut was_up = false;
    shared.engine.counters.peer(&peer, |p| {
        was_up = p.connected;
        p.connected = false;
        if was_up {
            // Down since now; a session that never connected leaves the
            // peer down since whenever it went.
            p.since = Some(omirr_sync::counters::now_secs());
        }
        p.queue = 0;
        // Nothing moves until the next session, which catches up anew.
        p.caught_up = false;
        p.rate_in = 0;
        p.rate_out = 0;
        frames = (p.frames_sent, p.frames_received);
        if error.is_some() {
            p.last_error = error.clone();
        }
    });
    if was_up {
        crate::health::session_lost(&shared.repeats, &peer, error.as_deref(), frames);
    } else {
        let e = error.unwrap_or_else(|| "the peer closed the session before it began".into());
        crate::health::attempt_failed(&shared.engine.counters, &shared.repeats, &peer, &e, false);
    }
}

/// A connection refused before its session: logged once per
/// [`crate::health::REPEAT_WINDOW`] for the same address and reason.
fn refused(shared: &Shared, from: &std::net::SocketAddr, reason: &str) {
    let key = format!("{}\0{reason}", from.ip());
    if let Some(repeated) = shared.repeats.pass(&key) {
        tracing::warn!(%from, "refused a connection: {reason}{repeated}");
    }
}

/// SIGHUP: reads the Distfile and the peers file again. A configuration
/// with errors is logged and ignored; the old one stays in force. New pins,
/// rules (authorisation, excludes, savetargets, commands) and peers take
/// effect at once; sessions with hosts no longer listed are closed. This
/// host's name, root and mirrored trees need a restart.
async fn reload_on_sighup(
    shared: Arc<Shared>,
    args: DaemonArgs,
    hup: std::io::Result<tokio::signal::unix::Signal>,
) {
    let Ok(mut hup) = hup else {
        return tracing::warn!("cannot listen for SIGHUP; restart omirrd to reload");
    };
    while hup.recv().await.is_some() {
        let old = shared.plan();
        let new = match crate::plan::load(&args) {
            Ok(p) => p,
            Err(diags) => {
                for d in diags.iter().filter(|d| d.is_error()) {
                    tracing::error!("{d}");
                }
                tracing::error!("SIGHUP: the configuration has errors; keeping the one in force");
                continue;
            }
        };
        if let Some(d) = crate::plan::pin_mismatch(&args, &new, &shared.identity.fingerprint) {
            tracing::error!("{d}");
            tracing::error!("SIGHUP: keeping the configuration in force");
            continue;
        }
        if new.host != old.host || new.root != old.root {
            tracing::error!("SIGHUP: this host's name or root changed; restart omirrd for that. Keeping the configuration in force");
            continue;
        }
        if new.tops() != shared.engine.disk.tops {
            tracing::warn!(
                now = ?new.tops(),
                watched = ?shared.engine.disk.tops,
                "SIGHUP: the mirrored trees changed; restart omirrd to watch and scan them"
            );
        }
        match crate::oneway::on_reload(
            &args.state_dir,
            &crate::oneway::sendonly_paths(&old),
            &crate::oneway::sendonly_paths(&new),
        ) {
            Ok(ended) if !ended.is_empty() => tracing::warn!(
                "SIGHUP: this host no longer only sends {}; what it did not apply there arrives after a restart",
                ended.join(", ")
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("SIGHUP: {e:#}"),
        }
        shared.pins.replace(tls::PinSet::from_peers(&new.peers));
        let (before, after) = (old.peer_names(), new.peer_names());
        let new = Arc::new(new);
        shared.engine.set_policy(Arc::new(PlanPolicy::new(new.clone())));
        // The user database may have changed too.
        omirr_fs::owners::users().forget();
        shared.engine.disk.lock().applier.set_rules(new.clone());
        *shared.plan.write().unwrap_or_else(|e| e.into_inner()) = new;
        for peer in before.iter().filter(|p| !after.contains(p)) {
            if let Some(session) = shared
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(peer)
            {
                session.task.abort();
            }
            tracing::info!(%peer, "no longer a peer: session closed");
        }
        for peer in after.iter().filter(|p| !before.contains(p)) {
            shared.engine.counters.peer(peer, |_| {});
            tokio::spawn(dial(shared.clone(), peer.clone()));
        }
        tracing::info!("SIGHUP: configuration and peers reloaded");
    }
}

/// SIGTERM and SIGINT, listened for from the start of the daemon.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

fn stop_signals() -> Result<StopSignals> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok(StopSignals {
        term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        int: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
    })
}

impl StopSignals {
    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Tells systemd about our state when it started us (`NOTIFY_SOCKET`).
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(e) = result {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
