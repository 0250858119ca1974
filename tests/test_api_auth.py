"""API keys and permissions, enforced the same way on REST, gRPC and the worker protocol."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import bcrypt
import grpc
import httpx
import pytest

from broker.api import taskqueue_pb2 as pb
from broker.api import taskqueue_pb2_grpc as pb_grpc
from taskqueue.client import Client
from taskqueue.errors import BrokerError
from tests.api_support import KEYS, key_entries, module_broker, rest_url

HTPASSWD_KEY = "htpasswd-made-key"


def htpasswd_hash(key: str) -> str:
    """What the guide's `echo -n KEY | htpasswd -nBC 10 "" | tr -d ':\\n'` is meant to print
    ($2y$, cost 10). Piped, htpasswd needs -i (read the password once from stdin): without
    it, it asks twice, gets EOF the second time and prints nothing."""
    if shutil.which("htpasswd"):
        out = subprocess.run(["htpasswd", "-inBC", "10", ""], input=key, check=True,
                             capture_output=True, text=True).stdout
        return out.replace(":", "").replace("\n", "")
    return "$2y$" + bcrypt.hashpw(key.encode(), bcrypt.gensalt(10)).decode()[4:]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    keys = key_entries() + [{"name": "ops", "permissions": ["read_tasks"],
                             "key_hash": htpasswd_hash(HTPASSWD_KEY)}]
    proc = module_broker(tmp_path_factory, "auth", {"auth": {"enabled": True,
                                                             "api_keys": keys}})
    yield proc
    proc.stop()


def key(name: str) -> str:
    return KEYS[name][0]


def bearer(name: str) -> dict:
    return {"Authorization": f"Bearer {key(name)}"}


@pytest.fixture(scope="module")
def seeded(node):
    """A pending task, a cancelled one and a registered worker to aim the calls at."""
    with httpx.Client(base_url=rest_url(node), headers=bearer("admin")) as http:
        pending = http.post("/api/v1/tasks", json={"type": "e", "queue": "authq"}).json()
        cancelled = http.post("/api/v1/tasks", json={"type": "e", "queue": "authq"}).json()
        http.post(f"/api/v1/tasks/{cancelled['id']}/cancel")
    worker = Client(node.addr, api_key=key("admin"), identity={"worker_id": "auth-w"})
    worker.connect()
    yield {"pending": pending["id"], "cancelled": cancelled["id"]}
    worker.close()


# (method, path, body, permission)
def rest_calls(seeded, tmp):
    return [
        ("POST", "/api/v1/tasks", {"type": "e", "queue": "authq"}, "submit_tasks"),
        ("POST", "/api/v1/tasks/bulk", {"tasks": [{"type": "e", "queue": "authq"}]},
         "submit_tasks"),
        ("GET", "/api/v1/tasks", None, "read_tasks"),
        ("GET", f"/api/v1/tasks/{seeded['pending']}", None, "read_tasks"),
        ("GET", "/api/v1/queues", None, "read_tasks"),
        ("GET", "/api/v1/queues/authq", None, "read_tasks"),
        ("GET", "/api/v1/workers", None, "read_tasks"),
        ("GET", "/api/v1/stats", None, "read_tasks"),
        ("GET", "/api/v1/cluster", None, "read_tasks"),
        ("POST", f"/api/v1/tasks/{seeded['cancelled']}/requeue", None, "cancel_tasks"),
        ("POST", f"/api/v1/tasks/{seeded['pending']}/cancel", None, "cancel_tasks"),
        ("POST", "/api/v1/queues/authq/pause", None, "admin"),
        ("POST", "/api/v1/queues/authq/resume", None, "admin"),
        ("POST", "/api/v1/workers/auth-w/state", {"state": "active"}, "admin"),
        ("POST", "/api/v1/snapshots", {"path": str(tmp / f"s-{uuid.uuid4().hex}")}, "admin"),
    ]


def test_rest_without_or_with_a_wrong_key_is_401(node, seeded, tmp_path):
    with httpx.Client(base_url=rest_url(node)) as http:
        for method, path, body, _ in rest_calls(seeded, tmp_path):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"},
                            {"Authorization": "Basic " + key("admin")}):
                r = http.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.text)
                assert r.json()["error"]["code"] == "NOAUTH"
                assert r.headers["www-authenticate"].startswith("Bearer")
        # The health checks and the API document stay open.
        assert http.get("/health").status_code == 200
        assert http.get("/health/leader").status_code == 200
        assert http.get("/api/v1/openapi.json").status_code == 200


@pytest.mark.parametrize("name", ["submit", "read", "cancel", "admin"])
def test_rest_permissions(node, seeded, tmp_path, name):
    perms = set(KEYS[name][1])
    with httpx.Client(base_url=rest_url(node)) as http:
        for method, path, body, needed in rest_calls(seeded, tmp_path):
            # Alternate the two header styles the guide's clients may use.
            headers = bearer(name) if len(path) % 2 else {"X-API-Key": key(name)}
            r = http.request(method, path, json=body, headers=headers)
            if needed in perms or "admin" in perms:
                assert r.status_code not in (401, 403), (name, method, path, r.text)
                assert r.status_code < 500, r.text
            else:
                assert r.status_code == 403, (name, method, path, r.text)
                assert r.json()["error"]["code"] == "NOPERM"
        if name == "cancel":  # put the cancelled task back for the next key
            admin = bearer("admin")
            http.post(f"/api/v1/tasks/{seeded['cancelled']}/cancel", headers=admin)
            http.post(f"/api/v1/tasks/{seeded['cancelled']}/requeue", headers=admin)
            http.post(f"/api/v1/tasks/{seeded['cancelled']}/cancel", headers=admin)


def test_htpasswd_style_hash_verifies(node):
    with httpx.Client(base_url=rest_url(node)) as http:
        r = http.get("/api/v1/stats", headers={"X-API-Key": HTPASSWD_KEY})
        assert r.status_code == 200, r.text
        r = http.post("/api/v1/tasks", json={"type": "e"}, headers={"X-API-Key": HTPASSWD_KEY})
        assert r.status_code == 403


# ----------------------------------------------------------------------------- gRPC

def grpc_calls(seeded, tmp):
    return [
        ("Submit", pb.SubmitRequest(type="e", queue="authq"), "submit_tasks"),
        ("SubmitBulk", pb.SubmitBulkRequest(tasks=[pb.SubmitRequest(type="e",
                                                                    queue="authq")]),
         "submit_tasks"),
        ("Get", pb.TaskRef(id=seeded["pending"]), "read_tasks"),
        ("List", pb.ListRequest(limit=1), "read_tasks"),
        ("QueueDepth", pb.QueueDepthRequest(), "read_tasks"),
        ("Workers", pb.WorkersRequest(), "read_tasks"),
        ("Stats", pb.StatsRequest(), "read_tasks"),
        ("ClusterStatus", pb.ClusterStatusRequest(), "read_tasks"),
        ("Requeue", pb.TaskRef(id=seeded["cancelled"]), "cancel_tasks"),
        ("Cancel", pb.TaskRef(id=seeded["cancelled"]), "cancel_tasks"),
        ("SetQueuePaused", pb.SetQueuePausedRequest(queue="authq", paused=False), "admin"),
        ("SetWorkerState", pb.SetWorkerStateRequest(worker_id="auth-w", state="active"),
         "admin"),
        ("CreateSnapshot", pb.CreateSnapshotRequest(path=str(tmp / uuid.uuid4().hex)),
         "admin"),
    ]


@pytest.fixture(scope="module")
def stub(node):
    with grpc.insecure_channel(f"127.0.0.1:{node.config['api']['grpc_port']}") as ch:
        yield pb_grpc.TaskQueueStub(ch)


def test_grpc_unauthenticated(stub, seeded, tmp_path):
    for method, request, _ in grpc_calls(seeded, tmp_path):
        for metadata in ((), (("authorization", "Bearer wrong"),), (("x-api-key", "no"),)):
            with pytest.raises(grpc.RpcError) as info:
                getattr(stub, method)(request, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
            assert dict(info.value.trailing_metadata())["tq-error-code"] == "NOAUTH"


@pytest.mark.parametrize("name", ["submit", "read", "cancel", "admin"])
def test_grpc_permissions(stub, seeded, tmp_path, name):
    perms = set(KEYS[name][1])
    for i, (method, request, needed) in enumerate(grpc_calls(seeded, tmp_path)):
        metadata = ((("authorization", f"Bearer {key(name)}"),) if i % 2
                    else (("x-api-key", key(name)),))
        try:
            getattr(stub, method)(request, metadata=metadata)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
        if needed in perms or "admin" in perms:
            assert code not in (grpc.StatusCode.UNAUTHENTICATED,
                                grpc.StatusCode.PERMISSION_DENIED), (name, method)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (name, method, code)


# --------------------------------------------------------------------- worker protocol

def test_resp_handshake_needs_a_good_key(node):
    for api_key in (None, "wrong"):
        client = Client(node.addr, api_key=api_key)
        with pytest.raises(BrokerError) as info:
            client.connect()
        assert info.value.code == "NOAUTH"
        client.close()


def test_resp_permissions(node, seeded):
    # A worker connection needs read_tasks and submit_tasks: it takes tasks and writes their
    # results, so neither a submit-only nor a read-only key can be a worker (issue 10).
    for api_key in (key("submit"), key("read"), HTPASSWD_KEY):
        worker = Client(node.addr, api_key=api_key, identity={"worker_id": "bad-w"})
        with pytest.raises(BrokerError) as info:
            worker.connect()
        assert info.value.code == "NOPERM"
        worker.close()
    with Client(node.addr, api_key=key("submit")) as producer:
        assert producer.submit("e", queue="authq")["status"] == "pending"
        for call in (lambda: producer.get(seeded["pending"]), producer.stats,
                     lambda: producer.cancel(seeded["pending"]),
                     lambda: producer.pause("authq")):
            with pytest.raises(BrokerError) as info:
                call()
            assert info.value.code == "NOPERM"
    with Client(node.addr, api_key=key("read")) as reader:
        assert reader.get(seeded["pending"])["id"] == seeded["pending"]
        for call in (lambda: reader.submit("e"), lambda: reader.cancel(seeded["pending"]),
                     lambda: reader.snapshot("/tmp/never")):
            with pytest.raises(BrokerError) as info:
                call()
            assert info.value.code == "NOPERM"


def test_wrong_key_is_not_cached_as_good(node):
    with httpx.Client(base_url=rest_url(node)) as http:
        for _ in range(3):
            assert http.get("/api/v1/stats", headers={"X-API-Key": "bad"}).status_code == 401
            assert http.get("/api/v1/stats", headers=bearer("read")).status_code == 200
