#!/usr/bin/env bash
# Soak (tests/soak.rs) in a release build: the axum example exporting to a real rotel collector
# under mixed auth traffic (failures, 429s, lockouts, invalid tokens, cancellations), resident
# memory sampled every second. Default: a 390 s warm-up (every 30-s slot of the 5-minute
# windows used once, and a margin) then 600 s measured; asserts growth <= 2 % and no upward trend after the
# warm-up, no audit record dropped, and the collector's final counts equal what the clients
# saw. Prints every sample.
# Usage: scripts/soak.sh [MEASURED_SECS] [WARMUP_SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
MEASURED=${1:-600}
WARMUP=${2:-390}
scripts/test-deps.sh >/dev/null
# `cargo test --test soak` does not build the examples it runs.
cargo build --release --locked --all-features --example axum
AUTHWATCH_SOAK_SECS=$((WARMUP + MEASURED)) AUTHWATCH_SOAK_WARMUP_SECS=$WARMUP \
  cargo test --release --locked --all-features --test soak -- --nocapture
