"""Housekeeping the sweeper proposes: due tasks become pending, expired leases end,
finished tasks past retention are purged. Each takes a limit: one command stays small.
"""

from __future__ import annotations

from broker import keys, listindex
from broker.model import DEAD, FINISHED, PENDING


def promote(m, now: int, limit: int):
    """Scheduled and retry-waiting tasks whose time has come become pending."""
    moved = 0
    for _key, task_id in m.due(keys.SCHEDULE, keys.schedule_until(now), limit):
        task = m.load_task(task_id.decode())
        m.transition(task, PENDING, now)
        moved += 1
    return moved


def expire(m, now: int, limit: int):
    """Leases past their deadline: the task goes back to its queue, or dies."""
    expired = 0
    for key, _token in m.due(keys.LEASE, keys.lease_until(now), limit):
        task = m.load_task(key[9:].decode())
        task["lease_expires_at"] = None
        task["_token"] = 0  # the lease ended unsettled: its holder's late FAIL is no repeat
        task["error"] = f"lease expired (worker {task['worker']} stopped heartbeating)"
        m.counters.total("expired")
        if task["attempts"] <= task["max_retries"]:
            task["_run_ms"] = now
            m.transition(task, PENDING, now)
        else:
            task["finished_at"] = now / 1000.0
            m.transition(task, DEAD, now)
            m.counters.total("dead")
        expired += 1
    return expired


def purge(m, now: int, cutoff_ms: int, limit: int):
    """Delete finished tasks whose last change is older than ``cutoff_ms``."""
    ov = m.overlay
    purged = 0
    for status in FINISHED:
        lower = keys.status_prefix(status)
        upper = keys.status_until(status, cutoff_ms)
        for key, task_id in list(m.store.scan(lower, upper, limit - purged)):
            if key in ov.deleted:
                continue
            task = m.load_task(task_id.decode())
            ov.delete(key)
            ov.delete(keys.task(task["id"]))
            listindex.remove(ov, task)
            if task.get("idempotency_key"):
                ov.delete(keys.idempotency(task["idempotency_key"]))
            m.counters.move(task["queue"], status, None)
            purged += 1
        if purged >= limit:
            break
    if purged:
        m.counters.total("purged", purged)
    return purged


COMMANDS = {
    "promote": promote,
    "expire": expire,
    "purge": purge,
}
