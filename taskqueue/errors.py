"""Error codes of the protocol (docs/protocol.md, "Errors") and the exceptions clients raise."""

from __future__ import annotations

BADREQ = "BADREQ"
BADVERSION = "BADVERSION"
NOAUTH = "NOAUTH"
NOPERM = "NOPERM"
NOTFOUND = "NOTFOUND"
BADSTATE = "BADSTATE"
LEASELOST = "LEASELOST"
QUEUEFULL = "QUEUEFULL"
TOOLARGE = "TOOLARGE"
MAXCONN = "MAXCONN"
NOTLEADER = "NOTLEADER"
UNAVAILABLE = "UNAVAILABLE"
INTERNAL = "INTERNAL"

# Codes after which a write's outcome is unknown: retry it idempotently.
RETRYABLE = frozenset({UNAVAILABLE, NOTLEADER, MAXCONN})


class TaskQueueError(Exception):
    """Base class of every error this library raises."""


class BrokerError(TaskQueueError):
    """The broker answered with an error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE


class ConnectionLost(TaskQueueError):
    """The connection failed; a write in flight has an unknown outcome."""


class TaskFailed(TaskQueueError):
    """A waited-for task ended ``dead`` or ``cancelled``; ``task`` is its final state."""

    def __init__(self, task: dict):
        super().__init__(f"task {task.get('id')} is {task.get('status')}: {task.get('error')}")
        self.task = task
