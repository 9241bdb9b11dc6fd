#!/usr/bin/env bash
# Installs the real components the end-to-end tests run against, and links them into
# .test-deps/bin where the tests look for them:
#   rotel-agent  the OTLP collector from the PyPI package rotel (pinned), in a private venv
#   prometheus   Debian's prometheus package (2.42), plus promtool
#   alertmanager Debian's prometheus-alertmanager package (0.25), plus amtool
#   chromium     Debian's chromium, run headless by the dashboard test
#   redis-server Debian's redis-server (7.0), plus redis-cli, for fleet mode
#   nft          Debian's nftables, only ever run in check mode (`nft -c -f`) on the block
#                list export: the tests never change the host's firewall
#   crowdsec     Debian's crowdsec (1.4.6), plus cscli: downloaded and unpacked, never
#                installed (its post-install script registers online and, offline, leaves dpkg
#                half-configured); the tests run its Local API alone on loopback
# Idempotent: a second run only checks that the links still work (well under a second).
# Nothing is started and no system service is enabled; each test starts its own instance on
# loopback ports with its own config and data directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS=$ROOT/.test-deps
BIN=$DEPS/bin
ROTEL_VERSION=0.0.1a15
mkdir -p "$BIN"

say() { printf 'test-deps: %s\n' "$*"; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    sudo_ apt-get update -qq
    apt_updated=1
  fi
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- rotel (needs CPython 3.11: the wheel is cp311, the binary links libpython3.11) ---
rotel_ok() { [ -x "$BIN/rotel-agent" ] && "$BIN/rotel-agent" --version >/dev/null 2>&1; }
if ! rotel_ok; then
  PY=
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      PY=$(command -v "$c"); break
    fi
  done
  if [ -z "$PY" ]; then
    say "installing python3.11"
    apt_install python3.11 python3.11-venv
    PY=$(command -v python3.11)
  fi
  if ! "$PY" -m venv --help >/dev/null 2>&1; then apt_install python3.11-venv; fi
  say "installing rotel==$ROTEL_VERSION with $PY"
  rm -rf "$DEPS/rotel-venv"
  "$PY" -m venv "$DEPS/rotel-venv"
  "$DEPS/rotel-venv/bin/pip" install -q --disable-pip-version-check "rotel==$ROTEL_VERSION"
  agent=$("$DEPS/rotel-venv/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')
  chmod +x "$agent"
  ln -sf "$agent" "$BIN/rotel-agent"
  if ldd "$agent" | grep -q 'not found'; then
    say "installing libpython3.11 for rotel-agent"
    apt_install libpython3.11
  fi
  rotel_ok || { say "rotel-agent does not run:"; "$BIN/rotel-agent" --version; exit 1; }
fi
say "rotel-agent: $("$BIN/rotel-agent" --version 2>&1 | head -1)"

# --- Prometheus (Debian package; the packaged service is never started) ---
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  say "installing prometheus"
  apt_install prometheus
fi
ln -sf "$(command -v prometheus)" "$BIN/prometheus"
ln -sf "$(command -v promtool)" "$BIN/promtool"
say "prometheus: $("$BIN/prometheus" --version 2>&1 | head -1)"

# --- Alertmanager (Debian package; the packaged service is never started) ---
if ! command -v prometheus-alertmanager >/dev/null || ! command -v amtool >/dev/null; then
  say "installing prometheus-alertmanager"
  apt_install prometheus-alertmanager
fi
ln -sf "$(command -v prometheus-alertmanager)" "$BIN/alertmanager"
ln -sf "$(command -v amtool)" "$BIN/amtool"
say "alertmanager: $("$BIN/alertmanager" --version 2>&1 | head -1)"

# --- Chromium (Debian package), for the dashboard page test ---
if ! command -v chromium >/dev/null; then
  say "installing chromium"
  apt_install chromium
fi
ln -sf "$(command -v chromium)" "$BIN/chromium"
say "chromium: $("$BIN/chromium" --version 2>/dev/null | head -1)"

# --- Redis (Debian package), for fleet mode; each test starts its own, without persistence ---
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  say "installing redis-server"
  apt_install redis-server redis-tools
fi
ln -sf "$(command -v redis-server)" "$BIN/redis-server"
ln -sf "$(command -v redis-cli)" "$BIN/redis-cli"
say "redis-server: $("$BIN/redis-server" --version 2>&1 | head -1)"

# --- nftables (the block list export is checked with `nft -c`, which applies nothing) ---
NFT=$(command -v nft || true)
[ -z "$NFT" ] && [ -x /usr/sbin/nft ] && NFT=/usr/sbin/nft
if [ -z "$NFT" ]; then
  say "installing nftables"
  apt_install nftables
  NFT=$(command -v nft || echo /usr/sbin/nft)
fi
ln -sf "$NFT" "$BIN/nft"
say "nft: $("$BIN/nft" --version 2>&1 | head -1)"

# --- CrowdSec (unpacked from Debian's package, never installed: see the header) ---
CS=$DEPS/crowdsec
cs_ok() { [ -x "$BIN/crowdsec" ] && [ -x "$BIN/cscli" ] && [ -f "$CS/etc/crowdsec/profiles.yaml" ] && "$BIN/cscli" version >/dev/null 2>&1; }
if ! cs_ok; then
  say "unpacking crowdsec"
  if [ -z "$apt_updated" ]; then sudo_ apt-get update -qq; apt_updated=1; fi
  tmp=$(mktemp -d)
  # apt-get download writes into the working directory, as the _apt user when it can.
  chmod 0777 "$tmp"
  (cd "$tmp" && apt-get download -qq crowdsec >/dev/null 2>&1)
  rm -rf "$CS"
  mkdir -p "$CS"
  dpkg-deb -x "$tmp"/crowdsec_*.deb "$CS"
  rm -rf "$tmp"
  ln -sf "$CS/usr/bin/crowdsec" "$BIN/crowdsec"
  ln -sf "$CS/usr/bin/cscli" "$BIN/cscli"
  cs_ok || { say "crowdsec does not run:"; "$BIN/cscli" version; exit 1; }
fi
say "crowdsec: $("$BIN/cscli" version 2>&1 | grep -m1 'version:' | sed 's/.*version: *//')"
