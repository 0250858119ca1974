"""Listing indexes: tasks by type (and queue), and tasks by queue, for LIST's filters.

LIST filtered by status walks that status's own index (R, S, L, X in broker/keys.py). A
filter by type, or by queue without a status, had nothing to walk but the task table: with
1,000,000 tasks stored, a page of a rare type scanned LIST_SCAN_BUDGET records and came back
nearly empty (the dashboard's Tasks page, measured at ~0.4 s a page). Two indexes answer
those filters from their own key range:

``Y`` type, NUL, queue, NUL, task id -> task id    (type, or type and queue)
``G`` queue, NUL, task id -> task id               (queue alone)

Neither changes with a task's status: each is written once, when the task is submitted, and
deleted once, when retention purges it. A transition (claim, ACK, retry) touches neither, so
the hot path pays nothing for them; a submit pays two small puts in its WriteBatch.

A store written before these indexes existed is indexed once when the broker loads it
(:func:`backfill`): a derived index of the task table, the same on every replica, marked
done by ``Mlistindex``. Deleting that key makes the next start rebuild them (a repair an
operator may do, docs/operations.md).
"""

from __future__ import annotations

import logging
import time

import rocksdict

from broker import keys
from taskqueue import jsonutil

log = logging.getLogger("tq.listindex")

BACKFILL_BATCH = 10_000  # tasks indexed per WriteBatch while backfilling


def _keys_of(task: dict) -> tuple[bytes, bytes]:
    task_id, queue = task["id"], task["queue"]
    return keys.by_type(task["type"], queue, task_id), keys.by_queue(queue, task_id)


def add(overlay, task: dict) -> None:
    """Index a newly submitted task (in the submit's own WriteBatch)."""
    value = task["id"].encode()
    for key in _keys_of(task):
        overlay.put(key, value)


def remove(overlay, task: dict) -> None:
    """Drop a purged task's entries (in the purge's own WriteBatch)."""
    for key in _keys_of(task):
        overlay.delete(key)


def listing_prefix(task_type: str | None, queue: str | None) -> bytes | None:
    """The index range holding exactly the tasks of this type/queue filter, or None
    when neither is given (the caller walks a status index or the task table)."""
    if task_type is not None:
        return keys.by_type_prefix(task_type, queue)
    if queue is not None:
        return keys.by_queue_prefix(queue)
    return None


def backfill(store) -> int:
    """Index every stored task once, if this store has not been indexed yet.

    Runs at load (start, snapshot install, restore), before the log applies anything, so no
    submit races it. Returns how many tasks it indexed (0 when the marker is there).
    """
    if store.get(keys.META_LIST_INDEX) is not None:
        return 0
    started = time.monotonic()
    indexed = 0
    batch = rocksdict.WriteBatch(raw_mode=True)
    pending = 0
    for _key, raw in store.scan(keys.TASK, keys.prefix_end(keys.TASK)):
        task = jsonutil.loads(raw)
        value = task["id"].encode()
        for key in _keys_of(task):
            batch.put(key, value)
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
        log.warning("indexed %d stored tasks by type and queue for LIST (once, %.1f s)",
                    indexed, time.monotonic() - started)
    return indexed
