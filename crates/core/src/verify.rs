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

use crate::entry::{Content, Entry, Hash};
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
    pub top: RelPath,
    pub after: Option<RelPath>,
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
        (path == &self.top || path.is_below(&self.top))
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

/// A run of a span's entries, as one side holds it: how many, and a hash
/// of their [`fingerprint`]s in path order. `upto` is its last path
/// (inclusive); `None` for the last bucket of a span open at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub upto: Option<RelPath>,
    pub count: u64,
    pub hash: Hash,
}

/// What an entry contributes to a bucket's hash: every field of the path
/// and its entry, in a fixed encoding (not the wire's, which may change
/// with the protocol). A field added to [`Entry`] must be added here.
pub fn fingerprint(path: &RelPath, entry: &Entry) -> Hash {
    let mut h = Hasher::new();
    h.bytes(path.as_bytes());
    h.u64(entry.version.ts.0);
    h.bytes(entry.version.host.as_str().as_bytes());
    match &entry.content {
        Content::File { size, hash } => {
            h.u8(1);
            h.u64(*size);
            h.raw(hash);
        }
        Content::Dir => h.u8(2),
        Content::Symlink { target } => {
            h.u8(3);
            h.bytes(target);
        }
        Content::Deleted => h.u8(4),
        Content::Fifo => h.u8(5),
    }
    let m = &entry.meta;
    h.u64(u64::from(m.mode));
    h.u64(u64::from(m.uid));
    h.u64(u64::from(m.gid));
    h.u64(m.mtime_ns as u64);
    h.bytes(m.owner.as_bytes());
    h.bytes(m.group.as_bytes());
    h.u64(m.xattrs.len() as u64);
    for (name, value) in m.xattrs.iter() {
        h.bytes(name);
        h.bytes(value);
    }
    match &m.link {
        None => h.u8(0),
        Some(leader) => {
            h.u8(1);
            h.bytes(leader.as_bytes());
        }
    }
    // The version it replaced (see `crate::conflict`): it travels with
    // the entry, so hosts that agree hold the same one.
    match &entry.base {
        None => h.u8(0),
        Some(b) => {
            h.u8(1);
            h.u64(b.ts.0);
            h.bytes(b.host.as_str().as_bytes());
        }
    }
    h.finish()
}

/// A length-prefixed encoding into blake3, so that no two field
/// sequences hash alike.
struct Hasher(blake3::Hasher);

impl Hasher {
    fn new() -> Hasher {
        Hasher(blake3::Hasher::new())
    }
    fn raw(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    fn u8(&mut self, n: u8) {
        self.0.update(&[n]);
    }
    fn u64(&mut self, n: u64) {
        self.0.update(&n.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.update(b);
    }
    fn finish(&self) -> Hash {
        *self.0.finalize().as_bytes()
    }
}

/// A bucket being filled.
struct Filling {
    count: u64,
    hasher: blake3::Hasher,
}

impl Filling {
    fn new() -> Filling {
        Filling {
            count: 0,
            hasher: blake3::Hasher::new(),
        }
    }
    fn add(&mut self, path: &RelPath, entry: &Entry) {
        self.count += 1;
        self.hasher.update(&fingerprint(path, entry));
    }
    fn close(&mut self, upto: Option<RelPath>) -> Bucket {
        let done = std::mem::replace(self, Filling::new());
        Bucket {
            upto,
            count: done.count,
            hash: *done.hasher.finalize().as_bytes(),
        }
    }
}

/// The answer to a summary request: `span`'s entries of `source` in at
/// most [`FANOUT`] buckets of about equal count, in order, together
/// covering the span (the last one ends at the span's end). Two passes
/// over the span: one to count, one to hash.
pub fn summarize<S: EntrySource>(source: &S, span: &Span) -> Result<Vec<Bucket>, S::Error> {
    let mut total = 0u64;
    source.scan(span, &mut |_, _| {
        total += 1;
        true
    })?;
    let per = total.div_ceil(FANOUT as u64).max(1);
    let mut buckets = Vec::new();
    let mut filling = Filling::new();
    let mut seen = 0u64;
    source.scan(span, &mut |p, e| {
        filling.add(p, e);
        seen += 1;
        if filling.count == per && seen < total {
            buckets.push(filling.close(Some(p.clone())));
        }
        true
    })?;
    buckets.push(filling.close(span.upto.clone()));
    Ok(buckets)
}

/// `span`'s entries of `source` in buckets ending at the given bounds
/// (the peer's): what the asking host compares the peer's summary with.
/// One pass. `bounds` must be in order; the last must be `span.upto`.
pub fn bucket_with<S: EntrySource>(
    source: &S,
    span: &Span,
    bounds: &[Option<RelPath>],
) -> Result<Vec<Bucket>, S::Error> {
    let mut buckets = Vec::with_capacity(bounds.len());
    let mut filling = Filling::new();
    let mut i = 0;
    source.scan(span, &mut |p, e| {
        // Close every bucket that ends before this path.
        while let Some(Some(b)) = bounds.get(i) {
            if p <= b {
                break;
            }
            buckets.push(filling.close(Some(b.clone())));
            i += 1;
        }
        filling.add(p, e);
        true
    })?;
    while i < bounds.len() {
        buckets.push(filling.close(bounds[i].clone()));
        i += 1;
    }
    Ok(buckets)
}

/// The answer to an entries request: `span`'s entries of `source` in
/// path order, at most [`MAX_ENTRIES_PAGE`] of them and at most
/// `max_bytes` of paths and symlink targets (so that a page fits a
/// frame), and whether that is all of them.
pub fn entries_page<S: EntrySource>(
    source: &S,
    span: &Span,
    max_bytes: usize,
) -> Result<(Vec<crate::Change>, bool), S::Error> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut complete = true;
    source.scan(span, &mut |p, e| {
        let size = p.as_bytes().len()
            + match &e.content {
                Content::Symlink { target } => target.len(),
                _ => 0,
            }
            + e.version.host.as_str().len()
            + e.base.as_ref().map_or(0, |b| b.host.as_str().len() + 16)
            + 128;
        if out.len() == MAX_ENTRIES_PAGE || (!out.is_empty() && bytes + size > max_bytes) {
            complete = false;
            return false;
        }
        bytes += size;
        out.push(crate::Change {
            path: p.clone(),
            entry: e.clone(),
        });
        true
    })?;
    Ok((out, complete))
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
    pub path: RelPath,
    pub ours: Option<Entry>,
    pub theirs: Option<Entry>,
}

/// A peer's answer that cannot be right, or the local index failing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError<E> {
    #[error("the peer's answer is malformed: {0}")]
    Malformed(String),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Meta;
    use crate::mem::MemIndex;
    use crate::version::{HostId, Timestamp, Version};
    use crate::Change;

    fn p(s: &str) -> RelPath {
        RelPath::new(s.as_bytes().to_vec()).expect("path")
    }

    fn file(ts: u64, byte: u8) -> Entry {
        Entry {
            content: Content::File {
                size: 1,
                hash: [byte; 32],
            },
            meta: Meta::default(),
            version: Version {
                ts: Timestamp(ts),
                host: HostId::new("a"),
            },
            base: None,
        }
    }

    /// A tree of `dirs` directories of `files` files each under `top`.
    fn tree(top: &str, dirs: usize, files: usize) -> MemIndex {
        let mut m = MemIndex::default();
        for d in 0..dirs {
            for f in 0..files {
                m.record(Change {
                    path: p(&format!("{top}/d{d:03}/f{f:03}")),
                    entry: file(1, 1),
                });
            }
        }
        m
    }

    /// Runs a comparison of `tops` between `ours` and `theirs` as the
    /// daemon does, the peer's side answered by the same functions.
    fn compare(ours: &MemIndex, theirs: &MemIndex, tops: &[&str]) -> Verifier {
        let mut v = Verifier::new(tops.iter().map(|t| p(t)));
        while let Some(ask) = v.next_ask() {
            assert!(v.asked() < 10_000, "runaway");
            match ask {
                Ask::Summary(span) => {
                    let Ok(buckets) = summarize(theirs, &span);
                    v.on_summary(ours, &span, &buckets).expect("summary");
                }
                Ask::Entries(span) => {
                    let Ok((page, complete)) = entries_page(theirs, &span, 1 << 20);
                    v.on_entries(ours, &span, page, complete).expect("entries");
                }
            }
        }
        v
    }

    #[test]
    fn equal_trees_cost_one_question_per_top() {
        let a = tree("srv", 50, 40);
        let v = compare(&a, &a.clone(), &["srv", "etc"]);
        assert_eq!(v.found(), 0);
        assert_eq!(v.asked(), 2);
    }

    #[test]
    fn one_changed_path_is_found_in_few_questions() {
        let a = tree("srv", 100, 100); // 10,000 entries
        for (i, changed) in ["srv/d000/f000", "srv/d057/f031", "srv/d099/f099"]
            .iter()
            .enumerate()
        {
            let mut b = a.clone();
            b.record(Change {
                path: p(changed),
                entry: file(2, 9),
            });
            let v = compare(&a, &b, &["srv"]);
            assert_eq!(v.found(), 1, "{changed}");
            let d = &v.differences()[0];
            assert_eq!(d.path, p(changed));
            assert_eq!(d.ours, Some(file(1, 1)));
            assert_eq!(d.theirs, Some(file(2, 9)));
            // 10,000 / 16 / 16 = 39 <= LEAF: two summaries, one page.
            assert!(v.asked() <= 4, "case {i}: {} questions", v.asked());
        }
    }

    #[test]
    fn paths_on_one_side_only_are_listed_with_the_side() {
        let a = tree("srv", 3, 3);
        let mut b = a.clone();
        b.record(Change {
            path: p("srv/d001/new"),
            entry: file(5, 5),
        });
        let mut a2 = a.clone();
        a2.record(Change {
            path: p("srv/zzz"),
            entry: file(6, 6),
        });
        let v = compare(&a2, &b, &["srv"]);
        let got: Vec<(String, bool, bool)> = v
            .differences()
            .iter()
            .map(|d| (d.path.to_string(), d.ours.is_some(), d.theirs.is_some()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("srv/d001/new".to_string(), false, true),
                ("srv/zzz".to_string(), true, false)
            ]
        );
    }

    #[test]
    fn a_tree_missing_on_one_side_is_listed_whole_both_ways() {
        let a = tree("srv", 20, 20);
        let empty = MemIndex::default();
        let v = compare(&a, &empty, &["srv"]);
        assert_eq!(v.found(), 400);
        assert!(v.differences().iter().all(|d| d.theirs.is_none()));
        // The other way the peer's entries come in pages.
        let v = compare(&empty, &a, &["srv"]);
        assert_eq!(v.found(), 400);
        assert!(v.differences().iter().all(|d| d.ours.is_none()));
    }

    #[test]
    fn paths_outside_the_top_are_not_compared() {
        let a = tree("srv", 2, 2);
        let mut b = a.clone();
        // Beside the top, sorting between `srv` and `srv/...`.
        b.record(Change {
            path: p("srv-old/x"),
            entry: file(1, 1),
        });
        b.record(Change {
            path: p("srv.bak"),
            entry: file(1, 1),
        });
        assert_eq!(compare(&a, &b, &["srv"]).found(), 0);
        // The top itself is.
        b.record(Change {
            path: p("srv"),
            entry: file(1, 1),
        });
        assert_eq!(compare(&a, &b, &["srv"]).found(), 1);
    }

    #[test]
    fn long_pages_are_asked_for_in_parts() {
        let a = tree("srv", 3, 10);
        let empty = MemIndex::default();
        let span = Span::whole(p("srv"));
        let Ok((page, complete)) = entries_page(&a, &span, 600);
        assert!(!complete);
        assert!(page.len() < 30 && !page.is_empty());
        let mut v = Verifier::new([]);
        v.on_entries(&empty, &span, page.clone(), false)
            .expect("page");
        assert_eq!(v.found(), page.len() as u64);
        let Some(Ask::Entries(rest)) = v.next_ask() else {
            panic!("no question for the rest");
        };
        assert_eq!(rest.after.as_ref(), page.last().map(|c| &c.path));
    }

    #[test]
    fn malformed_answers_are_refused() {
        let a = tree("srv", 2, 2);
        let span = Span::whole(p("srv"));
        let bucket = |upto: Option<&str>| Bucket {
            upto: upto.map(p),
            count: 1,
            hash: [0; 32],
        };
        for bad in [
            vec![],
            vec![bucket(Some("srv/a"))],
            vec![bucket(Some("etc/a")), bucket(None)],
            vec![bucket(Some("srv/b")), bucket(Some("srv/a")), bucket(None)],
            vec![bucket(None), bucket(None)],
            vec![bucket(None); FANOUT + 1],
        ] {
            let mut v = Verifier::new([]);
            assert!(
                matches!(
                    v.on_summary(&a, &span, &bad),
                    Err(VerifyError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        let change = |s: &str| Change {
            path: p(s),
            entry: file(1, 1),
        };
        for (bad, complete) in [
            (vec![change("etc/x")], true),
            (vec![change("srv/b"), change("srv/a")], true),
            (vec![change("srv/a"), change("srv/a")], true),
            (vec![], false),
        ] {
            let mut v = Verifier::new([]);
            assert!(
                matches!(
                    v.on_entries(&a, &span, bad.clone(), complete),
                    Err(VerifyError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_summary_that_does_not_split_ends_in_pages_not_a_loop() {
        let a = tree("srv", 10, 10);
        let b = tree("srv", 10, 11);
        let mut v = Verifier::new([p("srv")]);
        while let Some(ask) = v.next_ask() {
            assert!(v.asked() < 100, "runaway");
            match ask {
                Ask::Summary(span) => {
                    // A lazy peer: one bucket for the whole span.
                    let Ok(mut one) = bucket_with(&b, &span, std::slice::from_ref(&span.upto));
                    one.truncate(1);
                    v.on_summary(&a, &span, &one).expect("summary");
                }
                Ask::Entries(span) => {
                    let Ok((page, complete)) = entries_page(&b, &span, 1 << 20);
                    v.on_entries(&a, &span, page, complete).expect("entries");
                }
            }
        }
        assert_eq!(v.found(), 10);
    }

    #[test]
    fn span_bounds_agree_with_contains() {
        let mut m = tree("srv", 3, 3);
        for extra in ["srv", "srv-x", "srv.y", "srw", "sr"] {
            m.record(Change {
                path: p(extra),
                entry: file(1, 1),
            });
        }
        let keys: Vec<RelPath> = m.iter().map(|(k, _)| k.clone()).collect();
        let mut bounds: Vec<Option<RelPath>> = keys.iter().cloned().map(Some).collect();
        bounds.push(None);
        for after in &bounds {
            for upto in &bounds {
                let span = Span {
                    top: p("srv"),
                    after: after.clone(),
                    upto: upto.clone(),
                };
                let mut by_bounds: Vec<&RelPath> = Vec::new();
                if span.contains(&span.top) && keys.contains(&span.top) {
                    by_bounds.push(&span.top);
                }
                if let Some(b) = span.below_bounds() {
                    let range = (
                        b.0.as_ref().map(|v| v.as_slice()),
                        b.1.as_ref().map(|v| v.as_slice()),
                    );
                    by_bounds.extend(
                        keys.iter()
                            .filter(|k| std::ops::RangeBounds::contains(&range, &k.as_bytes())),
                    );
                }
                let by_contains: Vec<&RelPath> = keys.iter().filter(|k| span.contains(k)).collect();
                assert_eq!(by_bounds, by_contains, "{span:?}");
            }
        }
    }

    #[test]
    fn fingerprints_see_every_field() {
        let path = p("a");
        let base = file(1, 1);
        let fp = fingerprint(&path, &base);
        let mut variants = vec![file(2, 1), file(1, 2)];
        let mut e = base.clone();
        e.version.host = HostId::new("b");
        variants.push(e);
        let mut e = base.clone();
        e.base = Some(file(0, 1).version);
        variants.push(e);
        let mut e = base.clone();
        e.meta.xattrs =
            crate::Xattrs::new(vec![(b"user.a".to_vec(), b"1".to_vec())]).expect("xattrs");
        variants.push(e);
        let mut e = base.clone();
        e.meta.link = Some(Box::new(p("leader")));
        variants.push(e);
        for f in [
            |m: &mut Meta| m.mode = 0o600,
            |m: &mut Meta| m.uid = 7,
            |m: &mut Meta| m.gid = 7,
            |m: &mut Meta| m.mtime_ns = 7,
            |m: &mut Meta| m.owner = crate::Name::new(b"x").expect("name"),
            |m: &mut Meta| m.group = crate::Name::new(b"x").expect("name"),
        ] {
            let mut e = base.clone();
            f(&mut e.meta);
            variants.push(e);
        }
        for content in [
            Content::Dir,
            Content::Deleted,
            Content::Fifo,
            Content::Symlink {
                target: b"t".to_vec(),
            },
        ] {
            variants.push(Entry {
                content,
                ..base.clone()
            });
        }
        for v in &variants {
            assert_ne!(fingerprint(&path, v), fp, "{v:?}");
        }
        assert_ne!(fingerprint(&p("b"), &base), fp);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever two indexes hold, the comparison finds exactly the
        /// paths at or below the top whose entries differ.
        #[test]
        fn finds_exactly_the_paths_that_differ(
            shared in proptest::collection::vec((0u16..400, 0u8..3), 0..300),
            only_a in proptest::collection::vec((0u16..400, 0u8..3), 0..20),
            only_b in proptest::collection::vec((0u16..400, 0u8..3), 0..20),
        ) {
            let name = |n: u16| {
                // Nested and beside the top, so spans cut across levels.
                let dir = ["t", "t/a", "t/a/b", "t-x", "t/c"][usize::from(n % 5)];
                p(&format!("{dir}/f{n}"))
            };
            let entry = |k: u8| match k {
                0 => file(1, 1),
                1 => file(2, 2),
                _ => Entry { content: Content::Deleted, ..file(3, 0) },
            };
            let (mut a, mut b) = (MemIndex::default(), MemIndex::default());
            for (n, k) in &shared {
                for m in [&mut a, &mut b] {
                    m.record(Change { path: name(*n), entry: entry(*k) });
                }
            }
            for (n, k) in &only_a {
                a.record(Change { path: name(*n), entry: entry(*k) });
            }
            for (n, k) in &only_b {
                b.record(Change { path: name(*n), entry: entry(*k) });
            }
            let top = p("t");
            let direct: Vec<RelPath> = {
                let mut paths: Vec<RelPath> = a.iter().chain(b.iter()).map(|(k, _)| k.clone()).collect();
                paths.sort();
                paths.dedup();
                paths.retain(|k| (k == &top || k.is_below(&top)) && {
                    use crate::tree::IndexView;
                    let (Ok(x), Ok(y)) = (a.entry(k), b.entry(k));
                    x != y
                });
                paths
            };
            let v = compare(&a, &b, &["t"]);
            let mut found: Vec<RelPath> = v.differences().iter().map(|d| d.path.clone()).collect();
            found.sort();
            proptest::prop_assert_eq!(found, direct);
        }
    }
}
