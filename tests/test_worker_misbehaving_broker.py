"""Worker behaviour against a broker that misbehaves on demand (tests/fake_broker.py):
ACK batching, retries through UNAVAILABLE and lost connections, a FETCH that never returns.

Everything else about the worker is tested against the real broker in test_worker.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from taskqueue.client import AsyncClient, Client
from taskqueue.resp import encode_error
from tests.fake_broker import FakeBroker
import worker.examples  # noqa: F401  (registers echo)
from worker.runner import Reporter, Worker, WorkerConfig


@pytest.fixture
def fake():
    broker = FakeBroker().start()
    yield broker
    broker.stop()


def claim(fake: FakeBroker, n: int) -> list[dict]:
    with Client(fake.address) as producer:
        for i in range(n):
            producer.submit("echo", i)
    with Client(fake.address, identity={"worker_id": "w"}) as consumer:
        return consumer.fetch(["default"], n, 100)


def test_acks_finishing_together_share_one_ack_command(fake):
    jobs = claim(fake, 50)

    async def main():
        async with AsyncClient(fake.address, identity={"worker_id": "w"}) as client:
            reporter = Reporter(client, asyncio.Event())
            return await asyncio.gather(*(reporter.ack(j["id"], j["token"], j["payload"])
                                          for j in jobs))

    assert asyncio.run(main()) == ["OK"] * 50
    acks = [arg for command, arg in fake.commands if command == "ACK"]
    assert len(acks) <= 2  # the first alone, the rest batched behind it
    assert sum(len(a) if isinstance(a, list) else 1 for a in acks) == 50
    assert all(fake.tasks[j["id"]]["status"] == "completed" for j in jobs)


def test_ack_is_retried_through_unavailable_and_reports_final_refusals(fake):
    [job, other] = claim(fake, 2)

    async def main():
        async with AsyncClient(fake.address, identity={"worker_id": "w"}) as client:
            reporter = Reporter(client, asyncio.Event())
            fake.override["ACK"] = encode_error("UNAVAILABLE", "no leader")
            pending = asyncio.create_task(reporter.ack(job["id"], job["token"], "r"))
            await asyncio.sleep(0.3)
            assert not pending.done()  # still retrying, not given up
            del fake.override["ACK"]
            first = await asyncio.wait_for(pending, 10)
            stale = await reporter.ack(other["id"], other["token"] + 1000, "r")
            return first, stale

    assert asyncio.run(main()) == ("OK", "LEASELOST")
    assert fake.tasks[job["id"]]["status"] == "completed"


def test_fail_is_retried_after_a_lost_connection(fake):
    [job] = claim(fake, 1)

    async def main():
        async with AsyncClient(fake.address, identity={"worker_id": "w"}) as client:
            reporter = Reporter(client, asyncio.Event())
            client.abort()
            return await reporter.fail(job["id"], job["token"], "ValueError: x", "tb",
                                       retry=False)

    assert asyncio.run(main()) == "OK"
    assert fake.tasks[job["id"]]["status"] == "dead"


def test_worker_recovers_from_a_fetch_that_never_returns(fake):
    """A half-open connection (the reply never comes) must not end consumption."""
    fake.swallow["FETCH"] = 1

    async def main():
        w = Worker(WorkerConfig(addresses=fake.address, concurrency=2, fetch_timeout_ms=200,
                                reply_timeout_secs=0.5, heartbeat_interval_secs=0.2))
        running = asyncio.create_task(w.run())
        await asyncio.sleep(0.1)
        producer = AsyncClient(fake.address)
        task = await producer.submit("echo", "still here")
        deadline = time.monotonic() + 10
        while fake.tasks[task["id"]]["status"] != "completed":
            assert time.monotonic() < deadline, "the worker stopped consuming"
            await asyncio.sleep(0.05)
        w.request_shutdown()
        await producer.close()
        return await running, w.reconnects

    exit_code, reconnects = asyncio.run(main())
    assert exit_code == 0 and reconnects == 1
    assert fake.swallow["FETCH"] == 0
