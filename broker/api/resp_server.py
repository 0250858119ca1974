"""The worker/client TCP protocol (docs/protocol.md): RESP framing, JSON arguments.

One :class:`RespConnection` (an ``asyncio.Protocol``) per client. Requests are decoded
with the shared codec and dispatched *as they arrive*: each becomes a service call running
concurrently, so a worker that pipelines fifty ACKs gets them into one group commit instead
of fifty. Replies are still written strictly in request order (RESP has no request ids):
each request reserves a slot in a FIFO and the head of the FIFO is flushed as it completes.

Flow control: the broker stops reading a connection (``pause_reading``) while it owes
``broker.max_inflight_requests`` replies, while a HELLO is being checked (one at a time per
connection), or while its unread replies exceed ``broker.reply_buffer_bytes`` (the
transport's high-water mark: ``pause_writing``). Requests already read but not yet run wait
in the parser until the connection may go on. Handshake and slow-sender limits are in
conn_guard.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable, NamedTuple

from broker import validation as v
from broker.api.conn_guard import ConnGuard
from broker.auth import AuthError, Authenticator, Principal
from broker.api import resp_compat, resp_schedules
from broker.service import Service, ServiceError
from taskqueue import errors, jsonutil
from taskqueue import resp

log = logging.getLogger("tq.resp")

# What a human may type into telnet; everything else comes as a RESP array.
INLINE_COMMANDS = frozenset({b"PING", b"QUIT"})


def _encode(result, null: bytes = resp.NULL) -> bytes:
    if result is None:
        return null
    if isinstance(result, bytes):  # a reply already encoded (resp_compat's)
        return result
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
                 max_frame_bytes: int, max_unauthenticated: int = 256,
                 handshake_timeout: float = 5.0, request_timeout: float = 30.0,
                 max_inflight: int = 1024, reply_buffer_bytes: int = 1 << 20):
        self.service = service
        self.auth = auth
        self.max_connections = max_connections
        self.max_frame_bytes = max_frame_bytes
        self.max_inflight = max_inflight
        self.reply_buffer_bytes = reply_buffer_bytes
        self.handshake_timeout = handshake_timeout
        self.guard = ConnGuard(max_connections=max_connections,
                               max_unauthenticated=max_unauthenticated,
                               handshake_timeout=handshake_timeout,
                               request_timeout=request_timeout)
        self.connections: set[RespConnection] = set()
        self.server: asyncio.AbstractServer | None = None
        self.total_accepted = 0

    async def start(self, host: str, port: int, ssl=None) -> None:
        loop = asyncio.get_running_loop()
        # A TLS handshake is part of the handshake: same bound.
        extra = {"ssl_handshake_timeout": self.handshake_timeout} if ssl else {}
        self.server = await loop.create_server(lambda: RespConnection(self), host, port,
                                               ssl=ssl, backlog=1024, reuse_address=True,
                                               **extra)
        self.guard.start()

    async def stop(self) -> None:
        await self.guard.stop()
        if self.server:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        if self.server:
            await self.server.wait_closed()

    def worker_connections(self) -> int:
        return sum(1 for c in self.connections if c.worker_id)

    def reading_paused(self) -> int:
        """Connections the broker stopped reading (flow control), for the metrics."""
        return sum(1 for c in self.connections if c.reading_paused)


class RespConnection(asyncio.Protocol):
    def __init__(self, server: RespServer):
        self.server = server
        self.service = server.service
        self.parser = resp.RequestParser(max_bulk_bytes=server.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.principal: Principal | None = None
        self.worker_id: str | None = None
        self.redis = resp_compat.Session()  # what a Redis client library's handshake set
        self.closing = False
        self.close_when_flushed = False
        self.reading_paused = False  # we called transport.pause_reading()
        self.write_paused = False  # the transport's buffer is above reply_buffer_bytes
        self.hello_in_flight = False  # a HELLO is being checked: nothing else runs
        self.auth_checks = 0  # Redis AUTHs being checked: what needs auth waits (resp_compat)
        self.partial_since: float | None = None  # a request began arriving (conn_guard)
        self.unflushed = 0  # bytes of ready replies not yet written
        # Reply slots in request order: bytes, or a pending call (asyncio Task, EagerCall,
        # DeferredRead) that _flush encodes once it is done.
        self.replies: deque = deque()
        self.unfinished = 0  # pending calls among the slots
        self.tasks_running = 0  # of which asyncio Tasks
        self.open_waits = 0  # of which WAIT-TASKs: later reads need not wait for them
        self.flush_scheduled = False

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.total_accepted += 1
        high = self.server.reply_buffer_bytes
        transport.set_write_buffer_limits(high=high, low=high // 4)
        self.server.connections.add(self)
        self.server.guard.admit(self)

    def connection_lost(self, exc) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self.server.guard.forget(self)
        for slot in self.replies:
            if not isinstance(slot, bytes):
                slot.cancel()
        self.replies.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.parser.feed(data)
        self._process()

    def pause_writing(self) -> None:
        # The client does not read its replies as fast as it sends requests.
        self.write_paused = True
        self._set_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.closing:
            self._process()

    def _may_dispatch(self) -> bool:
        return not (self.hello_in_flight or self.write_paused or self.close_when_flushed
                    or len(self.replies) >= self.server.max_inflight)

    def _process(self) -> None:
        """Run the complete requests buffered while the connection may go on, then flush."""
        parser = self.parser
        high = self.server.reply_buffer_bytes
        progressed = False
        while True:
            if self.unflushed >= high or len(self.replies) >= self.server.max_inflight:
                self._flush()  # answered slots leave the FIFO; may pause writing
            if not self._may_dispatch():
                break
            try:
                request = parser.get()
            except resp.ProtocolError as exc:
                self._reply_now(resp.encode_error(exc.code, str(exc)))
                self._flush()
                self.close()
                return
            if request is None:
                break
            progressed = True
            if parser.last_inline and request[0].upper() not in INLINE_COMMANDS:
                self._reply_now(resp.encode_error(
                    errors.BADREQ, "only PING and QUIT are accepted inline: send commands "
                    "as RESP arrays"))
                continue
            self._dispatch(request)
            if self.closing or self.close_when_flushed:
                break
        self._flush()
        if self.closing:
            return
        self._set_reading()
        # Slow-sender clock (conn_guard): runs while part of a request waits and we read.
        if parser.buffered() and not self.reading_paused:
            if progressed or self.partial_since is None:
                self.partial_since = asyncio.get_running_loop().time()
        else:
            self.partial_since = None

    def _set_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        stop = not self._may_dispatch()
        if stop and not self.reading_paused:
            self.reading_paused = True
            self.partial_since = None
            transport.pause_reading()
        elif not stop and self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def drop(self, code: str, message: str) -> None:
        """Close the connection on the broker's own initiative, telling the client why."""
        if self.closing:
            return
        self.closing = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.write_paused:
            transport.abort()  # it does not read: do not wait for its buffer to drain
            return
        transport.write(resp.encode_error(code, message))
        transport.close()

    # ---------------------------------------------------------------- replies

    def _reply_now(self, data: bytes) -> None:
        self.replies.append(data)
        self.unflushed += len(data)

    def _start(self, handler: "Command", arg, raw_size: int):
        """Run one command; return its reply slot: bytes, or a pending call."""
        try:
            result = handler.method(self, arg, raw_size)
        except Exception as exc:
            return _error(exc)
        if not asyncio.iscoroutine(result):
            return _encode(result, self.redis.null)
        self.unfinished += 1
        # Eager only while no task of this connection is running: a task proposes at its
        # first step, one loop turn later, and an eager call must not overtake it.
        if handler.kind == EAGER and not self.tasks_running:
            call = EagerCall(self, result)
            call.step()
            return call
        task = asyncio.ensure_future(result)
        self.tasks_running += 1
        task.add_done_callback(self._on_task_done)
        if handler.overlaps:
            self.open_waits += 1
            task.add_done_callback(self._on_wait_done)
        return task

    def _on_wait_done(self, _task) -> None:
        self.open_waits -= 1

    def _on_task_done(self, task) -> None:
        if not task.cancelled():
            task.exception()  # read here: a closed connection never reads its reply slot
        self.tasks_running -= 1
        self._call_finished(True)

    def _call_finished(self, flush: bool) -> None:
        self.unfinished -= 1
        if flush and not self.closing and not self.flush_scheduled:
            # Calls finishing in this loop turn (one commit resolves a whole pipeline's
            # proposals) are answered together at its end: one write, not one per reply.
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self.flush_scheduled = False
        if not self.closing:
            self._process()  # flushes, and goes on with requests it had to hold back

    def _flush(self) -> None:
        out = []
        size = 0
        high = self.server.reply_buffer_bytes
        replies = self.replies
        while replies:
            head = replies[0]
            if isinstance(head, bytes):
                out.append(head)
                size += len(head)
            elif isinstance(head, DeferredRead):
                if size >= high:
                    # Hand the replies so far to the transport before making more; if the
                    # client is not reading them, run this read once it has caught up.
                    self._write(out)
                    out, size = [], 0
                if self.write_paused:
                    break
                # Everything before it is answered: run it now, in its place.
                self.unfinished -= 1
                replies[0] = self._start(head.handler, head.arg, head.raw_size)
                continue
            elif head.done():
                if head.cancelled():
                    out.append(resp.encode_error(errors.UNAVAILABLE, "request cancelled"))
                else:
                    exc = head.exception()
                    out.append(_error(exc) if exc is not None
                               else _encode(head.result(), self.redis.null))
            else:
                break
            replies.popleft()
        self._write(out)
        self.unflushed = 0
        if self.close_when_flushed and not replies:
            self.close()

    def _write(self, out: list) -> None:
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    # --------------------------------------------------------------- dispatch

    def _dispatch(self, request: list[bytes]) -> None:
        name = request[0].upper()
        # A Redis client library's handshake (HELLO 3, AUTH, CLIENT SETINFO...) first.
        handler = resp_compat.route(name, request) or COMMANDS.get(name)
        if handler is None:
            self._reply_now(resp.encode_error(errors.BADREQ,
                                              f"unknown command {name[:32].decode(errors='replace')!r}"))
            return
        if handler.hello and self.principal is None and self.auth_checks:
            # An AUTH before it is still being checked: run once it is answered, with its
            # outcome (a DeferredRead runs when every earlier reply is ready).
            handler = handler._replace(method=_after_auth(handler.method), kind=READ)
        elif handler.hello and self.principal is None:
            self._reply_now(resp.encode_error(
                errors.NOAUTH, "send HELLO first (or, from a Redis client library, AUTH "
                "with the API key as the password)"))
            return
        if handler.worker and self.worker_id is None:
            self._reply_now(resp.encode_error(
                errors.BADREQ, f"{name.decode()} needs a worker connection (HELLO with "
                "worker_id)"))
            return
        if handler.arg == "raw":
            arg, raw_size = request[1:], 0
        elif handler.arg:
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
        if handler.kind == READ and self.unfinished > self.open_waits:
            # Requests of one connection take effect in order: a read waits until every
            # earlier request's reply is ready, so it sees their writes (pipelined SUBMIT
            # then GET finds the task).
            self.replies.append(DeferredRead(handler, arg, raw_size))
            self.unfinished += 1
            return
        slot = self._start(handler, arg, raw_size)
        self.replies.append(slot)
        if isinstance(slot, bytes):
            self.unflushed += len(slot)

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
        # One HELLO at a time: the requests after it wait (they need its principal, and a
        # pipeline of wrong keys must not queue a hundred bcrypt checks).
        self.hello_in_flight = True
        return self._hello(hello)

    async def _hello(self, hello: dict):
        try:
            return await self._hello_checked(hello)
        finally:
            self.hello_in_flight = False

    def reached_address(self) -> str | None:
        """The broker address this client connected to, as host:port (HELLO's leader)."""
        local = self.transport.get_extra_info("sockname") if self.transport else None
        if not isinstance(local, (tuple, list)) or len(local) < 2:
            return None
        host = str(local[0])
        if host.startswith("::ffff:") and "." in host:  # IPv4 on a dual-stack socket
            host = host[len("::ffff:"):]
        return f"[{host}]:{local[1]}" if ":" in host else f"{host}:{local[1]}"

    def _peer_host(self) -> str | None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None

    async def _hello_checked(self, hello: dict):
        api_key = hello.get("api_key")
        if api_key is None and self.principal is not None:
            # Authenticated already by a Redis client library's AUTH (resp_compat).
            principal = self.principal
        else:
            try:
                principal = await self.server.auth.authenticate(
                    api_key if isinstance(api_key, str) else None, self._peer_host())
            except AuthError:
                # A client that failed to authenticate gets nothing more from this connection.
                self.close_when_flushed = True
                raise
        if not self.server.guard.authenticate(self):
            self.close_when_flushed = True
            raise ServiceError(errors.MAXCONN, "too many connections (broker.max_connections)")
        worker_id = hello.get("worker_id")
        if worker_id is not None:
            # A worker takes tasks and writes their results: read and submit permissions.
            self.service.require_worker(principal)
            if not isinstance(worker_id, str) or not v.TASK_ID.match(worker_id):
                raise ServiceError(errors.BADREQ, "worker_id: 1-128 characters of "
                                   "A-Z a-z 0-9 _ . : -")
            await self.service.register_worker(principal, worker_id, hello)
            self.worker_id = worker_id
        self.principal = principal
        return self.service.hello_reply(self.reached_address())

    def cmd_submit(self, arg, size):
        return self.service.submit(self.principal, arg, size)

    def cmd_fetch(self, arg, size):
        return self.service.fetch(self.principal, self.worker_id, v.obj(arg))

    def cmd_ack(self, arg, size):
        return self.service.ack(self.principal, self.worker_id, arg)

    def cmd_fail(self, arg, size):
        return self.service.fail(self.principal, self.worker_id, arg)

    def cmd_heartbeat(self, arg, size):
        return self.service.heartbeat(self.principal, self.worker_id, v.obj(arg))

    def cmd_bye(self, arg, size):
        worker_id, self.worker_id = self.worker_id, None
        return self.service.bye(self.principal, worker_id)

    def cmd_get(self, arg, size):
        return self.service.get(self.principal, v.task_id(arg))

    def cmd_wait_task(self, arg, size):
        arg = v.obj(arg)
        return self.service.wait_task(self.principal, v.task_id(arg),
                                      arg.get("timeout_ms", 30000), owner=self)

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

    def cmd_limit_set(self, arg, size):
        arg = v.obj(arg)
        return self.service.set_limit(self.principal, arg.get("queue"),
                                      {k: val for k, val in arg.items() if k != "queue"})

    def cmd_limit_get(self, arg, size):
        return self.service.get_limits(self.principal, v.obj(arg).get("queue"))

    def cmd_limit_clear(self, arg, size):
        return self.service.clear_limit(self.principal, v.obj(arg).get("queue"))

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

    # Workflows (docs/workflows.md): one request carries the whole tree.

    def cmd_workflow_submit(self, arg, size):
        return self.service.submit_workflow(self.principal, arg)

    def cmd_workflow_get(self, arg, size):
        arg = v.obj(arg)
        return self.service.get_workflow(self.principal, arg.get("id"), arg.get("limit"))

    def cmd_workflow_cancel(self, arg, size):
        return self.service.cancel_workflow(self.principal, v.obj(arg).get("id"))


LOCAL, READ, WRITE, EAGER = "local", "read", "write", "eager"


class Command(NamedTuple):
    """How the connection runs one command.

    ``kind``: LOCAL touches no task state (answered inline); READ reads state (waits for
    the connection's earlier requests, see _dispatch); WRITE proposes commands (runs as
    an asyncio task); EAGER is a hot WRITE whose service call only awaits its proposal
    (runs as an EagerCall, no task).
    """

    method: Callable
    kind: str
    arg: bool = True  # takes one JSON argument
    hello: bool = True  # needs HELLO first
    worker: bool = False  # needs a worker connection (HELLO with worker_id)
    # A READ that may run for long (WAIT-TASK): it still waits for the connection's earlier
    # requests, but later reads start beside it instead of after it.
    overlaps: bool = False


C = RespConnection
S = resp_schedules
COMMANDS = {
    b"PING": Command(C.cmd_ping, LOCAL, arg=False, hello=False),
    b"QUIT": Command(C.cmd_quit, LOCAL, arg=False, hello=False),
    b"HELLO": Command(C.cmd_hello, WRITE, hello=False),
    b"SUBMIT": Command(C.cmd_submit, EAGER),
    b"FETCH": Command(C.cmd_fetch, WRITE, worker=True),
    b"ACK": Command(C.cmd_ack, EAGER, worker=True),
    b"FAIL": Command(C.cmd_fail, EAGER, worker=True),
    b"HEARTBEAT": Command(C.cmd_heartbeat, EAGER, worker=True),
    b"BYE": Command(C.cmd_bye, WRITE, arg=False, worker=True),
    b"GET": Command(C.cmd_get, READ),
    b"WAIT-TASK": Command(C.cmd_wait_task, READ, overlaps=True),
    b"LIST": Command(C.cmd_list, READ),
    b"CANCEL": Command(C.cmd_cancel, WRITE),
    b"REQUEUE": Command(C.cmd_requeue, WRITE),
    b"QUEUES": Command(C.cmd_queues, READ, arg=False),
    b"PAUSE": Command(C.cmd_pause, WRITE),
    b"RESUME": Command(C.cmd_resume, WRITE),
    b"LIMIT-SET": Command(C.cmd_limit_set, WRITE),
    b"LIMIT-GET": Command(C.cmd_limit_get, READ),
    b"LIMIT-CLEAR": Command(C.cmd_limit_clear, WRITE),
    b"WORKERS": Command(C.cmd_workers, READ, arg=False),
    b"WORKER-STATE": Command(C.cmd_worker_state, WRITE),
    b"STATS": Command(C.cmd_stats, READ, arg=False),
    b"SNAPSHOT": Command(C.cmd_snapshot, WRITE),
    b"CLUSTER": Command(C.cmd_cluster, READ, arg=False),
    b"WORKFLOW-SUBMIT": Command(C.cmd_workflow_submit, WRITE),
    b"WORKFLOW-GET": Command(C.cmd_workflow_get, READ),
    b"WORKFLOW-CANCEL": Command(C.cmd_workflow_cancel, WRITE),
    # Schedules (broker/api/resp_schedules.py)
    b"SCHEDULE-CREATE": Command(S.create, WRITE),
    b"SCHEDULE-UPDATE": Command(S.update, WRITE),
    b"SCHEDULE-GET": Command(S.get, READ),
    b"SCHEDULE-LIST": Command(S.list_, READ),
    b"SCHEDULE-PAUSE": Command(S.pause, WRITE),
    b"SCHEDULE-RESUME": Command(S.resume, WRITE),
    b"SCHEDULE-DELETE": Command(S.delete, WRITE),
    b"SCHEDULE-RUN": Command(S.run, WRITE),
}


def _after_auth(method: Callable) -> Callable:
    def checked(conn: "RespConnection", arg, size):
        if conn.principal is None:
            raise ServiceError(errors.NOAUTH, "not authenticated: AUTH was refused")
        return method(conn, arg, size)
    return checked


class DeferredRead:
    """A READ waiting for the connection's earlier requests (see _dispatch)."""

    __slots__ = ("handler", "arg", "raw_size")

    def __init__(self, handler: Command, arg, raw_size: int):
        self.handler = handler
        self.arg = arg
        self.raw_size = raw_size

    def cancel(self) -> None:
        pass


class EagerCall:
    """A service call run on the connection's own callbacks instead of as an asyncio Task.

    The hot requests (SUBMIT, ACK, FAIL, HEARTBEAT) validate, propose a command and await
    its commit, nothing else. Wrapping each in a Task costs a task object, a scheduled
    first step and a scheduled done callback: about a fifth of the broker's CPU per
    unpipelined request (measured with py-spy). Here the first step runs at once, inside
    ``data_received``, so the proposal joins this loop turn's group commit, and the
    coroutine is resumed straight from its awaited future's done callback.

    Only for coroutines that await plain asyncio futures (no ``asyncio.timeout``,
    ``current_task`` or task cancellation inside). It offers the four methods the reply
    FIFO asks of a pending slot (done, cancelled, exception, result) and ``cancel``.
    """

    __slots__ = ("conn", "coro", "finished", "value", "error", "is_cancelled")

    def __init__(self, conn: "RespConnection", coro):
        self.conn = conn
        self.coro = coro
        self.finished = False
        self.value = None
        self.error: BaseException | None = None
        self.is_cancelled = False

    def step(self, _awaited=None) -> None:
        if self.finished:
            return
        try:
            yielded = self.coro.send(None)
        except StopIteration as stop:
            self.value = stop.value
        except (Exception, asyncio.CancelledError) as exc:
            self.error = exc
        else:
            if getattr(yielded, "_asyncio_future_blocking", False):
                # An awaited asyncio future: resume when it resolves (its result, or its
                # exception, is what the coroutine's await returns or raises).
                yielded._asyncio_future_blocking = False
                yielded.add_done_callback(self.step)
                return
            self.coro.close()
            self.error = RuntimeError(f"an eager command yielded {yielded!r}")
        self.finished = True
        # Resumed from a callback, nobody else will flush; at the first step, the
        # dispatching data_received does.
        self.conn._call_finished(flush=_awaited is not None)

    def cancel(self) -> None:
        if not self.finished:
            self.finished = True
            self.is_cancelled = True
            self.coro.close()

    def done(self) -> bool:
        return self.finished

    def cancelled(self) -> bool:
        return self.is_cancelled

    def exception(self) -> BaseException | None:
        return self.error

    def result(self):
        return self.value
