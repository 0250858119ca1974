"""Workflows in the state machine on a real RocksDB: chords fire exactly once, in the apply
of the last member's completion; retries delay them; chains advance and stop; cancel; purge;
per-completion cost independent of the group's size."""

from __future__ import annotations

import random
import time

import pytest

from broker import keys
from broker import validation as v
from broker.commands import workflows as wf
from broker.workflow_spec import MAX_NESTING, flatten
from tests.test_machine import LIMIT, Harness

MAX_PAYLOAD = 1 << 20


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path / "db")
    yield harness
    harness.store.close()


def t(task_type="echo", **extra):
    return dict({"type": task_type, "max_retries": 0}, **extra)


def submit(h, tree, flow_id="wf1", now=1000):
    flat = flatten({"id": flow_id, "workflow": tree}, now, MAX_PAYLOAD)
    return h.apply(["submit_workflow", now, flat, LIMIT])


def claim_all(h, now, count=100_000, worker="w1"):
    return h.apply(["claim", now, worker, ["default"], count, 30_000])


def ack(h, job, now, result=None, worker="w1"):
    return h.apply(["ack", now, job["id"], job["token"], result, worker])


def fail(h, job, now, retry=True, worker="w1"):
    return h.apply(["fail", now, job["id"], job["token"], "boom", None, retry, 0.5, worker])


def view(h, flow_id="wf1", limit=100_000):
    return wf.view(h.store, flow_id, limit)


def chord(n, **extra):
    return dict({"chord": [t(payload=i) for i in range(n)],
                 "callback": t("sum", payload="cb")}, **extra)


def test_chord_callback_fires_once_with_results_in_member_order(h):
    assert submit(h, chord(3)) == {"id": "wf1", "status": "pending", "size": 4}
    jobs = claim_all(h, 2000)
    assert [j["id"] for j in jobs] == ["wf1.0", "wf1.1", "wf1.2"]  # callback not yet there
    assert view(h)["status"] == "running"
    # Complete out of order: the callback still gets the results in member order.
    ack(h, jobs[2], 3000, "r2")
    ack(h, jobs[0], 3001, "r0")
    assert h.task("wf1.3") is None  # not early
    ack(h, jobs[1], 3002, "r1")
    callback = h.task("wf1.3")  # in the same entry as the last ACK
    assert callback["status"] == "pending"
    assert callback["payload"] == {"results": ["r0", "r1", "r2"],
                                   "errors": [None, None, None], "payload": "cb"}
    # A repeated ACK of the last member (the client retried) counts nothing again.
    assert ack(h, jobs[1], 3003, "r1") == "OK"
    [cb_job] = claim_all(h, 4000)
    assert cb_job["id"] == "wf1.3" and claim_all(h, 4001) == []
    ack(h, cb_job, 5000, "total")
    got = view(h)
    assert got["status"] == "completed" and got["finished_at"] == 5.0
    assert got["groups"][0] | {} == {"node": "0", "kind": "chord", "role": "chord",
                                     "size": 3, "on_error": "fail", "started": True,
                                     "completed": 3, "dead": 0, "cancelled": 0}
    assert [r["status"] for r in got["tasks"]] == ["completed"] * 4
    assert "_wf" not in jobs[0]  # the hidden reference never reaches a client


def test_retried_member_delays_the_callback_until_its_final_outcome(h):
    submit(h, {"chord": [t(max_retries=2), t()], "callback": t("sum")})
    a, b = claim_all(h, 2000)
    ack(h, b, 2100, "b")
    fail(h, a, 2200, retry=True)  # failed -> (retry wait) -> pending: not final
    assert h.task("wf1.2") is None
    h.apply(["promote", 10_000, LIMIT])
    [a2] = claim_all(h, 10_001)
    assert a2["id"] == "wf1.0" and h.task("wf1.2") is None
    ack(h, a2, 10_002, "a")
    assert h.task("wf1.2")["payload"]["results"] == ["a", "b"]


def test_member_that_ends_twice_counts_once(h):
    """A member made to run twice: its lease expired (redelivered), the late holder's ACK is
    refused by fencing; and a dead member requeued and completed later finds its marker."""
    submit(h, {"chord": [t(max_retries=1), t(), t()], "callback": t("sum")})
    [a] = claim_all(h, 2000, count=1)
    b, c = claim_all(h, 20_000)
    h.apply(["expire", 33_000, LIMIT])  # a's lease ran out: a back to pending
    [a2] = claim_all(h, 40_001, worker="w2")
    assert ack(h, a, 40_002, "late") != "OK"  # the first holder's late ACK: fenced off
    ack(h, a2, 40_003, "a", worker="w2")
    fail(h, b, 40_004, retry=False)  # b dead: counted dead
    h.apply(["requeue", 40_005, "wf1.1"])
    [b2] = claim_all(h, 40_006)
    ack(h, b2, 40_007, "b")  # completes now, but its first final outcome was the count
    assert h.task("wf1.3") is None
    progress = view(h)
    assert progress["status"] == "running"  # c is still out: the chord is not over
    assert (progress["groups"][0]["completed"], progress["groups"][0]["dead"]) == (1, 1)
    ack(h, c, 40_008, "c")
    got = view(h)
    assert got["groups"][0]["completed"] == 2 and got["groups"][0]["dead"] == 1
    assert got["status"] == "failed" and h.task("wf1.3") is None  # on_error=fail


def test_chord_on_error_callback_runs_with_partial_results_and_errors(h):
    submit(h, {"chord": [t(), t()], "callback": t("sum"), "on_error": "callback"})
    a, b = claim_all(h, 2000)
    fail(h, a, 2001, retry=False)
    ack(h, b, 2002, "b")
    payload = h.task("wf1.2")["payload"]
    assert payload["results"] == [None, "b"]
    assert payload["errors"] == [{"id": "wf1.0", "status": "dead", "error": "boom"}, None]


def test_chain_passes_results_and_a_dead_step_stops_it(h):
    tree = {"chain": [t(payload=1), t(payload=2, pass_result=True),
                      {"group": [t(), t()], "pass_result": True}, t("last")]}
    submit(h, tree)
    [first] = claim_all(h, 2000)
    assert first["id"] == "wf1.0"
    ack(h, first, 2001, "one")
    [second] = claim_all(h, 2002)
    assert second["payload"] == {"previous": "one", "payload": 2}
    ack(h, second, 2003, "two")
    members = claim_all(h, 2004)
    assert [m["payload"] for m in members] == [{"previous": "two", "payload": None}] * 2
    ack(h, members[0], 2005, "m0")
    fail(h, members[1], 2006, retry=False)
    got = view(h)
    assert got["status"] == "failed"
    assert [(r["id"], r["status"]) for r in got["tasks"]] == [
        ("wf1.0", "completed"), ("wf1.1", "completed"), ("wf1.2", "completed"),
        ("wf1.3", "dead"), ("wf1.4", "cancelled")]
    assert h.task("wf1.4") is None and claim_all(h, 3000) == []


def test_nested_chord_whose_callback_is_a_chain(h):
    tree = {"chain": [t("start"),
                      {"chord": [t(), t()], "callback": {"chain": [t("cb1"),
                                                                   t("cb2", pass_result=True)]}},
                      t("after", pass_result=True)]}
    submit(h, tree)
    ack(h, claim_all(h, 2000)[0], 2001, "s")
    for i, job in enumerate(claim_all(h, 2002)):
        ack(h, job, 2003 + i, i)
    [cb1] = claim_all(h, 2010)
    assert cb1["type"] == "cb1" and cb1["payload"]["results"] == [0, 1]
    ack(h, cb1, 2011, "c1")
    [cb2] = claim_all(h, 2012)
    assert cb2["payload"] == {"previous": "c1", "payload": None}
    ack(h, cb2, 2013, "c2")
    [after] = claim_all(h, 2014)
    assert after["payload"]["previous"] == "c2"  # a chord's result is its callback's
    ack(h, after, 2015, "done")
    assert view(h)["status"] == "completed"


def test_cancel_cancels_what_has_not_run_and_nothing_follows(h):
    submit(h, chord(3))
    running = claim_all(h, 2000, count=1)[0]
    result = h.apply(["cancel_workflow", 2100, "wf1"])
    assert result["status"] == "cancelled" and result["cancelled_tasks"] == 2
    assert h.task("wf1.1")["status"] == "cancelled"
    assert ack(h, running, 2200, "x") == "OK"  # the running one finishes
    assert h.task("wf1.3") is None  # but no callback
    assert [r["status"] for r in view(h)["tasks"]] == [
        "completed", "cancelled", "cancelled", "cancelled"]
    assert h.apply(["cancel_workflow", 2300, "wf1"]).code == "BADSTATE"


def test_submit_is_whole_idempotent_and_deterministic(h, tmp_path):
    h.apply(["submit", 500, {"id": "taken", "type": "x", "queue": "default", "payload": None,
                             "priority": 0, "max_retries": 0, "timeout_secs": None,
                             "retry_backoff_secs": 1.0, "idempotency_key": None,
                             "run_at_ms": None}, LIMIT])
    before = h.digest()
    bad = submit(h, {"group": [t(), t(id="taken")]})
    assert bad.code == "BADSTATE" and h.digest() == before  # nothing of it was written
    assert submit(h, chord(2))["status"] == "pending"
    assert submit(h, chord(2)) == {"id": "wf1", "status": "pending", "size": 3,
                                   "duplicate": True}
    # Another machine applying the same log holds the same bytes.
    other = Harness(tmp_path / "other")
    for entry in h.entries:
        other.apply(*entry)
    assert other.digest() == h.digest()
    other.store.close()


def test_purge_removes_a_finished_workflow_whole(h):
    submit(h, {"group": [t(), t()]})
    for i, job in enumerate(claim_all(h, 2000)):
        ack(h, job, 2001 + i, i)
    assert view(h)["status"] == "completed"
    assert h.apply(["purge_workflows", 3000, 1000, 100]) == 0  # not past retention
    assert h.apply(["purge_workflows", 9000, 5000, 3]) == 3  # bounded per command
    assert h.apply(["purge_workflows", 9000, 5000, 100]) > 0
    prefix = keys.flow_prefix("wf1")
    assert list(h.store.scan(prefix, keys.prefix_end(prefix))) == []
    assert view(h) is None


@pytest.mark.parametrize("bad, message", [
    ({"group": []}, "non-empty"),
    ({"chain": [t()], "group": [t()]}, "one of"),
    ({"group": ["not a task"]}, r"group\[0\]: expected a task or a chain"),
    ({"chord": [{"chain": []}], "callback": t()}, r"chord\[0\]\.chain: expected a non-empty"),
    ({"chord": [t()]}, "callback: required"),
    ({"chord": [t()], "callback": t(), "on_error": "x"}, "on_error"),
    (t(delay_secs=5), "not allowed"),
    ({"group": [t(id="a"), t(id="a")]}, "used twice"),
    ({"group": [t(priority=99)]}, "priority"),
])
def test_bad_trees_are_rejected_at_the_edge(bad, message):
    with pytest.raises(v.Invalid, match=message):
        flatten({"workflow": bad}, 0, MAX_PAYLOAD)


def test_nesting_and_size_are_bounded():
    tree = t()
    for _ in range(MAX_NESTING):
        tree = {"chain": [tree]}
    with pytest.raises(v.Invalid, match="nest at most"):
        flatten({"workflow": tree}, 0, MAX_PAYLOAD)
    with pytest.raises(v.Invalid, match="more than 100000 tasks"):
        flatten({"workflow": {"group": [t()] * 100_001}}, 0, MAX_PAYLOAD)


def _ack_cost(tmp_path, name, n):
    """Time and store writes of one member's ACK in a chord of ``n`` members (the median of
    several ACKs, none of them the last)."""
    h = Harness(tmp_path / name)
    try:
        submit(h, chord(n), flow_id=name)
        jobs = claim_all(h, 2000)
        costs, writes = [], []
        for i, job in enumerate(jobs[:50]):
            start = time.perf_counter()
            results, batch = h.machine.apply_entry(h.machine.applied_index + 1, [
                ["ack", 3000 + i, job["id"], job["token"], i, "w1"]])
            costs.append(time.perf_counter() - start)
            writes.append(len(batch))
            h.store.write(batch, False)
            assert results == ["OK"]
        return sorted(costs)[len(costs) // 2], max(writes)
    finally:
        h.store.close()


def test_member_completion_cost_does_not_grow_with_the_chord(tmp_path):
    small_time, small_writes = _ack_cost(tmp_path, "small", 100)
    big_time, big_writes = _ack_cost(tmp_path, "big", 10_000)
    print(f"per-ACK apply: 100 members {small_time * 1e6:.0f} us / {small_writes} writes; "
          f"10,000 members {big_time * 1e6:.0f} us / {big_writes} writes")
    assert big_writes == small_writes  # the same keys: task, indexes, outcome, counter
    assert big_time < small_time * 5 + 0.0005  # O(1): not 100x (generous for a busy host)


def test_a_chain_of_1000_steps_hands_each_result_on(h):
    steps = [t(payload=i, pass_result=i > 0, queue="chain") for i in range(1000)]
    submit(h, {"chain": steps})
    for k in range(1000):
        [job] = h.apply(["claim", 2000 + k, "w1", ["chain"], 10, 30_000])  # one at a time
        if k:
            assert job["payload"] == {"previous": k - 1, "payload": k}
        ack(h, job, 2000 + k, k)
    assert view(h, limit=0)["status"] == "completed"


def test_chord_results_rolled_up_in_chunks_keep_member_order(h):
    """Members complete in a shuffled order, several per entry, across chunk boundaries
    (and a last chunk shorter than CHUNK); two results too big to roll up leave their
    chunk unrolled. The callback still gets every result in member order."""
    n = wf.CHUNK * 3 + 5
    submit(h, chord(n))
    jobs = claim_all(h, 2000)
    order = list(range(n))
    random.Random(7).shuffle(order)
    big = "x" * (wf.CHUNK_BYTES // 2 + 10)  # two of these pass CHUNK_BYTES in chunk 1
    expect = [{"m": i, "big": big} if i in (wf.CHUNK + 1, wf.CHUNK + 2) else i
              for i in range(n)]
    for start in range(0, n, 50):
        batch = [["ack", 3000, jobs[i]["id"], jobs[i]["token"], expect[i], "w1"]
                 for i in order[start:start + 50]]
        h.apply(*batch)
        if start + 50 < n:
            assert h.task(f"wf1.{n}") is None  # not early
    assert h.store.get(keys.flow_chunk("wf1", "0", 1)) == b"!"  # too big: read one by one
    assert h.store.get(keys.flow_chunk("wf1", "0", 0))[:1] == b"="
    assert h.task(f"wf1.{n}")["payload"]["results"] == expect


def test_firing_ack_reads_chunks_not_every_member(h, monkeypatch):
    """The ACK that fires a 10,000-member chord's callback reads about N/CHUNK records
    (and never iterates the members' outcomes); it read all 10,000 before."""
    n = 10_000
    submit(h, chord(n))
    jobs = claim_all(h, 2000)
    for start in range(0, n - 1, 1000):
        h.apply(*[["ack", 3000, j["id"], j["token"], i, "w1"]
                  for i, j in enumerate(jobs[start:min(start + 1000, n - 1)], start)])
    reads = []
    real_get, real_items = h.store.db.get, h.store.db.items

    class Counting:  # the Rdict's methods are read-only: wrap the handle instead
        def __getattr__(self, name):
            return getattr(real_db, name)

        def get(self, key, *a, **kw):
            reads.append(key)
            return real_get(key, *a, **kw)

        def items(self, *a, **kw):
            raise AssertionError("the firing ACK iterated the members' outcomes")

    real_db = h.store.db
    monkeypatch.setattr(h.store, "db", Counting())
    ack(h, jobs[-1], 4000, n - 1)
    monkeypatch.setattr(h.store, "db", real_db)
    assert h.task(f"wf1.{n}")["payload"]["results"] == list(range(n))
    assert len(reads) < n // wf.CHUNK + 3 * wf.CHUNK, len(reads)


def test_chord_whose_members_are_chains(h):
    """Celery's chord([chain(a, b), chain(a, b)], cb): each member is a chain; it counts
    when its last step completes, with that step's result, in member order."""
    tree = {"chord": [{"chain": [t("a", payload=i), t("b", pass_result=True)]}
                      for i in range(3)] + [t("solo")],
            "callback": t("sum")}
    assert submit(h, tree)["size"] == 8
    first = claim_all(h, 2000)
    assert sorted(j["type"] for j in first) == ["a", "a", "a", "solo"]  # first steps only
    for job in first:
        ack(h, job, 2001, f"{job['type']}{job['payload']}")
    seconds = claim_all(h, 2002)
    assert [j["payload"]["previous"] for j in seconds] == ["a0", "a1", "a2"]
    ack(h, seconds[2], 2003, "b2")
    ack(h, seconds[0], 2004, "b0")
    assert h.task("wf1.7") is None  # member 1's chain is not over: not early
    progress = view(h)
    assert progress["groups"][0]["completed"] == 3  # solo, chain 2, chain 0
    assert [r["role"] for r in progress["tasks"]][:2] == ["chord.member[0].step[0]",
                                                          "chord.member[0].step[1]"]
    ack(h, seconds[1], 2005, "b1")
    [cb] = claim_all(h, 2006)
    assert cb["type"] == "sum"
    assert cb["payload"]["results"] == ["b0", "b1", "b2", "soloNone"]
    ack(h, cb, 2007, "total")
    assert view(h)["status"] == "completed"


def test_group_of_chains_a_failed_chain_fails_its_member(h):
    """A member chain whose step dies counts as a dead member (the rest of that chain never
    runs); on_error=callback hands the callback the partial results and the error."""
    tree = {"chain": [t("start"),
                      {"chord": [{"chain": [t("a"), t("b")]}, {"group": [t("g"), t("g")]}],
                       "callback": t("cb"), "on_error": "callback", "pass_result": True}]}
    submit(h, tree)
    [start] = claim_all(h, 2000)
    ack(h, start, 2001, "s")
    jobs = {j["type"] + str(i): j for i, j in enumerate(claim_all(h, 2002))}
    assert sorted(jobs) == ["a0", "g1", "g2"]
    assert jobs["a0"]["payload"] == {"previous": "s", "payload": None}  # pass_result reached it
    assert jobs["g1"]["payload"] == {"previous": "s", "payload": None}
    fail(h, jobs["a0"], 2003, retry=False)  # the chain member dies at its first step
    ack(h, jobs["g1"], 2004, 1)
    ack(h, jobs["g2"], 2005, 2)
    [cb] = claim_all(h, 2006)
    assert cb["type"] == "cb"
    assert cb["payload"]["results"] == [None, [1, 2]]  # a group member's result: its list
    assert cb["payload"]["errors"][0]["status"] == "dead"
    assert cb["payload"]["errors"][1] is None
    assert h.task("wf1.2") is None  # the dead chain's step b never ran


def test_nesting_inside_group_members_is_bounded():
    tree = t()
    for _ in range(MAX_NESTING):
        tree = {"group": [tree]}
    flatten({"workflow": tree}, 0, MAX_PAYLOAD)  # MAX_NESTING groups: accepted
    with pytest.raises(v.Invalid, match="nest at most"):
        flatten({"workflow": {"group": [tree]}}, 0, MAX_PAYLOAD)
    with pytest.raises(v.Invalid, match="more than 100000 tasks"):
        flatten({"workflow": {"group": [{"chain": [t(), t()]}] * 50_001}}, 0, MAX_PAYLOAD)


def test_results_too_big_to_hand_on_fail_the_step_with_the_reason(h):
    """A callback's input is the sum of its members' results: over HANDED_MAX_BYTES the
    callback is not submitted (no worker could fetch it) and the chord fails saying why;
    just under it the callback runs."""
    share = wf.HANDED_MAX_BYTES // 3
    submit(h, chord(3), flow_id="under")
    for i, job in enumerate(claim_all(h, 2000)):
        ack(h, job, 2001 + i, "x" * (share - 100))
    [callback] = claim_all(h, 2010)
    assert callback["id"] == "under.3" and len(callback["payload"]["results"]) == 3

    submit(h, chord(3), flow_id="over")
    for i, job in enumerate(claim_all(h, 3000)):
        ack(h, job, 3001 + i, "x" * (share + 100))
    assert h.task("over.3") is None and claim_all(h, 3010) == []
    got = view(h, "over")
    assert got["status"] == "failed"
    assert f"over the {wf.HANDED_MAX_BYTES}-byte limit" in got["error"]
    assert got["error"].startswith("node ")


def test_a_previous_result_too_big_for_the_next_step_fails_the_chain(h):
    submit(h, {"chain": [t(), t("next", pass_result=True), t("last")]})
    [first] = claim_all(h, 2000)
    ack(h, first, 2001, "y" * (wf.HANDED_MAX_BYTES + 1))
    assert claim_all(h, 2002) == [] and h.task("wf1.1") is None
    got = view(h)
    assert got["status"] == "failed" and "previous step" in got["error"]
    # A member chain failing for that reason counts as a dead member of its chord, with the
    # reason as its error.
    submit(h, {"chord": [{"chain": [t(), t("next", pass_result=True)]}, t()],
               "callback": t("sum"), "on_error": "callback"}, flow_id="nested")
    jobs = claim_all(h, 3000)
    ack(h, jobs[0], 3001, "y" * (wf.HANDED_MAX_BYTES + 1))
    ack(h, jobs[1], 3002, "fine")
    [callback] = claim_all(h, 3003)
    assert callback["payload"]["results"] == [None, "fine"]
    assert "previous step" in callback["payload"]["errors"][0]["error"]


def test_a_group_handed_more_than_its_fanout_limit_fails_whole(h, monkeypatch):
    """A group with pass_result writes its input once per member: the total is bounded too.
    (The limit is lowered here so the test writes megabytes, not 256 MiB.)"""
    monkeypatch.setattr(wf, "HANDED_FANOUT_MAX_BYTES", 1 << 20)
    tree = {"chain": [t(), {"group": [t() for _ in range(10)], "pass_result": True}]}
    submit(h, tree, flow_id="fits")
    ack(h, claim_all(h, 2000)[0], 2001, "z" * 100_000)  # 10 x ~100 KB: under 1 MiB
    assert len(claim_all(h, 2002)) == 10
    submit(h, tree, flow_id="over")
    ack(h, claim_all(h, 3000)[0], 3001, "z" * 110_000)  # 10 x ~110 KB: over it
    assert claim_all(h, 3002) == []
    got = view(h, "over")
    assert got["status"] == "failed" and "each of its 10 members" in got["error"]
