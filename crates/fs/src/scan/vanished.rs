//! What went away: the paths the baseline knew under the tops that the
//! walk did not find, each with the ctime of its nearest directory still
//! on disk as the witness of when; never at or below a path the scan
//! could not establish or was told to leave alone.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

use omirr_core::{RelPath, Timestamp};

use super::report::{ScanError, Vanished};
use super::walk::Walker;

impl Walker<'_> {
    /// The ctime of the nearest ancestor of `path` seen by the walk.
    fn witness(&self, path: &RelPath) -> Timestamp {
        path.ancestors()
            .find_map(|a| self.dir_ctimes.get(&a).copied())
            .unwrap_or_default()
    }

    /// As [`Walker::witness`], asking the disk about ancestors the walk did
    /// not see.
    pub(super) fn witness_on_disk(&self, path: &RelPath) -> Timestamp {
        for a in path.ancestors() {
            if let Some(t) = self.dir_ctimes.get(&a) {
                return *t;
            }
            if let Ok(m) = std::fs::symlink_metadata(self.on_disk(&a)) {
                if m.is_dir() {
                    let ns = i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec());
                    return Timestamp(u64::try_from(ns).unwrap_or(0));
                }
            }
        }
        Timestamp::default()
    }

    /// Whether the scan must not judge `path`: it, or an ancestor, is
    /// excluded or could not be established.
    fn blocked(&self, path: &RelPath) -> bool {
        let lineage = || std::iter::once(path.clone()).chain(path.ancestors());
        // The cheap check first; it also spares `exclude` from being asked
        // about paths below a directory it already excluded.
        lineage().any(|p| self.unsure.contains(&p))
            || lineage().any(|p| !p.is_root() && (self.exclude)(&p))
    }

    /// Fills `report.vanished`: what the baseline knew under the tops that
    /// the walk did not find.
    pub(super) fn vanished(&mut self) -> Result<(), ScanError> {
        let mut missing: Vec<RelPath> = Vec::new();
        {
            let seen: HashSet<&RelPath> = self.report.found.iter().map(|f| &f.path).collect();
            for top in self.tops {
                if self.blocked(top) {
                    continue;
                }
                let live = self
                    .baseline
                    .is_live(top)
                    .map_err(|source| ScanError::Baseline {
                        path: top.clone(),
                        source,
                    })?;
                if !top.is_root() && !seen.contains(top) && live {
                    missing.push(top.clone());
                }
                self.baseline
                    .for_each_below(top, &mut |p| {
                        if !seen.contains(p) {
                            missing.push(p.clone());
                        }
                    })
                    .map_err(|source| ScanError::Baseline {
                        path: top.clone(),
                        source,
                    })?;
            }
        }
        let mut out = std::mem::take(&mut self.outside_vanished);
        for p in missing {
            if !self.blocked(&p) {
                let witness = self.witness(&p);
                out.insert(p, witness);
            }
        }
        self.report.vanished = out
            .into_iter()
            .map(|(path, witness)| Vanished { path, witness })
            .collect();
        Ok(())
    }
}
