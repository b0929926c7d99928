#!/bin/bash
# CPU profile of each daemon over one bench phase, as bench/run times it:
# two omirrd on 127.0.0.1, a holds workload W, b starts empty; both start
# at once ("initial"); or, once converged, the workload's edit is made on
# a's live tree ("resync"). Prints wall time and each daemon's CPU time;
# leaves a.perf, b.perf in DIR.
# usage: bench/profile.sh WORKLOAD DIR initial|resync
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
python3 $WL gen $W "$D/a/root/data/$W"
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
A=$(start a); B=$(start b)
if [ "$MODE" = resync ]; then
  until conv; do sleep 0.5; done; sleep 2; perfs
  t0=$(date +%s.%N); ca0=$(ticks $A); cb0=$(ticks $B)
  python3 $WL edit $W "$D/a/root/data/$W" >/dev/null
else
  perfs; t0=$(date +%s.%N); ca0=$(ticks $A); cb0=$(ticks $B)
fi
until conv; do sleep 0.05; done
t1=$(date +%s.%N); ca1=$(ticks $A); cb1=$(ticks $B)
[ -n "$PA" ] && { kill -INT $PA $PB; wait $PA $PB 2>/dev/null || true; }
kill $A $B; wait $A $B 2>/dev/null || true
echo "$W $MODE: wall $(echo "$t1 - $t0" | bc) s; a cpu $(( (ca1-ca0)*1000/HZ )) ms; b cpu $(( (cb1-cb0)*1000/HZ )) ms"
