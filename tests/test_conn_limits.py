"""Connection lifecycle limits against real broker processes and real sockets (issue 10,
items 3-5): handshake timeout, unauthenticated connections counted apart, slow senders
dropped (RESP and REST), flow control for clients that do not read, bounded bcrypt checks.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import bcrypt
import httpx
import pytest

from taskqueue import resp
from taskqueue.client import Client
from tests.api_support import ports, start_api_broker


class Raw:
    """A bare RESP socket, optionally from another loopback source address."""

    def __init__(self, addr: str, source: str | None = None, rcvbuf: int | None = None,
                 timeout: float = 5):
        host, port = addr.split(":")
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, int(port)))
        self.parser = resp.ReplyParser()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def call(self, *args):
        self.send(resp.encode_request(*args))
        return self.reply()

    def hello(self, **extra):
        return self.call("HELLO", json.dumps({"v": 1, **extra}))

    def reply(self):
        while True:
            value = self.parser.get()
            if value is not resp.ReplyParser.NEED_MORE:
                return value
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by broker")
            self.parser.feed(chunk)

    def closed_within(self, secs: float) -> tuple[bool, list]:
        """Read until EOF (True) or ``secs`` pass (False); also the replies read."""
        deadline = time.monotonic() + secs
        replies = []
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionError:
                return True, replies
            if not chunk:
                return True, replies
            self.parser.feed(chunk)
            while (value := self.parser.get()) is not resp.ReplyParser.NEED_MORE:
                replies.append(value)
        return False, replies

    def close(self) -> None:
        self.sock.close()


def codes(replies) -> list[str]:
    return [r.code for r in replies if isinstance(r, resp.Error)]


def rss_kb(proc) -> int:
    with open(f"/proc/{proc.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def timed_ping(addr: str) -> float:
    started = time.monotonic()
    with Client(addr) as client:
        client.queues()
    return time.monotonic() - started


# ------------------------------------------------------------------ item 3: handshake

def test_idle_connections_without_hello_do_not_lock_out_a_client(broker_factory):
    """49 connections that never say HELLO no longer take the places of real clients (the
    old broker answered the 50th -MAXCONN for as long as they stayed), and they are closed
    once broker.handshake_timeout_secs has passed."""
    b = broker_factory({"broker": {"max_connections": 10, "handshake_timeout_secs": 1.5}})
    idle = [Raw(b.addr) for _ in range(49)]
    time.sleep(0.2)
    with Client(b.addr) as client:
        assert client.submit("echo", 1)["status"] == "pending"
    for raw in idle:
        closed, replies = raw.closed_within(4)
        assert closed and codes(replies) == ["NOAUTH"]
        raw.close()


def test_a_flood_of_unauthenticated_connections_closes_the_oldest(broker_factory):
    b = broker_factory({"broker": {"max_unauthenticated_connections": 5,
                                   "handshake_timeout_secs": 30}})
    first = [Raw(b.addr) for _ in range(5)]
    assert all(r.call("PING") == "PONG" for r in first)
    newcomer = Raw(b.addr)
    closed, replies = first[0].closed_within(3)
    assert closed and codes(replies) == ["MAXCONN"]
    assert isinstance(newcomer.hello(), bytes)  # the newest gets its turn
    # An authenticated connection no longer counts among the unauthenticated five.
    more = [Raw(b.addr) for _ in range(4)]
    assert all(r.call("PING") == "PONG" for r in more)
    assert newcomer.call("PING") == "PONG"


def test_a_slow_sender_is_dropped_before_and_after_hello(broker_factory):
    b = broker_factory({"broker": {"request_timeout_secs": 1, "handshake_timeout_secs": 60}})
    frame = resp.encode_request("SUBMIT", json.dumps({"type": "echo", "payload": "x" * 50}))
    for say_hello in (False, True):
        raw = Raw(b.addr)
        if say_hello:
            assert isinstance(raw.hello(), bytes)
        started = time.monotonic()
        closed = False
        for byte in frame:  # one byte every 0.1 s: 9 s for the frame
            try:
                raw.send(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > 4:
                break
        if not closed:
            closed, replies = raw.closed_within(1)
        assert closed, "a one-byte-per-0.1s sender kept its connection for 4 s"
        assert time.monotonic() - started < 4
        raw.close()


def test_a_steady_pipeline_is_not_taken_for_a_slow_sender(broker_factory):
    """The request clock restarts at every complete request: a client streaming requests
    for longer than request_timeout_secs, every read ending mid-frame, keeps its connection."""
    b = broker_factory({"broker": {"request_timeout_secs": 0.5}})
    raw = Raw(b.addr)
    assert isinstance(raw.hello(), bytes)
    ping = resp.encode_request("PING")
    stream = ping * 2
    ended = time.monotonic() + 2
    while time.monotonic() < ended:
        raw.send(stream[:len(ping) + 3])  # one PING and the start of the next
        time.sleep(0.05)
        raw.send(stream[len(ping) + 3:])
        assert raw.reply() == "PONG" and raw.reply() == "PONG"


def test_rest_slow_header_and_slow_body_are_dropped(broker_factory):
    b = start_api_broker(broker_factory, {"broker": {"request_timeout_secs": 1}})
    rest_port = ports(b)["rest"]
    head = b"POST /api/v1/tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    body = b'{"type": "echo", "payload": "' + b"x" * 100 + b'"}'
    for prefix, trickle in ((b"", head + b"X-Slow: " + b"a" * 200),
                            (head + b"Content-Length: %d\r\n\r\n" % len(body), body)):
        sock = socket.create_connection(("127.0.0.1", rest_port), timeout=5)
        sock.sendall(prefix)
        sock.settimeout(0.1)
        started = time.monotonic()
        closed = False
        for byte in trickle:  # one byte every 0.1 s
            try:
                sock.sendall(bytes([byte]))
                while sock.recv(65536):  # a 408, then the end of the connection
                    pass
                closed = True
                break
            except socket.timeout:
                pass
            except OSError:
                closed = True
                break
            if time.monotonic() - started > 5:
                break
        sock.close()
        assert closed and time.monotonic() - started < 5, prefix[:20]
    # A normal request still works, and a long poll is not cut by the request clock.
    with httpx.Client(base_url=f"http://127.0.0.1:{rest_port}") as http:
        task = http.post("/api/v1/tasks", json={"type": "echo"}).json()
        started = time.monotonic()
        r = http.get(f"/api/v1/tasks/{task['id']}", params={"wait": "2"})
        assert r.status_code == 200 and time.monotonic() - started >= 1.9


# ----------------------------------------------------------------- item 4: flow control

@pytest.mark.slow
def test_a_client_that_never_reads_big_replies_does_not_grow_the_broker(broker_factory):
    """A read-only client pipelining LIST without reading: the old broker computed and
    buffered every reply (33 MB from 74 KB of requests). Now it stops reading once
    broker.reply_buffer_bytes are waiting, and the others are served meanwhile."""
    b = broker_factory({"broker": {"queue_depth_threshold": 100000}})
    with Client(b.addr) as client:
        for i in range(10):
            client.submit_bulk([{"type": "echo", "queue": "big", "payload": "p" * 2000}
                                for _ in range(100)])
    time.sleep(0.5)
    before = rss_kb(b)
    hog = Raw(b.addr, rcvbuf=32 * 1024)
    assert isinstance(hog.hello(), bytes)
    listing = resp.encode_request("LIST", json.dumps({"queue": "big", "limit": 1000}))
    hog.sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 5
    while sent < 400 and time.monotonic() < deadline:  # 400 replies of ~2.2 MB each
        try:
            hog.sock.send(listing)
            sent += 1
        except BlockingIOError:
            time.sleep(0.05)
    time.sleep(2)
    latencies = [timed_ping(b.addr) for _ in range(5)]
    grown_mb = (rss_kb(b) - before) / 1024
    hog.close()
    assert grown_mb < 60, f"broker RSS grew {grown_mb:.0f} MB"
    assert max(latencies) < 1.0, latencies


@pytest.mark.slow
def test_a_pipelined_flood_before_hello_neither_grows_the_broker_nor_stalls_others(
        broker_factory):
    b = broker_factory({"broker": {"handshake_timeout_secs": 30}})
    time.sleep(0.3)
    before = rss_kb(b)
    flood = Raw(b.addr, rcvbuf=32 * 1024)
    chunk = resp.encode_request("SUBMIT", '{"type": "echo"}') * 20000  # ~0.7 MB, NOAUTH each
    stop = threading.Event()
    sent = [0]

    def push():
        flood.sock.settimeout(0.2)
        while not stop.is_set() and sent[0] < 40 * 1024 * 1024:
            try:
                sent[0] += flood.sock.send(chunk)
            except socket.timeout:
                continue
            except OSError:
                return

    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    time.sleep(3)
    latencies = [timed_ping(b.addr) for _ in range(5)]
    grown_mb = (rss_kb(b) - before) / 1024
    stop.set()
    thread.join(5)
    flood.close()
    assert grown_mb < 30, f"broker RSS grew {grown_mb:.0f} MB after {sent[0] >> 20} MB sent"
    assert max(latencies) < 1.0, latencies


# ------------------------------------------------------------------ item 5: bcrypt

RIGHT_KEY = "the-right-key-0123456789"


@pytest.fixture
def auth_broker(broker_factory):
    # Cost 10, as production hashes are: one check takes tens of milliseconds.
    entry = {"name": "ops", "permissions": ["admin"],
             "key_hash": bcrypt.hashpw(RIGHT_KEY.encode(), bcrypt.gensalt(10)).decode()}
    return start_api_broker(broker_factory, {
        "auth": {"enabled": True, "api_keys": [entry], "failed_attempt_delay_secs": 0.3},
        "broker": {"handshake_timeout_secs": 30}})


def metric(proc, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{ports(proc)['metrics']}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


@pytest.mark.slow
def test_many_wrong_keys_do_not_block_a_right_key(auth_broker):
    """100 pipelined wrong HELLOs on one connection and 8 more connections with a wrong
    key: the old broker queued all 108 bcrypt checks on its one thread (seconds) before a
    legitimate first login from another address. Now one HELLO at a time per connection
    and one check at a time per address: the right key waits at most about one check."""
    b = auth_broker
    wrong = resp.encode_request("HELLO", json.dumps({"v": 1, "api_key": "wrong-key"}))
    pipelined = Raw(b.addr)
    pipelined.send(wrong * 100)
    # 8, not more: each waits its turn behind a growing per-address delay (20 took 70 s).
    others = [Raw(b.addr) for _ in range(8)]
    for raw in others:
        raw.send(wrong)
    time.sleep(0.1)
    started = time.monotonic()
    legit = Raw(b.addr, source="127.0.0.2", timeout=30)
    reply = legit.hello(api_key=RIGHT_KEY)
    took = time.monotonic() - started
    assert isinstance(reply, bytes), reply
    assert took < 1.5, f"the right key waited {took:.2f}s"
    # The pipelined connection got one NOAUTH, then was closed: 99 HELLOs never ran.
    closed, replies = pipelined.closed_within(15)
    assert closed and codes(replies) == ["NOAUTH"]
    for raw in others:
        closed, replies = raw.closed_within(15)
        assert closed and codes(replies) in (["NOAUTH"], ["UNAVAILABLE"])
    assert metric(b, 'tq_auth_failures_total{reason="invalid_key"}') >= 2


def test_failed_attempts_slow_down_their_address_only(auth_broker):
    b = auth_broker
    times = []
    for _ in range(3):
        raw = Raw(b.addr, timeout=30)
        started = time.monotonic()
        assert raw.hello(api_key="wrong-key").code == "NOAUTH"
        times.append(time.monotonic() - started)
        raw.close()
    # 0.3 s after the first failure, 0.6 s after the second (failed_attempt_delay_secs).
    assert times[1] >= 0.28 and times[2] >= 0.55, times
    other = Raw(b.addr, source="127.0.0.3", timeout=30)
    started = time.monotonic()
    assert isinstance(other.hello(api_key=RIGHT_KEY), bytes)
    assert time.monotonic() - started < 0.5
    # A success from the slowed address forgets its failures.
    raw = Raw(b.addr, timeout=30)
    assert isinstance(raw.hello(api_key=RIGHT_KEY), bytes)
    raw = Raw(b.addr, timeout=30)
    started = time.monotonic()
    assert raw.hello(api_key="wrong-again").code == "NOAUTH"
    assert time.monotonic() - started < 0.28
    assert metric(b, 'tq_auth_failures_total{reason="invalid_key"}') >= 4


def test_a_key_longer_than_bcrypt_can_check_is_refused_clearly(auth_broker):
    raw = Raw(auth_broker.addr)
    err = raw.hello(api_key="k" * 73)
    assert err.code == "NOAUTH" and "72 bytes" in err.message
    assert metric(auth_broker, 'tq_auth_failures_total{reason="key_too_long"}') >= 1


# ------------------------------------------------------------------ inline commands

def test_only_ping_and_quit_are_accepted_inline(broker):
    raw = Raw(broker.addr)
    raw.send(b'SUBMIT {"type":"echo"}\r\n')
    err = raw.reply()
    assert err.code == "BADREQ" and "inline" in err.message
    raw.send(b"PING\r\n")
    assert raw.reply() == "PONG"  # the connection stays usable
    assert isinstance(raw.hello(), bytes)
    raw.send(b'GET {"id":"x"}\r\n')
    assert raw.reply().code == "BADREQ"
    raw.send(b"QUIT\r\n")
    assert raw.reply() == "OK"
