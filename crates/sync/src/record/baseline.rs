//! The persisted index as the scanner's baseline ([`IndexBaseline`]),
//! read once per scan or piece of one. Which entries it believes on disk
//! is `omirr_core::tree`'s rule: an entry hidden under a newer
//! non-directory ancestor is not.

use omirr_core::tree::Hiding;
use omirr_core::{Content, IndexView, RelPath, StatKey, Xattrs};
use omirr_fs::scan::{BaselineError, Known, ScanBaseline};
use omirr_index::{Index, IndexError};
use std::collections::{BTreeMap, HashMap, HashSet};

use super::piece::{Departed, Upper};

/// The persisted index as the scanner's baseline, read once per scan (or
/// piece of one): one range read per scanned top rather than two lookups
/// per file. It holds the stat keys and live entries below the tops in
/// memory for the scan's duration (with each live entry's content and
/// extended attributes: 8 bytes more per entry, allocating only for
/// an entry that has some), but for those in the cut directories
/// (other pieces'); paths elsewhere (the old name of something renamed in)
/// are looked up in the index, then among the paths earlier pieces found
/// vanished.
pub(super) struct IndexBaseline<'a> {
    index: &'a Index,
    tops: Vec<RelPath>,
    cut: Cut,
    pub(super) stats: HashMap<RelPath, StatKey>,
    live: BTreeMap<RelPath, (Content, Xattrs)>,
    departed: Option<&'a Departed>,
}

/// The index's rows at and below one top of a piece, in path order.
struct Rows {
    stats: Vec<(RelPath, StatKey)>,
    entries: Vec<(RelPath, omirr_core::Entry)>,
}

impl Rows {
    /// Everything at and below `top`, from the index.
    fn whole(index: &Index, top: &RelPath) -> Result<Rows, IndexError> {
        let own = index.stat(top)?.map(|k| (top.clone(), k));
        let stats = own.into_iter().chain(index.stats_below(top)?).collect();
        let own = index.entry(top)?.map(|e| (top.clone(), e));
        let entries = own.into_iter().chain(index.below(top)?).collect();
        Ok(Rows { stats, entries })
    }

    /// What a piece split around the `cut` subdirectories of `top` needs:
    /// `top` and its children from `upper`, and, from the index, whatever
    /// lies below a child that is not cut (a directory gone from disk, or
    /// no longer a directory), so that all of it is found vanished.
    ///
    /// Only below a child whose entry is a directory: entries below a
    /// child with a tombstone or no entry of its own (live there only for
    /// what lies below it) are not loaded, so if that child is gone from
    /// disk this piece does not find them vanished.
    fn upper(index: &Index, upper: &Upper, top: &RelPath, cut: &Cut) -> Result<Rows, IndexError> {
        let near = |p: &RelPath| p == top || p.parent().as_ref() == Some(top);
        let mut stats: BTreeMap<RelPath, StatKey> = BTreeMap::new();
        let mut entries: BTreeMap<RelPath, omirr_core::Entry> = BTreeMap::new();
        let own = upper.entries.get(top).map(|e| (top, e));
        for (p, e) in own
            .into_iter()
            .chain(upper.entries.range(top.below_path_range()))
        {
            if near(p) && !cut.holds(p) {
                entries.insert(p.clone(), e.clone());
            }
        }
        let own = upper.stats.get(top).map(|k| (top, k));
        for (p, k) in own
            .into_iter()
            .chain(upper.stats.range(top.below_path_range()))
        {
            if near(p) && !cut.holds(p) {
                stats.insert(p.clone(), *k);
            }
        }
        let gone_dirs: Vec<RelPath> = entries
            .iter()
            .filter(|(p, e)| *p != top && e.content.is_dir())
            .map(|(p, _)| p.clone())
            .collect();
        for dir in gone_dirs {
            entries.extend(index.below(&dir)?);
            stats.extend(index.stats_below(&dir)?);
        }
        Ok(Rows {
            stats: stats.into_iter().collect(),
            entries: entries.into_iter().collect(),
        })
    }
}

/// Subdirectories of the tops left to other pieces, by their bytes.
pub(super) struct Cut(HashSet<Vec<u8>>);

impl Cut {
    pub(super) fn new(dirs: &[RelPath]) -> Cut {
        Cut(dirs.iter().map(|d| d.as_bytes().to_vec()).collect())
    }

    /// Whether `path` is a cut directory or below one: a look at each of
    /// its ancestors' bytes, not at each cut directory.
    pub(super) fn holds(&self, path: &RelPath) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let bytes = path.as_bytes();
        let prefixes = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| &bytes[..i])
            .chain(std::iter::once(bytes));
        for prefix in prefixes {
            if self.0.contains(prefix) {
                return true;
            }
        }
        false
    }
}

impl<'a> IndexBaseline<'a> {
    pub(super) fn load(
        index: &'a Index,
        tops: &[RelPath],
        cut: &[RelPath],
        departed: Option<&'a Departed>,
        upper: Option<&Upper>,
    ) -> Result<IndexBaseline<'a>, IndexError> {
        let cut = Cut::new(cut);
        let mut stats = HashMap::new();
        let mut live = BTreeMap::new();
        for top in tops {
            let rows = match upper {
                Some(upper) => Rows::upper(index, upper, top, &cut)?,
                None => Rows::whole(index, top)?,
            };
            stats.extend(rows.stats);
            // Entries hidden under a newer non-directory ancestor (the old
            // children of a deleted or renamed directory, see
            // `omirr_core::tree`) are not expected on disk: left out, the
            // scan does not find each of them vanished, and observe does
            // not look at each. Path order puts ancestors first.
            let mut hiding = Hiding::default();
            for a in top.ancestors().filter(|a| !a.is_root()) {
                if let Some(e) = index.entry(&a)? {
                    hiding.note(&a, &e);
                }
            }
            for (p, e) in rows.entries {
                if hiding.allows(&p, &e) && e.is_live() {
                    live.insert(p, (e.content, e.meta.xattrs));
                }
            }
        }
        Ok(IndexBaseline {
            index,
            tops: tops.to_vec(),
            cut,
            stats,
            live,
            departed,
        })
    }

    fn preloaded(&self, path: &RelPath) -> bool {
        path.is_within_any(&self.tops) && !self.cut.holds(path)
    }
}

impl ScanBaseline for IndexBaseline<'_> {
    fn known(&self, path: &RelPath) -> Result<Option<Known>, BaselineError> {
        let (key, recorded) = if self.preloaded(path) {
            (self.stats.get(path).copied(), self.live.get(path).cloned())
        } else {
            // Found vanished by an earlier piece: the index has forgotten
            // its stat key (and may hold a tombstone, or an entry hidden
            // under one).
            if let Some(k) = self.departed.and_then(|d| d.known.get(path)) {
                return Ok(Some(k.clone()));
            }
            let recorded = self
                .index
                .entry(path)?
                .filter(|e| e.is_live())
                .map(|e| (e.content, e.meta.xattrs));
            (self.index.stat(path)?, recorded)
        };
        Ok(match (key, recorded) {
            // The entry's attributes (those this host mirrors) are the
            // disk's when the key was stored: a scan stores a key with the
            // change it found, or with none if the entry matched; the
            // applier, after writing the entry's. Those it does not mirror
            // the scan's comparison takes from the entry anyway
            // (`omirr_fs::owners::canonical`).
            (Some(key), Some((content, xattrs))) => Some(Known {
                key,
                content,
                xattrs: Some(xattrs),
                racy: false,
            }),
            _ => None,
        })
    }

    fn path_of_inode(&self, dev: u64, ino: u64) -> Result<Option<RelPath>, BaselineError> {
        if let Some(p) = self.index.path_of_inode(dev, ino)? {
            return Ok(Some(p));
        }
        Ok(self
            .departed
            .and_then(|d| d.inodes.get(&(dev, ino)))
            .cloned())
    }

    /// The index's names only: a name an earlier piece found vanished
    /// (`Departed`) no longer holds the inode.
    fn paths_of_inode(&self, dev: u64, ino: u64) -> Result<Vec<RelPath>, BaselineError> {
        let mut paths = self.index.paths_of_inode(dev, ino)?;
        if let Some(met) = self.departed.and_then(|d| d.linked.get(&(dev, ino))) {
            paths.extend(met.iter().map(|h| h.path.clone()));
        }
        Ok(paths)
    }

    /// What an earlier piece of this scan gave the path, else what the
    /// index holds.
    fn recorded_link(&self, path: &RelPath) -> Result<Option<Option<RelPath>>, BaselineError> {
        let earlier = self.departed.and_then(|d| {
            d.linked
                .values()
                .flatten()
                .find(|h| h.path == *path)
                .map(|h| h.link.clone())
        });
        if let Some(link) = earlier {
            return Ok(Some(link));
        }
        Ok(match self.index.entry(path)? {
            Some(e) if matches!(e.content, Content::File { .. }) => Some(e.meta.link.map(|l| *l)),
            _ => None,
        })
    }

    fn is_live(&self, path: &RelPath) -> Result<bool, BaselineError> {
        if self.preloaded(path) {
            return Ok(self.live.contains_key(path));
        }
        Ok(self.index.entry(path)?.is_some_and(|e| e.is_live()))
    }

    fn for_each_below(
        &self,
        dir: &RelPath,
        f: &mut dyn FnMut(&RelPath),
    ) -> Result<(), BaselineError> {
        if self.preloaded(dir) {
            // The cut directories' rows were never loaded.
            for p in self.live.range(dir.below_path_range()).map(|(p, _)| p) {
                f(p);
            }
        } else {
            for (p, e) in self.index.below(dir)? {
                if e.is_live() {
                    f(&p);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_core::tree::{present, visible};
    use omirr_core::{Change, Entry, HostId, Meta, Timestamp, Version};
    use proptest::prelude::*;

    /// The paths of the random trees: some sort between a directory and
    /// its children (`a-` lies between `a` and `a/b` in path order).
    const PATHS: &[&str] = &[
        "a", "a-", "a/b", "a/b-", "a/b/c", "a/b/c/d", "a/c", "a-/b", "b", "b/a", "b/a/a", "b/b",
    ];

    /// One change of a random tree: which path, what kind of entry (a
    /// directory, a file, a symlink or a tombstone), its timestamp and
    /// writer.
    type Spec = (usize, u8, u64, bool);

    fn change(&(i, kind, ts, first): &Spec) -> Change {
        let content = match kind {
            0 => Content::Dir,
            1 => Content::File {
                size: ts,
                hash: [7; 32],
            },
            2 => Content::Symlink {
                target: b"t".to_vec(),
            },
            _ => Content::Deleted,
        };
        Change {
            path: RelPath::new(PATHS[i].as_bytes()).expect("path"),
            entry: Entry {
                content,
                meta: Meta::default(),
                version: Version {
                    ts: Timestamp(ts),
                    host: HostId::new(if first { "alpha" } else { "beta" }),
                },
                base: None,
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The baseline believes on disk exactly the entries
        /// `omirr_core::tree` makes visible, each of which is present (its
        /// rows read whole, as for a live look or a piece without
        /// subdirectories; see `Rows::upper` for what a split piece leaves
        /// out).
        #[test]
        fn the_baseline_agrees_with_the_tree(
            spec in proptest::collection::vec((0..PATHS.len(), 0u8..4, 1u64..6, any::<bool>()), 0..40),
            top in 0..PATHS.len() + 1,
        ) {
            let state = tempfile::tempdir().expect("tempdir");
            let index = Index::open(state.path()).expect("index");
            for c in &spec {
                index.record(std::slice::from_ref(&change(c))).expect("record");
            }
            let top = PATHS.get(top).map_or(RelPath::root(), |t| RelPath::new(t.as_bytes()).expect("path"));
            let tops = [top.clone()];
            let baseline = IndexBaseline::load(&index, &tops, &[], None, None).expect("baseline");
            let mut below = Vec::new();
            baseline.for_each_below(&top, &mut |p| below.push(p.clone())).expect("below");
            let mut visible_below = Vec::new();
            for (p, _) in index.below(&top).expect("below") {
                let seen = visible(&index, &p).expect("visible").is_some();
                prop_assert_eq!(baseline.is_live(&p).expect("live"), seen, "{}", p);
                if seen {
                    prop_assert!(present(&index, &p).expect("present").is_some(), "{}", p);
                    visible_below.push(p);
                }
            }
            prop_assert_eq!(below, visible_below);
            if !top.is_root() {
                let seen = visible(&index, &top).expect("visible").is_some();
                prop_assert_eq!(baseline.is_live(&top).expect("live"), seen);
            }
        }
    }
}
