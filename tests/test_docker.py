"""The container deployment: Dockerfile, compose files, example configs, and the real image.

Fast tests check the files' structure (compose is validated as YAML, because the compose
plugin may not be installed). The slow tests build the image with scripts/docker-image.sh
(which, as root, installs docker, starts dockerd and builds the local Debian base when
needed, through scripts/molecule-setup.sh; TQ_SKIP_DOCKER_TESTS=1 skips them) and run broker,
worker and a three-node cluster as plain ``docker run`` containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from http.client import HTTPException
from pathlib import Path

import pytest
import yaml

from broker import config as cfg

ROOT = Path(__file__).resolve().parent.parent


def load_yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


# --------------------------------------------------------------------------- fast: files

def test_example_config_is_the_guides_and_valid():
    raw = load_yaml("config.yaml")
    config = cfg.load(ROOT / "config.yaml")
    assert config.broker.port == 6379 and config.broker.host == "0.0.0.0"
    assert config.persistence.data_dir == "/var/lib/task-queue"
    assert config.raft.enabled is False
    assert (config.api.rest_port, config.api.grpc_port) == (8080, 9090)
    assert config.monitoring.prometheus_port == 9091
    # Every section the guide's config.yaml shows, and nothing else.
    assert list(raw) == ["broker", "persistence", "raft", "api", "auth", "monitoring", "worker"]


def test_dockerfile_contract():
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) == 2 and froms[0].endswith("AS builder"), froms
    assert all("${BASE_IMAGE}" in line for line in froms)
    assert lines.index("ARG BASE_IMAGE=debian:bookworm-slim") < lines.index(froms[0])
    assert "pip wheel" in text and "'.[broker]'" in text
    assert "EXPOSE 6379 8080 9090 9091" in lines
    assert "USER taskqueue" in lines
    assert 'VOLUME ["/var/lib/task-queue"]' in lines
    assert "WORKDIR /app" in lines
    assert lines[-1] == 'CMD ["tq-broker", "--config", "config.yaml"]'
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tq-data"):
        assert entry in ignored


def test_compose_single_node_matches_the_guide():
    compose = load_yaml("docker-compose.yml")
    services = compose["services"]
    assert {"broker", "worker"} <= set(services)
    broker, worker = services["broker"], services["worker"]
    assert broker["build"] == "." and worker["build"] == "."
    for port in ("6379:6379", "8080:8080", "9091:9091"):
        assert port in broker["ports"]
    assert "./config.yaml:/app/config.yaml:ro" in broker["volumes"]
    assert "./data:/var/lib/task-queue" in broker["volumes"]
    assert worker["command"] == ["./tq-worker", "--broker-addr", "broker:6379"]
    assert "broker" in worker["depends_on"]
    # ./data is created by Docker as root: init-data hands it to the image's user first.
    init = services["init-data"]
    assert init["command"][:3] == ["chown", "-R", "10001:10001"]
    assert "./data:/var/lib/task-queue" in init["volumes"]
    assert broker["depends_on"]["init-data"]["condition"] == "service_completed_successfully"
    assert "/health" in " ".join(broker["healthcheck"]["test"])


def test_compose_cluster_three_raft_nodes():
    compose = load_yaml("docker-compose.cluster.yml")
    services = compose["services"]
    brokers = sorted(name for name in services if name.startswith("broker"))
    assert brokers == ["broker1", "broker2", "broker3"]
    secrets, node_ids, host_ports = set(), set(), set()
    for name in brokers:
        service = services[name]
        config_mount = next(v for v in service["volumes"] if v.endswith(":/app/config.yaml:ro"))
        path = ROOT / config_mount.split(":")[0]
        config = cfg.load(path)  # valid as the broker will read it
        raft = config.raft
        assert raft.enabled and raft.port == 6380
        others = {f"{other}:6379" for other in brokers if other != name}
        assert set(raft.peers) == others, (name, raft.peers)
        assert config.broker.advertise_host == name
        # Raft keeps its journal beside data_dir: both must be inside the volume.
        volume = next(v for v in service["volumes"] if v.endswith(":/var/lib/task-queue"))
        assert volume.split(":")[0] in compose["volumes"]
        assert Path(config.persistence.data_dir).parent == Path("/var/lib/task-queue")
        secrets.add(raft.secret)
        node_ids.add(raft.node_id)
        host_ports.update(p.split(":")[0] for p in service["ports"])
    assert len(secrets) == 1 and len(node_ids) == 3
    assert len(host_ports) == 12  # no two nodes publish the same host port
    worker = services["worker"]
    assert worker["command"][:2] == ["./tq-worker", "--broker-addr"]
    assert set(worker["command"][2].split(",")) == {f"{b}:6379" for b in brokers}


# --------------------------------------------------------------------------- slow: image

def _docker(*args, check=True, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


@pytest.fixture(scope="session")
def image():
    """Builds the image once per session with scripts/docker-image.sh."""
    if os.environ.get("TQ_SKIP_DOCKER_TESTS") == "1":
        pytest.skip("TQ_SKIP_DOCKER_TESTS=1")
    answers = bool(shutil.which("docker")) and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0
    if not answers and os.geteuid() != 0:
        pytest.skip("no docker daemon answers, and installing or starting one "
                    "(scripts/molecule-setup.sh) needs root")
    # As root, scripts/docker-image.sh installs docker and starts dockerd when needed (CI).
    # One tag per checkout: test runs in other clones on this machine build their own.
    checkout = hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]
    tag = os.environ.get("TQ_IMAGE", f"task-queue:test-{checkout}")
    started = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "scripts/docker-image.sh")], cwd=ROOT,
                          env=dict(os.environ, TQ_IMAGE=tag), capture_output=True, text=True,
                          timeout=1800, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == tag
    print(f"image {tag} built in {time.monotonic() - started:.0f}s")
    return tag


class Containers:
    """Containers and one network for a test, all removed (with their volumes) after it."""

    def __init__(self):
        self.prefix = f"tqtest-{uuid.uuid4().hex[:8]}"
        self.network = f"{self.prefix}-net"
        self.names: list[str] = []
        _docker("network", "create", self.network)

    def run(self, name: str, image: str, *args: str, options: tuple = ()) -> str:
        full = f"{self.prefix}-{name}"
        _docker("run", "-d", "--name", full, "--network", self.network,
                "--network-alias", name, *options, image, *args)
        self.names.append(full)
        return full

    def host_port(self, name: str, port: int) -> int:
        out = _docker("port", f"{self.prefix}-{name}", str(port)).stdout
        return int(out.splitlines()[0].rsplit(":", 1)[1])

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n" + _docker("logs", "--tail", "40", n, check=False).stdout
                         + _docker("logs", "--tail", "40", n, check=False).stderr
                         for n in self.names)

    def close(self):
        if self.names:
            _docker("rm", "-f", "-v", *self.names, check=False)
        # Named volumes (`-v PREFIX-x:/path`) outlive `rm -v`: remove this test's own.
        volumes = _docker("volume", "ls", "-q", "--filter", f"name={self.prefix}-",
                          check=False).stdout.split()
        if volumes:
            _docker("volume", "rm", *volumes, check=False)
        _docker("network", "rm", self.network, check=False)


@pytest.fixture
def containers():
    c = Containers()
    yield c
    c.close()


def http(method: str, url: str, body: dict | None = None, timeout: float = 5.0):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_for(predicate, timeout: float, what: str, logs=lambda: ""):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, ValueError, HTTPException) as exc:  # not up yet, reset, bad JSON
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{logs()}")


def task_status(port: int, task_id: str) -> str | None:
    """The task's status as this node sees it; None while the node has not applied the
    submit yet (a follower's read may trail the leader: 404 until it catches up)."""
    code, body = http("GET", f"http://127.0.0.1:{port}/api/v1/tasks/{task_id}")
    return body.get("status") if code == 200 else None


def healthy(port: int) -> bool:
    status, body = http("GET", f"http://127.0.0.1:{port}/health")
    return status == 200 and body["status"] == "healthy"


@pytest.mark.slow
def test_image_broker_and_worker_run_a_task_submitted_over_rest(image, containers):
    # The compose file's single node, as plain `docker run`: the image's default command
    # and config, the worker with the compose file's command.
    containers.run("broker", image, options=("-p", "127.0.0.1::8080",
                                             "-v", f"{containers.prefix}-data:/var/lib/task-queue"))
    rest = containers.host_port("broker", 8080)
    wait_for(lambda: healthy(rest), 60, "the broker's /health", containers.logs)
    compose = load_yaml("docker-compose.yml")
    containers.run("worker", image, *compose["services"]["worker"]["command"])

    status, task = http("POST", f"http://127.0.0.1:{rest}/api/v1/tasks",
                        {"type": "echo", "payload": {"from": "docker"}})
    assert status == 201, task

    def done():
        _, body = http("GET", f"http://127.0.0.1:{rest}/api/v1/tasks/{task['id']}")
        return body if body["status"] == "completed" else None

    final = wait_for(done, 60, "the task to complete", containers.logs)
    assert final["result"] == {"from": "docker"}
    assert final["worker"]

    # Non-root, data on the volume, the three commands on PATH and in /app.
    broker = f"{containers.prefix}-broker"
    assert _docker("exec", broker, "id", "-un").stdout.strip() == "taskqueue"
    listing = _docker("exec", broker, "ls", "/var/lib/task-queue").stdout.split()
    assert "CURRENT" in listing  # RocksDB's files
    depth = _docker("exec", broker, "./tq-admin", "--json", "queue-depth").stdout
    assert json.loads(depth)["default"]["completed"] == 1
    assert _docker("exec", broker, "tq-worker", "--help").returncode == 0

    # docker stop sends SIGTERM to tq-broker itself (PID 1): a clean, quick shutdown.
    started = time.monotonic()
    _docker("stop", "-t", "20", broker)
    assert time.monotonic() - started < 15
    assert "broker stopped" in _docker("logs", broker).stderr


@pytest.mark.slow
def test_image_three_node_cluster_from_the_compose_configs(image, containers):
    compose = load_yaml("docker-compose.cluster.yml")
    for name in ("broker1", "broker2", "broker3"):
        config = next(v for v in compose["services"][name]["volumes"]
                      if v.endswith(":/app/config.yaml:ro"))
        source, target = config.split(":")[:2]
        containers.run(name, image, options=(
            "-p", "127.0.0.1::8080", "-v", f"{ROOT / source}:{target}:ro",
            "-v", f"{containers.prefix}-{name}:/var/lib/task-queue"))
    ports = {name: containers.host_port(name, 8080) for name in ("broker1", "broker2", "broker3")}
    for port in ports.values():
        wait_for(lambda: healthy(port), 90, "a leader on every node", containers.logs)
    containers.run("worker", image, *compose["services"]["worker"]["command"])

    # Submitted to a follower or the leader, alike: followers forward to the leader.
    ids = []
    for port in ports.values():
        status, task = http("POST", f"http://127.0.0.1:{port}/api/v1/tasks",
                            {"type": "echo", "payload": {"port": port}})
        assert status == 201, task
        ids.append(task["id"])

    def all_done():
        port = ports["broker3"]
        return all(task_status(port, i) == "completed" for i in ids)

    wait_for(all_done, 60, "the tasks to complete", containers.logs)
    status, cluster = http("GET", f"http://127.0.0.1:{ports['broker1']}/api/v1/cluster")
    assert status == 200
    roles = sorted(node["role"] for node in cluster["nodes"])
    assert roles == ["follower", "follower", "leader"], cluster

    # docs/operations.md, "a node's disk is lost": stop it, remove data_dir and
    # data_dir.raft, start it with the same configuration: it re-syncs from the leader.
    leader = next(n["node_id"] for n in cluster["nodes"] if n["role"] == "leader")
    lost = next(f"broker{i}" for i in (3, 2, 1) if f"node{i}" != leader)
    node = lost.replace("broker", "node")
    _docker("stop", f"{containers.prefix}-{lost}")
    _docker("run", "--rm", "-v", f"{containers.prefix}-{lost}:/v", image, "sh", "-c",
            f"test -d /v/{node} && test -d /v/{node}.raft && rm -rf /v/{node} /v/{node}.raft")
    _docker("start", f"{containers.prefix}-{lost}")
    port = containers.host_port(lost, 8080)

    def resynced():
        # A node re-syncing from nothing answers 404 until the log or snapshot reaches it.
        return all(task_status(port, i) == "completed" for i in ids)

    wait_for(resynced, 90, f"{lost} to re-sync from the leader", containers.logs)


@pytest.mark.slow
def test_image_backup_in_the_container_restore_on_the_host(image, containers, tmp_path):
    """docs/operations.md's Docker procedure: backup.sh inside the broker container into a
    bind-mounted ./backups, restore.sh on the host into ./data, start again."""
    if os.geteuid() != 0:
        pytest.skip("bind-mounted folders must be chowned to the image's uid 10001: needs root")
    data, backups = tmp_path / "data", tmp_path / "backups"
    for folder in (data, backups):
        folder.mkdir()
        os.chown(folder, 10001, 10001)  # what the compose file's init-data service does
    broker = containers.run("broker", image, options=(
        "-p", "127.0.0.1::8080", "-v", f"{data}:/var/lib/task-queue",
        "-v", f"{backups}:/backups"))
    rest = containers.host_port("broker", 8080)
    wait_for(lambda: healthy(rest), 60, "the broker's /health", containers.logs)
    assert _docker("exec", broker, "./ops/health-check.sh", "-v").returncode == 0

    _, kept = http("POST", f"http://127.0.0.1:{rest}/api/v1/tasks", {"type": "echo"})
    backup = _docker("exec", broker, "./ops/backup.sh", "--backup-dir", "/backups",
                     check=False)
    assert backup.returncode == 0, backup.stderr
    tarball = backups / Path(backup.stdout.strip()).name
    assert tarball.exists()
    _, lost = http("POST", f"http://127.0.0.1:{rest}/api/v1/tasks", {"type": "echo"})

    _docker("stop", broker)
    restore = subprocess.run(["bash", str(ROOT / "scripts/ops/restore.sh"), "--no-service",
                              "--data-dir", str(data), str(tarball)],
                             capture_output=True, text=True, timeout=60)
    assert restore.returncode == 0, restore.stderr
    assert data.stat().st_uid == 10001  # owned like the data it replaced
    _docker("start", broker)
    rest = containers.host_port("broker", 8080)
    wait_for(lambda: healthy(rest), 60, "the restarted broker", containers.logs)
    assert http("GET", f"http://127.0.0.1:{rest}/api/v1/tasks/{kept['id']}")[0] == 200
    assert http("GET", f"http://127.0.0.1:{rest}/api/v1/tasks/{lost['id']}")[0] == 404


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (v1), whichever is installed."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_compose_files_pass_compose_config(name):
    compose = compose_command()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (the YAML "
                    "structure is checked by the tests above)")
    result = subprocess.run([*compose, "-f", name, "config", "-q"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_compose_up_as_the_guide_says(image, tmp_path):
    """`docker-compose up -d` with the repository's compose file and config.yaml, in a
    fresh folder (./data and ./backups created by Docker, handed over by init-data). Host
    ports are left to Docker, so a broker already on 6379/8080 here does not collide."""
    compose = compose_command()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    spec = load_yaml("docker-compose.yml")
    spec["services"]["broker"]["ports"] = ["8080"]  # container port: a random host port
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(spec))
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    project = f"tqtest{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, TQ_IMAGE=image)
    run = lambda *args, check=True: subprocess.run(  # noqa: E731
        [*compose, "-p", project, *args], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=300, check=check)
    try:
        run("up", "-d")
        port = int(run("port", "broker", "8080").stdout.strip().rsplit(":", 1)[1])
        logs = lambda: run("logs", "--tail", "30", check=False).stdout  # noqa: E731
        wait_for(lambda: healthy(port), 60, "the broker's /health", logs)
        assert (tmp_path / "data" / "CURRENT").exists()
        assert (tmp_path / "data").stat().st_uid == 10001
        status, task = http("POST", f"http://127.0.0.1:{port}/api/v1/tasks",
                            {"type": "echo", "payload": {"via": "compose"}})
        assert status == 201, task

        def done():
            _, body = http("GET", f"http://127.0.0.1:{port}/api/v1/tasks/{task['id']}")
            return body["status"] == "completed" and body

        assert wait_for(done, 60, "the worker to run the task", logs)["result"] == {
            "via": "compose"}
        backup = run("exec", "-T", "broker", "./ops/backup.sh", "--backup-dir", "/backups")
        assert list((tmp_path / "backups").glob("backup-*.tar.gz")), backup.stderr
    finally:
        run("down", "-v", check=False)


@pytest.mark.slow
def test_compose_cluster_up(image, tmp_path):
    """docker-compose.cluster.yml as it is (host ports left to Docker): three brokers elect
    a leader and the worker runs a task submitted to a follower."""
    compose = compose_command()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    spec = load_yaml("docker-compose.cluster.yml")
    brokers = ("broker1", "broker2", "broker3")
    for name in brokers:
        spec["services"][name]["ports"] = ["8080"]
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(spec))
    shutil.copytree(ROOT / "docker" / "cluster", tmp_path / "docker" / "cluster")
    project = f"tqtest{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, TQ_IMAGE=image)
    run = lambda *args, check=True: subprocess.run(  # noqa: E731
        [*compose, "-p", project, *args], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=300, check=check)
    try:
        run("up", "-d")
        logs = lambda: run("logs", "--tail", "30", check=False).stdout  # noqa: E731
        ports = {name: int(run("port", name, "8080").stdout.strip().rsplit(":", 1)[1])
                 for name in brokers}
        for port in ports.values():
            wait_for(lambda: healthy(port), 90, "a leader on every node", logs)
        leader = http("GET", f"http://127.0.0.1:{ports['broker1']}/health")[1]["leader"]
        follower = next(n for n in brokers if not leader.startswith(n + ":"))
        status, task = http("POST", f"http://127.0.0.1:{ports[follower]}/api/v1/tasks",
                            {"type": "echo", "payload": "cluster"})
        assert status == 201, task

        def done():
            _, body = http("GET", f"http://127.0.0.1:{ports[follower]}/api/v1/tasks/"
                           f"{task['id']}")
            return body["status"] == "completed"

        wait_for(done, 60, "the task to complete", logs)
        status_out = run("exec", "-T", "broker1", "./tq-admin", "cluster-status").stdout
        assert status_out.count("follower") == 2 and "leader" in status_out
    finally:
        run("down", "-v", check=False)
