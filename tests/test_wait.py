"""Waiting for a task's result: WAIT-TASK (RESP), ``GET /tasks/{id}?wait=``, gRPC ``Wait``,
``Client.wait`` / ``AsyncClient.wait``, against a real broker process.

A wait is answered by the broker's apply of the completion (broker/waiters.py): the tests
check that it returns soon after the ACK (far before its timeout), that a timeout answers
the true unfinished state, and that the number of waits is bounded."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import grpc
import httpx
import pytest

from broker.api import taskqueue_pb2 as pb
from broker.api import taskqueue_pb2_grpc as pb_grpc
from broker.waiters import TaskWaiters, TooManyWaiters
from taskqueue.client import AsyncClient, Client
from taskqueue.errors import BrokerError
from tests.api_support import module_broker, rest_url


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = module_broker(tmp_path_factory, "wait")
    yield proc
    proc.stop()


def uniq(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ack_later(node, queue: str, delay: float, result=None, fail: bool = False) -> threading.Thread:
    """A worker that claims one task of ``queue`` after ``delay`` s and settles it."""
    def work():
        time.sleep(delay)
        with Client(node.addr, identity={"worker_id": uniq("w"), "queues": [queue]}) as w:
            jobs = w.fetch([queue], timeout_ms=5000)
            assert jobs
            if fail:
                w.fail(jobs[0]["id"], jobs[0]["token"], "boom", retry=False)
            else:
                w.ack(jobs[0]["id"], jobs[0]["token"], result)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_wait_returns_when_the_task_completes(node):
    queue = uniq()
    with Client(node.addr) as c:
        task = c.submit("t", {"n": 1}, queue=queue)
        worker = ack_later(node, queue, 0.5, {"answer": 42})
        started = time.monotonic()
        done = c.wait(task["id"], timeout=60)
        elapsed = time.monotonic() - started
        worker.join(10)
        assert done["status"] == "completed" and done["result"] == {"answer": 42}
        assert elapsed < 30, elapsed  # woken by the ACK, not by the 60 s timeout
        # a finished task answers at once, again and again
        assert c.wait(task["id"], timeout=60)["status"] == "completed"


def test_wait_answers_dead_and_cancelled(node):
    queue = uniq()
    with Client(node.addr) as c:
        task = c.submit("t", None, queue=queue, max_retries=0)
        worker = ack_later(node, queue, 0.3, fail=True)
        assert c.wait(task["id"], timeout=60)["status"] == "dead"
        worker.join(10)
        other = c.submit("t", None, queue=uniq())
        threading.Timer(0.3, lambda: Client(node.addr).cancel(other["id"])).start()
        assert c.wait(other["id"], timeout=60)["status"] == "cancelled"


def test_wait_times_out_with_the_current_state(node):
    with Client(node.addr) as c:
        task = c.submit("t", None, queue=uniq())
        started = time.monotonic()
        assert c.wait(task["id"], timeout=0.5)["status"] == "pending"
        assert time.monotonic() - started >= 0.45
        assert c.wait(task["id"], timeout=0)["status"] == "pending"
        with pytest.raises(BrokerError) as info:
            c.wait("no-such-task", timeout=1)
        assert info.value.code == "NOTFOUND"
        with pytest.raises(BrokerError) as info:
            c._call("WAIT-TASK", {"id": task["id"], "timeout_ms": 10**9})
        assert info.value.code == "BADREQ"


def test_async_client_waits_concurrently(node):
    async def main():
        queue = uniq()
        async with AsyncClient(node.addr) as c:
            tasks = [await c.submit("t", i, queue=queue) for i in range(5)]
            waits = [asyncio.ensure_future(c.wait(t["id"], timeout=60)) for t in tasks]
            await asyncio.sleep(0.2)
            async with AsyncClient(node.addr, identity={"worker_id": uniq("w"),
                                                        "queues": [queue]}) as w:
                jobs = await w.fetch([queue], count=5, timeout_ms=5000)
                for job in jobs:
                    await w.ack(job["id"], job["token"], job["payload"] * 10)
            done = await asyncio.wait_for(asyncio.gather(*waits), 30)
        assert [d["result"] for d in done] == [0, 10, 20, 30, 40]

    asyncio.run(main())


def test_rest_long_poll_and_grpc_wait(node):
    queue = uniq()
    with Client(node.addr) as c:
        task = c.submit("t", None, queue=queue)
        other = c.submit("t", None, queue=uniq())
    ack_later(node, queue, 0.5, "rest")
    with httpx.Client(base_url=rest_url(node), timeout=90) as http:
        reply = http.get(f"/api/v1/tasks/{task['id']}", params={"wait": 60})
        assert reply.status_code == 200 and reply.json()["status"] == "completed"
        reply = http.get(f"/api/v1/tasks/{other['id']}", params={"wait": "0.3"})
        assert reply.status_code == 200 and reply.json()["status"] == "pending"
        # Each of these once answered 500 (OverflowError) or waited the wrong time.
        for bad in ("soon", "-1.7976931348623157e+308", "1e309", "inf", "nan", "-1", "301"):
            reply = http.get(f"/api/v1/tasks/{other['id']}", params={"wait": bad})
            assert reply.status_code == 400, (bad, reply.text)
    queue = uniq()
    with Client(node.addr) as c:
        task = c.submit("t", None, queue=queue)
    ack_later(node, queue, 0.5, "grpc")
    with grpc.insecure_channel(f"127.0.0.1:{node.config['api']['grpc_port']}") as channel:
        stub = pb_grpc.TaskQueueStub(channel)
        answer = stub.Wait(pb.WaitRequest(id=task["id"], timeout_secs=60), timeout=90)
        assert answer.status == "completed" and answer.result_json == '"grpc"'
        answer = stub.Wait(pb.WaitRequest(id=other["id"], timeout_secs=0.2), timeout=30)
        assert answer.status == "pending"
        for bad in (float("inf"), float("nan"), -1.0, 301.0):
            with pytest.raises(grpc.RpcError) as info:
                stub.Wait(pb.WaitRequest(id=other["id"], timeout_secs=bad), timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad


def test_waits_per_connection_are_bounded(node):
    async def main():
        async with AsyncClient(node.addr) as c:
            task = await c.submit("t", None, queue=uniq())
            waits = [asyncio.ensure_future(c.wait(task["id"], timeout=3))
                     for _ in range(1001)]
            results = await asyncio.gather(*waits, return_exceptions=True)
        refused = [r for r in results if isinstance(r, BrokerError)]
        assert len(refused) == 1 and refused[0].code == "BADREQ", refused[:3]
        assert sum(1 for r in results if isinstance(r, dict)) == 1000

    asyncio.run(main())


def test_registry_bounds_and_cleanup():
    async def main():
        waiters = TaskWaiters(per_owner=2, total=3)
        a1 = waiters.add("t1", "a")
        waiters.add("t2", "a")
        with pytest.raises(TooManyWaiters) as info:
            waiters.add("t3", "a")
        assert info.value.per_owner
        waiters.add("t1", "b")
        with pytest.raises(TooManyWaiters) as info:
            waiters.add("t1", "c")
        assert not info.value.per_owner
        waiters.notify(["t1", "unknown"])
        assert a1.done()
        waiters.discard("t1", "a", a1)
        waiters.discard("t1", "a", a1)  # twice is harmless
        assert waiters.count == 2
        waiters.add("t4", "c")

    asyncio.run(main())
