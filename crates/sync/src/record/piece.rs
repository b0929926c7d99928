//! What one piece of the start-up scan carries beyond a live look: where
//! it is cut ([`SPLIT_DEPTH`]), the index's rows of the upper levels read
//! once for all pieces ([`Upper`]), and what earlier pieces found gone
//! ([`Departed`]), so that a rename across pieces is still recognised.

use omirr_core::{IndexView, RelPath, StatKey, Timestamp};
use omirr_fs::scan::{self, Known};
use omirr_index::{Index, IndexError};
use std::collections::{BTreeMap, HashMap};

/// Directories at most this many levels below a top are scanned (and
/// recorded) without their subdirectories; each of their subdirectories is
/// a piece of its own, whole if deeper. Two levels split a tree of the
/// shape `top/project/part/...` into one piece per `part`.
pub const SPLIT_DEPTH: usize = 2;

/// At most this many paths found vanished are remembered for the later
/// pieces of a scan (to recognise a rename out of an earlier piece); past
/// it a renamed file is read again, which is slower but no less right.
const DEPARTED_MAX: usize = 100_000;

/// At most this many index rows for the upper levels of the tops (see
/// [`Upper`]) are held for the whole scan.
const UPPER_MAX: usize = 100_000;

/// One piece of a start-up scan, beyond what a live scan has.
pub(super) struct Piece<'p> {
    pub(super) floor: Timestamp,
    /// Directories below the piece's top that are pieces of their own:
    /// neither scanned nor judged here.
    pub(super) cut: &'p [RelPath],
    pub(super) departed: &'p Departed,
    pub(super) upper: Option<&'p Upper>,
}

/// The index's rows for the paths at most [`SPLIT_DEPTH`] levels below
/// the tops: all that the pieces split around their subdirectories need,
/// read in one pass rather than a pass over the whole subtree per such
/// piece.
#[derive(Default)]
pub(super) struct Upper {
    pub(super) stats: BTreeMap<RelPath, StatKey>,
    pub(super) entries: BTreeMap<RelPath, omirr_core::Entry>,
}

impl Upper {
    /// `None` if the tops hold more than [`UPPER_MAX`] such rows (a tree
    /// of millions of entries but two levels deep): the pieces then read
    /// their own rows, rather than all of them being held for the scan.
    pub(super) fn load(index: &Index, tops: &[RelPath]) -> Result<Option<Upper>, IndexError> {
        let mut upper = Upper::default();
        // One read transaction, one pass over the rows below each top,
        // keeping only the shallow ones.
        let view = index.reader()?;
        for top in scan::normalise_tops(tops) {
            let shallow = |p: &RelPath| depth_below(p, &top) <= SPLIT_DEPTH;
            upper
                .entries
                .extend(view.entry(&top)?.map(|e| (top.clone(), e)));
            upper
                .stats
                .extend(view.stat(&top)?.map(|k| (top.clone(), k)));
            view.for_each_below(&top, |p, e, stat| {
                if shallow(&p) {
                    if let Some(k) = stat {
                        upper.stats.insert(p.clone(), k);
                    }
                    upper.entries.insert(p, e);
                }
            })?;
            upper.stats.extend(
                view.loose_stats_below(&top)?
                    .into_iter()
                    .filter(|(p, _)| shallow(p)),
            );
            if upper.entries.len() > UPPER_MAX {
                return Ok(None);
            }
        }
        Ok(Some(upper))
    }
}

/// How many levels `path` lies below `top` (0 for the top itself); only
/// meaningful for a path at or below it.
fn depth_below(path: &RelPath, top: &RelPath) -> usize {
    path.components().count() - top.components().count()
}

/// What earlier pieces of a scan knew of the paths they found vanished:
/// the index no longer does once they are recorded, and a later piece may
/// find the same inode under its new name.
#[derive(Default)]
pub(super) struct Departed {
    pub(super) known: HashMap<RelPath, Known>,
    pub(super) inodes: HashMap<(u64, u64), RelPath>,
    /// The names of hard-linked files earlier pieces found, by inode,
    /// with the name each was given to link to: a later piece's names of
    /// the same inode follow the same leader (the index has not recorded
    /// them yet).
    pub(super) linked: HashMap<(u64, u64), Vec<scan::HardLink>>,
}

impl Departed {
    pub(super) fn remember_links(&mut self, found: &[scan::HardLink]) {
        for h in found {
            if self.linked.len() >= DEPARTED_MAX {
                return;
            }
            self.linked
                .entry((h.dev, h.ino))
                .or_default()
                .push(h.clone());
        }
    }

    pub(super) fn remember(&mut self, path: &RelPath, known: Known) {
        if self.known.len() >= DEPARTED_MAX {
            return;
        }
        self.inodes
            .insert((known.key.dev, known.key.ino), path.clone());
        self.known.insert(path.clone(), known);
    }
}
