#!/usr/bin/env bash
# Runs the fuzz targets (cargo-fuzz, libFuzzer with AddressSanitizer) for a bounded time each:
#   routes     the route matcher, path normalisation and route templates
#   client_ip  X-Forwarded-For / Forwarded / X-Real-IP parsing
#   classify   whole responses: status, WWW-Authenticate, grpc-status in the head or trailers
#              (exactly one event per request)
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 20 s, every target)
# Installs a nightly toolchain and cargo-fuzz when missing. Corpora live in fuzz/corpus/ and
# grow with each run; a crash leaves its input in fuzz/artifacts/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-20}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(routes client_ip classify)
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  echo "fuzz: $t for ${SECS}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units|==.*ERROR|SUMMARY)|panicked' || true
  # cargo fuzz exits non-zero on a crash; re-check so a filtered pipeline cannot hide it.
  if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
    echo "fuzz: $t crashed: $(ls artifacts/$t/crash-*)"
    exit 1
  fi
done
echo "fuzz: no crash"
