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

    @abc.abstractmethod
    def status(self) -> dict:
        """``{"mode", "node_id", "role", "leader", "term", "commit_index", "applied_index",
        "nodes": [...]}`` for cluster-status and the metrics."""

    @abc.abstractmethod
    async def snapshot(self, path: str) -> int:
        """Write a consistent RocksDB checkpoint at ``path``; return its applied index."""
