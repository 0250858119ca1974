"""The figures: submit throughput (single, bulk), drain throughput, round-trip latency."""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.procs import start_workers, stop_all
from taskqueue.client import AsyncClient, Client


def _run(coro):
    """The AsyncClient figures run on uvloop when it is installed, as a producer would."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def submit_single(addr: str, n: int) -> float:
    """Tasks/s from one client submitting one task per request, waiting for each reply."""
    return submit_single_latency(addr, n)["per_sec"]


def submit_single_latency(addr: str, n: int) -> dict:
    """``submit_single`` with each submit's reply time: tasks/s, p50/p99 ms."""
    samples = []
    with Client(addr) as client:
        start = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            client.submit("noop", i, queue="bench-single")
            samples.append(time.perf_counter() - t0)
        per_sec = n / (time.perf_counter() - start)
    samples.sort()
    return {"per_sec": per_sec, "p50_ms": round(statistics.median(samples) * 1000, 3),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1] * 1000, 3)}


def submit_concurrent(addr: str, n: int, clients: int = 64) -> float:
    """Tasks/s from ``clients`` connections, each submitting one task at a time and
    waiting for its reply (many web-app processes submitting at once)."""
    return _run(_submit_concurrent(addr, n, clients))


async def _submit_concurrent(addr: str, n: int, clients: int) -> float:
    each = max(1, n // clients)
    conns = [AsyncClient(addr) for _ in range(clients)]
    for conn in conns:
        await conn.__aenter__()
    try:
        async def one(conn, k):
            for i in range(each):
                await conn.submit("noop", i, queue=f"bench-concurrent-{k % 8}")

        start = time.perf_counter()
        await asyncio.gather(*(one(conn, k) for k, conn in enumerate(conns)))
        return each * clients / (time.perf_counter() - start)
    finally:
        for conn in conns:
            await conn.__aexit__(None, None, None)


def submit_single_pipelined(addr: str, n: int, in_flight: int = 64) -> float:
    """Tasks/s from one client submitting one task per request, ``in_flight`` requests
    outstanding on its one connection (AsyncClient): what a producer serving many
    concurrent callers (a web app) does. The broker puts the requests that arrive
    together into one group commit."""
    return _run(_submit_single_pipelined(addr, n, in_flight))


async def _submit_single_pipelined(addr: str, n: int, in_flight: int) -> float:
    async with AsyncClient(addr) as client:
        window = asyncio.Semaphore(in_flight)

        async def one(i):
            async with window:
                await client.submit("noop", i, queue="bench-single-pipelined")

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - start)


def submit_bulk(addr: str, n: int, batch: int = 1000, queue: str = "bench-bulk",
                in_flight: int = 1) -> float:
    """Tasks/s from one client submitting ``batch`` tasks per request.

    With ``in_flight`` > 1 the client pipelines that many bulk requests on its connection
    (AsyncClient), so building the next batch overlaps the broker's work on the last one.
    """
    if in_flight <= 1:
        with Client(addr) as client:
            start = time.perf_counter()
            for first in range(0, n, batch):
                _check_bulk(client.submit_bulk(_batch(first, min(n, first + batch), queue)))
            return n / (time.perf_counter() - start)
    return _run(_submit_bulk_pipelined(addr, n, batch, queue, in_flight))


async def _submit_bulk_pipelined(addr, n, batch, queue, in_flight) -> float:
    async with AsyncClient(addr) as client:
        window = asyncio.Semaphore(in_flight)

        async def one(first):
            async with window:
                tasks = _batch(first, min(n, first + batch), queue)
                _check_bulk(await client.submit_bulk(tasks))

        start = time.perf_counter()
        await asyncio.gather(*(one(first) for first in range(0, n, batch)))
        return n / (time.perf_counter() - start)


def _batch(first: int, end: int, queue: str) -> list[dict]:
    return [{"type": "noop", "payload": i, "queue": queue} for i in range(first, end)]


def _check_bulk(results) -> None:
    for result in results:
        if "id" not in result:
            raise RuntimeError(result["error"])


def _completed(client: Client, queue: str) -> int:
    return client.queues().get(queue, {}).get("completed", 0)


def drain(addr: str, n: int, worker_processes: int, concurrency: int) -> float:
    """Tasks/s completed by worker processes from a pre-loaded, paused queue."""
    queue = "default"
    with Client(addr) as client:
        client.pause(queue)
        before = _completed(client, queue)
        submit_bulk(addr, n, queue=queue)
        workers = start_workers(addr, worker_processes, concurrency)
        try:
            deadline = time.monotonic() + 60
            while len([w for w in client.workers() if w.get("state") == "active"]) \
                    < worker_processes and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # let every worker's first FETCH block on the paused queue
            start = time.perf_counter()
            client.resume(queue)
            while _completed(client, queue) - before < n:
                if time.perf_counter() - start > 600:
                    raise TimeoutError("drain did not finish in 10 minutes")
                time.sleep(0.01)
            return n / (time.perf_counter() - start)
        finally:
            stop_all(workers)


def round_trip(addr: str, n: int, concurrency: int) -> dict:
    """Latency from submit to completion (seen through WAIT-TASK), one task at a time, with
    one worker running."""
    workers = start_workers(addr, 1, concurrency)
    samples = []
    try:
        with Client(addr) as client:
            deadline = time.monotonic() + 60
            while not client.workers() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            for i in range(n + 20):
                start = time.perf_counter()
                task_id = client.submit("noop", i, queue="default")["id"]
                # WAIT-TASK: the broker answers when it applies the ACK (no polling).
                if client.wait(task_id, timeout=30)["status"] != "completed":
                    raise RuntimeError(f"round trip: task {task_id} did not complete")
                if i >= 20:  # warm-up
                    samples.append((time.perf_counter() - start) * 1000)
    finally:
        stop_all(workers)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 3),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
            "samples": len(samples)}
