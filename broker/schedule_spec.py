"""A schedule as a client or the configuration file gives it, checked and completed.

Runs before anything is proposed (broker/schedule_service.py) and when the configuration is
loaded (broker/config.py), so the ``schedule_put`` command only ever carries a normalised
spec. Every field is bounded; an error names the field and changes nothing.
"""

from __future__ import annotations

import math
import re

from broker import cron
from broker import validation as v

SCHEDULE_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,100}\Z")  # task ids add "sched:" and a slot
MISFIRE = ("skip", "once", "all")
MAX_INTERVAL_SECS = 366 * 86400
MAX_MISFIRE_LIMIT = 1000
MAX_GRACE_SECS = 3600
MAX_JITTER_SECS = 86400
TEMPLATE_FIELDS = ("type", "queue", "payload", "priority", "max_retries", "timeout_secs",
                   "retry_backoff_secs")
FIELDS = ("id", "cron", "tz", "interval_secs", "task", "enabled", "paused", "misfire",
          "misfire_limit", "misfire_grace_secs", "jitter_secs", "start_at", "end_at")
DEFAULTS = {"tz": "UTC", "misfire": "once", "misfire_limit": 100, "misfire_grace_secs": 60,
            "jitter_secs": 0}


def schedule_id(value) -> str:
    if not isinstance(value, str) or not SCHEDULE_ID.fullmatch(value):
        raise v.Invalid("id: required, the schedule id (1-100 characters of "
                        "A-Z a-z 0-9 _ . : -)")
    return value


def normalise(spec, max_payload_bytes: int, *, base: dict | None = None) -> dict:
    """The spec the ``schedule_put`` command carries. ``base``: the current definition (an
    update): fields the request leaves out keep their value."""
    spec = v.obj(spec, "schedule")
    unknown = sorted(set(spec) - set(FIELDS))
    if unknown:
        raise v.Invalid(f"{unknown[0]}: not a schedule field (known: {', '.join(FIELDS)})")
    merged = dict(DEFAULTS)
    if base is not None:
        merged.update({k: base[k] for k in base if k in FIELDS and k != "paused"})
        merged["paused"] = base.get("paused", False)
        if "cron" in spec and spec["cron"] is not None:
            merged.pop("interval_secs", None)
        if "interval_secs" in spec and spec["interval_secs"] is not None:
            merged.pop("cron", None)
        if isinstance(spec.get("task"), dict) and isinstance(base.get("task"), dict):
            spec = dict(spec, task=dict(base["task"], **spec["task"]))
    merged.update(spec)
    out = {"id": schedule_id(merged.get("id"))}
    expr, interval = merged.get("cron"), merged.get("interval_secs")
    if (expr is None) == (interval is None):
        raise v.Invalid("cron or interval_secs: give exactly one")
    try:
        if expr is not None:
            cron.parse(expr)
        out["cron"] = expr
        out["tz"] = cron.zone(merged.get("tz") or "UTC").key
    except cron.CronError as exc:
        raise v.Invalid(str(exc)) from None
    if interval is not None:
        if isinstance(interval, bool) or not isinstance(interval, int) or not (
                1 <= interval <= MAX_INTERVAL_SECS):
            raise v.Invalid(f"interval_secs: expected whole seconds, 1-{MAX_INTERVAL_SECS}")
    out["interval_secs"] = interval
    out["task"] = template(merged.get("task"), max_payload_bytes)
    paused = merged.get("paused", False)
    if "enabled" in spec:  # "enabled: false" reads better in a file; same thing
        if not isinstance(spec["enabled"], bool):
            raise v.Invalid("enabled: expected true or false")
        paused = not spec["enabled"]
    if not isinstance(paused, bool):
        raise v.Invalid("paused: expected true or false")
    out["paused"] = paused
    if merged.get("misfire") not in MISFIRE:
        raise v.Invalid(f"misfire: expected one of {', '.join(MISFIRE)}")
    out["misfire"] = merged["misfire"]
    out["misfire_limit"] = _int(merged, "misfire_limit", 1, MAX_MISFIRE_LIMIT)
    out["misfire_grace_secs"] = _int(merged, "misfire_grace_secs", 0, MAX_GRACE_SECS)
    jitter = merged.get("jitter_secs")
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not (
            0 <= jitter <= MAX_JITTER_SECS) or not math.isfinite(jitter):
        raise v.Invalid(f"jitter_secs: expected seconds, 0-{MAX_JITTER_SECS}")
    out["jitter_secs"] = jitter
    for name in ("start_at", "end_at"):
        value = merged.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    0 <= value < 10**11) or not math.isfinite(value):
                raise v.Invalid(f"{name}: expected a Unix timestamp in seconds")
        out[name] = value
    if out["start_at"] is not None and out["end_at"] is not None and (
            out["end_at"] <= out["start_at"]):
        raise v.Invalid("end_at: must be after start_at")
    return out


def template(task, max_payload_bytes: int) -> dict:
    """The task each firing enqueues (its id comes from the slot, never from here)."""
    task = v.obj(task, "task")
    unknown = sorted(set(task) - set(TEMPLATE_FIELDS))
    if unknown:
        raise v.Invalid(f"task.{unknown[0]}: not a template field "
                        f"(known: {', '.join(TEMPLATE_FIELDS)})")
    try:
        checked = v.task_spec(dict(task, id="template"), 0, max_payload_bytes)
    except v.Invalid as exc:
        raise v.Invalid(f"task.{exc.message}", exc.code) from None
    return {name: checked[name] for name in TEMPLATE_FIELDS}


def _int(spec: dict, name: str, low: int, high: int) -> int:
    value = spec.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise v.Invalid(f"{name}: expected an integer {low}-{high}")
    return value
