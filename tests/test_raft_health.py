"""/health/leader on a real 3-node cluster: 200 only on a leader that heard from a majority
within the election timeout (check-quorum), so a deposed leader never answers 200 next to the
new one; plus the decision itself (broker.log.raft.quorum_contact)."""

from __future__ import annotations

import socket
import time

import pytest
import yaml

from tests.brokerproc import free_port
from tests.fault.cluster import Cluster


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
        return int(head.split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.fixture
def rest_cluster(tmp_path):
    cluster = Cluster(tmp_path, 3, election_timeout_ms=400)
    for node in cluster.nodes:
        node.config["api"]["rest_port"] = free_port()
        node.config_path.write_text(yaml.safe_dump(node.config))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def rest_port(cluster: Cluster, i: int) -> int:
    return cluster.nodes[i].config["api"]["rest_port"]


def leaders_by_health(cluster: Cluster) -> list[int]:
    return [i for i in range(3) if http_status(rest_port(cluster, i), "/health/leader") == 200]


@pytest.mark.slow
def test_a_paused_leader_answers_503_the_moment_it_resumes(rest_cluster):
    cluster = rest_cluster
    old = cluster.leader(20)
    deadline = time.monotonic() + 10
    while leaders_by_health(cluster) != [old]:
        assert time.monotonic() < deadline, leaders_by_health(cluster)
        time.sleep(0.05)
    for attempt in range(3):
        cluster.pause(old)
        try:
            new = cluster.leader(20, exclude=old)
            # A load balancer's check reaches the old leader while it is frozen; it is
            # answered the moment the process runs again, before it hears the new term.
            sock = socket.create_connection(("127.0.0.1", rest_port(cluster, old)), 2)
            sock.sendall(b"GET /health/leader HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        finally:
            cluster.resume(old)
        with sock:
            sock.settimeout(5)
            status = int(sock.recv(64).split()[1])
        assert status == 503, f"attempt {attempt}: the deposed leader answered {status}"
        assert http_status(rest_port(cluster, new), "/health/leader") in (200, 503)
        old = cluster.leader(20)


@pytest.mark.slow
def test_never_two_leaders_by_health_through_a_partition_and_its_heal(rest_cluster):
    """Cut the leader's Raft traffic (iptables on loopback, root only), then heal: in no
    sweep over the three nodes do two answer 200 on /health/leader."""
    from tests.fault.isolation import Isolation

    if not Isolation.available():
        pytest.skip("needs root, iptables with the cgroup match and a cgroup v2 hierarchy")
    cluster = rest_cluster
    old = cluster.leader(20)
    isolation = Isolation()
    sweeps: list[list[int]] = []

    def sweep_for(seconds: float, until=None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sweeps.append(leaders_by_health(cluster))
            if until is not None and until(sweeps[-1]):
                return

    try:
        isolation.isolate(cluster, old)
        sweep_for(15, until=lambda seen: len(seen) == 1 and seen[0] != old)
        assert sweeps[-1] != [old] and len(sweeps[-1]) == 1, sweeps[-5:]
        sweep_for(1.5)  # the isolated one keeps answering 503
    finally:
        isolation.heal(cluster)
    sweep_for(4)
    assert all(len(seen) <= 1 for seen in sweeps), [s for s in sweeps if len(s) > 1]
    cluster.leader(20)


def test_quorum_contact_decision():
    from broker.log.raft import quorum_contact

    peers = ["a:1", "b:1"]
    now = 100.0
    # no answer yet in this term (just elected): not a confirmed leader
    assert not quorum_contact(5, peers, {}, now, 0.4)
    # one fresh answer + itself = 2 of 3
    assert quorum_contact(5, peers, {"a:1": (5, 99.8)}, now, 0.4)
    # answers older than the window, or from an earlier term, do not count
    assert not quorum_contact(5, peers, {"a:1": (5, 99.5), "b:1": (4, 99.9)}, now, 0.4)
    # five members need two fresh peers
    five = ["a:1", "b:1", "c:1", "d:1"]
    assert not quorum_contact(2, five, {"a:1": (2, 99.9)}, now, 0.4)
    assert quorum_contact(2, five, {"a:1": (2, 99.9), "d:1": (2, 99.7)}, now, 0.4)
    # a cluster of one is its own majority
    assert quorum_contact(1, [], {}, now, 0.4)
