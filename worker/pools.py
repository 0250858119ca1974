"""Where synchronous handlers run: a thread pool or a process pool, behind one interface.

``await pool.run(handler, payload, info, timeout)`` returns the handler's result or raises:
the handler's own exception (threads), :class:`HandlerFailed` carrying the child's error and
traceback (processes), or :class:`JobTimeout`. Async handlers never come here: the runner
awaits them on the event loop.

A thread cannot be killed, so a timed-out job's thread keeps its slot until the function
returns (``stuck`` counts them, and the runner fetches that much less); a process can, so the
process pool kills the child and starts a fresh one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from worker.registry import Handler, JobInfo, call_as_job


class JobTimeout(Exception):
    def __init__(self, timeout: float):
        super().__init__(f"the job exceeded its timeout of {timeout:g}s")
        self.timeout = timeout


class HandlerFailed(Exception):
    """A handler raised in another process: its formatted error and traceback."""

    def __init__(self, error: str, backtrace: str | None):
        super().__init__(error)
        self.error = error
        self.backtrace = backtrace


class ThreadPool:
    def __init__(self, size: int):
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=size, thread_name_prefix="tq-job")
        self.stuck = 0
        self.on_slot_freed = lambda: None  # the runner's wake-up call when `stuck` drops

    async def run(self, handler: Handler, payload: Any, info: JobInfo,
                  timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        future = self._executor.submit(call_as_job, handler.fn, payload, info)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            raise JobTimeout(timeout) from None
        finally:
            # Timed out, or cancelled (lease lost, shutdown): the thread runs on regardless.
            if not future.done():
                self.stuck += 1
                future.add_done_callback(
                    lambda _: loop.call_soon_threadsafe(self._unstick))

    def _unstick(self) -> None:
        self.stuck -= 1
        self.on_slot_freed()

    async def close(self) -> None:
        # Threads still running a handler cannot be stopped; do not wait for them
        # (the CLI exits the process once the jobs are failed back).
        self._executor.shutdown(wait=False, cancel_futures=True)
