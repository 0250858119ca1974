"""Time-driven state changes, proposed as commands like any client's.

Every ``broker.sweep_interval_ms`` the leader looks (with cheap reads) for leases past their
deadline and scheduled tasks whose time has come, and proposes ``expire`` / ``promote``
commands only when there is something to do, so an idle cluster's log stays idle. Less
often it purges finished tasks past ``completed_task_retention_days`` and drops workers
that stopped heartbeating. The commands carry the leader's clock; apply never reads one.
"""

from __future__ import annotations

import asyncio
import logging

from broker import keys
from broker.log.base import NotLeader, Unavailable
from broker.machine import FINISHED
from broker.service import Service, now_ms
from taskqueue import jsonutil

log = logging.getLogger("tq.sweeper")

BATCH = 1000
PURGE_EVERY_SECS = 60.0
WORKER_EXPIRY_EVERY_SECS = 5.0


class Sweeper:
    def __init__(self, service: Service):
        self.service = service
        config = service.config
        self.interval = config.broker.sweep_interval_ms / 1000.0
        self.retention_ms = int(config.persistence.completed_task_retention_days * 86400_000)
        self.worker_timeout_ms = int(1000 * max(2 * config.worker.lease_timeout_secs,
                                                3 * config.worker.heartbeat_interval_secs))
        # Purge at least every minute, and often enough for short retentions (tests, labs).
        self.purge_every = min(PURGE_EVERY_SECS, max(1.0, self.retention_ms / 4000.0))
        self._task: asyncio.Task | None = None
        self._last_purge = 0.0
        self._last_worker_expiry = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tq-sweeper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            if not self.service.log.is_leader():
                continue
            try:
                await self.sweep_once(loop.time())
            except (NotLeader, Unavailable):
                pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep failed")

    def _due(self, prefix: bytes, upper: bytes) -> bool:
        # Start at the machine's hint: the front of these indexes is a run of tombstones.
        lower = self.service.machine.hints.start(prefix)
        return self.service.store.first_key(lower, upper) is not None

    async def sweep_once(self, mono_now: float) -> None:
        propose = self.service.log.propose
        now = now_ms()
        while self._due(keys.SCHEDULE, keys.schedule_until(now)):
            if await propose(["promote", now, BATCH]) < BATCH:
                break
        while self._due(keys.LEASE, keys.lease_until(now)):
            if await propose(["expire", now, BATCH]) < BATCH:
                break
        if mono_now - self._last_worker_expiry >= WORKER_EXPIRY_EVERY_SECS:
            self._last_worker_expiry = mono_now
            cutoff = now - self.worker_timeout_ms
            if self._stale_workers(cutoff):
                gone = await propose(["expire_workers", now, cutoff])
                if gone:
                    log.info("workers gone (no heartbeat): %s", ", ".join(gone))
        if mono_now - self._last_purge >= self.purge_every:
            self._last_purge = mono_now
            cutoff = now - self.retention_ms
            while self._purgeable(cutoff):
                if await propose(["purge", now, cutoff, BATCH]) < BATCH:
                    break
            # Finished workflows' own records (broker/commands/workflows.py), same retention.
            while self.service.store.first_key(keys.FLOW_FINISHED,
                                               keys.flow_finished_until(cutoff)):
                if await propose(["purge_workflows", now, cutoff, BATCH]) < BATCH:
                    break

    def _stale_workers(self, cutoff_ms: int) -> bool:
        store = self.service.store
        return any(jsonutil.loads(raw).get("last_seen", 0) * 1000 < cutoff_ms
                   for _, raw in store.scan(keys.WORKER, keys.prefix_end(keys.WORKER), 10000))

    def _purgeable(self, cutoff_ms: int) -> bool:
        store = self.service.store
        return any(store.first_key(keys.status_prefix(s), keys.status_until(s, cutoff_ms))
                   for s in FINISHED)
