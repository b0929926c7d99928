//! What every task of the running daemon shares ([`Shared`]): the plan
//! in force, the sync engine, this host's identity and the pins, the
//! session with each peer, and the errors logged lately. Also the plan as
//! the engine sees it ([`PlanPolicy`]), which owns the runner of the
//! Distfile's commands: SIGHUP replaces both together.

use crate::commands::{self, Commands};
use crate::plan::Plan;
use omirr_core::RelPath;
use omirr_net::identity::Identity;
use omirr_net::tls::SharedPins;
use omirr_sync::{Engine, Policy};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// What every task of the daemon shares.
pub struct Shared {
    /// The configuration; SIGHUP swaps it (see
    /// [`crate::reload::reload_on_sighup`]).
    pub plan: RwLock<Arc<Plan>>,
    /// The sync engine: index, disk, sessions' state, counters.
    pub engine: Arc<Engine>,
    pub identity: Identity,
    pub pins: SharedPins,
    /// The session with each peer (see [`crate::sessions::run_session`]
    /// for which one survives when both hosts dial).
    pub sessions: Mutex<HashMap<String, Live>>,
    /// Errors logged lately, held back when they repeat.
    pub repeats: crate::health::Repeats,
}

/// The Distfile plan as the engine's policy, with the runner of its
/// commands: both are built anew when SIGHUP brings a new plan (see
/// [`crate::reload::reload_on_sighup`]), so the runner is the daemon's,
/// one per plan in force.
pub struct PlanPolicy {
    plan: Arc<Plan>,
    commands: Commands,
}

impl PlanPolicy {
    /// The policy of `plan`, starting its commands' workers.
    pub fn new(plan: Arc<Plan>) -> PlanPolicy {
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
pub struct Live {
    pub task: tokio::task::AbortHandle,
    pub opened_by: String,
}

impl Shared {
    /// The configuration now in force.
    pub fn plan(&self) -> Arc<Plan> {
        self.plan.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a session with `peer` is running.
    pub fn has_session(&self, peer: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .is_some_and(|l| !l.task.is_finished())
    }
}
