# Shared by the set-up scripts: find or install Python >= 3.11 and the project's venv.
# Sourced, not run. Non-interactive: works as root on a fresh Debian/Ubuntu with no stdin.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TQ_VENV:-$ROOT/.venv}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

apt_install() {
  # Installs Debian packages that are missing; one apt-get update per run at most.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "${_TQ_APT_UPDATED:-}" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    _TQ_APT_UPDATED=1
  fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
}

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

ensure_venv() {
  # ensure_venv EXTRAS  e.g. ensure_venv "broker,fast,test"
  local extras="$1" py
  if ! py="$(find_python)"; then
    apt_install python3 python3-venv python3-pip
    py="$(find_python)" || { log "Python >= 3.11 is required"; return 1; }
  fi
  if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    "$py" -m venv "$VENV"
  fi
  local stamp="$VENV/.tq-installed-$extras"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    log "installing task-queue[$extras] into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip </dev/null
    "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]" </dev/null
    touch "$stamp"
  fi
}
