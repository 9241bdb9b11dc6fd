#!/usr/bin/env bash
# The hostile-traffic suite at full size, in a release build (tests/hostile.rs): two scans of
# 50,000 random paths each (auth and non-auth prefixes, odd methods, percent-encoded bytes)
# and two sprays of 500,000 client addresses each (IPv4 and IPv6 through a trusted
# X-Forwarded-For), plus 64 KiB headers, 5,000-hop X-Forwarded-For and malformed grpc-status.
# Asserts: every answer equals the bare app's, the second scan adds no series, resident
# memory grows < 64 MiB across the second scan. Prints the figures. A few minutes.
# Usage: scripts/hostile.sh [SCALE]   (default 5; CI runs scale 1 in the debug test run)
set -euo pipefail
cd "$(dirname "$0")/.."
AUTHWATCH_HOSTILE_SCALE=${1:-5} cargo test --release --locked --all-features --test hostile -- --nocapture --test-threads 1
