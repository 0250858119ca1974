"""The gRPC ``tq.v1.Workflows`` service (taskqueue.proto, "Workflows"): the same three
operations as RESP's WORKFLOW-* commands, the tree as JSON text (``workflow_json``)."""

from __future__ import annotations

from broker import validation as v
from broker.api import taskqueue_pb2 as pb
from broker.api import taskqueue_pb2_grpc as pb_grpc
from taskqueue import jsonutil

_GROUP_FIELDS = ("node", "kind", "role", "size", "on_error", "started", "completed", "dead",
                 "cancelled")


def summary_to_pb(result: dict) -> pb.WorkflowSummary:
    return pb.WorkflowSummary(id=result["id"], status=result["status"],
                              size=int(result.get("size") or 0),
                              duplicate=bool(result.get("duplicate")),
                              cancelled_tasks=int(result.get("cancelled_tasks") or 0))


def workflow_to_pb(found: dict) -> pb.Workflow:
    msg = pb.Workflow(id=found["id"], status=found["status"], size=int(found["size"]),
                      created_at=float(found.get("created_at") or 0),
                      updated_at=float(found.get("updated_at") or 0),
                      tasks_truncated=bool(found.get("tasks_truncated")))
    if found.get("finished_at") is not None:
        msg.finished_at = found["finished_at"]
    if found.get("error") is not None:
        msg.error = str(found["error"])
    for group in found.get("groups", []):
        msg.groups.add(**{k: group[k] for k in _GROUP_FIELDS})
    for task in found.get("tasks", []):
        item = msg.tasks.add(id=task["id"], role=task["role"], status=task["status"],
                             result_json=jsonutil.dumps(task.get("result")).decode())
        if task.get("error") is not None:
            item.error = str(task["error"])
    return msg


class WorkflowsServicer(pb_grpc.WorkflowsServicer):
    def __init__(self, task_servicer):
        self.service = task_servicer.service
        self._run = task_servicer._run  # the same authentication and error mapping

    async def SubmitWorkflow(self, request, context):
        def call(p):
            try:
                tree = jsonutil.loads(request.workflow_json or "null")
            except (jsonutil.JSONDecodeError, ValueError) as exc:
                raise v.Invalid(f"workflow_json: not valid JSON: {exc}") from None
            body = {"workflow": tree}
            if request.HasField("id"):
                body["id"] = request.id
            return self.service.submit_workflow(p, body)

        return summary_to_pb(await self._run(context, call))

    async def GetWorkflow(self, request, context):
        limit = request.limit if request.HasField("limit") else None
        return workflow_to_pb(await self._run(
            context, lambda p: self.service.get_workflow(p, request.id, limit)))

    async def CancelWorkflow(self, request, context):
        return summary_to_pb(await self._run(
            context, lambda p: self.service.cancel_workflow(p, request.id)))
