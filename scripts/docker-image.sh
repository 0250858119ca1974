#!/usr/bin/env bash
# Builds the task-queue container image without any registry:
#   1. a docker daemon and the local Debian bookworm image that the Molecule nodes use
#      (scripts/molecule-setup.sh: debootstrap + `docker import`, reused when present);
#   2. the base image $TQ_BASE_IMAGE (default task-queue-base:bookworm), derived from that
#      rootfs: systemd, dbus, cron, sudo and docs removed, flattened, a shell as its command;
#   3. package index access for the build: the host's CA bundle (TLS-inspecting proxies) and
#      PIP_INDEX_URL when set, or TQ_DOCKER_OFFLINE=1 with wheels in docker/wheels;
#   4. the project image $TQ_IMAGE (default task-queue:latest) from the Dockerfile.
#
#   bash scripts/docker-image.sh            # prints the image name on stdout when done
# Environment: TQ_IMAGE, TQ_BASE_IMAGE, TQ_MOLECULE_IMAGE, TQ_DOCKER_OFFLINE.
#
# Fully offline (the build reaches no package index), from a Debian bookworm / Python 3.11
# host of the same architecture that has the wheels or can download them:
#   pip download -d docker/wheels pip 'setuptools>=77' wheel '.[broker]'
#   rm -f docker/wheels/task_queue-*; TQ_DOCKER_OFFLINE=1 bash scripts/docker-image.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

IMAGE="${TQ_IMAGE:-task-queue:latest}"
BASE="${TQ_BASE_IMAGE:-task-queue-base:bookworm}"
NODE_IMAGE="${TQ_MOLECULE_IMAGE:-task-queue-molecule-node:bookworm}"
started=$(date +%s)

# ---------------------------------------------------------------- 1. daemon + node image
if ! docker info >/dev/null 2>&1 || ! docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
  log "docker daemon or $NODE_IMAGE missing: scripts/molecule-setup.sh"
  TQ_MOLECULE_IMAGE="$NODE_IMAGE" bash scripts/molecule-setup.sh >&2
fi

# The legacy builder when buildx is not installed (it handles this multi-stage file fine).
if ! docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=0; fi

# ---------------------------------------------------------------- 2. base image
# The same rootfs as the Molecule nodes, without what only a booted machine needs (systemd,
# dbus, cron, sudo) nor docs and man pages, flattened into one layer: a slim Debian with
# python3, apt, ca-certificates and curl (about 130 MB instead of 200).
log "base image $BASE (from $NODE_IMAGE)"
docker build -q --build-arg "NODE_IMAGE=$NODE_IMAGE" -t "$BASE" - >/dev/null <<'EOF_BASE'
ARG NODE_IMAGE
FROM ${NODE_IMAGE} AS trim
ENV DEBIAN_FRONTEND=noninteractive SUDO_FORCE_REMOVE=yes
RUN apt-get purge -y -qq --auto-remove systemd systemd-sysv dbus cron sudo python3-apt \
        iproute2 >/dev/null 2>&1 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* /usr/share/doc/* \
              /usr/share/man/* /usr/share/info/* \
    && find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'en*' -exec rm -rf {} + \
    && python3 -c 'import ssl, sqlite3, venv' && command -v curl
FROM scratch
COPY --from=trim / /
ENV LANG=C.UTF-8
CMD ["/bin/bash"]
EOF_BASE

# ---------------------------------------------------------------- 3. index access
# The build's pip trusts the CAs this host trusts (TLS-inspecting proxies), and uses the
# host's index when PIP_INDEX_URL is set. Put wheels in docker/wheels and set
# TQ_DOCKER_OFFLINE=1 to build with no index at all.
build_args=(--build-arg "BASE_IMAGE=$BASE")
ca="${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}"
if [ -s "$ca" ]; then
  cp "$ca" docker/ca.pem
  build_args+=(--build-arg PIP_CERT=/src/docker/ca.pem)
fi
[ -n "${PIP_INDEX_URL:-}" ] && build_args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
if [ "${TQ_DOCKER_OFFLINE:-0}" = 1 ]; then
  build_args+=(--build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/src/docker/wheels)
fi

# ---------------------------------------------------------------- 4. the image
log "docker build -t $IMAGE (base $BASE)"
docker build "${build_args[@]}" -t "$IMAGE" . >&2
log "built $IMAGE in $(( $(date +%s) - started ))s: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
echo "$IMAGE"
