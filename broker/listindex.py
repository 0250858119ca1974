"""The listing index: tasks by queue and type, for LIST's ``queue`` and ``type`` filters.

LIST filtered by status walks that status's own index (R, S, L, X in broker/keys.py). A
filter by type, or by queue without a status, had nothing to walk but the task table: with
1,000,000 tasks stored, a page of a rare type scanned LIST_SCAN_BUDGET records and came back
empty (the dashboard's Tasks page, 216 ms a page on a quiet machine). One index answers
every such filter from its own key range:

``Y`` queue, NUL, type, NUL, task id -> empty

- queue and type: the one range ``Y queue\\0 type\\0``;
- queue alone: the range ``Y queue\\0`` (its tasks by type, then id);
- type alone: the range ``Y q\\0 type\\0`` of each queue q in turn (:func:`listing_ranges`):
  one seek per queue, and queues are few (each has its counters in memory).

The index does not change with a task's status: its entry is written once, when the task
is submitted, and deleted once, when retention purges it. A transition (claim, ACK, retry)
never touches it, so claims, ACKs and the drain pay nothing. A submit pays one empty-valued
key in its WriteBatch: ~0.4 us of apply and ~1.3 us of RocksDB write per task, so bulk
submits went from 61-66k/s to 52-59k/s in ``python -m bench`` (one blocking client's
submit and the drain within noise). One index, not one per filter: a second (by queue
alone) cost bulk submits a quarter of their speed.

A store written before the index existed is indexed once when the broker loads it
(:func:`backfill`): derived from the task table, the same on every replica, marked done by
``Mlistindex``. Deleting that key makes the next start rebuild it (docs/operations.md).
"""

from __future__ import annotations

import logging
import time
from typing import Iterable

import rocksdict

from broker import keys
from taskqueue import jsonutil

log = logging.getLogger("tq.listindex")

BACKFILL_BATCH = 10_000  # tasks indexed per WriteBatch while backfilling


def _key_of(task: dict) -> bytes:
    return keys.by_type(task["queue"], task["type"], task["id"])


def add(overlay, task: dict) -> None:
    """Index a newly submitted task (in the submit's own WriteBatch)."""
    overlay.put_marker(_key_of(task))


def remove(overlay, task: dict) -> None:
    """Drop a purged task's entry (in the purge's own WriteBatch)."""
    overlay.delete(_key_of(task))


def listing_ranges(task_type: str | None, queue: str | None,
                   queues: Iterable[str]) -> list[bytes]:
    """The key prefixes, in key order, whose entries are exactly the tasks of this
    queue/type filter. ``queues``: every queue that holds tasks (for a type alone)."""
    if queue is not None:
        return [keys.by_type_prefix(queue, task_type)]
    return [keys.by_type_prefix(q, task_type)
            for q in sorted(queues, key=lambda name: name.encode())]


def task_id_of(prefix: bytes, key: bytes) -> bytes:
    """The task id an entry of range ``prefix`` names. The type is not in a queue-wide
    prefix: it is the part up to the next NUL (types cannot hold NUL)."""
    rest = key[len(prefix):]
    if prefix.count(b"\x00") == 1:  # Y queue\0: the type comes first
        rest = rest[rest.index(b"\x00") + 1:]
    return rest


def backfill(store) -> int:
    """Index every stored task once, if this store has not been indexed yet.

    Runs at load (start, snapshot install, restore), before the log applies anything, so no
    submit races it. Returns how many tasks it indexed (0 when the marker is there).
    """
    if store.get(keys.META_LIST_INDEX) is not None:
        return 0
    started = time.monotonic()
    indexed = pending = 0
    batch = rocksdict.WriteBatch(raw_mode=True)
    for _key, raw in store.scan(keys.TASK, keys.prefix_end(keys.TASK)):
        batch.put(_key_of(jsonutil.loads(raw)), b"")
        indexed += 1
        pending += 1
        if pending >= BACKFILL_BATCH:
            store.write(batch, sync=False)
            batch = rocksdict.WriteBatch(raw_mode=True)
            pending = 0
    # The marker goes in the last batch, synced: a crash before it re-runs the backfill,
    # which rewrites the same entries (puts of the same keys and values).
    batch.put(keys.META_LIST_INDEX, b"1")
    store.write(batch, sync=True)
    if indexed:
        log.warning("indexed %d stored tasks by queue and type for LIST (once, %.1f s)",
                    indexed, time.monotonic() - started)
    return indexed
