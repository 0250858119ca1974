"""The state machine: deterministic commands applied to RocksDB, one WriteBatch per log entry.

Every mutation of the broker's state is a *command*, a plain JSON-able list
``[op, now_ms, *args]``. The node that accepts a client request (the leader, or the single
node) builds the command and stamps into it everything that would otherwise make apply
non-deterministic: the current time, lease deadlines, retry jitter, the queue-depth limit.
Apply never reads the clock, never draws a random number, never depends on configuration:
any replica that applies the same log to the same snapshot gets byte-identical RocksDB
contents. That is what lets single-node mode (a local log) and cluster mode (Raft) share
this code unchanged.

A log *entry* is a list of commands (group commit). :meth:`StateMachine.apply_entry` applies
all of them through one :class:`~broker.store.Overlay` and returns one WriteBatch that also
records the entry's index, so a replayed entry is recognised and skipped (idempotent replay).

Apply must never raise: an exception in one command rolls back that command's writes and
becomes an ``INTERNAL`` error result for it; the other commands of the entry proceed.

The commands themselves live in families, one module each, in broker/commands/ (tasks and
leases, workers, queues, housekeeping, cluster, ...), gathered in one table there. This module
is what they share: the entry loop with its rollback, and the few operations every family
uses to read and move a task (:meth:`StateMachine.load_task`, :meth:`StateMachine.transition`).
"""

from __future__ import annotations

import logging

from broker import keys, listindex
from broker.commands import COMMANDS, LOAD_HOOKS, TRANSITION_HOOKS
from broker.counters import Counters
from broker.model import (  # noqa: F401  (re-exported: the names callers know)
    CANCELLED, COMPLETED, DEAD, FAILED, FINISHED, INTERNAL_FIELDS, MAX_BACKOFF_MS, PENDING,
    RUNNING, SCHEDULED, STATUSES, TOTALS, WAITING, BaseMismatch, Rejected, public,
    restore_key)
from broker.store import Overlay, RangeHints, Store
from taskqueue import errors, jsonutil

log = logging.getLogger("tq.machine")


class StateMachine:
    """Applies log entries to the store. Owned by exactly one log (local or Raft)."""

    def __init__(self, store: Store):
        self.store = store
        self.hints = RangeHints()
        self.woken: set[str] = set()  # queues that gained pending tasks in the last entry
        self.finished: set[str] = set()  # tasks that reached a final status in it (WAIT-TASK)
        self.overlay: Overlay | None = None  # the entry being applied (apply_entry)
        self.load()
        # op name -> function(machine, now, *args): the one command table (broker/commands).
        self._ops = dict(COMMANDS)
        self._transition_hooks = TRANSITION_HOOKS

    def load(self) -> None:
        """(Re)read the machine's in-memory state from the store (start, snapshot install)."""
        store = self.store
        listindex.backfill(store)  # once per store written before LIST's indexes existed
        self.applied_index = store.applied_index()
        raw_seq = store.get(keys.META_SEQ)
        self.seq = 0 if raw_seq is None else int(raw_seq)
        self.counters = Counters(store.get_json(keys.META_COUNTERS))
        self.paused: set[str] = set(store.get_json(keys.META_PAUSED) or [])
        # Where this base state came from (Mrestored, written by a restore, carried by a
        # snapshot) and whether the log has recorded it (Mrestorelogged, written by apply).
        restored = store.get_json(keys.META_RESTORED)
        self.restored = None if not isinstance(restored, dict) else {
            "backup_sha256": restored.get("backup_sha256"),
            "backup_applied_index": restored.get("backup_applied_index")}
        self.restore_logged = store.get_json(keys.META_RESTORE_LOGGED)
        self.hints.clear()
        for hook in LOAD_HOOKS:  # families' in-memory state (limits: m.limits)
            hook(self)

    def restore_unlogged(self) -> dict | None:
        """The identity a Raft leader must put in the log (a ``restored`` command), or None:
        this database came from a restore and the log has not recorded it yet."""
        if self.restored is None or restore_key(self.restore_logged) == restore_key(
                self.restored):
            return None
        return dict(self.restored)

    # --------------------------------------------------------------------- entry point

    def apply_entry(self, index: int, commands: list) -> tuple[list, object | None]:
        """Apply one log entry. Returns (results, WriteBatch), or ([], None) on a replay.

        The caller writes the batch (with its own fsync policy) before it tells anyone a
        result: nothing is acknowledged that is not in RocksDB.
        """
        if index <= self.applied_index:
            return [], None
        self.woken = set()
        self.finished = set()
        overlay = Overlay(self.store, self.hints)
        self.overlay = overlay
        seq_before = self.seq
        paused_before = set(self.paused)
        results = []
        for command in commands:
            undo_point = overlay.savepoint(), self.counters.savepoint(), self.seq
            try:
                op = self._ops[command[0]]
                results.append(op(self, *command[1:]))
            except BaseMismatch:
                # Nothing of this entry may reach the store: drop the overlay and whatever
                # earlier commands of the entry changed in memory.
                self.overlay = None
                self.load()
                raise
            except Exception as exc:  # a bug: contain it to this one command
                log.exception("apply of %r failed; command rolled back", command[:1])
                overlay.rollback(undo_point[0])
                self.counters.rollback(undo_point[1])
                self.seq = undo_point[2]
                self.hints.clear()
                results.append(Rejected(errors.INTERNAL, f"{type(exc).__name__}: {exc}"))
        self.applied_index = index
        overlay.put(keys.META_APPLIED, str(index).encode())
        if self.seq != seq_before:
            overlay.put(keys.META_SEQ, str(self.seq).encode())
        if self.counters.dirty:
            overlay.put(keys.META_COUNTERS, self.counters.to_json())
            self.counters.dirty = False
        if self.paused != paused_before:
            overlay.put(keys.META_PAUSED, jsonutil.dumps(sorted(self.paused)))
        self.counters.commit()
        overlay.release_undo()
        self.overlay = None
        return results, overlay.to_batch()

    # ------------------------------------------------------------------------- helpers

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def load_task(self, task_id: str) -> dict | None:
        raw = self.overlay.get(keys.task(task_id))
        return None if raw is None else jsonutil.loads(raw)

    def unindex(self, task: dict) -> None:
        """Remove the task from the index its current status lives in.

        Each status has exactly one index: pending -> ready (R), scheduled and failed ->
        schedule (S), running -> lease (L), finished -> status (X, for listing and purge).
        One index per status keeps a transition at two key writes besides the record.
        """
        status = task["status"]
        ov = self.overlay
        if status == PENDING:
            ov.delete(keys.ready(task["queue"], task["priority"], task["_seq"]))
        elif status == RUNNING:
            ov.delete(keys.lease(task["_lease_ms"], task["id"]))
        elif status in (SCHEDULED, FAILED):
            ov.delete(keys.schedule(task["_run_ms"], task["_seq"]))
        else:
            ov.delete(keys.status(status, task["_changed_ms"], task["_seq"]))

    def index(self, task: dict) -> None:
        status = task["status"]
        ov = self.overlay
        if status == PENDING:
            ov.put(keys.ready(task["queue"], task["priority"], task["_seq"]),
                   task["id"].encode())
            self.woken.add(task["queue"])
        elif status == RUNNING:
            ov.put(keys.lease(task["_lease_ms"], task["id"]), str(task["_token"]).encode())
        elif status in (SCHEDULED, FAILED):
            ov.put(keys.schedule(task["_run_ms"], task["_seq"]), task["id"].encode())
        else:
            ov.put(keys.status(status, task["_changed_ms"], task["_seq"]), task["id"].encode())

    def transition(self, task: dict, new_status: str, now: int, *, fresh: bool = False):
        """Move ``task`` to ``new_status``: indexes, counters, timestamps, record."""
        old_status = None if fresh else task["status"]
        if not fresh:
            self.unindex(task)
        task["status"] = new_status
        task["_seq"] = self.next_seq()
        task["_changed_ms"] = now
        task["updated_at"] = now / 1000.0
        self.index(task)
        if new_status in FINISHED:
            self.finished.add(task["id"])
        self.counters.move(task["queue"], old_status, new_status)
        for hook in self._transition_hooks:  # families that follow tasks (limits, workflows)
            hook(self, task, old_status, new_status, now)
        self.overlay.put(keys.task(task["id"]), jsonutil.dumps(task))

    def due(self, lower: bytes, upper: bytes, limit: int):
        """Yield (key, value) of the first ``limit`` live entries of an index range."""
        ov = self.overlay
        for _ in range(limit):
            key = ov.first(lower, upper)
            if key is None:
                self.hints.exhausted(lower, upper)
                return
            self.hints.consumed(key)
            yield key, ov.get(key)

    def load_json(self, key: bytes):
        """A JSON record as this entry sees it (its own earlier writes included), or None."""
        raw = self.overlay.get(key)
        return None if raw is None else jsonutil.loads(raw)
