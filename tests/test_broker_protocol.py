"""The worker protocol against a real broker process: errors, limits, lifecycle, restarts."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from taskqueue import resp
from taskqueue.client import Client
from taskqueue.errors import BrokerError
from tests.brokerproc import ROOT


class Raw:
    """A bare socket speaking RESP: for what a well-behaved client would never send."""

    def __init__(self, addr: str):
        host, port = addr.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.parser = resp.ReplyParser()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def call(self, *args):
        self.send(resp.encode_request(*args))
        return self.reply()

    def reply(self):
        while True:
            value = self.parser.get()
            if value is not resp.ReplyParser.NEED_MORE:
                return value
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by broker")
            self.parser.feed(chunk)

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, socket.timeout):
            return True

    def hello(self, **extra):
        doc = {"v": 1}
        doc.update(extra)
        import json
        return self.call("HELLO", json.dumps(doc))


def test_commands_before_hello_are_refused(broker):
    raw = Raw(broker.addr)
    assert raw.call("PING") == "PONG"
    err = raw.call("SUBMIT", '{"type": "echo"}')
    assert isinstance(err, resp.Error) and err.code == "NOAUTH"
    assert isinstance(raw.hello(v=2), resp.Error)
    assert raw.call("HELLO", '{"v": 2}').code == "BADVERSION"


def test_bad_requests_get_errors_and_the_connection_survives(broker):
    raw = Raw(broker.addr)
    raw.hello()
    assert raw.call("NOPE").code == "BADREQ"
    assert raw.call("SUBMIT", "{not json").code == "BADREQ"
    assert raw.call("SUBMIT", '{"payload": 1}').code == "BADREQ"  # no type
    assert raw.call("SUBMIT", '{"type": "x", "priority": 99}').code == "BADREQ"
    assert raw.call("SUBMIT", '{"type": "x", "queue": "a\\u0000b"}').code == "BADREQ"
    assert raw.call("SUBMIT", '{"type": "x", "bogus": 1}').code == "BADREQ"
    assert raw.call("SUBMIT", "[]").code == "BADREQ"
    assert raw.call("GET", '{"id": "nope"}').code == "NOTFOUND"
    assert raw.call("FETCH", "{}").code == "BADREQ"  # not a worker connection
    assert raw.call("PING") == "PONG"
    with Client(broker.addr) as client:
        assert client.stats()["totals"]["submitted"] == 0  # nothing changed


def test_pipelined_replies_keep_request_order_across_command_kinds(broker):
    """SUBMIT runs eagerly on the connection, GET and PING as tasks or inline: a pipeline
    mixing them (with failures) still gets its replies in request order."""
    import json
    raw = Raw(broker.addr)
    raw.hello()
    frames, expected = [], []
    for i in range(200):
        task_id = f"order-{i}"
        frames.append(resp.encode_request("SUBMIT", json.dumps({"type": "echo", "id": task_id,
                                                                  "payload": i})))
        expected.append(("submitted", task_id))
        frames.append(resp.encode_request("GET", json.dumps({"id": task_id})))
        expected.append(("got", task_id))
        if i % 50 == 0:
            frames.append(resp.encode_request("SUBMIT", '{"type": "x", "priority": 99}'))
            expected.append(("error", "BADREQ"))
            frames.append(resp.encode_request("PING"))
            expected.append(("pong", None))
    raw.send(b"".join(frames))
    for kind, value in expected:
        reply = raw.reply()
        if kind == "error":
            assert isinstance(reply, resp.Error) and reply.code == value
        elif kind == "pong":
            assert reply == "PONG"
        else:
            assert not isinstance(reply, resp.Error), (kind, value, reply)
            assert json.loads(reply)["id"] == value, (kind, value, reply)


def test_a_client_vanishing_mid_pipeline_leaves_the_broker_serving(broker):
    import json
    for _ in range(5):
        raw = Raw(broker.addr)
        raw.hello()
        raw.send(b"".join(resp.encode_request("SUBMIT", json.dumps({"type": "echo"}))
                          for _ in range(500)))
        raw.sock.close()  # replies owed, nobody to read them
    with Client(broker.addr) as client:
        assert client.submit("echo", 1)["status"] == "pending"
        submitted = client.stats()["totals"]["submitted"]
        assert 1 <= submitted <= 2501  # what arrived before each close, plus ours


def test_oversized_payload_is_refused(broker_factory):
    b = broker_factory({"broker": {"max_payload_bytes": 1000}})
    with Client(b.addr) as client:
        client.submit("echo", "x" * 900)
        with pytest.raises(BrokerError) as err:
            client.submit("echo", "x" * 2000)
        assert err.value.code == "TOOLARGE"
        assert client.stats()["totals"]["submitted"] == 1


def test_malformed_frames_close_the_connection(broker_factory):
    b = broker_factory({"broker": {"max_frame_bytes": 4096}})
    for bad in (b"*1\r\n:5\r\n", b"*99\r\n", b"*1\r\n$abc\r\n", b"*1\r\n$3\r\nPINGX\r\n"):
        raw = Raw(b.addr)
        raw.send(bad + b"\r\n" * 2)
        reply = raw.reply()
        assert isinstance(reply, resp.Error) and reply.code == "BADREQ", bad
        assert raw.closed()
    raw = Raw(b.addr)
    raw.send(b"*2\r\n$6\r\nSUBMIT\r\n$999999999\r\n")  # announced, never sent
    assert raw.reply().code == "TOOLARGE"
    assert raw.closed()
    assert Raw(b.addr).call("PING") == "PONG"  # the broker is fine


def test_max_connections(broker_factory):
    # broker.max_connections counts connections that completed HELLO (the ones still in
    # their handshake have their own limit: tests/test_conn_limits.py).
    b = broker_factory({"broker": {"max_connections": 3}})
    held = [Raw(b.addr) for _ in range(3)]
    assert all(isinstance(r.hello(), bytes) for r in held)
    extra = Raw(b.addr)
    assert extra.call("PING") == "PONG"  # accepted, not yet counted
    assert extra.hello().code == "MAXCONN"
    assert extra.closed()
    held[0].sock.close()
    time.sleep(0.2)
    assert isinstance(Raw(b.addr).hello(), bytes)


def test_queue_depth_threshold_backpressure(broker_factory):
    b = broker_factory({"broker": {"queue_depth_threshold": 5}})
    with Client(b.addr) as client:
        for i in range(5):
            client.submit("echo", i)
        with pytest.raises(BrokerError) as err:
            client.submit("echo", 5)
        assert err.value.code == "QUEUEFULL"
        client.submit("echo", 6, queue="other")  # per queue
        results = client.submit_bulk([{"type": "echo"}, {"type": "echo", "queue": "b"}])
        assert results[0]["error"]["code"] == "QUEUEFULL" and results[1]["status"] == "pending"


def test_fetch_blocks_until_a_task_arrives(broker):
    with Client(broker.addr, identity={"worker_id": "w-block"}) as worker, \
            Client(broker.addr) as producer:
        started = time.monotonic()
        assert worker.fetch(["default"], count=1, timeout_ms=300) == []
        assert time.monotonic() - started >= 0.25
        import threading
        threading.Timer(0.3, lambda: producer.submit("echo", 1)).start()
        jobs = worker.fetch(["default"], count=1, timeout_ms=5000)
        assert len(jobs) == 1 and jobs[0]["status"] == "running"


def test_lease_expiry_requeues_and_fences_the_old_worker(broker):
    with Client(broker.addr, identity={"worker_id": "slow"}) as slow, \
            Client(broker.addr, identity={"worker_id": "fast"}) as fast, \
            Client(broker.addr) as producer:
        task = producer.submit("echo", 1)
        [job] = slow.fetch(["default"], timeout_ms=1000)
        time.sleep(2.5)  # lease_timeout_secs is 2 in tests; no heartbeat
        [again] = fast.fetch(["default"], timeout_ms=3000)
        assert again["id"] == task["id"] and again["attempts"] == 2
        with pytest.raises(BrokerError) as err:
            slow.ack(job["id"], job["token"], "late")
        assert err.value.code == "LEASELOST"
        fast.ack(again["id"], again["token"], "on time")
        final = producer.get(task["id"])
        assert final["status"] == "completed" and final["result"] == "on time"


def test_another_worker_cannot_settle_a_lease_even_with_its_token(broker):
    """Issue 10: ACK/FAIL settle only a lease held by the connection's own worker, and
    tokens are not the guessable sequence number. The holder's ACK still lands."""
    with Client(broker.addr, identity={"worker_id": "holder"}) as holder, \
            Client(broker.addr, identity={"worker_id": "thief"}) as thief, \
            Client(broker.addr) as producer:
        first = producer.submit("echo", 1)
        second = producer.submit("echo", 2)
        [job] = holder.fetch(["default"], timeout_ms=1000)
        [other] = holder.fetch(["default"], timeout_ms=1000)
        assert {job["id"], other["id"]} == {first["id"], second["id"]}
        # Two consecutive claims: the tokens share no guessable sequence.
        assert isinstance(job["token"], str) and job["token"] != other["token"]
        assert job["token"].split("-")[1] != other["token"].split("-")[1]
        # The real token, shown by another worker, settles nothing.
        with pytest.raises(BrokerError) as err:
            thief.ack(job["id"], job["token"], "forged")
        assert err.value.code == "LEASELOST"
        with pytest.raises(BrokerError) as err:
            thief.fail(job["id"], job["token"], "forged")
        assert err.value.code == "LEASELOST"
        # Guessing: one bulk ACK with 1,000 integer and sequence-shaped tokens.
        guesses = [{"id": job["id"], "token": t, "result": "forged"} for t in range(500)]
        guesses += [{"id": job["id"], "token": f"{n}-0"} for n in range(500)]
        replies = thief.ack_many(guesses)
        assert all(r != "OK" for r in replies)
        assert producer.get(job["id"])["status"] == "running"
        holder.ack(job["id"], job["token"], "real")
        final = producer.get(job["id"])
        assert final["status"] == "completed" and final["result"] == "real"


def test_snapshot_is_a_database_a_broker_can_start_from(broker, broker_factory, tmp_path):
    with Client(broker.addr) as client:
        ids = [client.submit("echo", i)["id"] for i in range(10)]
        snap = client.snapshot(str(tmp_path / "snap"))
        assert snap["applied_index"] >= 10
        with pytest.raises(BrokerError):
            client.snapshot(str(tmp_path / "snap"))  # exists
    restored = broker_factory({"persistence": {"data_dir": str(tmp_path / "snap")}})
    with Client(restored.addr) as client:
        assert [client.get(i)["status"] for i in ids] == ["pending"] * 10


def test_restart_keeps_everything(broker):
    with Client(broker.addr, identity={"worker_id": "w"}) as client:
        done = client.submit("echo", "a")
        [job] = client.fetch(["default"])
        client.ack(job["id"], job["token"], "r")
        waiting = client.submit("echo", "b", delay_secs=3600)
    broker.restart()
    with Client(broker.addr) as client:
        assert client.get(done["id"])["status"] == "completed"
        assert client.get(waiting["id"])["status"] == "scheduled"
        assert client.queues()["default"]["completed"] == 1


@pytest.mark.parametrize("content, key", [
    ("broker:\n  prot: 1\n", "broker.prot"),
    ("broker:\n  port: '6379x'\n", "broker.port"),
    ("persistence:\n  write_buffer_size: 12XB\n", "persistence.write_buffer_size"),
    ("raft:\n  enabled: true\n", "raft.node_id"),
    ("auth:\n  enabled: true\n  api_keys:\n    - key_hash: nothash\n      permissions: [admin]\n",
     "auth.api_keys[0].key_hash"),
    ("api:\n  enable_tls: true\n", "api.tls_cert_path"),
    ("nonsense: {}\n", "nonsense"),
    ("- a\n- b\n", "top level"),
])
def test_bad_config_files_name_the_key_and_exit_2(tmp_path, content, key):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    for flag in ("--config", "--check-config"):
        proc = subprocess.run([sys.executable, "-m", "broker.cli", flag, str(path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert key in proc.stderr


@pytest.mark.parametrize("content, suggestion", [
    ("broker:\n  prot: 1\n", "did you mean broker.port?"),  # a near spelling
    ("broker:\n  rest_port: 8081\n", "did you mean api.rest_port?"),  # another section's
    ("persistance:\n  data_dir: x\n", "did you mean persistence?"),  # a section
    ("broker:\n  zzzz: 1\n", None),  # nothing near: no guess
])
def test_an_unknown_key_names_the_file_and_the_nearest_key(tmp_path, content, suggestion):
    from broker import config as cfg

    path = tmp_path / "tq.yaml"
    path.write_text(content)
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    if suggestion:
        assert suggestion in message
    else:
        assert "did you mean" not in message


def test_the_guides_config_file_is_valid(tmp_path):
    guide = """
broker:
  host: 0.0.0.0
  port: 6379
  max_connections: 1000
  queue_depth_threshold: 100000
persistence:
  data_dir: /var/lib/task-queue
  wal_sync_interval_ms: 100
  completed_task_retention_days: 7
  write_buffer_size: 128MB
  max_write_buffer_number: 4
raft:
  enabled: false  # Single node
api:
  rest_port: 8080
  grpc_port: 9090
  enable_tls: false
auth:
  enabled: false  # Enable for production
monitoring:
  prometheus_port: 9091
  log_level: info
worker:
  concurrency: 4
  heartbeat_interval_secs: 15
  lease_timeout_secs: 30
"""
    path = tmp_path / "config.yaml"
    path.write_text(guide)
    proc = subprocess.run([sys.executable, "-m", "broker.cli", "--check-config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_retention_purges_finished_tasks(broker_factory):
    # 0.00003 days = 2.6 s
    b = broker_factory({"persistence": {"completed_task_retention_days": 0.00003}})
    with Client(b.addr, identity={"worker_id": "w"}) as client:
        done = client.submit("echo", 1)
        waiting = client.submit("echo", 2, queue="other")
        [job] = client.fetch(["default"])
        client.ack(job["id"], job["token"], None)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                client.get(done["id"])
            except BrokerError as exc:
                assert exc.code == "NOTFOUND"
                break
            time.sleep(0.2)
        else:
            pytest.fail("completed task was not purged")
        assert client.get(waiting["id"])["status"] == "pending"  # unfinished tasks stay
        assert client.stats()["totals"]["purged"] == 1


def test_a_quiet_worker_gets_no_jobs(broker):
    with Client(broker.addr, identity={"worker_id": "wq"}) as worker, \
            Client(broker.addr) as admin:
        admin.submit("echo", 1)
        admin.worker_state("wq", "quiet")
        assert worker.fetch(["default"], count=1, timeout_ms=2000) == []
        admin.worker_state("wq", "active")
        assert len(worker.fetch(["default"], count=1, timeout_ms=2000)) == 1


def test_listening_beyond_loopback_without_auth_is_warned_about(broker_factory):
    """Issue 11: ``tq-broker`` with no configuration binds 0.0.0.0 with auth off; it says so."""
    exposed = broker_factory({"broker": {"host": "0.0.0.0"}}, name="exposed")
    local = broker_factory(name="local")  # 127.0.0.1, as every test broker
    assert "without authentication" in exposed.logs()
    assert "without authentication" not in local.logs()


def test_hello_names_the_leader_at_the_address_the_client_reached(broker_factory):
    """Issue 11: a broker bound to 0.0.0.0 advertised 127.0.0.1 to clients on other hosts.
    127.0.0.2 stands in for another interface (Linux routes all of 127/8 to loopback)."""
    import json

    exposed = broker_factory({"broker": {"host": "0.0.0.0"}}, name="any")
    other = f"127.0.0.2:{exposed.port}"
    raw = Raw(other)
    assert json.loads(raw.hello())["leader"] == other
    raw = Raw(other)
    fields = raw.call("HELLO", "2")  # a Redis client library's handshake: the same
    assert dict(zip(fields[::2], fields[1::2]))[b"tq_leader"] == other.encode()
    assert json.loads(Raw(exposed.addr).hello())["leader"] == exposed.addr
    # A configured advertise address is what it is, whatever the client connected to.
    named = broker_factory({"broker": {"host": "0.0.0.0", "advertise_host": "tq.example"}},
                           name="named")
    reply = json.loads(Raw(f"127.0.0.2:{named.port}").hello())
    assert reply["leader"] == f"tq.example:{named.port}"


@pytest.mark.slow
def test_a_worker_that_never_heartbeats(broker):
    """What protocol.md's HEARTBEAT section promises (issue 11): its leases run out (a late
    ACK is LEASELOST, the job is handed out again), it leaves WORKERS, and its connection
    keeps working: FETCH and ACK within a lease go on, a HEARTBEAT registers it again."""
    with Client(broker.addr, identity={"worker_id": "silent", "queues": ["quietq"]}) as worker, \
            Client(broker.addr) as admin:
        task = admin.submit("echo", 1, queue="quietq")
        [job] = worker.fetch(["quietq"], timeout_ms=2000)
        time.sleep(3.0)  # lease_timeout_secs is 2 for test brokers, and no HEARTBEAT came
        with pytest.raises(BrokerError) as lost:
            worker.ack(job["id"], job["token"], None)
        assert lost.value.code == "LEASELOST"
        deadline = time.monotonic() + 20
        while any(w["worker_id"] == "silent" for w in admin.workers()):
            assert time.monotonic() < deadline, "the silent worker was never dropped"
            time.sleep(0.2)
        again = worker.fetch(["quietq"], timeout_ms=5000)
        assert [j["id"] for j in again] == [task["id"]]
        worker.ack(again[0]["id"], again[0]["token"], "late but fine")
        assert admin.get(task["id"])["status"] == "completed"
        worker.heartbeat([])
        assert any(w["worker_id"] == "silent" for w in admin.workers())
