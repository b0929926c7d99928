//! `omirrd verify` over the peer sessions: asking a peer about its index
//! ([`compare`]) and answering a peer's questions about ours
//! ([`answer`]), with capability `verify` (see `proto/PROTOCOL.md`).
//!
//! The comparison's rules are `omirr_core::verify`'s sans-IO
//! [`Verifier`]; this module moves its questions and the peer's answers
//! over the session that runs with the peer, and gives it this host's
//! index to compare with, on a blocking thread. Each session registers a
//! [`Link`] in the engine's [`links::Links`] while it runs, through which the
//! questions go out and the answers come back by request id ([`links`]). Both sides
//! see only the entries the other host shares with them (a mirror set
//! lists both), as for the changes they send each other.

pub mod links;

use crate::engine::Engine;
use crate::Violation;
use links::Link;
use omirr_core::verify::{self, Ask, Difference, EntrySource, Span, Verifier};
use omirr_core::{Entry, RelPath};
use omirr_index::{IndexError, IndexReader};
use omirr_proto::Message;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The most of a peer's verify questions this host answers at once; an
/// honest asker has one outstanding.
pub const MAX_VERIFY_REQUESTS: usize = 4;

/// What one page of entries may hold, in bytes of paths and targets:
/// well within a frame.
const PAGE_BYTES: usize = omirr_proto::MAX_FRAME / 2;

/// This host's index entries as a peer may see them: the entries of a
/// span that a mirror set shares with `peer`.
pub struct SharedWith<'a> {
    /// This host's index, read in one transaction.
    pub reader: IndexReader<'a>,
    /// The configuration that says what `peer` shares.
    pub policy: Arc<dyn crate::Policy>,
    /// The peer asking.
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
