//! What the index keeps of its peers: each one's cursor (the highest
//! sequence received from it) and the id of the peer's index it counts
//! in, and the latest version each host made that was recorded here.

use crate::error::{Ctx, IndexError};
use crate::index::Index;
use crate::schema::{CURSORS, LATEST, PEER_INDEXES};
use omirr_core::{HostId, Seq, Timestamp};
use redb::{ReadableTable, TableError};

impl Index {
    /// The id of `peer`'s index that its cursor counts in; 0 if unknown.
    pub fn peer_index(&self, peer: &HostId) -> Result<u64, IndexError> {
        let txn = self.read()?;
        let table = match txn.open_table(PEER_INDEXES) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e).at(&self.path, "opening a table"),
        };
        let got = table
            .get(peer.as_str())
            .at(&self.path, "reading a peer's index id")?;
        Ok(got.map_or(0, |g| g.value()))
    }

    /// `peer` says its index has id `id`. If the cursor kept for it
    /// counts in another index of that peer, the cursor goes back to 0
    /// (one transaction with the new id) and this returns `true`: the
    /// peer lost or replaced its index, and everything it has is to be
    /// asked for again. A cursor kept before ids existed (no id known)
    /// is trusted.
    pub fn meet_peer_index(&self, peer: &HostId, id: u64) -> Result<bool, IndexError> {
        if self.peer_index(peer)? == id {
            return Ok(false);
        }
        self.write(|t| {
            let mut table = t
                .txn
                .open_table(PEER_INDEXES)
                .at(t.path, "opening a table")?;
            let known = table
                .get(peer.as_str())
                .at(t.path, "reading a peer's index id")?
                .map_or(0, |g| g.value());
            table
                .insert(peer.as_str(), id)
                .at(t.path, "writing a peer's index id")?;
            drop(table);
            let replaced = known != 0 && known != id;
            if replaced {
                t.set_cursor(peer, 0)?;
            }
            Ok(replaced)
        })
    }

    /// The highest sequence received from `peer`; 0 if none.
    pub fn cursor(&self, peer: &HostId) -> Result<Seq, IndexError> {
        let txn = self.read()?;
        let cursors = self.table(&txn, CURSORS)?;
        let got = cursors
            .get(peer.as_str())
            .at(&self.path, "reading a cursor")?;
        Ok(got.map_or(0, |g| g.value()))
    }

    /// Sets `peer`'s cursor, down as well as up (a peer that lost its
    /// index starts again from 0).
    pub fn set_cursor(&self, peer: &HostId, seq: Seq) -> Result<(), IndexError> {
        self.write(|t| t.set_cursor(peer, seq))
    }

    /// Every peer's cursor, by host name.
    pub fn cursors(&self) -> Result<Vec<(HostId, Seq)>, IndexError> {
        let p = &self.path;
        let txn = self.read()?;
        let cursors = self.table(&txn, CURSORS)?;
        let mut out = Vec::new();
        for row in cursors.iter().at(p, "reading cursors")? {
            let (k, v) = row.at(p, "reading cursors")?;
            out.push((HostId::new(k.value()), v.value()));
        }
        Ok(out)
    }

    /// The greatest timestamp of a version made by `host` that this index
    /// ever recorded (0 if none): what a host that lost its index lacks
    /// of its own changes lies above this.
    pub fn latest_of(&self, host: &HostId) -> Result<Timestamp, IndexError> {
        let txn = self.read()?;
        let table = match txn.open_table(LATEST) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Timestamp(0)),
            Err(e) => return Err(e).at(&self.path, "opening a table"),
        };
        let got = table
            .get(host.as_str())
            .at(&self.path, "reading a host's latest version")?;
        Ok(Timestamp(got.map_or(0, |g| g.value())))
    }
}
