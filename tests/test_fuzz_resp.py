"""A RESP frame and JSON fuzzer against one real broker process (issue 10, "Tests that prove
it"), auth on, with every kind of key.

Each example opens a connection as some principal (nobody, each permission, a worker),
sends fuzzed requests (every command, edge-valued JSON: depths around the 64 limit, sizes
around the payload and frame limits, names with a trailing newline, NaN, huge numbers...) or
a malformed byte stream, and then checks:

* every request is answered (or the connection closed) within a bound: nothing hangs;
* no reply is INTERNAL and every error code is a documented one; the process lives;
* a legitimate client on another connection still gets a write and a read answered, and a
  new connection is accepted, within PROBE_BOUND;
* when nothing the example sent succeeded at changing tasks, the task table is unchanged
  (time alone may move scheduled tasks and leases; nothing else may change).

The quick part runs a few hundred examples; the slow-marked part more of them. The seed is
random per run and printed; ``TQ_FUZZ_SEED=<n>`` replays a run.
"""

from __future__ import annotations

import json
import socket
import time

import bcrypt
import httpx
import pytest
from hypothesis import HealthCheck, event, given, note, seed, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

from taskqueue import resp
from taskqueue.client import Client
from tests import fuzz_support as fz
from tests.api_support import KEYS, key_entries, module_broker, rest_url

PROBE_BOUND = 3.0  # seconds a legitimate client may wait after an example (loaded CI)
REPLY_BOUND = 8.0  # seconds within which every fuzzed request must be answered
# Examples per run: the quick tests together stay under ~10 s on the CI machine, the slow
# ones (with the cluster fuzzer) under 90 s.
QUICK_EXAMPLES, QUICK_STREAMS, QUICK_REST = 180, 80, 60
LONG_EXAMPLES, LONG_STREAMS = 600, 300

PRINCIPALS = ["none", "admin", "submit", "read", "cancel", "worker", "worker+id",
              "admin+id", "redis-auth"]
ALL_KEYS = dict(KEYS, worker=fz.WORKER_KEY)


def fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=False, database=None,
                    print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


class Target:
    """The module's broker, an admin connection that reads task tables, and the probe."""

    def __init__(self, proc):
        self.proc = proc
        self.addr = proc.addr
        self.reader = self.open("admin")
        self.probe = Client(self.addr, api_key=KEYS["admin"][0], connect_timeout=PROBE_BOUND,
                            reply_timeout=PROBE_BOUND)
        self.probe.connect()
        self.probe_paused = False
        self.table = None

    def open(self, principal: str) -> fz.Wire:
        wire = fz.Wire(self.addr, timeout=REPLY_BOUND)
        handshake(wire, principal)
        return wire

    def read_table(self) -> dict:
        def call(command, arg):
            return self.reader.call(command, arg, timeout=REPLY_BOUND)
        return fz.task_table(call)

    def check_service(self, context) -> None:
        """A legitimate client still gets service: a write, a read, a new connection."""
        assert self.proc.proc.poll() is None, f"broker died: {context}\n{self.proc.logs()}"
        started = time.monotonic()
        # PAUSE/RESUME of a queue nobody uses: a replicated write that touches no task.
        if self.probe_paused:
            self.probe.resume("fz-probe")
        else:
            self.probe.pause("fz-probe")
        self.probe_paused = not self.probe_paused
        assert self.probe.get("fz-pending-0")["id"] == "fz-pending-0"
        with socket.create_connection(("127.0.0.1", self.proc.port), timeout=PROBE_BOUND) as s:
            s.sendall(b"PING\r\n")
            assert s.recv(16).startswith(b"+PONG")
        took = time.monotonic() - started
        assert took < PROBE_BOUND, f"legitimate client waited {took:.2f}s after {context}"

    def check_unchanged(self, changed: bool, context) -> None:
        before, after = self.table, self.read_table()
        self.table = after  # the next example's baseline, even if this one fails
        if not changed and before is not None:
            odd = fz.unexplained_changes(before, after)
            assert not odd, ("rejected input changed tasks", context, len(odd),
                             {i: (before.get(i), after.get(i)) for i in odd[:3]})


def handshake(wire: fz.Wire, principal: str) -> None:
    if principal == "none":
        return
    if principal == "redis-auth":
        assert wire.call("AUTH", KEYS["read"][0]) == "OK"
        return
    name, _, worker = principal.partition("+")
    fields = {"api_key": ALL_KEYS[name][0]}
    if worker:
        fields["worker_id"] = f"fz-conn-{name}"
    reply = wire.hello(timeout=REPLY_BOUND, **fields)
    assert isinstance(reply, bytes), (principal, reply)


def seed_tasks(addr: str) -> None:
    """Tasks in every state, with a one-hour lease on the running one (time changes none)."""
    admin = KEYS["admin"][0]
    with Client(addr, api_key=admin) as c:
        for i in range(2):
            c.submit("t", {"i": i}, id=f"fz-pending-{i}", queue="fz-q")
        c.submit("t", None, id="fz-scheduled", queue="fz-q", delay_secs=86400)
        c.submit("t", None, id="fz-cancelled", queue="fz-q")
        c.cancel("fz-cancelled")
        for task_id in ("fz-running", "fz-done", "fz-dead"):
            c.submit("t", None, id=task_id, queue=f"fz-seed-{task_id}")
    holder = Client(addr, api_key=admin, identity={"worker_id": "fz-holder-1"})
    holder.connect()
    jobs = {}
    for task_id in ("fz-running", "fz-done", "fz-dead"):
        [job] = holder.fetch([f"fz-seed-{task_id}"], timeout_ms=1000)
        jobs[task_id] = job
    holder.ack("fz-done", jobs["fz-done"]["token"], {"ok": True})
    holder.fail("fz-dead", jobs["fz-dead"]["token"], "boom", retry=False)
    holder.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    keys = key_entries() + [{"name": "worker", "permissions": fz.WORKER_KEY[1],
                             "key_hash": bcrypt.hashpw(fz.WORKER_KEY[0].encode(),
                                                       bcrypt.gensalt(4)).decode()}]
    proc = module_broker(tmp_path_factory, "fuzz", {
        "auth": {"enabled": True, "api_keys": keys},
        "broker": {"max_frame_bytes": fz.MAX_FRAME, "max_payload_bytes": fz.MAX_PAYLOAD,
                   "request_timeout_secs": 3, "handshake_timeout_secs": 3},
        "worker": {"lease_timeout_secs": 3600}})
    try:
        seed_tasks(proc.addr)
        target = Target(proc)
        target.table = target.read_table()
        yield target
        # Nothing the fuzzer sent made the broker log a bug.
        log = proc.log_path.read_text(errors="replace")
        for marker in ("internal error", "Traceback", "Task exception was never retrieved",
                       "Exception in callback", "Future exception was never retrieved"):
            assert marker not in log, f"{marker!r} in the broker log:\n{log[-4000:]}"
    finally:
        proc.stop()


# ----------------------------------------------------------------------- one example

def run_requests(target: Target, principal: str, requests: list[list[bytes]]) -> list:
    """Send ``requests`` pipelined on a new connection, then PING; read every reply."""
    context = (principal, [[a[:120] for a in r] for r in requests])
    wire = target.open(principal)
    replies = []
    try:
        for request in requests:
            wire.send(fz.encode(request))
        wire.send(resp.encode_request("PING"))
        deadline = time.monotonic() + REPLY_BOUND
        for _ in range(len(requests) + 1):
            try:
                replies.append(wire.reply(deadline))
            except fz.Closed:
                break
            except fz.Timeout:
                pytest.fail(f"no reply within {REPLY_BOUND}s: the broker hangs on {context}")
    finally:
        wire.close()
    for request, reply in zip(requests, replies):
        fz.check_reply(reply, context)
        record(request, reply)
    changed = any(fz.changed_state(r[0].decode(errors="replace"), reply)
                  for r, reply in zip(requests, replies))
    target.check_service(context)
    target.check_unchanged(changed, context)
    return replies


def record(request: list[bytes], reply) -> None:
    """What the examples reached (``--hypothesis-show-statistics`` lists it)."""
    if currently_in_test_context():
        event(f"{request[0][:20].decode(errors='replace')}: {fz.error_code(reply) or 'ok'}")


def run_stream(target: Target, principal: str, prefix: list[list[bytes]],
               data: bytes) -> list:
    """Send well-formed ``prefix`` requests and a (malformed) byte stream after them, close
    our side, read until the broker closes."""
    context = (principal, [[a[:120] for a in r] for r in prefix], data[:200])
    wire = target.open(principal)
    try:
        wire.send(b"".join(map(fz.encode, prefix)) + data)
        try:
            wire.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        try:
            replies = wire.replies_until_eof(time.monotonic() + REPLY_BOUND)
        except fz.Timeout:
            pytest.fail(f"the broker neither answered nor closed within {REPLY_BOUND}s: "
                        f"{context}")
    finally:
        wire.close()
    for reply in replies:
        fz.check_reply(reply, context)
    # A prefix request may have been run although its reply was lost with the connection:
    # only one answered with an error surely changed nothing. (The probe's write, proposed
    # after it, is what check_unchanged reads after.)
    answered = replies[:len(prefix)] + [None] * (len(prefix) - len(replies))
    changed = any(fz.changed_state(r[0].decode(errors="replace"), reply)
                  for r, reply in zip(prefix, answered))
    target.check_service(context)
    target.check_unchanged(changed, context)
    return replies


# Mostly principals that may do things, so that requests get past the permission check.
principals = st.sampled_from(["admin+id", "worker+id", "admin", "submit"] + PRINCIPALS)
request_lists = st.lists(fz.requests(), min_size=1, max_size=4)


SEED_NOTE = f"fuzz seed {fz.SEED} (replay: TQ_FUZZ_SEED={fz.SEED})"


def fuzz(examples: int):
    """The settings of every fuzz test here; the seed is chosen per run (see fuzz_support)."""
    def wrap(test):
        return seed(fz.SEED)(fuzz_settings(examples)(test))
    return wrap


@fuzz(QUICK_EXAMPLES)
@given(principal=principals, requests=request_lists)
def test_fuzzed_requests_quick(target, principal, requests):
    note(SEED_NOTE)
    run_requests(target, principal, requests)


@fuzz(QUICK_STREAMS)
@given(principal=principals, prefix=st.lists(fz.requests(), max_size=2), data=fz.malformed)
def test_fuzzed_malformed_streams_quick(target, principal, prefix, data):
    note(SEED_NOTE)
    run_stream(target, principal, prefix, data)


@pytest.mark.slow
@fuzz(LONG_EXAMPLES)
@given(principal=principals, requests=request_lists)
def test_fuzzed_requests_long(target, principal, requests):
    note(SEED_NOTE)
    run_requests(target, principal, requests)


@pytest.mark.slow
@fuzz(LONG_STREAMS)
@given(principal=principals, prefix=st.lists(fz.requests(), max_size=2), data=fz.malformed)
def test_fuzzed_malformed_streams_long(target, principal, prefix, data):
    note(SEED_NOTE)
    run_stream(target, principal, prefix, data)


# ------------------------------------------------ every command with every permission

# The permission each command needs (docs/protocol.md, Commands), and an argument that is
# valid, so that only the permission decides. "worker": a worker connection.
NEEDS = {
    "SUBMIT": ("submit_tasks", {"type": "t", "queue": "fz-perm"}),
    "WORKFLOW-SUBMIT": ("submit_tasks", {"workflow": {"chain": [{"type": "t",
                                                                  "queue": "fz-perm"}]}}),
    "GET": ("read_tasks", {"id": "fz-pending-0"}),
    "WAIT-TASK": ("read_tasks", {"id": "fz-done", "timeout_ms": 0}),
    "LIST": ("read_tasks", {"limit": 1}),
    "QUEUES": ("read_tasks", None),
    "WORKERS": ("read_tasks", None),
    "STATS": ("read_tasks", None),
    "CLUSTER": ("read_tasks", None),
    "LIMIT-GET": ("read_tasks", {}),
    "WORKFLOW-GET": ("read_tasks", {"id": "fz-no-such-flow"}),
    "SCHEDULE-GET": ("read_tasks", {"id": "fz-no-such-schedule"}),
    "SCHEDULE-LIST": ("read_tasks", {}),
    "CANCEL": ("cancel_tasks", {"id": "fz-done"}),
    "REQUEUE": ("cancel_tasks", {"id": "fz-pending-1"}),
    "WORKFLOW-CANCEL": ("cancel_tasks", {"id": "fz-no-such-flow"}),
    "PAUSE": ("admin", {"queue": "fz-perm-paused"}),
    "RESUME": ("admin", {"queue": "fz-perm-paused"}),
    "LIMIT-SET": ("admin", {"queue": "fz-perm-limit", "rate": 5}),
    "LIMIT-CLEAR": ("admin", {"queue": "fz-perm-limit"}),
    "WORKER-STATE": ("admin", {"worker_id": "fz-nobody", "state": "quiet"}),
    "SNAPSHOT": ("admin", {"path": "/"}),  # exists: refused after the permission check
    "SCHEDULE-CREATE": ("admin", {"id": "fz-perm-s", "interval_secs": 86400,
                                  "task": {"type": "t", "queue": "fz-perm"}}),
    "SCHEDULE-UPDATE": ("admin", {"id": "fz-perm-s", "interval_secs": 86400}),
    "SCHEDULE-PAUSE": ("admin", {"id": "fz-perm-s"}),
    "SCHEDULE-RESUME": ("admin", {"id": "fz-perm-s"}),
    "SCHEDULE-RUN": ("admin", {"id": "fz-no-such-schedule"}),
    "SCHEDULE-DELETE": ("admin", {"id": "fz-no-such-schedule"}),
    "FETCH": ("worker", {"queues": ["fz-perm-empty"], "timeout_ms": 0}),
    "ACK": ("worker", {"id": "fz-running", "token": "1-0000000000000000"}),
    "FAIL": ("worker", {"id": "fz-running", "token": "1-0000000000000000"}),
    "HEARTBEAT": ("worker", {"tasks": []}),
    "BYE": ("worker", None),
}


def allowed(principal: str, permission: str) -> bool:
    if principal == "none":
        return False
    name, _, worker = principal.partition("+")
    if principal == "redis-auth":
        name = "read"  # what handshake() authenticates it with
    perms = ALL_KEYS[name][1]
    if permission == "worker":
        return bool(worker)
    return "admin" in perms or permission in perms


def test_every_command_with_every_permission(target):
    assert set(NEEDS) | {"PING", "QUIT", "HELLO"} == set(fz.COMMANDS)
    for principal in PRINCIPALS:
        requests, expected = [], []
        for command, (permission, arg) in NEEDS.items():
            if command == "BYE":
                continue  # it ends the worker connection's identity: sent last, below
            requests.append([command.encode()] + ([json.dumps(arg).encode()]
                                                  if arg is not None else []))
            expected.append((command, permission))
        requests.append([b"BYE"])
        expected.append(("BYE", "worker"))
        replies = run_requests(target, principal, requests)
        assert len(replies) == len(requests) + 1 and replies[-1] == "PONG", replies
        for (command, permission), reply in zip(expected, replies):
            code = fz.error_code(reply)
            if principal == "none":
                assert code == "NOAUTH", (principal, command, reply)
            elif not allowed(principal, permission):
                wanted = "BADREQ" if permission == "worker" else "NOPERM"
                assert code == wanted, (principal, command, reply)
            else:
                assert code not in ("NOPERM", "NOAUTH"), (principal, command, reply)
    # A key that cannot work is refused a worker identity (HELLO), whatever it may read.
    for name in ("read", "submit", "cancel"):
        wire = fz.Wire(target.addr)
        reply = wire.hello(api_key=ALL_KEYS[name][0], worker_id="fz-would-be")
        wire.close()
        assert fz.error_code(reply) == "NOPERM", (name, reply)


# --------------------------------------------------------------- the issue's own cases

def deep(depth: int) -> str:
    return fz.nested_text(depth)


def sub(task: dict | list | str) -> list[bytes]:
    return [b"SUBMIT", (task if isinstance(task, str) else json.dumps(task)).encode()]


CASES = [
    # item 1: nesting; 64 levels are fine, 65 and the 300 that froze a Raft node are not
    ("depth 300 payload", "admin", [sub('{"type":"t","payload":' + deep(300) + "}")],
     ["BADREQ"]),
    ("depth 65 payload", "admin", [sub('{"type":"t","queue":"fz-edge","payload":' + deep(65)
                                       + "}")], ["BADREQ"]),
    ("depth 300 in a bulk", "admin", [sub('[{"type":"t"},{"type":"t","payload":' + deep(300)
                                          + "}]")], ["BADREQ"]),
    ("depth 1025 (the parser's limit)", "admin", [sub(deep(1025))], ["BADREQ"]),
    ("depth 300 ACK result", "worker+id",
     [[b"ACK", ('{"id":"fz-running","token":"1-1","result":' + deep(300) + "}").encode()]],
     ["BADREQ"]),
    ("depth 300 FAIL error", "worker+id",
     [[b"FAIL", ('{"id":"fz-running","token":"1-1","error":' + deep(300) + "}").encode()]],
     ["BADREQ"]),
    # low: names are matched whole
    ("queue with a trailing newline", "admin", [sub({"type": "t", "queue": "emails\n"})],
     ["BADREQ"]),
    ("id with a trailing newline", "admin", [sub({"type": "t", "id": "fz-x\n"})], ["BADREQ"]),
    ("GET id with a trailing newline", "read", [[b"GET", b'{"id":"fz-done\\n"}']], ["BADREQ"]),
    # low: the stored size is what is checked (1e5 is stored as 100000.0)
    ("re-encoded payload over the limit", "admin",
     [sub('{"type":"t","payload":[' + ",".join(["1e5"] * 1000) + "]}")], ["TOOLARGE"]),
    ("payload one byte over", "admin",
     [sub({"type": "t", "payload": "x" * (fz.MAX_PAYLOAD - 1)})], ["TOOLARGE"]),
    # bulk bounds: validated whole; 1001 refused
    ("bulk of 1001", "admin", [sub([{"type": "t"}] * 1001)], ["BADREQ"]),
    ("bulk of 1000 with one bad task", "admin",
     [sub([{"type": "t", "queue": "fz-bulk"}] * 999 + [{"type": ""}])], ["BADREQ"]),
    ("FETCH count 1001", "worker+id", [[b"FETCH", b'{"count":1001,"timeout_ms":0}']],
     ["BADREQ"]),
    # item 2: guessed tokens from another worker settle nothing
    ("1000 guessed tokens", "worker+id",
     [[b"ACK", json.dumps([{"id": "fz-running", "token": f"{n}-{n:016x}"}
                           for n in range(1000)]).encode()]], ["LIST-OF-ERRORS"]),
    ("integer guessed tokens", "admin+id",
     [[b"ACK", json.dumps([{"id": "fz-running", "token": n} for n in range(1000)]).encode()]],
     ["LIST-OF-ERRORS"]),
    # item 3: requests before HELLO
    ("pipeline before HELLO", "none", [sub({"type": "t"})] * 50 + [[b"LIST", b"{}"]],
     ["NOAUTH"] * 51),
    # NaN / infinity / huge numbers
    ("NaN priority", "admin", [sub('{"type":"t","priority":NaN}')], ["BADREQ"]),
    ("1e400", "admin", [sub('{"type":"t","payload":1e400}')], ["BADREQ"]),
    ("huge integer", "admin", [sub('{"type":"t","priority":' + "9" * 5000 + "}")],
     ["BADREQ"]),
    ("lone surrogate", "admin", [sub('{"type":"t","queue":"\\ud800"}')], ["BADREQ"]),
    ("invalid UTF-8", "admin", [[b"SUBMIT", b'{"type":"\xff"}']], ["BADREQ"]),
    # found by this fuzzer: a WORKER-STATE without a (string) worker_id reached apply and
    # failed there (INTERNAL, command rolled back)
    ("WORKER-STATE without worker_id", "admin", [[b"WORKER-STATE", b'{"state":"quiet"}']],
     ["BADREQ"]),
    ("WORKER-STATE with a numeric worker_id", "admin",
     [[b"WORKER-STATE", b'{"worker_id":7,"state":"stop"}']], ["BADREQ"]),
    ("17 elements", "admin", [[b"PING"] * 17], None),  # closes: checked by the stream test
]


@pytest.mark.parametrize("name, principal, requests, codes",
                         [c for c in CASES if c[3] is not None], ids=lambda x: str(x)[:40])
def test_issue_cases_are_refused_and_change_nothing(target, name, principal, requests, codes):
    replies = run_requests(target, principal, requests)
    assert len(replies) == len(requests) + 1, (name, replies)
    assert replies[-1] == "PONG", (name, replies[-1])  # the connection is still usable
    for reply, code in zip(replies, codes):
        if code == "LIST-OF-ERRORS":
            entries = json.loads(reply)
            assert entries and all(set(e) == {"error"} for e in entries), entries[:3]
            assert {e["error"]["code"] for e in entries} <= {"LEASELOST", "BADREQ"}
        else:
            assert fz.error_code(reply) == code, (name, reply)


def test_the_holders_ack_still_works_after_guessed_tokens(target):
    """Another worker (even with the holder's real token) cannot settle a lease, and the
    holder's own ACK afterwards is the one that counts (issue 10, item 2)."""
    admin = KEYS["admin"][0]
    with Client(target.addr, api_key=admin) as c:
        c.submit("t", None, id="fz-lease", queue="fz-lease-q")
    holder = Client(target.addr, api_key=fz.WORKER_KEY[0], identity={"worker_id": "fz-h2"})
    holder.connect()
    [job] = holder.fetch(["fz-lease-q"], timeout_ms=1000)
    target.table = target.read_table()
    guesses = [{"id": "fz-lease", "token": job["token"]}] + [
        {"id": "fz-lease", "token": f"{n}-{n:016x}"} for n in range(999)]
    replies = run_requests(target, "worker+id", [[b"ACK", json.dumps(guesses).encode()],
                                                 [b"FAIL", json.dumps(guesses[0]).encode()]])
    assert all(set(e) == {"error"} for e in json.loads(replies[0]))
    assert fz.error_code(replies[1]) == "LEASELOST", replies[1]
    assert holder.ack("fz-lease", job["token"], {"mine": True}) == "OK"
    with Client(target.addr, api_key=admin) as c:
        task = c.get("fz-lease")
    holder.close()
    assert task["status"] == "completed" and task["result"] == {"mine": True}
    target.table = target.read_table()


@pytest.mark.parametrize("data, close", [
    (b"*17\r\n", True),
    (b"*1\r\n$" + str(fz.MAX_FRAME + 1).encode() + b"\r\n", True),
    (b"*1\r\n$4\r\nPINGxx", True),
    (b"SUBMIT {}\r\nPING\r\n", False),  # inline: only PING and QUIT
])
def test_frame_edges(target, data, close):
    wire = target.open("admin")
    wire.send(data)
    if not close:
        replies = [wire.reply(time.monotonic() + REPLY_BOUND) for _ in range(2)]
        assert fz.error_code(replies[0]) == "BADREQ" and replies[1] == "PONG", replies
    else:
        replies = wire.replies_until_eof(time.monotonic() + REPLY_BOUND)
        assert [fz.error_code(r) for r in replies] in (["BADREQ"], ["TOOLARGE"]), replies
    wire.close()
    target.check_service(data)
    target.check_unchanged(False, data)


def test_a_frame_of_exactly_max_frame_bytes_is_read_and_its_payload_refused(target):
    body = '{"type":"t","payload":"' + "x" * 10 + '"}'
    padding = fz.MAX_FRAME - len(body)
    body = '{"type":"t","payload":"' + "x" * (10 + padding) + '"}'
    assert len(body) == fz.MAX_FRAME
    replies = run_requests(target, "admin", [[b"SUBMIT", body.encode()]])
    assert fz.error_code(replies[0]) == "TOOLARGE" and replies[1] == "PONG", replies


# --------------------------------------------------------------------- REST, same JSON

# (method, path, body strategy) or, for a GET, (method, path prefix, query value strategy)
REST_ROUTES = [("POST", "/api/v1/tasks", fz.ARGS["SUBMIT"]),
               ("POST", "/api/v1/tasks/bulk", fz.ARGS["SUBMIT"]),
               ("POST", "/api/v1/workflows", fz.ARGS["WORKFLOW-SUBMIT"]),
               ("POST", "/api/v1/schedules", fz.schedule_objects),
               ("PUT", "/api/v1/queues/fz-rest/limit", fz.ARGS["LIMIT-SET"]),
               ("POST", "/api/v1/workers/fz-nobody/state", fz.ARGS["WORKER-STATE"]),
               ("POST", "/api/v1/tasks/fz-done/cancel", fz.json_values),
               ("GET", "/api/v1/tasks?limit=", fz.edge_numbers),
               ("GET", "/api/v1/tasks/fz-done?wait=", fz.edge_numbers)]


@pytest.fixture(scope="module")
def rest(target):
    with httpx.Client(base_url=rest_url(target.proc), timeout=REPLY_BOUND) as client:
        yield client


@fuzz(QUICK_REST)
@given(route=st.sampled_from(REST_ROUTES), data=st.data(),
       key=st.sampled_from([None, "admin", "submit", "read", "cancel", "worker"]),
       content_type=st.sampled_from(["application/json", "application/json", "text/plain",
                                     None]))
def test_fuzzed_rest_json_quick(target, rest, route, data, key, content_type):
    note(SEED_NOTE)
    method, path, strategy = route
    if method == "GET":
        path += str(data.draw(strategy))
        body = None
    else:
        body = data.draw(st.one_of(strategy.map(fz._dumps), fz.raw_json))
    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {ALL_KEYS[key][0]}"
    if content_type:
        headers["Content-Type"] = content_type
    context = (method, path, key, content_type, (body or b"")[:200])
    answer = rest.request(method, path, content=body, headers=headers)
    assert answer.status_code < 500, (answer.status_code, answer.text[:300], context)
    target.check_service(context)
    target.check_unchanged(answer.status_code < 400, context)
