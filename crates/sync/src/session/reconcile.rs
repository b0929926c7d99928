//! A session's part in tombstone expiry (capability `expiry`; see
//! `omirr_core::expiry` for the rules and docs/sync-model.md, "Tombstone
//! expiry", for why): what the peer told of its forgetting, and the
//! reconciliation this host runs when its cursor for the peer is below
//! it.
//!
//! A reconciliation asks the peer for its whole index (`Pull` from 0,
//! its own changes back too), notes every path the answer holds, and
//! once the cursor reaches the peer's last sequence at the handshake,
//! deletes here what the peer deleted and forgot, and renews this host's
//! own changes made while away ([`omirr_core::expiry::reconcile`]). It is
//! pending in the index until then, so an interrupted one starts again.
//! The paths noted are bounded by the peer's index (one path and a flag
//! each).

use omirr_core::expiry::Forgotten;
use omirr_core::{RelPath, Seq};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What a session knows of the peer's forgetting.
#[derive(Debug, Default)]
pub struct Expiry {
    /// Both sides speak `expiry`.
    pub enabled: bool,
    /// The peer's cursor for this host: it has everything this host
    /// recorded up to it (from its `Forgotten`, raised by its `Ack`s).
    their_cursor: AtomicU64,
    reconcile: Mutex<Option<Reconcile>>,
}

/// A reconciliation in progress.
#[derive(Debug)]
pub struct Reconcile {
    /// What the peer has forgotten.
    pub peer_forgot: Forgotten,
    /// The peer's cursor for this host when the session began.
    pub peer_cursor: Seq,
    /// The peer's last sequence when the session began: its answer ends
    /// there.
    pub end: Seq,
    /// This host's cursor for the peer before: the reconciliation starts
    /// from 0 but never lowers it (the peer still has what it had).
    pub floor: Seq,
    /// Every path the peer sent, and whether its entry was live.
    pub sent: BTreeMap<RelPath, bool>,
}

impl Expiry {
    /// `enabled` if both sides speak `expiry`; `their_cursor` as the
    /// peer's `Forgotten` gave it; `reconcile` if one is pending.
    pub fn new(enabled: bool, their_cursor: Seq, reconcile: Option<Reconcile>) -> Expiry {
        Expiry {
            enabled,
            their_cursor: AtomicU64::new(their_cursor),
            reconcile: Mutex::new(reconcile),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Reconcile>> {
        self.reconcile.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer's cursor for this host, as far as this session knows.
    pub fn their_cursor(&self) -> Seq {
        self.their_cursor.load(Ordering::Relaxed)
    }

    /// The peer has everything this host recorded up to `seq`.
    pub fn raise_their_cursor(&self, seq: Seq) {
        self.their_cursor.fetch_max(seq, Ordering::Relaxed);
    }

    /// Whether a reconciliation is in progress.
    pub fn reconciling(&self) -> bool {
        self.lock().is_some()
    }

    /// Notes the paths of a batch from the peer, if reconciling.
    pub fn note(&self, changes: &[omirr_core::Change]) {
        if let Some(r) = self.lock().as_mut() {
            for c in changes {
                r.sent.insert(c.path.clone(), c.entry.is_live());
            }
        }
    }

    /// The cursor to record after a batch up to `upto`: never below the
    /// cursor before a reconciliation.
    pub fn cursor_after(&self, upto: Seq) -> Seq {
        match self.lock().as_ref() {
            Some(r) => upto.max(r.floor),
            None => upto,
        }
    }

    /// The reconciliation, taken, once the batches applied reach the end
    /// of the peer's answer (`upto`).
    pub fn finished(&self, upto: Seq) -> Option<Reconcile> {
        let mut g = self.lock();
        if g.as_ref().is_some_and(|r| upto >= r.end) {
            g.take()
        } else {
            None
        }
    }
}
