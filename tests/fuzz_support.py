"""Shared pieces of the RESP/JSON fuzzers (tests/test_fuzz_resp.py, tests/test_fuzz_cluster.py).

* strategies: well-formed requests for every command with edge-valued JSON arguments
  (depths around the 64-level limit, sizes around the payload and frame limits, names with a
  trailing newline, huge numbers, NaN, lone surrogates...), and malformed byte streams;
* :class:`Wire`: a bare socket with a reply reader that understands RESP2 and RESP3 (a
  fuzzed ``HELLO 3`` switches the connection) and never blocks past a deadline;
* :func:`changed_state`: did a request that got this reply possibly change the task table?
  (what the "rejected input changes nothing" check relies on);
* :func:`task_table` / :func:`unexplained_changes`: every task a node holds, and the
  differences between two tables that time alone does not explain.

The fuzz seed is chosen per run (``TQ_FUZZ_SEED`` to replay one) and printed by the tests.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time

from hypothesis import strategies as st

from taskqueue import resp

SEED = int(os.environ.get("TQ_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))

# Limits the fuzz brokers run with: small, so the size edges are cheap to reach.
MAX_FRAME = 256 * 1024
MAX_PAYLOAD = 8 * 1024
DEPTH = 64  # broker/validation.py MAX_DEPTH, docs/protocol.md Limits

WORKER_KEY = ("worker-key-0123456789", ["read_tasks", "submit_tasks"])

# Every error code docs/protocol.md lists. INTERNAL ("a bug") must never be answered.
DOCUMENTED_CODES = {"BADREQ", "BADVERSION", "NOPROTO", "NOAUTH", "NOPERM", "NOTFOUND",
                    "BADSTATE", "LEASELOST", "QUEUEFULL", "TOOLARGE", "MAXCONN", "NOTLEADER",
                    "UNAVAILABLE"}

# Commands that may change the task table when they succeed. Everything else (reads, PING,
# the Redis handshake commands, PAUSE, limits, worker registry...) never touches a task.
TASK_WRITES = {"SUBMIT", "FETCH", "ACK", "FAIL", "HEARTBEAT", "CANCEL", "REQUEUE",
               "WORKFLOW-SUBMIT", "WORKFLOW-CANCEL", "SCHEDULE-RUN", "SCHEDULE-CREATE",
               "SCHEDULE-UPDATE", "SCHEDULE-RESUME", "BYE", "HELLO"}

COMMANDS = ["PING", "QUIT", "HELLO", "SUBMIT", "FETCH", "ACK", "FAIL", "HEARTBEAT", "BYE",
            "GET", "WAIT-TASK", "LIST", "CANCEL", "REQUEUE", "QUEUES", "PAUSE", "RESUME",
            "LIMIT-SET", "LIMIT-GET", "LIMIT-CLEAR", "WORKERS", "WORKER-STATE", "STATS",
            "SNAPSHOT", "CLUSTER", "WORKFLOW-SUBMIT", "WORKFLOW-GET", "WORKFLOW-CANCEL",
            "SCHEDULE-CREATE", "SCHEDULE-UPDATE", "SCHEDULE-GET", "SCHEDULE-LIST",
            "SCHEDULE-PAUSE", "SCHEDULE-RESUME", "SCHEDULE-DELETE", "SCHEDULE-RUN"]
REDIS_COMMANDS = ["AUTH", "CLIENT", "SELECT", "INFO"]
# Drawn more often: the commands workers and producers send all day.
HOT = ["SUBMIT", "FETCH", "ACK", "FAIL", "HEARTBEAT", "GET", "LIST", "CANCEL", "REQUEUE",
       "WORKFLOW-SUBMIT", "SCHEDULE-CREATE"]


# ------------------------------------------------------------------------- reply reading

class Closed(Exception):
    """The broker closed the connection."""


class Timeout(Exception):
    """No complete reply within the deadline: the broker hangs on this connection."""


class Wire:
    """A bare protocol socket. ``replies(n)`` reads n replies (or up to EOF)."""

    def __init__(self, addr: str, timeout: float = 5.0):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = False

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True  # the broker closed first (a frame it refused): read what came

    def call(self, *args, timeout: float = 5.0):
        self.send(resp.encode_request(*args))
        return self.reply(time.monotonic() + timeout)

    def hello(self, timeout: float = 5.0, **fields):
        return self.call("HELLO", json.dumps({"v": 1, **fields}), timeout=timeout)

    def reply(self, deadline: float):
        while True:
            parsed = parse_reply(self.buf, 0)
            if parsed is not None:
                value, end = parsed
                del self.buf[:end]
                return value
            if self.closed:
                raise Closed(bytes(self.buf[:200]))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(bytes(self.buf[:200]))
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                raise Timeout(bytes(self.buf[:200])) from None
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                continue
            self.buf += chunk

    def replies_until_eof(self, deadline: float) -> list:
        out = []
        while True:
            try:
                out.append(self.reply(deadline))
            except Closed:
                return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Null:
    def __repr__(self):
        return "Null"


NULL = Null()


def _line(buf: bytearray, pos: int):
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    return bytes(buf[pos:end]), end + 2


def parse_reply(buf: bytearray, pos: int):
    """(value, end) of one RESP2/RESP3 reply at ``pos``, or None if incomplete.
    Errors come back as :class:`resp.Error`; bulk strings as bytes."""
    if pos >= len(buf):
        return None
    kind = buf[pos:pos + 1]
    line = _line(buf, pos + 1)
    if line is None:
        return None
    text, after = line
    if kind in (b"+",):
        return text.decode(errors="replace"), after
    if kind in (b"-", b"!"):
        if kind == b"!":  # RESP3 blob error
            size = int(text)
            if after + size + 2 > len(buf):
                return None
            text, after = bytes(buf[after:after + size]), after + size + 2
        code, _, message = text.decode(errors="replace").partition(" ")
        return resp.Error(code, message), after
    if kind in (b":", b",", b"("):
        return text.decode(), after
    if kind == b"#":
        return text == b"t", after
    if kind == b"_":
        return NULL, after
    if kind in (b"$", b"="):
        size = int(text)
        if size < 0:
            return NULL, after
        if after + size + 2 > len(buf):
            return None
        return bytes(buf[after:after + size]), after + size + 2
    if kind in (b"*", b"~", b">", b"%", b"|"):
        count = int(text)
        if count < 0:
            return NULL, after
        if kind in (b"%", b"|"):
            count *= 2
        items = []
        for _ in range(count):
            parsed = parse_reply(buf, after)
            if parsed is None:
                return None
            value, after = parsed
            items.append(value)
        if kind == b"|":  # an attribute precedes the real reply
            return parse_reply(buf, after)
        return items, after
    raise AssertionError(f"the broker sent a reply of unknown type {bytes(buf[pos:pos + 40])!r}")


def error_code(reply) -> str | None:
    return reply.code if isinstance(reply, resp.Error) else None


def check_reply(reply, context) -> None:
    """No reply is INTERNAL, and every error code is a documented one."""
    if isinstance(reply, resp.Error):
        assert reply.code != "INTERNAL", (reply, context)
        assert reply.code in DOCUMENTED_CODES, (reply, context)
    if isinstance(reply, list):
        for item in reply:
            check_reply(item, context)
    if isinstance(reply, bytes) and reply[:1] in (b"[", b"{"):
        try:
            decoded = json.loads(reply)
        except ValueError:
            return
        items = decoded if isinstance(decoded, list) else [decoded]
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("error"), dict):
                assert item["error"].get("code") != "INTERNAL", (item, context)


def changed_state(command: str, reply) -> bool:
    """Could ``command`` answered with ``reply`` have changed the task table?"""
    if command.upper() not in TASK_WRITES:
        return False
    if isinstance(reply, resp.Error) or reply is NULL:
        return False
    if reply is None:
        return True  # never answered (the connection closed): it may have run
    if isinstance(reply, bytes):
        try:
            decoded = json.loads(reply)
        except ValueError:
            return True
        if isinstance(decoded, list) and decoded and all(
                isinstance(x, dict) and set(x) == {"error"} for x in decoded):
            return False  # a bulk request every item of which was refused
    return True


# ------------------------------------------------------------------------ task tables

def task_table(wire_call) -> dict[str, dict]:
    """Every task a node holds, by id, read with ``wire_call(command, json_text)``."""
    out, cursor = {}, None
    while True:
        reply = wire_call("LIST", json.dumps({"limit": 10000, "cursor": cursor}))
        assert isinstance(reply, bytes), reply
        page = json.loads(reply)
        for task in page["tasks"]:
            out[task["id"]] = task
        cursor = page["next_cursor"]
        if cursor is None:
            return out


def unexplained_changes(before: dict[str, dict], after: dict[str, dict],
                        slack: float = 2.0) -> list[str]:
    """Task ids that differ between two tables in a way time alone does not explain.

    Time changes: a scheduled or retrying task whose ``run_at`` came, a running task whose
    lease ran out, and tasks a schedule fired (``sched:...``). Nothing else may change.
    """
    now = time.time() + slack
    odd = []
    for task_id in before.keys() | after.keys():
        old, new = before.get(task_id), after.get(task_id)
        if old == new:
            continue
        if old is None:
            if task_id.startswith("sched:"):
                continue
            odd.append(task_id)
            continue
        status = old.get("status")
        if status in ("scheduled", "failed") and (old.get("run_at") or 0) <= now:
            continue
        if status == "running" and (old.get("lease_expires_at") or 0) <= now:
            continue
        if new is None and status in ("completed", "dead", "cancelled"):
            continue  # purged by retention (not within a test run, but not a bug either)
        odd.append(task_id)
    return sorted(odd)


# --------------------------------------------------------------------------- strategies

def nested(depth: int, leaf=0):
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def nested_text(depth: int, kind: str = "[") -> str:
    close = "]" if kind == "[" else "}"
    if kind == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "0" + close * depth


DEPTHS = [0, 1, DEPTH - 1, DEPTH, DEPTH + 1, DEPTH + 2, 200, 254, 255, 300, 1023, 1024, 1025]

SEED_IDS = ["fz-pending-0", "fz-pending-1", "fz-running", "fz-done", "fz-dead", "fz-cancelled",
            "fz-scheduled", "fz-nope"]
QUEUES = ["fz-q", "fz-other", "default"]

edge_strings = st.sampled_from([
    "", "a", "a" * 128, "a" * 129, "a" * 200, "a" * 201, "x\n", "emails\n", "a\nb", "a b",
    "a\x00b", "\ud800", "é", "../../etc/passwd", "fz-q", "fz-q\n", "0", "-", ":", "NaN",
    "null", "*", "\r\n", "x" * 5000])
edge_numbers = st.sampled_from([
    0, 1, -1, 9, 10, 2 ** 31 - 1, 2 ** 31, 2 ** 63 - 1, 2 ** 63, 2 ** 64, -2 ** 63 - 1,
    10 ** 30, 0.5, -0.0, 1e-300, 5e-324, 1e308, 1.7976931348623157e308, 86400, 86401, 1000,
    1001, 10000, 10001, 60000, 60001, 300000, 300001, 0.001, 0.0005, True, False])
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
                         edge_strings, edge_numbers)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=12)
deep_values = st.builds(nested, st.sampled_from([d for d in DEPTHS if d <= 200]))
values = st.one_of(json_values, deep_values, edge_strings, edge_numbers)
ids = st.one_of(st.sampled_from(SEED_IDS), edge_strings, json_scalars,
                st.from_regex(r"fz-[a-z0-9]{1,6}", fullmatch=True))
queues = st.one_of(st.sampled_from(QUEUES), edge_strings, json_scalars)
# Valid waits are kept short (a 60 s FETCH is legal but would stall the fuzzer);
# out-of-range ones are refused before anything waits. No null: null means "the default
# wait" (30 s for WAIT-TASK), legal and longer than the fuzzer's reply bound.
short_ms = st.one_of(st.integers(0, 100), st.sampled_from([-1, 60001, 300001, 1.5, "5",
                                                            True, 10 ** 20, 1e400]))
tokens = st.one_of(st.sampled_from(["1-0000000000000000", "0", "", "x" * 65, "1-1"]),
                   st.integers(-5, 2 ** 64), st.text(max_size=10), st.none(), st.booleans())


def optional_fields(**fields) -> st.SearchStrategy:
    """An object with any subset of ``fields`` (and sometimes an unknown one)."""
    return st.fixed_dictionaries({}, optional=dict(fields, **{"zz_unknown": json_scalars}))


def waiting_fields(**fields) -> st.SearchStrategy:
    """As :func:`optional_fields`, for a command that may wait (FETCH, WAIT-TASK): it always
    names a short ``timeout_ms``. Without one the broker waits its documented default (up to
    30 s), which is correct, not a hang, and would outlast the fuzzer's reply bound."""
    return st.fixed_dictionaries({"timeout_ms": short_ms},
                                 optional=dict(fields, **{"zz_unknown": json_scalars}))


task_objects = optional_fields(
    type=st.one_of(st.sampled_from(["t", "echo", "x" * 200, "x" * 201, "", "a\x00"]),
                   json_scalars),
    id=ids, queue=queues, payload=values, priority=st.one_of(edge_numbers, json_scalars),
    max_retries=edge_numbers, run_at=st.one_of(edge_numbers, edge_strings,
                                               st.just("2020-01-01T00:00:00Z")),
    delay_secs=edge_numbers, timeout_secs=edge_numbers, retry_backoff_secs=edge_numbers,
    idempotency_key=st.one_of(edge_strings, json_scalars), status=json_scalars,
    token=tokens)
workflow_nodes = st.recursive(
    task_objects,
    lambda inner: st.one_of(
        st.fixed_dictionaries({"chain": st.lists(inner, max_size=3)}),
        st.fixed_dictionaries({"group": st.lists(inner, max_size=3)},
                              optional={"pass_result": json_scalars}),
        st.fixed_dictionaries({"chord": st.lists(inner, max_size=3), "callback": inner},
                              optional={"on_error": st.sampled_from(["fail", "callback",
                                                                     "x"])})),
    max_leaves=6)
schedule_objects = optional_fields(
    id=ids, cron=st.sampled_from(["30 2 * * *", "* * * * *", "61 * * * *", "", "a" * 300,
                                  "*/0 * * * *", "0 0 31 2 *", "@hourly"]),
    tz=st.sampled_from(["UTC", "Europe/Berlin", "Nope/Zone", "../../etc/passwd", "", "\n"]),
    interval_secs=st.one_of(st.sampled_from([3600, 86400]), edge_numbers),
    task=st.one_of(task_objects, json_scalars), paused=json_scalars,
    misfire=st.sampled_from(["skip", "once", "all", "x"]), misfire_limit=edge_numbers,
    misfire_grace_secs=edge_numbers, jitter_secs=edge_numbers, start_at=edge_numbers,
    end_at=edge_numbers)
ack_items = optional_fields(id=ids, token=tokens, result=values, error=values,
                            backtrace=values, retry=json_scalars)

ARGS = {
    "HELLO": optional_fields(v=st.sampled_from([1, 2, 0, "1", None, 1.0]),
                             api_key=st.one_of(edge_strings, st.just("a" * 73)),
                             worker_id=ids, hostname=values, pid=edge_numbers,
                             queues=st.one_of(queues, st.lists(queues, max_size=3)),
                             concurrency=edge_numbers, labels=values),
    "SUBMIT": st.one_of(task_objects, st.lists(task_objects, max_size=4),
                        # the bulk bound: 1001 refused, 1000 with a bad last one refused whole
                        st.sampled_from([[{"type": "t"}] * 1001,
                                         [{"type": "t"}] * 999 + [{"type": 7}]])),
    "FETCH": waiting_fields(queues=st.one_of(queues, st.lists(queues, max_size=3)),
                            count=edge_numbers),
    "ACK": st.one_of(ack_items, st.lists(ack_items, max_size=3)),
    "FAIL": st.one_of(ack_items, st.lists(ack_items, max_size=3)),
    "HEARTBEAT": optional_fields(tasks=st.one_of(
        st.lists(st.tuples(ids, tokens).map(list), max_size=3), values)),
    "GET": optional_fields(id=ids),
    "WAIT-TASK": waiting_fields(id=ids),
    "LIST": optional_fields(status=st.one_of(st.sampled_from(
        ["pending", "completed", "running", "dead", "nope"]), json_scalars), queue=queues,
        type=json_scalars, limit=edge_numbers, cursor=st.one_of(edge_strings, json_scalars)),
    "CANCEL": optional_fields(id=ids),
    "REQUEUE": optional_fields(id=ids),
    "PAUSE": optional_fields(queue=queues),
    "RESUME": optional_fields(queue=queues),
    "LIMIT-SET": optional_fields(queue=queues, rate=edge_numbers, burst=edge_numbers,
                                 concurrency=edge_numbers),
    "LIMIT-GET": optional_fields(queue=queues),
    "LIMIT-CLEAR": optional_fields(queue=queues),
    "WORKER-STATE": optional_fields(worker_id=ids, state=st.sampled_from(
        ["quiet", "stop", "active", "", "x"])),
    # Only paths that exist or are not strings: a valid new path would write a checkpoint.
    "SNAPSHOT": optional_fields(path=st.sampled_from(["/", ".", "", None, 7, ["/tmp"]])),
    "WORKFLOW-SUBMIT": optional_fields(id=ids, workflow=st.one_of(workflow_nodes, values)),
    "WORKFLOW-GET": optional_fields(id=ids, limit=edge_numbers),
    "WORKFLOW-CANCEL": optional_fields(id=ids),
    "SCHEDULE-CREATE": schedule_objects,
    "SCHEDULE-UPDATE": schedule_objects,
    "SCHEDULE-GET": optional_fields(id=ids),
    "SCHEDULE-LIST": optional_fields(after=ids, limit=edge_numbers),
    "SCHEDULE-PAUSE": optional_fields(id=ids),
    "SCHEDULE-RESUME": optional_fields(id=ids),
    "SCHEDULE-DELETE": optional_fields(id=ids),
    "SCHEDULE-RUN": optional_fields(id=ids),
}


# Requests that are valid, or nearly: they get past validation and reach the state machine
# (the edge strategies above are refused at the edge nearly always).
fz_ids = st.from_regex(r"fz-[a-z0-9]{1,4}", fullmatch=True)
fz_queues = st.sampled_from(["fz-q", "fz-other", "fz-q2"])
valid_task = st.fixed_dictionaries(
    {"type": st.sampled_from(["t", "echo"]), "queue": fz_queues},
    optional={"id": fz_ids, "payload": st.one_of(json_values, json_values, json_values,
                                                 st.builds(nested, st.integers(DEPTH - 1,
                                                                               DEPTH))),
              "priority": st.integers(0, 9), "max_retries": st.integers(0, 3),
              "idempotency_key": fz_ids, "timeout_secs": st.sampled_from([1, 0.5, 0.001])})
# A workflow's tasks: no idempotency_key / run_at (refused there), ids left to the broker.
workflow_task = valid_task.map(lambda t: {k: x for k, x in t.items()
                                          if k not in ("id", "idempotency_key")})
valid_ack = st.fixed_dictionaries({"id": st.sampled_from(SEED_IDS), "token": tokens},
                                  optional={"result": json_values, "error": json_values,
                                            "retry": st.booleans()})
VALID = {
    "SUBMIT": st.one_of(valid_task, st.lists(valid_task, min_size=1, max_size=5)),
    "FETCH": st.fixed_dictionaries({"queues": st.lists(fz_queues, min_size=1, max_size=2),
                                    "count": st.integers(1, 3),
                                    "timeout_ms": st.integers(0, 30)}),
    "ACK": st.one_of(valid_ack, st.lists(valid_ack, min_size=1, max_size=3)),
    "FAIL": valid_ack,
    "HEARTBEAT": st.fixed_dictionaries({"tasks": st.lists(st.tuples(
        st.sampled_from(SEED_IDS), tokens).map(list), max_size=3)}),
    "GET": st.fixed_dictionaries({"id": st.one_of(st.sampled_from(SEED_IDS), fz_ids)}),
    "WAIT-TASK": st.fixed_dictionaries({"id": st.sampled_from(SEED_IDS),
                                        "timeout_ms": st.integers(0, 30)}),
    "LIST": st.fixed_dictionaries({}, optional={
        "status": st.sampled_from(["pending", "running", "completed", "dead", "scheduled"]),
        "queue": fz_queues, "limit": st.integers(1, 50)}),
    "CANCEL": st.fixed_dictionaries({"id": st.one_of(st.sampled_from(SEED_IDS), fz_ids)}),
    "REQUEUE": st.fixed_dictionaries({"id": st.one_of(st.sampled_from(SEED_IDS), fz_ids)}),
    "PAUSE": st.fixed_dictionaries({"queue": st.just("fz-q2")}),
    "RESUME": st.fixed_dictionaries({"queue": st.just("fz-q2")}),
    "LIMIT-SET": st.fixed_dictionaries({"queue": fz_queues},
                                       optional={"rate": st.sampled_from([0.5, 100, 1e6]),
                                                 "concurrency": st.integers(1, 5)}),
    "LIMIT-CLEAR": st.fixed_dictionaries({"queue": fz_queues}),
    "WORKER-STATE": st.fixed_dictionaries({
        "worker_id": st.sampled_from(["fz-conn-worker", "fz-conn-admin", "fz-nobody"]),
        "state": st.sampled_from(["quiet", "active", "stop"])}),
    "WORKFLOW-SUBMIT": st.fixed_dictionaries(
        {"workflow": st.one_of(
            st.lists(workflow_task, min_size=1, max_size=3).map(lambda t: {"chain": t}),
            st.lists(workflow_task, min_size=1, max_size=3).map(lambda t: {"group": t}),
            st.tuples(st.lists(workflow_task, min_size=1, max_size=3), workflow_task).map(
                lambda p: {"chord": p[0], "callback": p[1]}))},
        optional={"id": fz_ids}),
    "WORKFLOW-GET": st.fixed_dictionaries({"id": fz_ids}),
    "WORKFLOW-CANCEL": st.fixed_dictionaries({"id": fz_ids}),
    "SCHEDULE-CREATE": st.fixed_dictionaries(
        {"id": fz_ids, "task": valid_task},
        optional={"interval_secs": st.sampled_from([3600, 86400]),
                  "cron": st.sampled_from(["30 2 * * *", "0 0 1 1 *"]),
                  "tz": st.sampled_from(["UTC", "Europe/Berlin"]),
                  "misfire": st.sampled_from(["skip", "once", "all"])}),
    "SCHEDULE-UPDATE": st.fixed_dictionaries({"id": fz_ids, "interval_secs": st.just(7200)}),
    "SCHEDULE-GET": st.fixed_dictionaries({"id": fz_ids}),
    "SCHEDULE-PAUSE": st.fixed_dictionaries({"id": fz_ids}),
    "SCHEDULE-RESUME": st.fixed_dictionaries({"id": fz_ids}),
    "SCHEDULE-DELETE": st.fixed_dictionaries({"id": fz_ids}),
    "SCHEDULE-RUN": st.fixed_dictionaries({"id": fz_ids}),
}


def _dumps(value) -> bytes:
    # allow_nan: NaN/Infinity literals are sent too (the broker must refuse them cleanly)
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def _generic_json(value) -> bytes:
    return _dumps(value)


raw_json = st.one_of(
    st.sampled_from([b"", b" ", b"{", b"}", b"[", b"nul", b"NaN", b"Infinity", b"-Infinity",
                     b"1e400", b"-1e400", b"1" * 5000, b'"\\ud800"', b'"\\u0000"', b"\xff\xfe",
                     b"\xef\xbb\xbf{}", b'{"a":1,"a":2}', b'{"id":"x"} {"id":"y"}', b"[1,]",
                     b"{'a':1}", b"\x00", b'"' + b"a" * 1000, b"{}" * 100]),
    st.sampled_from(DEPTHS).flatmap(lambda d: st.sampled_from(
        [nested_text(d, "[").encode(), nested_text(d, "{").encode()])),
    st.binary(max_size=40),
    json_values.map(_generic_json))


def argument_for(command: str) -> st.SearchStrategy:
    specific = ARGS.get(command)
    # SNAPSHOT gets only its safe arguments: any other would-be path might be created.
    if command == "SNAPSHOT":
        return specific.map(_dumps)
    # Valid first: Hypothesis leans towards the first branch (its "simplest").
    options = [VALID[command].map(_dumps)] * 3 if command in VALID else []
    if specific is not None:
        options += [specific.map(_dumps)] * 2
    return st.one_of(*options, raw_json)


@st.composite
def requests(draw, commands=tuple(COMMANDS)) -> list[bytes]:
    """One well-formed RESP request: a command and 0-2 arguments (usually one JSON text)."""
    kind = draw(st.sampled_from(["ours"] * 8 + ["redis", "junk"]))  # "ours" first, see above
    if kind == "redis":
        command = draw(st.sampled_from(REDIS_COMMANDS))
    elif kind == "junk":
        command = draw(st.sampled_from(["submit", "Get", "NOPE", "", "x" * 40, "SUBMIT\x00"]))
    else:
        command = draw(st.sampled_from(list(HOT) * 3 + list(commands)))
    upper = command.upper()
    if upper in REDIS_COMMANDS or upper == "HELLO" and draw(st.booleans()):
        words = draw(st.lists(st.sampled_from(
            ["2", "3", "4", "AUTH", "default", "admin-key-0123456789", "wrong", "SETNAME",
             "x", "SETINFO", "LIB-NAME", "0", "1", "-1", "GETNAME", "ID", "TRACKING"]),
            max_size=4))
        return [command.encode(), *(w.encode() for w in words)]
    count = draw(st.sampled_from([1] * 10 + [0, 2]))
    args = [draw(argument_for(upper)) for _ in range(count)]
    if upper == "WAIT-TASK" and args:
        args[0] = _with_short_wait(args[0], draw(short_ms))
    return [command.encode("utf-8", "surrogatepass"), *args]


def _with_short_wait(arg: bytes, timeout_ms) -> bytes:
    """A WAIT-TASK object that names no timeout_ms gets one: without it the broker waits
    its documented default, 30 s, which is right and longer than the fuzzer's reply bound
    (any JSON text, e.g. ``{"id": "fz-pending-0"}``, can come from raw_json)."""
    try:
        value = json.loads(arg)
    except ValueError:
        return arg
    if isinstance(value, dict) and "timeout_ms" not in value:
        value["timeout_ms"] = timeout_ms
        return _dumps(value)
    return arg


def encode(request: list[bytes]) -> bytes:
    out = [b"*%d\r\n" % len(request)]
    for arg in request:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


# Malformed streams: after the last one the connection cannot be resynchronised, so the
# broker must answer BADREQ/TOOLARGE (or nothing) and close; never hang, never crash.
_bad_heads = st.sampled_from([
    b"*0\r\n", b"*-1\r\n", b"*17\r\n", b"*+1\r\n$4\r\nPING\r\n", b"* 1\r\n", b"*1_0\r\n",
    b"*99999999999999999999\r\n", b"*1\r\n$-1\r\n", b"*1\r\n:1\r\n", b"*1\r\n*1\r\n",
    b"*1\r\n$4\r\nPINGxx", b"*1\r\n$4\r\nPI", b"*1\r\n$" + str(MAX_FRAME + 1).encode() + b"\r\n",
    b"*1\r\n$" + str(2 ** 63).encode() + b"\r\n", b"*1\r\n$4\nPING\r\n",
    b"*" + b"1" * 70, b"*1\r\n$" + b"9" * 70, b"SUBMIT {}\r\n", b"GET {\"id\":\"x\"}\r\n",
    b"P" * 2000, b"\r\n" * 5000 + b"PING\r\n", b"\x00\x01\x02\r\n", b"$4\r\nPING\r\n",
    b"+PING\r\n", b"-ERR x\r\n", b"PING", b"*2\r\n$4\r\nPING\r\n"])
malformed = st.one_of(_bad_heads, st.binary(min_size=1, max_size=300),
                      st.tuples(_bad_heads, st.binary(max_size=50)).map(b"".join))
