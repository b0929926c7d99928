//! `omirrd verify` over the peer sessions: asking a peer about its index
//! ([`compare`]) and answering a peer's questions about ours
//! ([`answer`]), with capability `verify` (see `proto/PROTOCOL.md`).
//!
//! The comparison's rules are `omirr_core::verify`'s sans-IO
//! [`Verifier`]; this module moves its questions and the peer's answers
//! over the session that runs with the peer, and gives it this host's
//! index to compare with, on a blocking thread. Each session registers a
//! [`Link`] in the engine's [`Links`] while it runs, through which the
//! questions go out and the answers come back by request id. Both sides
//! see only the entries the other host shares with them (a mirror set
//! lists both), as for the changes they send each other.

use crate::engine::Engine;
use crate::Violation;
use omirr_core::verify::{self, Ask, Difference, EntrySource, Span, Verifier};
use omirr_core::{Entry, RelPath};
use omirr_index::{IndexError, IndexReader};
use omirr_proto::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most of a peer's verify questions this host answers at once; an
/// honest asker has one outstanding.
pub const MAX_VERIFY_REQUESTS: usize = 4;

/// How long the asker waits for one answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// What one page of entries may hold, in bytes of paths and targets:
/// well within a frame.
const PAGE_BYTES: usize = omirr_proto::MAX_FRAME / 2;

/// This host's index entries as a peer may see them: the entries of a
/// span that a mirror set shares with `peer`.
pub struct SharedWith<'a> {
    pub reader: IndexReader<'a>,
    pub policy: Arc<dyn crate::Policy>,
    pub peer: &'a str,
}

impl EntrySource for SharedWith<'_> {
    type Error = IndexError;

    fn scan(
        &self,
        span: &Span,
        each: &mut dyn FnMut(&RelPath, &Entry) -> bool,
    ) -> Result<(), IndexError> {
        self.reader.scan(span, &mut |p, e| {
            !self.policy.authorised(self.peer, p) || each(p, e)
        })
    }
}

/// The running sessions' links, by peer.
#[derive(Default)]
pub struct Links {
    links: Mutex<HashMap<String, Arc<Link>>>,
    serial: AtomicU64,
}

/// What a session offers the asker: its data queue and its capability.
pub struct Link {
    serial: u64,
    out: mpsc::Sender<Message>,
    /// Whether the peer speaks `verify`.
    pub capable: bool,
    pending: Mutex<HashMap<u64, oneshot::Sender<Message>>>,
    next_id: AtomicU64,
    /// The peer's questions being answered now.
    answering: AtomicUsize,
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
    async fn ask(&self, ask: &Ask) -> Result<Message, Unavailable> {
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

/// A peer's question (`SummaryRequest` or `EntriesRequest`), arrived on
/// the session: answered from our index on a blocking thread, the answer
/// queued for the writer. Never waits; more than
/// [`MAX_VERIFY_REQUESTS`] at once is a violation.
pub fn answer(
    engine: &Arc<Engine>,
    link: &Arc<Link>,
    peer: &str,
    question: Message,
) -> Result<(), Violation> {
    if !link.capable {
        return Err(Violation(format!(
            "{} without the capability verify",
            question.kind()
        )));
    }
    let n = link.answering.fetch_add(1, Ordering::Relaxed) + 1;
    if n > MAX_VERIFY_REQUESTS {
        link.answering.fetch_sub(1, Ordering::Relaxed);
        return Err(Violation(format!(
            "more than {MAX_VERIFY_REQUESTS} verify questions outstanding"
        )));
    }
    let (engine, link, peer) = (engine.clone(), link.clone(), peer.to_string());
    let span = tracing::Span::current();
    tokio::spawn(async move {
        let l = link.clone();
        let answered = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            let shared = SharedWith {
                reader: engine.store.index.reader()?,
                policy: engine.policy(),
                peer: &peer,
            };
            Ok::<_, IndexError>(match question {
                Message::SummaryRequest { id, span } => Some(Message::Summary {
                    id,
                    buckets: verify::summarize(&shared, &span)?,
                }),
                Message::EntriesRequest { id, span } => {
                    let (entries, complete) = verify::entries_page(&shared, &span, PAGE_BYTES)?;
                    Some(Message::Entries {
                        id,
                        entries,
                        complete,
                    })
                }
                _ => None,
            })
        })
        .await;
        match answered {
            Ok(Ok(Some(m))) => {
                let _ = l.out.send(m).await;
            }
            Ok(Ok(None)) => {}
            // The asker times out and says the peer could not be asked.
            Ok(Err(e)) => tracing::warn!("cannot answer a verify question: {e}"),
            Err(e) => tracing::warn!("cannot answer a verify question: {e}"),
        }
        l.answering.fetch_sub(1, Ordering::Relaxed);
    });
    Ok(())
}

/// Why a peer could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// What a comparison with one peer found.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Questions asked (round trips).
    pub asked: u64,
    /// Paths that differ, all counted.
    pub found: u64,
    /// The first [`verify::MAX_DIFFERENCES`] of them.
    pub differences: Vec<Difference>,
}

/// Compares our index with `peer`'s for `tops`, over the session running
/// with it.
pub async fn compare(
    engine: &Arc<Engine>,
    peer: &str,
    tops: Vec<RelPath>,
) -> Result<Comparison, Unavailable> {
    let link = engine.verify_links.get(peer).ok_or_else(|| {
        Unavailable("no session with it runs (it is down, or refuses this host)".into())
    })?;
    if !link.capable {
        return Err(Unavailable(
            "it does not speak verify (an older omirrd): upgrade it".into(),
        ));
    }
    let mut verifier = Verifier::new(tops);
    while let Some(ask) = verifier.next_ask() {
        let answer = link.ask(&ask).await?;
        let (e, p) = (engine.clone(), peer.to_string());
        let fed = tokio::task::spawn_blocking(move || {
            let local = SharedWith {
                reader: e.store.index.reader().map_err(|e| e.to_string())?,
                policy: e.policy(),
                peer: &p,
            };
            let fed = match (&ask, answer) {
                (Ask::Summary(span), Message::Summary { buckets, .. }) => {
                    verifier.on_summary(&local, span, &buckets)
                }
                (
                    Ask::Entries(span),
                    Message::Entries {
                        entries, complete, ..
                    },
                ) => verifier.on_entries(&local, span, entries, complete),
                (_, other) => {
                    return Err(format!("answered {} with {}", kind(&ask), other.kind()));
                }
            };
            fed.map_err(|e| e.to_string())?;
            drop(local);
            Ok(verifier)
        })
        .await
        .map_err(|e| Unavailable(format!("the comparison failed: {e}")))?;
        verifier = fed.map_err(Unavailable)?;
    }
    Ok(Comparison {
        asked: verifier.asked(),
        found: verifier.found(),
        differences: verifier.differences().to_vec(),
    })
}

fn kind(ask: &Ask) -> &'static str {
    match ask {
        Ask::Summary(_) => "SummaryRequest",
        Ask::Entries(_) => "EntriesRequest",
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
