"""A tiny in-memory stand-in for the broker, speaking docs/protocol.md on a local port.

Only for the few tests that need to control the broker in ways the real one cannot be
(e.g. answer NOTLEADER, or hold a reply); everything about queue semantics is tested
against the real broker. Leases, tokens and retries are modelled just enough for a worker
to run against it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time

from taskqueue import jsonutil
from taskqueue.resp import NULL, OK, PONG, ProtocolError, RequestParser, encode_bulk, encode_error


class FakeBroker:
    def __init__(self, lease_secs: float = 5.0, heartbeat_secs: float = 1.0):
        self.lease_secs = lease_secs
        self.heartbeat_secs = heartbeat_secs
        self.tasks: dict[str, dict] = {}
        self.ready: collections.deque[str] = collections.deque()
        self.tokens = itertools.count(1)
        self.commands: list[tuple[str, object]] = []  # everything received, for assertions
        self.hellos: list[dict] = []
        self.override: dict[str, bytes] = {}  # command -> canned raw reply
        self.swallow: collections.Counter = collections.Counter()  # command -> replies to drop
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._new_work: asyncio.Event | None = None
        self._writers: set = set()

    # -- lifecycle (the fake runs its own loop in a thread, like a separate process would)
    def start(self, port: int = 0) -> "FakeBroker":
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start(port))
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(5)
        return self

    async def _start(self, port: int) -> None:
        self._new_work = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def _stop():
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(5)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- the protocol
    async def _serve(self, reader, writer) -> None:
        self._writers.add(writer)
        parser = RequestParser()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (request := parser.get()) is not None:
                    writer.write(await self._dispatch(request))
        except (ProtocolError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _dispatch(self, request: list[bytes]) -> bytes:
        command = request[0].decode().upper()
        arg = jsonutil.loads(request[1]) if len(request) > 1 else None
        self.commands.append((command, arg))
        if command in self.override:
            return self.override[command]
        if self.swallow[command] > 0:  # a half-open connection: the request vanishes
            self.swallow[command] -= 1
            return b""
        handler = getattr(self, "do_" + command.replace("-", "_"), None)
        if handler is None:
            return encode_error("BADREQ", f"unknown command {command}")
        try:
            result = await handler(arg)
        except KeyError as exc:
            return encode_error("NOTFOUND", str(exc))
        except LookupError as exc:
            return encode_error("LEASELOST", str(exc))
        if result is None:
            return NULL
        if result == "OK":
            return OK
        if result == "PONG":
            return PONG
        return encode_bulk(jsonutil.dumps(result))

    async def do_PING(self, arg):
        return "PONG"

    async def do_HELLO(self, arg):
        self.hellos.append(arg)
        return {"v": 1, "node_id": "fake", "role": "single", "leader": None,
                "heartbeat_interval_secs": self.heartbeat_secs,
                "lease_timeout_secs": self.lease_secs}

    async def do_SUBMIT(self, arg):
        if isinstance(arg, list):
            return [await self.do_SUBMIT(t) for t in arg]
        if arg["id"] in self.tasks:
            return {**self.tasks[arg["id"]], "duplicate": True}
        task = {"queue": "default", "priority": 0, "max_retries": 3, "timeout_secs": None,
                **arg, "status": "pending", "attempts": 0, "result": None, "error": None}
        self.tasks[task["id"]] = task
        self.ready.append(task["id"])
        self._new_work.set()
        return task

    def _expire_leases(self) -> None:
        now = time.time()
        for task in self.tasks.values():
            if task["status"] == "running" and task["lease_expires_at"] < now:
                task["status"] = "pending"
                self.ready.append(task["id"])

    async def do_FETCH(self, arg):
        deadline = time.monotonic() + arg.get("timeout_ms", 2000) / 1000
        while True:
            self._expire_leases()
            jobs = []
            while self.ready and len(jobs) < arg.get("count", 1):
                task = self.tasks[self.ready.popleft()]
                if task["status"] != "pending" or task["queue"] not in arg["queues"]:
                    continue
                task.update(status="running", token=next(self.tokens),
                            attempts=task["attempts"] + 1,
                            lease_expires_at=time.time() + self.lease_secs)
                jobs.append(dict(task))
            if jobs:
                return jobs
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._new_work.clear()
            try:
                await asyncio.wait_for(self._new_work.wait(), min(left, 0.1))
            except asyncio.TimeoutError:
                pass

    def _held(self, item) -> dict:
        task = self.tasks[item["id"]]
        if task["status"] != "running" or task.get("token") != item["token"]:
            raise LookupError(item["id"])
        return task

    async def do_ACK(self, arg):
        if isinstance(arg, list):
            out = []
            for item in arg:
                try:
                    out.append(await self.do_ACK(item))
                except LookupError:
                    out.append({"error": {"code": "LEASELOST", "message": item["id"]}})
            return out
        task = self._held(arg)
        task.update(status="completed", result=arg.get("result"))
        return "OK"

    async def do_FAIL(self, arg):
        task = self._held(arg)
        task["error"] = arg["error"]
        if arg.get("retry", True) and task["attempts"] <= task["max_retries"]:
            task["status"] = "pending"
            self.ready.append(task["id"])
            self._new_work.set()
        else:
            task["status"] = "dead"
        return "OK"

    async def do_HEARTBEAT(self, arg):
        lost = []
        for task_id, token in arg["tasks"]:
            task = self.tasks.get(task_id)
            if task and task["status"] == "running" and task.get("token") == token:
                task["lease_expires_at"] = time.time() + self.lease_secs
            else:
                lost.append(task_id)
        return {"state": "active", "lost": lost}

    async def do_BYE(self, arg):
        return "OK"

    async def do_GET(self, arg):
        return self.tasks[arg["id"]]
