//! The byte ranges of a large file, asked for a window at a time and
//! read as one stream; the holes a peer speaking `holes` skips come out
//! as zeros.

use super::transfers::{Answer, Expect, Transfers};
use super::{FetchError, LARGE_WINDOW};
use omirr_fs::apply::Wanted;
use omirr_proto::Message;
use std::collections::VecDeque;

/// Byte ranges of the peer's file, asked for a window at a time, as one
/// stream. At most two windows are outstanding. What a peer speaking
/// `holes` skips comes out as zeros.
pub(super) struct Ranges<'t> {
    t: &'t Transfers,
    w: &'t Wanted,
    /// Not yet asked for, split into windows.
    todo: VecDeque<Vec<(u64, u64)>>,
    /// Asked for, with the ranges of each not yet streamed.
    asked: VecDeque<(Answer<'t>, VecDeque<(u64, u64)>)>,
    /// A piece received and not yet reached (a hole comes before it).
    ahead: Option<(u64, Vec<u8>)>,
    /// The front answer has ended: the rest of its ranges are holes.
    ended: bool,
    buf: Vec<u8>,
    pos: usize,
    /// Zeros still to hand out before `buf`'s next bytes.
    zeros: u64,
}

impl<'t> Ranges<'t> {
    pub(super) fn new(t: &'t Transfers, w: &'t Wanted, ranges: &[(u64, u64)]) -> Ranges<'t> {
        let mut todo = VecDeque::new();
        let mut window = Vec::new();
        let mut bytes = 0;
        for &(mut o, mut l) in ranges {
            while l > 0 {
                let take = l.min(LARGE_WINDOW - bytes);
                window.push((o, take));
                bytes += take;
                o += take;
                l -= take;
                if bytes == LARGE_WINDOW || window.len() == omirr_proto::MAX_RANGES {
                    todo.push_back(std::mem::take(&mut window));
                    bytes = 0;
                }
            }
        }
        if !window.is_empty() {
            todo.push_back(window);
        }
        Ranges {
            t,
            w,
            todo,
            asked: VecDeque::new(),
            ahead: None,
            ended: false,
            buf: Vec::new(),
            pos: 0,
            zeros: 0,
        }
    }

    async fn ask(&mut self) -> Result<(), FetchError> {
        while self.asked.len() < 2 {
            let Some(window) = self.todo.pop_front() else {
                return Ok(());
            };
            let w = self.w;
            let answer = self
                .t
                .request(
                    |id| Message::RangeRequest {
                        id,
                        path: w.path.clone(),
                        hash: w.hash,
                        size: w.size,
                        ranges: window.clone(),
                    },
                    Expect::Data(window.iter().copied().collect()),
                )
                .await?;
            self.asked.push_back((answer, window.into_iter().collect()));
        }
        Ok(())
    }

    /// Fills `out` exactly.
    pub(super) async fn read_exact(&mut self, out: &mut [u8]) -> Result<(), FetchError> {
        let mut filled = 0;
        while filled < out.len() {
            if self.zeros > 0 {
                let n = (out.len() - filled).min(usize::try_from(self.zeros).unwrap_or(usize::MAX));
                out[filled..filled + n].fill(0);
                self.zeros -= n as u64;
                filled += n;
                continue;
            }
            if self.pos < self.buf.len() {
                let n = (out.len() - filled).min(self.buf.len() - self.pos);
                out[filled..filled + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                filled += n;
                continue;
            }
            match self.next_run().await? {
                Run::Data(d) => {
                    self.buf = d;
                    self.pos = 0;
                }
                Run::Zeros(n) => self.zeros = n,
            }
        }
        Ok(())
    }

    /// The next run of the stream: bytes the peer sent, or the length of
    /// a hole it skipped. Both are within one range; a caller that wants
    /// the bytes at an offset counts what came before.
    pub(super) async fn next_run(&mut self) -> Result<Run, FetchError> {
        loop {
            self.ask().await?;
            let Some((answer, left)) = self.asked.front_mut() else {
                return Err(FetchError::File("the peer sent less than asked".into()));
            };
            if self.ahead.is_none() && !self.ended {
                match answer.next_data().await? {
                    Some(piece) => self.ahead = Some(piece),
                    // What is left of the window is trailing holes
                    // (`route` lets the answer end early only then).
                    None => self.ended = true,
                }
            }
            if self.ended && left.is_empty() {
                self.asked.pop_front();
                self.ended = false;
                continue;
            }
            let Some(&(o, l)) = left.front() else {
                return Err(FetchError::File("the peer sent more than asked".into()));
            };
            // The next bytes: the piece if it is at `o`, else the zeros
            // before it (or to the range's end).
            let zeros = match &self.ahead {
                Some((at, _)) if *at == o => 0,
                Some((at, _)) if *at < o + l => at - o,
                _ => l,
            };
            let (n, run) = if zeros == 0 {
                let Some((_, data)) = self.ahead.take() else {
                    return Err(FetchError::File("the peer sent less than asked".into()));
                };
                (data.len() as u64, Run::Data(data))
            } else {
                (zeros, Run::Zeros(zeros))
            };
            let front = &mut left[0];
            front.0 += n;
            front.1 -= n;
            if front.1 == 0 {
                left.pop_front();
            }
            return Ok(run);
        }
    }
}

/// A run of [`Ranges`]' stream.
pub(super) enum Run {
    /// Bytes the peer sent.
    Data(Vec<u8>),
    /// This many zeros: a hole the peer did not send.
    Zeros(u64),
}

#[cfg(test)]
mod tests {
    use super::super::transfers::test_support::*;
    use super::*;
    use omirr_core::RelPath;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn ranges_stream_what_the_peer_skipped_as_zeros() {
        let (t, mut requests) = transfers();
        let t = Arc::new(t.with_holes(true));
        let w = Wanted {
            path: RelPath::new(b"f".to_vec()).expect("path"),
            hash: [0; 32],
            size: 2 * LARGE_WINDOW,
        };
        // The peer: of each range asked, it sends the bytes from 1 KiB
        // in to 2 KiB in (the rest being holes), and a range at 1 MiB not
        // at all.
        let peer = {
            let t = t.clone();
            tokio::spawn(async move {
                while let Some(m) = requests.recv().await {
                    let Message::RangeRequest { id, ranges, .. } = m else {
                        continue;
                    };
                    for (o, l) in ranges {
                        if o == 1 << 20 || l < 2048 {
                            continue;
                        }
                        t.route(data(id, o + 1024, 1024)).expect("route");
                    }
                    t.route(Message::FileEnd { id }).expect("end");
                }
            })
        };
        let asked = [(0, 4096), (1 << 20, 4096), (LARGE_WINDOW + 8192, 8192)];
        let mut r = Ranges::new(&t, &w, &asked);
        let mut got = vec![1u8; 16384];
        r.read_exact(&mut got)
            .await
            .map_err(|_| "read")
            .expect("read");
        let mut want = vec![0u8; 16384];
        want[1024..2048].fill(7);
        want[8192 + 1024..8192 + 2048].fill(7);
        assert!(got == want, "holes are zeros, data where it was sent");
        peer.abort();
    }

    #[test]
    fn large_files_are_asked_for_a_window_at_a_time() {
        let (t, _requests) = transfers();
        let w = Wanted {
            path: RelPath::new(b"f".to_vec()).expect("path"),
            hash: [0; 32],
            size: 3 * LARGE_WINDOW + 1,
        };
        let r = Ranges::new(&t, &w, &[(0, w.size)]);
        assert_eq!(r.todo.len(), 4);
        for window in &r.todo {
            let bytes: u64 = window.iter().map(|(_, l)| l).sum();
            assert!(bytes <= LARGE_WINDOW);
        }
        let covered: u64 = r.todo.iter().flatten().map(|(_, l)| l).sum();
        assert_eq!(covered, w.size);
    }
}
