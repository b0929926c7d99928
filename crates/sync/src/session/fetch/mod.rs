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
//! tree by the applier
//! ([`ContentSource::take_file`](omirr_fs::apply::ContentSource::take_file)),
//! not copied, when the state directory is on the tree's filesystem
//! (copied otherwise).

use crate::engine::Engine;
use omirr_core::Hash;
use omirr_fs::apply::Wanted;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

mod delta;
mod ranges;
mod staged;
mod transfers;
mod writer;

use delta::{delta, older_version};
use ranges::{Ranges, Run};
use staged::Fetched;
pub use staged::{NotStaged, Staged};
pub use transfers::{FetchError, Piece, SessionEnded, Transfers};
use writer::{hash_zeros, StageWriter};

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

/// The whole file by windows of ranges (`FileRequest` without `chunks`).
async fn whole(t: &Transfers, w: &Wanted, out: &std::fs::File) -> Result<(), FetchError> {
    // Emptied first: a failed delta transfer may have written to it, and
    // the zeros of this one are not written (see `StageWriter`).
    tokio::task::block_in_place(|| out.set_len(0))
        .map_err(|e| FetchError::File(format!("cannot stage it: {e}")))?;
    let mut hasher = blake3::Hasher::new();
    let mut out = StageWriter::new(out);
    if t.chunks {
        // Run by run: a hole the peer skipped is hashed, not written (the
        // staged file is new, so it stays a hole) nor copied.
        let mut ranges = Ranges::new(t, w, &[(0, w.size)]);
        let mut at = 0u64;
        while at < w.size {
            match ranges.next_run().await? {
                Run::Zeros(n) => {
                    hash_zeros(&mut hasher, n);
                    at += n;
                }
                Run::Data(d) => {
                    hasher.update(&d);
                    out.write_at(&d, at)?;
                    at += d.len() as u64;
                }
            }
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
