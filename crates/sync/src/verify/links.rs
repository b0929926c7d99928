//! The running sessions as `omirrd verify` reaches them: each session
//! registers a [`Link`] in the engine's [`Links`] while it runs; a
//! question goes out on the session's data queue and its answer comes
//! back, by request id, to whoever asked ([`Link::route`]). This module
//! knows nothing of the engine: the comparison itself is the parent
//! module's.

use super::Unavailable;
use crate::Violation;
use omirr_core::verify::Ask;
use omirr_proto::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long the asker waits for one answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The running sessions' links, by peer.
#[derive(Default)]
pub struct Links {
    links: Mutex<HashMap<String, Arc<Link>>>,
    serial: AtomicU64,
}

/// What a session offers the asker: its data queue and its capability.
pub struct Link {
    serial: u64,
    pub(super) out: mpsc::Sender<Message>,
    /// Whether the peer speaks `verify`.
    pub capable: bool,
    pending: Mutex<HashMap<u64, oneshot::Sender<Message>>>,
    next_id: AtomicU64,
    /// The peer's questions being answered now.
    pub(super) answering: AtomicUsize,
}

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Link>>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the session now running with `peer`; the link goes when
    /// the returned guard is dropped (unless a newer session replaced it).
    pub fn register(
        self: &Arc<Self>,
        peer: &str,
        out: mpsc::Sender<Message>,
        capable: bool,
    ) -> (Arc<Link>, Registered) {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let link = Arc::new(Link {
            serial,
            out,
            capable,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            answering: AtomicUsize::new(0),
        });
        self.lock().insert(peer.to_string(), link.clone());
        let guard = Registered {
            links: self.clone(),
            peer: peer.to_string(),
            serial,
        };
        (link, guard)
    }

    /// The link of the session running with `peer`, if one runs.
    pub fn get(&self, peer: &str) -> Option<Arc<Link>> {
        self.lock().get(peer).cloned()
    }
}

/// Removes a session's link when the session ends.
pub struct Registered {
    links: Arc<Links>,
    peer: String,
    serial: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut links = self.links.lock();
        if links
            .get(&self.peer)
            .is_some_and(|l| l.serial == self.serial)
        {
            links.remove(&self.peer);
        }
    }
}

impl Link {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Message>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer's answer (`Summary` or `Entries`) to one of our
    /// questions: handed to whoever asked. An answer to no question is a
    /// violation.
    pub fn route(&self, answer: Message) -> Result<(), Violation> {
        let id = match &answer {
            Message::Summary { id, .. } | Message::Entries { id, .. } => *id,
            other => return Err(Violation(format!("{} is not an answer", other.kind()))),
        };
        match self.pending().remove(&id) {
            // The asker may have given up: nothing to do.
            Some(asker) => {
                let _ = asker.send(answer);
                Ok(())
            }
            None => Err(Violation(format!(
                "{} {id} answers no outstanding question",
                answer.kind()
            ))),
        }
    }

    /// Asks the peer `ask` and waits for its answer.
    pub(super) async fn ask(&self, ask: &Ask) -> Result<Message, Unavailable> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending().insert(id, tx);
        let m = match ask {
            Ask::Summary(span) => Message::SummaryRequest {
                id,
                span: span.clone(),
            },
            Ask::Entries(span) => Message::EntriesRequest {
                id,
                span: span.clone(),
            },
        };
        let ended = || Unavailable("the session with it ended during the comparison".into());
        if self.out.send(m).await.is_err() {
            self.pending().remove(&id);
            return Err(ended());
        }
        let got = tokio::time::timeout(ANSWER_TIMEOUT, rx).await;
        self.pending().remove(&id);
        match got {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(_)) => Err(ended()),
            Err(_) => Err(Unavailable(format!(
                "no answer within {}s",
                ANSWER_TIMEOUT.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_go_to_their_question_once_and_unasked_ones_are_violations() {
        let links = Arc::new(Links::default());
        let (out, _rx) = mpsc::channel(4);
        let (link, guard) = links.register("beta", out.clone(), true);
        let (tx, mut rx) = oneshot::channel();
        link.pending().insert(7, tx);
        let summary = |id| Message::Summary {
            id,
            buckets: Vec::new(),
        };
        link.route(summary(7)).expect("asked");
        assert!(matches!(rx.try_recv(), Ok(Message::Summary { id: 7, .. })));
        assert!(link.route(summary(7)).is_err(), "answered already");
        assert!(link.route(summary(8)).is_err(), "never asked");
        assert!(link.route(Message::Ping { nonce: 1 }).is_err());
        // A newer session's link survives the older one's end.
        let (newer, _newer_guard) = links.register("beta", out, false);
        drop(guard);
        assert!(links.get("beta").is_some_and(|l| !l.capable));
        drop(newer);
    }
}
