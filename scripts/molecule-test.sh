#!/usr/bin/env bash
# The Ansible distribution's proof: lint, then the Molecule scenario (three brokers plus a
# HAProxy/worker/Prometheus node as systemd containers): create, converge, idempotence,
# side_effect (leader kill, partition, rolling upgrade and rollback under load), verify, destroy.
#
# Non-interactive; exits non-zero on the first failure. Sets up what it needs first
# (scripts/molecule-setup.sh: docker engine, node image, deployment venv).
#   TQ_MOLECULE_SKIP_LINT=1     skip yamllint and ansible-lint
#   TQ_MOLECULE_SCENARIO=NAME   another scenario (default: default)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${TQ_DEPLOY_VENV:-$ROOT/.venv-deploy}"
SCENARIO="${TQ_MOLECULE_SCENARIO:-default}"
export TQ_WHEELHOUSE_DIR="${TQ_WHEELHOUSE_DIR:-$ROOT/wheelhouse}"

log() { printf '[molecule-test] %s\n' "$*" >&2; }
started=$(date +%s)

bash "$ROOT/scripts/molecule-setup.sh"

# molecule shells out to ansible-playbook, ansible-config and pytest by name.
export PATH="$VENV/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1

# The wheelhouses the nodes install offline, built fresh from this checkout with the nodes'
# Python minor version (Debian bookworm: 3.11).
PY311="$(command -v python3.11 || true)"
if [ -z "$PY311" ]; then
    log "python3.11 is needed on the controller to build wheels for Debian bookworm nodes"
    exit 1
fi
log "building the wheelhouses in $TQ_WHEELHOUSE_DIR"
rm -rf "$TQ_WHEELHOUSE_DIR"
"$PY311" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$TQ_WHEELHOUSE_DIR/broker" "$ROOT[broker]"
"$PY311" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$TQ_WHEELHOUSE_DIR/worker" "$ROOT"

if [ "${TQ_MOLECULE_SKIP_LINT:-0}" != 1 ]; then
    log "yamllint"
    yamllint --strict roles playbooks inventories molecule site.yml .yamllint .ansible-lint
    log "ansible-lint (production profile)"
    ansible-lint --offline site.yml playbooks roles molecule inventories
fi

# A scenario left behind by an interrupted run would collide (container names are global).
log "molecule test -s $SCENARIO"
status=0
molecule test -s "$SCENARIO" || status=$?
if [ "$status" -ne 0 ]; then
    molecule destroy -s "$SCENARIO" >/dev/null 2>&1 || true
fi
log "finished in $(( $(date +%s) - started ))s with status $status"
exit "$status"
