"""WAIT-TASK on a real 3-node cluster: a follower answers from its own apply of the
completion, and a wait on a surviving node is answered after the leader is SIGKILLed and
the task is completed through the new leader."""

from __future__ import annotations

import threading
import time

import pytest

from taskqueue.client import Client
from taskqueue.errors import BrokerError, ConnectionLost
from tests.fault.cluster import Cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, 3, election_timeout_ms=400)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def wait_in_thread(cluster: Cluster, node: int, task_id: str) -> dict:
    """Start a 90 s WAIT-TASK on ``node``; the dict gets "task" or "error" when it answers."""
    out: dict = {}

    def run():
        try:
            with Client(cluster.nodes[node].addr, reply_timeout=30) as c:
                out["task"] = c.wait(task_id, timeout=90)
        except Exception as exc:  # reported by the test's assertion
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    out["thread"] = thread
    return out


def work_one(addr: str, queue: str, result) -> str:
    """Claim one job of ``queue`` through ``addr`` and ack it; retried through elections."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(addr, identity={"worker_id": f"w-{queue}", "queues": [queue]},
                        reply_timeout=10) as w:
                jobs = w.fetch([queue], timeout_ms=2000)
                if jobs:
                    w.ack(jobs[0]["id"], jobs[0]["token"], result)
                    return jobs[0]["id"]
        except (BrokerError, ConnectionLost):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no job of {queue} claimed through {addr}")
        time.sleep(0.2)


def on_node(cluster: Cluster, node: int, task_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with cluster.client(node) as c:
                return c.get(task_id)
        except (BrokerError, ConnectionLost):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_wait_on_a_follower_and_across_a_leader_kill(cluster):
    leader = cluster.leader(20)
    follower, other = [(leader + 1) % 3, (leader + 2) % 3]
    with cluster.client(leader) as c:
        first = c.submit("t", None, queue="qa")
        second = c.submit("t", None, queue="qb")
    on_node(cluster, follower, first["id"])  # the follower applied both submits
    on_node(cluster, follower, second["id"])

    # 1. A follower's wait is answered by its own apply of an ACK made on the leader.
    waiting = wait_in_thread(cluster, follower, first["id"])
    time.sleep(0.5)
    work_one(cluster.nodes[leader].addr, "qa", "from-leader")
    waiting["thread"].join(60)
    assert "error" not in waiting, waiting.get("error")
    assert waiting["task"]["status"] == "completed"
    assert waiting["task"]["result"] == "from-leader"

    # 2. A wait open on a surviving node while the leader is SIGKILLed, answered once the
    # new leader commits the completion.
    waiting = wait_in_thread(cluster, follower, second["id"])
    time.sleep(0.5)
    cluster.kill(leader)
    new_leader = cluster.leader(30, exclude=leader)
    assert new_leader in (follower, other)
    work_one(cluster.nodes[new_leader].addr, "qb", "after-failover")
    waiting["thread"].join(60)
    assert "error" not in waiting, waiting.get("error")
    assert waiting["task"]["status"] == "completed"
    assert waiting["task"]["result"] == "after-failover"
