"""tq-worker and tq-admin against a real 3-node Raft cluster, through a leader's death."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from taskqueue.client import Client
from tests.fault.cluster import Cluster
from tests.helpers_worker import ROOT, WorkerProcess, wait_statuses

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "cluster", 3, election_timeout_ms=400)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_worker_carries_on_when_the_leader_dies(cluster, tmp_path):
    leader = cluster.leader(20)
    every_node = ",".join(cluster.addrs)
    # The worker is given every node and starts on the leader (the first address).
    ordered = ",".join([cluster.addrs[leader]] + [a for i, a in enumerate(cluster.addrs)
                                                   if i != leader])
    worker = WorkerProcess(ordered, tmp_path, "--concurrency", "4", name="cw").start()
    try:
        with Client(every_node, connect_timeout=1, reply_timeout=5) as producer:
            first = [producer.submit("echo", i)["id"] for i in range(20)]
            tasks = wait_statuses(producer, first, timeout=30)
            assert all(t["status"] == "completed" for t in tasks.values())

        cluster.kill(leader)
        survivor = cluster.leader(30, exclude=leader)
        survivors = ",".join(a for i, a in enumerate(cluster.addrs) if i != leader)
        with Client(survivors, connect_timeout=1, reply_timeout=5) as producer:
            second = [producer.submit("echo", {"after": i})["id"] for i in range(20)]
            tasks = wait_statuses(producer, second, timeout=60)
            assert all(t["status"] == "completed" for t in tasks.values()), tasks
            assert {t["worker"] for t in tasks.values()} == {worker.worker_id}
            assert all(t["result"] == {"after": i} for i, t in
                       enumerate(tasks[k] for k in second))
        assert worker.alive()
        assert "fetching again after reconnecting" in worker.logs()  # it did fail over

        # tq-admin follows the cluster too: given a dead node first, it uses the next.
        status = subprocess.run(
            [sys.executable, "-m", "admin.cli", "--broker-addr",
             f"{cluster.addrs[leader]},{survivors}", "--json", "cluster-status"],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["mode"] == "raft"
        assert info["leader"] == cluster.addrs[survivor]
    finally:
        worker.stop()
