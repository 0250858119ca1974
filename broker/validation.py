"""Turning untrusted request JSON into the normalised specs the state machine accepts.

Everything a client sends is checked here, once, for every port. A bad value raises
:class:`Invalid` naming the field; nothing reaches the log until a request is valid.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import uuid

from taskqueue import errors, jsonutil


class Invalid(Exception):
    def __init__(self, message: str, code: str = errors.BADREQ):
        super().__init__(message)
        self.code = code
        self.message = message


# Matched with ``fullmatch`` (``\Z``): a ``$`` also matches before a final newline, and
# "emails\n" was accepted as a queue name.
NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,200}\Z")
TASK_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}\Z")

# How deep a JSON value a client sends (a payload, a result, an error) may nest: arrays and
# objects inside each other, ``[]`` being 1. The JSON library parses 1024 levels but encodes
# only ~254, and every value is encoded again on its way to the log and RocksDB: a value
# that parses but cannot be encoded used to kill the Raft commit loop. 64 is far beyond any
# real payload and far below the encoder's limit.
MAX_DEPTH = 64

# Re-encoding a parsed value can make it longer than the request that carried it: ``1e15``
# (4 bytes) is stored as ``1000000000000000.0`` (18). No JSON text grows by more than this
# factor (tests/test_validation.py), so a request at most 1/GROWTH of the payload limit
# cannot hold a payload that is stored larger than the limit, and is not re-encoded.
GROWTH = 5

# Fields a submit reads, and fields of an exported task object that it ignores, so that
# `tq-admin list` output can be submitted back as it is (the guide's migration recipe).
SUBMIT_FIELDS = {"id", "type", "queue", "payload", "priority", "max_retries", "run_at",
                 "delay_secs", "timeout_secs", "retry_backoff_secs", "idempotency_key"}
IGNORED_FIELDS = {"status", "attempts", "result", "error", "backtrace", "worker",
                  "created_at", "updated_at", "started_at", "finished_at",
                  "lease_expires_at", "duplicate", "token"}

ACCEPTED_FIELDS = frozenset(SUBMIT_FIELDS | IGNORED_FIELDS)

MAX_BULK = 1000


def too_deep(value, limit: int = MAX_DEPTH) -> bool:
    """Does ``value`` nest more than ``limit`` arrays/objects? Runs on every submitted
    payload: scalars return at once, members are type-checked inline, and a long container
    of scalars is decided by one C-level pass over its members' types."""
    kind = type(value)
    if kind is dict:
        members = value.values()
    elif kind is list:
        members = value
    else:
        return False
    if limit <= 0:
        return True
    if len(members) > 32 and _CONTAINERS.isdisjoint(map(type, members)):
        return False
    for member in members:
        kind = type(member)
        if (kind is dict or kind is list) and too_deep(member, limit - 1):
            return True
    return False


_CONTAINERS = frozenset((dict, list))


def check_depth(value, field: str) -> None:
    if too_deep(value):
        raise Invalid(f"{field}: nests deeper than {MAX_DEPTH} levels of arrays/objects")


def json_value(value, field: str):
    """A JSON value a client hands the broker to store (an ACK's result): depth-checked."""
    check_depth(value, field)
    return value


def parse_json(raw: bytes | str):
    try:
        return jsonutil.loads(raw)
    except (jsonutil.JSONDecodeError, ValueError, TypeError) as exc:
        raise Invalid(f"the argument is not valid JSON: {exc}") from None


def obj(value, what: str = "argument") -> dict:
    if not isinstance(value, dict):
        raise Invalid(f"the {what} must be a JSON object")
    return value


def _number(spec: dict, field: str, *, minimum: float, maximum: float, integer: bool,
            default=None):
    value = spec.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise Invalid(f"{field}: expected {'an integer' if integer else 'a number'}, "
                      f"got {value!r}")
    if not minimum <= value <= maximum:
        raise Invalid(f"{field}: must be between {minimum:g} and {maximum:g}, got {value!r}")
    return value


def _name(spec: dict, field: str, pattern: re.Pattern, default=None) -> str | None:
    value = spec.get(field, default)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        limit = 128 if pattern is TASK_ID else 200
        raise Invalid(f"{field}: expected 1-{limit} characters of A-Z a-z 0-9 _ . : -, "
                      f"got {value!r}")
    return value


def _timestamp_ms(value, field: str) -> int:
    """``run_at`` as epoch seconds (number) or an ISO 8601 string, to epoch milliseconds."""
    if isinstance(value, str):
        try:
            parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise Invalid(f"{field}: not an ISO 8601 time: {value!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_dt.timezone.utc)
        return int(parsed.timestamp() * 1000)
    seconds = _number({field: value}, field, minimum=0, maximum=1e11, integer=False)
    return int(seconds * 1000)


def _int_field(spec: dict, field: str, minimum: int, maximum: int, default: int) -> int:
    """An optional integer field. The common case (absent, or a plain int in range) is
    decided inline; anything else goes through :func:`_number`, which accepts or explains."""
    value = spec.get(field)
    if value is None:
        return default
    if type(value) is int and minimum <= value <= maximum:
        return value
    return _number(spec, field, minimum=minimum, maximum=maximum, integer=True)


def _float_field(spec: dict, field: str, minimum: float, maximum: float, default):
    value = spec.get(field)
    if value is None:
        return default
    # NaN fails the comparison and infinity the bound: both fall through to _number.
    if (type(value) is float or type(value) is int) and minimum <= value <= maximum:
        return value
    return _number(spec, field, minimum=minimum, maximum=maximum, integer=False)


def query_int(value: str | None, field: str) -> int | None:
    """An optional integer from a query string (absent or empty: None); anything else
    not an integer is refused naming ``field``. The range is the caller's to check."""
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise Invalid(f"{field}: expected an integer, got {value!r}") from None


MAX_WAIT_SECS = 300  # the longest ?wait= / gRPC Wait a caller may ask for


def wait_ms(seconds) -> int:
    """A long poll's ``wait`` in seconds (number, or the string of one) to milliseconds.
    NaN, infinities and out-of-range values are refused here, at the edge: ``int(inf)``
    raised OverflowError (a 500) before this check existed."""
    if isinstance(seconds, str):
        try:
            seconds = float(seconds)
        except ValueError:
            raise Invalid(f"wait: expected seconds, got {seconds!r}") from None
    value = _number({"wait": seconds}, "wait", minimum=0, maximum=MAX_WAIT_SECS,
                    integer=False)
    return int(value * 1000)


def task_spec(spec, now_ms: int, max_payload_bytes: int, raw_size: int | None = None) -> dict:
    """Validate one submitted task; return the spec the ``submit`` command carries.

    This runs once per submitted task on the broker's hot path (a bulk submit of 1,000
    tasks runs it 1,000 times), so the usual shapes are checked inline and only unusual
    values take the slower, explaining helpers. The accepted set is the same either way.
    """
    if type(spec) is not dict:
        spec = obj(spec, "task")
    if not spec.keys() <= ACCEPTED_FIELDS:
        raise Invalid(f"{sorted(spec.keys() - ACCEPTED_FIELDS)[0]}: not a task field")
    get = spec.get
    task_type = get("type")
    if type(task_type) is not str or not 0 < len(task_type) <= 200 or "\x00" in task_type:
        raise Invalid("type: required, a string of 1-200 characters (the handler name)")
    task_id = get("id")
    if task_id is None:
        task_id = uuid.uuid4().hex
    elif type(task_id) is not str or not TASK_ID.fullmatch(task_id):
        task_id = _name(spec, "id", TASK_ID)
    queue = get("queue")
    if queue is None:
        queue = "default"
    elif type(queue) is not str or not NAME.fullmatch(queue):
        queue = _name(spec, "queue", NAME)
    out = {
        "id": task_id,
        "type": task_type,
        "queue": queue,
        "payload": get("payload"),
        "priority": _int_field(spec, "priority", 0, 9, 0),
        "max_retries": _int_field(spec, "max_retries", 0, 1000, 3),
        "timeout_secs": _float_field(spec, "timeout_secs", 0.001, 86400 * 7, None),
        "retry_backoff_secs": _float_field(spec, "retry_backoff_secs", 0, 86400, 1.0),
        "idempotency_key": None,
        "run_at_ms": None,
    }
    key = get("idempotency_key")
    if key is not None:
        if not isinstance(key, str) or not 0 < len(key) <= 256:
            raise Invalid("idempotency_key: expected a string of 1-256 characters")
        out["idempotency_key"] = key
    if get("delay_secs") is not None:
        delay = _number(spec, "delay_secs", minimum=0, maximum=86400 * 365, integer=False)
        out["run_at_ms"] = now_ms + int(delay * 1000)
    elif get("run_at") is not None:
        out["run_at_ms"] = _timestamp_ms(spec["run_at"], "run_at")
    payload = out["payload"]
    if (type(payload) is dict or type(payload) is list) and too_deep(payload):
        raise Invalid(f"payload: nests deeper than {MAX_DEPTH} levels of arrays/objects")
    # The size checked is the stored (re-encoded) one, computed only when the request could
    # hold a payload that large once re-encoded (see GROWTH): re-encoding every payload
    # would cost the hot path for nothing.
    if raw_size is None or raw_size * GROWTH > max_payload_bytes:
        size = len(jsonutil.dumps(payload))
        if size > max_payload_bytes:
            raise Invalid(f"payload: {size} bytes exceeds broker.max_payload_bytes "
                          f"({max_payload_bytes})", errors.TOOLARGE)
    return out


def task_specs(value, now_ms: int, max_payload_bytes: int, raw_size: int | None = None):
    """A single task object, or a list of them (bulk). Returns (specs, is_bulk)."""
    if isinstance(value, list):
        if not 0 < len(value) <= MAX_BULK:
            raise Invalid(f"a bulk submit takes 1-{MAX_BULK} tasks, got {len(value)}")
        return [task_spec(v, now_ms, max_payload_bytes, raw_size) for v in value], True
    return [task_spec(value, now_ms, max_payload_bytes, raw_size)], False


def task_id(args: dict) -> str:
    value = obj(args).get("id")
    if not isinstance(value, str) or not TASK_ID.fullmatch(value):
        raise Invalid("id: required, 1-128 characters of A-Z a-z 0-9 _ . : -")
    return value


def queue_name(value, field: str = "queue") -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise Invalid(f"{field}: expected 1-200 characters of A-Z a-z 0-9 _ . : -")
    return value


def queue_list(value) -> list[str]:
    if value is None:
        return ["default"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not 0 < len(value) <= 100:
        raise Invalid("queues: expected a list of 1-100 queue names")
    return [queue_name(q, "queues") for q in value]


def bounded_int(args: dict, field: str, default: int, minimum: int, maximum: int) -> int:
    return _number(args, field, minimum=minimum, maximum=maximum, integer=True,
                   default=default)


def token(args: dict) -> int:
    value = args.get("token")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid("token: required, the integer fencing token FETCH returned")
    return value
