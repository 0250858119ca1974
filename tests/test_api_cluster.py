"""The APIs on a real 3-node Raft cluster: health and leader checks for a load balancer,
writes through a follower's REST port, Raft figures in the metrics, gRPC cluster status."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.api import taskqueue_pb2 as pb
from broker.api import taskqueue_pb2_grpc as pb_grpc
from tests.api_support import wait_port
from tests.brokerproc import free_port
from tests.fault.cluster import Cluster

pytestmark = pytest.mark.slow


def start_api_cluster(root, overrides: dict | None = None) -> Cluster:
    c = Cluster(root, 3, overrides=overrides, election_timeout_ms=400)
    for node in c.nodes:  # every node gets its own API ports
        node.config["api"] = {"rest_port": free_port(), "grpc_port": free_port()}
        node.config["monitoring"] = dict(node.config.get("monitoring", {}),
                                         prometheus_port=free_port())
        node.config_path.write_text(yaml.safe_dump(node.config))
    c.start()
    for node in c.nodes:
        for port in (node.config["api"]["rest_port"], node.config["api"]["grpc_port"],
                     node.config["monitoring"]["prometheus_port"]):
            wait_port(port, 20)
    return c


@pytest.fixture
def cluster(tmp_path):
    c = start_api_cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def rest(node) -> str:
    return f"http://127.0.0.1:{node.config['api']['rest_port']}"


def leader_checks(cluster, alive) -> dict[int, int]:
    return {i: httpx.get(f"{rest(cluster.nodes[i])}/health/leader", timeout=5).status_code
            for i in alive}


def wait_single_leader(cluster, alive, timeout=30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = leader_checks(cluster, alive)
        leaders = [i for i, code in codes.items() if code == 200]
        if len(leaders) == 1 and all(code == 503 for i, code in codes.items()
                                     if i != leaders[0]):
            return leaders[0]
        time.sleep(0.2)
    raise AssertionError(f"no single leader: {leader_checks(cluster, alive)}")


def wait_healthy(node, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{rest(node)}/health", timeout=5)
        if r.status_code == 200:
            assert r.json()["status"] == "healthy"
            return
        assert r.json()["status"] in ("no_leader", "catching_up")
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)


def grpc_health(node) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{node.config['api']['grpc_port']}") as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                    timeout=5).status


def metric(node, name: str, labels: str = "") -> float:
    text = httpx.get(f"http://127.0.0.1:{node.config['monitoring']['prometheus_port']}"
                     "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.split()[-1])
    raise KeyError(name + labels)


def test_health_leader_check_follows_the_leader(cluster):
    leader = wait_single_leader(cluster, range(3))
    follower = (leader + 1) % 3
    for i in range(3):
        wait_healthy(cluster.nodes[i])
    r = httpx.get(f"{rest(cluster.nodes[follower])}/health/leader", timeout=5)
    assert r.json()["status"] == "not_leader"
    assert r.json()["leader"] == cluster.nodes[leader].addr

    # A write through a follower's REST port is forwarded to the leader.
    created = httpx.post(f"{rest(cluster.nodes[follower])}/api/v1/tasks",
                         json={"type": "echo", "payload": {"via": "follower"}}, timeout=10)
    assert created.status_code == 201, created.text
    cluster.wait_converged(20)
    got = httpx.get(f"{rest(cluster.nodes[leader])}/api/v1/tasks/{created.json()['id']}")
    assert got.status_code == 200

    # Raft figures in the metrics; cluster status over gRPC from a follower.
    assert metric(cluster.nodes[leader], "tq_raft_role", '{role="leader"}') == 1
    assert metric(cluster.nodes[follower], "tq_raft_role", '{role="follower"}') == 1
    assert metric(cluster.nodes[follower], "tq_raft_is_leader") == 0
    assert metric(cluster.nodes[leader], "tq_raft_term") >= 1
    assert metric(cluster.nodes[follower], "tq_raft_applied_index") >= 1
    with grpc.insecure_channel(
            f"127.0.0.1:{cluster.nodes[follower].config['api']['grpc_port']}") as ch:
        status = pb_grpc.TaskQueueStub(ch).ClusterStatus(pb.ClusterStatusRequest(), timeout=5)
    assert status.mode == "raft" and status.role == "follower"
    assert status.leader == cluster.nodes[leader].addr and len(status.nodes) == 3
    cluster_json = httpx.get(f"{rest(cluster.nodes[follower])}/api/v1/cluster").json()
    assert cluster_json["mode"] == "raft" and len(cluster_json["nodes"]) == 3

    # The leader dies: the survivors elect another, and the check moves with it.
    cluster.kill(leader)
    survivors = [i for i in range(3) if i != leader]
    new_leader = wait_single_leader(cluster, survivors)
    assert new_leader != leader
    wait_healthy(cluster.nodes[new_leader])

    # Only one node left: no quorum, so no leader; the node says it cannot serve.
    cluster.kill(new_leader)
    last = next(i for i in survivors if i != new_leader)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.get(f"{rest(cluster.nodes[last])}/health", timeout=5)
        if r.status_code == 503:
            break
        time.sleep(0.2)
    assert r.status_code == 503 and r.json()["status"] == "no_leader", r.text
    assert httpx.get(f"{rest(cluster.nodes[last])}/health/leader").status_code == 503


def test_a_node_resyncing_after_a_lost_disk_never_answers_not_found(tmp_path):
    """docs/operations.md, "a node's disk is lost": until the wiped node has re-synced (here
    from a snapshot: the leader compacted its log), a task it has not received yet is
    UNAVAILABLE, not a false 404, and /health keeps load balancers off it."""
    cluster = start_api_cluster(tmp_path, {"raft": {"snapshot_min_entries": 100}})
    try:
        leader = wait_single_leader(cluster, range(3))
        for node in cluster.nodes:
            wait_healthy(node)
        ids = []
        for batch in range(150):  # one log entry each: past snapshot_min_entries
            tasks = [{"type": "echo", "payload": {"batch": batch, "pad": "x" * 1000}}
                     for _ in range(40)]
            r = httpx.post(f"{rest(cluster.nodes[leader])}/api/v1/tasks/bulk",
                           json={"tasks": tasks}, timeout=30)
            assert r.status_code == 200, r.text
            ids += [t["id"] for t in r.json()["results"]]
        probes = [ids[0], ids[len(ids) // 2], ids[-1]]

        lost = (leader + 1) % 3
        node = cluster.nodes[lost]
        node.stop()
        data_dir = Path(node.config["persistence"]["data_dir"])
        shutil.rmtree(data_dir)
        shutil.rmtree(data_dir.with_name(data_dir.name + ".raft"))

        def probe() -> set:
            """GET every probe task: the task, or UNAVAILABLE; never NOTFOUND."""
            codes = set()
            for task_id in probes:
                r = httpx.get(f"{rest(node)}/api/v1/tasks/{task_id}", timeout=5)
                codes.add(r.status_code)
                if r.status_code == 200:
                    assert r.json()["id"] == task_id
                else:
                    assert (r.status_code, r.json()["error"]["code"]) == (
                        503, "UNAVAILABLE"), r.text
            return codes

        # The others frozen: the empty node starts and serves, but can learn nothing yet.
        others = [i for i in range(3) if i != lost]
        for i in others:
            cluster.pause(i)
        cluster._launch(node)
        wait_port(node.config["api"]["rest_port"], 30)
        wait_port(node.config["monitoring"]["prometheus_port"], 30)
        for _ in range(5):
            assert probe() == {503}
            assert httpx.get(f"{rest(node)}/health", timeout=5).status_code == 503
            time.sleep(0.2)
        assert metric(node, "tq_raft_caught_up") == 0
        assert grpc_health(node) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert httpx.get(f"{rest(node)}/api/v1/cluster", timeout=5).json()["caught_up"] is False
        listing = httpx.get(f"{rest(node)}/api/v1/tasks", timeout=5).json()
        assert listing["tasks"] == [] and listing["read_from"]["caught_up"] is False

        for i in others:
            cluster.resume(i)
        deadline = time.monotonic() + 60
        while True:
            probe()
            health = httpx.get(f"{rest(node)}/health", timeout=5)
            if health.status_code == 200:
                break
            assert health.json()["status"] in ("no_leader", "catching_up"), health.text
            assert time.monotonic() < deadline, (health.text, node.logs()[-3000:])
            time.sleep(0.05)

        assert probe() == {200}
        assert metric(node, "tq_raft_caught_up") == 1
        deadline = time.monotonic() + 10  # gRPC's health service re-reads it every second
        while grpc_health(node) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        for task_id in ids[::97]:  # healthy: it has everything it did not have before
            assert httpx.get(f"{rest(node)}/api/v1/tasks/{task_id}",
                             timeout=5).status_code == 200
        assert httpx.get(f"{rest(node)}/api/v1/cluster", timeout=5).json()["caught_up"] is True
    finally:
        cluster.stop()
