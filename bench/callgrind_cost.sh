#!/bin/sh
# `make bench-callgrind`: what a request and its reply cost in process, counted instead of
# timed. Runs bench/shim_bench.lua in its cost mode (SHIM_BENCH_COST) under callgrind with
# a cache model, once for the module's shim, once for the readdress-only floor and once for
# the call floor (the floor plus one call to C per stanza: the least any native core adds),
# all after the same fill of outstanding requests, and prints per request+reply:
# instructions, L1 instruction and data misses, last-level misses. Only what runs inside
# lua_resume is counted: the handlers, not the building of the stanzas they are given.
#
# Environment: SHIM_BENCH_FILL (default 100000: callgrind runs ~50x slower than the CPU),
# SHIM_BENCH_PAIRS (default 20000), CLIENT_PROXY_SO and CLIENT_PROXY_SHIM as for the bench.
# Counts vary a little from run to run (hash seeds, the collector's timing), far less than
# timings do. About 4 minutes on 2 CPUs (the runs go side by side).
set -eu
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
FILL=${SHIM_BENCH_FILL:-100000}
PAIRS=${SHIM_BENCH_PAIRS:-20000}
OUT=$(mktemp -d /tmp/callgrind_cost.XXXXXX)
for kind in shim floor callfloor; do
	SHIM_BENCH_COST=$kind SHIM_BENCH_FILL=$FILL SHIM_BENCH_PAIRS=$PAIRS \
		valgrind --tool=callgrind --toggle-collect=lua_resume --cache-sim=yes \
		--I1=32768,8,64 --D1=32768,8,64 --LL=8388608,16,64 \
		--callgrind-out-file="$OUT/$kind.out" lua5.4 bench/shim_bench.lua >"$OUT/$kind.log" 2>&1 &
done
wait
echo "In process, counted (callgrind, 32 KB L1i/L1d, 8 MB LL modelled): $FILL outstanding, $PAIRS requests + replies"
printf '%-10s %14s %12s %12s %10s\n' "" "instructions" "L1i misses" "L1d misses" "LL misses"
for kind in shim floor callfloor; do
	grep '^summary:' "$OUT/$kind.out" >/dev/null || { echo "$kind: no counts; see $OUT/$kind.log" >&2; exit 1; }
	# events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
	grep '^summary:' "$OUT/$kind.out" | awk -v kind="$kind" -v n="$PAIRS" '{
		printf "%-10s %14.0f %12.1f %12.1f %10.2f\n", kind, $2 / n, $5 / n, ($6 + $7) / n, ($8 + $9 + $10) / n }'
done
ir() { grep '^summary:' "$OUT/$1.out" | awk '{ print $2 }'; }
awk -v s="$(ir shim)" -v f="$(ir floor)" -v c="$(ir callfloor)" 'BEGIN {
	printf "instructions: shim/floor %.2fx; call floor/floor %.2fx\n", s / f, c / f }'
echo "(per request + reply; the shim's instructions / the floor's is the ratio noise cannot move)"
rm -rf "$OUT"
