"""A chord on a real 3-node Raft cluster, its leader SIGKILLed mid-chord: the callback is
submitted exactly once, with every member's result in member order, and every node
(the killed one too, once restarted) holds the same workflow."""

from __future__ import annotations

import time

import pytest

from taskqueue.client import Client
from taskqueue.errors import BrokerError, ConnectionLost
from tests.fault.cluster import Cluster

pytestmark = pytest.mark.slow

MEMBERS = 20


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, 3, election_timeout_ms=400)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def retrying(cluster: Cluster, call, timeout: float = 60):
    """``call(client)`` against whichever node leads now, retried through elections."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            leader = cluster.leader(10)
            with Client(cluster.nodes[leader].addr, reply_timeout=10,
                        identity={"worker_id": "wf-worker", "queues": ["wf-m"]}) as c:
                return call(c)
        except (BrokerError, ConnectionLost, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def work_one(cluster: Cluster, queue: str):
    """Claim one job of ``queue`` and ACK it with its payload times ten; the id or None."""
    def call(c):
        jobs = c.fetch([queue], timeout_ms=1000)
        if not jobs:
            return None
        c.ack(jobs[0]["id"], jobs[0]["token"], jobs[0]["payload"] * 10)
        return jobs[0]["id"]
    return retrying(cluster, call)


def test_chord_callback_exactly_once_across_a_leader_kill(cluster):
    leader = cluster.leader(20)
    tree = {"chord": [{"type": "t", "queue": "wf-m", "payload": i, "max_retries": 5}
                      for i in range(MEMBERS)],
            "callback": {"type": "cb", "queue": "wf-cb"}}
    with cluster.client(leader) as c:
        assert c.submit_workflow(tree, id="chord-1")["size"] == MEMBERS + 1
    done = [work_one(cluster, "wf-m") for _ in range(MEMBERS // 2)]
    cluster.kill(leader)  # mid-chord: half the members ACKed through it
    cluster.leader(30, exclude=leader)
    # A re-sent submit (the client never saw its reply, say) changes nothing.
    assert retrying(cluster, lambda c: c.submit_workflow(tree, id="chord-1"))["duplicate"]
    while len([d for d in done if d]) < MEMBERS:
        done.append(work_one(cluster, "wf-m"))
    callbacks = retrying(cluster, lambda c: c.fetch(["wf-cb"], count=10, timeout_ms=3000))
    assert len(callbacks) == 1
    payload = callbacks[0]["payload"]
    assert payload["results"] == [i * 10 for i in range(MEMBERS)]
    retrying(cluster, lambda c: c.ack(callbacks[0]["id"], callbacks[0]["token"], "sum"))
    assert retrying(cluster, lambda c: c.fetch(["wf-cb"], count=10, timeout_ms=500)) == []

    cluster.restart(leader)  # the killed node catches up from the log
    cluster.wait_converged(60)
    for i in range(3):
        deadline = time.monotonic() + 30
        while True:
            try:
                with cluster.client(i) as c:
                    state = c.get_workflow("chord-1")
                if state["status"] == "completed":
                    break
            except (BrokerError, ConnectionLost):
                pass
            assert time.monotonic() < deadline, f"node {i} never saw the workflow complete"
            time.sleep(0.2)
        assert state["groups"][0]["completed"] == MEMBERS
        assert [t["status"] for t in state["tasks"]] == ["completed"] * (MEMBERS + 1)
        cb_tasks = [t for t in cluster.tasks(i).values() if t["queue"] == "wf-cb"]
        assert len(cb_tasks) == 1 and cb_tasks[0]["result"] == "sum"
