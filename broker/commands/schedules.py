"""Schedules: periodic tasks that fire exactly once per slot, inside the state machine.

A schedule (docs/schedules-limits-results.md, "Schedules") is a cron expression in an IANA
zone (broker/cron.py) or a fixed interval, plus a task template. Its *slots* are the
instants it should fire at. The leader's timer (broker/schedule_timer.py) proposes
``["fire_schedules", now, limit, depth_limit]``; apply finds the due schedules through the
``N`` index (next fire ms + id: a range read from the front, never a scan of all schedules),
enqueues one task per slot and moves the schedule's next fire time, all in one WriteBatch.

Exactly once per slot: the task id is ``sched:<schedule id>:<slot ms>``, and the record's
next fire time moves past the slot in the same batch that enqueues it. A replayed entry is
skipped by the machine, a retried or duplicated proposal finds the slot already past (and
the task id taken), a new leader starts from the replicated record. Time comes only from
the command's ``now``; jitter is derived from (schedule id, slot), not drawn.

Misfires. A slot is *missed* when it is more than ``misfire_grace_secs`` older than the
firing's ``now`` (the cluster had no leader, or was down). The policy decides:

- ``skip``: missed slots enqueue nothing; the schedule goes on with the first slot that is
  not missed;
- ``once``: one task for the first missed slot stands for all of them;
- ``all``: every missed slot is enqueued, oldest first, up to ``misfire_limit`` per catch-up;
  slots beyond that bound are skipped.

Each catch-up that dropped slots counts one in ``misfires``. A paused schedule has no due
entry; resuming starts from the first slot after the resume (a pause is not a misfire).

Records: ``P`` + id -> the definition and its state (JSON); ``N`` + next fire ms + id -> b"".
``Mschedules`` counts them (total, paused) so metrics never scan.
"""

from __future__ import annotations

import functools
import hashlib

from broker import cron, keys
from broker.commands import tasks
from broker.model import Rejected
from taskqueue import errors, jsonutil

MAX_SCHEDULES = 100_000
MAX_FIRE = 10_000  # tasks one fire_schedules may enqueue (the command's own limit is lower)
DEFINITION = ("id", "cron", "tz", "interval_secs", "task", "paused", "misfire",
              "misfire_limit", "misfire_grace_secs", "jitter_secs", "start_at", "end_at")


@functools.lru_cache(maxsize=4096)
def _cron(expression: str) -> cron.Cron:
    return cron.parse(expression)


def task_id(schedule_id: str, slot_ms: int) -> str:
    return f"sched:{schedule_id}:{slot_ms}"


def next_slot(record: dict, after_ms: int) -> int | None:
    """The schedule's first slot strictly after ``after_ms`` within start/end, or None."""
    start_ms = None if record["start_at"] is None else int(record["start_at"] * 1000)
    if start_ms is not None and after_ms < start_ms - 1:
        after_ms = start_ms - 1
    if record["cron"] is not None:
        at = cron.next_fire(_cron(record["cron"]), cron.zone(record["tz"]), after_ms // 1000)
        slot = None if at is None else at * 1000
    else:
        step = record["interval_secs"] * 1000
        anchor = record["anchor_ms"]
        slot = anchor if after_ms < anchor else anchor + ((after_ms - anchor) // step + 1) * step
    if slot is not None and record["end_at"] is not None and slot > record["end_at"] * 1000:
        return None
    return slot


def _jitter_ms(record: dict, slot_ms: int) -> int:
    """A delay in [0, jitter] the same on every replica: a hash, not a random draw."""
    span = int(record["jitter_secs"] * 1000)
    if span <= 0:
        return 0
    digest = hashlib.sha256(f"{record['id']}\x00{slot_ms}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (span + 1)


# ------------------------------------------------------------------------ record helpers

def _load(m, schedule_id: str) -> dict | None:
    return m.load_json(keys.periodic(schedule_id))


def _save(m, record: dict, old_next: int | None) -> None:
    """Write the record and keep its due-index entry where its next fire time is."""
    ov = m.overlay
    new_next = None if record["paused"] else record["next_fire_ms"]
    if old_next != new_next:
        if old_next is not None:
            ov.delete(keys.periodic_due(old_next, record["id"]))
        if new_next is not None:
            ov.put(keys.periodic_due(new_next, record["id"]), b"")
    ov.put(keys.periodic(record["id"]), jsonutil.dumps(record))


def _count(m, total: int = 0, paused: int = 0) -> None:
    counts = m.load_json(keys.META_SCHEDULES) or {"total": 0, "paused": 0}
    counts["total"] += total
    counts["paused"] += paused
    m.overlay.put(keys.META_SCHEDULES, jsonutil.dumps(counts))


def _due_key(record: dict) -> int | None:
    return None if record["paused"] else record["next_fire_ms"]


# ---------------------------------------------------------------------------- commands

def put(m, now: int, spec: dict, mode: str):
    """Create (``mode`` "create"), replace (``update``) or either (``upsert``) a schedule.

    ``spec`` is normalised (broker/schedule_spec.py). A replaced schedule keeps its history
    (last slot, counts) and starts again from the first slot after ``now``."""
    schedule_id = spec["id"]
    try:
        if spec["cron"] is not None:
            _cron(spec["cron"])
        cron.zone(spec["tz"])
    except cron.CronError as exc:
        return Rejected(errors.BADREQ, str(exc))
    current = _load(m, schedule_id)
    if mode == "create" and current is not None:
        return Rejected(errors.BADSTATE, f"schedule {schedule_id!r} exists (update it)")
    if mode == "update" and current is None:
        return Rejected(errors.NOTFOUND, f"no schedule {schedule_id!r}")
    if current is None:
        counts = m.load_json(keys.META_SCHEDULES) or {"total": 0}
        if counts["total"] >= MAX_SCHEDULES:
            return Rejected(errors.BADREQ, f"at most {MAX_SCHEDULES} schedules")
        record = {"created_at": now / 1000.0, "last_slot_ms": None, "last_fired_at": None,
                  "last_task_id": None, "fired": 0, "misfires": 0, "errors": 0,
                  "last_error": None, "next_fire_ms": None}
        old_next = None
        _count(m, total=1, paused=1 if spec["paused"] else 0)
    else:
        record = current
        old_next = _due_key(current)
        if current["paused"] != spec["paused"]:
            _count(m, paused=1 if spec["paused"] else -1)
    record.update({name: spec[name] for name in DEFINITION})
    record["updated_at"] = now / 1000.0
    # An interval counts from its start, or from the moment it was (re)defined.
    record["anchor_ms"] = (int(spec["start_at"] * 1000) if spec["start_at"] is not None
                           else now)
    record["next_fire_ms"] = next_slot(record, now)
    _save(m, record, old_next)
    return view(record)


def set_paused(m, now: int, schedule_id: str, paused: bool):
    record = _load(m, schedule_id)
    if record is None:
        return Rejected(errors.NOTFOUND, f"no schedule {schedule_id!r}")
    if record["paused"] == paused:
        return view(record)
    old_next = _due_key(record)
    record["paused"] = paused
    record["updated_at"] = now / 1000.0
    if not paused:  # slots that passed while paused are not missed: they were not wanted
        record["next_fire_ms"] = next_slot(record, now)
    _count(m, paused=1 if paused else -1)
    _save(m, record, old_next)
    return view(record)


def delete(m, now: int, schedule_id: str):
    """1 if the schedule existed, 0 if not. Tasks it enqueued stay."""
    record = _load(m, schedule_id)
    if record is None:
        return 0
    old_next = _due_key(record)
    if old_next is not None:
        m.overlay.delete(keys.periodic_due(old_next, schedule_id))
    m.overlay.delete(keys.periodic(schedule_id))
    _count(m, total=-1, paused=-1 if record["paused"] else 0)
    return 1


def run_now(m, now: int, schedule_id: str, depth_limit: int):
    """Enqueue the template once, now, outside the slots (id ``sched:<id>:run:<now>``: a
    retried proposal of the same request is a duplicate, a new request a new task)."""
    record = _load(m, schedule_id)
    if record is None:
        return Rejected(errors.NOTFOUND, f"no schedule {schedule_id!r}")
    spec = dict(record["task"], id=f"sched:{schedule_id}:run:{now}", idempotency_key=None,
                run_at_ms=None)
    return tasks.submit(m, now, spec, depth_limit)


def fire(m, now: int, limit: int, depth_limit: int):
    """Enqueue the slots of schedules due at ``now``, at most about ``limit`` tasks (a
    catch-up under ``all`` is never split). Returns {"fired", "schedules", "more"}."""
    ov = m.overlay
    budget = max(1, min(int(limit), MAX_FIRE))
    lower, upper = keys.PERIODIC_DUE, keys.periodic_due_until(now)
    fired = visited = 0
    more = False
    while True:
        key = ov.first(m.hints.start(lower), upper)
        if key is None:
            m.hints.exhausted(lower, upper)
            break
        if fired >= budget:
            more = True
            break
        record = _load(m, key[9:].decode())
        old_next = record["next_fire_ms"]
        fired += _fire_one(m, now, record, budget - fired, depth_limit)
        visited += 1
        if record["next_fire_ms"] is not None and record["next_fire_ms"] <= now:
            _save(m, record, old_next)  # out of budget mid-schedule: the rest is next time
            more = True
            break
        m.hints.consumed(key)  # everything up to it fired; its new entry is after now
        _save(m, record, old_next)
    return {"fired": fired, "schedules": visited, "more": more}


def _fire_one(m, now: int, record: dict, budget: int, depth_limit: int) -> int:
    slot = record["next_fire_ms"]
    cutoff = now - record["misfire_grace_secs"] * 1000  # slots before it are missed
    fired = 0
    if slot < cutoff:
        policy = record["misfire"]
        if policy == "all":
            while slot is not None and slot < cutoff and fired < record["misfire_limit"]:
                _enqueue(m, now, record, slot, depth_limit)
                fired += 1
                slot = next_slot(record, slot)
        elif policy == "once":
            _enqueue(m, now, record, slot, depth_limit)
            fired += 1
            slot = next_slot(record, slot)
        if slot is not None and slot < cutoff:
            record["misfires"] += 1
            slot = next_slot(record, cutoff - 1)
    while slot is not None and slot <= now and fired < budget:
        _enqueue(m, now, record, slot, depth_limit)
        fired += 1
        slot = next_slot(record, slot)
    record["next_fire_ms"] = slot
    return fired


def _enqueue(m, now: int, record: dict, slot: int, depth_limit: int) -> None:
    tid = task_id(record["id"], slot)
    delay = _jitter_ms(record, slot)
    spec = dict(record["task"], id=tid, idempotency_key=None,
                run_at_ms=slot + delay if delay else None)
    result = tasks.submit(m, now, spec, depth_limit)
    record["last_slot_ms"] = slot
    if isinstance(result, Rejected):  # the slot is spent either way: a full queue skips it
        record["errors"] += 1
        record["last_error"] = f"slot {slot}: {result.code} {result.message}"
        return
    record["fired"] += 1
    record["last_fired_at"] = now / 1000.0
    record["last_task_id"] = tid


def reconcile(m, now: int, fingerprint: str, declared: list):
    """The configuration's ``schedules:`` list, proposed by a leader whose file differs from
    the one last applied: upsert every declared schedule whose definition differs. Returns
    the number changed. Schedules created at runtime are left alone."""
    if m.load_json(keys.META_SCHEDULES_CONFIG) == fingerprint:
        return 0
    changed = 0
    for spec in declared:
        current = _load(m, spec["id"])
        if current is not None and {f: current.get(f) for f in DEFINITION} == spec:
            continue
        result = put(m, now, spec, "upsert")
        if isinstance(result, Rejected):
            return Rejected(result.code, f"schedules.list {spec['id']}: {result.message}")
        changed += 1
    m.overlay.put(keys.META_SCHEDULES_CONFIG, jsonutil.dumps(fingerprint))
    return changed


# ---------------------------------------------------------------------------- read side

def view(record: dict) -> dict:
    """A schedule as clients see it: the definition, then its state (seconds, not ms)."""
    out = {name: record[name] for name in DEFINITION}
    nxt = None if record["paused"] else record["next_fire_ms"]
    out.update(
        state="paused" if record["paused"] else ("ended" if nxt is None else "active"),
        next_fire_at=None if nxt is None else nxt / 1000.0,
        last_slot_at=None if record["last_slot_ms"] is None else record["last_slot_ms"] / 1000.0,
        last_fired_at=record["last_fired_at"], last_task_id=record["last_task_id"],
        fired=record["fired"], misfires=record["misfires"], errors=record["errors"],
        last_error=record["last_error"], created_at=record["created_at"],
        updated_at=record["updated_at"])
    return out


def read(store, schedule_id: str) -> dict | None:
    raw = store.get(keys.periodic(schedule_id))
    return None if raw is None else view(jsonutil.loads(raw))


def read_page(store, after: str | None, limit: int) -> list[dict]:
    """Up to ``limit`` schedules in id order, after the id ``after`` (a cursor)."""
    lower = keys.PERIODIC if after is None else keys.periodic(after) + b"\x00"
    return [view(jsonutil.loads(raw)) for _, raw in
            store.scan(lower, keys.prefix_end(keys.PERIODIC), limit)]


def counts(store) -> dict:
    return store.get_json(keys.META_SCHEDULES) or {"total": 0, "paused": 0}


COMMANDS = {
    "schedule_put": put,
    "schedule_pause": set_paused,
    "schedule_delete": delete,
    "schedule_run": run_now,
    "fire_schedules": fire,
    "schedules_reconcile": reconcile,
}


METRICS_MAX_SCHEDULES = 1000  # per-schedule series only up to this many schedules


def metrics(store) -> dict:
    """What /metrics reports: counts always; each schedule's last fired slot only while
    there are at most METRICS_MAX_SCHEDULES (a bounded number of series, and of reads)."""
    found = counts(store)
    out = {"total": found["total"], "paused": found["paused"], "last_slot": None}
    if found["total"] <= METRICS_MAX_SCHEDULES:
        out["last_slot"] = {
            r["id"]: r["last_slot_ms"] / 1000.0 for _, raw in store.scan(
                keys.PERIODIC, keys.prefix_end(keys.PERIODIC), METRICS_MAX_SCHEDULES)
            if (r := jsonutil.loads(raw))["last_slot_ms"] is not None}
    return out
