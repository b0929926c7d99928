//! Comparing two hosts' indexes without sending either: the rules of
//! `omirrd verify`, free of I/O.
//!
//! Two hosts hold "the same tree" for a mirrored top when their indexes
//! hold the same entries at and below it: the same paths, each with the
//! same version, content and metadata, tombstones included (the tree on
//! disk is a function of the index, see [`crate::tree`]). To find where
//! they differ without shipping whole indexes, the asking host compares
//! *summaries* of key ranges (range-based set reconciliation, a Merkle
//! tree over the sorted paths):
//!
//! - a [`Span`] is a mirrored top and a range of paths `(after, upto]` at
//!   or below it, in byte order (the index's key order);
//! - the answering host splits its entries of a span into at most
//!   [`FANOUT`] [`Bucket`]s of about equal count, each named by its last
//!   path, and sends the count and a hash of each ([`summarize`]);
//! - the asking host hashes its own entries with the same boundaries and
//!   descends only into the buckets that differ ([`Verifier`]): a bucket
//!   the peer holds few entries of is fetched whole ([`entries_page`]) and
//!   compared path by path.
//!
//! Equal trees cost one round trip per top; one differing path among `n`
//! costs about `log_FANOUT(n / LEAF)` summaries and one page of entries.
//! A peer's answers are checked (boundaries in order and inside the span,
//! sizes within bounds), and a malformed one ends the comparison with a
//! [`VerifyError`] naming what was wrong, never a loop or a panic.

mod summary;
#[cfg(test)]
mod tests;

pub use summary::{bucket_with, entries_page, fingerprint, summarize, Bucket};

use crate::entry::Entry;
use crate::path::RelPath;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::ops::Bound;

/// The most buckets one summary splits a span into.
pub const FANOUT: usize = 16;

/// A bucket the peer holds at most this many entries of is fetched whole
/// instead of summarised again.
pub const LEAF: u64 = 64;

/// The most entries one page of a span's entries carries.
pub const MAX_ENTRIES_PAGE: usize = 1024;

/// The most differences a [`Verifier`] keeps (it counts them all).
pub const MAX_DIFFERENCES: usize = 10_000;

/// The most questions one comparison asks: far more than any honest
/// peer's answers lead to (a tree of a billion entries takes a few
/// thousand), so that a peer whose summaries never converge cannot keep
/// the comparison going.
pub const MAX_ASKS: u64 = 1_000_000;

/// A range of keys of a byte-ordered map: lower and upper bound.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// A mirrored top and a range `(after, upto]` of paths at or below it, in
/// byte order. `None` bounds are open.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Span {
    /// The mirrored top the span lies in: no path outside its subtree is
    /// in the span.
    pub top: RelPath,
    /// The span begins after this path (exclusive); `None`: at the top.
    pub after: Option<RelPath>,
    /// The span ends at this path (inclusive); `None`: at the end of the
    /// top's subtree.
    pub upto: Option<RelPath>,
}

impl Span {
    /// All of `top`: the top itself and everything below it.
    pub fn whole(top: RelPath) -> Span {
        Span {
            top,
            after: None,
            upto: None,
        }
    }

    /// Whether `path` is in the span.
    pub fn contains(&self, path: &RelPath) -> bool {
        path.is_within(&self.top)
            && self.after.as_ref().is_none_or(|a| path > a)
            && self.upto.as_ref().is_none_or(|u| path <= u)
    }

    /// The part of the span from `after` (exclusive) on.
    fn rest_after(&self, after: RelPath) -> Span {
        Span {
            top: self.top.clone(),
            after: Some(after),
            upto: self.upto.clone(),
        }
    }

    /// The key bounds of the span's paths strictly below its top, for a
    /// byte-ordered map, or `None` if there are none (a range whose
    /// start follows its end, which a map's range refuses). The top
    /// itself, if [`Span::contains`] it, sorts before all of them.
    pub fn below_bounds(&self) -> Option<KeyRange> {
        let (lo, hi) = self.top.below_range();
        let lo = match &self.after {
            Some(a) if bound_below(&lo, a.as_bytes()) => Bound::Excluded(a.as_bytes().to_vec()),
            _ => lo,
        };
        let hi = match &self.upto {
            Some(u) if bound_above(&hi, u.as_bytes()) => Bound::Included(u.as_bytes().to_vec()),
            _ => hi,
        };
        let empty = match (&lo, &hi) {
            (Bound::Included(l), Bound::Included(h)) => l > h,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(h) | Bound::Included(h)) => {
                l >= h
            }
            _ => false,
        };
        (!empty).then_some((lo, hi))
    }
}

/// Whether the lower bound `lo` admits keys at or below `key`, so that
/// "after `key`" is the tighter bound.
fn bound_below(lo: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match lo {
        Bound::Included(l) => l.as_slice() <= key,
        Bound::Excluded(l) => l.as_slice() <= key,
        Bound::Unbounded => true,
    }
}

/// Whether the upper bound `hi` admits keys above `key`, so that "up to
/// `key`" is the tighter bound.
fn bound_above(hi: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match hi {
        Bound::Included(h) => h.as_slice() > key,
        Bound::Excluded(h) => h.as_slice() > key,
        Bound::Unbounded => true,
    }
}

/// A host's entries in a span, in path order: what a summary or a page is
/// computed from. The index implements it over a read transaction; the
/// daemon's adapter also leaves out what the peer may not see.
pub trait EntrySource {
    /// Why a scan failed ([`Infallible`](std::convert::Infallible) for an
    /// index in memory).
    type Error;

    /// Calls `each` with every entry of `span`, in path order, until it
    /// returns `false`.
    fn scan(
        &self,
        span: &Span,
        each: &mut dyn FnMut(&RelPath, &Entry) -> bool,
    ) -> Result<(), Self::Error>;
}

impl EntrySource for crate::mem::MemIndex {
    type Error = std::convert::Infallible;

    fn scan(
        &self,
        span: &Span,
        each: &mut dyn FnMut(&RelPath, &Entry) -> bool,
    ) -> Result<(), Self::Error> {
        for (p, e) in self.iter() {
            if span.contains(p) && !each(p, e) {
                break;
            }
        }
        Ok(())
    }
}

/// What the asking host asks the peer next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// "Summarise your entries of this span" ([`summarize`]).
    Summary(Span),
    /// "Send me your entries of this span" ([`entries_page`]).
    Entries(Span),
}

/// A path whose entry differs between the two hosts: `ours` on the asking
/// host, `theirs` on the peer (`None`: it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The path whose entries differ.
    pub path: RelPath,
    /// The asking host's entry; `None` if it has none.
    pub ours: Option<Entry>,
    /// The peer's entry; `None` if it has none.
    pub theirs: Option<Entry>,
}

/// A peer's answer that cannot be right, or the local index failing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError<E> {
    /// The peer's answer breaks the rules ([`check_summary`],
    /// [`check_entries`]), or its summaries do not converge within
    /// [`MAX_ASKS`] questions. The text says what was wrong.
    #[error("the peer's answer is malformed: {0}")]
    Malformed(String),
    /// Reading this host's own entries failed.
    #[error("reading the local index: {0}")]
    Local(E),
}

/// The asking side of a comparison with one peer, as a state machine:
/// [`Verifier::next_ask`] says what to ask, and the peer's answers go in
/// with the local index to compare them with ([`Verifier::on_summary`],
/// [`Verifier::on_entries`]). Done when nothing is left to ask.
#[derive(Debug)]
pub struct Verifier {
    queue: VecDeque<Ask>,
    differences: Vec<Difference>,
    found: u64,
    asked: u64,
}

impl Verifier {
    /// A comparison of each of `tops` whole.
    pub fn new(tops: impl IntoIterator<Item = RelPath>) -> Verifier {
        Verifier {
            queue: tops
                .into_iter()
                .map(|t| Ask::Summary(Span::whole(t)))
                .collect(),
            differences: Vec::new(),
            found: 0,
            asked: 0,
        }
    }

    /// The next question for the peer, or `None` when the comparison is
    /// over. Each is to be answered before the next is asked.
    pub fn next_ask(&mut self) -> Option<Ask> {
        let ask = self.queue.pop_front()?;
        self.asked += 1;
        Some(ask)
    }

    /// How many questions were asked.
    pub fn asked(&self) -> u64 {
        self.asked
    }

    /// How many paths differ (all of them, also those past
    /// [`MAX_DIFFERENCES`]).
    pub fn found(&self) -> u64 {
        self.found
    }

    /// The differences found, in the order found (at most
    /// [`MAX_DIFFERENCES`]).
    pub fn differences(&self) -> &[Difference] {
        &self.differences
    }

    fn differ(&mut self, path: RelPath, ours: Option<Entry>, theirs: Option<Entry>) {
        self.found += 1;
        if self.differences.len() < MAX_DIFFERENCES {
            self.differences.push(Difference { path, ours, theirs });
        }
    }

    /// The peer's summary of `span`: the buckets that differ from ours are
    /// asked about again, or listed.
    pub fn on_summary<S: EntrySource>(
        &mut self,
        local: &S,
        span: &Span,
        theirs: &[Bucket],
    ) -> Result<(), VerifyError<S::Error>> {
        check_summary(span, theirs).map_err(VerifyError::Malformed)?;
        if self.asked > MAX_ASKS {
            return Err(VerifyError::Malformed(format!(
                "more than {MAX_ASKS} questions: the peer's summaries do not converge"
            )));
        }
        let bounds: Vec<Option<RelPath>> = theirs.iter().map(|b| b.upto.clone()).collect();
        let ours = bucket_with(local, span, &bounds).map_err(VerifyError::Local)?;
        let mut after = span.after.clone();
        for (mine, peer) in ours.iter().zip(theirs) {
            let sub = Span {
                top: span.top.clone(),
                after: after.clone(),
                upto: peer.upto.clone(),
            };
            after = peer.upto.clone();
            if mine.count == peer.count && mine.hash == peer.hash {
                continue;
            }
            if peer.count == 0 {
                // Nothing there: every entry of ours is a difference.
                let mut only_here = Vec::new();
                local
                    .scan(&sub, &mut |p, e| {
                        only_here.push((p.clone(), e.clone()));
                        true
                    })
                    .map_err(VerifyError::Local)?;
                for (p, e) in only_here {
                    self.differ(p, Some(e), None);
                }
            } else if peer.count <= LEAF || (theirs.len() == 1 && sub == *span) {
                // Few entries there, or a summary that did not split the
                // span (asking again would get the same answer): fetch them.
                self.queue.push_back(Ask::Entries(sub));
            } else {
                self.queue.push_back(Ask::Summary(sub));
            }
        }
        Ok(())
    }

    /// A page of the peer's entries of `span`; `complete`: that is all of
    /// them, else the rest is asked for.
    pub fn on_entries<S: EntrySource>(
        &mut self,
        local: &S,
        span: &Span,
        theirs: Vec<crate::Change>,
        complete: bool,
    ) -> Result<(), VerifyError<S::Error>> {
        check_entries(span, &theirs, complete).map_err(VerifyError::Malformed)?;
        // The part of the span the page covers.
        let covered = match (complete, theirs.last()) {
            (false, Some(last)) => Span {
                upto: Some(last.path.clone()),
                ..span.clone()
            },
            _ => span.clone(),
        };
        if !complete {
            if let Some(last) = theirs.last() {
                self.queue
                    .push_back(Ask::Entries(span.rest_after(last.path.clone())));
            }
        }
        let mut ours = Vec::new();
        local
            .scan(&covered, &mut |p, e| {
                ours.push((p.clone(), e.clone()));
                true
            })
            .map_err(VerifyError::Local)?;
        let mut ours = ours.into_iter().peekable();
        let mut theirs = theirs.into_iter().peekable();
        loop {
            let order = match (ours.peek(), theirs.peek()) {
                (Some(o), Some(t)) => o.0.cmp(&t.path),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => break,
            };
            match order {
                std::cmp::Ordering::Less => {
                    if let Some((p, e)) = ours.next() {
                        self.differ(p, Some(e), None);
                    }
                }
                std::cmp::Ordering::Greater => {
                    if let Some(t) = theirs.next() {
                        self.differ(t.path, None, Some(t.entry));
                    }
                }
                std::cmp::Ordering::Equal => {
                    if let (Some((p, e)), Some(t)) = (ours.next(), theirs.next()) {
                        if e != t.entry {
                            self.differ(p, Some(e), Some(t.entry));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A summary must cover the span: 1 to [`FANOUT`] buckets whose ends are
/// in the span, in strictly increasing order, the last one the span's
/// end.
pub fn check_summary(span: &Span, buckets: &[Bucket]) -> Result<(), String> {
    if buckets.is_empty() || buckets.len() > FANOUT {
        return Err(format!(
            "a summary of {} buckets (1 to {FANOUT} expected)",
            buckets.len()
        ));
    }
    let (last, inner) = buckets.split_last().ok_or("no bucket")?;
    if last.upto != span.upto {
        return Err("the last bucket does not end where the span does".into());
    }
    let mut prev = span.after.clone();
    for b in inner {
        let Some(upto) = &b.upto else {
            return Err("a bucket before the last one is open at the end".into());
        };
        if !span.contains(upto) || prev.as_ref().is_some_and(|p| upto <= p) {
            return Err(format!(
                "bucket boundary {upto} is out of order or outside the span"
            ));
        }
        prev = Some(upto.clone());
    }
    Ok(())
}

/// A page must hold paths of the span, in strictly increasing order, at
/// most [`MAX_ENTRIES_PAGE`], and at least one if it is not the last.
pub fn check_entries(span: &Span, page: &[crate::Change], complete: bool) -> Result<(), String> {
    if page.len() > MAX_ENTRIES_PAGE {
        return Err(format!(
            "a page of {} entries (at most {MAX_ENTRIES_PAGE})",
            page.len()
        ));
    }
    if !complete && page.is_empty() {
        return Err("an empty page that says more follows".into());
    }
    let mut prev: Option<&RelPath> = None;
    for c in page {
        if !span.contains(&c.path) || prev.is_some_and(|p| &c.path <= p) {
            return Err(format!(
                "entry {} is out of order or outside the span",
                c.path
            ));
        }
        prev = Some(&c.path);
    }
    Ok(())
}
