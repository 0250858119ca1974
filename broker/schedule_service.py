"""The service's schedule requests (a mixin of :class:`broker.service.Service`).

Validation is broker/schedule_spec.py, apply is broker/commands/schedules.py; this checks
permissions, stamps ``now``, proposes, and reads schedules from this node's store. Changing
a schedule needs ``admin`` (it submits tasks on its own from then on); reading needs
``read_tasks``.
"""

from __future__ import annotations

from broker import schedule_spec as ss
from broker import validation as v
from broker.auth import ADMIN, READ
from broker.commands import schedules
from taskqueue import errors

MAX_PAGE = 1000


class ScheduleService:
    def _schedule_id(self, value) -> str:
        try:
            return ss.schedule_id(value)
        except v.Invalid as exc:
            raise self._error(exc.code, exc.message) from None

    async def create_schedule(self, principal, spec) -> dict:
        self._require(principal, ADMIN)
        try:
            normal = ss.normalise(spec, self._max_payload)
        except v.Invalid as exc:
            raise self._error(exc.code, exc.message) from None
        return await self._propose(["schedule_put", self._now(), normal, "create"])

    async def update_schedule(self, principal, schedule_id, changes) -> dict:
        """Change some fields of a schedule; the others keep their value."""
        self._require(principal, ADMIN)
        schedule_id = self._schedule_id(schedule_id)
        changes = dict(v.obj(changes, "schedule"))
        if changes.setdefault("id", schedule_id) != schedule_id:
            raise self._error(errors.BADREQ, "id: a schedule's id cannot change")
        current = schedules.read(self.store, schedule_id)
        if current is None:
            raise self._error(errors.NOTFOUND, f"no schedule {schedule_id!r}")
        try:
            normal = ss.normalise(changes, self._max_payload, base=current)
        except v.Invalid as exc:
            raise self._error(exc.code, exc.message) from None
        return await self._propose(["schedule_put", self._now(), normal, "update"])

    async def pause_schedule(self, principal, schedule_id, paused: bool) -> dict:
        self._require(principal, ADMIN)
        return await self._propose(["schedule_pause", self._now(),
                                    self._schedule_id(schedule_id), bool(paused)])

    async def delete_schedule(self, principal, schedule_id) -> dict:
        self._require(principal, ADMIN)
        schedule_id = self._schedule_id(schedule_id)
        gone = await self._propose(["schedule_delete", self._now(), schedule_id])
        return {"id": schedule_id, "deleted": bool(gone)}

    async def run_schedule(self, principal, schedule_id) -> dict:
        """Enqueue the schedule's task once, now (its slots are not affected)."""
        self._require(principal, ADMIN)
        return await self._propose(["schedule_run", self._now(),
                                    self._schedule_id(schedule_id), self._depth_limit])

    def get_schedule(self, principal, schedule_id) -> dict:
        self._require(principal, READ)
        schedule_id = self._schedule_id(schedule_id)
        found = schedules.read(self.store, schedule_id)
        if found is None:
            if not self.log.caught_up():
                raise self._error(errors.UNAVAILABLE,
                                  f"schedule {schedule_id!r} is not on this node yet: it is "
                                  "catching up with the leader; retry, or read from the leader")
            raise self._error(errors.NOTFOUND, f"no schedule {schedule_id!r}")
        found["read_from"] = self.read_from()
        return found

    def list_schedules(self, principal, after=None, limit=None) -> dict:
        """A page of schedules in id order; ``next_cursor`` continues it (None: the end)."""
        self._require(principal, READ)
        if after is not None:
            after = self._schedule_id(after)
        if limit is None:
            limit = 100
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise self._error(errors.BADREQ, f"limit: expected 1-{MAX_PAGE}")
        page = schedules.read_page(self.store, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return {"schedules": page, "next_cursor": page[-1]["id"] if more else None,
                "counts": schedules.counts(self.store), "read_from": self.read_from()}
