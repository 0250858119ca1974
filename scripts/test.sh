#!/usr/bin/env bash
# Runs the whole test suite: unit and integration tests, the fault-injection suite, and the
# Molecule deployment scenario. Installs what it needs (root on Debian/Ubuntu, no stdin).
#   bash scripts/test.sh            everything (what CI runs)
#   bash scripts/test.sh -m "not slow"   any pytest arguments: the fast inner loop, no Molecule
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

# Install per need: docker-compose (and through it docker.io, containerd and ~100 more
# packages) only serves tests/test_docker.py's slow tests, which start the compose files for
# real; the fast loop (-m "not slow") runs no container.
fast_only=0
for arg in "$@"; do case "$arg" in *"not slow"*) fast_only=1 ;; esac; done
apt_install openssl iptables iproute2 procps curl jq
[ $fast_only -eq 1 ] || apt_install docker-compose
# tests/test_dashboard.py drives the /ui pages in a real headless browser (no browser download).
apt_install chromium chromium-driver
ensure_venv "broker,fast,test"
# node and npm: tests/test_redis_clients_node.py runs node-redis and ioredis from npm.
command -v npm >/dev/null || apt_install nodejs npm

status=0
log "pytest ${*:-(all tests)}"
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?

if [ $# -eq 0 ] && [ -f scripts/molecule-test.sh ] && [ "${TQ_SKIP_MOLECULE:-0}" != 1 ]; then
  log "Molecule deployment scenario"
  bash scripts/molecule-test.sh || status=$?
fi
if [ $status -eq 0 ]; then log "all tests passed"; else log "FAILED (exit $status)"; fi
exit $status
