"""The state machine on a real RocksDB: every transition, fencing, determinism, replay."""

from __future__ import annotations

import hashlib

import pytest

from broker import keys
from broker.machine import Rejected, StateMachine
from broker.store import Store

LEASE = 30_000
LIMIT = 1000


def spec(task_id, **extra):
    base = {"id": task_id, "type": "echo", "queue": "default", "payload": {"n": task_id},
            "priority": 0, "max_retries": 2, "timeout_secs": None,
            "retry_backoff_secs": 1.0, "idempotency_key": None, "run_at_ms": None}
    base.update(extra)
    return base


class Harness:
    """A machine plus a local 'log': each apply() is one entry, written like LocalLog does."""

    def __init__(self, path):
        self.store = Store(path)
        self.machine = StateMachine(self.store)
        self.entries: list[list] = []

    def apply(self, *commands):
        self.entries.append(list(commands))
        results, batch = self.machine.apply_entry(self.machine.applied_index + 1,
                                                  list(commands))
        self.store.write(batch, False)
        return results if len(commands) > 1 else results[0]

    def task(self, task_id):
        return self.store.get_json(keys.task(task_id))

    def digest(self, skip=(keys.META_APPLIED,)) -> str:
        h = hashlib.sha256()
        for key, value in self.store.scan(b"", b"\xff"):
            if key not in skip:
                h.update(key + b"=" + value + b";")
        return h.hexdigest()


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path / "db")
    yield harness
    harness.store.close()


def claim(h, now, count=1, queues=("default",), worker="w1"):
    return h.apply(["claim", now, worker, list(queues), count, LEASE])


def test_submit_claim_ack_lifecycle(h):
    task = h.apply(["submit", 1000, spec("a"), LIMIT])
    assert task["status"] == "pending" and task["attempts"] == 0
    [job] = claim(h, 2000)
    assert job["id"] == "a" and job["status"] == "running" and job["attempts"] == 1
    assert job["lease_expires_at"] == (2000 + LEASE) / 1000
    assert h.apply(["ack", 3000, "a", job["token"], {"ok": 1}]) == "OK"
    stored = h.task("a")
    assert stored["status"] == "completed" and stored["result"] == {"ok": 1}
    assert stored["finished_at"] == 3.0
    assert claim(h, 4000) == []
    counts = h.machine.counters.queues["default"]
    assert counts["completed"] == 1 and counts["pending"] == 0 and counts["running"] == 0


def test_priority_then_fifo(h):
    h.apply(["submit", 1, spec("low1"), LIMIT], ["submit", 2, spec("high", priority=9), LIMIT],
            ["submit", 3, spec("low2"), LIMIT], ["submit", 4, spec("mid", priority=5), LIMIT])
    order = [j["id"] for j in claim(h, 10, count=10)]
    assert order == ["high", "mid", "low1", "low2"]


def test_queues_are_tried_in_order_and_isolated(h):
    h.apply(["submit", 1, spec("d1"), LIMIT], ["submit", 2, spec("u1", queue="urgent"), LIMIT])
    jobs = claim(h, 5, count=2, queues=("urgent", "default"))
    assert [j["id"] for j in jobs] == ["u1", "d1"]
    h.apply(["submit", 6, spec("x", queue="other"), LIMIT])
    assert claim(h, 7, queues=("default",)) == []


def test_same_entry_submit_and_claim_see_each_other(h):
    results = h.apply(["submit", 1, spec("a"), LIMIT],
                      ["claim", 1, "w1", ["default"], 5, LEASE],
                      ["claim", 1, "w2", ["default"], 5, LEASE])
    assert [j["id"] for j in results[1]] == ["a"]
    assert results[2] == []  # never handed out twice


def test_fencing_rejects_stale_ack_after_lease_expiry(h):
    h.apply(["submit", 0, spec("a"), LIMIT])
    [first] = claim(h, 1000, worker="w1")
    assert h.apply(["expire", 1000 + LEASE + 1, 100]) == 1
    assert h.task("a")["status"] == "pending" and h.task("a")["attempts"] == 1
    [second] = claim(h, 40_000, worker="w2")
    assert second["token"] != first["token"] and second["attempts"] == 2
    late = h.apply(["ack", 41_000, "a", first["token"], "late"])
    assert isinstance(late, Rejected) and late.code == "LEASELOST"
    assert h.apply(["ack", 41_000, "a", second["token"], "ok"]) == "OK"
    # the retried ack of the winner is accepted again, the loser is still refused
    assert h.apply(["ack", 41_001, "a", second["token"], "ok"]) == "OK"
    assert h.apply(["ack", 41_002, "a", first["token"], "x"]).code == "LEASELOST"
    assert h.task("a")["result"] == "ok"
    assert h.machine.counters.totals["completed"] == 1


def test_heartbeat_extends_lease_and_reports_lost(h):
    h.apply(["hello", 0, "w1", {"queues": ["default"]}])
    h.apply(["submit", 0, spec("a"), LIMIT], ["submit", 0, spec("b"), LIMIT])
    jobs = claim(h, 1000, count=2)
    tokens = {j["id"]: j["token"] for j in jobs}
    h.apply(["cancel", 2000, "b"])
    reply = h.apply(["heartbeat", 20_000, "w1", [["a", tokens["a"]], ["b", tokens["b"]]],
                     LEASE, 2])
    assert reply == {"state": "active", "lost": ["b"]}
    # the old deadline (31 s) passes, the extended one (50 s) does not
    assert h.apply(["expire", 40_000, 100]) == 0
    assert h.task("a")["status"] == "running"
    assert h.apply(["expire", 50_001, 100]) == 1


def test_fail_retries_with_backoff_then_dead(h):
    h.apply(["submit", 0, spec("a", max_retries=1, retry_backoff_secs=2.0), LIMIT])
    [job] = claim(h, 1000)
    assert h.apply(["fail", 1000, "a", job["token"], "boom", "tb", True, 0.5]) == "OK"
    task = h.task("a")
    # backoff = 2 s * 2^(1-1) * (0.5 + 0.5) = 2 s
    assert task["status"] == "failed" and task["run_at"] == 3.0 and task["error"] == "boom"
    assert claim(h, 2999) == []
    assert h.apply(["promote", 3000, 100]) == 1
    [job2] = claim(h, 3001)
    assert job2["attempts"] == 2
    h.apply(["fail", 3002, "a", job2["token"], "boom again", None, True, 0.1])
    assert h.task("a")["status"] == "dead"
    requeued = h.apply(["requeue", 4000, "a"])
    assert requeued["status"] == "pending" and requeued["attempts"] == 0
    assert h.machine.counters.totals["dead"] == 1


def test_fail_without_retry_goes_dead(h):
    h.apply(["submit", 0, spec("a", max_retries=5), LIMIT])
    [job] = claim(h, 1)
    h.apply(["fail", 2, "a", job["token"], "fatal", None, False, 0.0])
    assert h.task("a")["status"] == "dead"


def test_lease_expiry_past_max_retries_is_dead(h):
    h.apply(["submit", 0, spec("a", max_retries=0), LIMIT])
    claim(h, 0)
    h.apply(["expire", LEASE + 1, 100])
    task = h.task("a")
    assert task["status"] == "dead" and "lease expired" in task["error"]


def test_delayed_task_is_scheduled_until_due(h):
    task = h.apply(["submit", 1000, spec("a", run_at_ms=5000), LIMIT])
    assert task["status"] == "scheduled" and task["run_at"] == 5.0
    assert claim(h, 4000) == []
    assert h.apply(["promote", 4999, 100]) == 0
    assert h.apply(["promote", 5000, 100]) == 1
    assert [j["id"] for j in claim(h, 5001)] == ["a"]


def test_idempotency_key_and_id_return_the_existing_task(h):
    first = h.apply(["submit", 0, spec("a", idempotency_key="k1"), LIMIT])
    again = h.apply(["submit", 1, spec("b", idempotency_key="k1"), LIMIT])
    assert again["id"] == "a" and again["duplicate"] is True
    same_id = h.apply(["submit", 2, spec("a"), LIMIT])
    assert same_id["duplicate"] is True and same_id["created_at"] == first["created_at"]
    assert h.task("b") is None
    assert h.machine.counters.totals["submitted"] == 1


def test_queue_full_is_rejected_and_changes_nothing(h):
    h.apply(["submit", 0, spec("a"), 2], ["submit", 0, spec("b"), 2])
    before = h.digest()
    full = h.apply(["submit", 0, spec("c"), 2])
    assert isinstance(full, Rejected) and full.code == "QUEUEFULL"
    assert h.task("c") is None
    # only the applied index moved
    assert h.store.applied_index() == 2 and h.digest() == before
    claim(h, 1)  # running tasks do not count as waiting
    assert h.apply(["submit", 2, spec("c"), 2])["status"] == "pending"


def test_cancel_pending_and_running(h):
    h.apply(["submit", 0, spec("a"), LIMIT], ["submit", 0, spec("b"), LIMIT])
    assert h.apply(["cancel", 1, "a"])["status"] == "cancelled"
    [job] = claim(h, 2)
    assert job["id"] == "b"
    h.apply(["cancel", 3, "b"])
    assert h.apply(["ack", 4, "b", job["token"], None]).code == "LEASELOST"
    assert h.apply(["cancel", 5, "b"]).code == "BADSTATE"
    assert h.apply(["cancel", 5, "zzz"]).code == "NOTFOUND"
    assert h.apply(["expire", LEASE * 10, 100]) == 0  # no lease left behind


def test_purge_removes_finished_tasks_older_than_cutoff(h):
    h.apply(["submit", 0, spec("old", idempotency_key="ko"), LIMIT])
    [job] = claim(h, 1)
    h.apply(["ack", 2, "old", job["token"], None])
    h.apply(["submit", 100, spec("new"), LIMIT])
    [job] = claim(h, 101)
    h.apply(["ack", 102, "new", job["token"], None])
    assert h.apply(["purge", 200, 50, 100]) == 1
    assert h.task("old") is None and h.task("new") is not None
    assert h.store.get(keys.idempotency("ko")) is None
    assert h.machine.counters.queues["default"]["completed"] == 1


def test_replayed_entry_is_skipped(h):
    h.apply(["submit", 0, spec("a"), LIMIT])
    results, batch = h.machine.apply_entry(1, [["submit", 0, spec("b"), LIMIT]])
    assert results == [] and batch is None
    assert h.task("b") is None


def test_a_failing_command_is_rolled_back_alone(h, monkeypatch):
    original = h.machine._ops["cancel"]

    def broken(machine, now, task_id):
        original(machine, now, task_id)  # writes, then blows up: must leave no trace
        raise RuntimeError("bug")

    h.apply(["submit", 0, spec("a"), LIMIT])
    monkeypatch.setitem(h.machine._ops, "cancel", broken)
    results = h.apply(["cancel", 1, "a"], ["submit", 1, spec("b"), LIMIT])
    assert isinstance(results[0], Rejected) and results[0].code == "INTERNAL"
    assert results[1]["status"] == "pending"
    assert h.task("a")["status"] == "pending"
    counts = h.machine.counters.queues["default"]
    assert counts["pending"] == 2 and counts["cancelled"] == 0
    assert [j["id"] for j in claim(h, 2, count=5)] == ["a", "b"]


def test_two_replicas_applying_the_same_log_are_identical(tmp_path):
    """Determinism: the property Raft replication rests on."""
    a, b = Harness(tmp_path / "a"), Harness(tmp_path / "b")
    commands = []
    for i in range(50):
        commands.append(["submit", i, spec(f"t{i}", priority=i % 3,
                                           run_at_ms=(i * 10 if i % 7 == 0 else None)), LIMIT])
    commands.append(["claim", 100, "w1", ["default"], 20, LEASE])
    commands.append(["promote", 600, 100])
    commands.append(["expire", 100 + LEASE + 1, 100])
    commands.append(["claim", 200 + LEASE, "w2", ["default"], 30, LEASE])
    for start in range(0, len(commands), 7):
        entry = commands[start:start + 7]
        a.apply(*entry)
        b.apply(*entry)
    assert a.digest(skip=()) == b.digest(skip=())
    # and a restarted machine reloads the same in-memory state
    a.store.close()
    reopened = Harness(tmp_path / "a")
    assert reopened.machine.counters.queues == b.machine.counters.queues
    assert reopened.machine.seq == b.machine.seq
    assert reopened.machine.applied_index == b.machine.applied_index
    reopened.store.close()
    b.store.close()


def test_claim_skips_a_long_run_of_consumed_keys(h):
    """The ready-queue hint keeps claims O(1) after many tasks were consumed."""
    for start in range(0, 3000, 500):
        h.apply(*[["submit", 0, spec(f"t{i}"), 10_000] for i in range(start, start + 500)])
    for _ in range(29):
        claim(h, 1, count=100)
    h.machine.hints.clear()  # cold start: one scan over the tombstones, then hinted again
    [job] = claim(h, 2, count=1)
    assert job["id"] == "t2900"
