"""FETCHes parked on empty queues, waiting for work.

A FETCH that found nothing parks here until a task becomes pending on one of its queues or
its timeout passes. Two things end a park:

* :meth:`ParkedFetches.wake` (after an entry is applied): the FETCH proposes its claim again.
  That is a second commit after the submit's, so a waiting worker's task costs two commits
  in a row; on a cluster each is a majority round trip.
* :meth:`ParkedFetches.take` (while a submit is being proposed): the service proposes the
  FETCH's claim itself, right behind the submit, so both ride in one log entry and the
  worker has its task when the submit commits. The claim is an ordinary claim command: it
  claims what the machine says is due (priority order, limits, pauses), which may be
  another task or nothing; then the FETCH parks again.

The registry is FIFO per queue: the FETCH that has waited longest is handed work first.
Loop-thread only.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class ParkedFetch:
    """One parked FETCH: what its claim needs, and the future that ends the park (``None``:
    look again; a future: the claim proposed for it, see :meth:`ParkedFetches.take`)."""

    __slots__ = ("future", "worker_id", "queues", "count")

    def __init__(self, worker_id: str, queues: list[str], count: int):
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.worker_id = worker_id
        self.queues = queues
        self.count = count


class ParkedFetches:
    def __init__(self):
        # queue -> parked FETCHes in arrival order (a dict is an ordered set)
        self._by_queue: dict[str, dict[ParkedFetch, None]] = defaultdict(dict)

    def park(self, worker_id: str, queues: list[str], count: int) -> ParkedFetch:
        parked = ParkedFetch(worker_id, queues, count)
        for queue in queues:
            self._by_queue[queue][parked] = None
        return parked

    def unpark(self, parked: ParkedFetch) -> None:
        for queue in parked.queues:
            waiting = self._by_queue.get(queue)
            if waiting is not None:
                waiting.pop(parked, None)
                if not waiting:
                    del self._by_queue[queue]

    def wake(self, queues) -> None:
        """Tasks became pending on ``queues``: every FETCH parked on them looks again."""
        for queue in queues:
            waiting = self._by_queue.pop(queue, None)
            if waiting:
                for parked in waiting:
                    if not parked.future.done():
                        parked.future.set_result(None)

    def take(self, queue: str) -> ParkedFetch | None:
        """The longest-parked FETCH on ``queue`` that is still waiting, removed from every
        queue it waits on (the caller ends its park), or None."""
        waiting = self._by_queue.get(queue)
        while waiting:
            parked = next(iter(waiting))
            self.unpark(parked)
            if not parked.future.done():  # not timed out or cancelled meanwhile
                return parked
            waiting = self._by_queue.get(queue)
        return None

    def __len__(self) -> int:
        return len({p for waiting in self._by_queue.values() for p in waiting})
