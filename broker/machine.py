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
"""

from __future__ import annotations

import logging

from broker import keys, tokens
from broker.store import Overlay, RangeHints, Store
from taskqueue import errors, jsonutil

log = logging.getLogger("tq.machine")

# Task states (docs/protocol.md, "States").
SCHEDULED, PENDING, RUNNING = "scheduled", "pending", "running"
COMPLETED, FAILED, DEAD, CANCELLED = "completed", "failed", "dead", "cancelled"
STATUSES = (SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, DEAD, CANCELLED)
WAITING = (SCHEDULED, PENDING, FAILED)  # what counts against queue_depth_threshold
FINISHED = (COMPLETED, DEAD, CANCELLED)  # what retention purges
TOTALS = ("submitted", "completed", "failed", "retried", "dead", "cancelled", "expired",
          "requeued", "purged")

MAX_BACKOFF_MS = 3600_000


class Rejected:
    """A command's error result. Returned, never raised, so that apply cannot wedge a log."""

    __slots__ = ("code", "message")

    def __init__(self, code: str, message: str):
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"Rejected({self.code}, {self.message!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Rejected) and (self.code, self.message) == (
            other.code, other.message)


# The machine's own fields in a task record; clients never see them.
INTERNAL_FIELDS = ("_seq", "_changed_ms", "_run_ms", "_lease_ms", "_token")


def public(task: dict) -> dict:
    """The task object clients see: the record without the machine's ``_`` fields."""
    out = task.copy()  # a C-level copy plus five pops beats a comprehension over ~25 keys
    for name in INTERNAL_FIELDS:
        out.pop(name, None)
    return out


def _secs(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000.0


class Counters:
    """Per-queue counts by status and lifetime totals, kept exact by apply.

    They make queue depths, backpressure and the metrics O(1). Persisted with every entry
    that changes them; changes since a savepoint can be undone (see Overlay.savepoint).
    """

    def __init__(self, data: dict | None = None):
        data = data or {}
        self.queues: dict[str, dict[str, int]] = data.get("queues", {})
        self.totals: dict[str, int] = {name: 0 for name in TOTALS}
        self.totals.update(data.get("totals", {}))
        self._undo: list[tuple[str | None, str, int]] = []
        self.dirty = False

    def move(self, queue: str, old: str | None, new: str | None) -> None:
        if old:
            self._add(queue, old, -1)
        if new:
            self._add(queue, new, 1)

    def _add(self, queue: str, status: str, delta: int) -> None:
        counts = self.queues.get(queue)
        if counts is None:
            counts = self.queues[queue] = {s: 0 for s in STATUSES}
        counts[status] += delta
        self._undo.append((queue, status, delta))
        self.dirty = True

    def total(self, name: str, delta: int = 1) -> None:
        self.totals[name] += delta
        self._undo.append((None, name, delta))
        self.dirty = True

    def waiting(self, queue: str) -> int:
        counts = self.queues.get(queue)
        # Spelled out (not a sum over WAITING): every submit asks, and this is its cost.
        return 0 if counts is None else (
            counts[SCHEDULED] + counts[PENDING] + counts[FAILED])

    def savepoint(self) -> int:
        return len(self._undo)

    def rollback(self, savepoint: int) -> None:
        while len(self._undo) > savepoint:
            queue, name, delta = self._undo.pop()
            if queue is None:
                self.totals[name] -= delta
            else:
                self.queues[queue][name] -= delta

    def commit(self) -> None:
        self._undo.clear()

    def to_json(self) -> bytes:
        return jsonutil.dumps({"queues": self.queues, "totals": self.totals})


class BaseMismatch(Exception):
    """A ``restored`` command names a restore this database is not (docs/clustering.md,
    "Restore identity in the log"): the log was written on top of another base state, and
    applying it here would silently hold different tasks than the other nodes. Not a
    per-command error: it escapes :meth:`StateMachine.apply_entry` with nothing written
    (the in-memory state is reloaded from the store), and the log must stop applying."""

    def __init__(self, logged: dict, mine: dict | None):
        self.logged = logged
        self.mine = mine
        super().__init__(
            f"the log records a cluster restored from backup {_describe(logged)}, but this "
            f"node's database is {_describe(mine)}")


def _describe(identity: dict | None) -> str:
    if not identity:
        return "not restored from any backup (an empty or different database)"
    return (f"sha256 {identity.get('backup_sha256')} at applied index "
            f"{identity.get('backup_applied_index')}")


def restore_key(identity) -> tuple | None:
    """The part of a restore identity that must agree across a cluster."""
    if not isinstance(identity, dict):
        return None
    return (identity.get("backup_sha256"), identity.get("backup_applied_index"))


class StateMachine:
    """Applies log entries to the store. Owned by exactly one log (local or Raft)."""

    def __init__(self, store: Store):
        self.store = store
        self.hints = RangeHints()
        self.woken: set[str] = set()  # queues that gained pending tasks in the last entry
        self.finished: set[str] = set()  # tasks that reached a final status in it (WAIT-TASK)
        self.load()
        self._ops = {
            "submit": self._submit, "claim": self._claim, "ack": self._ack,
            "fail": self._fail, "heartbeat": self._heartbeat, "hello": self._hello,
            "bye": self._bye, "cancel": self._cancel, "requeue": self._requeue,
            "promote": self._promote, "expire": self._expire, "purge": self._purge,
            "expire_workers": self._expire_workers, "pause": self._pause,
            "resume": self._resume, "worker_state": self._worker_state,
            "noop": lambda now: None, "restored": self._restored,
        }

    def load(self) -> None:
        """(Re)read the machine's in-memory state from the store (start, snapshot install)."""
        store = self.store
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
        self._overlay = overlay
        seq_before = self.seq
        paused_before = set(self.paused)
        results = []
        for command in commands:
            undo_point = overlay.savepoint(), self.counters.savepoint(), self.seq
            try:
                op = self._ops[command[0]]
                results.append(op(*command[1:]))
            except BaseMismatch:
                # Nothing of this entry may reach the store: drop the overlay and whatever
                # earlier commands of the entry changed in memory.
                self._overlay = None
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
        self._overlay = None
        return results, overlay.to_batch()

    # ------------------------------------------------------------------------- helpers

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _load_task(self, task_id: str) -> dict | None:
        raw = self._overlay.get(keys.task(task_id))
        return None if raw is None else jsonutil.loads(raw)

    def _unindex(self, task: dict) -> None:
        """Remove the task from the index its current status lives in.

        Each status has exactly one index: pending -> ready (R), scheduled and failed ->
        schedule (S), running -> lease (L), finished -> status (X, for listing and purge).
        One index per status keeps a transition at two key writes besides the record.
        """
        status = task["status"]
        ov = self._overlay
        if status == PENDING:
            ov.delete(keys.ready(task["queue"], task["priority"], task["_seq"]))
        elif status == RUNNING:
            ov.delete(keys.lease(task["_lease_ms"], task["id"]))
        elif status in (SCHEDULED, FAILED):
            ov.delete(keys.schedule(task["_run_ms"], task["_seq"]))
        else:
            ov.delete(keys.status(status, task["_changed_ms"], task["_seq"]))

    def _index(self, task: dict) -> None:
        status = task["status"]
        ov = self._overlay
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

    def _transition(self, task: dict, new_status: str, now: int, *, fresh: bool = False):
        """Move ``task`` to ``new_status``: indexes, counters, timestamps, record."""
        old_status = None if fresh else task["status"]
        if not fresh:
            self._unindex(task)
        task["status"] = new_status
        task["_seq"] = self._next_seq()
        task["_changed_ms"] = now
        task["updated_at"] = now / 1000.0
        self._index(task)
        if new_status in FINISHED:
            self.finished.add(task["id"])
        self.counters.move(task["queue"], old_status, new_status)
        self._overlay.put(keys.task(task["id"]), jsonutil.dumps(task))

    # ------------------------------------------------------------------------ commands

    def _submit(self, now: int, spec: dict, depth_limit: int):
        ov = self._overlay
        idem = spec.get("idempotency_key")
        if idem:
            existing_id = ov.get(keys.idempotency(idem))
            if existing_id is not None:
                return self._duplicate(existing_id.decode())
        task_id = spec["id"]
        if ov.get(keys.task(task_id)) is not None:
            return self._duplicate(task_id)
        queue = spec["queue"]
        if self.counters.waiting(queue) >= depth_limit:
            return Rejected(errors.QUEUEFULL,
                            f"queue {queue!r} holds {depth_limit} waiting tasks "
                            f"(broker.queue_depth_threshold)")
        run_at_ms = spec.get("run_at_ms")
        delayed = run_at_ms is not None and run_at_ms > now
        now_secs = now / 1000.0
        task = {
            "id": task_id, "type": spec["type"], "queue": queue,
            "payload": spec.get("payload"), "priority": spec["priority"],
            "max_retries": spec["max_retries"], "run_at": _secs(run_at_ms),
            "timeout_secs": spec.get("timeout_secs"),
            "retry_backoff_secs": spec["retry_backoff_secs"], "idempotency_key": idem,
            "status": None, "attempts": 0, "result": None, "error": None,
            "backtrace": None, "worker": None, "created_at": now_secs,
            "updated_at": now_secs, "started_at": None, "finished_at": None,
            "lease_expires_at": None,
            "_run_ms": run_at_ms if delayed else now, "_token": 0,
        }
        if idem:
            ov.put(keys.idempotency(idem), task_id.encode())
        self._transition(task, SCHEDULED if delayed else PENDING, now, fresh=True)
        self.counters.total("submitted")
        return public(task)

    def _duplicate(self, task_id: str):
        task = self._load_task(task_id)
        out = public(task)
        out["duplicate"] = True
        return out

    def _claim(self, now: int, worker_id: str, queues: list, count: int, lease_ms: int,
               nonce: int | None = None):
        """Lease up to ``count`` pending jobs to ``worker_id``, each under a new fencing token
        (broker/tokens.py) made of the sequence number its claim takes and the ``nonce`` the
        proposer drew. A command without a nonce was written before tokens had one: its
        tokens are the bare sequence number, as they were then (replays stay identical)."""
        ov = self._overlay
        jobs = []
        for queue in queues:
            if queue in self.paused:
                continue
            lower = keys.ready_prefix(queue)
            upper = keys.prefix_end(lower)
            while len(jobs) < count:
                key = ov.first(lower, upper)
                if key is None:
                    self.hints.exhausted(lower, upper)
                    break
                self.hints.consumed(key)
                task = self._load_task(ov.get(key).decode())
                task["attempts"] += 1
                task["worker"] = worker_id
                task["started_at"] = now / 1000.0
                task["_lease_ms"] = now + lease_ms
                task["lease_expires_at"] = (now + lease_ms) / 1000.0
                seq = self._next_seq()  # unique per claim: what makes the token fence
                task["_token"] = seq if nonce is None else tokens.mint(seq, nonce)
                self._transition(task, RUNNING, now)
                job = public(task)
                job["token"] = task["_token"]
                jobs.append(job)
            if len(jobs) >= count:
                break
        return jobs

    def _held(self, task_id: str, token, worker_id: str | None):
        """The running task leased to ``worker_id`` under ``token``, or the Rejected that
        explains why not. A wrong token and another worker's lease get the same answer, so
        the reply tells a guesser nothing. ``worker_id`` None: a command from before ACK
        and FAIL named their worker (the token alone decided then)."""
        task = self._load_task(task_id)
        if task is None:
            return Rejected(errors.NOTFOUND, f"no task {task_id!r}")
        if (task["status"] != RUNNING or task["_token"] != token
                or (worker_id is not None and task["worker"] != worker_id)):
            return Rejected(errors.LEASELOST,
                            f"task {task_id!r} is {task['status']} and not leased to this "
                            f"worker under token {token}")
        return task

    def _ack(self, now: int, task_id: str, token, result, worker_id: str | None = None):
        task = self._held(task_id, token, worker_id)
        if isinstance(task, Rejected):
            return self._repeat_of(task_id, token, worker_id, (COMPLETED,), task)
        task["result"] = result
        task["error"] = None
        task["finished_at"] = now / 1000.0
        task["lease_expires_at"] = None
        self._transition(task, COMPLETED, now)
        self.counters.total("completed")
        return "OK"

    def _repeat_of(self, task_id: str, token, worker_id: str | None, statuses: tuple,
                   rejection: Rejected):
        """A retried ACK/FAIL whose first copy got through (same token, same worker: the
        last lease was this one and it was settled by its holder) answers OK again."""
        task = self._load_task(task_id)
        if (task is not None and task["_token"] == token and token != 0
                and task["status"] in statuses
                and (worker_id is None or task["worker"] == worker_id)):
            return "OK"
        return rejection

    def _fail(self, now: int, task_id: str, token, error: str, backtrace, retry: bool,
              jitter: float, worker_id: str | None = None):
        task = self._held(task_id, token, worker_id)
        if isinstance(task, Rejected):
            return self._repeat_of(task_id, token, worker_id, (FAILED, DEAD, PENDING), task)
        task["error"] = error
        task["backtrace"] = backtrace
        task["lease_expires_at"] = None
        self.counters.total("failed")
        self._retry_or_bury(task, now, retry, jitter)
        return "OK"

    def _retry_or_bury(self, task: dict, now: int, retry: bool, jitter: float) -> None:
        if retry and task["attempts"] <= task["max_retries"]:
            base_ms = task["retry_backoff_secs"] * 1000.0
            delay = base_ms * (2 ** (task["attempts"] - 1)) * (0.5 + jitter)
            task["_run_ms"] = now + int(min(delay, MAX_BACKOFF_MS))
            task["run_at"] = task["_run_ms"] / 1000.0
            self._transition(task, FAILED, now)
            self.counters.total("retried")
        else:
            task["finished_at"] = now / 1000.0
            self._transition(task, DEAD, now)
            self.counters.total("dead")

    def _heartbeat(self, now: int, worker_id: str, held: list, lease_ms: int, running: int):
        ov = self._overlay
        worker = self._load_worker(worker_id)
        if worker is None:  # e.g. purged while partitioned: re-register silently
            worker = {"worker_id": worker_id, "state": "active", "first_seen": now / 1000.0}
        worker["last_seen"] = now / 1000.0
        worker["running"] = running
        ov.put(keys.worker(worker_id), jsonutil.dumps(worker))
        lost = []
        deadline = now + lease_ms
        for task_id, token in held:
            task = self._held(task_id, token, worker_id)
            if isinstance(task, Rejected):
                lost.append(task_id)
                continue
            ov.delete(keys.lease(task["_lease_ms"], task_id))
            task["_lease_ms"] = deadline
            task["lease_expires_at"] = deadline / 1000.0
            ov.put(keys.lease(deadline, task_id), str(token).encode())
            ov.put(keys.task(task_id), jsonutil.dumps(task))
        return {"state": worker["state"], "lost": lost}

    def _load_worker(self, worker_id: str) -> dict | None:
        raw = self._overlay.get(keys.worker(worker_id))
        return None if raw is None else jsonutil.loads(raw)

    def _hello(self, now: int, worker_id: str, info: dict):
        record = dict(info)
        record.update(worker_id=worker_id, state="active", first_seen=now / 1000.0,
                      last_seen=now / 1000.0, running=0)
        self._overlay.put(keys.worker(worker_id), jsonutil.dumps(record))
        return "OK"

    def _bye(self, now: int, worker_id: str):
        self._overlay.delete(keys.worker(worker_id))
        return "OK"

    def _worker_state(self, now: int, worker_id: str, state: str):
        worker = self._load_worker(worker_id)
        if worker is None:
            return Rejected(errors.NOTFOUND, f"no worker {worker_id!r}")
        worker["state"] = state
        self._overlay.put(keys.worker(worker_id), jsonutil.dumps(worker))
        return "OK"

    def _cancel(self, now: int, task_id: str):
        task = self._load_task(task_id)
        if task is None:
            return Rejected(errors.NOTFOUND, f"no task {task_id!r}")
        if task["status"] in FINISHED:
            return Rejected(errors.BADSTATE, f"task {task_id!r} is already {task['status']}")
        task["finished_at"] = now / 1000.0
        task["lease_expires_at"] = None
        task["_token"] = 0  # no later ACK/FAIL of any earlier lease is a repeat (_repeat_of)
        self._transition(task, CANCELLED, now)
        self.counters.total("cancelled")
        return public(task)

    def _requeue(self, now: int, task_id: str):
        task = self._load_task(task_id)
        if task is None:
            return Rejected(errors.NOTFOUND, f"no task {task_id!r}")
        if task["status"] not in (DEAD, CANCELLED):
            return Rejected(errors.BADSTATE,
                            f"task {task_id!r} is {task['status']}; only dead or cancelled "
                            "tasks can be requeued")
        task.update(attempts=0, error=None, backtrace=None, result=None, finished_at=None,
                    run_at=None, _run_ms=now)
        self._transition(task, PENDING, now)
        self.counters.total("requeued")
        return public(task)

    def _due(self, lower: bytes, upper: bytes, limit: int):
        """Yield (key, value) of the first ``limit`` live entries of an index range."""
        ov = self._overlay
        for _ in range(limit):
            key = ov.first(lower, upper)
            if key is None:
                self.hints.exhausted(lower, upper)
                return
            self.hints.consumed(key)
            yield key, ov.get(key)

    def _promote(self, now: int, limit: int):
        """Scheduled and retry-waiting tasks whose time has come become pending."""
        moved = 0
        for _key, task_id in self._due(keys.SCHEDULE, keys.schedule_until(now), limit):
            task = self._load_task(task_id.decode())
            self._transition(task, PENDING, now)
            moved += 1
        return moved

    def _expire(self, now: int, limit: int):
        """Leases past their deadline: the task goes back to its queue, or dies."""
        expired = 0
        for key, _token in self._due(keys.LEASE, keys.lease_until(now), limit):
            task = self._load_task(key[9:].decode())
            task["lease_expires_at"] = None
            task["_token"] = 0  # the lease ended unsettled: its holder's late FAIL is no repeat
            task["error"] = f"lease expired (worker {task['worker']} stopped heartbeating)"
            self.counters.total("expired")
            if task["attempts"] <= task["max_retries"]:
                task["_run_ms"] = now
                self._transition(task, PENDING, now)
            else:
                task["finished_at"] = now / 1000.0
                self._transition(task, DEAD, now)
                self.counters.total("dead")
            expired += 1
        return expired

    def _purge(self, now: int, cutoff_ms: int, limit: int):
        """Delete finished tasks whose last change is older than ``cutoff_ms``."""
        ov = self._overlay
        purged = 0
        for status in FINISHED:
            lower = keys.status_prefix(status)
            upper = keys.status_until(status, cutoff_ms)
            for key, task_id in list(self.store.scan(lower, upper, limit - purged)):
                if key in ov.deleted:
                    continue
                task = self._load_task(task_id.decode())
                ov.delete(key)
                ov.delete(keys.task(task["id"]))
                if task.get("idempotency_key"):
                    ov.delete(keys.idempotency(task["idempotency_key"]))
                self.counters.move(task["queue"], status, None)
                purged += 1
            if purged >= limit:
                break
        if purged:
            self.counters.total("purged", purged)
        return purged

    def _expire_workers(self, now: int, cutoff_ms: int):
        ov = self._overlay
        gone = []
        for key, raw in list(self.store.scan(keys.WORKER, keys.prefix_end(keys.WORKER), 10000)):
            current = ov.get(key)
            if current is None:
                continue
            worker = jsonutil.loads(current)
            if worker["last_seen"] * 1000 < cutoff_ms:
                ov.delete(key)
                gone.append(worker["worker_id"])
        return gone

    def _pause(self, now: int, queue: str):
        self.paused.add(queue)
        return "OK"

    def _restored(self, now: int, identity: dict):
        """A Raft leader restored from a backup records which one (first entry it appends).

        Every node restored from that same archive holds that identity in ``Mrestored``: it
        marks it logged (so no leader proposes it again), byte-identically everywhere. Any
        other node (emptied, restored from another backup) would apply this log to a
        different base: BaseMismatch stops it before it writes anything."""
        if restore_key(identity) != restore_key(self.restored):
            raise BaseMismatch(identity, self.restored)
        logged = {"backup_sha256": identity.get("backup_sha256"),
                  "backup_applied_index": identity.get("backup_applied_index")}
        self._overlay.put(keys.META_RESTORE_LOGGED, jsonutil.dumps(logged))
        self.restore_logged = logged
        return "OK"

    def _resume(self, now: int, queue: str):
        self.paused.discard(queue)
        self.woken.add(queue)
        return "OK"
