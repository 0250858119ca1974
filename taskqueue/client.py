"""Clients of the broker's TCP protocol (docs/protocol.md): :class:`Client` and :class:`AsyncClient`.

* :class:`Client` is a blocking socket client: one request, one reply. For scripts, the admin
  CLI and producers in synchronous code.
* :class:`AsyncClient` is an asyncio client that *pipelines*: any number of coroutines may
  call it at once on one connection; requests go out as they are made and replies are matched
  to callers in FIFO order (the broker answers one connection's requests in order).

Both take one address or a list (``"h1:6379,h2:6379"``): on connect they try each in turn,
and a ``-NOTLEADER leader=host:port`` reply makes them reconnect to that leader and re-send
(safe: the follower did not apply the write). Both send ``HELLO`` as the first request of every
connection. Error replies raise :class:`~taskqueue.errors.BrokerError`; a broken connection
raises :class:`~taskqueue.errors.ConnectionLost` (the next call reconnects).

The command methods are written once, in :class:`_Commands`, on top of an abstract ``_call``:
the sync client's ``_call`` returns the value, the async one returns a coroutine.
Standard library only, so a worker host needs nothing else.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import socket
import ssl
import time
from typing import Any, Callable, Iterable, Iterator

from taskqueue import jsonutil, wrong_port
from taskqueue.errors import NOTLEADER, BrokerError, ConnectionLost
from taskqueue.resp import Error, ProtocolError, ReplyParser, encode_request
from taskqueue.tlsutil import server_hostname

# A job's fencing token, as FETCH returned it: an opaque string (an int from brokers before
# string tokens). Send it back unchanged; never build or compare one.
Token = str | int

PROTOCOL_VERSION = 1
DEFAULT_ADDR = "127.0.0.1:6379"
DEFAULT_PORT = 6379
# How long a reply may take beyond what the command itself waits (FETCH's timeout_ms).
DEFAULT_REPLY_TIMEOUT = 30.0
MAX_REDIRECTS = 3

# The input fields SUBMIT reads (docs/protocol.md, "The task object"); anything else is a typo.
SUBMIT_OPTIONS = frozenset({
    "id", "queue", "priority", "max_retries", "run_at", "delay_secs", "timeout_secs",
    "retry_backoff_secs", "idempotency_key",
})

_NO_ARG = object()

Address = tuple[str, int]


# ----------------------------------------------------------------------------- helpers

def parse_address(text: str) -> Address:
    """``"host:port"``, ``"host"`` or ``"[::1]:6379"`` to ``(host, port)``."""
    text = text.strip()
    if not text:
        raise ValueError("empty broker address")
    if text.startswith("["):  # bracketed IPv6
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:  # bare host or bare IPv6
        host, port = text, ""
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad port in broker address {text!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"bad port in broker address {text!r}: a port is 1-65535")
    return host, number


def parse_addresses(addresses: str | Address | Iterable[str | Address]) -> list[Address]:
    """One address, a comma-separated string of them, or a list of either."""
    if isinstance(addresses, tuple):
        return [addresses]
    if isinstance(addresses, str):
        addresses = addresses.split(",")
    result = [a if isinstance(a, tuple) else parse_address(a) for a in addresses if a]
    if not result:
        raise ValueError("no broker address given")
    return result


def new_task_id() -> str:
    """32 random hex digits, the shape of a uuid4's hex (without its version bits: the
    id is opaque), at a third of uuid.uuid4()'s cost on the submit path."""
    return os.urandom(16).hex()


def build_task(type: str, payload: Any = None, **options: Any) -> dict:
    """A SUBMIT task object, always with an id so that a retried submit is idempotent."""
    if not options.keys() <= SUBMIT_OPTIONS:
        unknown = options.keys() - SUBMIT_OPTIONS
        raise TypeError(f"unknown task option(s): {', '.join(sorted(unknown))}")
    task = {"type": type, "payload": payload}
    task.update((k, v) for k, v in options.items() if v is not None)
    task.setdefault("id", new_task_id())
    return task


def _with_id(task: dict) -> dict:
    return task if task.get("id") else {**task, "id": new_task_id()}


def _leader_address(error: BrokerError) -> Address | None:
    """The ``leader=host:port`` a NOTLEADER reply names, if any."""
    for word in error.message.split():
        if word.startswith("leader="):
            value = word[len("leader="):]
            if value and value not in ("none", "null"):
                try:
                    return parse_address(value)
                except ValueError:
                    return None
    return None


def _decode(reply: Any) -> Any:
    """A parsed RESP reply to a Python value; error replies raise."""
    if isinstance(reply, Error):
        raise BrokerError(reply.code, reply.message)
    if isinstance(reply, (bytes, bytearray)):
        return jsonutil.loads(reply)
    return reply  # "OK"/"PONG", an int, or None (a FETCH that timed out)


def _frame(command: str, arg: Any) -> bytes:
    if arg is _NO_ARG:
        return encode_request(command)
    return encode_request(command, jsonutil.dumps(arg))


def _hello_document(api_key: str | None, identity: dict | None) -> dict:
    hello = {"v": PROTOCOL_VERSION}
    if api_key:
        hello["api_key"] = api_key
    if identity:
        hello.update(identity)
    return hello


def _field(name: str) -> Callable[[dict], Any]:
    return lambda reply: reply[name]


def _fetched(reply: list | None) -> list:
    return reply or []


def _tune_socket(sock: socket.socket) -> None:
    """No Nagle delay (small pipelined frames), and TCP keepalive so that a connection to a
    broker host that vanished without a FIN is noticed in about a minute, not hours."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class Backoff:
    """Exponential backoff with full jitter, for reconnect loops.

    ``next()`` gives the next delay: a random value in [delay/2, delay], the delay doubling
    from ``initial`` up to ``maximum``. Jitter keeps a fleet of workers from reconnecting in
    lock step after a broker restart. ``reset()`` after a success.
    """

    def __init__(self, initial: float = 0.1, maximum: float = 10.0, factor: float = 2.0):
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._delay = initial

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self.maximum, self._delay * self.factor)
        return delay * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self._delay = self.initial


# ----------------------------------------------------------------------------- commands

class _Commands:
    """Every protocol command, once, as a call of ``self._call(command, arg, transform)``."""

    def _call(self, command: str, arg: Any = _NO_ARG, transform: Callable | None = None):
        raise NotImplementedError

    # -- any connection
    def ping(self):
        return self._call("PING")

    # -- producers
    def submit(self, type: str, payload: Any = None, **options: Any):
        """Submit one task; returns the task object (``duplicate: true`` if it existed).

        ``options`` are the task's input fields: id, queue, priority, max_retries, run_at,
        delay_secs, timeout_secs, retry_backoff_secs, idempotency_key. An id is generated
        when none is given, so re-sending after a lost connection never makes a second task.
        """
        return self._call("SUBMIT", build_task(type, payload, **options))

    def submit_task(self, task: dict):
        """Submit a ready task object (e.g. one exported by ``tq-admin list``)."""
        return self._call("SUBMIT", _with_id(task))

    def submit_bulk(self, tasks: Iterable[dict]):
        """Submit up to 1000 task objects at once; returns one entry per task, in order:
        ``{"id", "status", "duplicate"}`` or ``{"error": {"code", "message"}}``."""
        return self._call("SUBMIT", [_with_id(t) for t in tasks])

    # -- workers
    def fetch(self, queues: Iterable[str], count: int = 1, timeout_ms: int = 2000):
        """Claim up to ``count`` jobs; ``[]`` when none came within ``timeout_ms``."""
        return self._call("FETCH", {"queues": list(queues), "count": count,
                                    "timeout_ms": timeout_ms}, _fetched)

    def ack(self, id: str, token: Token, result: Any = None):
        return self._call("ACK", {"id": id, "token": token, "result": result})

    def ack_many(self, acks: Iterable[dict | tuple]):
        """Ack several jobs: dicts ``{"id", "token", "result"}`` or ``(id, token, result)``.
        Returns one entry per ack: ``"OK"`` or ``{"error": {...}}``."""
        items = [a if isinstance(a, dict) else {"id": a[0], "token": a[1], "result": a[2]}
                 for a in acks]
        return self._call("ACK", items)

    def fail(self, id: str, token: Token, error: str, backtrace: str | None = None,
             retry: bool = True):
        return self._call("FAIL", {"id": id, "token": token, "error": error,
                                   "backtrace": backtrace, "retry": retry})

    def heartbeat(self, tasks: Iterable[tuple[str, Token]]):
        """Renew the leases of ``(id, token)`` pairs; returns ``{"state", "lost"}``."""
        return self._call("HEARTBEAT", {"tasks": [[i, t] for i, t in tasks]})

    def bye(self):
        return self._call("BYE")

    # -- reading and operating
    def get(self, id: str):
        return self._call("GET", {"id": id})

    def wait(self, id: str, timeout: float = 30.0):
        """The task once it is completed, dead or cancelled, or as it is after ``timeout``
        seconds (check ``status``). The broker answers when it applies the completion."""
        return self._call("WAIT-TASK", {"id": id, "timeout_ms": int(timeout * 1000)})

    def list_tasks(self, status: str | None = None, queue: str | None = None,
                   type: str | None = None, limit: int | None = None,
                   cursor: str | None = None):
        """One page: ``{"tasks": [...], "next_cursor": str | None}``."""
        query = {"status": status, "queue": queue, "type": type, "limit": limit,
                 "cursor": cursor}
        return self._call("LIST", {k: v for k, v in query.items() if v is not None})

    def cancel(self, id: str):
        return self._call("CANCEL", {"id": id})

    def requeue(self, id: str):
        return self._call("REQUEUE", {"id": id})

    def queues(self):
        """``{queue: {"pending": n, ..., "paused": bool}}``."""
        return self._call("QUEUES", _NO_ARG, _field("queues"))

    def pause(self, queue: str):
        return self._call("PAUSE", {"queue": queue})

    def resume(self, queue: str):
        return self._call("RESUME", {"queue": queue})

    def set_limit(self, queue: str, rate: float | None = None, burst: int | None = None,
                  concurrency: int | None = None):
        """Replace ``queue``'s limit: ``rate`` tasks started per second (bucket ``burst``)
        and/or ``concurrency`` running at once, cluster-wide. Needs ``admin``."""
        spec = {"queue": queue}
        for name, value in (("rate", rate), ("burst", burst), ("concurrency", concurrency)):
            if value is not None:
                spec[name] = value
        return self._call("LIMIT-SET", spec)

    def limits(self, queue: str | None = None):
        """``{queue: {"rate", "burst", "concurrency", "running", "tokens", ...}}``."""
        return self._call("LIMIT-GET", {} if queue is None else {"queue": queue},
                          _field("limits"))

    def clear_limit(self, queue: str):
        return self._call("LIMIT-CLEAR", {"queue": queue})

    # -- schedules (docs/schedules-limits-results.md, "Schedules"); changes need ``admin``
    def create_schedule(self, spec: dict):
        """``spec``: {"id", "cron" (+ "tz") or "interval_secs", "task": {...}, ...}."""
        return self._call("SCHEDULE-CREATE", spec)

    def update_schedule(self, schedule_id: str, **changes):
        return self._call("SCHEDULE-UPDATE", dict(changes, id=schedule_id))

    def schedule(self, schedule_id: str):
        return self._call("SCHEDULE-GET", {"id": schedule_id})

    def schedules(self, after: str | None = None, limit: int | None = None):
        """One page: {"schedules": [...], "next_cursor": id or None, "counts": {...}}."""
        arg = {} if after is None else {"after": after}
        if limit is not None:
            arg["limit"] = limit
        return self._call("SCHEDULE-LIST", arg)

    def pause_schedule(self, schedule_id: str):
        return self._call("SCHEDULE-PAUSE", {"id": schedule_id})

    def resume_schedule(self, schedule_id: str):
        return self._call("SCHEDULE-RESUME", {"id": schedule_id})

    def delete_schedule(self, schedule_id: str):
        return self._call("SCHEDULE-DELETE", {"id": schedule_id})

    def run_schedule(self, schedule_id: str):
        """Enqueue the schedule's task once, now; returns the task."""
        return self._call("SCHEDULE-RUN", {"id": schedule_id})

    def workers(self):
        return self._call("WORKERS", _NO_ARG, _field("workers"))

    def worker_state(self, worker_id: str, state: str):
        return self._call("WORKER-STATE", {"worker_id": worker_id, "state": state})

    def stats(self):
        return self._call("STATS")

    def snapshot(self, path: str):
        return self._call("SNAPSHOT", {"path": path})

    def cluster(self):
        return self._call("CLUSTER")

    # -- workflows (docs/workflows.md; taskqueue/canvas.py builds the request)
    def submit_workflow(self, workflow: Any, id: str | None = None):
        """Submit a workflow tree (a dict, or a canvas chain/group/chord/signature) as one
        request, accepted or rejected whole; returns ``{"id", "status", "size"}``. An id is
        generated when none is given, so re-sending after a lost connection is harmless."""
        tree = workflow.to_tree() if hasattr(workflow, "to_tree") else workflow
        return self._call("WORKFLOW-SUBMIT", {"id": id or new_task_id(), "workflow": tree})

    def get_workflow(self, id: str, limit: int | None = None):
        """The workflow: status, its groups' progress, its tasks (up to ``limit``)."""
        arg = {"id": id} if limit is None else {"id": id, "limit": limit}
        return self._call("WORKFLOW-GET", arg)

    def cancel_workflow(self, id: str):
        return self._call("WORKFLOW-CANCEL", {"id": id})


class _Endpoint:
    """What both clients share: addresses, the HELLO document, TLS and redirect handling."""

    def __init__(self, addresses, api_key, ssl_context, identity, connect_timeout,
                 reply_timeout):
        self.addresses = parse_addresses(addresses)
        self.api_key = api_key if api_key is not None else os.environ.get("TQ_API_KEY")
        self.ssl_context = ssl_context
        self.identity = dict(identity or {})
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.hello_reply: dict | None = None
        self.address: Address | None = None  # the one connected to

    def _hello(self) -> dict:
        return _hello_document(self.api_key, self.identity)

    def _candidates(self) -> list[Address]:
        """Addresses in the order to try: the last good one first (it was the leader)."""
        if self.address in self.addresses:
            return [self.address] + [a for a in self.addresses if a != self.address]
        return list(self.addresses)

    def _redirect(self, error: BrokerError) -> bool:
        """Point the next connect at the leader a NOTLEADER reply names; False if none."""
        leader = _leader_address(error)
        if leader is None or leader == self.address:
            return False
        if leader not in self.addresses:
            self.addresses.append(leader)
        self.address = leader
        return True

    def _follow_hello_refusal(self, error: BrokerError, address: Address,
                              candidates: list[Address], errors: list[str]) -> None:
        """A HELLO refused with NOTLEADER: queue the leader it names to be tried next.
        Any other refusal (NOAUTH, BADVERSION...) is final and raised."""
        leader = _leader_address(error) if error.code == NOTLEADER else None
        if leader is None or leader == address or len(errors) > MAX_REDIRECTS + len(
                self.addresses):
            raise error
        errors.append(f"{address[0]}:{address[1]}: {error}")
        candidates.insert(0, leader)
        if leader not in self.addresses:
            self.addresses.append(leader)

    def _reply_deadline(self, command: str, arg: Any) -> float | None:
        if self.reply_timeout is None:
            return None
        extra = (arg.get("timeout_ms", 2000) / 1000 if command == "FETCH"
                 else arg.get("timeout_ms", 30000) / 1000 if command == "WAIT-TASK" else 0.0)
        return self.reply_timeout + extra


# ----------------------------------------------------------------------------- sync client

class Client(_Endpoint, _Commands):
    """A blocking client. Not thread-safe: give each thread its own.

    ``identity`` adds worker fields to HELLO (worker_id, hostname, pid, queues, concurrency).
    """

    def __init__(self, addresses: str | list = DEFAULT_ADDR, *, api_key: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, identity: dict | None = None,
                 connect_timeout: float = 5.0,
                 reply_timeout: float | None = DEFAULT_REPLY_TIMEOUT):
        super().__init__(addresses, api_key, ssl_context, identity, connect_timeout,
                         reply_timeout)
        self._sock: socket.socket | None = None
        self._parser = ReplyParser()

    def __enter__(self) -> "Client":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> dict:
        """Connect to the first reachable address and say HELLO; returns the HELLO reply."""
        self.close()
        errors: list[str] = []
        candidates = self._candidates()
        while candidates:
            address = candidates.pop(0)
            try:
                self._open(address)
                self.hello_reply = self._say_hello(address)
                return self.hello_reply
            except (OSError, ConnectionLost) as exc:
                self.close()
                errors.append(f"{address[0]}:{address[1]}: {exc}")
            except BrokerError as exc:
                self.close()
                self._follow_hello_refusal(exc, address, candidates, errors)
        raise ConnectionLost("cannot connect to the broker: " + "; ".join(errors))

    def connect_with_backoff(self, deadline_secs: float | None = None,
                             backoff: Backoff | None = None) -> dict:
        """Retry :meth:`connect` until it succeeds or ``deadline_secs`` pass."""
        backoff = backoff or Backoff()
        give_up = None if deadline_secs is None else time.monotonic() + deadline_secs
        while True:
            try:
                return self.connect()
            except ConnectionLost:
                delay = backoff.next()
                if give_up is not None and time.monotonic() + delay > give_up:
                    raise
                time.sleep(delay)

    def _open(self, address: Address) -> None:
        sock = socket.create_connection(address, timeout=self.connect_timeout)
        _tune_socket(sock)
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(
                sock, server_hostname=server_hostname(self.ssl_context, address[0]))
        self._sock = sock
        self._timeout_set = sock.gettimeout()
        self._parser = ReplyParser()
        self.address = address

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _call(self, command: str, arg: Any = _NO_ARG, transform: Callable | None = None):
        for _ in range(MAX_REDIRECTS + 1):
            if self._sock is None:
                self.connect()
            try:
                value = self._roundtrip(command, arg)
            except BrokerError as exc:
                if exc.code == NOTLEADER and self._redirect(exc):
                    self.close()
                    continue
                raise
            return transform(value) if transform else value
        raise BrokerError(NOTLEADER, "too many leader redirects")

    def _roundtrip(self, command: str, arg: Any) -> Any:
        sock = self._sock
        try:
            deadline = self._reply_deadline(command, arg)
            if deadline != self._timeout_set:
                # settimeout is a syscall (it flips O_NONBLOCK): only when it changes.
                sock.settimeout(deadline)
                self._timeout_set = deadline
            sock.sendall(_frame(command, arg))
            reply = self._read_reply(sock)
        except (OSError, ProtocolError, ValueError) as exc:
            # ValueError: a reply the parser could not read; the stream is lost either way.
            self.close()
            raise ConnectionLost(f"{command}: {exc or type(exc).__name__}") from exc
        return _decode(reply)

    def _say_hello(self, address: Address) -> Any:
        """HELLO as the connection's first request; a port that answers as something else
        (REST, gRPC, metrics, TLS) is named at once instead of timing out (wrong_port.py)."""
        sock = self._sock
        try:
            deadline = self._reply_deadline("HELLO", None)
            if deadline != self._timeout_set:
                sock.settimeout(deadline)
                self._timeout_set = deadline
            sock.sendall(_frame("HELLO", self._hello()) + wrong_port.HANDSHAKE_END)
            first = sock.recv(65536)
            if not first:
                raise ConnectionResetError("the broker closed the connection")
            foreign = wrong_port.describe(first, address[1])
            if foreign is not None:
                self.close()
                raise ConnectionLost(foreign)
            self._parser.feed(first)
            reply = self._read_reply(sock)
        except (OSError, ProtocolError, ValueError) as exc:
            self.close()
            raise ConnectionLost(f"HELLO: {exc or type(exc).__name__}") from exc
        return _decode(reply)

    def _read_reply(self, sock: socket.socket) -> Any:
        parser = self._parser
        while True:
            reply = parser.get()
            if reply is not ReplyParser.NEED_MORE:
                return reply
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("the broker closed the connection")
            parser.feed(data)

    # -- conveniences on top of the commands
    def iter_tasks(self, status: str | None = None, queue: str | None = None,
                   type: str | None = None, limit: int | None = None,
                   page_size: int = 1000) -> Iterator[dict]:
        """Every task matching the filters, following cursors, at most ``limit``."""
        cursor = None
        remaining = limit
        while remaining is None or remaining > 0:
            size = page_size if remaining is None else min(page_size, remaining)
            page = self.list_tasks(status=status, queue=queue, type=type, limit=size,
                                   cursor=cursor)
            for task in page["tasks"]:
                yield task
            if remaining is not None:
                remaining -= len(page["tasks"])
            cursor = page.get("next_cursor")
            if not cursor:
                return


# ----------------------------------------------------------------------------- async client

class _ReplyProtocol(asyncio.Protocol):
    """One connection: writes frames, parses replies, resolves waiters in FIFO order.

    Reply deadlines are watched by one timer per connection, not one per request: replies
    come in request order, so only the oldest request still waiting can be overdue first.
    """

    def __init__(self, on_lost: Callable[["_ReplyProtocol"], None],
                 check_port: int | None = None):
        self.transport: asyncio.Transport | None = None
        self.parser = ReplyParser()
        # (future, deadline on the loop clock or None, the command, for a timeout error)
        self.waiters: collections.deque[tuple[asyncio.Future, float | None, str]] = \
            collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.error: Exception | None = None
        self._on_lost = on_lost
        self._can_write = asyncio.Event()
        self._can_write.set()
        # Frames sent during one loop turn go out in one write at its end: many concurrent
        # callers (a web app's requests, a worker's ACKs) cost one syscall, not one each,
        # and reach the broker together, in one group commit.
        self._outgoing: list[bytes] = []
        # The port whose first bytes are checked for being something other than the broker
        # (wrong_port.py), then None. From the start, not from HELLO on: a gRPC port sends
        # its settings frame as soon as the connection is made.
        self.check_first_answer_of: int | None = check_port

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _tune_socket(sock)

    def data_received(self, data: bytes) -> None:
        if self.check_first_answer_of is not None:
            foreign = wrong_port.describe(data, self.check_first_answer_of)
            self.check_first_answer_of = None
            if foreign is not None:
                self.abort(ConnectionLost(foreign))
                return
        parser = self.parser
        parser.feed(data)
        waiters = self.waiters
        try:
            while True:
                reply = parser.get()
                if reply is ReplyParser.NEED_MORE:
                    return
                if not waiters:
                    raise ProtocolError("a reply with no request waiting for it")
                waiter = waiters.popleft()[0]
                if not waiter.done():  # a caller that was cancelled still owns its slot
                    waiter.set_result(reply)
        except (ProtocolError, ValueError) as exc:
            self.abort(ConnectionLost(f"unreadable reply from the broker: {exc}"))

    def abort(self, error: ConnectionLost) -> None:
        """Drop the connection now. Marked closed at once: the transport's own
        connection_lost comes a loop iteration later, and no request may slip in between."""
        self._fail(error)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionLost(f"connection to the broker lost: {exc or 'closed'}"))

    def _fail(self, error: ConnectionLost) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiters:
            waiter = self.waiters.popleft()[0]
            if not waiter.done():
                waiter.set_exception(error)
                # Mark it retrieved: a caller that timed out or was cancelled no longer
                # awaits it, and asyncio would log "exception was never retrieved".
                waiter.exception()
        self._can_write.set()
        self._on_lost(self)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def send(self, frame: bytes, label: str, timeout: float | None) -> asyncio.Future:
        if self.closed:
            raise self.error
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        deadline = None if timeout is None else loop.time() + timeout
        self.waiters.append((waiter, deadline, label))
        if not self._outgoing:
            loop.call_soon(self._write_outgoing)
        self._outgoing.append(frame)
        if deadline is not None and self._timer is None:
            self._timer = loop.call_at(deadline, self._check_deadlines)
        return waiter

    def _write_outgoing(self) -> None:
        frames, self._outgoing = self._outgoing, []
        if not self.closed and frames:
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _check_deadlines(self) -> None:
        """A reply that never comes would stall every later one: drop the connection."""
        self._timer = None
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        for _, deadline, command in self.waiters:
            if deadline is None:
                continue
            if deadline <= loop.time():
                self.abort(ConnectionLost(f"{command}: no reply within the reply timeout"))
            else:
                self._timer = loop.call_at(deadline, self._check_deadlines)
            return

    async def wait_writable(self) -> None:
        if not self._can_write.is_set():
            await self._can_write.wait()


class AsyncClient(_Endpoint, _Commands):
    """An asyncio client with pipelining; safe to share between the tasks of one loop.

    Every call is one request on the shared connection; concurrent calls are in flight
    together. The first call after a connection loss reconnects (HELLO included); calls that
    were in flight when it broke raise :class:`ConnectionLost`.
    """

    def __init__(self, addresses: str | list = DEFAULT_ADDR, *, api_key: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, identity: dict | None = None,
                 connect_timeout: float = 5.0,
                 reply_timeout: float | None = DEFAULT_REPLY_TIMEOUT):
        super().__init__(addresses, api_key, ssl_context, identity, connect_timeout,
                         reply_timeout)
        self._conn: _ReplyProtocol | None = None
        self._connect_lock: asyncio.Lock | None = None

    async def __aenter__(self) -> "AsyncClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def connect(self) -> dict:
        """(Re)connect and say HELLO, unless already connected; returns the HELLO reply."""
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self.connected:
                return self.hello_reply
            errors: list[str] = []
            candidates = self._candidates()
            while candidates:
                address = candidates.pop(0)
                conn = None
                try:
                    conn = await self._open(address)
                    reply = await self._say_hello(conn)
                except (OSError, asyncio.TimeoutError, ConnectionLost) as exc:
                    errors.append(f"{address[0]}:{address[1]}: {exc or type(exc).__name__}")
                except BrokerError as exc:
                    self._follow_hello_refusal(exc, address, candidates, errors)
                else:
                    self._conn, self.address, self.hello_reply = conn, address, reply
                    return reply
                finally:
                    if conn is not None and self._conn is not conn:
                        conn.transport.abort()
            raise ConnectionLost("cannot connect to the broker: " + "; ".join(errors))

    async def connect_with_backoff(self, deadline_secs: float | None = None,
                                   backoff: Backoff | None = None) -> dict:
        """Retry :meth:`connect` until it succeeds or ``deadline_secs`` pass."""
        backoff = backoff or Backoff()
        give_up = None if deadline_secs is None else time.monotonic() + deadline_secs
        while True:
            try:
                return await self.connect()
            except ConnectionLost:
                delay = backoff.next()
                if give_up is not None and time.monotonic() + delay > give_up:
                    raise
                await asyncio.sleep(delay)

    async def _open(self, address: Address) -> _ReplyProtocol:
        loop = asyncio.get_running_loop()
        kwargs = {}
        if self.ssl_context is not None:
            kwargs = {"ssl": self.ssl_context,
                      "server_hostname": server_hostname(self.ssl_context, address[0])}
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: _ReplyProtocol(self._lost, address[1]), *address,
                                   **kwargs),
            self.connect_timeout)
        return conn

    def _lost(self, conn: _ReplyProtocol) -> None:
        if self._conn is conn:
            self._conn = None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (tests use it to simulate a network failure)."""
        if self._conn is not None:
            self._conn.abort(ConnectionLost("connection aborted by the client"))

    async def _say_hello(self, conn: _ReplyProtocol) -> Any:
        """HELLO as the connection's first request; a port that answers as something else
        (REST, gRPC, metrics, TLS) is named at once instead of timing out, as
        :meth:`Client._say_hello` does (the first bytes are checked by the protocol)."""
        waiter = conn.send(_frame("HELLO", self._hello()) + wrong_port.HANDSHAKE_END,
                           "HELLO", self._reply_deadline("HELLO", None))
        return _decode(await waiter)

    async def _send(self, conn: _ReplyProtocol, command: str, arg: Any) -> Any:
        await conn.wait_writable()
        waiter = conn.send(_frame(command, arg), command,
                           self._reply_deadline(command, arg))
        return _decode(await waiter)

    async def _call(self, command: str, arg: Any = _NO_ARG,
                    transform: Callable | None = None):
        for _ in range(MAX_REDIRECTS + 1):
            conn = self._conn
            if conn is None or conn.closed:
                await self.connect()
                conn = self._conn
            try:
                value = await self._send(conn, command, arg)
            except BrokerError as exc:
                if exc.code == NOTLEADER and self._redirect(exc):
                    await self.close()
                    continue
                raise
            return transform(value) if transform else value
        raise BrokerError(NOTLEADER, "too many leader redirects")
