"""A concurrency limit on a real 3-node cluster is never exceeded, also across a leader
SIGKILL: the new leader knows every running task (it is replicated state) and hands out no
more than the limit.

The check does not trust the broker's own running counter (claim reads it, so it could not
fail): every completed task's record holds the broker's start (claim) and finish (ACK)
times, and the most intervals open at once must stay at the limit. Workers talk to the
leader only, so every time stamp comes from one clock in log order.
"""

from __future__ import annotations

import threading
import time

import pytest

from taskqueue.client import Client
from tests.fault.cluster import Cluster

pytestmark = pytest.mark.slow

LIMIT = 3
QUEUE = "bounded"


def most_at_once(intervals) -> int:
    """Largest number of [start, end) intervals open at one instant (an end frees its slot
    before a start at the same millisecond takes it: the log ordered them so)."""
    events = sorted([(end, 0) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    open_now = best = 0
    for _, is_start in events:
        open_now += 1 if is_start else -1
        best = max(best, open_now)
    return best


def test_concurrency_never_exceeded_across_a_leader_kill(tmp_path):
    cluster = Cluster(tmp_path, 3, {"worker": {"lease_timeout_secs": 4,
                                               "heartbeat_interval_secs": 1}},
                      election_timeout_ms=400)
    cluster.start()
    try:
        leader = cluster.leader(20)
        with cluster.client(leader, 10) as c:
            c.submit_bulk([{"type": "t", "queue": QUEUE} for _ in range(400)])
            c.set_limit(QUEUE, concurrency=LIMIT)
        where = {"addr": cluster.nodes[leader].addr}
        stop = threading.Event()
        done = []

        def work(n: int) -> None:
            while not stop.is_set():
                try:
                    with Client(where["addr"], identity={"worker_id": f"w{n}",
                                                         "queues": [QUEUE]},
                                connect_timeout=1.0, reply_timeout=5) as w:
                        while not stop.is_set():
                            jobs = w.fetch([QUEUE], count=2, timeout_ms=500) or []
                            time.sleep(0.05)  # the work
                            for job in jobs:
                                w.ack(job["id"], job["token"])
                                done.append(job["id"])
                except Exception:  # the leader died under us: find the new one
                    time.sleep(0.2)

        threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(8)]
        for t in threads:
            t.start()
        time.sleep(3)
        before_kill = len(done)
        cluster.kill(leader)
        new_leader = cluster.leader(20, exclude=leader)
        where["addr"] = cluster.nodes[new_leader].addr
        time.sleep(6)
        stop.set()
        for t in threads:
            t.join(15)
        assert before_kill > 20 and len(done) > before_kill + 20, (before_kill, len(done))
        with cluster.client(new_leader, 10) as c:
            tasks = list(c.iter_tasks(status="completed", queue=QUEUE, limit=1000))
        intervals = [(t["started_at"], t["finished_at"]) for t in tasks]
        peak = most_at_once(intervals)
        print(f"{len(tasks)} completed ({before_kill} before the kill), at most {peak} "
              f"running at once, limit {LIMIT}")
        assert peak == LIMIT  # reached, never passed
    finally:
        cluster.stop()
