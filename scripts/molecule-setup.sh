#!/usr/bin/env bash
# Prepare this machine for the Molecule proof of the Ansible distribution.
#
# Idempotent and non-interactive (CI runs it as root, without stdin, on a fresh Debian 12):
#   1. apt packages: docker.io, debootstrap, zstd, python3-venv;
#   2. a docker daemon: reused when `docker info` answers, else dockerd started in the background;
#   3. the systemd node image (Debian bookworm) built with debootstrap and `docker import`,
#      skipped when the image exists; the rootfs tarball is cached under $TQ_MOLECULE_CACHE;
#   4. the deployment venv ($TQ_DEPLOY_VENV, default .venv-deploy) from requirements-deploy.txt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${TQ_MOLECULE_CACHE:-/var/cache/task-queue-molecule}"
IMAGE="${TQ_MOLECULE_IMAGE:-task-queue-molecule-node:bookworm}"
VENV="${TQ_DEPLOY_VENV:-$ROOT/.venv-deploy}"
SUITE="bookworm"
export DEBIAN_FRONTEND=noninteractive

log() { printf '[molecule-setup] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# ---------------------------------------------------------------- apt packages
need_pkgs=()
for pkg in docker.io debootstrap zstd python3-venv iptables; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$pkg")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    log "installing apt packages: ${need_pkgs[*]}"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" </dev/null >/dev/null
fi

# ---------------------------------------------------------------- docker daemon
if ! docker info >/dev/null 2>&1; then
    if [ -x /usr/sbin/dockerd ] || command -v dockerd >/dev/null 2>&1; then
        log "no docker daemon answers: starting dockerd in the background"
        mkdir -p "$CACHE_DIR"
        # setsid: the daemon must outlive this script and not share its process group.
        if [ "$(id -u)" -eq 0 ]; then
            setsid dockerd >"$CACHE_DIR/dockerd.log" 2>&1 </dev/null &
        else
            sudo -n setsid dockerd >"$CACHE_DIR/dockerd.log" 2>&1 </dev/null &
        fi
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && break
            sleep 1
        done
    fi
    if ! docker info >/dev/null 2>&1; then
        log "docker daemon did not come up; see $CACHE_DIR/dockerd.log"
        tail -n 30 "$CACHE_DIR/dockerd.log" >&2 || true
        exit 1
    fi
fi
log "docker daemon: $(docker info --format '{{.ServerVersion}}')"

# ---------------------------------------------------------------- node image
debian_mirror() {
    # The machine's own apt sources: deb822 files first, then one-line sources.
    local uri=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        uri="$(awk '
            /^URIs:/ { uris=$2 }
            /^Suites:/ { for (i=2; i<=NF; i++) if ($i=="bookworm") hit=1 }
            /^$/ { if (hit && uris!="") { print uris; exit } hit=0; uris="" }
            END { if (hit && uris!="") print uris }
        ' /etc/apt/sources.list.d/*.sources | head -n1)"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(awk '$1=="deb" && $0 ~ / bookworm / { for (i=2;i<=NF;i++) if ($i ~ /^https?:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list | head -n1)"
    fi
    if [ -z "$uri" ]; then
        log "cannot find a Debian bookworm mirror in this machine's apt sources"
        exit 1
    fi
    printf '%s\n' "$uri"
}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "node image $IMAGE exists"
else
    mkdir -p "$CACHE_DIR"
    tarball="$CACHE_DIR/rootfs-$SUITE.tar.zst"
    if [ ! -s "$tarball" ]; then
        mirror="$(debian_mirror)"
        log "debootstrap $SUITE from $mirror (about a minute)"
        rootfs="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
        trap 'rm -rf "$rootfs"' EXIT
        as_root debootstrap --variant=minbase \
            --include=systemd,systemd-sysv,python3,python3-apt,dbus,iproute2,procps,sudo,ca-certificates,curl,cron \
            "$SUITE" "$rootfs" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1 \
            || { tail -n 40 "$CACHE_DIR/debootstrap.log" >&2; exit 1; }
        # Point apt inside the image at the same mirror, and trim what a container does not need.
        printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$SUITE" "$mirror" "$SUITE" \
            >"$rootfs/etc/apt/sources.list"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        # An old mtime, so apt's cache_valid_time sees that the (empty) lists need an update.
        touch -d '2000-01-01' "$rootfs/var/lib/apt/lists"
        # Units that fail or make no sense in a container.
        for unit in systemd-remount-fs.service getty.target console-getty.service \
                    systemd-udevd.service systemd-udev-trigger.service; do
            ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
        done
        : >"$rootfs/etc/machine-id"
        tar -C "$rootfs" --numeric-owner -cf - . | zstd -q -T0 -o "$tarball.tmp"
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        trap - EXIT
    fi
    log "importing $tarball as $IMAGE"
    zstd -dc "$tarball" | docker import \
        --change 'CMD ["/lib/systemd/systemd"]' \
        --change 'ENV container=docker' \
        - "$IMAGE" >/dev/null
fi

# ---------------------------------------------------------------- deployment venv
PY="$(command -v python3.11 || command -v python3)"
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$ROOT/requirements-deploy.txt" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements-deploy.txt"
    printf '%s\n' "$want" >"$stamp"
fi
log "deployment venv ready: $("$VENV/bin/ansible" --version 2>/dev/null | sed -n 1p)"
