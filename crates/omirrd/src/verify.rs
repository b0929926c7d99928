//! `omirrd verify`: whether the hosts hold the same tree.
//!
//! The command asks the running daemon on its status socket (request
//! line `verify` or `verify --deep`); the daemon compares its index with
//! every peer's over the sessions that run with them, for each mirrored
//! top the two share (`omirr_sync::verify`, by summaries of path ranges:
//! equal trees cost one round trip per top), and with `--deep` also
//! re-reads this host's files against its index ([`DeepReport`]). The answer is
//! one JSON object ([`Report`], schema [`SCHEMA`]); the command prints it
//! for people or as is (`--json`) and exits by [`exit_code`].
//!
//! A comparison on a busy mesh can catch a change that has reached one
//! host and not yet the other, so a peer whose comparison finds
//! differences is compared once more after [`RETRY_AFTER`], and the
//! second answer counts.

use crate::plan::Plan;
use anyhow::{Context, Result};
use omirr_core::verify::Difference;
use omirr_core::{Content, Entry, RelPath};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The version of the report's JSON form (a new field does not raise it).
pub const SCHEMA: u32 = 1;

/// How long a comparison that found differences waits before the second.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The most local differences `--deep` lists (it counts them all).
pub const MAX_LOCAL: usize = 10_000;

/// What `omirrd verify` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub host: String,
    /// Each peer's comparison.
    pub peers: BTreeMap<String, PeerReport>,
    /// With `--deep`: this host's files against its index.
    #[serde(default)]
    pub deep: Option<DeepReport>,
}

/// One peer's comparison.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerReport {
    /// `same`, `different`, or `unavailable` (the peer could not be
    /// asked; `error` says why).
    pub state: String,
    #[serde(default)]
    pub error: Option<String>,
    /// The mirrored tops compared (those the two hosts share).
    pub tops: Vec<String>,
    /// Questions asked of the peer (round trips), the retry's included.
    pub asked: u64,
    /// Paths that differ (all counted).
    pub found: u64,
    /// The first of them, with both hosts' entries.
    pub differences: Vec<PathDifference>,
}

/// A path whose entry differs: this host's (`ours`) and the peer's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PathDifference {
    pub path: String,
    pub ours: Option<EntryView>,
    pub theirs: Option<EntryView>,
}

/// An entry as the report shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryView {
    /// `file`, `directory`, `symlink` or `deleted`.
    pub kind: String,
    /// The version: HLC timestamp (ns since the epoch) and writer.
    pub version_ts: u64,
    pub version_host: String,
    #[serde(default)]
    pub size: Option<u64>,
    /// The content hash (blake3), hexadecimal, first 12 digits.
    #[serde(default)]
    pub hash: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
}

impl EntryView {
    pub fn of(e: &Entry) -> EntryView {
        let (size, hash, target) = match &e.content {
            Content::File { size, hash } => (Some(*size), Some(hex_prefix(hash)), None),
            Content::Symlink { target } => (None, None, Some(omirr_core::path::escape(target))),
            Content::Dir | Content::Fifo | Content::Deleted => (None, None, None),
        };
        EntryView {
            kind: e.content.kind().to_string(),
            version_ts: e.version.ts.0,
            version_host: e.version.host.to_string(),
            size,
            hash,
            target,
            mode: e.meta.mode,
            uid: e.meta.uid,
            gid: e.meta.gid,
            mtime_ns: e.meta.mtime_ns,
        }
    }

    /// One line: kind, size and hash or target, mode, version.
    fn line(&self) -> String {
        let what = match (&self.size, &self.hash, &self.target) {
            (Some(size), Some(hash), _) => format!("{} {size} B blake3 {hash}", self.kind),
            (_, _, Some(t)) => format!("{} -> {t}", self.kind),
            _ => self.kind.clone(),
        };
        let version = format!(
            "version {} by {}",
            time(i64::try_from(self.version_ts).unwrap_or(i64::MAX)),
            self.version_host
        );
        // A tombstone's metadata is zeroes: not worth a word.
        if self.kind == "deleted" {
            return format!("{what}, {version}");
        }
        format!(
            "{what}, mode {:04o}, mtime {}, {version}",
            self.mode,
            time(self.mtime_ns)
        )
    }
}

/// With `--deep`: files whose state on disk is not what the index says.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeepReport {
    /// Entries checked against the disk.
    pub checked: u64,
    /// Entries that differ (all counted).
    pub found: u64,
    pub differences: Vec<LocalDifference>,
}

/// A path whose file on disk differs from its index entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LocalDifference {
    pub path: String,
    pub index: EntryView,
    /// What is on disk instead, in words.
    pub disk: String,
}

fn hex_prefix(hash: &[u8; 32]) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Nanoseconds since the epoch as UTC, to the nanosecond.
fn time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{ns} ns"),
    }
}

/// The daemon's side: compares with every peer (at once), and with
/// `deep` the disk with the index.
pub async fn run(plan: Arc<Plan>, engine: Arc<omirr_sync::Engine>, deep: bool) -> Report {
    let mut report = Report {
        schema: SCHEMA,
        host: plan.host.clone(),
        ..Default::default()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for peer in plan.peer_names() {
        let tops = plan.shared_tops(&peer);
        let engine = engine.clone();
        tasks.spawn(async move {
            let shown: Vec<String> = tops.iter().map(|t| t.to_string()).collect();
            // Questions of a first comparison that was retried.
            let mut asked = 0;
            let mut result = omirr_sync::verify::compare(&engine, &peer, tops.clone()).await;
            if let Ok(c) = &result {
                if c.found > 0 {
                    // Maybe a change in flight: look again.
                    asked = c.asked;
                    tokio::time::sleep(RETRY_AFTER).await;
                    result = omirr_sync::verify::compare(&engine, &peer, tops).await;
                }
            }
            let r = match result {
                Ok(c) => PeerReport {
                    state: if c.found == 0 { "same" } else { "different" }.to_string(),
                    error: None,
                    tops: shown,
                    asked: asked + c.asked,
                    found: c.found,
                    differences: c.differences.iter().map(view).collect(),
                },
                Err(e) => PeerReport {
                    state: "unavailable".to_string(),
                    error: Some(unavailable(&engine, &peer, &e.0)),
                    tops: shown,
                    ..Default::default()
                },
            };
            (peer, r)
        });
    }
    if deep {
        let (plan, engine) = (plan.clone(), engine.clone());
        let checked = tokio::task::spawn_blocking(move || deep_check(&plan, &engine)).await;
        report.deep = Some(match checked {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => DeepReport {
                found: 1,
                differences: vec![LocalDifference {
                    path: String::new(),
                    index: EntryView::default(),
                    disk: format!("the check failed: {e:#}"),
                }],
                ..Default::default()
            },
            Err(e) => DeepReport {
                found: 1,
                differences: vec![LocalDifference {
                    disk: format!("the check failed: {e}"),
                    ..Default::default()
                }],
                ..Default::default()
            },
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok((peer, r)) = done {
            report.peers.insert(peer, r);
        }
    }
    report
}

/// Why a peer could not be asked, with its session's last error.
fn unavailable(engine: &omirr_sync::Engine, peer: &str, why: &str) -> String {
    let last = engine
        .counters
        .peers()
        .get(peer)
        .and_then(|p| p.last_error.clone());
    match last {
        Some(e) if !why.contains("older") => format!("{why}; its last error: {e}"),
        _ => why.to_string(),
    }
}

fn view(d: &Difference) -> PathDifference {
    PathDifference {
        path: d.path.to_string(),
        ours: d.ours.as_ref().map(EntryView::of),
        theirs: d.theirs.as_ref().map(EntryView::of),
    }
}

/// `--deep`: every live entry of this host's mirrored tops against the
/// disk: its kind; a file's size, mode, mtime and content (re-hashed); a
/// symlink's target; a directory's mode. A path is opened beneath the
/// root, never through a symlink. An entry the index holds but the tree
/// rule hides (see `omirr_core::tree`) is not expected on disk.
fn deep_check(plan: &Plan, engine: &omirr_sync::Engine) -> Result<DeepReport> {
    use omirr_core::verify::{EntrySource, Span};
    use rustix::fs::{self as rfs, Mode, OFlags};
    let index = &engine.store.index;
    let root = rfs::open(
        &plan.root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open the root {}", plan.root.display()))?;
    let mut report = DeepReport::default();
    for top in plan.tops() {
        let mut span = Span::whole(top);
        loop {
            // A page of entries per read transaction: the files are read
            // with none open, so that the index's writes go on.
            let mut page = Vec::with_capacity(DEEP_PAGE);
            index.reader()?.scan(&span, &mut |p, e| {
                page.push((p.clone(), e.clone()));
                page.len() < DEEP_PAGE
            })?;
            let Some((last, _)) = page.last() else { break };
            span.after = Some(last.clone());
            let full = page.len() == DEEP_PAGE;
            let mut suspects = Vec::new();
            for (path, entry) in page {
                if !entry.is_live() || plan.excluded(&path) {
                    continue;
                }
                report.checked += 1;
                if let Some(wrong) = on_disk(&root, &path, &entry) {
                    suspects.push((path, entry, wrong));
                }
            }
            if !suspects.is_empty() {
                // Missing or different, but is it meant to be there?
                let reader = index.reader()?;
                for (path, entry, wrong) in suspects {
                    if omirr_core::tree::present(&reader, &path)?.is_none() {
                        continue;
                    }
                    report.found += 1;
                    if report.differences.len() < MAX_LOCAL {
                        report.differences.push(LocalDifference {
                            path: path.to_string(),
                            index: EntryView::of(&entry),
                            disk: wrong,
                        });
                    }
                }
            }
            if !full {
                break;
            }
        }
    }
    Ok(report)
}

/// Entries `--deep` reads from the index at once.
const DEEP_PAGE: usize = 1024;

/// How the disk differs from `entry` at `path`, or `None` if it does not.
fn on_disk(root: &std::os::fd::OwnedFd, path: &RelPath, entry: &Entry) -> Option<String> {
    use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
    let parent = path.parent().unwrap_or_else(RelPath::root);
    let dir = match omirr_open::beneath::open_dir(root, &parent) {
        Ok(d) => d,
        Err(e) => return Some(format!("cannot open its directory: {e}")),
    };
    let name = path.file_name();
    let st = match rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Some("missing".to_string()),
        Err(e) => return Some(format!("cannot stat: {e}")),
    };
    let kind = FileType::from_raw_mode(st.st_mode);
    let mode = st.st_mode & 0o7777;
    let mtime_ns = (st.st_mtime as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64);
    let size = st.st_size as u64;
    match &entry.content {
        Content::File { size: want, hash } => {
            if kind != FileType::RegularFile {
                return Some(format!("not a regular file ({kind:?})"));
            }
            let mut wrong = Vec::new();
            if size != *want {
                wrong.push(format!("size {size} B"));
            }
            if mode != entry.meta.mode {
                wrong.push(format!("mode {mode:04o}"));
            }
            if mtime_ns != entry.meta.mtime_ns {
                wrong.push(format!("mtime {}", time(mtime_ns)));
            }
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            let hashed = rfs::openat(&dir, name, flags, Mode::empty())
                .map_err(std::io::Error::from)
                .and_then(|fd| {
                    let mut h = blake3::Hasher::new();
                    h.update_reader(std::fs::File::from(fd))?;
                    Ok(*h.finalize().as_bytes())
                });
            match hashed {
                Ok(h) if h != *hash => wrong.push(format!("content blake3 {}", hex_prefix(&h))),
                Ok(_) => {}
                Err(e) => wrong.push(format!("unreadable: {e}")),
            }
            (!wrong.is_empty()).then(|| wrong.join(", "))
        }
        Content::Dir => {
            if kind != FileType::Directory {
                Some(format!("not a directory ({kind:?})"))
            } else {
                None
            }
        }
        Content::Symlink { target } => {
            if kind != FileType::Symlink {
                return Some(format!("not a symlink ({kind:?})"));
            }
            match rfs::readlinkat(&dir, name, Vec::new()) {
                Ok(t) if t.as_bytes() == target.as_slice() => None,
                Ok(t) => Some(format!(
                    "symlink -> {}",
                    omirr_core::path::escape(t.as_bytes())
                )),
                Err(e) => Some(format!("cannot read the link: {e}")),
            }
        }
        Content::Fifo => {
            if kind != FileType::Fifo {
                Some(format!("not a FIFO ({kind:?})"))
            } else if mode != entry.meta.mode {
                Some(format!("mode {mode:04o}"))
            } else {
                None
            }
        }
        Content::Deleted => None,
    }
}

/// 0 when every peer agrees (and, with `--deep`, the disk matches the
/// index), 2 when a peer could not be asked, else 1.
pub fn exit_code(r: &Report) -> u8 {
    if r.peers.values().any(|p| p.state == "unavailable") {
        2
    } else if r.peers.values().any(|p| p.found > 0) || r.deep.as_ref().is_some_and(|d| d.found > 0)
    {
        1
    } else {
        0
    }
}

/// The report for people: per peer one line, then one block per path
/// that differs, with both hosts' entries.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if r.peers.is_empty() {
        let _ = writeln!(out, "{}: no peers to compare with", r.host);
    }
    for (peer, p) in &r.peers {
        let tops = if p.tops.is_empty() {
            "nothing".to_string()
        } else {
            p.tops.join(" ")
        };
        match p.state.as_str() {
            "same" => {
                let _ = writeln!(
                    out,
                    "{} and {peer}: same index ({tops}; {} questions)",
                    r.host, p.asked
                );
            }
            "unavailable" => {
                let _ = writeln!(
                    out,
                    "{} and {peer}: cannot ask {peer}: {}",
                    r.host,
                    p.error.as_deref().unwrap_or("?").escape_debug()
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "{} and {peer}: {} path(s) differ ({tops}; {} questions)",
                    r.host, p.found, p.asked
                );
                for d in &p.differences {
                    let side = |e: &Option<EntryView>| {
                        e.as_ref().map_or("no entry".to_string(), EntryView::line)
                    };
                    let _ = writeln!(out, "  {}", d.path);
                    let _ = writeln!(out, "    {:<12} {}", r.host, side(&d.ours));
                    let _ = writeln!(out, "    {:<12} {}", peer, side(&d.theirs));
                }
                if p.found > p.differences.len() as u64 {
                    let _ = writeln!(
                        out,
                        "  ... and {} more",
                        p.found - p.differences.len() as u64
                    );
                }
            }
        }
    }
    if let Some(d) = &r.deep {
        let _ = writeln!(
            out,
            "{} on disk: {} of {} entries differ from the index",
            r.host, d.found, d.checked
        );
        for l in &d.differences {
            let _ = writeln!(out, "  {}", l.path);
            let _ = writeln!(out, "    {:<12} {}", "index", l.index.line());
            let _ = writeln!(out, "    {:<12} {}", "disk", l.disk.escape_debug());
        }
    }
    out
}

/// `omirrd verify`: asks the daemon and prints what it says.
pub fn show(state_dir: &Path, deep: bool, json: bool) -> ExitCode {
    let request = if deep { "verify --deep" } else { "verify" };
    // Many peers' comparisons, each up to a timeout per answer, and a
    // deep check that reads every file: no short limit.
    let body = match crate::status::ask(state_dir, request, Duration::from_secs(3600)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("omirrd: {e:#}");
            return ExitCode::from(2);
        }
    };
    let report: Report = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "omirrd: unreadable answer to verify from {}: {e}",
                crate::status::socket_path(state_dir).display()
            );
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{body}");
    } else {
        print!("{}", render(&report));
    }
    ExitCode::from(exit_code(&report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ts: u64) -> EntryView {
        EntryView {
            kind: "file".into(),
            version_ts: ts,
            version_host: "alpha".into(),
            size: Some(5),
            hash: Some("0123456789ab".into()),
            mode: 0o644,
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes_say_same_different_or_not_asked() {
        let mut r = Report::default();
        assert_eq!(exit_code(&r), 0, "no peer");
        r.peers.insert(
            "beta".into(),
            PeerReport {
                state: "same".into(),
                ..Default::default()
            },
        );
        assert_eq!(exit_code(&r), 0);
        r.deep = Some(DeepReport {
            checked: 3,
            found: 1,
            differences: Vec::new(),
        });
        assert_eq!(exit_code(&r), 1, "the disk differs");
        r.deep = None;
        r.peers.insert(
            "gamma".into(),
            PeerReport {
                state: "different".into(),
                found: 1,
                ..Default::default()
            },
        );
        assert_eq!(exit_code(&r), 1);
        r.peers.insert(
            "delta".into(),
            PeerReport {
                state: "unavailable".into(),
                ..Default::default()
            },
        );
        assert_eq!(exit_code(&r), 2);
    }

    #[test]
    fn the_table_names_each_path_with_both_versions() {
        let mut r = Report {
            host: "alpha".into(),
            ..Default::default()
        };
        r.peers.insert(
            "beta".into(),
            PeerReport {
                state: "different".into(),
                tops: vec!["srv".into()],
                asked: 3,
                found: 2,
                differences: vec![
                    PathDifference {
                        path: "srv/a\\nb".into(),
                        ours: Some(entry(1_700_000_000_000_000_000)),
                        theirs: Some(entry(1_700_000_001_000_000_000)),
                    },
                    PathDifference {
                        path: "srv/only-here".into(),
                        ours: Some(entry(5)),
                        theirs: None,
                    },
                ],
                ..Default::default()
            },
        );
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "alpha and beta: 2 path(s) differ (srv; 3 questions)"
        );
        assert_eq!(lines[1], "  srv/a\\nb");
        assert!(
            lines[2].contains("alpha")
                && lines[2].contains("2023-11-14T22:13:20.000000000Z by alpha"),
            "{text}"
        );
        assert!(
            lines[3].contains("beta") && lines[3].contains("2023-11-14T22:13:21.000000000Z"),
            "{text}"
        );
        assert!(
            lines[2].contains("file 5 B blake3 0123456789ab, mode 0644"),
            "{text}"
        );
        assert!(lines[6].ends_with("no entry"), "{text}");
    }
}
