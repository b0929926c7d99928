//! Writes held back until a transaction's rows are known, and the order
//! to insert them in so that redb's leaves are not left half full.

use std::collections::BTreeMap;

/// Writes to one table held back until the transaction's rows are known,
/// so that they can be applied in [`fill_order`]. `None` removes the key.
/// Reads in the same transaction look here first.
pub(crate) struct Pending<K: Ord, V> {
    pub(crate) rows: BTreeMap<K, Option<V>>,
}

impl<K: Ord, V> Pending<K, V> {
    pub(crate) fn new() -> Self {
        Pending {
            rows: BTreeMap::new(),
        }
    }

    pub(crate) fn put(&mut self, k: K, v: V) {
        self.rows.insert(k, Some(v));
    }

    pub(crate) fn remove(&mut self, k: K) {
        self.rows.insert(k, None);
    }

    /// The removals, then the insertions in [`fill_order`].
    pub(crate) fn drain(&mut self) -> (Vec<K>, Vec<(K, V)>) {
        let mut removed = Vec::new();
        let mut put = Vec::new();
        for (k, v) in std::mem::take(&mut self.rows) {
            match v {
                None => removed.push(k),
                Some(v) => put.push((k, v)),
            }
        }
        (removed, fill_order(put))
    }
}

/// The order to insert rows sorted by key in so that redb's leaves end up
/// about 5/6 full rather than half. redb splits a full leaf into two
/// halves, so ascending inserts (a scan's paths, sequences, inode
/// numbers) leave every leaf behind them half full for good, and the
/// file twice the size of its data. Inserting 3 rows in 5 first leaves
/// half-full leaves with room for the other 2, inserted next. Fuller is
/// worse: a receiver records entries first and their stats later, and
/// the 6-10 bytes a stat adds split leaves filled to 9/10 (measured on a
/// million entries, examples/density.rs with DENSITY_RESTAT: the entries
/// table took 161 B/entry with 5 rows in 9 first, 110 with 3 in 5).
pub(crate) fn fill_order<T>(sorted: Vec<T>) -> Vec<T> {
    let (mut first, mut second) = (Vec::with_capacity(sorted.len()), Vec::new());
    for (i, row) in sorted.into_iter().enumerate() {
        if i % 5 < 3 {
            first.push(row);
        } else {
            second.push(row);
        }
    }
    first.extend(second);
    first
}

/// How many entry writes [`Tables`] holds back before applying them: a
/// bound on memory in a large transaction (a start-up scan's).
pub(crate) const PENDING_ROWS: usize = 16_384;
