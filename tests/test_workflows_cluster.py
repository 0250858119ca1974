"""Chords on a real 3-node Raft cluster under the fault suite's faults: the leader SIGKILLed,
SIGSTOPped past an election, or partitioned off (iptables) mid-chord; a real worker
SIGSTOPped past its lease (the member runs twice); a member failed for a retry across a
failover. Every time the callback is submitted exactly once, with every member's result in
member order, only after every member's final outcome, and every node holds the same
workflow (docs/workflows.md, "Proven under faults")."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from taskqueue.client import Client
from taskqueue.errors import BrokerError, ConnectionLost
from tests.fault.cluster import Cluster
from tests.fault.isolation import SKIP_REASON, Isolation
from tests.helpers_worker import WorkerProcess, wait_for

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
    assert_callback_once(cluster, "chord-1", [i * 10 for i in range(MEMBERS)])
    cluster.restart(leader)  # the killed node catches up from the log
    assert_converged_on(cluster, "chord-1", MEMBERS)


# ------------------------------------------------------------ shared by the fault tests

def submit_chord(cluster: Cluster, flow_id: str, members: int, **member_fields) -> dict:
    tree = {"chord": [dict({"type": "t", "queue": "wf-m", "payload": i, "max_retries": 5},
                           **member_fields) for i in range(members)],
            "callback": {"type": "cb", "queue": "wf-cb"}}
    reply = retrying(cluster, lambda c: c.submit_workflow(tree, id=flow_id))
    assert reply["size"] == members + 1
    return tree


def workflow(cluster: Cluster, flow_id: str) -> dict:
    return retrying(cluster, lambda c: c.get_workflow(flow_id))


def finish_members(cluster: Cluster, flow_id: str, members: int, timeout: float = 60) -> None:
    """Work ``wf-m`` until the chord counted every member (a member whose ACK was lost in
    a fault comes back when its lease expires, 2 s)."""
    deadline = time.monotonic() + timeout
    while workflow(cluster, flow_id)["groups"][0]["completed"] < members:
        assert time.monotonic() < deadline, workflow(cluster, flow_id)
        work_one(cluster, "wf-m")


def assert_callback_once(cluster: Cluster, flow_id: str, results: list) -> None:
    """The callback is fetchable once, with ``results``; after its ACK nothing more."""
    callbacks = retrying(cluster, lambda c: c.fetch(["wf-cb"], count=10, timeout_ms=3000))
    assert len(callbacks) == 1, callbacks
    assert callbacks[0]["payload"]["results"] == results
    retrying(cluster, lambda c: c.ack(callbacks[0]["id"], callbacks[0]["token"], "sum"))
    assert retrying(cluster, lambda c: c.fetch(["wf-cb"], count=10, timeout_ms=500)) == []


def assert_converged_on(cluster: Cluster, flow_id: str, members: int) -> None:
    """Every node holds the completed workflow: exact counts, one callback task."""
    cluster.wait_converged(60)
    for i in range(len(cluster.nodes)):
        deadline = time.monotonic() + 30
        while True:
            try:
                with cluster.client(i) as c:
                    state = c.get_workflow(flow_id)
                if state["status"] == "completed":
                    break
            except (BrokerError, ConnectionLost):
                pass
            assert time.monotonic() < deadline, f"node {i} never saw {flow_id} complete"
            time.sleep(0.2)
        group = state["groups"][0]
        assert (group["completed"], group["dead"], group["cancelled"]) == (members, 0, 0)
        assert [t["status"] for t in state["tasks"]] == ["completed"] * (members + 1)
        cb_tasks = [t for t in cluster.tasks(i).values() if t["queue"] == "wf-cb"]
        assert len(cb_tasks) == 1 and cb_tasks[0]["result"] == "sum", cb_tasks


def ack_through(cluster: Cluster, node: int, job: dict, outcome: dict) -> threading.Thread:
    """ACK ``job`` through ``node`` (frozen or cut off) in a thread; the reply, or the
    error, lands in ``outcome``."""
    def run():
        try:
            with Client(cluster.nodes[node].addr, connect_timeout=5, reply_timeout=15,
                        identity={"worker_id": "wf-worker", "queues": ["wf-m"]}) as c:
                outcome["reply"] = c.ack(job["id"], job["token"], job["payload"] * 10)
        except (BrokerError, ConnectionLost, OSError) as exc:
            outcome["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def claim_one(cluster: Cluster, node: int) -> dict:
    with Client(cluster.nodes[node].addr, reply_timeout=10,
                identity={"worker_id": "wf-worker", "queues": ["wf-m"]}) as c:
        jobs = c.fetch(["wf-m"], timeout_ms=2000)
    assert jobs
    return jobs[0]


# --------------------------------------------------------------------- the fault tests

SMALL = 6


def test_chord_callback_exactly_once_across_a_paused_leader(cluster):
    """The leader SIGSTOPped mid-chord past an election, an ACK sent to it while frozen,
    then SIGCONT: whatever became of that ACK, the member counts once."""
    leader = cluster.leader(20)
    submit_chord(cluster, "chord-stop", SMALL)
    for _ in range(SMALL // 2):
        work_one(cluster, "wf-m")
    job = claim_one(cluster, leader)
    cluster.pause(leader)
    outcome: dict = {}
    sender = ack_through(cluster, leader, job, outcome)
    try:
        time.sleep(3 * 0.4 + 0.3)  # past several election timeouts
        cluster.leader(20, exclude=leader)
    finally:
        cluster.resume(leader)
    sender.join(20)
    finish_members(cluster, "chord-stop", SMALL)
    assert_callback_once(cluster, "chord-stop", [i * 10 for i in range(SMALL)])
    assert_converged_on(cluster, "chord-stop", SMALL)
    print(f"ACK sent to the frozen leader: {outcome}")


def test_chord_callback_exactly_once_across_a_partitioned_leader(cluster):
    """The leader cut off from its peers (iptables on loopback) mid-chord; an ACK sent to
    it there; the chord finished on the majority side; then healed."""
    if not Isolation.available():
        pytest.skip(SKIP_REASON)
    leader = cluster.leader(20)
    submit_chord(cluster, "chord-part", SMALL)
    for _ in range(SMALL // 2):
        work_one(cluster, "wf-m")
    job = claim_one(cluster, leader)
    isolation = Isolation()
    try:
        isolation.isolate(cluster, leader)
        outcome: dict = {}
        ack_through(cluster, leader, job, outcome)
        majority = cluster.leader(20, exclude=leader)
        assert majority != leader
        # The rest of the chord completes on the majority side, the old leader cut off.
        deadline = time.monotonic() + 60
        with Client(cluster.nodes[majority].addr, reply_timeout=10,
                    identity={"worker_id": "wf-worker", "queues": ["wf-m"]}) as c:
            while c.get_workflow("chord-part")["groups"][0]["completed"] < SMALL:
                assert time.monotonic() < deadline, c.get_workflow("chord-part")
                for j in c.fetch(["wf-m"], timeout_ms=1000):
                    c.ack(j["id"], j["token"], j["payload"] * 10)
    finally:
        isolation.heal(cluster)
    wait_for(lambda: (cluster.status(leader) or {}).get("role") == "follower", 30,
             what="the healed old leader to follow")
    assert_callback_once(cluster, "chord-part", [i * 10 for i in range(SMALL)])
    assert_converged_on(cluster, "chord-part", SMALL)
    print(f"ACK sent to the isolated leader: {outcome}")


def test_chord_member_run_twice_by_a_paused_worker_counts_once(cluster, tmp_path):
    """A real tq-worker claims a member and is SIGSTOPped past its lease (2 s); a second
    worker runs the redelivered member and the rest; the first is resumed and its late
    outcome is refused (or, if its heartbeat hears first, dropped): counted once."""
    cluster.leader(20)
    members = 3
    tree = {"chord": [{"type": "record", "queue": "wf-w", "max_retries": 3,
                       "payload": {"seconds": 1.0 if i == 0 else 0, "i": i}}
                      for i in range(members)],
            "callback": {"type": "cb", "queue": "wf-cb"}}
    addrs = ",".join(cluster.addrs)
    first = WorkerProcess(addrs, tmp_path / "a", "--queues", "wf-w", "--concurrency", "1",
                          "--pool", "process", name="first")
    second = WorkerProcess(addrs, tmp_path / "b", "--queues", "wf-w", "--concurrency", "2",
                           "--pool", "process", name="second")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first.start()
    try:
        # Alone, one slot: it claims member 0 (members are claimed in member order).
        retrying(cluster, lambda c: c.submit_workflow(tree, id="chord-twice"))
        member0 = workflow(cluster, "chord-twice")["tasks"][0]["id"]
        wait_for(lambda: any(line[:2] == ["start", member0]
                             for line in first.evidence_lines()), 20,
                 what="the first worker to start member 0")
        first.signal(signal.SIGSTOP)
        try:
            time.sleep(0.5)  # member 0's handler finishes in its child; the parent is frozen
            second.start()
            wait_for(lambda: workflow(cluster, "chord-twice")["groups"][0]["completed"]
                     == members, 30, what="the second worker to finish every member")
        finally:
            first.signal(signal.SIGCONT)
        rejected = f"broker rejected the outcome of job {member0}"
        refused = f"{rejected}: LEASELOST"
        dropped = f"job {member0} finished after its lease was lost"
        accepted = f"job {member0} (record) completed: OK"  # what must not happen
        wait_for(lambda: any(line in first.logs() for line in (rejected, dropped, accepted)),
                 20, what="the first worker to settle its late copy of member 0")
        time.sleep(0.3)
        state = workflow(cluster, "chord-twice")
        assert state["groups"][0]["completed"] == members
        assert (state["groups"][0]["dead"], state["groups"][0]["cancelled"]) == (0, 0)
        ran = [line for line in first.evidence_lines() + second.evidence_lines()
               if line[0] == "done" and line[1] == member0]
        assert len(ran) == 2, ran  # it really ran twice, once in each worker
        task0 = retrying(cluster, lambda c: c.get(member0))
        assert task0["worker"] == second.worker_id and task0["attempts"] == 2
        assert task0["result"]["attempt"] == 2
        callbacks = retrying(cluster, lambda c: c.fetch(["wf-cb"], count=10, timeout_ms=3000))
        assert len(callbacks) == 1, callbacks
        results = callbacks[0]["payload"]["results"]
        assert [r["attempt"] for r in results] == [2, 1, 1]
        retrying(cluster, lambda c: c.ack(callbacks[0]["id"], callbacks[0]["token"], "sum"))
        logs = first.logs()
        assert accepted not in logs and (refused in logs or dropped in logs), logs
        print("the first worker's late outcome:", "refused (LEASELOST)"
              if refused in first.logs() else "dropped (its heartbeat heard first)")
    finally:
        first.stop()
        second.stop()
    assert_converged_on(cluster, "chord-twice", members)


def test_chord_retried_member_delays_the_callback_across_a_failover(cluster):
    """Member 0 FAILs for a retry twice, the leader SIGKILLed in between: the callback is
    not fetchable until member 0's final ACK, then exactly once."""
    leader = cluster.leader(20)
    submit_chord(cluster, "chord-retry", SMALL, retry_backoff_secs=0.5)
    acked, tries = set(), 0

    def none_fetchable():
        assert retrying(cluster, lambda c: c.fetch(["wf-cb"], count=10, timeout_ms=300)) == []

    def step(c):
        nonlocal tries
        for job in c.fetch(["wf-m"], timeout_ms=1000):
            if job["payload"] == 0 and tries < 2:
                c.fail(job["id"], job["token"], "flaky", retry=True)
                tries += 1
            else:
                c.ack(job["id"], job["token"], job["payload"] * 10)
                acked.add(job["payload"])

    deadline = time.monotonic() + 60
    while len(acked) < SMALL - 1 or tries < 2:
        assert time.monotonic() < deadline, (acked, tries)
        retrying(cluster, step)
        if tries == 1 and cluster.alive(leader):
            cluster.kill(leader)  # member 0 waits for its retry through a failover
            cluster.leader(30, exclude=leader)
        if tries:
            assert 0 not in acked
            none_fetchable()
    state = workflow(cluster, "chord-retry")
    assert state["groups"][0]["completed"] == SMALL - 1 and state["status"] == "running"
    none_fetchable()
    while 0 not in acked:  # its third attempt completes it
        assert time.monotonic() < deadline
        retrying(cluster, step)
    assert_callback_once(cluster, "chord-retry", [i * 10 for i in range(SMALL)])
    cluster.restart(leader)
    assert_converged_on(cluster, "chord-retry", SMALL)
