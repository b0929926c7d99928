//! The running daemon: the start-up scan, the watcher, the listener, the
//! dialers and the peer sessions, on one tokio runtime.
//!
//! The sync engine itself (sessions, recording, applying) is
//! `omirr-sync`'s [`Engine`]; this module starts it and wires the process
//! to it: what the tasks share is [`crate::shared`], the sessions with
//! peers [`crate::sessions`], SIGHUP [`crate::reload`]; the watcher, tombstone
//! expiry, the status socket and the signals are here. Data flows one way
//! in each direction:
//! - watcher -> [`omirr_sync::local::record`] -> index -> (the index's
//!   sequence moves on) -> every session's pusher -> peers;
//! - peer -> session reader -> applier (resolver, staged content, disk) ->
//!   index.

use crate::cli::DaemonArgs;
use crate::plan::Plan;
use crate::reload::reload_on_sighup;
use crate::sessions::{accept, dial};
use crate::shared::{PlanPolicy, Shared};
use anyhow::{Context, Result};
use omirr_core::{Hlc, HostId, RelPath};
use omirr_fs::apply::Applier;
use omirr_fs::watch::{Debounce, PathFilter, WatchEvent, Watcher};
use omirr_index::Index;
use omirr_net::identity::Identity;
use omirr_net::socket::PeerListener;
use omirr_net::tls::{self, SharedPins};
use omirr_sync::engine::{Disk, Store, WriteSide};
use omirr_sync::Engine;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Limits glibc's malloc to two arenas (unless `MALLOC_ARENA_MAX` says
/// otherwise), so that memory freed by one thread is reused by the others
/// instead of each keeping its own. Called before any thread starts.
#[allow(unsafe_code)] // see the SAFETY comment within
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
    let scan = omirr_sync::record::scan_into_index(
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

/// Records what the watcher reports and wakes the pushers.
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
