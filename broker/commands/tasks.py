"""Tasks and leases: submit, claim (FETCH), ACK, FAIL, cancel, requeue.

A lease is fenced by a token (broker/tokens.py) and by the worker it was given to: only
that worker, with that token, settles it (docs/protocol.md, "Leases and fencing").
"""

from __future__ import annotations

from broker import keys, listindex, tokens
from broker.commands import limits
from broker.model import (
    CANCELLED, COMPLETED, DEAD, FAILED, FINISHED, MAX_BACKOFF_MS, PENDING, RUNNING, SCHEDULED,
    Rejected, public, secs)
from taskqueue import errors


def submit(m, now: int, spec: dict, depth_limit: int, *, workflow: dict | None = None):
    """``workflow``: the hidden reference (``_wf``) of a task a workflow submits
    (broker/commands/workflows.py); never part of a client's command."""
    ov = m.overlay
    idem = spec.get("idempotency_key")
    if idem:
        existing_id = ov.get(keys.idempotency(idem))
        if existing_id is not None:
            return duplicate(m, existing_id.decode())
    task_id = spec["id"]
    if ov.get(keys.task(task_id)) is not None:
        return duplicate(m, task_id)
    queue = spec["queue"]
    if m.counters.waiting(queue) >= depth_limit:
        return Rejected(errors.QUEUEFULL,
                        f"queue {queue!r} holds {depth_limit} waiting tasks "
                        f"(broker.queue_depth_threshold)")
    run_at_ms = spec.get("run_at_ms")
    delayed = run_at_ms is not None and run_at_ms > now
    now_secs = now / 1000.0
    task = {
        "id": task_id, "type": spec["type"], "queue": queue,
        "payload": spec.get("payload"), "priority": spec["priority"],
        "max_retries": spec["max_retries"], "run_at": secs(run_at_ms),
        "timeout_secs": spec.get("timeout_secs"),
        "retry_backoff_secs": spec["retry_backoff_secs"], "idempotency_key": idem,
        "status": None, "attempts": 0, "result": None, "error": None,
        "backtrace": None, "worker": None, "created_at": now_secs,
        "updated_at": now_secs, "started_at": None, "finished_at": None,
        "lease_expires_at": None,
        "_run_ms": run_at_ms if delayed else now, "_token": 0,
    }
    if workflow is not None:
        task["_wf"] = workflow
    if idem:
        ov.put(keys.idempotency(idem), task_id.encode())
    m.transition(task, SCHEDULED if delayed else PENDING, now, fresh=True)
    listindex.add(ov, task)
    m.counters.total("submitted")
    return public(task)


def duplicate(m, task_id: str):
    task = m.load_task(task_id)
    out = public(task)
    out["duplicate"] = True
    return out


def claim(m, now: int, worker_id: str, queues: list, count: int, lease_ms: int,
          nonce: int | None = None):
    """Lease up to ``count`` pending jobs to ``worker_id``, each under a new fencing token
    (broker/tokens.py) made of the sequence number its claim takes and the ``nonce`` the
    proposer drew. A command without a nonce was written before tokens had one: its
    tokens are the bare sequence number, as they were then (replays stay identical)."""
    ov = m.overlay
    jobs = []
    for queue in queues:
        if queue in m.paused:
            continue
        wanted = count
        gate = m.limits.get(queue)  # a rate/concurrency limit (broker/commands/limits.py)
        if gate is not None:
            room, bucket = limits.admit(m, gate, queue, count - len(jobs), now)
            wanted = len(jobs) + room
            before = len(jobs)
        lower = keys.ready_prefix(queue)
        upper = keys.prefix_end(lower)
        while len(jobs) < wanted:
            key = ov.first(lower, upper)
            if key is None:
                m.hints.exhausted(lower, upper)
                break
            m.hints.consumed(key)
            task = m.load_task(ov.get(key).decode())
            task["attempts"] += 1
            task["worker"] = worker_id
            task["started_at"] = now / 1000.0
            task["_lease_ms"] = now + lease_ms
            task["lease_expires_at"] = (now + lease_ms) / 1000.0
            seq = m.next_seq()  # unique per claim: what makes the token fence
            task["_token"] = seq if nonce is None else tokens.mint(seq, nonce)
            m.transition(task, RUNNING, now)
            job = public(task)
            job["token"] = task["_token"]
            jobs.append(job)
        if gate is not None:
            limits.spent(m, gate, queue, bucket, len(jobs) - before)
        if len(jobs) >= count:
            break
    return jobs


def held(m, task_id: str, token, worker_id: str | None):
    """The running task leased to ``worker_id`` under ``token``, or the Rejected that
    explains why not. A wrong token and another worker's lease get the same answer, so
    the reply tells a guesser nothing. ``worker_id`` None: a command from before ACK
    and FAIL named their worker (the token alone decided then)."""
    task = m.load_task(task_id)
    if task is None:
        return Rejected(errors.NOTFOUND, f"no task {task_id!r}")
    if (task["status"] != RUNNING or task["_token"] != token
            or (worker_id is not None and task["worker"] != worker_id)):
        return Rejected(errors.LEASELOST,
                        f"task {task_id!r} is {task['status']} and not leased to this "
                        f"worker under token {token}")
    return task


def ack(m, now: int, task_id: str, token, result, worker_id: str | None = None):
    task = held(m, task_id, token, worker_id)
    if isinstance(task, Rejected):
        return repeat_of(m, task_id, token, worker_id, (COMPLETED,), task)
    task["result"] = result
    task["error"] = None
    task["finished_at"] = now / 1000.0
    task["lease_expires_at"] = None
    m.transition(task, COMPLETED, now)
    m.counters.total("completed")
    return "OK"


def repeat_of(m, task_id: str, token, worker_id: str | None, statuses: tuple,
              rejection: Rejected):
    """A retried ACK/FAIL whose first copy got through (same token, same worker: the
    last lease was this one and it was settled by its holder) answers OK again."""
    task = m.load_task(task_id)
    if (task is not None and task["_token"] == token and token != 0
            and task["status"] in statuses
            and (worker_id is None or task["worker"] == worker_id)):
        return "OK"
    return rejection


def fail(m, now: int, task_id: str, token, error: str, backtrace, retry: bool,
         jitter: float, worker_id: str | None = None):
    task = held(m, task_id, token, worker_id)
    if isinstance(task, Rejected):
        return repeat_of(m, task_id, token, worker_id, (FAILED, DEAD, PENDING), task)
    task["error"] = error
    task["backtrace"] = backtrace
    task["lease_expires_at"] = None
    m.counters.total("failed")
    retry_or_bury(m, task, now, retry, jitter)
    return "OK"


def retry_or_bury(m, task: dict, now: int, retry: bool, jitter: float) -> None:
    if retry and task["attempts"] <= task["max_retries"]:
        base_ms = task["retry_backoff_secs"] * 1000.0
        delay = base_ms * (2 ** (task["attempts"] - 1)) * (0.5 + jitter)
        task["_run_ms"] = now + int(min(delay, MAX_BACKOFF_MS))
        task["run_at"] = task["_run_ms"] / 1000.0
        m.transition(task, FAILED, now)
        m.counters.total("retried")
    else:
        task["finished_at"] = now / 1000.0
        m.transition(task, DEAD, now)
        m.counters.total("dead")


def cancel(m, now: int, task_id: str):
    task = m.load_task(task_id)
    if task is None:
        return Rejected(errors.NOTFOUND, f"no task {task_id!r}")
    if task["status"] in FINISHED:
        return Rejected(errors.BADSTATE, f"task {task_id!r} is already {task['status']}")
    task["finished_at"] = now / 1000.0
    task["lease_expires_at"] = None
    task["_token"] = 0  # no later ACK/FAIL of any earlier lease is a repeat (_repeat_of)
    m.transition(task, CANCELLED, now)
    m.counters.total("cancelled")
    return public(task)


def requeue(m, now: int, task_id: str):
    task = m.load_task(task_id)
    if task is None:
        return Rejected(errors.NOTFOUND, f"no task {task_id!r}")
    if task["status"] not in (DEAD, CANCELLED):
        return Rejected(errors.BADSTATE,
                        f"task {task_id!r} is {task['status']}; only dead or cancelled "
                        "tasks can be requeued")
    task.update(attempts=0, error=None, backtrace=None, result=None, finished_at=None,
                run_at=None, _run_ms=now)
    m.transition(task, PENDING, now)
    m.counters.total("requeued")
    return public(task)


COMMANDS = {
    "submit": submit,
    "claim": claim,
    "ack": ack,
    "fail": fail,
    "cancel": cancel,
    "requeue": requeue,
}
