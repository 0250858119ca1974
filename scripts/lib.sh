# Shared by the set-up scripts: find or install Python >= 3.11 and the project's venv.
# Sourced, not run. Non-interactive: works as root on a fresh Debian/Ubuntu with no stdin.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TQ_VENV:-$ROOT/.venv}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

# apt's and pip's output goes here, not to the terminal (hundreds of dpkg lines otherwise);
# a failing step prints its end.
SETUP_LOG="${TQ_SETUP_LOG:-$ROOT/.test-cache/setup.log}"

quietly() {
  # quietly DESCRIPTION COMMAND...: one progress line; the command's output to SETUP_LOG.
  local what="$1"; shift
  mkdir -p "$(dirname "$SETUP_LOG")"
  log "$what"
  printf '\n==> %s\n' "$what" >>"$SETUP_LOG"
  if ! "$@" >>"$SETUP_LOG" 2>&1 </dev/null; then
    log "failed: $what; the end of $SETUP_LOG:"
    tail -n 25 "$SETUP_LOG" >&2
    return 1
  fi
}

apt_install() {
  # Installs the Debian packages that are missing, without their recommends (python3-pip's
  # pull in gcc, perl and build-essential: 157 packages instead of a handful); one
  # apt-get update per run at most.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "${_TQ_APT_UPDATED:-}" ]; then
    quietly "apt-get update" as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _TQ_APT_UPDATED=1
  fi
  quietly "installing ${missing[*]} (apt output in $SETUP_LOG)" \
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}"
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
    apt_install python3 python3-venv  # the venv brings its own pip
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
  if ! venv_has "$extras"; then
    quietly "upgrading pip in $VENV" "$VENV/bin/python" -m pip install -q --upgrade pip
    quietly "installing task-queue[$extras] into $VENV (pip output in $SETUP_LOG)" \
      "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]"
    touch "$stamp"
  fi
}

venv_has() {
  # venv_has EXTRAS: an install of these extras (or more: test.sh's venv serves the
  # quickstart) is newer than pyproject.toml.
  local wanted="$1" stamp have extra ok
  for stamp in "$VENV"/.tq-installed-*; do
    [ -f "$stamp" ] && ! [ "$ROOT/pyproject.toml" -nt "$stamp" ] || continue
    have=",${stamp##*/.tq-installed-},"
    ok=1
    for extra in ${wanted//,/ }; do
      case "$have" in *",$extra,"*) ;; *) ok=0 ;; esac
    done
    [ $ok -eq 1 ] && return 0
  done
  return 1
}
