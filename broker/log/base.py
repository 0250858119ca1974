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
from typing import Callable, Iterable

from broker.machine import StateMachine


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

    async def propose(self, command: list):
        if self._stopping:
            raise Unavailable("broker shutting down")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((command, future, None))
        self._schedule_commit()
        return await future

    async def propose_many(self, commands: list[list]) -> list:
        if self._stopping:
            return [Unavailable("broker shutting down")] * len(commands)
        gather = Gather(len(commands), asyncio.get_running_loop().create_future())
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
            else:
                sink.set_result(result)
        return
    sink.results[slot] = result
    sink.remaining -= 1
    if sink.remaining == 0 and not sink.future.done():
        sink.future.set_result(sink.results)
