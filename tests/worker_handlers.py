"""Handlers the worker tests load with ``--handlers tests.worker_handlers``.

They leave evidence outside the broker (lines appended to the file named by
``TQ_TEST_EVIDENCE``), so a test can tell how many times a handler really ran, in which
process, and whether it finished.
"""

from __future__ import annotations

import asyncio
import os
import time

from worker import current_job, task

import worker.examples  # noqa: F401  (echo, sleep and fail too)


def _evidence(line: str) -> None:
    path = os.environ.get("TQ_TEST_EVIDENCE")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


@task("record")
def record(payload):
    """Writes 'start ID', sleeps payload.seconds, writes 'done ID'."""
    job = current_job()
    _evidence(f"start {job.id} {job.attempts} {os.getpid()}")
    time.sleep(float((payload or {}).get("seconds", 0)))
    _evidence(f"done {job.id} {job.attempts} {os.getpid()}")
    return {"pid": os.getpid(), "attempt": job.attempts}


@task("whoami")
def whoami(payload):
    job = current_job()
    return {"pid": os.getpid(), "id": job.id, "type": job.type, "queue": job.queue,
            "attempts": job.attempts, "worker_id": job.worker_id}


@task("async_echo")
async def async_echo(payload):
    await asyncio.sleep(0.01)
    return {"echo": payload, "id": current_job().id}


@task("async_sleep")
async def async_sleep(payload):
    await asyncio.sleep(float(payload["seconds"]))
    return "slept"


@task("spin")
def spin(payload):
    """CPU-bound until payload.seconds pass (a runaway handler when they are many)."""
    started = time.time()
    end = time.monotonic() + float(payload["seconds"])
    n = 0
    while time.monotonic() < end:
        n += 1
    return {"pid": os.getpid(), "loops": n, "started": started, "ended": time.time()}


@task("unserialisable")
def unserialisable(payload):
    return object()
