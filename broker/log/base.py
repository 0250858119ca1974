"""The small interface every log implements: propose, apply, snapshot, restore.

The service never touches RocksDB writes or the consensus engine; it proposes commands to a
:class:`Log` and awaits each one's result. Two implementations exist:

* :class:`broker.log.local.LocalLog` — single node: group commit straight into the state
  machine, durability from RocksDB's own write-ahead log.
* :class:`broker.log.raft.RaftLog` — a Raft cluster (pysyncobj behind this interface).

Swapping the consensus engine means writing another subclass; nothing else changes.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import time
from typing import Callable, Iterable

from broker.machine import StateMachine
from taskqueue import jsonutil

log = logging.getLogger("tq.log")

# Proposals waiting this long with no entry applied means the write path is stuck: /health
# says ``write_stalled`` (503) and tq_log_write_stalled is 1 (see write_stalled()).
WRITE_STALL_SECS = 10.0
EXIT_LOOP_DIED = 70  # EX_SOFTWARE


class NotLeader(Exception):
    """This node cannot take writes now. ``leader`` is the leader's address when known."""

    def __init__(self, leader: str | None):
        super().__init__(f"not the leader; leader={leader or 'unknown'}")
        self.leader = leader


class Unavailable(Exception):
    """The write could not be committed (no quorum, shutting down, timed out).

    Its outcome may be unknown: it may still commit. Clients retry idempotently.
    """


class Log(abc.ABC):
    """A sequence of entries, each a list of commands, applied in order to ``machine``."""

    def __init__(self, machine: StateMachine):
        self.machine = machine
        # Called on the event loop after each applied entry with the queues that gained
        # pending tasks, so blocked FETCHes can be woken.
        self.on_applied: Callable[[Iterable[str]], None] = lambda queues: None
        # Called likewise with the ids of tasks that reached a final status (completed,
        # dead, cancelled), so WAIT-TASK callers are answered by the apply, not by polling.
        self.on_finished: Callable[[Iterable[str]], None] = lambda task_ids: None

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def propose(self, command: list):
        """Commit ``command`` and return its apply result (or a Rejected).

        Raises NotLeader or Unavailable when it could not be committed here.
        """

    def propose_soon(self, command: list) -> asyncio.Future:
        """Propose ``command`` now and return a future of what :meth:`propose` would
        return (or raise). A group-commit log queues it at once, behind what was proposed
        before it, so a command proposed right after another in the same loop turn joins
        that one's entry (see Service._hand_to_parked_fetch)."""
        return asyncio.ensure_future(self.propose(command))

    async def propose_many(self, commands: list[list]) -> list:
        """Commit several commands; return their results in order.

        A command that could not be committed has its NotLeader/Unavailable exception in
        its place instead of a result. Implementations override this to avoid one future
        per command on bulk operations.
        """
        return await asyncio.gather(*(self.propose(c) for c in commands),
                                    return_exceptions=True)

    @abc.abstractmethod
    def is_leader(self) -> bool: ...

    @abc.abstractmethod
    def leader_address(self) -> str | None:
        """The leader's client protocol address (host:port), when known."""

    def caught_up(self) -> bool:
        """False while a node that (re)joined a cluster has not yet applied what the leader
        had committed: its reads would miss tasks that exist. A single node always is."""
        return True

    @abc.abstractmethod
    def status(self) -> dict:
        """``{"mode", "node_id", "role", "leader", "term", "commit_index", "applied_index",
        "restored", "restore_mismatch", "caught_up", "nodes": [...]}`` for cluster-status and the
        metrics (``restored``: :func:`broker.restore.restore_identity` of this node's data;
        ``restore_mismatch``: reachable nodes report different ones)."""

    @abc.abstractmethod
    async def snapshot(self, path: str) -> int:
        """Write a consistent RocksDB checkpoint at ``path``; return its applied index."""


class GroupCommitLog(Log):
    """A log whose proposals wait in one queue until a commit loop takes them as an entry.

    Both implementations batch this way (many client operations, one entry): this class
    owns the queue, ``propose``/``propose_many`` and the shutdown drain; a subclass's
    commit loop takes ``self._queue`` items ``(command, sink, slot)`` and hands each result
    to :func:`deliver`.
    """

    def __init__(self, machine: StateMachine):
        super().__init__(machine)
        # (command, sink, slot): sink is the proposer's Future (slot None) or a Gather
        # collecting the results of a propose_many (slot = position in it).
        self._queue: list[tuple[list, object, int | None]] = []
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        # Watchdog: proposals taken but not settled yet, and when the write path last moved
        # (an entry applied or failed, or the first proposal after an idle spell).
        self.in_flight = 0
        self.progress_at = time.monotonic()
        self.stall_secs = WRITE_STALL_SECS

    def _start_task(self, coro, name: str) -> asyncio.Task:
        """A loop of the log, watched: if it ever ends other than by stop(), nothing would
        take proposals again and every write would hang; exit loudly instead."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._loop_ended)
        self._tasks.append(task)
        return task

    def _loop_ended(self, task: asyncio.Task) -> None:
        if self._stopping or task.cancelled():
            return
        exc = task.exception()
        log.critical("the log's %s loop died (%r); no write could be taken any more: "
                     "exiting", task.get_name(), exc, exc_info=exc)
        logging.shutdown()
        os._exit(EXIT_LOOP_DIED)

    def _note_waiting(self) -> None:
        if not self._queue and not self.in_flight:
            self.progress_at = time.monotonic()  # the stall clock starts now, not when idle

    def write_stalled(self) -> float:
        """Seconds the write path has been stuck (proposals waiting, nothing applied for
        ``stall_secs``), else 0.0. Any thread."""
        if not self._queue and not self.in_flight:
            return 0.0
        waited = time.monotonic() - self.progress_at
        return waited if waited > self.stall_secs else 0.0

    async def propose(self, command: list):
        return await self.propose_soon(command)

    def propose_soon(self, command: list) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self._stopping:
            future.set_exception(Unavailable("broker shutting down"))
            return future
        self._note_waiting()
        self._queue.append((command, future, None))
        self._schedule_commit()
        return future

    async def propose_many(self, commands: list[list]) -> list:
        if self._stopping:
            return [Unavailable("broker shutting down")] * len(commands)
        gather = Gather(len(commands), asyncio.get_running_loop().create_future())
        self._note_waiting()
        self._queue.extend((command, gather, i) for i, command in enumerate(commands))
        self._schedule_commit()
        return await gather.future

    def _schedule_commit(self) -> None:
        """Proposals are queued: make sure the commit loop will take them."""
        self._wakeup.set()

    async def _stop_proposals(self) -> None:
        """Refuse new proposals, give queued ones up to a second, fail the rest."""
        self._stopping = True
        self._wakeup.set()
        for _ in range(100):
            if not self._queue:
                break
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._fail(self._queue, Unavailable("broker shutting down"))
        self._queue.clear()

    @staticmethod
    def _fail(taken: list, exc: Exception) -> None:
        for _, sink, slot in taken:
            deliver(sink, slot, exc, failed=True)

    def _encodable(self, taken: list) -> tuple[list, bytes | None]:
        """``taken``'s commands as one JSON entry; a command that cannot be encoded (it
        cannot reach the log) is failed alone and dropped, the others are kept."""
        try:
            return taken, jsonutil.dumps([item[0] for item in taken])
        except Exception:
            pass
        kept = []
        for item in taken:
            try:
                jsonutil.dumps(item[0])
            except Exception as exc:
                log.error("a %r command cannot be encoded for the log (%s); failed",
                          str(item[0][0])[:32] if item[0] else "?", exc)
                deliver(item[1], item[2], Unavailable(
                    f"the command cannot be encoded ({exc}); not committed"), failed=True)
            else:
                kept.append(item)
        if not kept:
            return [], None
        return kept, jsonutil.dumps([item[0] for item in kept])


class Gather:
    """Collects the results of one propose_many; resolves when the last one arrives."""

    __slots__ = ("results", "remaining", "future")

    def __init__(self, count: int, future: asyncio.Future):
        self.results: list = [None] * count
        self.remaining = count
        self.future = future


def deliver(sink, slot, result, failed: bool = False) -> None:
    """Hand one command's result (or, with ``failed``, its exception) to its proposer."""
    if slot is None:
        if not sink.done():
            if failed:
                sink.set_exception(result)
                # Read once here: a proposer that went away (its connection closed) never
                # awaits it, and asyncio would log "Future exception was never retrieved".
                # One that awaits still gets it raised.
                sink.exception()
            else:
                sink.set_result(result)
        return
    sink.results[slot] = result
    sink.remaining -= 1
    if sink.remaining == 0 and not sink.future.done():
        sink.future.set_result(sink.results)
