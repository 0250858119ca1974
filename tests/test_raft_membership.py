"""Membership while serving: add a fourth node, then remove the leader (it hands over first)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from taskqueue.client import Client
from tests.brokerproc import ROOT, BrokerProcess, free_port
from tests.fault.cluster import SECRET, Cluster

pytestmark = pytest.mark.slow


def tq_admin(command, config_path, *args) -> subprocess.CompletedProcess:
    """What an operator runs on a broker node (tq-admin delegates to broker.log.raft_admin)."""
    return subprocess.run([sys.executable, "-m", "admin.cli", command, "--config",
                           str(config_path), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_add_a_node_then_remove_the_leader(tmp_path):
    cluster = Cluster(tmp_path, 3, election_timeout_ms=500)
    cluster.start()
    fourth = None
    try:
        cluster.leader(20)
        with Client(cluster.addrs) as c:
            for i in range(100):
                c.submit("t", i, queue="before")
        port, raft_port = free_port(), free_port()
        fourth = BrokerProcess(tmp_path / "n4", {
            "broker": {"port": port},
            "raft": {"enabled": True, "node_id": "n4", "peers": cluster.addrs,
                     "port": raft_port,
                     "peer_raft_ports": [f"127.0.0.1:{p}" for p in cluster.raft_ports],
                     "secret": SECRET, "election_timeout_ms": 500}}, name="n4")
        added = tq_admin("add-node", cluster.nodes[0].config_path, f"127.0.0.1:{raft_port}")
        assert added.returncode == 0, added.stdout + added.stderr
        fourth.start()
        deadline = time.monotonic() + 20
        while True:
            with Client(fourth.addr) as c:
                if c.queues().get("before", {}).get("pending") == 100:
                    break
            assert time.monotonic() < deadline, "the new node did not catch up"
            time.sleep(0.2)

        leader = cluster.leader(20)
        follower = (leader + 1) % 3
        removed = tq_admin("remove-node", cluster.nodes[follower].config_path,
                           f"127.0.0.1:{cluster.raft_ports[leader]}")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert "transferring leadership first" in removed.stdout
        remaining = [cluster.addrs[i] for i in range(3) if i != leader] + [fourth.addr]
        with Client(remaining, reply_timeout=10) as c:
            for i in range(50):
                c.submit("t", i, queue="after")
            status = c.cluster()
        assert len(status["nodes"]) == 3
        assert cluster.addrs[leader] not in [n["address"] for n in status["nodes"]]
        deadline = time.monotonic() + 20
        while True:
            counts = []
            for addr in remaining:
                with Client(addr) as c:
                    counts.append(c.queues().get("after", {}).get("pending"))
            if counts == [50, 50, 50]:
                break
            assert time.monotonic() < deadline, counts
            time.sleep(0.2)
    finally:
        if fourth is not None:
            fourth.stop()
        cluster.stop()
