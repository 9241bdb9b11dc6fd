#!/usr/bin/env bash
# Runs the fuzz targets (cargo-fuzz, libFuzzer with AddressSanitizer), each for a bounded time:
#   routes        the route matcher, path normalisation and route templates
#   client_ip     X-Forwarded-For / Forwarded / X-Real-IP parsing
#   classify      whole responses: status, WWW-Authenticate, grpc-status in the head or
#                 trailers (exactly one event per request)
#   audit_verify  the audit-log verifier on any content (its answer consistent with the input)
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 20 s, every target)
#   FUZZ_RUNS=N     stop each target after N executions instead (e.g. 10000000)
#   FUZZ_GROW=1     write new inputs into the committed corpora (fuzz/corpus/TARGET); by
#                   default they go to a temporary directory and the corpora are only read
# Uses the machine's own toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags for the
# sanitizer; no nightly toolchain is needed or fetched) and installs cargo-fuzz when missing.
# A crash leaves its input in fuzz/artifacts/TARGET/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-20}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(routes client_ip classify audit_verify)
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  if [ "${FUZZ_GROW:-}" = 1 ]; then dirs=("corpus/$t"); else dirs=("$WORK/$t" "corpus/$t"); mkdir -p "$WORK/$t"; fi
  if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS"); else limit=(-max_total_time="$SECS"); fi
  echo "fuzz: $t (${FUZZ_RUNS:-${SECS}s}${FUZZ_RUNS:+ runs})"
  set +e
  cargo fuzz run "$t" "${dirs[@]}" -- "${limit[@]}" -print_final_stats=1 >"$WORK/$t.log" 2>&1
  rc=$?
  set -e
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$WORK/$t.log" || true
  if [ $rc -ne 0 ]; then
    tail -60 "$WORK/$t.log"
    echo "fuzz: $t failed (exit $rc); the input is in fuzz/artifacts/$t/"
    exit 1
  fi
done
echo "fuzz: no crash"
