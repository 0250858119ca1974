"""The service's workflow requests (a mixin of :class:`broker.service.Service`).

Kept in its own module so the façade stays one screen per family: validation and id
stamping happen in broker/workflow_spec.py, apply in broker/commands/workflows.py, and this
only checks permissions, proposes, and reads the view from the store.
"""

from __future__ import annotations

from broker import validation as v
from broker import workflow_spec
from broker.auth import CANCEL, READ, SUBMIT
from broker.commands import workflows
from taskqueue import errors

MAX_VIEW_TASKS = 100_000
DEFAULT_VIEW_TASKS = 1000


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

    async def cancel_workflow(self, principal, flow_id) -> dict:
        self._require(principal, CANCEL)
        return await self._propose(["cancel_workflow", self._now(), _flow_id(flow_id, self)])


def _flow_id(value, service) -> str:
    if not isinstance(value, str) or not v.TASK_ID.fullmatch(value):
        raise service._error(errors.BADREQ, "id: required, the workflow id "
                             "(1-128 characters of A-Z a-z 0-9 _ . : -)")
    return value
