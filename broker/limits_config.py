"""The configuration's ``limits:`` section, put into the state machine by the leader.

Limits live in the replicated state (broker/commands/limits.py); the file only declares
them. Once after start, as soon as this node is the leader, it proposes one
``limits_reconcile`` command carrying its file's limits and their fingerprint (a hash).
The machine remembers the fingerprint it applied last, so:

- the same file on every node, restarts and failovers propose nothing new (the command is
  skipped when the fingerprint matches), and runtime changes made with ``tq-admin limits``
  stay until the file's limits change;
- an operator who edits ``limits:`` and restarts the leader gets exactly the file's limits
  for the declared queues (and, with ``limits.exclusive``, none elsewhere).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from broker import keys
from broker.log.base import NotLeader, Unavailable
from broker.service import Service, now_ms
from taskqueue import jsonutil

log = logging.getLogger("tq.limits")

CHECK_EVERY_SECS = 0.5


def fingerprint(declared: list, exclusive: bool) -> str:
    canonical = jsonutil.dumps({"queues": sorted(declared, key=lambda e: e["queue"]),
                                "exclusive": exclusive})
    return hashlib.sha256(canonical).hexdigest()


class LimitsReconciler:
    def __init__(self, service: Service):
        self.service = service
        self.declared = list(service.config.limits.queues)
        self.exclusive = bool(service.config.limits.exclusive)
        self.fingerprint = fingerprint(self.declared, self.exclusive)
        self._task: asyncio.Task | None = None
        self.done = asyncio.Event()

    def start(self) -> None:
        if not self.declared and not self.exclusive:
            self.done.set()  # nothing declared: the runtime limits are the whole truth
            return
        self._task = asyncio.create_task(self._run(), name="tq-limits-reconcile")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        service = self.service
        while not self.done.is_set():
            try:
                if service.store.get_json(keys.META_LIMITS_CONFIG) == self.fingerprint:
                    self.done.set()  # another leader (or an earlier start) applied this file
                    break
                if service.log.is_leader():
                    changed = await service.log.propose(
                        ["limits_reconcile", now_ms(), self.fingerprint, self.declared,
                         self.exclusive])
                    log.info("limits from the configuration applied: %s", changed)
                    self.done.set()
                    break
            except (NotLeader, Unavailable):
                pass
            except asyncio.CancelledError:
                raise
            except Exception:  # keep trying: a dead reconciler would silently drop limits
                log.exception("applying the configuration's limits failed; retrying")
            await asyncio.sleep(CHECK_EVERY_SECS)
