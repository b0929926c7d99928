//! The answering side of a comparison, and what both sides hash: an
//! entry's [`fingerprint`], [`Bucket`]s of a span's entries
//! ([`summarize`] with its own boundaries, [`bucket_with`] with the
//! peer's), and pages of entries ([`entries_page`]).

use super::{EntrySource, Span, FANOUT, MAX_ENTRIES_PAGE};
use crate::entry::{Content, Entry, Hash};
use crate::path::RelPath;
use serde::{Deserialize, Serialize};

/// A run of a span's entries, as one side holds it: how many, and a hash
/// of their [`fingerprint`]s in path order. `upto` is its last path
/// (inclusive); `None` for the last bucket of a span open at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The bucket's last path (inclusive); `None` for the last bucket of a
    /// span open at the end.
    pub upto: Option<RelPath>,
    /// How many entries the bucket holds.
    pub count: u64,
    /// The BLAKE3 hash of the entries' [`fingerprint`]s, in path order.
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
