"""Per-queue counts by status and lifetime totals: the machine's O(1) aggregates."""

from __future__ import annotations

from broker.model import FAILED, PENDING, SCHEDULED, STATUSES, TOTALS
from taskqueue import jsonutil


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
