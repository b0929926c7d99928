#!/usr/bin/env bash
# Scan benchmark for omirr-fs (results and method: docs/benchmarks.md).
#
#   bash crates/fs/bench/scan.sh            # RUNS=5 by default; medians are printed
#
# Measures, on the shared workloads (generated under $DATA, never in the
# repo):
#   - cold scan of `small` (10,000 files, empty baseline: everything hashed),
#     with the files in the page cache, and truly cold (caches dropped) when
#     /proc/sys/vm/drop_caches is writable (root);
#   - the daemon's start-up scan of `small` into a persisted index, cold and
#     then warm, and the index's size on disk;
#   - warm rescan of `small` with nothing changed (baseline = the previous
#     scan, in memory);
#   - hashing throughput on `large` (one 512 MiB file) through the scanner,
#     against `b3sum --num-threads 1` (mmap, its default) and with
#     `--no-mmap`, interleaved run by run so that noise hits all alike.
#
# Environment: DATA (default /tmp/omirr-bench), RUNS (5), WORKLOADS (path to
# workloads.py, default ../shared/bench/workloads.py beside the repo),
# CARGO_TARGET_DIR (default /tmp/omirr-bench-target), MAX_LOAD (1.0: wait up
# to QUIET_WAIT seconds, default 300, for the 1-minute load average to fall
# below it before each measurement; the load seen is printed either way).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../../.." && pwd)
DATA=${DATA:-/tmp/omirr-bench}
RUNS=${RUNS:-5}
WORKLOADS=${WORKLOADS:-$repo/../shared/bench/workloads.py}
MAX_LOAD=${MAX_LOAD:-1.0}
QUIET_WAIT=${QUIET_WAIT:-300}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/omirr-bench-target}

case $DATA in "$repo"|"$repo"/*) echo "DATA must be outside the repo" >&2; exit 2;; esac

(cd "$repo" && cargo build --release -q -p omirr-sync --example scanbench)
bench=$CARGO_TARGET_DIR/release/examples/scanbench

if ! command -v b3sum >/dev/null; then
    cargo install -q b3sum || echo "b3sum unavailable: no reference figures" >&2
fi

for w in small large; do
    if [ ! -d "$DATA/$w" ]; then
        python3 "$WORKLOADS" gen "$w" "$DATA/$w"
        # Files changed within the racy window are re-hashed by design;
        # let the fresh ones age out of it.
        sleep 3
    fi
done
big=$DATA/large/big.bin

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
load() { cut -d' ' -f1 /proc/loadavg; }
quiet() {
    local waited=0
    while awk -v l="$(load)" -v m="$MAX_LOAD" 'BEGIN {exit !(l >= m)}' && [ "$waited" -lt "$QUIET_WAIT" ]; do
        sleep 5; waited=$((waited + 5))
    done
}
can_drop=no
if sync && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then can_drop=yes; fi
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# Wall time of a command in milliseconds.
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(df -T "$DATA" | awk 'NR==2 {print $2}') under $DATA"
echo "runs: $RUNS; can drop caches: $can_drop"

quiet
"$bench" cold "$DATA/small" >/dev/null # fills the page cache
cold=(); loads=()
for _ in $(seq "$RUNS"); do quiet; loads+=("$(load)"); cold+=("$("$bench" cold "$DATA/small" | field cold_ms)"); done
echo "small cold scan, page cache warm: median $(printf '%s\n' "${cold[@]}" | median) ms (runs: ${cold[*]}; load: ${loads[*]})"

if [ $can_drop = yes ]; then
    cold=(); loads=()
    for _ in $(seq "$RUNS"); do quiet; drop; loads+=("$(load)"); cold+=("$("$bench" cold "$DATA/small" | field cold_ms)"); done
    echo "small cold scan, caches dropped: median $(printf '%s\n' "${cold[@]}" | median) ms (runs: ${cold[*]}; load: ${loads[*]})"
fi

quiet
out=$("$bench" warm "$DATA/small" "$RUNS")
if echo "$out" | field hashed_files | grep -qv '^0$'; then echo "warm rescan hashed files:" >&2; echo "$out" >&2; exit 1; fi
warm=$(echo "$out" | field warm_ms)
echo "small warm rescan, nothing changed: median $(echo "$warm" | median) ms (runs: $(echo $warm); load: $(load))"

quiet
out=$("$bench" index "$DATA/small" "$RUNS")
if echo "$out" | grep index_warm | field hashed_files | grep -qv '^0$'; then echo "index rescan hashed files:" >&2; echo "$out" >&2; exit 1; fi
echo "small into a persisted index, cold: $(echo "$out" | grep index_cold | field index_cold_ms) ms"
warm=$(echo "$out" | grep index_warm | field index_warm_ms)
echo "small warm rescan through the persisted index: median $(echo "$warm" | median) ms (runs: $(echo $warm); load: $(load))"
echo "index size on disk for small: $(echo "$out" | field index_bytes) bytes"

quiet
"$bench" cold "$DATA/large" >/dev/null
command -v b3sum >/dev/null && b3sum --num-threads 1 "$big" >/dev/null
ours=(); b3=(); b3n=(); loads=()
for _ in $(seq "$RUNS"); do
    quiet; loads+=("$(load)")
    ours+=("$(ms "$bench" cold "$DATA/large")")
    if command -v b3sum >/dev/null; then
        b3+=("$(ms b3sum --num-threads 1 "$big")")
        b3n+=("$(ms b3sum --no-mmap --num-threads 1 "$big")")
    fi
done
mib=$(( $(stat -c %s "$big") >> 20 ))
rate() { awk -v m="$mib" -v t="$1" 'BEGIN {if (t == "n/a") print "n/a"; else printf "%.0f", m / (t / 1000)}'; }
o=$(printf '%s\n' "${ours[@]}" | median)
echo "large, page cache warm, wall ms incl. process start (load: ${loads[*]}):"
echo "  omirr scan:                    median $o ms = $(rate "$o") MiB/s (runs: ${ours[*]})"
if [ ${#b3[@]} -gt 0 ]; then
    b=$(printf '%s\n' "${b3[@]}" | median); bn=$(printf '%s\n' "${b3n[@]}" | median)
    echo "  b3sum --num-threads 1:         median $b ms = $(rate "$b") MiB/s (runs: ${b3[*]})"
    echo "  b3sum --no-mmap --num-threads 1: median $bn ms = $(rate "$bn") MiB/s (runs: ${b3n[*]})"
    awk -v o="$o" -v b="$b" -v n="$bn" 'BEGIN {printf "  omirr / b3sum: %.0f%% (mmap), %.0f%% (--no-mmap)\n", 100 * b / o, 100 * n / o}'
fi

if [ $can_drop = yes ]; then
    ours=(); b3=(); loads=()
    for _ in $(seq "$RUNS"); do
        quiet; loads+=("$(load)")
        drop; ours+=("$(ms "$bench" cold "$DATA/large")")
        if command -v b3sum >/dev/null; then drop; b3+=("$(ms b3sum --num-threads 1 "$big")"); fi
    done
    o=$(printf '%s\n' "${ours[@]}" | median)
    echo "large, caches dropped (load: ${loads[*]}):"
    echo "  omirr scan:            median $o ms = $(rate "$o") MiB/s (runs: ${ours[*]})"
    if [ ${#b3[@]} -gt 0 ]; then
        b=$(printf '%s\n' "${b3[@]}" | median)
        echo "  b3sum --num-threads 1: median $b ms = $(rate "$b") MiB/s (runs: ${b3[*]})"
    fi
fi
