#!/usr/bin/env bash
# `make bench`: runs the three benchmarks in turn and prints a summary.
#
#   1. examples/bench.rs       end-to-end: proxied vs direct iq round trips against a
#                              throwaway Prosody on 127.0.0.1 (tokio-xmpp load generator)
#   2. bench/shim_bench.lua    per request+reply pair through the Lua shim + native core,
#                              and through bare native route() calls (Lua 5.4)
#   3. examples/route_cost.rs  the core's route cost in Rust by online resources and
#                              pending requests, and bytes per pending request
#
# Expects the release library and both examples built (the Makefile's bench target
# does that). Environment: TARGET_DIR (cargo's target dir, default ./target),
# CLIENT_PROXY_SO (default $TARGET_DIR/release/libclient_proxy.so), LUA_VERSION
# (default 5.4), and each benchmark's own knobs (BENCH_*, SHIM_BENCH_PAIRS,
# ROUTE_COST_*; see the files).
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET_DIR=${TARGET_DIR:-$PWD/target}
export CLIENT_PROXY_SO=${CLIENT_PROXY_SO:-$TARGET_DIR/release/libclient_proxy.so}
LUA_VERSION=${LUA_VERSION:-5.4}
examples=$TARGET_DIR/release/examples

for f in "$CLIENT_PROXY_SO" "$examples/bench" "$examples/route_cost"; do
	[ -x "$f" ] || [ -f "$f" ] || { echo "bench: $f not built (run 'make bench')" >&2; exit 1; }
done

out=$(mktemp -d "${TMPDIR:-/tmp}/client-proxy-bench.XXXXXX")
trap 'rm -rf "$out"' EXIT

section() { printf '\n==== %s ====\n' "$1"; }

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
[ -n "$cpu_model" ] || cpu_model=$(uname -m)
mem_total=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
machine="$(nproc) CPUs ($cpu_model), $mem_total RAM, Linux $(uname -r)"
os=$( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || echo unknown)
prosody_version=$(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo unknown)
started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

section "bench: machine"
echo "date:     $started"
echo "machine:  $machine"
echo "os:       $os; Prosody $prosody_version; $(lua5.4 -v 2>&1 | head -n1); $(rustc --version 2>/dev/null || echo rustc ?)"
echo "load:     $load_before (1/5/15 min load average before the runs; other work on the machine skews the figures)"
echo "library:  $CLIENT_PROXY_SO"

t0=$SECONDS
section "bench 1/3: end-to-end, proxied vs direct (examples/bench.rs)"
"$examples/bench" | tee "$out/e2e.txt"
t1=$SECONDS

section "bench 2/3: shim + native per stanza in Lua (bench/shim_bench.lua)"
if [ "$LUA_VERSION" = 5.4 ]; then
	lua5.4 bench/shim_bench.lua | tee "$out/shim.txt"
else
	echo "skipped: the library is built for Lua $LUA_VERSION; Prosody's util.stanza in /usr/lib/prosody is for Lua 5.4" | tee "$out/shim.txt"
fi
t2=$SECONDS

section "bench 3/3: core route cost in Rust (examples/route_cost.rs)"
"$examples/route_cost" | tee "$out/route.txt"
t3=$SECONDS

section "bench: summary"
echo "date:     $started"
echo "machine:  $machine"
echo "load:     $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo "times:    end-to-end $((t1 - t0))s, shim $((t2 - t1))s, route cost $((t3 - t2))s, total $((t3 - t0))s"
for f in e2e shim route; do
	sed -n 's/^SUMMARY //p' "$out/$f.txt"
done
