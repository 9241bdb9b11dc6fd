# The end-to-end harness shared by scripts/e2e-bench.sh, scripts/thread-cpu.sh and
# scripts/instructions.sh (sourced, not run): a rotel collector and the load generator on
# CPU 1, a bench server on CPU 0, on free loopback ports. The caller sets ROOT, OUT and PIDS
# (killed on exit).

# install_debs CMD...: installs the Debian packages of the same name for the commands that
# are missing (wrk, valgrind), with sudo unless root.
install_debs() {
  local missing=() c
  for c in "$@"; do command -v "$c" >/dev/null || missing+=("$c"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  printf 'installing %s\n' "${missing[*]}"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# mix_script MIX: the wrk script of the traffic mix named MIX (`--mix` of the scripts): `auth`,
# scripts/e2e/mix.lua (every kind of auth request, sign-ins the most); `session`,
# scripts/e2e/session-mix.lua (90 % session checks, get-session and the guarded /api/me, and
# 10 % sign-ins).
mix_script() {
  case $1 in
    auth) echo scripts/e2e/mix.lua ;;
    session) echo scripts/e2e/session-mix.lua ;;
    *) echo "unknown mix $1 (auth or session)" >&2; return 2 ;;
  esac
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq "${WAIT_TRIES:-200}"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on $1"; return 1
}

# A rotel collector (blackhole exporter) on CPU 1; sets GRPC (its OTLP/gRPC port) and
# COLLECTOR (its pid).
# With handlers that cost CPU (sign-ins or session checks: WORK or SESSION_WORK > 0) the
# collector runs at the idle scheduling class (SCHED_IDLE): it shares CPU 1 with wrk, and at
# normal priority its batches (slices of up to 4 ms, measured with `perf sched`) held wrk off
# the CPU, so wrk read responses late and counted that as the server's latency. wrk leaves it
# most of the core there, and it keeps up.
# With free handlers (both 0) wrk leaves it little: at the idle class it fell behind on the
# audit records (the export lost up to 40 % of them in a round, which spares the server the work of
# sending them), so there it runs at normal priority and keeps up, at the price of wrk's core.
# In production the collector runs elsewhere. E2E_COLLECTOR_SCHED=idle|normal overrides.
start_collector() {
  local http sched=() default=normal
  [ "${WORK:-0}" = 0 ] && [ "${SESSION_WORK:-0}" = 0 ] || default=idle
  if [ "${E2E_COLLECTOR_SCHED:-$default}" = idle ]; then sched=(chrt --idle 0); fi
  GRPC=$(free_port)
  http=$(free_port)
  "${sched[@]}" taskset -c 1 "$ROOT/.test-deps/bin/rotel-agent" start \
    --otlp-grpc-endpoint "127.0.0.1:$GRPC" --otlp-http-endpoint "127.0.0.1:$http" \
    --exporter blackhole >"$OUT/rotel.log" 2>&1 &
  COLLECTOR=$!
  PIDS+=("$COLLECTOR")
  wait_port "$GRPC"
}

# start_server BIN STACK SIGN_IN_WORK_US LOG_PREFIX: the bench server on CPU 0 with one tokio
# worker, exporting OTLP to the collector every 5 s, each session check spending SESSION_WORK
# µs of CPU (default 0), then a 2-s warm-up with the traffic mix (MIX_LUA, default
# scripts/e2e/mix.lua; CONNS connections, default 32); sets PORT and SERVER (its pid).
# SERVER_WRAP (an array, default empty) is put in front of the server's command
# (scripts/instructions.sh runs it under valgrind).
start_server() {
  PORT=$(free_port)
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$GRPC" OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
    OTEL_METRIC_EXPORT_INTERVAL=5000 \
    taskset -c 0 "${SERVER_WRAP[@]}" "$1" --stack "$2" --port "$PORT" --workers 1 \
    --sign-in-work-us "$3" --session-work-us "${SESSION_WORK:-0}" >"$4.out" 2>"$4.err" &
  SERVER=$!
  PIDS+=("$SERVER")
  wait_port "$PORT"
  # Warm-up: connections, allocator, the first windows.
  taskset -c 1 wrk -t1 -c"${CONNS:-32}" -d2s -s "${MIX_LUA:-scripts/e2e/mix.lua}" "http://127.0.0.1:$PORT" >/dev/null
}

# cpu_ticks CPU: that CPU's busy-or-idle and stolen clock ticks from /proc/stat, "total steal".
# On a virtual machine the host takes a CPU away now and then (steal time); the server can do
# no work then, so a run's steal on CPU 0 is part of its result, and the same for every stack.
cpu_ticks() {
  awk -v cpu="cpu$1" '$1 == cpu { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9 }' /proc/stat
}
