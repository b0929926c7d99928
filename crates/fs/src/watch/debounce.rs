//! The debouncer: which dirty paths make a batch, and when. A pure state
//! machine (the caller supplies the time and the events), so that its
//! rules are tested without a kernel.

use omirr_core::RelPath;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Gathers dirty paths until a batch is due. Pure: the caller supplies the
/// time.
///
/// A file that is being written (created or modified, and not yet closed)
/// is held back, so that a peer never gets it half-written: it joins a
/// batch once its writer closes it ([`Debounce::closed`]), once it has
/// seen no write for `settle` (a writer that keeps it open, or writes
/// through a mapping, without closing), or at the latest `max_hold` after
/// its first write (a log that never stops growing is sent as snapshots).
#[derive(Debug)]
pub struct Debounce {
    quiet: Duration,
    max_delay: Duration,
    settle: Duration,
    max_hold: Duration,
    pending: BTreeSet<RelPath>,
    /// Pending paths that had no event but a change of their own
    /// metadata.
    attrs_only: BTreeSet<RelPath>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Files written and not closed: (first write, last write).
    writing: HashMap<RelPath, (Instant, Instant)>,
    /// Due paths that wait for their writer.
    held: BTreeSet<RelPath>,
    /// Renames whose old name was reported and whose new name was not yet
    /// (by the kernel's rename cookie): when each began.
    renaming: HashMap<usize, Instant>,
}

/// How long a batch waits for the new name of a rename whose old name it
/// holds. The kernel queues both names at once, but the watcher's thread
/// hands them on one at a time and may be descheduled between them; a
/// batch cut there would hold the old name alone, so that the move is
/// recorded as a removal and a new file, and the file's content is sent
/// again. A rename out of the watched tree has no new name: the batch goes
/// this much later.
pub const RENAME_PAIRING: Duration = Duration::from_millis(50);

impl Debounce {
    /// `settle` is 2 s and `max_hold` 30 s; see [`Debounce::with_hold`].
    pub fn new(quiet: Duration, max_delay: Duration) -> Debounce {
        Debounce::with_hold(
            quiet,
            max_delay,
            Duration::from_secs(2),
            Duration::from_secs(30),
        )
    }

    /// A debouncer whose batches are due `quiet` after the last event, or
    /// `max_delay` after the first, whichever is first; a file still
    /// being written is held back until it has seen no write for
    /// `settle`, or at most `max_hold` after its first write.
    pub fn with_hold(
        quiet: Duration,
        max_delay: Duration,
        settle: Duration,
        max_hold: Duration,
    ) -> Debounce {
        Debounce {
            quiet,
            max_delay,
            settle,
            max_hold,
            pending: BTreeSet::new(),
            attrs_only: BTreeSet::new(),
            first: None,
            last: None,
            writing: HashMap::new(),
            held: BTreeSet::new(),
            renaming: HashMap::new(),
        }
    }

    /// A rename's old name was reported (`cookie` pairs it with its new
    /// name): no batch is cut until its new name is, or [`RENAME_PAIRING`]
    /// has passed.
    pub fn rename_from(&mut self, cookie: usize, now: Instant) {
        self.renaming.insert(cookie, now);
    }

    /// A rename's new name was reported.
    pub fn rename_to(&mut self, cookie: usize) {
        self.renaming.remove(&cookie);
    }

    /// Until when an unpaired rename holds the batch back.
    fn pairing_until(&self) -> Option<Instant> {
        self.renaming.values().map(|&t| t + RENAME_PAIRING).max()
    }

    /// Something changed at `path`.
    pub fn push(&mut self, path: RelPath, now: Instant) {
        self.attrs_only.remove(&path);
        self.pend(path, now);
    }

    /// `path` was removed or renamed away: whoever wrote it, nothing is
    /// left there to wait for.
    pub fn gone(&mut self, path: RelPath, now: Instant) {
        self.writing.remove(&path);
        self.held.remove(&path);
        self.push(path, now);
    }

    /// The metadata of `path` itself changed (`IN_ATTRIB`). Unless
    /// something else is reported at `path` before the batch is cut, it
    /// is among the batch's `attrs_only`.
    pub fn touched(&mut self, path: RelPath, now: Instant) {
        if !self.pending.contains(&path) {
            self.attrs_only.insert(path.clone());
        }
        self.pend(path, now);
    }

    fn pend(&mut self, path: RelPath, now: Instant) {
        self.pending.insert(path);
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// A file at `path` was created or written and is still open.
    pub fn written(&mut self, path: RelPath, now: Instant) {
        self.writing
            .entry(path.clone())
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
        self.push(path, now);
    }

    /// Whether `path` is a file written and not yet closed.
    pub fn is_writing(&self, path: &RelPath) -> bool {
        self.writing.contains_key(path)
    }

    /// The files written and not yet closed.
    pub fn still_written(&self) -> Vec<RelPath> {
        self.writing.keys().cloned().collect()
    }

    /// The writer of `path` closed it.
    pub fn closed(&mut self, path: RelPath, now: Instant) {
        self.writing.remove(&path);
        self.held.remove(&path);
        self.push(path, now);
    }

    /// When something is due, if anything is pending or held.
    pub fn deadline(&self) -> Option<Instant> {
        let batch = match (self.first, self.last) {
            (Some(first), Some(last)) => {
                let at = (last + self.quiet).min(first + self.max_delay);
                Some(self.pairing_until().map_or(at, |p| at.max(p)))
            }
            _ => None,
        };
        let writer = self
            .writing
            .values()
            .map(|&(first, last)| self.released_at(first, last))
            .min();
        match (batch, writer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn released_at(&self, first: Instant, last: Instant) -> Instant {
        (last + self.settle).min(first + self.max_hold)
    }

    /// The paths due at `now`, if any.
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<RelPath>> {
        self.take_due_split(now).map(|(due, _)| due)
    }

    /// The paths due at `now`, if any, and which of them had only their
    /// own metadata changed ([`Debounce::touched`]).
    pub fn take_due_split(&mut self, now: Instant) -> Option<(Vec<RelPath>, Vec<RelPath>)> {
        let mut due = BTreeSet::new();
        let mut attrs_only = Vec::new();
        let released: Vec<RelPath> = self
            .writing
            .iter()
            .filter(|(_, &(first, last))| self.released_at(first, last) <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for p in released {
            self.writing.remove(&p);
            if self.held.remove(&p) {
                due.insert(p);
            }
        }
        self.renaming.retain(|_, &mut t| t + RENAME_PAIRING > now);
        let batch_due = match (self.first, self.last) {
            (Some(first), Some(last)) => {
                (last + self.quiet).min(first + self.max_delay) <= now && self.renaming.is_empty()
            }
            _ => false,
        };
        if batch_due {
            self.first = None;
            self.last = None;
            let touched = std::mem::take(&mut self.attrs_only);
            for p in std::mem::take(&mut self.pending) {
                if self.writing.contains_key(&p) {
                    self.held.insert(p);
                } else {
                    if touched.contains(&p) {
                        attrs_only.push(p.clone());
                    }
                    due.insert(p);
                }
            }
        }
        if due.is_empty() {
            None
        } else {
            Some((due.into_iter().collect(), attrs_only))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_testkit::p;

    #[test]
    fn a_batch_is_not_cut_between_the_two_names_of_a_rename() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debounce::new(ms(2), ms(100));
        d.push(p("large"), t0);
        d.rename_from(7, t0);
        // The new name comes later than the quiet time: still one batch.
        assert_eq!(d.take_due(t0 + ms(10)), None);
        assert!(d.deadline().is_some_and(|at| at >= t0 + RENAME_PAIRING));
        d.rename_to(7);
        d.push(p("renamed/large"), t0 + ms(10));
        assert_eq!(d.take_due(t0 + ms(11)), None);
        assert_eq!(
            d.take_due(t0 + ms(12)),
            Some(vec![p("large"), p("renamed/large")])
        );
    }

    #[test]
    fn a_rename_out_of_the_tree_holds_the_batch_only_so_long() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debounce::new(ms(2), ms(100));
        d.push(p("gone"), t0);
        d.rename_from(9, t0);
        assert_eq!(d.take_due(t0 + RENAME_PAIRING - ms(1)), None);
        assert_eq!(d.deadline(), Some(t0 + RENAME_PAIRING));
        assert_eq!(d.take_due(t0 + RENAME_PAIRING), Some(vec![p("gone")]));
        // The next batch is not held by the old rename.
        d.push(p("next"), t0 + ms(60));
        assert_eq!(d.take_due(t0 + ms(62)), Some(vec![p("next")]));
    }

    #[test]
    fn debounce_waits_for_quiet_but_not_forever() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debounce::new(ms(5), ms(50));
        assert_eq!(d.deadline(), None);
        d.push(p("a"), t0);
        assert_eq!(d.take_due(t0 + ms(4)), None);
        d.push(p("b"), t0 + ms(4));
        assert_eq!(
            d.take_due(t0 + ms(8)),
            None,
            "the second event restarted the wait"
        );
        assert_eq!(d.take_due(t0 + ms(9)), Some(vec![p("a"), p("b")]));
        assert_eq!(d.deadline(), None);
        // A steady stream is cut at max_delay.
        for i in 0..100 {
            d.push(p("c"), t0 + ms(100 + i));
        }
        assert_eq!(d.deadline(), Some(t0 + ms(150)));
        assert_eq!(d.take_due(t0 + ms(150)), Some(vec![p("c")]));
    }

    #[test]
    fn a_path_is_attrs_only_if_nothing_else_was_reported_there() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debounce::new(ms(2), ms(100));
        d.touched(p("chmodded"), t0);
        d.touched(p("created"), t0);
        d.push(p("created"), t0);
        d.push(p("moved"), t0);
        d.touched(p("moved"), t0);
        assert_eq!(
            d.take_due_split(t0 + ms(2)),
            Some((
                vec![p("chmodded"), p("created"), p("moved")],
                vec![p("chmodded")]
            ))
        );
        // The next batch starts afresh.
        d.push(p("chmodded"), t0 + ms(10));
        assert_eq!(
            d.take_due_split(t0 + ms(12)),
            Some((vec![p("chmodded")], vec![]))
        );
    }

    #[test]
    fn a_file_written_and_removed_is_waited_for_no_more() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debounce::new(ms(2), ms(100));
        d.written(p("download"), t0);
        d.written(p("log"), t0);
        assert_eq!(d.take_due(t0 + ms(5)), None, "both held");
        let mut written = d.still_written();
        written.sort();
        assert_eq!(written, vec![p("download"), p("log")]);
        d.gone(p("download"), t0 + ms(10));
        assert_eq!(d.take_due(t0 + ms(12)), Some(vec![p("download")]));
        assert_eq!(d.still_written(), vec![p("log")]);
    }

    #[test]
    fn a_file_being_written_waits_for_its_close_or_for_quiet() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debounce::with_hold(ms(5), ms(50), ms(1000), ms(3000));
        d.written(p("log"), t0);
        d.push(p("dir"), t0);
        assert_eq!(d.take_due(t0 + ms(10)), Some(vec![p("dir")]), "held back");
        d.written(p("log"), t0 + ms(500));
        assert_eq!(d.take_due(t0 + ms(1200)), None, "written 0.7 s ago");
        assert_eq!(d.deadline(), Some(t0 + ms(1500)));
        d.closed(p("log"), t0 + ms(1300));
        assert_eq!(d.take_due(t0 + ms(1305)), Some(vec![p("log")]), "closed");
        assert_eq!(d.deadline(), None);
        // Open and quiet: released once settled.
        d.written(p("db"), t0 + ms(2000));
        assert_eq!(d.take_due(t0 + ms(2010)), None);
        assert_eq!(d.take_due(t0 + ms(3000)), Some(vec![p("db")]));
        // Written without a pause: released at max_hold, as a snapshot.
        let t1 = t0 + ms(10_000);
        let mut released = None;
        for i in 0..40 {
            let now = t1 + ms(i * 100);
            d.written(p("grows"), now);
            if let Some(b) = d.take_due(now) {
                released.get_or_insert((i, b));
            }
        }
        assert_eq!(released, Some((30, vec![p("grows")])));
    }
}
