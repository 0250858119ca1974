"""A FETCH parked on an empty queue is handed its claim in the submit's own log entry
(broker/parked_fetches.py): one commit from submit to the worker holding the task, not two
(the wake, then a claim). On the service over a real LocalLog and RocksDB."""

from __future__ import annotations

import asyncio

import pytest

from broker import config as config_mod
from broker import service as service_mod
from broker.auth import ADMIN, Principal
from broker.log.local import LocalLog
from broker.machine import StateMachine
from broker.parked_fetches import ParkedFetches
from broker.store import Store

ADMIN_KEY = Principal("admin", frozenset({ADMIN}))


def run(coro, timeout: float = 20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Broker:
    """A service over a LocalLog on a real store, started inside the running loop."""

    def __init__(self, path, sync_interval_ms: int):
        self.store = Store(str(path))
        self.log = LocalLog(StateMachine(self.store), self.store, node_id="n1",
                            address="127.0.0.1:1", sync_interval_ms=sync_interval_ms)
        self.service = service_mod.Service(config_mod.from_mapping({}), self.store, self.log,
                                           auth=None)

    @property
    def entries(self) -> int:
        return self.log.status()["applied_index"]

    async def parked_fetch(self, worker: str = "w1", queues=("q",), timeout_ms: int = 5000):
        """Start a FETCH and return it once it is parked (its first claim found nothing)."""
        fetch = asyncio.ensure_future(self.service.fetch(
            ADMIN_KEY, worker, {"queues": list(queues), "count": 4, "timeout_ms": timeout_ms}))
        for _ in range(200):
            if len(self.service._parked):
                return fetch
            await asyncio.sleep(0.005)
        raise AssertionError("the FETCH never parked")

    def run(self, scenario) -> None:
        """Run ``scenario()`` (a coroutine function) with the log started, then stop it."""
        async def started():
            await self.log.start()
            try:
                await scenario()
            finally:
                await self.log.stop()
        run(started())

    def close(self):
        self.store.close()


@pytest.fixture(params=[100, 0], ids=["wal-sync-100ms", "fsync-each-entry"])
def broker(tmp_path, request):
    b = Broker(tmp_path / "db", request.param)
    yield b
    b.close()


def test_a_parked_fetch_gets_the_task_in_the_submits_entry(broker):
    async def scenario():
        fetch = await broker.parked_fetch()
        before = broker.entries
        task = await broker.service.submit(ADMIN_KEY, {"type": "t", "queue": "q"})
        jobs = await fetch
        assert [j["id"] for j in jobs] == [task["id"]]
        assert broker.entries == before + 1  # submit and claim: one entry (was two)
        assert len(broker.service._parked) == 0
        # The lease is real: the worker's ACK settles it.
        assert await broker.service.ack(ADMIN_KEY, "w1", [
            {"id": task["id"], "token": jobs[0]["token"], "result": 1}]) == ["OK"]
        assert broker.service.get(ADMIN_KEY, task["id"])["status"] == "completed"
    broker.run(scenario)


def test_the_longest_parked_fetch_is_handed_first_and_others_keep_waiting(broker):
    async def scenario():
        first = await broker.parked_fetch("w1")
        second = await broker.parked_fetch("w2", queues=("other", "q"))
        task = await broker.service.submit(ADMIN_KEY, {"type": "t", "queue": "q"})
        assert [j["id"] for j in await first] == [task["id"]]
        # w2 was woken by the apply, found nothing and parked again.
        await asyncio.sleep(0.05)
        assert not second.done() and len(broker.service._parked) == 1
        other = await broker.service.submit(ADMIN_KEY, {"type": "t", "queue": "other"})
        assert [j["id"] for j in await second] == [other["id"]]
    broker.run(scenario)


def test_a_task_not_due_or_not_claimable_is_not_handed(broker):
    async def scenario():
        fetch = await broker.parked_fetch(timeout_ms=400)
        later = await broker.service.submit(ADMIN_KEY, {"type": "t", "queue": "q",
                                                        "delay_secs": 60})
        await broker.service.set_paused(ADMIN_KEY, "q", True)
        paused = await broker.service.submit(ADMIN_KEY, {"type": "t", "queue": "q"})
        assert await fetch is None  # nothing due on an unpaused queue: timed out
        assert broker.service.get(ADMIN_KEY, later["id"])["status"] == "scheduled"
        assert broker.service.get(ADMIN_KEY, paused["id"])["status"] == "pending"
        assert len(broker.service._parked) == 0
    broker.run(scenario)


def test_a_worker_told_to_rest_is_handed_nothing(broker):
    async def scenario():
        await broker.service.register_worker(ADMIN_KEY, "w1", {"queues": ["q"]})
        fetch = await broker.parked_fetch("w1")
        await broker.service.worker_state(ADMIN_KEY, "w1", "quiet")
        task = await broker.service.submit(ADMIN_KEY, {"type": "t", "queue": "q"})
        assert await fetch is None
        assert broker.service.get(ADMIN_KEY, task["id"])["status"] == "pending"
    broker.run(scenario)


def test_registry_is_fifo_and_skips_fetches_that_ended():
    async def scenario():
        parked = ParkedFetches()
        a = parked.park("a", ["q"], 1)
        b = parked.park("b", ["q", "r"], 1)
        c = parked.park("c", ["q"], 1)
        a.future.cancel()  # timed out: wait_for cancelled its future
        assert parked.take("q") is b
        assert parked.take("r") is None  # b left every queue it waited on
        assert len(parked) == 1
        parked.wake(["q"])
        assert c.future.result() is None and parked.take("q") is None and len(parked) == 0
    run(scenario())
