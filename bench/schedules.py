"""Schedules figure: what ``n`` defined schedules cost the hot path and the broker's memory.

The issue's claim (docs/schedules-limits-results.md): schedules live in RocksDB, the
leader's timer finds due ones by seeking the front of a due index, and no claim or submit
reads them, so 10,000 of them leave the drain rate within noise and the broker's RSS
flat. This defines ``n`` schedules that are not due during the run (a yearly cron on
January 1st, or an interval of a day), so the drain measured next runs beside them.
"""

from __future__ import annotations

import asyncio
import uuid

from taskqueue.client import AsyncClient


def define(addr: str, n: int, in_flight: int = 64) -> str:
    """Create ``n`` schedules (pipelined on one connection); returns their id prefix."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    asyncio.run(_define(addr, n, in_flight, prefix))
    return prefix


async def _define(addr: str, n: int, in_flight: int, prefix: str) -> None:
    async with AsyncClient(addr) as client:
        window = asyncio.Semaphore(in_flight)

        async def one(i):
            # Half cron, half interval: both kinds sit in the same due index.
            timing = {"cron": "0 0 1 1 *"} if i % 2 else {"interval_secs": 86_400}
            async with window:
                await client.create_schedule(dict(
                    timing, id=f"{prefix}-{i}",
                    task={"type": "noop", "queue": "bench-schedules", "payload": i}))

        await asyncio.gather(*(one(i) for i in range(n)))
