"""Per-second schedules on a real 3-node cluster while the leader is SIGKILLed and SIGSTOPped
across fire times, then a whole-cluster stop and restart after downtime.

- ``all`` (grace 1 s, bound 1000): every slot from the first to the last is enqueued, and
  exactly once: the tasks are exactly the slots, and the cluster's submitted counter equals
  their number (no slot was enqueued a second time under any id).
- ``skip`` (grace 1 s): nothing inside the whole-cluster downtime;
- ``once`` (grace 1 s): at most one task inside the downtime.
Every node ends with the same tasks.
"""

from __future__ import annotations

import math
import time

import pytest

from taskqueue.errors import BrokerError, ConnectionLost
from tests.fault.cluster import Cluster

pytestmark = pytest.mark.slow


def on_leader(cluster: Cluster, call, timeout: float = 30):
    """``call(client)`` on the current leader, retried through elections."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with cluster.client(cluster.leader(20), 5) as c:
                return call(c)
        except (BrokerError, ConnectionLost, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def slots_of(tasks: dict, sid: str) -> list[int]:
    prefix = f"sched:{sid}:"
    return sorted(int(t[len(prefix):]) for t in tasks if t.startswith(prefix))


def test_every_slot_once_across_leader_kills_pauses_and_a_full_restart(tmp_path):
    cluster = Cluster(tmp_path, 3, {"schedules": {"tick_ms": 50}}, election_timeout_ms=400)
    cluster.start()
    try:
        start = math.ceil(time.time()) + 2
        for sid, policy in (("all", "all"), ("skip", "skip"), ("once", "once")):
            on_leader(cluster, lambda c, sid=sid, policy=policy: c.create_schedule({
                "id": sid, "interval_secs": 1, "start_at": start, "misfire": policy,
                "misfire_grace_secs": 1, "misfire_limit": 1000,
                "task": {"type": "tick", "queue": f"q-{sid}"}}))
        time.sleep(3)
        for disruption in ("kill", "stop", "kill"):
            leader = cluster.leader(20)
            if disruption == "kill":
                cluster.kill(leader)
                cluster.leader(20, exclude=leader)
                time.sleep(1.5)
                cluster.restart(leader)
            else:
                cluster.pause(leader)
                time.sleep(2.5)  # across two or three fire times; a new leader takes over
                cluster.resume(leader)
            time.sleep(2)
        # the whole cluster down for a while, then back (as after a power cut)
        down_at = time.time()
        for i in range(3):
            cluster.nodes[i].terminate()
        time.sleep(6)
        cluster.restart_all()
        up_at = time.time()
        cluster.leader(20)
        time.sleep(3)
        views = {sid: on_leader(cluster, lambda c, sid=sid: c.pause_schedule(sid))
                 for sid in ("all", "skip", "once")}
        cluster.wait_converged(60)
        per_node = [cluster.tasks(i) for i in range(3)]
        assert per_node[0].keys() == per_node[1].keys() == per_node[2].keys()
        tasks = per_node[0]

        last = int(views["all"]["last_slot_at"] * 1000)
        expected = list(range(start * 1000, last + 1, 1000))
        assert slots_of(tasks, "all") == expected
        assert len(expected) >= 20
        with cluster.client(cluster.leader(20), 10) as c:
            submitted = c.stats()["totals"]["submitted"]
        assert submitted == len(tasks)  # nothing enqueued twice under another id

        window = range(int((down_at + 2) * 1000), int((up_at - 2) * 1000))
        assert [s for s in slots_of(tasks, "skip") if s in window] == []
        assert len([s for s in slots_of(tasks, "once") if s in window]) <= 1
        assert views["skip"]["misfires"] >= 1 and views["once"]["misfires"] >= 1
        for sid in ("skip", "once"):  # every task is one of its slots, each once
            got = slots_of(tasks, sid)
            assert len(got) == len(set(got)) and all((s // 1000 - start) >= 0 for s in got)
    finally:
        cluster.stop()
