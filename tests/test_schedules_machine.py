"""Schedules in the state machine, on a real RocksDB (broker/commands/schedules.py).

A slot is enqueued once however often its firing is proposed or replayed; misfire policies
after downtime; pause/resume, run-now, end dates, jitter; the due index, not a scan."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from broker import keys
from broker import schedule_spec as ss
from broker.machine import Rejected, StateMachine
from broker.store import Store
from tests.test_machine import LIMIT, Harness, h  # noqa: F401  (fixture)

T0 = 1_800_000_000_000  # ms, a whole minute (2027-01-15 08:00 UTC)


def sched(sid="s1", **extra):
    spec = {"id": sid, "interval_secs": 1, "task": {"type": "tick", "queue": "default"}}
    spec.update(extra)
    return ss.normalise(spec, 1 << 20)


def create(h, now=T0, **extra):
    return h.apply(["schedule_put", now, sched(**extra), "create"])


def fire(h, now, limit=1000):
    return h.apply(["fire_schedules", now, limit, LIMIT])


def sched_tasks(h, sid="s1"):
    prefix = keys.task(f"sched:{sid}:")
    return sorted(int(k[len(prefix):]) for k, _ in h.store.scan(prefix, keys.prefix_end(prefix))
                  if k[len(prefix):].isdigit())


def test_each_slot_is_enqueued_once_however_often_it_is_fired(h):
    view = create(h)
    assert view["next_fire_at"] == (T0 + 1000) / 1000 and view["state"] == "active"
    assert fire(h, T0 + 500) == {"fired": 0, "schedules": 0, "more": False}
    assert fire(h, T0 + 3000)["fired"] == 3
    # the same firing again (a retried proposal, a new leader with the same clock), and an
    # earlier clock (a new leader behind): nothing new
    assert fire(h, T0 + 3000)["fired"] == 0
    assert fire(h, T0 + 2500)["fired"] == 0
    assert sched_tasks(h) == [T0 + 1000, T0 + 2000, T0 + 3000]
    task = h.task(f"sched:s1:{T0 + 1000}")
    assert task["type"] == "tick" and task["status"] == "pending"
    rec = h.store.get_json(keys.periodic("s1"))
    assert rec["last_slot_ms"] == T0 + 3000 and rec["next_fire_ms"] == T0 + 4000
    assert rec["fired"] == 3


def test_replaying_the_log_onto_a_fresh_store_gives_the_same_bytes(h, tmp_path):
    create(h, misfire="all")
    for now in (T0 + 1500, T0 + 1500, T0 + 4200, T0 + 90_000, T0 + 90_001):
        fire(h, now)
    h.apply(["schedule_run", T0 + 90_002, "s1", LIMIT])
    other = Harness(tmp_path / "replay")
    for entry in h.entries:
        other.apply(*entry)
    assert other.digest() == h.digest()
    # and re-applying an entry that is already applied changes nothing
    assert h.machine.apply_entry(1, h.entries[0]) == ([], None)
    other.store.close()


def test_misfire_skip_once_all(h):
    for sid, policy in (("k", "skip"), ("o", "once"), ("a", "all")):
        create(h, sid=sid, misfire=policy, misfire_grace_secs=5, misfire_limit=50)
    fire(h, T0 + 1000)  # slot 1 on time for all three
    # 100 s of downtime: slots 2..101 are due; 96..101 are within the 5 s grace
    fire(h, T0 + 101_000)
    on_time = [T0 + s * 1000 for s in range(96, 102)]
    assert sched_tasks(h, "k") == [T0 + 1000] + on_time
    assert sched_tasks(h, "o") == [T0 + 1000, T0 + 2000] + on_time
    assert sched_tasks(h, "a") == [T0 + s * 1000 for s in range(1, 52)] + on_time
    for sid in "koa":
        assert h.store.get_json(keys.periodic(sid))["misfires"] == 1
        assert h.store.get_json(keys.periodic(sid))["next_fire_ms"] == T0 + 102_000


def test_all_within_its_bound_loses_no_slot(h):
    create(h, misfire="all", misfire_grace_secs=0, misfire_limit=1000)
    fire(h, T0 + 600_000)
    assert sched_tasks(h) == [T0 + s * 1000 for s in range(1, 601)]
    assert h.store.get_json(keys.periodic("s1"))["misfires"] == 0


def test_a_small_limit_splits_the_work_across_firings_without_loss(h):
    create(h, misfire_grace_secs=3600)
    first = fire(h, T0 + 10_000, limit=4)
    assert first == {"fired": 4, "schedules": 1, "more": True}
    while fire(h, T0 + 10_000, limit=4)["more"]:
        pass
    assert sched_tasks(h) == [T0 + s * 1000 for s in range(1, 11)]


def test_due_schedules_are_found_by_the_index_not_a_scan(h):
    """10,000 schedules not due: a firing reads only the front of the N index."""
    h.apply(*[["schedule_put", T0, sched(f"idle{i}", interval_secs=3600), "create"]
              for i in range(10_000)])
    create(h, sid="busy")
    reads = []
    real = h.store.db

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def get(self, key, *a):
            reads.append(key)
            return real.get(key, *a)

    h.store.db = Counting()
    try:
        assert fire(h, T0 + 1000)["fired"] == 1
    finally:
        h.store.db = real
    assert len([k for k in reads if k.startswith(keys.PERIODIC)]) == 1
    assert h.store.get_json(keys.META_SCHEDULES) == {"total": 10_001, "paused": 0}


def test_pause_resume_and_run_now(h):
    create(h)
    fire(h, T0 + 1000)
    assert h.apply(["schedule_pause", T0 + 1500, "s1", True])["state"] == "paused"
    assert fire(h, T0 + 10_000)["fired"] == 0
    assert h.store.first_key(keys.PERIODIC_DUE, keys.prefix_end(keys.PERIODIC_DUE)) is None
    view = h.apply(["schedule_pause", T0 + 20_500, "s1", False])
    assert view["next_fire_at"] == (T0 + 21_000) / 1000  # pause is not a misfire
    fire(h, T0 + 21_000)
    assert sched_tasks(h) == [T0 + 1000, T0 + 21_000]
    ran = h.apply(["schedule_run", T0 + 21_100, "s1", LIMIT])
    assert ran["id"] == f"sched:s1:run:{T0 + 21_100}" and ran["status"] == "pending"
    again = h.apply(["schedule_run", T0 + 21_100, "s1", LIMIT])  # a retried proposal
    assert again["duplicate"] is True
    assert h.apply(["schedule_delete", T0 + 22_000, "s1"]) == 1
    assert h.apply(["schedule_delete", T0 + 22_000, "s1"]) == 0
    assert fire(h, T0 + 50_000)["fired"] == 0
    assert h.store.get_json(keys.META_SCHEDULES) == {"total": 0, "paused": 0}


def test_create_update_errors(h):
    create(h)
    assert isinstance(create(h), Rejected)
    assert h.apply(["schedule_put", T0, sched("nope"), "update"]).code == "NOTFOUND"
    fire(h, T0 + 2000)
    view = h.apply(["schedule_put", T0 + 2500, sched(interval_secs=10), "update"])
    assert view["fired"] == 2 and view["next_fire_at"] == (T0 + 12_500) / 1000
    assert h.apply(["schedule_pause", T0, "nope", True]).code == "NOTFOUND"
    assert h.apply(["schedule_run", T0, "nope", LIMIT]).code == "NOTFOUND"


def test_start_end_and_jitter(h):
    create(h, start_at=(T0 + 5000) / 1000, end_at=(T0 + 7000) / 1000, jitter_secs=0.5)
    fire(h, T0 + 60_000)
    assert sched_tasks(h) == [T0 + 5000, T0 + 6000, T0 + 7000]
    view = h.apply(["schedule_pause", T0 + 60_001, "s1", False])
    assert view["state"] == "ended" and view["next_fire_at"] is None
    delays = [h.task(f"sched:s1:{T0 + s}")["run_at"] for s in (5000, 6000, 7000)]
    for slot, run_at in zip((5000, 6000, 7000), delays):
        assert run_at is None or 0 <= run_at * 1000 - (T0 + slot) <= 500


def test_a_full_queue_spends_the_slot_and_says_so(h):
    create(h)
    h.apply(*[["submit", T0, {"id": f"f{i}", "type": "x", "queue": "default", "payload": None,
                              "priority": 0, "max_retries": 0, "timeout_secs": None,
                              "retry_backoff_secs": 1.0, "idempotency_key": None,
                              "run_at_ms": None}, 3] for i in range(3)])
    h.apply(["fire_schedules", T0 + 1000, 10, 3])
    rec = h.store.get_json(keys.periodic("s1"))
    assert rec["errors"] == 1 and "QUEUEFULL" in rec["last_error"]
    assert rec["next_fire_ms"] == T0 + 2000


def test_cron_in_a_zone_across_spring_forward(h):
    berlin = ZoneInfo("Europe/Berlin")
    start = int(datetime(2026, 3, 28, 12, tzinfo=berlin).timestamp() * 1000)
    create(h, now=start, interval_secs=None, cron="30 2 * * *", tz="Europe/Berlin",
           misfire="all")
    fire(h, start + 3 * 86400_000)
    fired = [datetime.fromtimestamp(s / 1000, berlin).strftime("%d %H:%M")
             for s in sched_tasks(h)]
    assert fired == ["29 03:00", "30 02:30", "31 02:30"]  # the missing 02:30 fires at 03:00


def test_reconcile_is_keyed_by_fingerprint(h):
    declared = [sched("cfg", interval_secs=60)]
    assert h.apply(["schedules_reconcile", T0, "fp1", declared]) == 1
    assert h.apply(["schedules_reconcile", T0 + 5, "fp1", declared]) == 0
    assert h.apply(["schedules_reconcile", T0 + 9, "fp2", declared]) == 0  # same definition
    rec = h.store.get_json(keys.periodic("cfg"))
    assert rec["created_at"] == T0 / 1000 and rec["next_fire_ms"] == T0 + 60_000


@pytest.mark.parametrize("bad, word", [
    ({"cron": "* * *", "interval_secs": None}, "5 fields"), ({"interval_secs": 0}, "interval_secs"),
    ({"cron": "* * * * *"}, "exactly one"), ({"tz": "Nowhere/Land"}, "tz"),
    ({"cron": "0 0 31 2 *", "interval_secs": None}, "no month"),
    ({"misfire": "sometimes"}, "misfire"), ({"task": {"queue": "q"}}, "task.type"),
    ({"id": "a b"}, "id"), ({"bogus": 1}, "bogus"), ({"jitter_secs": -1}, "jitter"),
    ({"start_at": 10, "end_at": 5}, "end_at"),
])
def test_bad_specs_name_the_field(bad, word):
    with pytest.raises(ss.v.Invalid, match=word):
        sched(**bad)


def test_machine_restart_keeps_schedules(tmp_path):
    store = Store(tmp_path / "db")
    h = Harness.__new__(Harness)
    h.store, h.machine, h.entries = store, StateMachine(store), []
    create(h)
    fire(h, T0 + 2000)
    store.close()
    h2 = Harness(tmp_path / "db")
    assert fire(h2, T0 + 2000)["fired"] == 0
    assert fire(h2, T0 + 3000)["fired"] == 1
    h2.store.close()
