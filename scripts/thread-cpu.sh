#!/usr/bin/env bash
# Where the CPU goes: one stack of the end-to-end setup (scripts/e2e-bench.sh: the release
# bench server on CPU 0 with one tokio worker, wrk and a rotel collector on CPU 1, mixed auth
# traffic, or session-heavy traffic with --mix session), measured for one run. It prints the
# throughput and p99; the CPU time each of the server's threads used during the run (from
# /proc/<pid>/task/*/schedstat, in nanoseconds), in total and per request, with their
# context switches per request; the collector's and wrk's CPU time on the other core; and the
# audit records authwatch dropped or lost. Use it to see what authwatch's background threads
# cost, or to compare two builds of the server side by side (BIN).
#
# Usage: scripts/thread-cpu.sh [--stack S] [--mix auth|session] [--sign-in-work-us N]
#                              [--session-work-us N] [--duration SECS] [--bin PATH]
#        (defaults: authwatch, the auth mix, 0 µs for sign-ins and session checks, 10 s,
#        target/release/examples/bench_server, built when missing). --mix, --sign-in-work-us
#        and --session-work-us are scripts/e2e-bench.sh's: the traffic (scripts/e2e/mix.lua,
#        or scripts/e2e/session-mix.lua's 90 % session checks) and the CPU each sign-in and
#        each session check spends.
# Example, two builds alternating five times:
#   for i in 1 2 3 4 5; do for b in /tmp/before /tmp/after; do
#     scripts/thread-cpu.sh --bin $b; done; done
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

STACK=authwatch
WORK=0
SESSION_WORK=0
MIX=auth
SECS=10
BIN=$ROOT/target/release/examples/bench_server
while [ $# -gt 0 ]; do
  case $1 in
    --stack) STACK=$2; shift 2 ;;
    --sign-in-work-us) WORK=$2; shift 2 ;;
    --session-work-us) SESSION_WORK=$2; shift 2 ;;
    --mix) MIX=$2; shift 2 ;;
    --duration) SECS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
done
# shellcheck source=e2e/harness.sh
. scripts/e2e/harness.sh
MIX_LUA=$(mix_script "$MIX")
install_debs wrk
scripts/test-deps.sh >/dev/null
[ -x "$BIN" ] || cargo build --release --locked --example bench_server

OUT=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$OUT"; }
trap cleanup EXIT
start_collector
start_server "$BIN" "$STACK" "$WORK" "$OUT/server"

# CPU nanoseconds (from schedstat: exact, where /proc/*/stat counts in clock ticks and misses
# threads that run between two ticks) and context switches per thread name of the server, and
# the collector's summed over its threads; sorted for `join`.
snap() {
  local t name ns sw
  for t in /proc/"$SERVER"/task/* /proc/"$COLLECTOR"/task/*; do
    # A thread that ends while the list is read (tokio's blocking pool) is skipped.
    if name=$(tr ' ' '_' <"$t/comm" 2>/dev/null) && ns=$(awk '{print $1}' "$t/schedstat" 2>/dev/null) &&
      sw=$(awk '/ctxt_switches/ {s += $2} END {print s}' "$t/status" 2>/dev/null); then
      case $t in /proc/"$COLLECTOR"/*) name="(collector)" ;; esac
      echo "$name $ns $sw"
    fi
  done | awk '{s[$1] += $2; w[$1] += $3} END {for (k in s) print k, s[k], w[k]}' | LC_ALL=C sort
}
snap >"$OUT/before"
read -r t0 s0 < <(cpu_ticks 0)
# wrk's own CPU time too (the load generator shares CPU 1 with the collector), from the
# rusage of the process that waits for it.
line=$(python3 - "$OUT/wrk-cpu" taskset -c 1 wrk -t1 -c32 -d"${SECS}s" -s "$MIX_LUA" \
  "http://127.0.0.1:$PORT" <<'EOF' | grep '^{'
import resource, subprocess, sys
out = subprocess.run(sys.argv[2:], capture_output=True, text=True, check=True).stdout
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{ru.ru_utime + ru.ru_stime:.2f}\n")
print(out, end="")
EOF
)
read -r t1 s1 < <(cpu_ticks 0)
snap >"$OUT/after"
HZ=$(getconf CLK_TCK)
python3 - "$line" "$STACK" "$WORK" "$MIX" "$SESSION_WORK" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
print(f"{sys.argv[2]}, {sys.argv[4]} mix, sign-in CPU {sys.argv[3]} µs,"
      f" session check CPU {sys.argv[5]} µs: {r['requests'] / r['seconds']:,.0f} req/s,"
      f" p50 {r['p50_us']:,} µs, p99 {r['p99_us']:,} µs, socket errors {r['socket_errors']}")
EOF
REQS=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["requests"])' "$line")
echo "CPU per thread during the ${SECS}-s run (seconds; µs and context switches per request):"
LC_ALL=C join -a2 "$OUT/before" "$OUT/after" | awk -v n="$REQS" '
  NF == 5 { d = $4 - $2; w = $5 - $3 } NF == 3 { d = $2; w = $3 }
  d > 0 { printf "  %-24s %6.2f  %7.3f µs  %6.3f switches\n", $1, d / 1e9, d / 1e3 / n, w / n }'
printf '  %-24s %6.2f\n' "(wrk)" "$(cat "$OUT/wrk-cpu")"
# Time the host took CPU 0 away from the server (see cpu_ticks in scripts/e2e/harness.sh).
awk -v d=$((s1 - s0)) -v hz="$HZ" 'BEGIN { printf "  %-24s %6.2f\n", "(stolen from CPU 0)", d / hz }'
lost=$(curl -s "http://127.0.0.1:$PORT/metrics" 2>/dev/null |
  grep -E '^auth_audit_(dropped|export_lost)_count_total' | sed 's/{[^}]*}//' || true)
[ -z "$lost" ] || echo "audit records: $(echo "$lost" | tr '\n' ' ')"
