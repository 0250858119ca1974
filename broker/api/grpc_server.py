"""The gRPC API (grpc.aio, ``api.grpc_port``): ``tq.v1.TaskQueue`` from taskqueue.proto.

Same operations and the same task object as REST (docs/api.md); payloads and results are
JSON text in ``payload_json`` / ``result_json``. Plus the standard health service
(grpc.health.v1, service names ``""`` and ``tq.v1.TaskQueue``) and server reflection.

The server is created inside the running loop (a grpc.aio server made before the loop runs
fails at start) with ``grpc.so_reuseport`` off, so a second broker on the same port fails
to bind instead of silently sharing it. Every RPC authenticates from the call metadata
(``authorization: Bearer <key>`` or ``x-api-key``), calls one Service method and converts
the result; a ServiceError becomes a gRPC status (:data:`GRPC_STATUS`) with the protocol
code in the trailing metadata ``tq-error-code``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker import validation as v
from broker.api.health import HEALTHY, node_health
from broker.api import taskqueue_pb2 as pb
from broker.api import taskqueue_pb2_grpc as pb_grpc
from broker.api.grpc_schedules import SchedulesServicer
from broker.api.grpc_workflows import WorkflowsServicer
from broker.auth import AuthError
from broker.machine import STATUSES
from broker.service import ServiceError
from taskqueue import errors, jsonutil

log = logging.getLogger("tq.grpc")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TaskQueue"].full_name  # tq.v1.TaskQueue
LIMITS_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Limits"].full_name  # tq.v1.Limits
WORKFLOWS_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Workflows"].full_name
HEALTH_REFRESH_SECS = 1.0

SC = grpc.StatusCode
GRPC_STATUS = {
    errors.BADREQ: SC.INVALID_ARGUMENT, errors.BADVERSION: SC.INVALID_ARGUMENT,
    errors.NOAUTH: SC.UNAUTHENTICATED, errors.NOPERM: SC.PERMISSION_DENIED,
    errors.NOTFOUND: SC.NOT_FOUND, errors.BADSTATE: SC.FAILED_PRECONDITION,
    errors.LEASELOST: SC.FAILED_PRECONDITION, errors.TOOLARGE: SC.RESOURCE_EXHAUSTED,
    errors.QUEUEFULL: SC.RESOURCE_EXHAUSTED, errors.MAXCONN: SC.UNAVAILABLE,
    errors.NOTLEADER: SC.UNAVAILABLE, errors.UNAVAILABLE: SC.UNAVAILABLE,
    errors.INTERNAL: SC.INTERNAL,
}


# ------------------------------------------------------------------------ conversions

def _json_text(value) -> str:
    return jsonutil.dumps(value).decode()


def task_to_pb(task: dict) -> pb.Task:
    msg = pb.Task(id=task["id"], type=task["type"], queue=task["queue"],
                  payload_json=_json_text(task.get("payload")),
                  priority=task.get("priority") or 0,
                  max_retries=task.get("max_retries") or 0,
                  retry_backoff_secs=task.get("retry_backoff_secs") or 0.0,
                  status=task.get("status") or "", attempts=task.get("attempts") or 0,
                  result_json=_json_text(task.get("result")),
                  duplicate=bool(task.get("duplicate")))
    for name in ("run_at", "timeout_secs", "idempotency_key", "error", "backtrace", "worker",
                 "created_at", "updated_at", "started_at", "finished_at", "lease_expires_at"):
        value = task.get(name)
        if value is not None:
            setattr(msg, name, value)
    return msg


def task_to_dict(msg: pb.Task) -> dict:
    """The inverse of :func:`task_to_pb` (clients and tests): the protocol's task object."""
    out = {"id": msg.id, "type": msg.type, "queue": msg.queue,
           "payload": jsonutil.loads(msg.payload_json or "null"), "priority": msg.priority,
           "max_retries": msg.max_retries, "retry_backoff_secs": msg.retry_backoff_secs,
           "status": msg.status, "attempts": msg.attempts,
           "result": jsonutil.loads(msg.result_json or "null")}
    for name in ("run_at", "timeout_secs", "idempotency_key", "error", "backtrace", "worker",
                 "created_at", "updated_at", "started_at", "finished_at", "lease_expires_at"):
        out[name] = getattr(msg, name) if msg.HasField(name) else None
    if msg.duplicate:
        out["duplicate"] = True
    return out


_SUBMIT_OPTIONAL = ("id", "queue", "priority", "max_retries", "run_at", "delay_secs",
                    "timeout_secs", "retry_backoff_secs", "idempotency_key")


def submit_to_dict(req: pb.SubmitRequest) -> dict:
    spec = {"type": req.type}
    for name in _SUBMIT_OPTIONAL:
        if req.HasField(name):
            spec[name] = getattr(req, name)
    if req.payload_json:
        try:
            spec["payload"] = jsonutil.loads(req.payload_json)
        except (jsonutil.JSONDecodeError, ValueError) as exc:
            raise v.Invalid(f"payload_json: not valid JSON: {exc}") from None
    return spec


def _queue_counts(counts: dict) -> pb.QueueCounts:
    msg = pb.QueueCounts(paused=bool(counts.get("paused")),
                         **{s: int(counts.get(s, 0)) for s in STATUSES})
    if counts.get("limit") is not None:  # the limit and how much of it is in use
        msg.limit.CopyFrom(_limit(counts["limit"]))
    return msg


def _worker(row: dict) -> pb.Worker:
    msg = pb.Worker(worker_id=str(row.get("worker_id", "")),
                    hostname=str(row.get("hostname") or ""),
                    queues=[str(q) for q in row.get("queues") or []],
                    concurrency=int(row.get("concurrency") or 0),
                    labels=[str(x) for x in row.get("labels") or []],
                    node=str(row.get("node") or ""), state=str(row.get("state") or ""))
    running = row.get("running")
    msg.running = len(running) if isinstance(running, (list, tuple)) else int(running or 0)
    for name in ("pid", "first_seen", "last_seen"):
        if isinstance(row.get(name), (int, float)) and not isinstance(row.get(name), bool):
            setattr(msg, name, row[name])
    return msg


def _numbers(mapping: dict, kind) -> dict:
    return {str(k): kind(val) for k, val in (mapping or {}).items()
            if isinstance(val, (int, float)) and not isinstance(val, bool)}


def _cluster(status: dict) -> pb.ClusterStatusResponse:
    msg = pb.ClusterStatusResponse(
        mode=str(status.get("mode") or ""), node_id=str(status.get("node_id") or ""),
        role=str(status.get("role") or ""), term=int(status.get("term") or 0),
        commit_index=int(status.get("commit_index") or 0),
        applied_index=int(status.get("applied_index") or 0))
    for name in ("leader", "leader_id"):
        if status.get(name):
            setattr(msg, name, str(status[name]))
    msg.restore_mismatch = bool(status.get("restore_mismatch"))
    _restored(msg.restored, status.get("restored"))
    for node in status.get("nodes") or []:
        item = msg.nodes.add(node_id=str(node.get("node_id") or ""),
                             address=str(node.get("address") or ""),
                             role=str(node.get("role") or ""),
                             term=int(node.get("term") or 0),
                             commit_index=int(node.get("commit_index") or 0),
                             applied_index=int(node.get("applied_index") or 0),
                             reachable=bool(node.get("reachable")))
        if isinstance(node.get("lag"), int):
            item.lag = node["lag"]
        _restored(item.restored, node.get("restored"))
    return msg


def _restored(field, identity) -> None:
    if isinstance(identity, dict):
        field.backup_sha256 = str(identity.get("backup_sha256") or "")
        field.backup_applied_index = int(identity.get("backup_applied_index") or 0)
        field.backup_time = str(identity.get("backup_time") or "")


def api_key_of(context) -> str | None:
    key = None
    for name, value in context.invocation_metadata() or ():
        if name == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == "x-api-key" and value:
            key = str(value)
    return key


def peer_host(context) -> str | None:
    """The caller's address without its port ("ipv4:10.0.0.5:41234" -> "10.0.0.5"):
    wrong keys are throttled per address (broker/auth_throttle.py)."""
    try:
        peer = context.peer() or ""
    except Exception:
        return None
    kind, _, rest = peer.partition(":")
    host = rest.rpartition(":")[0] if kind in ("ipv4", "ipv6") else rest
    return host.strip("[]") or None


# ---------------------------------------------------------------------------- servicer

class TaskQueueServicer(pb_grpc.TaskQueueServicer):
    def __init__(self, service, auth):
        self.service = service
        self.auth = auth

    async def _run(self, context, call):
        """Authenticate, run ``call(principal)`` (sync or async), map errors to statuses."""
        try:
            principal = await self.auth.authenticate(api_key_of(context), peer_host(context))
            result = call(principal)
            if hasattr(result, "__await__"):
                result = await result
            return result
        except (ServiceError, AuthError, v.Invalid) as exc:
            code, message = exc.code, exc.message
        except Exception as exc:  # a bug: log it, answer INTERNAL
            log.error("internal error serving a gRPC call", exc_info=exc)
            code, message = errors.INTERNAL, f"{type(exc).__name__}: {exc}"
        context.set_trailing_metadata((("tq-error-code", code),))
        await context.abort(GRPC_STATUS.get(code, SC.UNKNOWN), f"{code} {message}")

    async def Submit(self, request, context):
        task = await self._run(context, lambda p: self.service.submit(
            p, submit_to_dict(request)))
        return task_to_pb(task)

    async def SubmitBulk(self, request, context):
        results = await self._run(context, lambda p: self.service.submit(
            p, [submit_to_dict(r) for r in request.tasks]))
        out = pb.SubmitBulkResponse()
        for result in results:
            if "id" in result:
                out.results.add(submitted=pb.Submitted(
                    id=result["id"], status=str(result.get("status") or ""),
                    duplicate=bool(result.get("duplicate"))))
            else:
                error = result.get("error") or {}
                out.results.add(error=pb.Error(code=str(error.get("code", errors.INTERNAL)),
                                               message=str(error.get("message", ""))))
        return out

    async def Get(self, request, context):
        return task_to_pb(await self._run(context, lambda p: self.service.get(
            p, v.task_id({"id": request.id}))))

    async def Wait(self, request, context):
        def call(p):
            timeout_ms = v.wait_ms(request.timeout_secs) if request.HasField(
                "timeout_secs") else 30000
            return self.service.wait_task(p, v.task_id({"id": request.id}), timeout_ms,
                                          owner=("grpc", context.peer()))
        return task_to_pb(await self._run(context, call))

    async def List(self, request, context):
        def call(p):
            args = {name: getattr(request, name)
                    for name in ("status", "queue", "type", "limit", "cursor")
                    if request.HasField(name)}
            return self.service.list_tasks(p, args)

        page = await self._run(context, call)
        out = pb.ListResponse(tasks=[task_to_pb(t) for t in page["tasks"]])
        if page.get("next_cursor"):
            out.next_cursor = page["next_cursor"]
        return out

    async def Cancel(self, request, context):
        return task_to_pb(await self._run(context, lambda p: self.service.cancel(
            p, v.task_id({"id": request.id}))))

    async def Requeue(self, request, context):
        return task_to_pb(await self._run(context, lambda p: self.service.requeue(
            p, v.task_id({"id": request.id}))))

    async def QueueDepth(self, request, context):
        def call(p):
            queues = self.service.queues(p)["queues"]
            if request.HasField("queue"):
                name = v.queue_name(request.queue)
                if name not in queues:
                    raise ServiceError(errors.NOTFOUND, f"no queue {name!r} (no task was "
                                       "ever submitted to it)")
                queues = {name: queues[name]}
            return queues

        queues = await self._run(context, call)
        return pb.QueueDepthResponse(queues={name: _queue_counts(counts)
                                             for name, counts in queues.items()})

    async def SetQueuePaused(self, request, context):
        await self._run(context, lambda p: self.service.set_paused(
            p, request.queue, request.paused))
        return pb.SetQueuePausedResponse(queue=request.queue, paused=request.paused)

    async def Workers(self, request, context):
        rows = await self._run(context, lambda p: self.service.workers(p)["workers"])
        return pb.WorkersResponse(workers=[_worker(row) for row in rows])

    async def SetWorkerState(self, request, context):
        await self._run(context, lambda p: self.service.worker_state(
            p, request.worker_id, request.state))
        return pb.SetWorkerStateResponse(worker_id=request.worker_id, state=request.state)

    async def Stats(self, request, context):
        stats = await self._run(context, self.service.stats)
        return pb.StatsResponse(
            node_id=str(stats.get("node_id", "")), uptime_secs=float(stats["uptime_secs"]),
            applied_index=int(stats.get("applied_index") or 0),
            tasks=_numbers(stats.get("tasks"), int), totals=_numbers(stats.get("totals"), int),
            rates_per_sec=_numbers(stats.get("rates_per_sec"), float),
            workers=int(stats.get("workers") or 0),
            rocksdb=_numbers(stats.get("rocksdb"), int),
            data_dir=str(stats.get("data_dir", "")))

    async def ClusterStatus(self, request, context):
        return _cluster(await self._run(context, self.service.cluster))

    async def CreateSnapshot(self, request, context):
        result = await self._run(context, lambda p: self.service.snapshot(p, request.path))
        return pb.CreateSnapshotResponse(path=result["path"],
                                         applied_index=int(result["applied_index"]))


class LimitsServicer(pb_grpc.LimitsServicer):
    """tq.v1.Limits: rate and concurrency limits per queue (broker/commands/limits.py)."""

    def __init__(self, service, auth):
        self.service = service
        self.auth = auth

    _run = TaskQueueServicer._run

    async def SetLimit(self, request, context):
        spec = {name: getattr(request, name) for name in ("rate", "burst", "concurrency")
                if request.HasField(name)}
        return _limit(await self._run(context, lambda p: self.service.set_limit(
            p, request.queue, spec)))

    async def GetLimits(self, request, context):
        queue = request.queue if request.HasField("queue") else None
        found = await self._run(context, lambda p: self.service.get_limits(p, queue))
        return pb.GetLimitsResponse(limits={name: _limit(limit)
                                            for name, limit in found["limits"].items()})

    async def ClearLimit(self, request, context):
        result = await self._run(context, lambda p: self.service.clear_limit(
            p, request.queue))
        return pb.ClearLimitResponse(queue=result["queue"], cleared=result["cleared"])


def _limit(limit: dict) -> pb.QueueLimit:
    msg = pb.QueueLimit(queue=limit["queue"], running=int(limit.get("running") or 0),
                        throttled_rate=int(limit.get("throttled_rate") or 0),
                        throttled_concurrency=int(limit.get("throttled_concurrency") or 0))
    for name in ("rate", "burst", "concurrency", "tokens"):
        if limit.get(name) is not None:
            setattr(msg, name, limit[name])
    return msg


# ------------------------------------------------------------------------- interceptor

class _Malformed:
    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message


class MalformedRequestGuard(grpc.aio.ServerInterceptor):
    """A request that does not parse as its protobuf message (corrupt wire format, bad
    UTF-8 in a string field) gets INVALID_ARGUMENT/BADREQ instead of grpc's UNKNOWN and an
    error traceback in the log. Unary methods only (the API is unary; reflection streams
    are left alone). Wrapped handlers are cached per method."""

    def __init__(self):
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, details):
        method = details.method
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if (handler is None or handler.unary_unary is None
                or handler.request_deserializer is None):
            return handler
        deserialize, behavior = handler.request_deserializer, handler.unary_unary

        def safe_deserialize(data: bytes):
            try:
                return deserialize(data)
            except Exception as exc:
                return _Malformed(str(exc))

        async def guarded(request, context):
            if isinstance(request, _Malformed):
                context.set_trailing_metadata((("tq-error-code", errors.BADREQ),))
                await context.abort(SC.INVALID_ARGUMENT,
                                    f"{errors.BADREQ} malformed request: {request.message}")
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result

        wrapped = grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=safe_deserialize,
            response_serializer=handler.response_serializer)
        if len(self._cache) < 256:
            self._cache[method] = wrapped
        return wrapped


# ------------------------------------------------------------------------------ server

def server_credentials(api) -> grpc.ServerCredentials:
    key = Path(api.tls_key_path).read_bytes()
    cert = Path(api.tls_cert_path).read_bytes()
    ca = Path(api.tls_ca_path).read_bytes() if api.tls_ca_path else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)


class GrpcServer:
    def __init__(self, broker):
        self.broker = broker
        self.server: grpc.aio.Server | None = None
        self.health: health.aio.HealthServicer | None = None
        self._health_task: asyncio.Task | None = None

    async def start(self, host: str, port: int, ssl=None) -> None:
        config = self.broker.config
        limit = int(config.api.max_body_bytes)
        server = grpc.aio.server(interceptors=[MalformedRequestGuard()], options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 64 << 20)),
        ])
        tasks = TaskQueueServicer(self.broker.service, self.broker.auth)
        pb_grpc.add_TaskQueueServicer_to_server(tasks, server)
        pb_grpc.add_LimitsServicer_to_server(
            LimitsServicer(self.broker.service, self.broker.auth), server)
        pb_grpc.add_WorkflowsServicer_to_server(WorkflowsServicer(tasks), server)
        pb_grpc.add_SchedulesServicer_to_server(SchedulesServicer(tasks, task_to_pb), server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, LIMITS_SERVICE_NAME, WORKFLOWS_SERVICE_NAME,
             pb.DESCRIPTOR.services_by_name["Schedules"].full_name,
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if ssl is not None:
            server.add_secure_port(address, server_credentials(config.api))
        else:
            server.add_insecure_port(address)
        await server.start()
        self.server = server
        await self._publish_health()
        self._health_task = asyncio.create_task(self._refresh_health(), name="tq-grpc-health")
        log.info("gRPC API on %s%s", address, " (TLS)" if ssl else "")

    async def _publish_health(self) -> None:
        """grpc.health.v1 says what REST /health says (SERVING only when healthy), so a
        gRPC load balancer keeps off a node without a leader or still catching up."""
        verdict, _ = node_health(self.broker)
        serving = (health_pb2.HealthCheckResponse.SERVING if verdict == HEALTHY
                   else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, serving)

    async def _refresh_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_REFRESH_SECS)
            try:
                await self._publish_health()
            except Exception:  # never let the refresher die: the last verdict would stick
                log.exception("gRPC health refresh failed")

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self.health.enter_graceful_shutdown()
        await server.stop(grace=self.broker.config.broker.shutdown_grace_secs)
