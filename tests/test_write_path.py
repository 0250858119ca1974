"""The log's write path never dies silently (issue 10, item 1): in-process RaftLog and LocalLog
with exceptions injected into their proposal, commit and apply paths; the watchdog that makes
/health and the metrics say so when writes are stuck; what a timed-out write answers (item 8).
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import types

import pytest
from pysyncobj import FAIL_REASON

from broker import config as cfg
from broker.api import health
from broker.api.metrics import BrokerCollector
from broker.log.base import Unavailable, deliver
from broker.log.local import LocalLog
from broker.log.raft import RaftLog
from broker.machine import StateMachine
from broker.store import Store
from taskqueue import jsonutil


def nested(depth: int):
    value = 0
    for _ in range(depth):
        value = [value]
    return value


def run(coro, timeout: float = 20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class FakeEngine:
    """Stands in for pysyncobj: a leader that commits every entry at once, or fails it."""

    def __init__(self):
        self.fail_next = None  # an exception apply_entry raises once

    def _getLeader(self):
        return "127.0.0.1:7002"

    def _isLeader(self):
        return True

    def apply_entry(self, blob, callback):
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        commands = jsonutil.loads(blob)
        callback([f"done {c[0]}" for c in commands], FAIL_REASON.SUCCESS)


@pytest.fixture
def raft_log(tmp_path):
    config = cfg.from_mapping({
        "broker": {"host": "127.0.0.1", "port": 7001},
        "persistence": {"data_dir": str(tmp_path / "data")},
        "raft": {"enabled": True, "node_id": "node1", "secret": "test-raft-secret-0123",
                 "peers": ["127.0.0.1:7003"], "forward_timeout_secs": 0.3},
    })
    store = Store(tmp_path / "data")
    rl = RaftLog(config, StateMachine(store), store)
    rl.engine = FakeEngine()
    yield rl
    store.close()


async def start_commit_loop(rl: RaftLog) -> None:
    rl._loop = asyncio.get_running_loop()
    rl._slots = asyncio.Semaphore(4)
    rl._tasks.append(asyncio.create_task(rl._commit_loop(), name="tq-raft-commit"))


def test_raft_commit_loop_fails_what_breaks_and_goes_on(raft_log, monkeypatch):
    rl = raft_log

    async def scenario():
        await start_commit_loop(rl)
        assert await rl.propose(["first", 0]) == "done first"
        # A command the encoder refuses (deeper than it encodes) fails alone, with an error;
        # the ones in the same entry commit. Before: the commit loop died, every write hung.
        deep = rl.propose(["submit", 0, nested(300)])
        fine = rl.propose(["fine", 0])
        results = await asyncio.gather(deep, fine, return_exceptions=True)
        assert isinstance(results[0], Unavailable), results
        assert "cannot be encoded" in str(results[0])
        assert results[1] == "done fine"
        # The engine raising on a proposal fails that entry's proposals only.
        rl.engine.fail_next = RuntimeError("injected")
        with pytest.raises(Unavailable, match="RuntimeError"):
            await rl.propose(["second", 0])
        # A bug inside the loop itself fails what it held; the loop takes the next one.
        real = rl._encodable
        monkeypatch.setattr(rl, "_encodable", lambda taken: 1 / 0)
        with pytest.raises(Unavailable, match="internal error"):
            await rl.propose(["third", 0])
        monkeypatch.setattr(rl, "_encodable", real)
        assert await rl.propose(["fourth", 0]) == "done fourth"
        assert await rl.propose_many([["a", 0], ["b", 0]]) == ["done a", "done b"]
        assert rl.in_flight == 0 and rl.write_stalled() == 0.0
        await rl._stop_proposals()

    run(scenario())


def test_raft_timed_out_write_says_outcome_unknown_or_answers_its_task(raft_log):
    rl = raft_log
    rl.engine.apply_entry = lambda blob, callback: None  # never answers

    async def scenario():
        await start_commit_loop(rl)
        with pytest.raises(Unavailable) as err:
            await rl.propose(["ack", 0, "t1", 1, None])
        assert "outcome unknown" in str(err.value)
        assert "not committed" not in str(err.value)
        # The node applied the submit meanwhile (its task is in RocksDB): answer it.
        spec = {"id": "late-1", "type": "t", "queue": "default", "payload": {"n": 1},
                "priority": 0, "max_retries": 3, "timeout_secs": None,
                "retry_backoff_secs": 1.0, "idempotency_key": None, "run_at_ms": None}
        now = int(time.time() * 1000)
        results, batch = rl._machine.apply_entry(1, [["submit", now, spec, 1000]])
        rl.store.write(batch, False)
        task = await rl.propose(["submit", now, spec, 1000])
        assert task["id"] == "late-1" and task["status"] == "pending"
        assert not task.get("duplicate")
        await rl._stop_proposals()

    run(scenario())


def test_a_failed_proposal_nobody_awaits_logs_no_unretrieved_exception():
    seen = []

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: seen.append(context))
        future = loop.create_future()
        deliver(future, None, Unavailable("no answer; outcome unknown"), failed=True)
        del future
        gc.collect()
        awaited = loop.create_future()
        deliver(awaited, None, Unavailable("still raised"), failed=True)
        with pytest.raises(Unavailable, match="still raised"):
            await awaited

    asyncio.run(scenario())
    assert not seen, seen


@pytest.fixture
def local_store(tmp_path):
    store = Store(tmp_path / "data")
    yield store
    store.close()


@pytest.mark.parametrize("sync_ms", [0, 100])
def test_local_log_fails_an_entry_whose_apply_raises_and_goes_on(local_store, monkeypatch,
                                                                 sync_ms):
    machine = StateMachine(local_store)
    ll = LocalLog(machine, local_store, node_id="n1", address="127.0.0.1:1",
                  sync_interval_ms=sync_ms)
    real = machine.apply_entry
    calls = {"n": 0}

    def flaky(index, commands):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected apply failure")
        return real(index, commands)

    monkeypatch.setattr(machine, "apply_entry", flaky)

    async def scenario():
        await ll.start()
        with pytest.raises(Unavailable, match="RuntimeError"):
            await ll.propose(["pause", 1, "q1"])
        assert await ll.propose(["pause", 2, "q2"]) == "OK"
        assert ll.write_stalled() == 0.0
        await ll.stop()

    run(scenario())
    assert machine.paused == {"q2"}


def test_watchdog_turns_health_and_metrics_when_writes_are_stuck(local_store, monkeypatch):
    machine = StateMachine(local_store)
    ll = LocalLog(machine, local_store, node_id="n1", address="127.0.0.1:1",
                  sync_interval_ms=0)
    ll.stall_secs = 0.3
    release = threading.Event()
    real_write = local_store.write

    def stuck_write(batch, sync):  # an fsync that never returns (a dead disk)
        release.wait(30)
        return real_write(batch, sync)

    monkeypatch.setattr(local_store, "write", stuck_write)
    broker = types.SimpleNamespace(stopping=threading.Event(),
                                   service=types.SimpleNamespace(log=ll))

    def metric(families, name):
        return next(f.samples[0].value for f in families if f.name == name)

    async def scenario():
        await ll.start()
        assert health.node_health(broker)[0] == health.HEALTHY
        pending = asyncio.ensure_future(ll.propose(["pause", 1, "q"]))
        deadline = time.monotonic() + 10
        while health.node_health(broker)[0] != health.WRITE_STALLED:
            assert time.monotonic() < deadline, health.node_health(broker)
            await asyncio.sleep(0.05)
        verdict, body = health.node_health(broker)
        assert body["status"] == "write_stalled" and body["stalled_secs"] >= 0.3
        view = {"queues": {}, "paused": set(), "totals": {}, "operations": {},
                "workers": 0, "rocksdb": {}, "log": ll.status(), "is_leader": True,
                "resp_connections": 0, "resp_worker_connections": 0, "resp_accepted": 0,
                "rest_connections": None, "uptime": 1.0,
                "write_stalled": health.write_stalled(ll), "proposals_waiting": 1}
        families = list(BrokerCollector._families(view))
        assert metric(families, "tq_log_write_stalled") == 1
        assert metric(families, "tq_log_proposals_waiting") == 1
        release.set()
        assert await pending == "OK"
        assert health.node_health(broker)[0] == health.HEALTHY
        assert ll.write_stalled() == 0.0
        await ll.stop()

    run(scenario())
