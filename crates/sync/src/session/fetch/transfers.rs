//! Requests to the peer and the routing of their answers: every request
//! has an id, and each piece of an answer goes to its transfer without
//! waiting, checked against exactly what was asked ([`Transfers::route`]).

use super::{Wanted, FETCH_STALL};
use crate::Violation;
use omirr_core::{Chunk, Digest};
use omirr_proto::{Message, MAX_CHUNK};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// One piece of an answer.
pub enum Piece {
    /// Bytes at this offset of the file.
    Data(u64, Vec<u8>),
    /// A page of the file's chunk list; `true` on the last page.
    Chunks(Vec<Chunk>, bool),
    /// A page of the file's compact chunk list (capability
    /// `chunk-digests`); `true` on the last page.
    Digests(Vec<Digest>, bool),
    /// All the bytes asked for have been sent (`FileEnd`).
    End,
    /// The peer cannot send the file, for this reason
    /// (`FileUnavailable`); the transfer is over.
    Unavailable(String),
}

/// What an open transfer may still receive.
pub(super) enum Expect {
    /// Bytes: these `(offset, len)` ranges, in order.
    Data(VecDeque<(u64, u64)>),
    /// A chunk list of at most this many more chunks.
    Chunks(u64),
}

struct Transfer {
    tx: mpsc::UnboundedSender<Piece>,
    expect: Expect,
}

/// The transfers of one session, by request id.
pub struct Transfers {
    open: Mutex<HashMap<u64, Transfer>>,
    pub(super) ids: AtomicU64,
    out: mpsc::Sender<Message>,
    /// Whether the peer speaks `chunks`.
    pub chunks: bool,
    /// Whether the peer speaks `chunk-digests`: its chunk lists are then
    /// asked for compact ([`Digest`]s).
    pub digests: bool,
    /// Whether the peer speaks `holes`: its file data may skip a sparse
    /// file's holes, and a new large file is asked for whole (its holes
    /// cost nothing) rather than by chunk list.
    pub holes: bool,
    /// Bytes of small files that may be requested and not yet received.
    pub budget: u64,
    /// Staged bytes now held in memory.
    pub(super) mem: AtomicU64,
    /// Set when the session ends: every transfer fails at once.
    closed: std::sync::atomic::AtomicBool,
    /// The peer, for its counters.
    pub(super) peer: String,
    /// This session, as the owner of content claims.
    pub owner: u64,
}

/// The session ended (or our side gave up on it): nothing more arrives.
#[derive(Debug)]
pub struct SessionEnded;

impl std::fmt::Display for SessionEnded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the session ended")
    }
}

impl std::error::Error for SessionEnded {}

/// Why one file could not be staged.
pub enum FetchError {
    /// The session ended: nothing more will arrive for any file.
    Ended,
    /// This file failed, for this reason (the peer cannot send it, sent
    /// other than asked, or it cannot be staged); the session goes on.
    File(String),
}

impl From<SessionEnded> for FetchError {
    fn from(_: SessionEnded) -> FetchError {
        FetchError::Ended
    }
}

impl Transfers {
    /// No transfers yet, for the session with `peer`: requests go to
    /// `out`, `chunks` says whether the peer speaks `chunks`, `budget` is
    /// [`Transfers::budget`]. Each call makes a new claim owner.
    pub fn new(peer: &str, out: mpsc::Sender<Message>, chunks: bool, budget: u64) -> Transfers {
        static SESSIONS: AtomicU64 = AtomicU64::new(1);
        Transfers {
            owner: SESSIONS.fetch_add(1, Ordering::Relaxed),
            peer: peer.to_string(),
            open: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(1),
            out,
            chunks,
            digests: false,
            holes: false,
            budget,
            mem: AtomicU64::new(0),
            closed: Default::default(),
        }
    }

    /// Chunk lists are to be asked for compact (`chunk-digests`) if
    /// `digests`.
    pub fn with_digests(mut self, digests: bool) -> Transfers {
        self.digests = digests;
        self
    }

    /// File data may skip holes (`holes`) if `holes`.
    pub fn with_holes(mut self, holes: bool) -> Transfers {
        self.holes = holes;
        self
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Transfer>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every transfer: their readers see [`SessionEnded`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.open().clear();
    }

    /// Sends `request(id)` with a fresh id; the answer arrives on the
    /// returned receiver.
    pub(super) async fn request(
        &self,
        request: impl FnOnce(u64) -> Message,
        expect: Expect,
    ) -> Result<Answer<'_>, SessionEnded> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(SessionEnded);
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.open().insert(id, Transfer { tx, expect });
        if self.out.send(request(id)).await.is_err() {
            self.open().remove(&id);
            return Err(SessionEnded);
        }
        Ok(Answer { t: self, id, rx })
    }

    /// Asks for the whole of `w` with one `FileRequest`.
    pub(super) async fn request_whole<'t>(
        &'t self,
        w: &Wanted,
    ) -> Result<Answer<'t>, SessionEnded> {
        let size = w.size;
        self.request(
            |id| Message::FileRequest {
                id,
                path: w.path.clone(),
                hash: w.hash,
                size,
            },
            Expect::Data(VecDeque::from([(0, size)])),
        )
        .await
    }

    /// Hands a piece of an answer to its transfer, never waiting. A piece
    /// for an unknown id (a transfer given up) is dropped; one that is not
    /// what the request asked for is a [`Violation`].
    pub fn route(&self, msg: Message) -> Result<(), Violation> {
        let mut open = self.open();
        let (id, piece, last) = match msg {
            Message::FileData { id, offset, data } => {
                let Some(t) = open.get_mut(&id) else {
                    return Ok(());
                };
                let Expect::Data(ranges) = &mut t.expect else {
                    return Err(Violation(format!("file data for chunk request {id}")));
                };
                take_data(id, ranges, offset, data.len() as u64, self.holes)?;
                (id, Piece::Data(offset, data), false)
            }
            Message::FileEnd { id } => {
                let Some(t) = open.get(&id) else {
                    return Ok(());
                };
                match &t.expect {
                    Expect::Data(r) if r.is_empty() => {}
                    // What is left is the file's trailing holes.
                    Expect::Data(_) if self.holes => {}
                    _ => return Err(Violation(format!("FileEnd for request {id} too early"))),
                }
                (id, Piece::End, true)
            }
            Message::ChunkList { id, chunks, last } => {
                let Some(t) = open.get_mut(&id) else {
                    return Ok(());
                };
                take_list(id, &mut t.expect, chunks.iter().map(|c| c.len))?;
                (id, Piece::Chunks(chunks, last), last)
            }
            Message::ChunkDigests { id, digests, last } => {
                let Some(t) = open.get_mut(&id) else {
                    return Ok(());
                };
                take_list(id, &mut t.expect, digests.iter().map(|c| c.len))?;
                (id, Piece::Digests(digests, last), last)
            }
            Message::FileUnavailable { id, reason } => (id, Piece::Unavailable(reason), true),
            _ => return Ok(()),
        };
        let tx = if last {
            open.remove(&id).map(|t| t.tx)
        } else {
            open.get(&id).map(|t| t.tx.clone())
        };
        if let Some(tx) = tx {
            // A receiver gone (its fetch given up) drops the piece.
            let _ = tx.send(piece);
        }
        Ok(())
    }
}

/// Checks `n` bytes at `offset` for request `id` against the `ranges` it
/// still expects, and counts them. They must be the next bytes asked for;
/// with `holes`, they may also start further on (what they skip is zeros).
fn take_data(
    id: u64,
    ranges: &mut VecDeque<(u64, u64)>,
    offset: u64,
    n: u64,
    holes: bool,
) -> Result<(), Violation> {
    loop {
        match ranges.front_mut() {
            Some((o, l)) if holes && offset >= *o + *l => {
                ranges.pop_front();
            }
            Some((o, l)) if (*o == offset || (holes && offset > *o)) && offset + n <= *o + *l => {
                let end = *o + *l;
                *o = offset + n;
                *l = end - *o;
                if *l == 0 {
                    ranges.pop_front();
                }
                return Ok(());
            }
            Some((o, l)) => {
                return Err(Violation(format!(
                "{n} bytes at offset {offset} for request {id}, which expects at most {l} at {o}"
            )))
            }
            None => {
                return Err(Violation(format!(
                    "file data for request {id} beyond what it asked for"
                )))
            }
        }
    }
}

/// Checks a page of request `id`'s chunk list, of chunks of these
/// lengths, against what the request may still receive, and counts it.
fn take_list(
    id: u64,
    expect: &mut Expect,
    lens: impl ExactSizeIterator<Item = u32>,
) -> Result<(), Violation> {
    let Expect::Chunks(left) = expect else {
        return Err(Violation(format!("a chunk list for file request {id}")));
    };
    let n = lens.len() as u64;
    if lens
        .into_iter()
        .any(|len| len == 0 || len as usize > MAX_CHUNK)
    {
        return Err(Violation(format!(
            "a chunk of request {id} is empty or longer than {MAX_CHUNK} bytes"
        )));
    }
    if n > *left {
        return Err(Violation(format!(
            "more chunks for request {id} than its file can have"
        )));
    }
    *left -= n;
    Ok(())
}

/// The answer to one request: its pieces as they arrive.
pub(super) struct Answer<'t> {
    t: &'t Transfers,
    id: u64,
    rx: mpsc::UnboundedReceiver<Piece>,
}

impl Answer<'_> {
    pub(super) async fn next(&mut self) -> Result<Piece, FetchError> {
        match tokio::time::timeout(FETCH_STALL, self.rx.recv()).await {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(FetchError::Ended),
            Err(_) => Err(FetchError::File(format!(
                "the peer sent nothing for {}s",
                FETCH_STALL.as_secs()
            ))),
        }
    }

    /// The next bytes of an answer to a file or range request, and their
    /// offset in the file; `None` at its end.
    pub(super) async fn next_data(&mut self) -> Result<Option<(u64, Vec<u8>)>, FetchError> {
        match self.next().await? {
            Piece::Data(at, d) => Ok(Some((at, d))),
            Piece::End => Ok(None),
            Piece::Unavailable(why) => {
                Err(FetchError::File(format!("the peer cannot send it: {why}")))
            }
            Piece::Chunks(..) | Piece::Digests(..) => {
                Err(FetchError::File("a chunk list for file data".into()))
            }
        }
    }
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        self.t.open().remove(&self.id);
    }
}

/// What the tests of transfers and ranges share: a `Transfers` without a
/// session, and pieces to route.
#[cfg(test)]
pub(super) mod test_support {
    use super::*;

    pub(crate) fn transfers() -> (Transfers, mpsc::Receiver<Message>) {
        let (out, requests) = mpsc::channel(16);
        (Transfers::new("peer", out, true, 1 << 20), requests)
    }

    pub(crate) fn data(id: u64, offset: u64, len: usize) -> Message {
        Message::FileData {
            id,
            offset,
            data: vec![7; len],
        }
    }

    /// An open transfer expecting `expect`, as `request` makes it.
    pub(crate) fn expect(t: &Transfers, expect: Expect) -> (u64, mpsc::UnboundedReceiver<Piece>) {
        let id = t.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        t.open().insert(id, Transfer { tx, expect });
        (id, rx)
    }

    pub(crate) fn ranges(r: &[(u64, u64)]) -> Expect {
        Expect::Data(r.iter().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    #[test]
    fn a_transfer_takes_exactly_the_ranges_it_asked_for_in_order() {
        let (t, _requests) = transfers();
        let (id, mut rx) = expect(&t, ranges(&[(0, 10), (100, 5)]));
        t.route(data(id, 0, 4)).expect("first piece");
        assert!(t.route(data(id, 5, 1)).is_err(), "a gap");
        t.route(data(id, 4, 6)).expect("rest of the first range");
        assert!(t.route(data(id, 100, 6)).is_err(), "longer than the range");
        assert!(
            t.route(Message::FileEnd { id }).is_err(),
            "an end before all was sent"
        );
        t.route(data(id, 100, 5)).expect("second range");
        assert!(t.route(data(id, 105, 1)).is_err(), "beyond what was asked");
        t.route(Message::FileEnd { id }).expect("end");
        let mut pieces = 0;
        while let Ok(p) = rx.try_recv() {
            pieces += 1;
            assert!(matches!(p, Piece::Data(..) | Piece::End));
        }
        assert_eq!(pieces, 4, "three data pieces and the end");
        assert!(t.open().is_empty(), "the transfer is closed");
    }

    #[test]
    fn with_holes_a_transfer_takes_gaps_as_zeros_but_nothing_out_of_order() {
        let (t, _requests) = transfers();
        let t = t.with_holes(true);
        let (id, _rx) = expect(&t, ranges(&[(0, 10), (100, 5), (200, 50)]));
        t.route(data(id, 2, 3)).expect("a gap at the start");
        assert!(t.route(data(id, 4, 1)).is_err(), "behind what came");
        t.route(data(id, 201, 4)).expect("a whole range skipped");
        assert!(t.route(data(id, 100, 1)).is_err(), "a skipped range");
        assert!(t.route(data(id, 240, 11)).is_err(), "past the range");
        assert!(t.route(data(id, 250, 1)).is_err(), "beyond what was asked");
        t.route(Message::FileEnd { id }).expect("the rest is holes");
        assert!(t.open().is_empty(), "the transfer is closed");
        // Without the capability, the same gap is a violation.
        let (t, _requests) = transfers();
        let (id, _rx) = expect(&t, ranges(&[(0, 10)]));
        assert!(t.route(data(id, 2, 3)).is_err());
    }

    #[test]
    fn pieces_for_unknown_or_given_up_transfers_are_dropped() {
        let (t, _requests) = transfers();
        t.route(data(99, 0, 10)).expect("unknown id");
        let (id, rx) = expect(&t, ranges(&[(0, 10)]));
        drop(rx);
        t.route(data(id, 0, 10))
            .expect("a receiver gone drops the piece");
        t.close();
        assert!(t.open().is_empty());
    }

    #[test]
    fn chunk_lists_are_bounded_by_the_file_they_describe() {
        let (t, _requests) = transfers();
        let (id, _rx) = expect(&t, Expect::Chunks(3));
        let chunk = |len| Chunk { len, hash: [0; 32] };
        let list = |chunks, last| Message::ChunkList { id, chunks, last };
        assert!(t.route(list(vec![chunk(0)], false)).is_err(), "empty chunk");
        assert!(
            t.route(list(vec![chunk(MAX_CHUNK as u32 + 1)], false))
                .is_err(),
            "a chunk longer than any cut makes"
        );
        t.route(list(vec![chunk(1), chunk(2)], false)).expect("two");
        assert!(
            t.route(list(vec![chunk(1), chunk(2)], true)).is_err(),
            "more chunks than the file can have"
        );
        assert!(
            t.route(data(id, 0, 1)).is_err(),
            "file data for a chunk request"
        );
    }

    #[test]
    fn compact_chunk_lists_are_bounded_alike() {
        let (t, _requests) = transfers();
        let (id, mut rx) = expect(&t, Expect::Chunks(3));
        let digest = |len| Digest {
            len,
            prefix: [0; 8],
        };
        let list = |digests, last| Message::ChunkDigests { id, digests, last };
        assert!(
            t.route(list(vec![digest(0)], false)).is_err(),
            "empty chunk"
        );
        assert!(
            t.route(list(vec![digest(MAX_CHUNK as u32 + 1)], false))
                .is_err(),
            "a chunk longer than any cut makes"
        );
        t.route(list(vec![digest(1), digest(2)], false))
            .expect("two");
        assert!(
            t.route(list(vec![digest(1), digest(2)], true)).is_err(),
            "more chunks than the file can have"
        );
        t.route(list(vec![digest(5)], true)).expect("the last one");
        assert!(t.open().is_empty(), "the last page ends the transfer");
        assert!(matches!(rx.try_recv(), Ok(Piece::Digests(d, false)) if d.len() == 2));
        assert!(matches!(rx.try_recv(), Ok(Piece::Digests(d, true)) if d.len() == 1));
        let (id, _rx) = expect(&t, ranges(&[(0, 10)]));
        assert!(
            t.route(Message::ChunkDigests {
                id,
                digests: vec![digest(1)],
                last: true
            })
            .is_err(),
            "a chunk list for a file request"
        );
    }
}
