"""The service's workflow requests (a mixin of :class:`broker.service.Service`).

Kept in its own module so the façade stays one screen per family: validation and id
stamping happen in broker/workflow_spec.py, apply in broker/commands/workflows.py, and this
only checks permissions, proposes, and reads the view from the store.
"""

from __future__ import annotations

from broker import keys
from broker import validation as v
from broker import workflow_spec
from broker.auth import CANCEL, READ, SUBMIT
from broker.commands import workflows
from taskqueue import errors

MAX_VIEW_TASKS = 100_000
DEFAULT_VIEW_TASKS = 1000
MAX_LIST_PAGE = 100
SUMMARY_FIELDS = ("id", "status", "size", "created_at", "updated_at", "finished_at", "error")


class WorkflowService:
    async def submit_workflow(self, principal, request) -> dict:
        """Validate, stamp ids, propose one ``submit_workflow``: accepted or rejected whole."""
        self._require(principal, SUBMIT)
        now = self._now()
        try:
            flat = workflow_spec.flatten(request, now, self._max_payload)
        except v.Invalid as exc:
            raise self._error(exc.code, exc.message) from None
        result = await self._propose(["submit_workflow", now, flat, self._depth_limit])
        self._rates.add("submitted", len(flat["tasks"]) if not result.get("duplicate") else 0)
        return result

    def get_workflow(self, principal, flow_id, task_limit=None) -> dict:
        self._require(principal, READ)
        flow_id = _flow_id(flow_id, self)
        if task_limit is None:
            task_limit = DEFAULT_VIEW_TASKS
        if isinstance(task_limit, bool) or not isinstance(task_limit, int) or not (
                0 <= task_limit <= MAX_VIEW_TASKS):
            raise self._error(errors.BADREQ, f"limit: expected 0-{MAX_VIEW_TASKS}")
        found = workflows.view(self.store, flow_id, task_limit)
        if found is None:
            if not self.log.caught_up():
                raise self._error(errors.UNAVAILABLE,
                                  f"workflow {flow_id!r} is not on this node yet: it is "
                                  "catching up with the leader; retry, or read from the leader")
            raise self._error(errors.NOTFOUND, f"no workflow {flow_id!r}")
        found["read_from"] = self.read_from()
        return found

    def list_workflows(self, principal, after=None, limit=None) -> dict:
        """A page of workflows in id order (their summaries, no tasks); ``next_cursor``
        continues it (None: the end). One seek per workflow, whatever its size: every key of
        a workflow shares the prefix ``F<id>\\x00``, so the next workflow starts at the
        first key past ``F<id>\\x01``."""
        self._require(principal, READ)
        if after is not None:
            after = _flow_id(after, self)
        if limit is None:
            limit = 50
        if isinstance(limit, bool) or not isinstance(limit, int) or not (
                1 <= limit <= MAX_LIST_PAGE):
            raise self._error(errors.BADREQ, f"limit: expected 1-{MAX_LIST_PAGE}")
        page = list(_workflow_page(self.store, after, limit + 1))
        more = len(page) > limit
        page = page[:limit]
        return {"workflows": page, "next_cursor": page[-1]["id"] if more else None,
                "read_from": self.read_from()}

    async def cancel_workflow(self, principal, flow_id) -> dict:
        self._require(principal, CANCEL)
        return await self._propose(["cancel_workflow", self._now(), _flow_id(flow_id, self)])


def _flow_id(value, service) -> str:
    if not isinstance(value, str) or not v.TASK_ID.fullmatch(value):
        raise service._error(errors.BADREQ, "id: required, the workflow id "
                             "(1-128 characters of A-Z a-z 0-9 _ . : -)")
    return value


def _workflow_page(store, after, limit: int):
    """Up to ``limit`` workflow summaries with ids after ``after``. Ids never hold NUL, and
    the finished-workflows index (``F\\x00...``) sorts before every workflow."""
    upper = keys.prefix_end(keys.FLOW)
    lower = keys.FLOW + b"\x01" if after is None else keys.FLOW + after.encode() + b"\x01"
    found = 0
    while found < limit:
        key = store.first_key(lower, upper)
        if key is None:
            return
        flow_id = key[1:key.index(b"\x00", 1)].decode()
        lower = keys.FLOW + flow_id.encode() + b"\x01"
        # A workflow being purged (several commands for a big one) loses its record last.
        record = store.get_json(keys.flow(flow_id))
        if record is not None:
            found += 1
            yield {name: record.get(name) for name in SUMMARY_FIELDS}
