//! How far a session's catch-up has come, both ways, for the log and the
//! status.
//!
//! Inbound, the catch-up is the answer to our `Pull`: what the peer had
//! recorded when it got it. With the `backlog` capability the peer says
//! how much that is (`Backlog`, see `proto/PROTOCOL.md`); the applier
//! counts what it applies against it. Every [`report_every`] a line says
//! how far it is (done of the total, rate, time left), and one says when
//! it is over: `caught up with PEER: N files, B in T`.
//!
//! Outbound, the pusher counts what it reads for the peer and the peer's
//! `Ack`s what it has applied; what we had recorded when its `Pull` came
//! is counted once, on a blocking thread, for the `Backlog` we send.
//!
//! Every step here is a few additions under a lock held for no longer;
//! the lines are logged by the session's reporter task, not on the path
//! of the changes.

use crate::counters::Backlog;
use crate::engine::Engine;
use omirr_core::{Change, Seq};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a catch-up in progress is reported, and the status' rates
/// measured.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// [`REPORT_EVERY`], or, for the tests only, `OMIRR_TEST_PROGRESS_MS`.
pub fn report_every() -> Duration {
    std::env::var("OMIRR_TEST_PROGRESS_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(REPORT_EVERY, Duration::from_millis)
}

/// The catch-up of one session, both ways.
pub struct Progress {
    peer: String,
    state: Mutex<State>,
}

struct State {
    /// What the peer said its answer to our `Pull` holds, and up to which
    /// of its sequences.
    total_in: Option<(Seq, Backlog)>,
    /// What the applier applied since the session began.
    done_in: Backlog,
    /// The cursor the applier last moved to.
    cursor: Seq,
    started: Instant,
    /// The catch-up is over (or there is none to follow).
    caught_up: bool,
    /// The counters say so too.
    told: bool,
    /// What we had for the peer when its `Pull` came, up to which of our
    /// sequences, once counted.
    total_out: Option<(Seq, Backlog)>,
    /// Of that, what the pusher has read.
    initial_read: Backlog,
    /// Everything the pusher read, and what the peer acknowledged of it.
    read: Backlog,
    acked: Backlog,
    /// What the pusher read and the peer has not acknowledged yet: the
    /// last sequence of each read, with its amount.
    unacked: VecDeque<(Seq, Backlog)>,
}

impl Progress {
    /// A session with `peer` whose cursor is `cursor`. Without `backlog`
    /// (the peer does not speak the capability) there is no total to
    /// follow, and the session counts as caught up from the start.
    pub fn new(peer: &str, cursor: Seq, backlog: bool) -> Progress {
        Progress {
            peer: peer.to_string(),
            state: Mutex::new(State {
                total_in: None,
                done_in: Backlog::default(),
                cursor,
                started: Instant::now(),
                caught_up: !backlog,
                told: false,
                total_out: None,
                initial_read: Backlog::default(),
                read: Backlog::default(),
                acked: Backlog::default(),
                unacked: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the catch-up is over (see [`crate::counters::PeerStatus::caught_up`]).
    pub fn caught_up(&self) -> bool {
        self.lock().caught_up
    }

    /// Logs `line` (the end of the catch-up, from [`Progress::on_backlog`]
    /// or [`Progress::on_applied`]) and marks the peer caught up in the
    /// counters once the catch-up is over.
    pub fn settle(&self, engine: &Engine, line: Option<String>) {
        if let Some(line) = line {
            tracing::info!(peer = %self.peer, "{line}");
        }
        let mut s = self.lock();
        if s.caught_up && !s.told {
            s.told = true;
            drop(s);
            engine.counters.peer(&self.peer, |p| {
                p.caught_up = true;
                p.backlog_in = Backlog::default();
            });
        }
    }

    /// The peer's `Backlog`. `Some` line to log if that ends the catch-up.
    pub fn on_backlog(&self, upto: Seq, total: Backlog) -> Option<String> {
        let mut s = self.lock();
        if s.total_in.is_some() || s.caught_up {
            return None;
        }
        s.total_in = Some((upto, total));
        self.finish_if_done(&mut s)
    }

    /// A batch of `amount` applied (or set aside: it is done with either way), the
    /// cursor moved to `upto`. `Some` line to log if that ends the
    /// catch-up.
    pub fn on_applied(&self, amount: Backlog, upto: Seq) -> Option<String> {
        let mut s = self.lock();
        if s.caught_up {
            return None;
        }
        s.done_in = s.done_in.plus(amount);
        s.cursor = s.cursor.max(upto);
        self.finish_if_done(&mut s)
    }

    fn finish_if_done(&self, s: &mut State) -> Option<String> {
        let (upto, total) = s.total_in?;
        if s.cursor < upto {
            return None;
        }
        s.caught_up = true;
        if total.is_empty() {
            tracing::debug!(peer = %self.peer, "nothing to catch up with");
            return None;
        }
        let took = s.started.elapsed();
        // What the catch-up brought is its total: live changes applied in
        // the same batches are not its own.
        Some(format!(
            "caught up with {}: {} file{}, {} in {} ({} change{})",
            self.peer,
            total.files,
            if total.files == 1 { "" } else { "s" },
            size(total.bytes),
            duration(took),
            total.changes,
            if total.changes == 1 { "" } else { "s" },
        ))
    }

    /// The progress line, while a catch-up runs.
    pub fn line(&self) -> Option<String> {
        let s = self.lock();
        if s.caught_up {
            return None;
        }
        let elapsed = s.started.elapsed();
        let done = s.done_in;
        let Some((_, total)) = s.total_in else {
            return Some(format!(
                "catching up with {}: {} changes, {} files, {} so far (the peer has not said how much is left)",
                self.peer,
                done.changes,
                done.files,
                size(done.bytes)
            ));
        };
        let done = Backlog {
            changes: done.changes.min(total.changes),
            files: done.files.min(total.files),
            bytes: done.bytes.min(total.bytes),
        };
        let secs = elapsed.as_secs_f64().max(0.001);
        let rate = done.bytes as f64 / secs;
        // By bytes when there are any, else by changes.
        let left = if total.bytes > 0 && done.bytes > 0 {
            Some((total.bytes - done.bytes) as f64 / rate)
        } else if done.changes > 0 {
            Some((total.changes - done.changes) as f64 * secs / done.changes as f64)
        } else {
            None
        };
        let left = left.map_or("time left unknown".to_string(), |l| {
            format!("about {} left", duration(Duration::from_secs_f64(l)))
        });
        Some(format!(
            "catching up with {}: {} of {} changes, {} of {} files, {} of {}, {}/s, {}",
            self.peer,
            done.changes,
            total.changes,
            done.files,
            total.files,
            size(done.bytes),
            size(total.bytes),
            size(rate as u64),
            left
        ))
    }

    /// What the catch-up has yet to bring.
    pub fn backlog_in(&self) -> Backlog {
        let s = self.lock();
        match (s.caught_up, s.total_in) {
            (false, Some((_, total))) => total.minus(s.done_in),
            _ => Backlog::default(),
        }
    }

    /// What we had for the peer when its `Pull` came (sequences up to
    /// `upto`).
    pub fn on_total_out(&self, upto: Seq, total: Backlog) {
        let mut s = self.lock();
        s.total_out = Some((upto, total));
    }

    /// The pusher read `changes` (the read ends at sequence `upto`);
    /// `initial` of them were recorded before the peer's `Pull`.
    pub fn on_read(&self, upto: Seq, changes: Backlog, initial: Backlog) {
        let mut s = self.lock();
        s.read = s.read.plus(changes);
        s.initial_read = s.initial_read.plus(initial);
        s.unacked.push_back((upto, changes));
    }

    /// The peer's `Ack`.
    pub fn on_ack(&self, upto: Seq) {
        let mut s = self.lock();
        while let Some(&(u, b)) = s.unacked.front() {
            if u > upto {
                break;
            }
            s.unacked.pop_front();
            s.acked = s.acked.plus(b);
        }
    }

    /// What we have yet to send, or sent and not seen acknowledged.
    pub fn backlog_out(&self) -> Backlog {
        let s = self.lock();
        let unread = s
            .total_out
            .map_or(Backlog::default(), |(_, t)| t.minus(s.initial_read));
        unread.plus(s.read.minus(s.acked))
    }
}

/// Counts what the answer to the peer's `Pull { after }` holds: our
/// changes after `after` up to `upto` that `wanted` lets through (those
/// the pusher sends).
pub fn count(
    engine: &Engine,
    after: Seq,
    upto: Seq,
    page: usize,
    wanted: impl Fn(Seq, &Change) -> bool,
) -> Result<Backlog, omirr_index::IndexError> {
    let mut total = Backlog::default();
    let mut from = after;
    while from < upto {
        let read = engine.store.index.since(from, page)?;
        let Some(&(last, _)) = read.last() else { break };
        for (seq, c) in &read {
            if *seq <= upto && wanted(*seq, c) {
                total.add(c);
            }
        }
        from = last;
    }
    Ok(total)
}

/// Logs the catch-up's progress and measures the rates for the status,
/// every [`report_every`], until the session ends (the task is aborted).
pub async fn report(engine: Arc<Engine>, progress: Arc<Progress>) {
    let every = report_every();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = (Instant::now(), 0u64, 0u64);
    engine.counters.peer(&progress.peer, |p| {
        last.1 = p.file_bytes_received;
        last.2 = p.file_bytes_sent;
    });
    loop {
        tick.tick().await;
        if let Some(line) = progress.line() {
            tracing::info!("{line}");
        }
        let (backlog_in, backlog_out) = (progress.backlog_in(), progress.backlog_out());
        let now = Instant::now();
        let secs = now.duration_since(last.0).as_secs_f64().max(0.001);
        engine.counters.peer(&progress.peer, |p| {
            p.rate_in = (p.file_bytes_received.saturating_sub(last.1) as f64 / secs) as u64;
            p.rate_out = (p.file_bytes_sent.saturating_sub(last.2) as f64 / secs) as u64;
            p.backlog_in = backlog_in;
            p.backlog_out = backlog_out;
            last = (now, p.file_bytes_received, p.file_bytes_sent);
        });
    }
}

/// A size for people: `12.4 MiB` (as the verbose log writes sizes).
pub fn size(bytes: u64) -> String {
    omirr_fs::shown::Size(bytes).to_string()
}

/// A duration for people, to the second (to the millisecond below one
/// second): `3m 12s`.
pub fn duration(d: Duration) -> String {
    let d = if d < Duration::from_secs(1) {
        Duration::from_millis(d.as_millis() as u64)
    } else {
        Duration::from_secs(d.as_secs())
    };
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use omirr_core::{Content, Entry, HostId, Meta, RelPath, Timestamp, Version};

    fn file(name: &str, size: u64) -> Change {
        Change {
            path: RelPath::new(name.as_bytes()).expect("path"),
            entry: Entry {
                content: Content::File {
                    size,
                    hash: [0; 32],
                },
                meta: Meta::default(),
                version: Version {
                    ts: Timestamp(1),
                    host: HostId::new("beta"),
                },
                base: None,
            },
        }
    }

    #[test]
    fn the_catch_up_counts_against_the_peers_total_and_ends_once() {
        let p = Progress::new("beta", 10, true);
        assert!(!p.caught_up());
        let line = p.line().expect("a line before the total is known");
        assert!(line.contains("has not said"), "{line}");
        assert_eq!(p.on_applied(Backlog::of(&[file("a", 1000)]), 12), None);
        assert_eq!(
            p.on_backlog(
                20,
                Backlog {
                    changes: 4,
                    files: 4,
                    bytes: 4000
                }
            ),
            None
        );
        let line = p.line().expect("progress");
        assert!(
            line.starts_with(
                "catching up with beta: 1 of 4 changes, 1 of 4 files, 1000 B of 3.9 KiB, "
            ),
            "{line}"
        );
        assert!(line.contains(" left"), "{line}");
        assert_eq!(p.backlog_in().files, 3);
        let done = p
            .on_applied(
                Backlog::of(&[file("b", 1000), file("c", 1000), file("d", 1000)]),
                20,
            )
            .expect("the caught-up line");
        assert!(
            done.starts_with("caught up with beta: 4 files, 3.9 KiB in ")
                && done.ends_with("(4 changes)"),
            "{done}"
        );
        assert!(p.caught_up());
        assert_eq!(p.line(), None);
        assert_eq!(
            p.on_applied(Backlog::of(&[file("e", 1)]), 30),
            None,
            "only once"
        );
        assert_eq!(p.backlog_in(), Backlog::default());
    }

    #[test]
    fn a_backlog_already_applied_ends_the_catch_up_when_it_arrives() {
        let p = Progress::new("beta", 0, true);
        assert_eq!(p.on_applied(Backlog::of(&[file("a", 5)]), 7), None);
        let total = Backlog {
            changes: 1,
            files: 1,
            bytes: 5,
        };
        assert!(p.on_backlog(7, total).is_some());
        // Nothing to catch up with: over, without a line.
        let q = Progress::new("gamma", 3, true);
        assert_eq!(q.on_backlog(3, Backlog::default()), None);
        assert!(q.caught_up());
        // A peer without the capability never says: caught up at once.
        assert!(Progress::new("old", 0, false).caught_up());
    }

    #[test]
    fn the_outbound_backlog_is_what_is_unread_plus_what_is_unacknowledged() {
        let p = Progress::new("beta", 0, true);
        let b = |n| Backlog {
            changes: n,
            files: n,
            bytes: n * 10,
        };
        p.on_read(5, b(5), b(5));
        assert_eq!(p.backlog_out(), b(5), "before the total is counted");
        p.on_total_out(8, b(8));
        assert_eq!(p.backlog_out(), b(8));
        p.on_read(9, b(4), b(3));
        p.on_ack(5);
        assert_eq!(p.backlog_out(), b(4));
        p.on_ack(9);
        assert_eq!(p.backlog_out(), b(0));
    }

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(3 << 20), "3.0 MiB");
        assert_eq!(duration(Duration::from_millis(193_456)), "3m 13s");
        assert_eq!(duration(Duration::from_micros(1_500)), "1ms");
    }
}
