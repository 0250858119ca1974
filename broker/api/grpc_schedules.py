"""The gRPC ``tq.v1.Schedules`` service (taskqueue.proto, "Schedules"): the same operations
as RESP's SCHEDULE-* commands; a payload travels as JSON text (``payload_json``)."""

from __future__ import annotations

from broker import validation as v
from broker.api import taskqueue_pb2 as pb
from broker.api import taskqueue_pb2_grpc as pb_grpc
from taskqueue import jsonutil

_SPEC = ("cron", "tz", "interval_secs", "paused", "misfire", "misfire_limit",
         "misfire_grace_secs", "jitter_secs", "start_at", "end_at")
_TASK = ("type", "queue", "priority", "max_retries", "timeout_secs", "retry_backoff_secs")
_STATE = ("next_fire_at", "last_slot_at", "last_fired_at", "last_task_id", "last_error")


def spec_to_dict(msg: pb.ScheduleSpec) -> dict:
    """The fields the request set (an update changes only those)."""
    out = {"id": msg.id}
    for name in _SPEC:
        if msg.HasField(name):
            out[name] = getattr(msg, name)
    if msg.HasField("task"):
        task = {"type": msg.task.type} if msg.task.type else {}
        for name in _TASK[1:]:
            if msg.task.HasField(name):
                task[name] = getattr(msg.task, name)
        if msg.task.HasField("payload_json"):
            try:
                task["payload"] = jsonutil.loads(msg.task.payload_json or "null")
            except (jsonutil.JSONDecodeError, ValueError) as exc:
                raise v.Invalid(f"task.payload_json: not valid JSON: {exc}") from None
        out["task"] = task
    return out


def schedule_to_pb(view: dict) -> pb.Schedule:
    task = view["task"]
    spec = pb.ScheduleSpec(id=view["id"], task=pb.ScheduleTask(
        payload_json=jsonutil.dumps(task.get("payload")).decode(),
        **{k: task[k] for k in _TASK if task.get(k) is not None}),
        **{k: view[k] for k in _SPEC if view.get(k) is not None})
    return pb.Schedule(spec=spec, state=view["state"], fired=view["fired"],
                       misfires=view["misfires"], errors=view["errors"],
                       created_at=view["created_at"], updated_at=view["updated_at"],
                       **{k: view[k] for k in _STATE if view.get(k) is not None})


class SchedulesServicer(pb_grpc.SchedulesServicer):
    def __init__(self, task_servicer, task_to_pb):
        self.service = task_servicer.service
        self._run = task_servicer._run  # the same authentication and error mapping
        self._task_to_pb = task_to_pb

    async def CreateSchedule(self, request, context):
        return schedule_to_pb(await self._run(context, lambda p: self.service.create_schedule(
            p, spec_to_dict(request))))

    async def UpdateSchedule(self, request, context):
        return schedule_to_pb(await self._run(context, lambda p: self.service.update_schedule(
            p, request.id, spec_to_dict(request))))

    async def GetSchedule(self, request, context):
        return schedule_to_pb(await self._run(
            context, lambda p: self.service.get_schedule(p, request.id)))

    async def ListSchedules(self, request, context):
        after = request.after if request.HasField("after") else None
        limit = request.limit if request.HasField("limit") else None
        page = await self._run(context, lambda p: self.service.list_schedules(p, after, limit))
        out = pb.ListSchedulesResponse(schedules=[schedule_to_pb(s) for s in page["schedules"]],
                                       total=page["counts"]["total"],
                                       paused=page["counts"]["paused"])
        if page["next_cursor"] is not None:
            out.next_cursor = page["next_cursor"]
        return out

    async def PauseSchedule(self, request, context):
        return schedule_to_pb(await self._run(
            context, lambda p: self.service.pause_schedule(p, request.id, True)))

    async def ResumeSchedule(self, request, context):
        return schedule_to_pb(await self._run(
            context, lambda p: self.service.pause_schedule(p, request.id, False)))

    async def DeleteSchedule(self, request, context):
        result = await self._run(context, lambda p: self.service.delete_schedule(p, request.id))
        return pb.DeleteScheduleResponse(id=result["id"], deleted=result["deleted"])

    async def RunSchedule(self, request, context):
        return self._task_to_pb(await self._run(
            context, lambda p: self.service.run_schedule(p, request.id)))
