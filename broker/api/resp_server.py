"""The worker/client TCP protocol (docs/protocol.md): RESP framing, JSON arguments.

One :class:`RespConnection` (an ``asyncio.Protocol``) per client. Requests are decoded
with the shared codec and dispatched *as they arrive*: each becomes a service call running
concurrently, so a worker that pipelines fifty ACKs gets them into one group commit instead
of fifty. Replies are still written strictly in request order (RESP has no request ids):
each request reserves a slot in a FIFO and the head of the FIFO is flushed as it completes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from broker import validation as v
from broker.auth import AuthError, Authenticator, Principal
from broker.service import Service, ServiceError
from taskqueue import errors, jsonutil
from taskqueue import resp

log = logging.getLogger("tq.resp")

# How many replies a connection may owe before we stop reading from it (backpressure).
MAX_IN_FLIGHT = 4096


def _encode(result) -> bytes:
    if result is None:
        return resp.NULL
    if result == "OK":
        return resp.OK
    if isinstance(result, int) and not isinstance(result, bool):
        return resp.encode_int(result)
    return resp.encode_bulk(jsonutil.dumps(result))


def _error(exc: BaseException) -> bytes:
    if isinstance(exc, (ServiceError, AuthError, v.Invalid)):
        return resp.encode_error(exc.code, exc.message)
    log.error("internal error serving a request", exc_info=exc)
    return resp.encode_error(errors.INTERNAL, f"{type(exc).__name__}: {exc}")


class RespServer:
    """Owns the listening socket and the set of open connections."""

    def __init__(self, service: Service, auth: Authenticator, *, max_connections: int,
                 max_frame_bytes: int):
        self.service = service
        self.auth = auth
        self.max_connections = max_connections
        self.max_frame_bytes = max_frame_bytes
        self.connections: set[RespConnection] = set()
        self.server: asyncio.AbstractServer | None = None
        self.total_accepted = 0

    async def start(self, host: str, port: int, ssl=None) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: RespConnection(self), host, port,
                                               ssl=ssl, backlog=1024, reuse_address=True)

    async def stop(self) -> None:
        if self.server:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        if self.server:
            await self.server.wait_closed()

    def worker_connections(self) -> int:
        return sum(1 for c in self.connections if c.worker_id)


class RespConnection(asyncio.Protocol):
    def __init__(self, server: RespServer):
        self.server = server
        self.service = server.service
        self.parser = resp.RequestParser(max_bulk_bytes=server.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.principal: Principal | None = None
        self.worker_id: str | None = None
        self.closing = False
        self.close_when_flushed = False
        self.paused = False
        self.replies: deque = deque()  # bytes, or an asyncio.Future resolving to bytes

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.total_accepted += 1
        if len(self.server.connections) >= self.server.max_connections:
            transport.write(resp.encode_error(errors.MAXCONN, "too many connections "
                                              "(broker.max_connections)"))
            transport.close()
            self.closing = True
            return
        self.server.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.server.connections.discard(self)
        for slot in self.replies:
            if isinstance(slot, asyncio.Future):
                slot.cancel()
        self.replies.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.parser.feed(data)
        while True:
            try:
                request = self.parser.get()
            except resp.ProtocolError as exc:
                self._reply_now(resp.encode_error(exc.code, str(exc)))
                self._flush()
                self.close()
                return
            if request is None:
                break
            self._dispatch(request)
            if self.closing or self.close_when_flushed:
                break
        self._flush()
        if len(self.replies) > MAX_IN_FLIGHT and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # ---------------------------------------------------------------- replies

    def _reply_now(self, data: bytes) -> None:
        self.replies.append(data)

    def _reply_later(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.replies.append(task)
        task.add_done_callback(self._on_done)

    def _on_done(self, _task) -> None:
        if not self.closing:
            self._flush()

    def _flush(self) -> None:
        out = []
        replies = self.replies
        while replies:
            head = replies[0]
            if isinstance(head, bytes):
                out.append(head)
            elif head.done():
                if head.cancelled():
                    out.append(resp.encode_error(errors.UNAVAILABLE, "request cancelled"))
                else:
                    exc = head.exception()
                    out.append(_error(exc) if exc is not None else _encode(head.result()))
            else:
                break
            replies.popleft()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))
        if self.close_when_flushed and not replies:
            self.close()
        elif self.paused and len(replies) < MAX_IN_FLIGHT // 2:
            self.paused = False
            self.transport.resume_reading()

    # --------------------------------------------------------------- dispatch

    def _dispatch(self, request: list[bytes]) -> None:
        name = request[0].upper()
        handler = COMMANDS.get(name)
        if handler is None:
            self._reply_now(resp.encode_error(errors.BADREQ,
                                              f"unknown command {name[:32].decode(errors='replace')!r}"))
            return
        needs_arg, needs_hello, needs_worker, method = handler
        if needs_hello and self.principal is None:
            self._reply_now(resp.encode_error(errors.NOAUTH, "send HELLO first"))
            return
        if needs_worker and self.worker_id is None:
            self._reply_now(resp.encode_error(
                errors.BADREQ, f"{name.decode()} needs a worker connection (HELLO with "
                "worker_id)"))
            return
        if needs_arg:
            if len(request) != 2:
                self._reply_now(resp.encode_error(
                    errors.BADREQ, f"{name.decode()} takes exactly one JSON argument"))
                return
            try:
                arg = v.parse_json(request[1])
            except v.Invalid as exc:
                self._reply_now(resp.encode_error(exc.code, exc.message))
                return
            raw_size = len(request[1])
        else:
            arg, raw_size = None, 0
        try:
            result = method(self, arg, raw_size)
        except Exception as exc:
            self._reply_now(_error(exc))
            return
        if asyncio.iscoroutine(result):
            self._reply_later(result)
        else:
            self._reply_now(result if isinstance(result, bytes) else _encode(result))

    # ----------------------------------------------------------------- commands
    # Each takes (connection, decoded JSON argument or None, raw argument size) and returns
    # reply bytes, a JSON-able result, or a coroutine producing one.

    def cmd_ping(self, arg, size):
        return resp.PONG

    def cmd_quit(self, arg, size):
        self.close_when_flushed = True
        return resp.OK

    def cmd_hello(self, arg, size):
        hello = v.obj(arg, "HELLO argument")
        if hello.get("v") != 1:
            raise ServiceError(errors.BADVERSION,
                               f"protocol version {hello.get('v')!r} is not supported "
                               "(this broker speaks 1)")
        return self._hello(hello)

    async def _hello(self, hello: dict):
        api_key = hello.get("api_key")
        try:
            principal = await self.server.auth.authenticate(
                api_key if isinstance(api_key, str) else None)
        except AuthError:
            # A client that failed to authenticate gets nothing more from this connection.
            self.close_when_flushed = True
            raise
        worker_id = hello.get("worker_id")
        if worker_id is not None:
            # A worker fetches tasks: it needs read access (ACK/FAIL are fenced by token).
            self.server.auth.require(principal, "read_tasks")
            if not isinstance(worker_id, str) or not v.TASK_ID.match(worker_id):
                raise ServiceError(errors.BADREQ, "worker_id: 1-128 characters of "
                                   "A-Z a-z 0-9 _ . : -")
            await self.service.register_worker(principal, worker_id, hello)
            self.worker_id = worker_id
        self.principal = principal
        return self.service.hello_reply()

    def cmd_submit(self, arg, size):
        return self.service.submit(self.principal, arg, size)

    def cmd_fetch(self, arg, size):
        return self.service.fetch(self.principal, self.worker_id, v.obj(arg))

    def cmd_ack(self, arg, size):
        return self.service.ack(self.principal, arg)

    def cmd_fail(self, arg, size):
        return self.service.fail(self.principal, arg)

    def cmd_heartbeat(self, arg, size):
        return self.service.heartbeat(self.principal, self.worker_id, v.obj(arg))

    def cmd_bye(self, arg, size):
        worker_id, self.worker_id = self.worker_id, None
        return self.service.bye(self.principal, worker_id)

    def cmd_get(self, arg, size):
        return self.service.get(self.principal, v.task_id(arg))

    def cmd_list(self, arg, size):
        return self.service.list_tasks(self.principal, v.obj(arg))

    def cmd_cancel(self, arg, size):
        return self.service.cancel(self.principal, v.task_id(arg))

    def cmd_requeue(self, arg, size):
        return self.service.requeue(self.principal, v.task_id(arg))

    def cmd_queues(self, arg, size):
        return self.service.queues(self.principal)

    def cmd_pause(self, arg, size):
        return self.service.set_paused(self.principal, v.obj(arg).get("queue"), True)

    def cmd_resume(self, arg, size):
        return self.service.set_paused(self.principal, v.obj(arg).get("queue"), False)

    def cmd_workers(self, arg, size):
        return self.service.workers(self.principal)

    def cmd_worker_state(self, arg, size):
        arg = v.obj(arg)
        return self.service.worker_state(self.principal, arg.get("worker_id"), arg.get("state"))

    def cmd_stats(self, arg, size):
        return self.service.stats(self.principal)

    def cmd_snapshot(self, arg, size):
        return self.service.snapshot(self.principal, v.obj(arg).get("path"))

    def cmd_cluster(self, arg, size):
        return self.service.cluster(self.principal)


# name -> (takes a JSON argument, needs HELLO, needs a worker connection, method)
COMMANDS = {
    b"PING": (False, False, False, RespConnection.cmd_ping),
    b"QUIT": (False, False, False, RespConnection.cmd_quit),
    b"HELLO": (True, False, False, RespConnection.cmd_hello),
    b"SUBMIT": (True, True, False, RespConnection.cmd_submit),
    b"FETCH": (True, True, True, RespConnection.cmd_fetch),
    b"ACK": (True, True, True, RespConnection.cmd_ack),
    b"FAIL": (True, True, True, RespConnection.cmd_fail),
    b"HEARTBEAT": (True, True, True, RespConnection.cmd_heartbeat),
    b"BYE": (False, True, True, RespConnection.cmd_bye),
    b"GET": (True, True, False, RespConnection.cmd_get),
    b"LIST": (True, True, False, RespConnection.cmd_list),
    b"CANCEL": (True, True, False, RespConnection.cmd_cancel),
    b"REQUEUE": (True, True, False, RespConnection.cmd_requeue),
    b"QUEUES": (False, True, False, RespConnection.cmd_queues),
    b"PAUSE": (True, True, False, RespConnection.cmd_pause),
    b"RESUME": (True, True, False, RespConnection.cmd_resume),
    b"WORKERS": (False, True, False, RespConnection.cmd_workers),
    b"WORKER-STATE": (True, True, False, RespConnection.cmd_worker_state),
    b"STATS": (False, True, False, RespConnection.cmd_stats),
    b"SNAPSHOT": (True, True, False, RespConnection.cmd_snapshot),
    b"CLUSTER": (False, True, False, RespConnection.cmd_cluster),
}
