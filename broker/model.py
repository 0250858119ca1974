"""What the state machine's commands share: task states, the error result, the public view.

Kept apart from broker/machine.py so that the command families (broker/commands/) and the
machine can both import it without importing each other.
"""

from __future__ import annotations

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
# ``_wf``: the workflow a task belongs to and its place in it (broker/commands/workflows.py).
INTERNAL_FIELDS = ("_seq", "_changed_ms", "_run_ms", "_lease_ms", "_token", "_wf")


def public(task: dict) -> dict:
    """The task object clients see: the record without the machine's ``_`` fields."""
    out = task.copy()  # a C-level copy plus six pops beats a comprehension over ~25 keys
    for name in INTERNAL_FIELDS:
        out.pop(name, None)
    return out


def secs(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000.0


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
