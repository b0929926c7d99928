//! Content from the peer, fetched and staged before anything is applied.
//!
//! A batch's files are fetched into a [`Staged`] store (in memory for
//! small files, within [`STAGE_MEMORY`]; in the state directory's `stage/`
//! otherwise), checked against their size and hash, and only then does the
//! applier take the write lock and read them from there: no lock is ever
//! held while waiting for the network, so a slow or frozen peer delays
//! only its own batches.
//!
//! Every transfer is a request with an id ([`Transfers`]). The socket
//! reader hands each piece of an answer to its transfer without waiting
//! ([`Transfers::route`]); what a transfer may receive is exactly what was
//! asked (the ranges, in order, or a chunk list no longer than the file
//! allows), so the reader's buffers are bounded by what we request: small
//! files within the in-flight budget, large files a window of
//! [`LARGE_WINDOW`] bytes at a time (content credit, granted by asking).
//!
//! Content another session is already fetching is left to it
//! ([`crate::engine::Claims`]): when two peers offer the same new file,
//! it crosses the network once. A file staged on disk is moved into the
//! tree by the applier ([`ContentSource::take_file`]), not copied, when
//! the state directory is on the tree's filesystem (copied otherwise).

use crate::engine::Engine;
use crate::Violation;
use omirr_chunk::{Recipe, Step};
use omirr_core::{Chunk, Content, Digest, Hash, IndexView, RelPath};
use omirr_fs::apply::{ContentSource, SourceError, Wanted};
use omirr_proto::{Message, MAX_CHUNK};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// How long a transfer may go without a piece before it is given up.
pub const FETCH_STALL: Duration = Duration::from_secs(60);
/// Files below this size are fetched whole with one request; larger ones
/// by windows of ranges (and, with an older version here, by delta).
pub const LARGE: u64 = omirr_chunk::DELTA_MIN;
/// Bytes of a large file asked for at once.
pub const LARGE_WINDOW: u64 = 4 << 20;
/// The most requests of ours outstanding at once.
pub const MAX_REQUESTS: usize = 1024;
/// Staged content kept in memory, per session; more goes to disk.
pub const STAGE_MEMORY: u64 = 16 << 20;
/// The most bytes of the older version's chunks a delta transfer reuses
/// with one read (and one write).
pub const LOCAL_RUN: u64 = 4 << 20;
/// Bytes of a large file staged between two starts of their writeback
/// (`StageWriter`).
pub const WRITEBACK: u64 = 8 << 20;

/// One piece of an answer.
pub enum Piece {
    /// Bytes at this offset of the file.
    Data(u64, Vec<u8>),
    Chunks(Vec<Chunk>, bool),
    Digests(Vec<Digest>, bool),
    End,
    Unavailable(String),
}

/// What an open transfer may still receive.
enum Expect {
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
    ids: AtomicU64,
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
    mem: AtomicU64,
    /// Set when the session ends: every transfer fails at once.
    closed: std::sync::atomic::AtomicBool,
    /// The peer, for its counters.
    peer: String,
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
    Ended,
    File(String),
}

impl From<SessionEnded> for FetchError {
    fn from(_: SessionEnded) -> FetchError {
        FetchError::Ended
    }
}

impl Transfers {
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
    async fn request(
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
    async fn request_whole<'t>(&'t self, w: &Wanted) -> Result<Answer<'t>, SessionEnded> {
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
struct Answer<'t> {
    t: &'t Transfers,
    id: u64,
    rx: mpsc::UnboundedReceiver<Piece>,
}

impl Answer<'_> {
    async fn next(&mut self) -> Result<Piece, FetchError> {
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
    async fn next_data(&mut self) -> Result<Option<(u64, Vec<u8>)>, FetchError> {
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

/// A batch's content, fetched and checked, for the applier.
#[derive(Default)]
pub struct Staged {
    mem: HashMap<(Hash, u64), Vec<u8>>,
    files: HashMap<(Hash, u64), PathBuf>,
    failed: HashMap<(Hash, u64), String>,
    /// Bytes of `mem`, given back to the session's budget on drop.
    mem_bytes: u64,
    /// How many of the batch's files want each content: a staged file is
    /// moved into the tree by its last user, copied for the others.
    uses: Mutex<HashMap<(Hash, u64), usize>>,
    /// What this batch claimed (see [`crate::engine::Claims`]), released
    /// with it.
    claimed: Vec<(Hash, u64)>,
    /// Content left to the session that claimed it first.
    pub deferred: std::collections::HashSet<(Hash, u64)>,
    /// Whose memory budget and claims this store holds (none in tests).
    holder: Option<(Arc<Engine>, Arc<Transfers>)>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        for p in self.files.values() {
            let _ = std::fs::remove_file(p);
        }
        if let Some((e, t)) = &self.holder {
            t.mem.fetch_sub(self.mem_bytes, Ordering::Relaxed);
            e.claims.release(t.owner, &self.claimed);
        }
    }
}

impl Staged {
    fn keep(&mut self, key: (Hash, u64), got: Fetched) {
        match got {
            Fetched::Mem(v) => {
                self.mem_bytes += v.len() as u64;
                self.mem.insert(key, v);
            }
            Fetched::File(p) => {
                self.files.insert(key, p);
            }
            Fetched::Failed(why) => {
                self.failed.insert(key, why);
            }
        }
    }
}

impl ContentSource for &Staged {
    fn take_file(&mut self, hash: &Hash, size: u64) -> Option<PathBuf> {
        let key = (*hash, size);
        let path = self.files.get(&key)?;
        let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        let left = uses.entry(key).or_insert(1);
        if *left > 1 {
            *left -= 1;
            return None;
        }
        *left = 0;
        Some(path.clone())
    }

    fn open(
        &mut self,
        path: &RelPath,
        hash: &Hash,
        size: u64,
    ) -> Result<Box<dyn Read + '_>, SourceError> {
        let key = (*hash, size);
        if size == 0 {
            return Ok(Box::new(std::io::empty()));
        }
        if let Some(v) = self.mem.get(&key) {
            return Ok(Box::new(&v[..]));
        }
        if let Some(p) = self.files.get(&key) {
            return Ok(Box::new(std::fs::File::open(p)?));
        }
        if let Some(why) = self.failed.get(&key) {
            return Err(why.clone().into());
        }
        Err(Box::new(NotStaged(path.clone())))
    }
}

/// The applier asked for content that was not fetched before its batch
/// (the batch resolved differently once the batch before it was
/// applied): it is fetched, and the change applied, in one more round.
#[derive(Debug)]
pub struct NotStaged(pub RelPath);

impl std::fmt::Display for NotStaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: its content was not fetched before the batch",
            self.0
        )
    }
}

impl std::error::Error for NotStaged {}

enum Fetched {
    Mem(Vec<u8>),
    File(PathBuf),
    Failed(String),
}

/// Fetches `wanted` from the peer into a [`Staged`] store: small files
/// many at a time within the in-flight budget, large ones by windows.
/// A file that cannot be had is noted as failed (the applier sets its
/// change aside); only the end of the session stops the whole. Content
/// another session is fetching is left to it if `defer` (its changes
/// come back as not staged, for a second round).
pub async fn stage(
    engine: Arc<Engine>,
    t: Arc<Transfers>,
    wanted: Vec<Wanted>,
    defer: bool,
) -> Result<Staged, SessionEnded> {
    let mut staged = Staged::default();
    staged.holder = Some((engine.clone(), t.clone()));
    let wanted: Vec<Wanted> = wanted
        .into_iter()
        .filter(|w| {
            let key = (w.hash, w.size);
            let ours = engine.claims.claim(t.owner, key);
            if ours {
                staged.claimed.push(key);
            } else if defer {
                staged.deferred.insert(key);
            }
            ours || !defer
        })
        .collect();
    let mut uses: HashMap<(Hash, u64), usize> = HashMap::new();
    let mut queue: VecDeque<Wanted> = VecDeque::new();
    for w in wanted.into_iter().filter(|w| w.size > 0) {
        let n = uses.entry((w.hash, w.size)).or_insert(0);
        *n += 1;
        if *n == 1 {
            queue.push_back(w);
        }
    }
    staged.uses = Mutex::new(uses);
    let mut running = tokio::task::JoinSet::new();
    let mut used = 0u64;
    loop {
        while let Some(w) = queue.front() {
            let cost = w.size.min(LARGE_WINDOW);
            let room = used + cost <= t.budget.max(LARGE_WINDOW) || running.is_empty();
            if !room || running.len() >= MAX_REQUESTS {
                break;
            }
            let Some(w) = queue.pop_front() else { break };
            used += cost;
            let (s, tt) = (engine.clone(), t.clone());
            running.spawn(
                async move {
                    // For the debug log only: no clock is read when it is off.
                    let started =
                        tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
                    let got = fetch_one(&s, &tt, &w).await;
                    if let Some(started) = started {
                        log_fetched(&w, &got, started.elapsed());
                    }
                    (w, cost, got)
                }
                .in_current_span(),
            );
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let Ok((w, cost, got)) = done else {
            // A fetch task panicked: treat as the session's end.
            return Err(SessionEnded);
        };
        used -= cost;
        let key = (w.hash, w.size);
        match got {
            Ok(f) => staged.keep(key, f),
            Err(FetchError::Ended) => return Err(SessionEnded),
            Err(FetchError::File(why)) => staged.keep(key, Fetched::Failed(why)),
        }
    }
    Ok(staged)
}

/// One line per file fetched, or not, at debug level.
fn log_fetched(w: &Wanted, got: &Result<Fetched, FetchError>, took: std::time::Duration) {
    let took = omirr_fs::shown::Took(took);
    match got {
        Ok(_) => tracing::debug!(
            "fetched {} {} in {took}",
            w.path,
            omirr_fs::shown::Size(w.size)
        ),
        Err(FetchError::File(why)) => tracing::debug!("could not fetch {}: {why}", w.path),
        Err(FetchError::Ended) => {}
    }
}

async fn fetch_one(engine: &Engine, t: &Transfers, w: &Wanted) -> Result<Fetched, FetchError> {
    engine.counters.peer(&t.peer, |p| p.files_fetched += 1);
    if w.size < LARGE {
        return fetch_small(engine, t, w).await;
    }
    let out = staging_file(engine, &w.hash).map_err(FetchError::File)?;
    // By chunk list when there is an older version to reuse; for a new
    // file only when the peer cannot skip holes otherwise (cutting the
    // file costs the peer a pass over it before the first byte moves).
    let older = older_version(engine, w);
    let result = if t.chunks && (older.is_some() || !t.holes) {
        match delta(engine, t, w, older, &out.1).await {
            Ok(()) => Ok(()),
            Err(FetchError::Ended) => Err(FetchError::Ended),
            Err(FetchError::File(why)) => {
                tracing::debug!(path = %w.path, "whole transfer: {why}");
                whole(t, w, &out.1).await
            }
        }
    } else {
        whole(t, w, &out.1).await
    };
    match result {
        Ok(()) => Ok(Fetched::File(out.0)),
        Err(e) => {
            let _ = std::fs::remove_file(&out.0);
            Err(e)
        }
    }
}

/// A small file, whole, into memory (or onto disk past [`STAGE_MEMORY`]).
async fn fetch_small(engine: &Engine, t: &Transfers, w: &Wanted) -> Result<Fetched, FetchError> {
    let size = w.size;
    let mut answer = t.request_whole(w).await?;
    let mut buf = Vec::with_capacity(size as usize);
    while let Some((at, d)) = answer.next_data().await? {
        // A gap (`holes`) is zeros. `route` has checked that `at` is not
        // behind what came before and that the piece is within `size`.
        buf.resize(at as usize, 0);
        buf.extend_from_slice(&d);
    }
    buf.resize(size as usize, 0);
    if buf.len() as u64 != size || *blake3::hash(&buf).as_bytes() != w.hash {
        return Err(FetchError::File(
            "the peer's content does not match its change (it changed since?)".into(),
        ));
    }
    if t.mem.fetch_add(size, Ordering::Relaxed) + size <= STAGE_MEMORY {
        return Ok(Fetched::Mem(buf));
    }
    t.mem.fetch_sub(size, Ordering::Relaxed);
    let (path, mut file) = staging_file(engine, &w.hash).map_err(FetchError::File)?;
    let written = tokio::task::block_in_place(|| file.write_all(&buf));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(FetchError::File(format!("cannot stage it: {e}")));
    }
    Ok(Fetched::File(path))
}

/// A new file in the staging directory.
fn staging_file(engine: &Engine, hash: &Hash) -> Result<(PathBuf, std::fs::File), String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let hex = blake3::Hash::from_bytes(*hash).to_hex();
    let hex = &hex[..16];
    let path = engine
        .disk
        .stage_dir
        .join(format!("{hex}.{}.{n}", std::process::id()));
    use std::os::unix::fs::OpenOptionsExt;
    // Owner only: the file may become a tree's file as it is (moved in
    // before its mode is set), and the content may be anybody's secret.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| {
            format!(
                "cannot stage it in {}: {e}",
                engine.disk.stage_dir.display()
            )
        })?;
    Ok((path, file))
}

/// Byte ranges of the peer's file, asked for a window at a time, as one
/// stream. At most two windows are outstanding. What a peer speaking
/// `holes` skips comes out as zeros.
struct Ranges<'t> {
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
}

impl<'t> Ranges<'t> {
    fn new(t: &'t Transfers, w: &'t Wanted, ranges: &[(u64, u64)]) -> Ranges<'t> {
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
    async fn read_exact(&mut self, out: &mut [u8]) -> Result<(), FetchError> {
        let mut filled = 0;
        while filled < out.len() {
            if self.pos < self.buf.len() {
                let n = (out.len() - filled).min(self.buf.len() - self.pos);
                out[filled..filled + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                filled += n;
                continue;
            }
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
            let n = if zeros == 0 {
                let Some((_, data)) = self.ahead.take() else {
                    return Err(FetchError::File("the peer sent less than asked".into()));
                };
                let n = data.len() as u64;
                self.buf = data;
                n
            } else {
                let n = zeros.min(MAX_CHUNK as u64);
                self.buf.clear();
                self.buf.resize(n as usize, 0);
                n
            };
            self.pos = 0;
            let front = &mut left[0];
            front.0 += n;
            front.1 -= n;
            if front.1 == 0 {
                left.pop_front();
            }
        }
        Ok(())
    }
}

/// The whole file by windows of ranges (`FileRequest` without `chunks`).
async fn whole(t: &Transfers, w: &Wanted, out: &std::fs::File) -> Result<(), FetchError> {
    // Emptied first: a failed delta transfer may have written to it, and
    // the zeros of this one are not written (see `StageWriter`).
    tokio::task::block_in_place(|| out.set_len(0))
        .map_err(|e| FetchError::File(format!("cannot stage it: {e}")))?;
    let mut hasher = blake3::Hasher::new();
    let mut out = StageWriter::new(out);
    if t.chunks {
        let mut ranges = Ranges::new(t, w, &[(0, w.size)]);
        let mut at = 0u64;
        let mut buf = vec![0u8; MAX_CHUNK];
        while at < w.size {
            let n = (w.size - at).min(buf.len() as u64) as usize;
            ranges.read_exact(&mut buf[..n]).await?;
            hasher.update(&buf[..n]);
            out.write_at(&buf[..n], at)?;
            at += n as u64;
        }
        out.finish(w.size)?;
    } else {
        let mut answer = t.request_whole(w).await?;
        let mut at = 0u64;
        while let Some((offset, d)) = answer.next_data().await? {
            hash_zeros(&mut hasher, offset.saturating_sub(at));
            hasher.update(&d);
            out.write_at(&d, offset)?;
            at = offset + d.len() as u64;
        }
        hash_zeros(&mut hasher, w.size.saturating_sub(at));
        out.finish(w.size)?;
    }
    if *hasher.finalize().as_bytes() != w.hash {
        return Err(FetchError::File(
            "the peer's content does not match its change (it changed since?)".into(),
        ));
    }
    Ok(())
}

/// Hashes `n` zero bytes: a hole the peer did not send.
fn hash_zeros(hasher: &mut blake3::Hasher, mut n: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// A large file being staged, written front to back. Every [`WRITEBACK`]
/// bytes it starts the kernel's writeback of what it wrote, without
/// waiting for it: the disk writes while the rest arrives, and the fsync
/// the applier makes before its rename (durability is the applier's, not
/// this) finds little left to write.
///
/// Blocks of [`HOLE_BLOCK`] zero bytes are not written: the staging file
/// is new, so they stay holes, and a sparse file arrives sparse (the
/// applier moves the staged file into the tree). [`StageWriter::finish`]
/// gives the file its full length, so trailing zeros are a hole too.
struct StageWriter<'f> {
    file: &'f std::fs::File,
    /// Bytes before this offset have had their writeback started.
    started: u64,
}

/// The granularity at which zeros become holes: a filesystem block.
const HOLE_BLOCK: usize = 4096;

impl<'f> StageWriter<'f> {
    fn new(file: &'f std::fs::File) -> StageWriter<'f> {
        StageWriter { file, started: 0 }
    }

    fn write_at(&mut self, data: &[u8], at: u64) -> Result<(), FetchError> {
        let end = at + data.len() as u64;
        tokio::task::block_in_place(|| {
            for (offset, run) in data_runs(data) {
                self.file.write_all_at(run, at + offset as u64)?;
            }
            if end >= self.started + WRITEBACK {
                start_writeback(self.file, self.started, end - self.started);
                self.started = end;
            }
            Ok(())
        })
        .map_err(|e: std::io::Error| FetchError::File(format!("cannot stage it: {e}")))
    }

    /// Gives the staged file its length `size` (zeros not written at its
    /// end are then a hole, not missing).
    fn finish(self, size: u64) -> Result<(), FetchError> {
        tokio::task::block_in_place(|| self.file.set_len(size))
            .map_err(|e| FetchError::File(format!("cannot stage it: {e}")))
    }
}

/// The runs of `data` to write, as (offset in `data`, bytes): everything
/// but whole [`HOLE_BLOCK`]s of zeros (block-aligned within `data`, which
/// callers write at block-aligned offsets but for a file's last piece).
fn data_runs(data: &[u8]) -> Vec<(usize, &[u8])> {
    let mut runs: Vec<(usize, &[u8])> = Vec::new();
    let mut start = None;
    for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
        let zero = block.len() == HOLE_BLOCK && block.iter().all(|&b| b == 0);
        match (zero, start) {
            (false, None) => start = Some(i * HOLE_BLOCK),
            (true, Some(s)) => {
                runs.push((s, &data[s..i * HOLE_BLOCK]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, &data[s..]));
    }
    runs
}

/// Starts the writeback of `len` bytes at `offset` of `file`
/// (`sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`: it waits for no
/// write to finish, and makes nothing durable). A hint only, so its
/// failure (a filesystem without it) is ignored.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the call takes a descriptor, which `file` keeps open for
    // its duration, and integers; it reads or writes no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// The content this host holds at `w`'s path, if it is a different file
/// large enough to be worth reusing the chunks of.
fn older_version(engine: &Engine, w: &Wanted) -> Option<(Hash, u64)> {
    match engine.store.index.entry(&w.path) {
        Ok(Some(e)) => match e.content {
            Content::File { size, hash } if size >= omirr_chunk::DELTA_MIN && hash != w.hash => {
                Some((hash, size))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Delta transfer: the peer's chunk list, the chunks this host holds of
/// the older version at the same path, and the rest by ranges.
///
/// Chunks of zeros are never fetched, with or without an older version:
/// the chunker cuts a run of zeros (a sparse file's hole) into chunks of
/// [`omirr_chunk::MAX`] bytes, which this host recognises by their hash
/// ([`ZeroChunks`]) and leaves as holes in the staged file. A 1 GiB file
/// holding 64 KiB of data costs its chunk list and the chunks around the
/// data, not 1 GiB.
async fn delta(
    engine: &Engine,
    t: &Transfers,
    w: &Wanted,
    old: Option<(Hash, u64)>,
    out: &std::fs::File,
) -> Result<(), FetchError> {
    let size = w.size;
    let compact = t.digests;
    let mut answer = t
        .request(
            |id| {
                let (path, hash) = (w.path.clone(), w.hash);
                if compact {
                    Message::DigestRequest {
                        id,
                        path,
                        hash,
                        size,
                    }
                } else {
                    Message::ChunkRequest {
                        id,
                        path,
                        hash,
                        size,
                    }
                }
            },
            Expect::Chunks(size / omirr_chunk::MIN as u64 + 1),
        )
        .await?;
    let local = old.map(|old| {
        tokio::task::block_in_place(|| {
            super::serve::open_for_peer(engine, &w.path, &old.0, old.1).and_then(|file| {
                let trusted = super::serve::vouched(engine, &w.path, &file);
                let list =
                    super::serve::chunk_list(engine, &file, &old.0, old.1, trusted.is_some())?;
                Ok((list, file, trusted))
            })
        })
    });
    // The peer's list: whole hashes, or digests if asked for.
    let (mut theirs, mut digests) = (Vec::new(), Vec::new());
    loop {
        match answer.next().await? {
            Piece::Chunks(c, last) => {
                theirs.extend(c);
                if last {
                    break;
                }
            }
            Piece::Digests(d, last) => {
                digests.extend(d);
                if last {
                    break;
                }
            }
            Piece::Unavailable(why) => {
                return Err(FetchError::File(format!("the peer cannot cut it: {why}")))
            }
            _ => return Err(FetchError::File("file data for a chunk request".into())),
        }
    }
    drop(answer);
    if !theirs.is_empty() && !digests.is_empty() {
        return Err(FetchError::File("a chunk list of two kinds".into()));
    }
    // Without an older version (or with one that cannot be read) only
    // the zero chunks are local.
    let (ours, file, trusted) = match local {
        Some(Ok((ours, file, trusted))) => (ours, Some(file), trusted),
        Some(Err(why)) => {
            tracing::debug!(path = %w.path, "delta transfer without the older version: {why}");
            (Vec::new(), None, None)
        }
        None => (Vec::new(), None, None),
    };
    let total: u64 = theirs.iter().map(|c| c.len as u64).sum::<u64>()
        + digests.iter().map(|d| d.len as u64).sum::<u64>();
    if total != size {
        return Err(FetchError::File(format!(
            "the peer's chunk list covers {total} bytes, not {size}"
        )));
    }
    let mut zeros = ZeroChunks::default();
    let recipe = if digests.is_empty() {
        let mut have: HashMap<Hash, (usize, u64)> = omirr_chunk::offsets(&ours)
            .into_iter()
            .map(|(h, at)| (h, (OLDER, at)))
            .collect();
        for c in zeros.candidates(theirs.iter().map(|c| c.len)) {
            have.entry(c.hash).or_insert((ZEROS, 0));
        }
        Recipe::new(&theirs, &have)
    } else {
        let mut have = HashMap::with_capacity(ours.len());
        let mut at = 0u64;
        for c in &ours {
            have.entry(c.digest()).or_insert((OLDER, at, *c));
            at += c.len as u64;
        }
        for c in zeros.candidates(digests.iter().map(|d| d.len)) {
            have.entry(c.digest()).or_insert((ZEROS, 0, c));
        }
        Recipe::from_digests(&digests, &have)
    };
    if recipe.ranges.len() > omirr_proto::MAX_RANGES {
        return Err(FetchError::File("too many ranges for one request".into()));
    }
    let fetched = recipe.remote_bytes();
    let mut remote = Ranges::new(t, w, &recipe.ranges);
    let mut hasher = blake3::Hasher::new();
    let mut out = StageWriter::new(out);
    let mut at = 0u64;
    let mut buf = Vec::new();
    // The new version's list with whole hashes, for the index's cache:
    // a compact list has none, so each is the local chunk's or, for the
    // peer's bytes, hashed here.
    let mut list = Vec::with_capacity(recipe.steps.len());
    // Zeros written as holes, neither fetched nor taken from the older
    // version.
    let mut zero_bytes = 0u64;
    let mut steps = recipe.steps.into_iter().peekable();
    while let Some(step) = steps.next() {
        match step {
            Step::Local {
                source: ZEROS,
                chunk,
                ..
            } => {
                // Left as a hole by the writer below.
                zero_bytes += chunk.len as u64;
                list.push(chunk);
                buf.clear();
                buf.resize(chunk.len as usize, 0);
            }
            Step::Local { from, chunk, .. } => {
                let Some(file) = &file else {
                    return Err(FetchError::File(
                        "a local chunk without a local file".into(),
                    ));
                };
                // With the local chunks that follow it in the older
                // version too, up to LOCAL_RUN bytes: one read and one
                // write for many chunks (an edit leaves long runs).
                let first = list.len();
                list.push(chunk);
                let mut end = from + chunk.len as u64;
                while let Some(&Step::Local {
                    source: OLDER,
                    from: next,
                    chunk,
                }) = steps.peek()
                {
                    if next != end || end - from + chunk.len as u64 > LOCAL_RUN {
                        break;
                    }
                    list.push(chunk);
                    end += chunk.len as u64;
                    steps.next();
                }
                buf.resize((end - from) as usize, 0);
                tokio::task::block_in_place(|| file.read_exact_at(&mut buf, from))
                    .map_err(|e| FetchError::File(format!("reading the older version: {e}")))?;
                if trusted.is_none() {
                    let mut o = 0;
                    for c in &list[first..] {
                        let bytes = &buf[o..o + c.len as usize];
                        if *blake3::hash(bytes).as_bytes() != c.hash {
                            return Err(FetchError::File(
                                "the older version changed while it was being reused".into(),
                            ));
                        }
                        o += c.len as usize;
                    }
                }
            }
            Step::Remote { len } => {
                buf.resize(len as usize, 0);
                remote.read_exact(&mut buf).await?;
                list.push(Chunk {
                    len,
                    hash: *blake3::hash(&buf).as_bytes(),
                });
            }
        }
        hasher.update(&buf);
        out.write_at(&buf, at)?;
        at += buf.len() as u64;
    }
    out.finish(size)?;
    if let (Some(k), Some(file)) = (&trusted, &file) {
        let now = file
            .metadata()
            .map_err(|e| FetchError::File(e.to_string()))?;
        if !k.unchanged(&omirr_fs::local::stat_key_of(&now)) {
            return Err(FetchError::File(
                "the older version changed while it was being reused".into(),
            ));
        }
    }
    if at != size || *hasher.finalize().as_bytes() != w.hash {
        return Err(FetchError::File(
            "the rebuilt file does not match the peer's change".into(),
        ));
    }
    tracing::debug!(
        "delta transfer of {}: {} fetched, {} reused",
        w.path,
        omirr_fs::shown::Size(fetched),
        omirr_fs::shown::Size(size.saturating_sub(fetched))
    );
    // Cached only now that the list has proved right.
    if let Err(e) = engine
        .store
        .index
        .set_chunk_list(&w.hash, &omirr_chunk::encode(&list))
    {
        tracing::warn!("cannot cache a chunk list: {e}");
    }
    // A delta transfer in the counters' sense is one that used an older
    // version; a new file's zeros are no reuse.
    if file.is_some() {
        engine.counters.peer(&t.peer, |p| {
            p.files_delta += 1;
            p.file_bytes_reused += size.saturating_sub(fetched + zero_bytes);
        });
    }
    Ok(())
}

/// The sources a delta transfer's [`Step::Local`] names: the older
/// version of the file here, or zeros.
const OLDER: usize = 0;
const ZEROS: usize = 1;

/// The chunks of zeros a chunk list may hold, by length, hashed once
/// each. A run of zeros is cut into chunks of [`omirr_chunk::MAX`] bytes
/// but for its last; the lengths tried are bounded
/// ([`ZeroChunks::LENGTHS`]), so that a list of chunks of many lengths
/// (an ordinary file's) costs at most that many hashes of zeros here.
#[derive(Default)]
struct ZeroChunks {
    by_len: HashMap<u32, Chunk>,
}

impl ZeroChunks {
    /// Distinct lengths besides [`omirr_chunk::MAX`] hashed per list.
    const LENGTHS: usize = 16;

    /// The chunk of zeros of every length in `lens` worth trying: the
    /// largest chunk's, and the first [`ZeroChunks::LENGTHS`] others.
    fn candidates(&mut self, lens: impl Iterator<Item = u32>) -> Vec<Chunk> {
        let mut tried = 0;
        for len in lens {
            if self.by_len.contains_key(&len) {
                continue;
            }
            if len != omirr_chunk::MAX {
                if tried == Self::LENGTHS {
                    continue;
                }
                tried += 1;
            }
            let hash = *blake3::hash(&vec![0u8; len as usize]).as_bytes();
            self.by_len.insert(len, Chunk { len, hash });
        }
        self.by_len.values().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_are_left_out_and_everything_else_written() {
        let mut data = vec![0u8; 5 * HOLE_BLOCK + 100];
        data[HOLE_BLOCK + 7] = 1; // block 1
        data[3 * HOLE_BLOCK] = 2; // block 3
        data[5 * HOLE_BLOCK + 99] = 3; // the short tail
        let runs: Vec<(usize, usize)> = data_runs(&data)
            .iter()
            .map(|(at, run)| (*at, run.len()))
            .collect();
        assert_eq!(
            runs,
            [
                (HOLE_BLOCK, HOLE_BLOCK),
                (3 * HOLE_BLOCK, HOLE_BLOCK),
                (5 * HOLE_BLOCK, 100)
            ]
        );
        // What is written, laid over zeros, is the data.
        let mut back = vec![0u8; data.len()];
        for (at, run) in data_runs(&data) {
            back[at..at + run.len()].copy_from_slice(run);
        }
        assert!(back == data);
        assert!(data_runs(&[0; 3 * HOLE_BLOCK]).is_empty());
        // A short block of zeros is written: it is no hole.
        assert_eq!(data_runs(&[0; 10]).len(), 1);
    }

    #[test]
    fn chunks_of_zeros_are_known_by_their_hash() {
        let mut z = ZeroChunks::default();
        let max = omirr_chunk::MAX;
        let got = z.candidates([max, 100, max].into_iter());
        let of = |len: u32| *blake3::hash(&vec![0u8; len as usize]).as_bytes();
        assert!(got.contains(&Chunk {
            len: max,
            hash: of(max)
        }));
        assert!(got.contains(&Chunk {
            len: 100,
            hash: of(100)
        }));
        assert_eq!(got.len(), 2);
        // The cut of a run of zeros is what is recognised.
        let cut = omirr_chunk::chunk_bytes(&vec![0u8; 3 * max as usize]);
        assert!(cut.iter().all(|c| got.contains(c)), "{cut:?}");
        // Lengths other than the largest are bounded.
        let mut z = ZeroChunks::default();
        let many = z.candidates(1..=(ZeroChunks::LENGTHS as u32 + 10));
        assert_eq!(many.len(), ZeroChunks::LENGTHS);
    }

    fn transfers() -> (Transfers, mpsc::Receiver<Message>) {
        let (out, requests) = mpsc::channel(16);
        (Transfers::new("peer", out, true, 1 << 20), requests)
    }

    fn data(id: u64, offset: u64, len: usize) -> Message {
        Message::FileData {
            id,
            offset,
            data: vec![7; len],
        }
    }

    /// An open transfer expecting `expect`, as `request` makes it.
    fn expect(t: &Transfers, expect: Expect) -> (u64, mpsc::UnboundedReceiver<Piece>) {
        let id = t.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        t.open().insert(id, Transfer { tx, expect });
        (id, rx)
    }

    fn ranges(r: &[(u64, u64)]) -> Expect {
        Expect::Data(r.iter().copied().collect())
    }

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

    #[test]
    fn staged_content_is_served_from_memory_or_disk_and_misses_say_so() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut staged = Staged::default();
        let a = b"hello".to_vec();
        let ha = *blake3::hash(&a).as_bytes();
        staged.keep((ha, 5), Fetched::Mem(a.clone()));
        let on_disk = dir.path().join("b");
        std::fs::write(&on_disk, b"world!").expect("write");
        let hb = *blake3::hash(b"world!").as_bytes();
        staged.keep((hb, 6), Fetched::File(on_disk.clone()));
        staged.keep(([9; 32], 3), Fetched::Failed("gone".into()));
        let p = RelPath::new(b"x".to_vec()).expect("path");
        let mut src = &staged;
        let mut read = |h: &Hash, n| -> Result<Vec<u8>, String> {
            let mut r = src.open(&p, h, n).map_err(|e| e.to_string())?;
            let mut v = Vec::new();
            r.read_to_end(&mut v).map_err(|e| e.to_string())?;
            Ok(v)
        };
        assert_eq!(read(&ha, 5).expect("memory"), a);
        assert_eq!(read(&hb, 6).expect("disk"), b"world!");
        assert_eq!(read(&[9; 32], 3).unwrap_err(), "gone");
        assert!(read(&[1; 32], 3).unwrap_err().contains("not fetched"));
        drop(staged);
        assert!(!on_disk.exists(), "staged files go with their batch");
    }

    #[test]
    fn a_staged_file_is_moved_by_its_last_user_and_copied_for_the_others() {
        let dir = tempfile::tempdir().expect("tmp");
        let on_disk = dir.path().join("c");
        std::fs::write(&on_disk, b"content").expect("write");
        let h = *blake3::hash(b"content").as_bytes();
        let mut staged = Staged::default();
        staged.keep((h, 7), Fetched::File(on_disk.clone()));
        staged.uses = Mutex::new(HashMap::from([((h, 7), 2)]));
        let mut src = &staged;
        assert_eq!(src.take_file(&h, 7), None, "another path wants it too");
        assert_eq!(src.take_file(&h, 7), Some(on_disk.clone()), "the last one");
        assert_eq!(src.take_file(&[0; 32], 7), None, "not staged");
        staged.keep(([5; 32], 1), Fetched::Mem(vec![1]));
        let mut src = &staged;
        assert_eq!(src.take_file(&[5; 32], 1), None, "in memory");
    }
}
