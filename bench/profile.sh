#!/bin/bash
# CPU profile of each daemon over one bench phase, as bench/run times it:
# two omirrd on 127.0.0.1, a holds workload W, b starts empty; both start
# at once ("initial"); or, once converged, the workload's edit is made on
# a's live tree ("resync"); or both start empty and the workload is copied
# into a's live tree with `cp -a` ("ingest"); or, once converged, both are
# stopped and started again, timed until every peer is connected with
# nothing queued ("restart"). Prints wall time and each daemon's CPU time;
# leaves a.perf, b.perf in DIR. WORKLOAD is small, large or real, or
# million:N (N directories of 1,000 files of 64 bytes, as bench/run's
# million-file phase).
# usage: bench/profile.sh WORKLOAD DIR initial|resync|ingest|restart
#   then: perf script -i DIR/b.perf | bench/stages.py
# Needs perf, and a release build with line tables for readable stacks:
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -p omirrd
# ($OMIRRD names the binary; default target/release/omirrd). The wall time
# includes polling a digest of both trees, so only the CPU times and the
# shares are figures; docs/benchmarks.md ("Where the time goes") has a run.
set -eu
W=$1; D=$2; MODE=$3
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${OMIRRD:-$HERE/../target/release/omirrd}
WL=$HERE/workloads.py
# DIR is wiped: only a new directory or one this script made.
if [ -e "$D" ] && [ ! -e "$D/omirrd.conf" ]; then echo "profile.sh: $D exists and is not a profile directory" >&2; exit 2; fi
rm -rf "$D"; mkdir -p "$D"/{a,b}/root/data "$D"/{a,b}/state
gen() {
  case $W in
    million:*) python3 - "$1" "${W#million:}" <<'PY'
import os, sys
top, dirs = sys.argv[1], int(sys.argv[2])
for d in range(dirs):
    dd = os.path.join(top, f"d{d:04d}")
    os.makedirs(dd)
    for i in range(1000):
        name = f"f{i:04d}"
        with open(os.path.join(dd, name), "wb") as f:
            f.write((f"{d:04d}/{name} ".encode() * 6)[:64])
PY
    ;;
    *) python3 $WL gen $W "$1" ;;
  esac
}
if [ "$MODE" = ingest ]; then gen "$D/src"; else gen "$D/a/root/data/$W"; fi
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
pa=$(port); pb=$(port)
fa=$($BIN keygen --state-dir "$D/a/state"); fb=$($BIN keygen --state-dir "$D/b/state")
printf 'a 127.0.0.1:%s %s\nb 127.0.0.1:%s %s\n' $pa "$fa" $pb "$fb" > "$D/peers"
printf 'HOSTS = ( a b )\nw:\n/data -> ${HOSTS}\n' > "$D/omirrd.conf"
start() { $BIN -f --host $1 --config "$D/omirrd.conf" --peers "$D/peers" --root "$D/$1/root" --state-dir "$D/$1/state" >>"$D/$1.log" 2>&1 & echo $!; }
conv() { [ "$(python3 $WL digest "$D/a/root/data")" = "$(python3 $WL digest "$D/b/root/data")" ]; }
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
HZ=$(getconf CLK_TCK)
# NOPERF=1: the CPU times only (steal time on a shared VM makes wall
# times noisy; a daemon's CPU time is not charged for it).
perfs() { [ -n "${NOPERF:-}" ] && { PA=; PB=; return; }
          perf record -q ${PERFOPTS:--F 999 --call-graph dwarf,32768} -o "$D/a.perf" -p $A >/dev/null 2>&1 & PA=$!
          perf record -q ${PERFOPTS:--F 999 --call-graph dwarf,32768} -o "$D/b.perf" -p $B >/dev/null 2>&1 & PB=$!; sleep 0.3; }
settled() { for h in a b; do $BIN status --json --state-dir "$D/$h/state" > "$D/$h.status" 2>/dev/null || true; done
  python3 - "$D/a.status" "$D/b.status" <<'PY'
import json, sys
try:
    a, b = (json.load(open(f)) for f in sys.argv[1:])
except ValueError:
    sys.exit(1)
ok = all(p["connected"] and p["queue"] == 0 for s in (a, b) for p in s["peers"].values())
sys.exit(0 if ok and a["peers"]["b"]["cursor"] == b["last_seq"] and b["peers"]["a"]["cursor"] == a["last_seq"] else 1)
PY
}
A=$(start a); B=$(start b)
if [ "$MODE" = restart ]; then
  until conv; do sleep 0.5; done; until settled; do sleep 0.5; done
  kill $A $B; while kill -0 $A 2>/dev/null || kill -0 $B 2>/dev/null; do sleep 0.1; done
  t0=$(date +%s.%N); A=$(start a); B=$(start b); perfs; ca0=0; cb0=0
  until settled; do sleep 0.1; done
  t1=$(date +%s.%N); ca1=$(ticks $A); cb1=$(ticks $B)
elif [ "$MODE" = ingest ]; then
  sleep 2; perfs
  t0=$(date +%s.%N); ca0=$(ticks $A); cb0=$(ticks $B)
  cp -a "$D/src" "$D/a/root/data/$W"
elif [ "$MODE" = resync ]; then
  until conv; do sleep 0.5; done; sleep 2; perfs
  t0=$(date +%s.%N); ca0=$(ticks $A); cb0=$(ticks $B)
  python3 $WL edit $W "$D/a/root/data/$W" >/dev/null
else
  perfs; t0=$(date +%s.%N); ca0=$(ticks $A); cb0=$(ticks $B)
fi
if [ "$MODE" != restart ]; then
  until conv; do sleep 0.05; done
  t1=$(date +%s.%N); ca1=$(ticks $A); cb1=$(ticks $B)
fi
[ -n "$PA" ] && { kill -INT $PA $PB; wait $PA $PB 2>/dev/null || true; }
kill $A $B; wait $A $B 2>/dev/null || true
echo "$W $MODE: wall $(echo "$t1 - $t0" | bc) s; a cpu $(( (ca1-ca0)*1000/HZ )) ms; b cpu $(( (cb1-cb0)*1000/HZ )) ms"
