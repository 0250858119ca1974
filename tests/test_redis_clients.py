"""Stock Redis client libraries on the protocol port, with their defaults (issue 11).

redis-py here (the test extra installs it); node-redis and ioredis in test_redis_clients_node.py.
Each connects as its documentation shows, the API key as the password, and then runs our
commands through its generic call: submit, fetch, ack, fail against a real broker.
"""

from __future__ import annotations

import json

import pytest
import redis

from taskqueue import resp
from tests.api_support import KEYS, key_entries, module_broker
from tests.test_broker_protocol import Raw

ADMIN_KEY = KEYS["admin"][0]
READ_KEY = KEYS["read"][0]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    proc = module_broker(tmp_path_factory, "redis-auth",
                         {"auth": {"enabled": True, "api_keys": key_entries()}})
    yield proc
    proc.stop()


def connect(addr: str, **options) -> redis.Redis:
    host, port = addr.split(":")
    return redis.Redis(host=host, port=int(port), socket_timeout=10, **options)


def call(r: redis.Redis, command: str, arg=None):
    """One of our commands through redis-py's generic call: JSON in, JSON (or OK) out."""
    reply = r.execute_command(command) if arg is None else \
        r.execute_command(command, json.dumps(arg))
    if isinstance(reply, bytes) and reply[:1] in (b"{", b"["):
        return json.loads(reply)
    return reply


def round_trip(r: redis.Redis, queue: str) -> None:
    """Submit two tasks, take both as a worker, ack one and fail the other for good."""
    first = call(r, "SUBMIT", {"type": "echo", "queue": queue, "payload": {"n": 1}})
    second = call(r, "SUBMIT", {"type": "echo", "queue": queue, "payload": {"n": 2}})
    assert first["status"] == "pending"
    assert call(r, "GET", {"id": first["id"]})["payload"] == {"n": 1}
    # The same connection becomes a worker's: the broker's HELLO, no key again (AUTH had it).
    hello = call(r, "HELLO", {"v": 1, "worker_id": f"redis-py-{queue}", "queues": [queue]})
    assert hello["v"] == 1
    jobs = call(r, "FETCH", {"queues": [queue], "count": 2, "timeout_ms": 2000})
    assert [j["id"] for j in jobs] == [first["id"], second["id"]]
    assert call(r, "ACK", {"id": jobs[0]["id"], "token": jobs[0]["token"],
                           "result": "done"}) in (b"OK", "OK", True)
    assert call(r, "FAIL", {"id": jobs[1]["id"], "token": jobs[1]["token"],
                            "error": "ValueError: no", "retry": False}) in (b"OK", "OK", True)
    assert call(r, "GET", {"id": first["id"]})["status"] == "completed"
    assert call(r, "GET", {"id": first["id"]})["result"] == "done"
    assert call(r, "GET", {"id": second["id"]})["status"] == "dead"
    # Nothing left: the empty FETCH's null arrives as this protocol version's null.
    assert call(r, "FETCH", {"queues": [queue], "timeout_ms": 0}) is None


def test_redis_py_defaults_with_an_api_key(secured):
    """redis-py 8's defaults: RESP3, `HELLO 3 AUTH default <key>`, CLIENT SETINFO."""
    r = connect(secured.addr, password=ADMIN_KEY)
    assert r.ping() is True
    conn = r.connection_pool.get_connection()
    assert conn.protocol == 3  # the default: HELLO 3 was answered, RESP3 it is
    assert conn.handshake_metadata[b"proto"] == 3
    r.connection_pool.release(conn)
    round_trip(r, "redispy3")
    r.close()


def test_redis_py_resp2_with_username_and_password(secured):
    """RESP2: `AUTH user pass` (the user name is not used), then the same commands."""
    r = connect(secured.addr, protocol=2, username="whoever", password=ADMIN_KEY,
                client_name="producer-1")
    round_trip(r, "redispy2")
    assert r.client_getname() in (b"producer-1", "producer-1")
    r.close()


def test_a_wrong_or_missing_key_is_refused(secured):
    with pytest.raises(redis.AuthenticationError):
        connect(secured.addr, password="not-a-key").ping()
    with pytest.raises(redis.AuthenticationError):
        connect(secured.addr, protocol=2, password="not-a-key").ping()
    # No password: the client connects (HELLO 3 picks the protocol) but gets nothing.
    r = connect(secured.addr)
    with pytest.raises(redis.AuthenticationError, match="AUTH"):
        r.execute_command("SUBMIT", json.dumps({"type": "echo"}))
    with pytest.raises(redis.AuthenticationError):
        r.execute_command("INFO")
    # A key without the permission is still refused the command.
    reader = connect(secured.addr, password=READ_KEY)
    with pytest.raises(redis.ResponseError, match="submit_tasks"):
        reader.execute_command("SUBMIT", json.dumps({"type": "echo", "queue": "noperm"}))
    r.close()
    reader.close()


def test_redis_py_defaults_without_auth(broker):
    """Auth off: redis-py with no password at all works after its HELLO 3."""
    r = connect(broker.addr)
    round_trip(r, "noauth")
    info = r.info()
    assert info["loading"] == 0 and info["tq_role"] == "single"
    r.close()


def test_handshake_forms_on_the_wire(broker):
    """What each library sends, byte for byte, and the replies they rely on."""
    raw = Raw(broker.addr)
    assert raw.call("HELLO", "4").code == "NOPROTO"  # ioredis falls back to RESP2 on this
    assert raw.call("HELLO", "x").code == "BADREQ"
    two = raw.call("HELLO", "2", "SETNAME", "n1")  # RESP2: a flat array of pairs
    assert dict(zip(two[::2], two[1::2]))[b"proto"] == 2
    assert raw.call("CLIENT", "GETNAME") == b"n1"
    assert raw.call("CLIENT", "SETINFO", "LIB-NAME", "x") == "OK"
    assert raw.call("CLIENT", "SETINFO", "LIB-VER", "1.0") == "OK"
    assert isinstance(raw.call("CLIENT", "MAINT_NOTIFICATIONS", "ON", "moving-endpoint-type",
                               "none"), resp.Error)  # the libraries go on without it
    assert raw.call("SELECT", "0") == "OK"
    assert isinstance(raw.call("SELECT", "1"), resp.Error)
    assert b"loading:0" in raw.call("INFO")
    # The broker's own HELLO is unchanged on the same connection (a worker's here).
    assert json.loads(raw.hello(worker_id="wire-w"))["v"] == 1
    assert read_exactly(raw, resp.encode_request("HELLO", "3"), 5) == b"%10\r\n"  # a map
    read_all(raw)
    # RESP3's own null for a FETCH that found nothing (RESP2's $-1 breaks its parsers).
    assert read_exactly(raw, resp.encode_request("FETCH", '{"timeout_ms": 0}'), 3) == b"_\r\n"


def read_exactly(raw: Raw, request: bytes, n: int) -> bytes:
    raw.send(request)
    data = b""
    while len(data) < n:
        data += raw.sock.recv(n - len(data))
    return data


def read_all(raw: Raw) -> None:
    """Drain what is left of a reply (the rest of HELLO 3's map)."""
    raw.sock.settimeout(0.5)
    try:
        while raw.sock.recv(65536):
            pass
    except OSError:
        pass
    raw.sock.settimeout(5)


def test_commands_pipelined_behind_auth_wait_for_its_outcome(secured):
    """A client may pipeline its handshake and first command (as redis-py's pipelines and
    ioredis' offline queue do): the command runs once AUTH is checked, with its principal."""
    submit = json.dumps({"type": "echo", "queue": "pipelined-auth"})
    for handshake in (("AUTH", ADMIN_KEY), ("AUTH", "default", ADMIN_KEY),
                      ("HELLO", "2", "AUTH", "default", ADMIN_KEY)):
        raw = Raw(secured.addr)
        raw.send(resp.encode_request(*handshake) + resp.encode_request("SUBMIT", submit)
                 + resp.encode_request("PING"))
        first = raw.reply()
        assert not isinstance(first, resp.Error), first
        task = raw.reply()
        assert not isinstance(task, resp.Error), (handshake, task)
        assert json.loads(task)["status"] == "pending"
        assert raw.reply() == "PONG"
        raw.sock.close()
    # A wrong key pipelined with a command: the AUTH error, the command refused (it never
    # runs), then the connection closes.
    raw = Raw(secured.addr)
    raw.send(resp.encode_request("AUTH", "not-a-key") + resp.encode_request("SUBMIT", submit))
    assert raw.reply().code == "NOAUTH"
    assert raw.reply().code == "NOAUTH"  # the SUBMIT, refused after AUTH's outcome
    assert raw.closed()
    r = connect(secured.addr, password=ADMIN_KEY)
    assert call(r, "QUEUES")["queues"]["pipelined-auth"]["pending"] == 3
    r.close()
