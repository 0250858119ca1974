"""A process pool for CPU-bound handlers: every core, hard timeouts, recycling after N jobs.

Not ``concurrent.futures.ProcessPoolExecutor``: killing one of its processes (the only way to
stop a runaway handler) breaks the whole executor. Here each child is independent: one pipe,
one job at a time. The parent kills a child whose job times out and starts a fresh one, and
retires a child after ``max_tasks_per_child`` jobs so that leaks in user code stay bounded.

Children are started by the ``forkserver`` method with the handler modules preloaded: forking
the asyncio parent (with its threads and sockets) would be unsafe, and ``spawn`` would
re-import everything for every recycled child.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import traceback
from typing import Any

from taskqueue import jsonutil
from worker.pools import HandlerFailed, JobTimeout
from worker.registry import Handler, JobInfo, call_as_job, load_handler_modules

log = logging.getLogger("tq.worker.procpool")


def _child_main(conn, modules: list[str]) -> None:
    """A child's life: import the handlers, then run jobs until told to stop (None)."""
    registry = load_handler_modules(modules)
    while True:
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        name, payload, info = message
        try:
            handler = registry.get(name)
            if handler is None:
                raise LookupError(f"no handler named {name!r} in this process")
            # Encoded here, so an unserialisable result fails this job, not the pipe.
            reply = ("ok", jsonutil.dumps(call_as_job(handler.fn, payload, info)))
        except BaseException as exc:  # the handler's failure is the job's failure
            reply = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        conn.send(reply)


class _Child:
    def __init__(self, ctx, modules: list[str]):
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_child_main, args=(child_conn, modules),
                                   name="tq-job-process", daemon=True)
        self.process.start()
        child_conn.close()
        self.jobs_done = 0

    async def call(self, message: tuple) -> tuple:
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        fd = self.conn.fileno()

        def readable() -> None:
            loop.remove_reader(fd)
            if reply.done():
                return
            try:
                reply.set_result(self.conn.recv())
            except (EOFError, OSError) as exc:
                reply.set_exception(exc)

        self.conn.send(message)
        loop.add_reader(fd, readable)
        try:
            return await reply
        finally:
            loop.remove_reader(fd)

    def retire(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.conn.close()
        self.process.join(0)  # reaps it if already gone; the daemon flag covers the rest

    def kill(self) -> None:
        self.process.kill()
        self.process.join(1)
        self.conn.close()


class ProcessPool:
    def __init__(self, size: int, modules: list[str], max_tasks_per_child: int | None = None):
        self.size = size
        self.modules = list(modules)
        self.max_tasks_per_child = max_tasks_per_child
        self.stuck = 0  # interface parity with ThreadPool: a stuck child is killed instead
        self.on_slot_freed = lambda: None
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["worker.registry", *self.modules])
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()

    async def start(self) -> None:
        """Start every child now, so the first jobs do not pay for process start-up."""
        children = await asyncio.to_thread(
            lambda: [_Child(self._ctx, self.modules) for _ in range(self.size)])
        self._idle.extend(children)

    async def _take(self) -> _Child:
        while self._idle:
            child = self._idle.pop()
            if child.process.is_alive():
                return child
            child.kill()
        return await asyncio.to_thread(_Child, self._ctx, self.modules)

    def _give_back(self, child: _Child) -> None:
        self._busy.discard(child)
        child.jobs_done += 1
        if self.max_tasks_per_child and child.jobs_done >= self.max_tasks_per_child:
            log.debug("recycling job process %s after %d jobs", child.process.pid,
                      child.jobs_done)
            child.retire()
        else:
            self._idle.append(child)

    async def run(self, handler: Handler, payload: Any, info: JobInfo,
                  timeout: float | None) -> Any:
        child = await self._take()
        self._busy.add(child)
        try:
            reply = await asyncio.wait_for(child.call((handler.name, payload, info)), timeout)
        except asyncio.TimeoutError:
            self._busy.discard(child)
            child.kill()
            raise JobTimeout(timeout) from None
        except (EOFError, OSError) as exc:
            self._busy.discard(child)
            child.kill()
            raise HandlerFailed(
                f"WorkerProcessDied: the job process exited "
                f"(exit code {child.process.exitcode}): {exc or type(exc).__name__}",
                None) from None
        except BaseException:  # cancelled (shutdown): the child's state is unknown
            self._busy.discard(child)
            child.kill()
            raise
        self._give_back(child)
        if reply[0] == "ok":
            return jsonutil.loads(reply[1])
        raise HandlerFailed(reply[1], reply[2])

    async def close(self) -> None:
        for child in self._idle:
            child.retire()
        for child in list(self._busy):
            child.kill()
        self._idle.clear()
        self._busy.clear()
