"""The REST API (Sanic, ``api.rest_port``): the same operations as the worker protocol.

Embedded on the broker's own loop (``app.create_server`` with ``start_serving=False``, then
``startup()``/``before_start()``/``start_serving()``/``after_start()``): see docs/api.md.
Every handler decodes the request, authenticates it, calls one :class:`Service` method and
encodes the result; errors are ``{"error": {"code", "message"}}`` with an HTTP status from
:data:`HTTP_STATUS`. The OpenAPI document (``openapi.yaml`` next to this file) is served at
``/api/v1/openapi.json`` and checked against the running server by tests/test_openapi.py.
"""

from __future__ import annotations

import itertools
import logging
import os
from functools import lru_cache
from pathlib import Path

from sanic import Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse

from broker import validation as v
from broker.api import rest_schedules, ui
from broker.api.health import HEALTHY, node_health, write_stalled
from broker.api.rest_protocol import bounded_protocol
from broker.auth import ADMIN, CANCEL, READ, SUBMIT, AuthError
from broker.service import ServiceError
from taskqueue import errors, jsonutil

log = logging.getLogger("tq.rest")

PREFIX = "/api/v1"
OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")

HTTP_STATUS = {
    errors.BADREQ: 400, errors.BADVERSION: 400, errors.NOAUTH: 401, errors.NOPERM: 403,
    errors.NOTFOUND: 404, errors.BADSTATE: 409, errors.LEASELOST: 409,
    errors.TOOLARGE: 413, errors.QUEUEFULL: 429, errors.MAXCONN: 503,
    errors.NOTLEADER: 503, errors.UNAVAILABLE: 503, errors.INTERNAL: 500,
}
# Sanic's own errors (routing, body size, timeouts) mapped onto protocol codes.
_SANIC_CODES = {400: errors.BADREQ, 404: errors.NOTFOUND, 405: errors.BADREQ,
                408: errors.BADREQ, 413: errors.TOOLARGE, 416: errors.BADREQ,
                503: errors.UNAVAILABLE}

_names = itertools.count(1)


class UnsupportedMediaType(Exception):
    """A request body that is not declared ``application/json``: HTTP 415."""

    code = errors.BADREQ

    def __init__(self, media_type: str):
        self.message = (f"the body must be Content-Type: application/json, not "
                        f"{media_type or 'none'!r}")
        super().__init__(self.message)


def json_response(body, status: int = 200, headers: dict | None = None) -> HTTPResponse:
    return HTTPResponse(jsonutil.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def error_response(code: str, message: str, status: int | None = None,
                   headers: dict | None = None) -> HTTPResponse:
    body = {"error": {"code": code, "message": message}}
    headers = dict(headers or {})
    if code == errors.NOTLEADER and message.startswith("leader="):
        body["error"]["leader"] = message[len("leader="):] or None
    if code == errors.NOAUTH:
        headers["WWW-Authenticate"] = 'Bearer realm="task-queue"'
    return json_response(body, status or HTTP_STATUS.get(code, 500), headers)


@lru_cache(maxsize=1)
def openapi_document() -> bytes:
    import yaml

    return jsonutil.dumps(yaml.safe_load(OPENAPI_PATH.read_text()))


def api_key_of(request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = request.headers.get("x-api-key")
    return key or None


def whoami_body(principal, auth_enabled: bool) -> dict:
    """The key's name, its permissions as configured, and what each permission allows it
    (``admin`` implies the others), so a client need not know that rule."""
    return {"name": principal.name, "permissions": sorted(principal.permissions),
            "allows": {p: principal.allows(p) for p in (SUBMIT, READ, CANCEL, ADMIN)},
            "auth_enabled": auth_enabled}


class RestServer:
    """The Sanic app and its embedded server. ``await start(...)``, ``await stop()``."""

    def __init__(self, broker):
        self.broker = broker
        self.service = broker.service
        self.auth = broker.auth
        # App names are process-global in Sanic: unique per Broker instance.
        self.app = Sanic(f"tq_rest_{os.getpid()}_{next(_names)}")
        self.app.config.MOTD = False
        self.app.config.ACCESS_LOG = False
        self.app.config.REQUEST_MAX_SIZE = broker.config.api.max_body_bytes
        self.app.config.KEEP_ALIVE_TIMEOUT = 75
        # A request's header must arrive within request_timeout_secs of its first byte, and
        # so must its body (rest_protocol.py: Sanic alone restarts the clock on every byte).
        request_timeout = broker.config.broker.request_timeout_secs
        self.app.config.REQUEST_TIMEOUT = request_timeout
        self.protocol = bounded_protocol(request_timeout)
        self.app.config.REAL_IP_HEADER = None
        self.server = None
        self._routes()

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str, port: int, ssl=None) -> None:
        server = await self.app.create_server(
            host=host, port=port, ssl=ssl, return_asyncio_server=True, access_log=False,
            protocol=self.protocol,
            backlog=1024, asyncio_server_kwargs={"start_serving": False})
        if server is None:
            raise OSError(f"REST API could not bind {host}:{port}")
        await server.startup()
        await server.before_start()
        await server.start_serving()
        await server.after_start()
        self.server = server
        log.info("REST API on %s:%d%s", host, port, " (TLS)" if ssl else "")

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        await server.before_stop()
        server.close()
        for conn in list(server.connections):
            conn.close_if_idle()
        await server.wait_closed()
        await server.after_stop()

    # ---------------------------------------------------------------- plumbing

    async def _principal(self, request):
        return await self.auth.authenticate(api_key_of(request), request.ip)

    @staticmethod
    def _body(request):
        raw = request.body
        if not raw:
            raise v.Invalid("a JSON request body is required")
        media_type = (request.headers.get("content-type") or "").split(";")[0].strip()
        if media_type.lower() != "application/json":
            raise UnsupportedMediaType(media_type)
        return v.parse_json(raw), len(raw)

    def _routes(self) -> None:
        app = self.app
        service = self.service

        @app.exception(Exception)
        async def on_error(request, exc):
            if isinstance(exc, (ServiceError, AuthError, v.Invalid)):
                return error_response(exc.code, exc.message)
            if isinstance(exc, UnsupportedMediaType):
                return error_response(exc.code, exc.message, 415)
            if isinstance(exc, SanicException):
                status = getattr(exc, "status_code", 500) or 500
                code = _SANIC_CODES.get(status, errors.BADREQ if status < 500
                                        else errors.INTERNAL)
                # e.g. 405 carries Allow: the methods the route does take
                headers = dict(getattr(exc, "headers", None) or {})
                return error_response(code, str(exc) or code, status, headers)
            log.error("internal error serving %s %s", request.method, request.path,
                      exc_info=exc)
            return error_response(errors.INTERNAL, f"{type(exc).__name__}: {exc}")

        ui.add_routes(app)

        # -- health (open: load balancers carry no key)

        @app.get("/health")
        async def health(request):
            verdict, body = node_health(self.broker)
            return json_response(body, 200 if verdict == HEALTHY else 503)

        @app.get("/health/leader")
        async def health_leader(request):
            status = service.log.status()
            # A Raft leader must also have heard from a majority within the election
            # timeout: a deposed leader that has not noticed yet answers 503.
            check = getattr(service.log, "leads_with_quorum", service.log.is_leader)
            if check() and not self.broker.stopping.is_set() \
                    and not write_stalled(service.log):
                return json_response({"status": "leader", "node_id": status.get("node_id"),
                                      "leader": status.get("leader")})
            return json_response({"status": "not_leader", "node_id": status.get("node_id"),
                                  "leader": status.get("leader")}, 503)

        @app.get(f"{PREFIX}/whoami")
        async def whoami(request):
            # Any valid key may ask what it may do: the dashboard shows only the buttons the
            # key's permissions allow (the API still checks each call).
            principal = await self._principal(request)
            return json_response(whoami_body(principal, self.auth.enabled))

        @app.get(f"{PREFIX}/openapi.json")
        async def openapi(request):
            return HTTPResponse(openapi_document(), content_type="application/json")

        # -- tasks

        @app.post(f"{PREFIX}/tasks")
        async def submit(request):
            principal = await self._principal(request)
            body, size = self._body(request)
            if not isinstance(body, dict):
                raise v.Invalid("the body must be one task object (POST /api/v1/tasks/bulk "
                                "takes a list)")
            task = await service.submit(principal, body, size)
            return json_response(task, 200 if task.get("duplicate") else 201)

        @app.post(f"{PREFIX}/tasks/bulk")
        async def submit_bulk(request):
            principal = await self._principal(request)
            body, size = self._body(request)
            tasks = body.get("tasks") if isinstance(body, dict) else body
            if not isinstance(tasks, list):
                raise v.Invalid('the body must be {"tasks": [task, ...]} or a list of tasks')
            results = await service.submit(principal, tasks, size)
            return json_response({"results": results})

        @app.get(f"{PREFIX}/tasks")
        async def list_tasks(request):
            principal = await self._principal(request)
            args = {}
            for name in ("status", "queue", "type", "cursor"):
                value = request.args.get(name)
                if value not in (None, ""):
                    args[name] = value
            limit = v.query_int(request.args.get("limit"), "limit")
            if limit is not None:
                args["limit"] = limit
            return json_response(service.list_tasks(principal, args))

        @app.get(f"{PREFIX}/tasks/<task_id:str>")
        async def get_task(request, task_id):
            principal = await self._principal(request)
            task_id = v.task_id({"id": task_id})
            wait = request.args.get("wait")
            if wait in (None, ""):
                return json_response(service.get(principal, task_id))
            # Long poll: answer when the task finishes or after ``wait`` seconds.
            timeout_ms = v.wait_ms(wait)
            return json_response(await service.wait_task(principal, task_id, timeout_ms,
                                                         owner=("http", request.ip)))

        @app.post(f"{PREFIX}/tasks/<task_id:str>/cancel")
        async def cancel(request, task_id):
            principal = await self._principal(request)
            return json_response(await service.cancel(principal,
                                                      v.task_id({"id": task_id})))

        @app.post(f"{PREFIX}/tasks/<task_id:str>/requeue")
        async def requeue(request, task_id):
            principal = await self._principal(request)
            return json_response(await service.requeue(principal,
                                                       v.task_id({"id": task_id})))

        # -- queues

        @app.get(f"{PREFIX}/queues")
        async def queues(request):
            principal = await self._principal(request)
            return json_response(service.queues(principal))

        @app.get(f"{PREFIX}/queues/<queue:str>")
        async def queue(request, queue):
            principal = await self._principal(request)
            all_depths = service.queues(principal)["queues"]  # permission first
            name = v.queue_name(queue)
            depths = all_depths.get(name)
            if depths is None:
                raise ServiceError(errors.NOTFOUND, f"no queue {name!r} (no task was "
                                   "ever submitted to it)")
            return json_response(dict(depths, queue=name))

        @app.post(f"{PREFIX}/queues/<queue:str>/pause")
        async def pause(request, queue):
            principal = await self._principal(request)
            await service.set_paused(principal, queue, True)
            return json_response({"queue": queue, "paused": True})

        @app.post(f"{PREFIX}/queues/<queue:str>/resume")
        async def resume(request, queue):
            principal = await self._principal(request)
            await service.set_paused(principal, queue, False)
            return json_response({"queue": queue, "paused": False})

        # -- limits (broker/commands/limits.py)

        @app.get(f"{PREFIX}/limits")
        async def limits(request):
            principal = await self._principal(request)
            return json_response(service.get_limits(principal))

        # One route for the three methods: registered apart, Sanic's 405 for the others
        # (TRACE...) lost its Allow header.
        @app.route(f"{PREFIX}/queues/<queue:str>/limit", methods=["GET", "PUT", "DELETE"])
        async def queue_limit(request, queue):
            principal = await self._principal(request)
            if request.method == "PUT":
                body, _ = self._body(request)
                return json_response(await service.set_limit(principal, queue,
                                                              v.obj(body, "body")))
            if request.method == "DELETE":
                return json_response(await service.clear_limit(principal, queue))
            found = service.get_limits(principal, queue)["limits"].get(queue)
            if found is None:
                raise ServiceError(errors.NOTFOUND, f"queue {queue!r} has no limit")
            return json_response(found)

        # -- workers, stats, cluster, snapshots

        @app.get(f"{PREFIX}/workers")
        async def workers(request):
            principal = await self._principal(request)
            return json_response(service.workers(principal))

        @app.post(f"{PREFIX}/workers/<worker_id:str>/state")
        async def worker_state(request, worker_id):
            principal = await self._principal(request)
            body, _ = self._body(request)
            state = v.obj(body, "body").get("state")
            await service.worker_state(principal, worker_id, state)
            return json_response({"worker_id": worker_id, "state": state})

        @app.get(f"{PREFIX}/stats")
        async def stats(request):
            principal = await self._principal(request)
            return json_response(service.stats(principal))

        @app.get(f"{PREFIX}/cluster")
        async def cluster(request):
            principal = await self._principal(request)
            return json_response(service.cluster(principal))

        @app.post(f"{PREFIX}/cluster/transfer-leader")
        async def transfer_leader(request):
            principal = await self._principal(request)
            return json_response(await service.transfer_leader(principal))

        # -- workflows (docs/workflows.md)

        @app.post(f"{PREFIX}/workflows")
        async def submit_workflow(request):
            principal = await self._principal(request)
            body, _ = self._body(request)
            result = await service.submit_workflow(principal, body)
            return json_response(result, 200 if result.get("duplicate") else 201)

        @app.get(f"{PREFIX}/workflows")
        async def list_workflows(request):
            principal = await self._principal(request)
            limit = v.query_int(request.args.get("limit"), "limit")
            after = request.args.get("after")
            return json_response(service.list_workflows(principal, after or None, limit))

        @app.get(f"{PREFIX}/workflows/<flow_id:str>")
        async def get_workflow(request, flow_id):
            principal = await self._principal(request)
            limit = v.query_int(request.args.get("limit"), "limit")
            return json_response(service.get_workflow(principal, flow_id, limit))

        @app.post(f"{PREFIX}/workflows/<flow_id:str>/cancel")
        async def cancel_workflow(request, flow_id):
            principal = await self._principal(request)
            return json_response(await service.cancel_workflow(principal, flow_id))

        @app.post(f"{PREFIX}/snapshots")
        async def snapshot(request):
            principal = await self._principal(request)
            body, _ = self._body(request)
            path = v.obj(body, "body").get("path")
            return json_response(await service.snapshot(principal, path), 201)

        rest_schedules.add_routes(app, self, service, json_response)
