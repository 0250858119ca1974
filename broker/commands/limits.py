"""Rate and concurrency limits per queue, enforced where claim (FETCH) hands out leases.

A queue's limit has up to two parts (docs/schedules-limits-results.md, "Rate and
concurrency limits"):

- ``rate`` (tasks started per second) with ``burst``: a token bucket. A claim spends one
  token per task it hands out; tokens refill at ``rate`` per second up to ``burst``.
- ``concurrency``: at most this many of the queue's tasks running at once. The running
  count is the machine's own per-queue counter (broker/counters.py), so a lease that is
  ACKed, FAILed, expired or cancelled gives its slot back in the same entry that ends it.

Both are cluster-wide because they live in the replicated state machine: the bucket is a
record in RocksDB, written in the claim's WriteBatch, and refilled from the command's
``now`` (the proposer's clock), never from a clock read in apply. Arithmetic is integer
(micro-tokens), so every replica computes the same bucket byte for byte.

Cost for a queue without a limit: one dict lookup in claim (``m.limits.get(queue)``) and,
in every transition out of RUNNING, one more; nothing is read from RocksDB.

Records: ``Q`` + queue name -> JSON ``{"queue", "rate", "burst", "concurrency", "tokens_u",
"refill_ms", "throttled_rate", "throttled_concurrency"}``. The machine keeps the limit part
in memory (``m.limits``: queue -> :class:`Gate`), reloaded from the records by
:func:`on_load`; the bucket state is read from the entry's overlay at each claim, so a
command rolled back takes its bucket changes with it.
"""

from __future__ import annotations

import math

from broker import keys
from broker.model import PENDING, RUNNING, Rejected
from taskqueue import errors, jsonutil

MICRO = 1_000_000  # one token, in the bucket's integer unit
MAX_RATE = 1_000_000.0  # tasks per second
MIN_RATE = 0.001
MAX_BURST = 1_000_000
MAX_CONCURRENCY = 1_000_000
MAX_LIMITS = 10_000  # queues with a limit: bounds the record scan and the memory
SPEC_FIELDS = ("rate", "burst", "concurrency")


class Gate:
    """A queue's limit as apply uses it: integers only."""

    __slots__ = ("rate_u_per_ms", "capacity_u", "concurrency")

    def __init__(self, record: dict):
        rate = record.get("rate")
        # rate tasks/s = rate * 1000 micro-tokens per millisecond
        self.rate_u_per_ms = None if rate is None else max(1, round(rate * 1000))
        self.capacity_u = None if rate is None else record["burst"] * MICRO
        self.concurrency = record.get("concurrency")


def normalise_spec(spec) -> dict:
    """``{"rate", "burst", "concurrency"}`` checked and completed, or ValueError naming the
    field. ``burst`` defaults to one second's worth of ``rate`` (at least 1)."""
    if not isinstance(spec, dict):
        raise ValueError("limit: expected an object with rate, burst and/or concurrency")
    unknown = sorted(set(spec) - set(SPEC_FIELDS) - {"queue"})
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field (known: {', '.join(SPEC_FIELDS)})")
    rate = spec.get("rate")
    burst = spec.get("burst")
    concurrency = spec.get("concurrency")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (
                MIN_RATE <= rate <= MAX_RATE) or not math.isfinite(rate):
            raise ValueError(f"rate: expected tasks per second, {MIN_RATE:g}-{MAX_RATE:g}")
        rate = float(rate)
    if burst is not None:
        if rate is None:
            raise ValueError("burst: only with a rate")
        if isinstance(burst, bool) or not isinstance(burst, int) or not (
                1 <= burst <= MAX_BURST):
            raise ValueError(f"burst: expected an integer 1-{MAX_BURST}")
    elif rate is not None:
        burst = max(1, math.ceil(rate))
        burst = min(burst, MAX_BURST)
    if concurrency is not None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not (
                1 <= concurrency <= MAX_CONCURRENCY):
            raise ValueError(f"concurrency: expected an integer 1-{MAX_CONCURRENCY}")
    if rate is None and concurrency is None:
        raise ValueError("limit: give a rate, a concurrency or both (LIMIT-CLEAR removes one)")
    return {"rate": rate, "burst": burst, "concurrency": concurrency}


# ------------------------------------------------------------------------- the bucket

def _refill(record: dict, gate: Gate, now: int) -> None:
    """Tokens earned since the last refill. A ``now`` earlier than the last refill (a new
    leader whose clock is behind) earns nothing and does not move the refill time back."""
    if gate.rate_u_per_ms is None:
        return
    elapsed = now - record["refill_ms"]
    if elapsed > 0:
        record["tokens_u"] = min(gate.capacity_u,
                                 record["tokens_u"] + elapsed * gate.rate_u_per_ms)
        record["refill_ms"] = now


def admit(m, gate: Gate, queue: str, wanted: int, now: int):
    """How many of ``wanted`` tasks claim may hand out of ``queue`` now, and the record to
    pass to :func:`spent` (None when nothing needs writing)."""
    room = wanted
    record = None
    throttled = None
    if gate.concurrency is not None:
        counts = m.counters.queues.get(queue)
        running = counts[RUNNING] if counts else 0
        headroom = gate.concurrency - running
        if headroom < room:
            room = max(0, headroom)
            throttled = "throttled_concurrency"
    if gate.rate_u_per_ms is not None:
        record = m.load_json(keys.limit(queue))
        _refill(record, gate, now)
        tokens = record["tokens_u"] // MICRO
        if tokens < room:
            room = tokens
            throttled = "throttled_rate"
    if throttled is not None:
        counts = m.counters.queues.get(queue)
        if counts and counts[PENDING] > 0:  # held back work, not an empty queue
            if record is None:
                record = m.load_json(keys.limit(queue))
            record[throttled] = record.get(throttled, 0) + 1
    return room, record


def spent(m, gate: Gate, queue: str, record: dict | None, taken: int) -> None:
    """Write the bucket after a claim took ``taken`` tasks out of ``queue``."""
    if record is None:
        return
    if gate.rate_u_per_ms is not None:
        record["tokens_u"] -= taken * MICRO
    m.overlay.put(keys.limit(queue), jsonutil.dumps(record))


def on_transition(m, task: dict, old: str | None, new: str, now: int) -> None:
    """A lease of a limited queue ended: wake the FETCHes that wait for its slot."""
    if old == RUNNING and m.limits:
        queue = task["queue"]
        if queue in m.limits:
            m.woken.add(queue)


def on_load(m) -> None:
    """(Re)build ``m.limits`` from the records (start, snapshot install, restore)."""
    limits = {}
    for _key, raw in m.store.scan(keys.LIMIT, keys.prefix_end(keys.LIMIT), MAX_LIMITS + 1):
        record = jsonutil.loads(raw)
        limits[record["queue"]] = Gate(record)
    m.limits = limits


# ----------------------------------------------------------------------- the commands

def set_limit(m, now: int, queue: str, spec: dict):
    """Set (replace) ``queue``'s limit. A bucket that already existed keeps its tokens (up
    to the new burst); a new one starts full."""
    try:
        limit = normalise_spec(spec)
    except ValueError as exc:
        return Rejected(errors.BADREQ, str(exc))
    if not isinstance(queue, str) or not queue or "\x00" in queue:
        return Rejected(errors.BADREQ, "queue: expected a queue name")
    if queue not in m.limits and len(m.limits) >= MAX_LIMITS:
        return Rejected(errors.BADREQ, f"at most {MAX_LIMITS} queues may have a limit")
    old = m.load_json(keys.limit(queue))
    record = {"queue": queue, **limit, "tokens_u": 0, "refill_ms": now,
              "throttled_rate": 0, "throttled_concurrency": 0}
    if old is not None:
        record["throttled_rate"] = old.get("throttled_rate", 0)
        record["throttled_concurrency"] = old.get("throttled_concurrency", 0)
    gate = Gate(record)
    if gate.capacity_u is not None:
        if old is not None and old.get("rate") is not None:
            _refill(old, m.limits[queue], now)
            record["tokens_u"] = min(gate.capacity_u, old["tokens_u"])
            record["refill_ms"] = old["refill_ms"]
        else:
            record["tokens_u"] = gate.capacity_u
    m.overlay.put(keys.limit(queue), jsonutil.dumps(record))
    m.limits[queue] = gate  # last: nothing below can fail, so no rollback is needed
    m.woken.add(queue)  # a looser limit may let waiting FETCHes through
    return view(record, m, now)


def clear_limit(m, now: int, queue: str):
    """Remove ``queue``'s limit: 1 if it had one, 0 if not."""
    if m.load_json(keys.limit(queue)) is None:
        return 0
    m.overlay.delete(keys.limit(queue))
    m.limits.pop(queue, None)
    m.woken.add(queue)
    return 1


def reconcile(m, now: int, fingerprint: str, declared: list, exclusive: bool):
    """Configuration's ``limits:`` section, proposed by a leader whose file differs from the
    one last applied (``fingerprint``): set every declared limit and, when ``exclusive``,
    clear the others. Returns the number of queues changed."""
    if m.load_json(keys.META_LIMITS_CONFIG) == fingerprint:
        return 0  # a retried or duplicated proposal: the same file was applied already
    for entry in declared:
        try:
            normalise_spec(entry)
        except ValueError as exc:
            return Rejected(errors.BADREQ, f"limits.queues: {exc}")
    saved = dict(m.limits)
    try:
        return _reconcile(m, now, fingerprint, declared, exclusive)
    except Exception:
        # apply_entry rolls the overlay back; the in-memory limits must follow it
        m.limits.clear()
        m.limits.update(saved)
        raise


def _reconcile(m, now: int, fingerprint: str, declared: list, exclusive: bool):
    changed = 0
    wanted = set()
    for entry in declared:
        queue = entry["queue"]
        wanted.add(queue)
        current = m.load_json(keys.limit(queue))
        limit = normalise_spec(entry)
        if current is None or {f: current.get(f) for f in SPEC_FIELDS} != limit:
            result = set_limit(m, now, queue, limit)
            if isinstance(result, Rejected):
                return result
            changed += 1
    if exclusive:
        for queue in sorted(set(m.limits) - wanted):
            changed += clear_limit(m, now, queue)
    m.overlay.put(keys.META_LIMITS_CONFIG, jsonutil.dumps(fingerprint))
    return changed


# ------------------------------------------------------------------------- read side

def view(record: dict, m, now: int) -> dict:
    """A limit as clients see it: the limit, what is in use, how often it held work back.

    ``tokens`` is the bucket as of ``now`` (refilled on paper only, nothing is written)."""
    gate = Gate(record)
    bucket = dict(record)
    _refill(bucket, gate, now)
    counts = m.counters.queues.get(record["queue"])
    return {
        "queue": record["queue"], "rate": record["rate"], "burst": record["burst"],
        "concurrency": record["concurrency"],
        "running": counts[RUNNING] if counts else 0,
        "tokens": None if gate.rate_u_per_ms is None else bucket["tokens_u"] / MICRO,
        "throttled_rate": record.get("throttled_rate", 0),
        "throttled_concurrency": record.get("throttled_concurrency", 0),
    }


def read_all(m, store, now: int, queue: str | None = None) -> dict:
    """queue -> :func:`view` of every limit (or of ``queue``'s), from committed state."""
    if queue is not None:
        raw = store.get(keys.limit(queue))
        records = [] if raw is None else [jsonutil.loads(raw)]
    else:
        records = [jsonutil.loads(raw) for _, raw in
                   store.scan(keys.LIMIT, keys.prefix_end(keys.LIMIT), MAX_LIMITS + 1)]
    return {r["queue"]: view(r, m, now) for r in records}


def retry_after_ms(m, store, queues: list, now: int) -> int | None:
    """When a FETCH that got nothing should claim again because a rate-limited queue it
    asks for has pending work and will have a token then (None: no such queue; a FETCH
    held back by concurrency is woken by the end of a lease instead)."""
    best = None
    for queue in queues:
        gate = m.limits.get(queue)
        if gate is None or gate.rate_u_per_ms is None or queue in m.paused:
            continue
        counts = m.counters.queues.get(queue)
        if not counts or counts[PENDING] == 0:
            continue
        if gate.concurrency is not None and counts[RUNNING] >= gate.concurrency:
            continue
        raw = store.get(keys.limit(queue))
        if raw is None:
            continue
        record = jsonutil.loads(raw)
        _refill(record, gate, now)
        missing = MICRO - record["tokens_u"]
        wait = 0 if missing <= 0 else -(-missing // gate.rate_u_per_ms)
        best = wait if best is None else min(best, wait)
    return best


COMMANDS = {
    "limit_set": set_limit,
    "limit_clear": clear_limit,
    "limits_reconcile": reconcile,
}
