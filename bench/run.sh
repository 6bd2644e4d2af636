#!/usr/bin/env bash
# `make bench`: the measurements of "The Rust core pays for itself", then a summary with
# the ratios against their targets, the machine and the date.
#
#   1. examples/bench.rs       end to end on a throwaway Prosody on 127.0.0.1 (pinned to
#                              CPU 0, the load generator to CPU 1): direct, a readdress-only
#                              floor component (bench/mod_readdress_floor.lua) and proxied,
#                              interleaved; Prosody CPU per round trip and round trips/s,
#                              proxied/floor. Then memory per request held by a silent
#                              resource (100,000 held; RSS and Lua heap).
#   2. bench/shim_bench.lua    in process, SHIM_BENCH_RUNS runs (default 3): ns per forward
#                              and per reply through the shim with 200,000 outstanding,
#                              beside the floor handler and the call floor (the floor plus
#                              one call to C per stanza) in the same run (Lua 5.4).
#                              With CLIENT_PROXY_ORIGINAL=<path to prosody-modules'
#                              mod_client_proxy.lua> (its code stays out of this repository),
#                              each run also measures the original module the same way.
#   3. examples/route_cost.rs  the core alone in Rust: route cost by online resources and
#                              pending requests, bytes per pending request.
#
# Expects the release library and both examples built (the Makefile's bench target does
# that). Environment: TARGET_DIR (cargo's target dir, default ./target), CLIENT_PROXY_SO
# (default $TARGET_DIR/release/libclient_proxy.so), LUA_VERSION (default 5.4),
# SHIM_BENCH_RUNS, and each benchmark's own knobs (BENCH_*, SHIM_BENCH_*, ROUTE_COST_*;
# see the files).
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET_DIR=${TARGET_DIR:-$PWD/target}
export CLIENT_PROXY_SO=${CLIENT_PROXY_SO:-$TARGET_DIR/release/libclient_proxy.so}
LUA_VERSION=${LUA_VERSION:-5.4}
SHIM_BENCH_RUNS=${SHIM_BENCH_RUNS:-3}
examples=$TARGET_DIR/release/examples

for f in "$CLIENT_PROXY_SO" "$examples/bench" "$examples/route_cost"; do
	[ -f "$f" ] || { echo "bench: $f not built (run 'make bench')" >&2; exit 1; }
done

out=$(mktemp -d "${TMPDIR:-/tmp}/client-proxy-bench.XXXXXX")
trap 'rm -rf "$out"' EXIT

section() { printf '\n==== %s ====\n' "$1"; }
# Median of the numbers on stdin, one a line.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# verdict VALUE OP LIMIT: "met" or "NOT met".
verdict() { awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = (op == "<=") ? (v <= l) : (v >= l); print ok ? "met" : "NOT met" }'; }

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
[ -n "$cpu_model" ] || cpu_model=$(uname -m)
mem_total=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
virt=$(lscpu 2>/dev/null | sed -n 's/^Hypervisor vendor:[[:space:]]*//p' | head -n1)
if [ -n "$virt" ]; then virt=" ($virt virtual machine)"; fi
machine="$(nproc) CPUs $cpu_model$virt, $mem_total RAM, Linux $(uname -r)"
os=$( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || echo unknown)
prosody_version=$(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo unknown)
software="$os, Prosody $prosody_version, $(lua5.4 -v 2>&1 | head -n1 | cut -d' ' -f1-2), $(rustc --version 2>/dev/null | cut -d' ' -f1-2 || echo rustc ?)"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

section "bench: machine"
echo "date:     $started"
echo "machine:  $machine"
echo "software: $software"
echo "load:     $load_before (1/5/15 min load average before the runs; other work on the machine skews the figures)"
echo "library:  $CLIENT_PROXY_SO"

t0=$SECONDS
section "bench 1/3: end to end, direct / floor / proxied, and memory (examples/bench.rs)"
"$examples/bench" | tee "$out/e2e.txt"
t1=$SECONDS

section "bench 2/3: in process, shim vs floor with 200,000 outstanding (bench/shim_bench.lua x $SHIM_BENCH_RUNS)"
: > "$out/shim.txt"
if [ "$LUA_VERSION" = 5.4 ]; then
	for run in $(seq 1 "$SHIM_BENCH_RUNS"); do
		echo "-- run $run of $SHIM_BENCH_RUNS"
		lua5.4 bench/shim_bench.lua | tee -a "$out/shim.txt"
		if [ -n "${CLIENT_PROXY_ORIGINAL:-}" ]; then
			echo "-- run $run of $SHIM_BENCH_RUNS: the original module ($CLIENT_PROXY_ORIGINAL)"
			SHIM_BENCH_UNTRACKED=1 CLIENT_PROXY_SHIM="$CLIENT_PROXY_ORIGINAL" lua5.4 bench/shim_bench.lua | tee -a "$out/original.txt"
		fi
	done
else
	echo "skipped: the library is built for Lua $LUA_VERSION; Prosody's util.stanza in /usr/lib/prosody is for Lua 5.4" | tee "$out/shim.txt"
fi
t2=$SECONDS

section "bench 3/3: the core alone (examples/route_cost.rs)"
"$examples/route_cost" | tee "$out/route.txt"
t3=$SECONDS

# RATIO e2e <cpu p/f> <rate p/f> <cpu us direct> <floor> <proxied> <rt/s direct> <floor> <proxied>
read -r _ _ e2e_cpu e2e_rate cpu_d cpu_f cpu_p rate_d rate_f rate_p < <(grep '^RATIO e2e ' "$out/e2e.txt")
# RATIO memory <requests> <RSS B> <Lua heap B> <stanza B> <serialized B>
mem=$(grep '^RATIO memory ' "$out/e2e.txt" || true)
# RATIO shim <ratio> <shim fwd ns> <shim reply ns> <floor fwd ns> <floor reply ns> <heap B> <call floor/floor>
shim_col() { grep '^RATIO shim ' "$out/shim.txt" | awk -v c="$1" '{ print $c }' | median; }
route_bytes=$(sed -n 's/^SUMMARY route_cost: .*; \([0-9]*\) bytes per pending request.*/\1/p' "$out/route.txt")
route_distinct=$(sed -n 's/^SUMMARY route_cost: .*; \([0-9]* pending from distinct requesters: [0-9]* ns per forward, [0-9]* per reply\);.*/\1/p' "$out/route.txt")

section "bench: summary"
echo "date:     $started"
echo "machine:  $machine"
echo "software: $software"
echo "load:     $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo "times:    end to end $((t1 - t0))s, in process $((t2 - t1))s, core alone $((t3 - t2))s, total $((t3 - t0))s"
echo
if [ "$LUA_VERSION" = 5.4 ]; then
	shim_ratio=$(shim_col 3)
	fill=$(sed -n 's/^SUMMARY shim_bench: .* with \([0-9]*\) outstanding: .*/\1/p' "$out/shim.txt" | head -n1)
	printf 'in process, %s outstanding (median of %s runs):\n' "$fill" "$SHIM_BENCH_RUNS"
	printf '  ns per forward / reply: module %.0f / %.0f, floor %.0f / %.0f\n' "$(shim_col 4)" "$(shim_col 5)" "$(shim_col 6)" "$(shim_col 7)"
	printf '  (forward + reply) module/floor: %.2fx\n' "$shim_ratio"
	if [ -s "$out/original.txt" ]; then
		orig_ratio=$(grep '^RATIO shim ' "$out/original.txt" | awk '{ print $3 }' | median)
		orig_ns=$(grep '^RATIO shim ' "$out/original.txt" | awk '{ print $4 + $5 }' | median)
		vs=$(awk -v a="$shim_ratio" -v b="$orig_ratio" 'BEGIN { print a / b }')
		printf '  the original module: %.0f ns per forward + reply, %.2fx the floor\n' "$orig_ns" "$orig_ratio"
		printf '  module/original (each against the floor of its run): %.2fx   target <= 0.6: %s\n' "$vs" "$(verdict "$vs" "<=" 0.6)"
	else
		echo "  module/original: not measured (set CLIENT_PROXY_ORIGINAL to the original's mod_client_proxy.lua)"
	fi
	printf '  call floor/floor: %.2fx (the floor plus one call to C per stanza, doing nothing)\n' "$(shim_col 9)"
fi
printf 'the core alone (Rust, route_cost), %s\n' "${route_distinct:-?}"
printf 'end to end, Prosody on CPU 0 (median of the per-round ratios):\n'
printf '  Prosody CPU per round trip: direct %.1f us, floor %.1f us, proxied %.1f us\n' "$cpu_d" "$cpu_f" "$cpu_p"
printf '  round trips/s: direct %.0f, floor %.0f, proxied %.0f\n' "$rate_d" "$rate_f" "$rate_p"
printf '  CPU per round trip proxied/floor: %.3fx   target <= 1.05: %s\n' "$e2e_cpu" "$(verdict "$e2e_cpu" "<=" 1.05)"
printf '  round trips/s proxied/floor: %.3fx\n' "$e2e_rate"
if [ "$LUA_VERSION" = 5.4 ]; then
	# The same ratio from the in-process figures, which are far less noisy: what the module
	# costs per request and reply beyond the floor, over the floor's CPU per round trip.
	printf '  cross-check: 1 + (module - floor ns per forward+reply in process) / floor CPU per round trip = %.3fx\n' \
		"$(awk -v sf="$(shim_col 4)" -v sr="$(shim_col 5)" -v ff="$(shim_col 6)" -v fr="$(shim_col 7)" -v c="$cpu_f" \
			'BEGIN { print 1 + ((sf + sr) - (ff + fr)) / 1000 / c }')"
fi
if [ -n "$mem" ]; then
	read -r _ _ mem_n mem_rss mem_heap mem_stanza mem_text <<< "$mem"
	printf 'memory per outstanding get (%s held by a silent resource):\n' "$mem_n"
	printf '  RSS %s bytes   target <= 1024: %s\n' "$mem_rss" "$(verdict "$mem_rss" "<=" 1024)"
	printf '  of which Lua heap %s bytes (a whole stanza of that shape %s bytes, %s serialized; the module holds its payload), the core %s bytes (route_cost)\n' \
		"$mem_heap" "$mem_stanza" "$mem_text" "${route_bytes:-?}"
fi
echo
for f in e2e shim original route; do
	[ -f "$out/$f.txt" ] || continue
	sed -n 's/^SUMMARY //p' "$out/$f.txt"
done
