"""Who is waiting for which task to finish (WAIT-TASK, REST ``?wait=``, gRPC ``Wait``).

A waiter is an asyncio future registered under a task id. The log calls :meth:`notify` on
the event loop after it applied an entry in which tasks reached a final status, so a wait
is answered by this node's own apply of the completion, never by polling the store. On a
follower that is the follower's apply: a waiter there never sees a result before the node
that answers it holds it.

Both the number of waiters per owner (a RESP connection, an HTTP or gRPC peer) and in
total are bounded: a wait costs a future and a set entry, and a client must not be able to
grow them without limit.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Hashable, Iterable

MAX_WAITS_PER_OWNER = 1000
MAX_WAITS_TOTAL = 20000


class TooManyWaiters(Exception):
    def __init__(self, message: str, per_owner: bool):
        super().__init__(message)
        self.per_owner = per_owner


class TaskWaiters:
    def __init__(self, per_owner: int = MAX_WAITS_PER_OWNER, total: int = MAX_WAITS_TOTAL):
        self.per_owner = per_owner
        self.total = total
        self._by_task: dict[str, set[asyncio.Future]] = defaultdict(set)
        self._by_owner: dict[Hashable, int] = defaultdict(int)
        self.count = 0

    def add(self, task_id: str, owner: Hashable) -> asyncio.Future:
        """A future resolved when ``task_id`` next reaches a final status; pair with
        :meth:`discard` in a ``finally``."""
        if self.count >= self.total:
            raise TooManyWaiters(f"the broker already holds {self.total} waits", False)
        if self._by_owner[owner] >= self.per_owner:
            raise TooManyWaiters(f"at most {self.per_owner} waits per connection", True)
        future = asyncio.get_running_loop().create_future()
        self._by_task[task_id].add(future)
        self._by_owner[owner] += 1
        self.count += 1
        return future

    def discard(self, task_id: str, owner: Hashable, future: asyncio.Future) -> None:
        futures = self._by_task.get(task_id)
        if futures is None or future not in futures:
            return
        futures.discard(future)
        if not futures:
            del self._by_task[task_id]
        self._by_owner[owner] -= 1
        if self._by_owner[owner] <= 0:
            del self._by_owner[owner]
        self.count -= 1

    def notify(self, task_ids: Iterable[str]) -> None:
        if not self._by_task:
            return
        for task_id in task_ids:
            for future in self._by_task.get(task_id, ()):
                if not future.done():
                    future.set_result(None)
