//! SIGHUP: the Distfile and the peers file read again and put in force
//! while the daemon runs, or refused whole (see [`reload_on_sighup`]).

use crate::cli::DaemonArgs;
use crate::sessions::dial;
use crate::shared::{PlanPolicy, Shared};
use omirr_net::tls;
use std::sync::Arc;

/// SIGHUP: reads the Distfile and the peers file again. A configuration
/// with errors is logged and ignored; the old one stays in force. New pins,
/// rules (authorisation, excludes, savetargets, commands) and peers take
/// effect at once; sessions with hosts no longer listed are closed. This
/// host's name, root and mirrored trees need a restart.
pub async fn reload_on_sighup(
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
        shared
            .engine
            .set_policy(Arc::new(PlanPolicy::new(new.clone())));
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
