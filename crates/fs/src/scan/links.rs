//! Hard links: which of a file's several names leads them
//! ([`omirr_core::Meta::link`]), the same whatever order a scan met them in.

use std::collections::HashMap;

use omirr_core::RelPath;

use super::report::{HardLink, ScanError};
use super::walk::Walker;

impl Walker<'_> {
    /// Gives every file met with several names the name that leads its
    /// inode's names ([`Meta::link`]), the same whatever order the names
    /// were met in. Among the names (those met, and those the baseline
    /// records for the inode): the one a name's entry already links to,
    /// if it is still one of them, is kept (no change for nothing); else
    /// the smallest of those the baseline records as leading; else the
    /// smallest.
    pub(super) fn assign_links(&mut self) -> Result<(), ScanError> {
        let linked = std::mem::take(&mut self.linked);
        for ((dev, ino), places) in linked {
            let Some(first) = places.first().map(|&i| self.report.found[i].path.clone()) else {
                continue;
            };
            let err = |source| ScanError::Baseline {
                path: first.clone(),
                source,
            };
            let mut names: Vec<RelPath> = self.baseline.paths_of_inode(dev, ino).map_err(err)?;
            names.extend(places.iter().map(|&i| self.report.found[i].path.clone()));
            names.sort();
            names.dedup();
            let mut recorded = HashMap::new();
            for n in &names {
                if let Some(link) = self.baseline.recorded_link(n).map_err(err)? {
                    recorded.insert(n.clone(), link);
                }
            }
            let fallback = recorded
                .iter()
                .filter(|(_, link)| link.is_none())
                .map(|(n, _)| n)
                .min()
                .or(names.first())
                .cloned();
            for &i in &places {
                let path = &self.report.found[i].path;
                let kept = match recorded.get(path) {
                    Some(Some(l)) if names.contains(l) => Some(l.clone()),
                    _ => None,
                };
                let leader = kept.or_else(|| fallback.clone());
                let link = leader.filter(|l| l != path);
                self.report.hard_links.push(HardLink {
                    dev,
                    ino,
                    path: path.clone(),
                    link: link.clone(),
                });
                self.report.found[i].node.meta.link = link.map(Box::new);
            }
        }
        Ok(())
    }
}
