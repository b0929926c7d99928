#!/usr/bin/env python3
"""Share of a daemon's CPU samples per stage, from `perf script` output.
A sample goes to the first stage (in the order below) one of whose
patterns appears in its stack."""
import sys, re, collections
STAGES = [
    ("index commit (apply)", ["omirr_index::index::Tables::finish", "omirr_index::index::Tables::flush", "redb::transactions::WriteTransaction::commit"]),
    ("apply: write files, meta, rename", ["omirr_fs::apply::Applier::apply_with", "omirr_fs::apply::Batch::run"]),
    ("watcher: record own/live events", ["omirr_fs::local::record_live"]),
    ("start-up scan", ["omirr_fs::local::scan_into_index", "record_scan", "omirr_fs::scan::"]),
    ("resolve (wanted)", ["session::apply::{impl#0}::wanted", "omirr_core::resolve"]),
    ("apply: other", ["omirr_sync::session::apply", "omirr_fs::local::apply_"]),
    ("fetch: stage files (temp write)", ["omirr_sync::session::fetch"]),
    ("serve: read files for peer", ["omirr_sync::session::serve", "omirr_open::beneath::read_file"]),
    ("session: TLS, frames, decode", ["omirr_sync::session::run", "tokio_rustls", "rustls::", "omirr_proto::"]),
    ("outbox / push", ["omirr_sync::flow", "outbox", "push"]),
    ("watcher: read inotify", ["omirr_fs::watch"]),
    ("hashing", ["blake3"]),
    ("index reads", ["omirr_index::"]),
    ("tokio runtime, scheduling", ["tokio::runtime", "finish_task_switch", "futex"]),
]
counts = collections.Counter()
total = 0
stack = []
def flush():
    global total
    if not stack: return
    total += 1
    text = "\n".join(stack)
    for name, pats in STAGES:
        if any(p in text for p in pats):
            counts[name] += 1; break
    else:
        counts["other"] += 1
for line in sys.stdin:
    if not line.strip():
        flush(); stack = []
    elif line.startswith((" ", "\t")):
        stack.append(line.strip())
    else:
        stack = []
flush()
for name, n in counts.most_common():
    print(f"{100*n/total:5.1f}%  {name}")
print(f"({total} samples)")
