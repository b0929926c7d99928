//! The peers' changes this host could not apply ([`Aside`]), kept with
//! their reasons until a retry applies them or a newer version
//! supersedes them; written with the cursor that moves past them (see
//! [`crate::Batch::set_aside`]).

use crate::codec;
use crate::error::{corrupt, Ctx, IndexError};
use crate::index::Index;
use crate::schema::ASIDE;
use omirr_core::{Change, HostId};
use redb::{ReadableTable, TableError};
use serde::{Deserialize, Serialize};

/// A peer's change this host could not apply, kept with its reason until
/// a retry applies it or a newer version of its path supersedes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aside {
    /// The peer's change, as the peer sent it.
    pub change: Change,
    /// Why it could not be applied, the last time it was tried.
    pub reason: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// Unix seconds of the first failure.
    pub since: u64,
}

impl Index {
    /// The changes set aside (see [`Aside`]), from `peer` or from every
    /// peer, with the peer's name, in (peer, path) order.
    pub fn aside(&self, peer: Option<&HostId>) -> Result<Vec<(HostId, Aside)>, IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let table = match txn.open_table(ASIDE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e).at(p, "opening a table"),
        };
        // One peer's keys are `name NUL path`: the range from `name NUL`
        // up to `name \x01`.
        let rows = match peer {
            Some(h) => {
                let (mut from, mut to) = (
                    h.as_str().as_bytes().to_vec(),
                    h.as_str().as_bytes().to_vec(),
                );
                from.push(0);
                to.push(1);
                table.range(&from[..]..&to[..])
            }
            None => table.iter(),
        };
        let mut out = Vec::new();
        for row in rows.at(p, "reading set-aside changes")? {
            let (k, v) = row.at(p, "reading set-aside changes")?;
            let key = k.value();
            let Some(nul) = key.iter().position(|b| *b == 0) else {
                return Err(corrupt(p, "a set-aside key without a host name"));
            };
            let host = std::str::from_utf8(&key[..nul])
                .map_err(|_| corrupt(p, "a set-aside key whose host name is not UTF-8"))?;
            let aside: Aside = codec::decode(v.value())
                .map_err(|e| corrupt(p, format!("a set-aside change: {e}")))?;
            out.push((HostId::new(host), aside));
        }
        Ok(out)
    }
}
