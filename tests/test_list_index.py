"""LIST's index of tasks by queue and type (broker/listindex.py) on a real RocksDB: written at submit,
deleted at purge, backfilled once into a store written before them, and used by LIST so a
rare type among many tasks comes back in one page instead of a scan budget's worth."""

from __future__ import annotations

import pytest

from broker import config as config_mod
from broker import keys, listindex
from broker import service as service_mod
from broker.auth import ADMIN, Principal
from broker.log.local import LocalLog
from broker.machine import StateMachine
from broker.store import Store
from tests.test_machine import Harness, spec

ADMIN_KEY = Principal("admin", frozenset({ADMIN}))


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path / "db")
    yield harness
    harness.store.close()


def index_entries(store) -> set[bytes]:
    return {k for k, _ in store.scan(keys.BY_TYPE, keys.prefix_end(keys.BY_TYPE))}


def service_over(store) -> service_mod.Service:
    machine = StateMachine(store)
    log = LocalLog(machine, store, node_id="n1", address="127.0.0.1:1", sync_interval_ms=0)
    config = config_mod.from_mapping({})
    return service_mod.Service(config, store, log, auth=None)  # the principal is given


def listed(service, **filters) -> list[str]:
    """Every task id LIST returns for ``filters``, following next_cursor page by page."""
    ids, cursor = [], None
    while True:
        args = dict(filters, limit=7)
        if cursor:
            args["cursor"] = cursor
        page = service.list_tasks(ADMIN_KEY, args)
        ids += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def submit_mix(h, common=300, rare=10):
    for n in range(common):
        h.apply(["submit", 1000, spec(f"c{n:04d}", type="resize",
                                      queue="img" if n % 2 else "mail"), 10**6])
    for n in range(rare):
        h.apply(["submit", 1000, spec(f"r{n:04d}", type="audit", queue="mail"), 10**6])


def test_a_submit_indexes_the_task_and_a_purge_removes_it(h):
    h.apply(["submit", 1000, spec("t1", type="audit", queue="mail"), 1000])
    assert index_entries(h.store) == {keys.by_type("mail", "audit", "t1")}
    # Claim and ack: a transition touches neither index.
    (job,) = h.apply(["claim", 2000, "w1", ["mail"], 1, 30_000])
    assert h.apply(["ack", 3000, "t1", job["token"], None, "w1"]) == "OK"
    assert len(index_entries(h.store)) == 1
    assert h.apply(["purge", 9000, 5000, 100]) == 1
    assert index_entries(h.store) == set()


def test_list_by_type_finds_a_rare_type_in_one_page_past_the_scan_budget(h, monkeypatch):
    submit_mix(h)
    # A budget far below the 310 stored tasks: scanning the task table, the first page of
    # type=audit would end after 50 records with nothing found and a cursor to go on.
    monkeypatch.setattr(service_mod, "LIST_SCAN_BUDGET", 50)
    service = service_over(h.store)
    page = service.list_tasks(ADMIN_KEY, {"type": "audit", "limit": 100})
    assert [t["id"] for t in page["tasks"]] == [f"r{n:04d}" for n in range(10)]
    assert page["next_cursor"] is None
    assert listed(service, type="audit", queue="mail") == [f"r{n:04d}" for n in range(10)]
    assert listed(service, type="audit", queue="img") == []
    assert listed(service, type="audit", status="pending") == [f"r{n:04d}" for n in range(10)]
    assert listed(service, type="audit", status="running") == []


def test_list_by_queue_pages_through_that_queue_only(h):
    submit_mix(h, common=40, rare=3)
    service = service_over(h.store)
    # A queue's tasks by type, then id.
    assert listed(service, queue="mail") == ([f"r{n:04d}" for n in range(3)]
                                             + [f"c{n:04d}" for n in range(0, 40, 2)])
    # A type alone walks each queue's range in turn; pages of 7 cross from img to mail.
    assert listed(service, type="resize") == ([f"c{n:04d}" for n in range(1, 40, 2)]
                                              + [f"c{n:04d}" for n in range(0, 40, 2)])
    assert listed(service, type="nosuchtype") == []
    assert len(listed(service)) == 43


def test_a_cursor_of_another_listing_is_refused(h):
    submit_mix(h, common=20, rare=0)
    service = service_over(h.store)
    page = service.list_tasks(ADMIN_KEY, {"queue": "img", "limit": 3})
    with pytest.raises(service_mod.ServiceError, match="another listing"):
        service.list_tasks(ADMIN_KEY, {"queue": "mail", "cursor": page["next_cursor"]})
    with pytest.raises(service_mod.ServiceError, match="another listing"):
        service.list_tasks(ADMIN_KEY, {"status": "pending", "cursor": page["next_cursor"]})


def test_a_store_written_before_the_indexes_is_backfilled_once(tmp_path):
    h = Harness(tmp_path / "db")
    submit_mix(h, common=25, rare=4)
    expected = index_entries(h.store)
    assert len(expected) == 29
    # Make it the store of an older broker: no index entries, no marker.
    for key in expected | {keys.META_LIST_INDEX}:
        h.store.db.delete(key)
    h.store.close()

    store = Store(tmp_path / "db")
    try:
        StateMachine(store)  # load backfills
        assert index_entries(store) == expected
        assert store.get(keys.META_LIST_INDEX) is not None
        assert listindex.backfill(store) == 0  # the marker: never again
        assert listed(service_over(store), type="audit") == [f"r{n:04d}" for n in range(4)]
    finally:
        store.close()


def test_backfill_after_the_marker_is_deleted_rebuilds_a_damaged_index(tmp_path):
    h = Harness(tmp_path / "db")
    submit_mix(h, common=5, rare=2)
    expected = index_entries(h.store)
    h.store.db.delete(keys.by_type("mail", "audit", "r0001"))
    h.store.db.delete(keys.META_LIST_INDEX)  # the documented repair
    assert listindex.backfill(h.store) == 7
    assert index_entries(h.store) == expected
    h.store.close()
