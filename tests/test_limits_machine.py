"""Rate and concurrency limits in the state machine, on a real RocksDB (broker/commands/limits.py).

The bucket refills from the commands' ``now`` only; claims never exceed it, nor the
concurrency limit; every way a lease ends gives its slot back; replay is identical.
"""

from __future__ import annotations

from broker import keys
from broker.machine import Rejected, StateMachine
from broker.store import Store
from tests.test_machine import LEASE, LIMIT, Harness, claim, h, spec  # noqa: F401  (fixture)


def fill(h, n, now=1, queue="default", prefix="t"):
    h.apply(*[["submit", now, spec(f"{prefix}{i}", queue=queue), LIMIT] for i in range(n)])


def set_limit(h, now, queue="default", **limit):
    return h.apply(["limit_set", now, queue, limit])


def test_token_bucket_hands_out_burst_then_rate(h):
    fill(h, 300)
    set_limit(h, 1000, rate=10, burst=3)
    assert len(claim(h, 1000, count=50)) == 3  # a new bucket starts full: the burst
    assert claim(h, 1000, count=50) == []
    assert claim(h, 1099, count=50) == []  # 99 ms at 10/s is 0.99 of a token
    assert len(claim(h, 1100, count=50)) == 1
    assert len(claim(h, 1600, count=50)) == 3  # 500 ms earn five tokens, burst keeps three
    assert len(claim(h, 60_000, count=50)) == 3  # a long idle spell refills only to burst
    # Ten simulated seconds, claimed every 7 ms: 10/s * 9.996 s = 99 tasks, not one more.
    got = sum(len(claim(h, 60_000 + t, count=50)) for t in range(7, 10_001, 7))
    assert got == 99


def test_fractional_rate_and_a_clock_that_goes_back(h):
    fill(h, 10)
    set_limit(h, 0, rate=0.5, burst=1)
    assert len(claim(h, 0)) == 1
    assert claim(h, 1999) == []
    # A new leader whose clock is behind earns nothing and does not move the bucket back.
    assert claim(h, 500) == []
    assert len(claim(h, 2000)) == 1


def test_concurrency_is_never_exceeded_and_every_ending_frees_a_slot(h):
    fill(h, 20)
    set_limit(h, 0, concurrency=3)
    jobs = claim(h, 10, count=10)
    assert len(jobs) == 3 and claim(h, 11, count=10) == []
    running = lambda: h.machine.counters.queues["default"]["running"]  # noqa: E731
    # ACK frees one slot.
    assert h.apply(["ack", 20, jobs[0]["id"], jobs[0]["token"], None]) == "OK"
    [j4] = claim(h, 21, count=10)
    assert running() == 3
    # FAIL (retried later) frees one.
    assert h.apply(["fail", 30, jobs[1]["id"], jobs[1]["token"], "x", None, True, 0.5]) == "OK"
    [j5] = claim(h, 31, count=10)
    # Cancel of a running task frees one.
    h.apply(["cancel", 40, jobs[2]["id"]])
    [j6] = claim(h, 41, count=10)
    assert running() == 3 and claim(h, 42, count=10) == []
    # Lease expiry frees all three.
    assert h.apply(["expire", 41 + LEASE + 1, 100]) == 3
    assert running() == 0
    assert len(claim(h, 41 + LEASE + 2, count=10)) == 3
    assert {j4["id"], j5["id"], j6["id"]}.isdisjoint(j["id"] for j in jobs)


def test_rate_and_concurrency_together_and_counted_throttling(h):
    fill(h, 20)
    set_limit(h, 0, rate=100, burst=5, concurrency=2)
    assert len(claim(h, 0, count=10)) == 2  # concurrency binds before the burst
    limit = h.apply(["limit_set", 0, "default", {"rate": 100, "burst": 5, "concurrency": 2}])
    assert limit["tokens"] == 3 and limit["running"] == 2  # a re-set keeps the bucket
    assert limit["throttled_concurrency"] == 1
    assert h.store.get_json(keys.limit("default"))["throttled_concurrency"] == 1


def test_limits_are_per_queue_and_one_entry_sees_its_own_claims(h):
    fill(h, 10, queue="a", prefix="a")
    fill(h, 10, queue="b", prefix="b")
    set_limit(h, 0, queue="a", rate=1, burst=2)
    # Two claims in one entry share the bucket: 2 in total, not 2 each.
    first, second = h.apply(["claim", 0, "w1", ["a"], 5, LEASE],
                            ["claim", 0, "w2", ["a"], 5, LEASE])
    assert len(first) + len(second) == 2
    got = claim(h, 0, count=20, queues=("a", "b"))
    assert [j["queue"] for j in got] == ["b"] * 10  # b has no limit


def test_clear_and_bad_specs(h):
    fill(h, 5)
    set_limit(h, 0, rate=1, burst=1)
    assert len(claim(h, 0, count=5)) == 1 and claim(h, 0, count=5) == []
    assert h.apply(["limit_clear", 0, "default"]) == 1
    assert h.apply(["limit_clear", 0, "default"]) == 0
    assert len(claim(h, 0, count=5)) == 4
    for bad in ({}, {"rate": 0}, {"rate": -1}, {"rate": True}, {"burst": 3},
                {"rate": 1, "burst": 0}, {"concurrency": 0}, {"concurrency": 1.5},
                {"rate": float("nan")}, {"speed": 3}):
        result = h.apply(["limit_set", 0, "q", bad])
        assert isinstance(result, Rejected) and result.code == "BADREQ", bad
    assert h.store.get(keys.limit("q")) is None and "q" not in h.machine.limits


def test_reconcile_applies_once_per_file_and_exclusive_clears_the_rest(h):
    set_limit(h, 0, queue="runtime", concurrency=1)
    declared = [{"queue": "a", "rate": 5}, {"queue": "b", "concurrency": 2}]
    assert h.apply(["limits_reconcile", 0, "f1", declared, False]) == 2
    assert set(h.machine.limits) == {"runtime", "a", "b"}
    assert h.store.get_json(keys.limit("a"))["burst"] == 5  # default: one second of rate
    h.apply(["limit_clear", 1, "a"])  # an operator's runtime change...
    assert h.apply(["limits_reconcile", 2, "f1", declared, False]) == 0  # ...survives
    assert "a" not in h.machine.limits
    assert h.apply(["limits_reconcile", 3, "f2", declared, True]) == 2  # a sets, runtime clears
    assert set(h.machine.limits) == {"a", "b"}


def test_limits_survive_a_restart_and_replay_is_identical(tmp_path):
    one = Harness(tmp_path / "one")
    fill(one, 50)
    set_limit(one, 0, rate=200, burst=4, concurrency=6)
    for t in range(0, 2000, 30):
        jobs = claim(one, t, count=3)
        for job in jobs[:1]:
            one.apply(["ack", t + 1, job["id"], job["token"], None])
    one.apply(["expire", 2000 + LEASE, 100])
    digest = one.digest()
    entries = one.entries
    limits_before = {q: vars_of(g) for q, g in one.machine.limits.items()}
    one.store.close()
    # The limit is back after a restart (on_load), bucket and all...
    reopened = StateMachine(Store(tmp_path / "one"))
    assert {q: vars_of(g) for q, g in reopened.limits.items()} == limits_before
    reopened.store.close()
    # ...and another replica applying the same log holds the same bytes.
    two = Harness(tmp_path / "two")
    for entry in entries:
        two.apply(*entry)
    assert two.digest() == digest
    # Concurrency 6 was reached and never passed on the way.
    assert max(running for running in two_running(entries, tmp_path)) == 6
    two.store.close()


def two_running(entries, tmp_path):
    """The queue's running count after each entry of a replay."""
    three = Harness(tmp_path / "three")
    for entry in entries:
        three.apply(*entry)
        yield three.machine.counters.queues.get("default", {}).get("running", 0)
    three.store.close()


def vars_of(gate):
    return (gate.rate_u_per_ms, gate.capacity_u, gate.concurrency)


def test_configuration_section_is_checked_before_start():
    import pytest

    from broker.config import ConfigError, from_mapping

    config = from_mapping({"limits": {"queues": [{"queue": "emails", "rate": 50},
                                                 {"queue": "reports", "concurrency": 4}]}})
    assert config.limits.queues == [
        {"queue": "emails", "rate": 50.0, "burst": 50, "concurrency": None},
        {"queue": "reports", "rate": None, "burst": None, "concurrency": 4}]
    assert config.limits.exclusive is False
    for bad, where in (([{"queue": "a"}], "limits.queues[0].limit"),
                       ([{"rate": 5}], "limits.queues[0].queue"),
                       ([{"queue": "a", "rate": 5}, {"queue": "a", "rate": 6}],
                        "limits.queues[1].queue"),
                       ([{"queue": "a", "rate": 5, "burst": 0}], "limits.queues[0].burst"),
                       ("emails", "limits.queues")):
        with pytest.raises(ConfigError) as err:
            from_mapping({"limits": {"queues": bad}})
        assert str(err.value).startswith(where), (bad, str(err.value))


def test_a_reconcile_that_fails_half_way_leaves_nothing_behind(h, monkeypatch):
    from broker.commands import limits

    set_limit(h, 0, queue="old", concurrency=1)
    real_clear = limits.clear_limit

    def broken_clear(m, now, queue):
        raise RuntimeError("a bug")

    monkeypatch.setattr(limits, "clear_limit", broken_clear)
    result = h.apply(["limits_reconcile", 0, "f1", [{"queue": "new", "rate": 5}], True])
    assert isinstance(result, Rejected) and result.code == "INTERNAL"
    # "new" was set before the failure: rolled back in RocksDB and in memory alike
    assert set(h.machine.limits) == {"old"} and h.store.get(keys.limit("new")) is None
    monkeypatch.setattr(limits, "clear_limit", real_clear)
    assert h.apply(["limits_reconcile", 0, "f1", [{"queue": "new", "rate": 5}], True]) == 2
    assert set(h.machine.limits) == {"new"}
