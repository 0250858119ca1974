"""Workers: HELLO registers, HEARTBEAT extends leases and reports, BYE and expiry forget.
"""

from __future__ import annotations

from broker import keys
from broker.commands.tasks import held
from broker.model import Rejected
from taskqueue import errors, jsonutil


def heartbeat(m, now: int, worker_id: str, held_leases: list, lease_ms: int,
              running: int):
    ov = m.overlay
    worker = load_worker(m, worker_id)
    if worker is None:  # e.g. purged while partitioned: re-register silently
        worker = {"worker_id": worker_id, "state": "active", "first_seen": now / 1000.0}
    worker["last_seen"] = now / 1000.0
    worker["running"] = running
    ov.put(keys.worker(worker_id), jsonutil.dumps(worker))
    lost = []
    deadline = now + lease_ms
    for task_id, token in held_leases:
        task = held(m, task_id, token, worker_id)
        if isinstance(task, Rejected):
            lost.append(task_id)
            continue
        ov.delete(keys.lease(task["_lease_ms"], task_id))
        task["_lease_ms"] = deadline
        task["lease_expires_at"] = deadline / 1000.0
        ov.put(keys.lease(deadline, task_id), str(token).encode())
        ov.put(keys.task(task_id), jsonutil.dumps(task))
    return {"state": worker["state"], "lost": lost}


def load_worker(m, worker_id: str) -> dict | None:
    raw = m.overlay.get(keys.worker(worker_id))
    return None if raw is None else jsonutil.loads(raw)


def hello(m, now: int, worker_id: str, info: dict):
    record = dict(info)
    record.update(worker_id=worker_id, state="active", first_seen=now / 1000.0,
                  last_seen=now / 1000.0, running=0)
    m.overlay.put(keys.worker(worker_id), jsonutil.dumps(record))
    return "OK"


def bye(m, now: int, worker_id: str):
    m.overlay.delete(keys.worker(worker_id))
    return "OK"


def worker_state(m, now: int, worker_id: str, state: str):
    worker = load_worker(m, worker_id)
    if worker is None:
        return Rejected(errors.NOTFOUND, f"no worker {worker_id!r}")
    worker["state"] = state
    m.overlay.put(keys.worker(worker_id), jsonutil.dumps(worker))
    return "OK"


def expire_workers(m, now: int, cutoff_ms: int):
    ov = m.overlay
    gone = []
    for key, raw in list(m.store.scan(keys.WORKER, keys.prefix_end(keys.WORKER), 10000)):
        current = ov.get(key)
        if current is None:
            continue
        worker = jsonutil.loads(current)
        if worker["last_seen"] * 1000 < cutoff_ms:
            ov.delete(key)
            gone.append(worker["worker_id"])
    return gone


COMMANDS = {
    "heartbeat": heartbeat,
    "hello": hello,
    "bye": bye,
    "worker_state": worker_state,
    "expire_workers": expire_workers,
}
