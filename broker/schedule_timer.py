"""The leader's schedule timer, and the configuration's ``schedules:`` reconciler.

Timer: every ``schedules.tick_ms`` the leader looks at the front of the due index (one
RocksDB seek) and, only when a schedule is due, proposes ``["fire_schedules", now, limit,
depth_limit]`` (broker/commands/schedules.py). The command carries the leader's clock;
apply never reads one. Any node may become leader: the schedules' state is replicated, so a
new leader's timer goes on from the last slot the log recorded, and a slot is never
enqueued twice (its task id is derived from the slot).

Reconciler: once after start, as soon as this node is the leader, it proposes one
``schedules_reconcile`` with the file's schedules and their fingerprint, unless the machine
recorded that fingerprint already (the same file on every node proposes nothing twice).
Declared schedules are upserted; schedules created at runtime are left alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from broker import keys
from broker.log.base import NotLeader, Unavailable
from broker.service import Service, now_ms
from taskqueue import jsonutil

log = logging.getLogger("tq.schedules")

BATCH = 500
RECONCILE_EVERY_SECS = 0.5


def fingerprint(declared: list) -> str:
    canonical = jsonutil.dumps(sorted(declared, key=lambda s: s["id"]))
    return hashlib.sha256(canonical).hexdigest()


class ScheduleTimer:
    def __init__(self, service: Service):
        self.service = service
        config = service.config.schedules
        self.interval = config.tick_ms / 1000.0
        self.declared = list(config.list)
        self.fingerprint = fingerprint(self.declared)
        self.reconciled = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.fired = 0  # tasks this node's proposals enqueued (a log line, not a metric)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="tq-schedule-timer"))
        if self.declared:
            self._tasks.append(asyncio.create_task(self._reconcile(),
                                                   name="tq-schedules-reconcile"))
        else:
            self.reconciled.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _due(self, now: int) -> bool:
        service = self.service
        lower = service.machine.hints.start(keys.PERIODIC_DUE)
        return service.store.first_key(lower, keys.periodic_due_until(now)) is not None

    async def tick(self) -> int:
        """Fire what is due now; the number of tasks enqueued."""
        service = self.service
        now = now_ms()
        total = 0
        while self._due(now):
            result = await service.log.propose(
                ["fire_schedules", now, BATCH, service.config.broker.queue_depth_threshold])
            if not isinstance(result, dict):  # a Rejected: logged, the next tick retries
                log.error("fire_schedules rejected: %s", result)
                break
            total += result["fired"]
            if not result["more"]:
                break
        return total

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.service.log.is_leader():
                continue
            try:
                self.fired += await self.tick()
            except (NotLeader, Unavailable):
                pass
            except asyncio.CancelledError:
                raise
            except Exception:  # never die silently: a dead timer would stop every schedule
                log.exception("firing schedules failed; retrying on the next tick")

    async def _reconcile(self) -> None:
        service = self.service
        while True:
            try:
                if service.store.get_json(keys.META_SCHEDULES_CONFIG) == self.fingerprint:
                    break  # another leader (or an earlier start) applied this file
                if service.log.is_leader():
                    changed = await service.log.propose(
                        ["schedules_reconcile", now_ms(), self.fingerprint, self.declared])
                    log.info("schedules from the configuration applied: %s", changed)
                    break
            except (NotLeader, Unavailable):
                pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("applying the configuration's schedules failed; retrying")
            await asyncio.sleep(RECONCILE_EVERY_SECS)
        self.reconciled.set()
