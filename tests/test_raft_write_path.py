"""Issue 10 on a real 3-node cluster: a payload nested 300 deep is refused on RESP, REST and
gRPC (it used to kill the leader's commit loop: every write on the node hung, /health stayed
200), the nodes keep taking writes; and a write that commits after raft.forward_timeout_secs
is never reported as "not committed"."""

from __future__ import annotations

import json
import socket
import time
import uuid

import grpc
import pytest
import yaml

from broker.api import taskqueue_pb2 as pb
from broker.api import taskqueue_pb2_grpc as pb_grpc
from taskqueue import resp
from taskqueue.errors import BrokerError
from tests.brokerproc import free_port
from tests.fault.cluster import Cluster

DEEP = json.dumps({"type": "t", "payload": json.loads("[" * 300 + "]" * 300)})


def http(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                  .encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(rest or b"null")


def resp_call(client, command: str, raw_arg: str):
    """A request the client library could not encode (its JSON encoder stops at ~254 levels)."""
    sock = client._sock
    sock.sendall(resp.encode_request(command, raw_arg))
    return client._read_reply(sock)


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, 3, election_timeout_ms=3000,
                      overrides={"raft": {"forward_timeout_secs": 0.5}})
    for node in cluster.nodes:
        node.config["api"]["rest_port"] = free_port()
        node.config["api"]["grpc_port"] = free_port()
        node.config_path.write_text(yaml.safe_dump(node.config))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def submit_ok(cluster: Cluster, i: int) -> None:
    with cluster.client(i, 10.0) as c:
        task = c.submit("ping", {"n": 1})
        assert task["status"] == "pending"


@pytest.mark.slow
def test_deep_payload_is_refused_everywhere_and_writes_go_on(cluster):
    leader = cluster.leader(30)
    follower = next(i for i in range(3) if i != leader)
    for i in (leader, follower):
        node = cluster.nodes[i]
        with cluster.client(i, 10.0) as c:
            reply = resp_call(c, "SUBMIT", DEEP)
            assert isinstance(reply, resp.Error) and reply.code == "BADREQ", reply
            assert "64" in reply.message
            bulk = json.dumps([json.loads(DEEP)])
            assert getattr(resp_call(c, "SUBMIT", bulk), "code", None) == "BADREQ"
        status, body = http(node.config["api"]["rest_port"], "POST", "/api/v1/tasks",
                            DEEP.encode())
        assert status == 400 and body["error"]["code"] == "BADREQ", body
        with grpc.insecure_channel(f"127.0.0.1:{node.config['api']['grpc_port']}") as ch:
            stub = pb_grpc.TaskQueueStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.Submit(pb.SubmitRequest(type="t", payload_json="[" * 300 + "]" * 300),
                            timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # The node still takes writes, and says it is healthy (a follower once its status
        # poll has seen the leader).
        submit_ok(cluster, i)
        deadline = time.monotonic() + 15
        while (answer := http(node.config["api"]["rest_port"], "GET", "/health"))[0] != 200:
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)
        assert answer[1]["status"] == "healthy"


@pytest.mark.slow
def test_a_write_that_commits_after_the_forward_timeout_is_not_called_uncommitted(cluster):
    leader = cluster.leader(30)
    follower = next(i for i in range(3) if i != leader)
    task_id = f"late-{uuid.uuid4().hex[:8]}"
    with cluster.client(follower, 15.0) as c:
        cluster.pause(leader)  # shorter than the election timeout: it stays the leader
        try:
            started = time.monotonic()
            try:
                outcome = c.submit("ping", {"n": 2}, id=task_id)
            except BrokerError as exc:
                outcome = exc
        finally:
            time.sleep(max(0.0, 1.2 - (time.monotonic() - started)))
            cluster.resume(leader)
    if isinstance(outcome, BrokerError):
        assert outcome.code == "UNAVAILABLE", outcome
        assert "outcome unknown" in str(outcome) and "not committed" not in str(outcome)
    else:
        assert outcome["id"] == task_id
    # It did commit: the leader's answer to the retry is the task, as a duplicate.
    deadline = time.monotonic() + 20
    while True:
        try:
            with cluster.client(follower, 5.0) as c:
                again = c.submit("ping", {"n": 2}, id=task_id)
            break
        except BrokerError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert again["id"] == task_id and again["duplicate"] is True
    assert cluster.count_in_logs("Future exception was never retrieved") == 0
