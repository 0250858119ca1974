# task-queue container image: tq-broker (default command), tq-worker and tq-admin.
#
#   docker build -t task-queue .                                    # with a registry
#   bash scripts/docker-image.sh                  # no registry: a locally made Debian base
#
# BASE_IMAGE is any Debian bookworm image (Python 3.11): debian:bookworm-slim where a registry
# is reachable, or the locally debootstrapped base that scripts/docker-image.sh makes.

ARG BASE_IMAGE=debian:bookworm-slim

# ------------------------------------------------------------------ stage 1: build wheels
FROM ${BASE_IMAGE} AS builder

# Package index settings for the build (empty: pip's defaults). PIP_CERT names a CA bundle
# in the context's docker/ folder, for networks whose TLS goes through an inspecting proxy
# (scripts/docker-image.sh copies the host's there). PIP_NO_INDEX=1 with
# PIP_FIND_LINKS=/src/docker/wheels builds from wheels put there instead, fully offline.
ARG PIP_INDEX_URL=
ARG PIP_CERT=
ARG PIP_NO_INDEX=
ARG PIP_FIND_LINKS=
ENV PIP_INDEX_URL=${PIP_INDEX_URL} \
    PIP_CERT=${PIP_CERT} \
    PIP_NO_INDEX=${PIP_NO_INDEX} \
    PIP_FIND_LINKS=${PIP_FIND_LINKS} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    DEBIAN_FRONTEND=noninteractive

RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# 1a. The dependencies' wheels, from pyproject.toml alone (with empty packages), so this
#     layer is rebuilt only when the dependencies change, not on every source edit.
COPY pyproject.toml /src/
COPY docker/ /src/docker/
# A current pip, and wheel: pysyncobj ships only a setup.py sdist.
RUN python3 -m venv /opt/task-queue \
    && /opt/task-queue/bin/pip install -q --upgrade pip "setuptools>=77" wheel
RUN for pkg in taskqueue broker worker admin; do mkdir -p $pkg && touch $pkg/__init__.py; done \
    && touch README.md LICENSE \
    && /opt/task-queue/bin/pip wheel -q --wheel-dir /wheels '.[broker]' \
    && rm -f /wheels/task_queue-*.whl

# 1b. The project's own wheel, then one venv installed from the wheels only. The runtime
#     stage copies the venv, nothing else. (pip stays in it: `FROM task-queue` +
#     `pip install your-handlers` extends the image.)
COPY . /src
RUN /opt/task-queue/bin/pip wheel -q --no-deps --wheel-dir /wheels . \
    && /opt/task-queue/bin/pip install -q --no-index --find-links /wheels 'task-queue[broker]' \
    && find /opt/task-queue -name __pycache__ -prune -exec rm -rf {} + \
    && /opt/task-queue/bin/python -m compileall -q /opt/task-queue/lib \
    && /opt/task-queue/bin/tq-broker --check-config /src/config.yaml

# ------------------------------------------------------------------ stage 2: runtime
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive
# The same Python the venv was made with (a no-op on the local base, which has it).
RUN if ! command -v python3 >/dev/null; then \
        apt-get update -qq \
        && apt-get install -y -qq --no-install-recommends python3 ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# A fixed uid/gid, so a bind-mounted data directory can be chowned from the host
# (`chown 10001:10001 ./data`; docker-compose.yml does it with its init-data service).
RUN groupadd --system --gid 10001 taskqueue \
    && useradd --system --uid 10001 --gid taskqueue --home-dir /var/lib/task-queue \
               --shell /usr/sbin/nologin taskqueue \
    && mkdir -p /var/lib/task-queue /backups /app \
    && chown taskqueue:taskqueue /var/lib/task-queue /backups /app

COPY --from=builder /opt/task-queue /opt/task-queue
ENV PATH=/opt/task-queue/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
COPY config.yaml /app/config.yaml
# The operator scripts (backup, restore, health check, migration): docs/operations.md.
COPY scripts/ops/ /app/ops/
# The guide runs ./tq-broker, ./tq-worker, ./tq-admin from /app: those work too.
RUN ln -s /opt/task-queue/bin/tq-broker /opt/task-queue/bin/tq-worker \
          /opt/task-queue/bin/tq-admin /app/

USER taskqueue
VOLUME ["/var/lib/task-queue"]
# 6379 worker protocol, 8080 REST, 9090 gRPC, 9091 Prometheus metrics.
EXPOSE 6379 8080 9090 9091

# No HEALTHCHECK here: the same image runs workers, which serve no /health. The compose
# files give the broker one (GET /health on 8080).

CMD ["tq-broker", "--config", "config.yaml"]
