"""The producer side of ``@task``: ``handler.submit(...)`` against a real broker, with a
handle whose ``wait()`` returns the handler's result (WAIT-TASK)."""

from __future__ import annotations

import threading
import uuid

import pytest

import taskqueue
from taskqueue import producer
from taskqueue.client import Client
from taskqueue.errors import TaskFailed
from worker.registry import REGISTRY, task


@pytest.fixture(autouse=True)
def fresh_settings():
    yield
    producer.configure()  # back to the environment's defaults for other tests


def settle_one(addr: str, queue: str, fail: bool = False) -> threading.Thread:
    """A worker that runs one job of ``queue``: its result is the payload doubled."""
    def work():
        with Client(addr, identity={"worker_id": f"w-{queue}", "queues": [queue]}) as w:
            job = w.fetch([queue], timeout_ms=10000)[0]
            if fail:
                w.fail(job["id"], job["token"], "no", retry=False)
            else:
                w.ack(job["id"], job["token"], job["payload"] * 2)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_submit_from_a_handler_and_wait_for_its_result(broker):
    queue = f"p-{uuid.uuid4().hex[:8]}"

    @task(f"double-{queue}")
    def double(payload):
        return payload * 2

    assert REGISTRY.get(f"double-{queue}").fn is double
    assert double(4) == 8  # still a plain function
    taskqueue.configure(broker.addr)
    handle = double.submit(21, queue=queue, priority=5)
    assert handle.status == "pending"
    with Client(broker.addr) as c:
        stored = c.get(handle.id)
    assert (stored["type"], stored["priority"], stored["queue"]) == (
        f"double-{queue}", 5, queue)
    with pytest.raises(TimeoutError):
        handle.wait(timeout=0.2)
    settle_one(broker.addr, queue)
    assert handle.wait(timeout=30) == 42
    assert handle.status == "completed"


def test_a_dead_task_raises_and_the_environment_configures(broker, monkeypatch):
    queue = f"p-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TQ_BROKER_ADDR", broker.addr)
    producer.configure()

    @task
    def flaky(payload):
        raise RuntimeError("never runs here")

    handle = flaky.submit("x", queue=queue, max_retries=0)
    settle_one(broker.addr, queue, fail=True)
    with pytest.raises(TaskFailed) as info:
        handle.wait(timeout=30)
    assert info.value.task["status"] == "dead"
