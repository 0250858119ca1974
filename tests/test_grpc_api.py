"""The gRPC API against a real broker process: every RPC, status codes, health, reflection,
and the generated code staying in sync with taskqueue.proto."""

from __future__ import annotations

import json
import tomllib
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from packaging.version import Version

from broker.api import gen_proto
from broker.api import taskqueue_pb2 as pb
from broker.api import taskqueue_pb2_grpc as pb_grpc
from broker.api.grpc_server import task_to_dict
from taskqueue.client import Client
from tests.api_support import module_broker

SC = grpc.StatusCode


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = module_broker(tmp_path_factory, "grpc", {"broker": {"queue_depth_threshold": 5},
                                                    "api": {"max_body_bytes": 65536}})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def channel(node):
    ch = grpc.insecure_channel(f"127.0.0.1:{node.config['api']['grpc_port']}")
    yield ch
    ch.close()


@pytest.fixture
def stub(channel):
    return pb_grpc.TaskQueueStub(channel)


def uniq(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def status_of(call, *args) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    err = info.value
    codes = dict(err.trailing_metadata() or ())
    return err.code(), codes.get("tq-error-code")


def test_generated_code_matches_the_proto(tmp_path):
    """`python -m broker.api.gen_proto` into a temp dir reproduces the checked-in files."""
    here = Path(gen_proto.__file__).parent
    for path in gen_proto.generate(tmp_path):
        assert path.read_text() == (here / path.name).read_text(), (
            f"{path.name} is stale: run python -m broker.api.gen_proto")


def test_generated_code_accepts_every_runtime_pyproject_allows():
    """The version stamps written into the generated code are pyproject's floors, no higher."""
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    floors = {}
    for requirement in project["project"]["optional-dependencies"]["broker"]:
        name, _, spec = requirement.partition(">=")
        floors[name.strip()] = spec.split(",")[0].strip()
    assert Version(floors["grpcio"]) == Version(gen_proto.GRPCIO_FLOOR)
    assert Version(floors["protobuf"]) == Version(".".join(map(str, gen_proto.PROTOBUF_FLOOR)))
    here = Path(gen_proto.__file__).parent
    assert f"GRPC_GENERATED_VERSION = '{gen_proto.GRPCIO_FLOOR}'" in (
        here / "taskqueue_pb2_grpc.py").read_text()


def test_submit_get_roundtrip_keeps_json_exact(stub):
    payload = {"big": 12345678901234567890, "f": 1.5, "s": "é", "l": [None, True]}
    task = stub.Submit(pb.SubmitRequest(type="echo", payload_json=json.dumps(payload),
                                        queue=uniq(), priority=3, max_retries=1,
                                        timeout_secs=9.5, idempotency_key=uniq("k")))
    assert task.status == "pending" and task.priority == 3 and task.max_retries == 1
    got = stub.Get(pb.TaskRef(id=task.id))
    assert json.loads(got.payload_json) == payload
    as_dict = task_to_dict(got)
    assert as_dict["timeout_secs"] == 9.5 and as_dict["run_at"] is None
    assert as_dict["result"] is None and as_dict["finished_at"] is None
    again = stub.Submit(pb.SubmitRequest(type="echo", id=task.id))
    assert again.duplicate and again.id == task.id
    minimal = stub.Submit(pb.SubmitRequest(type="echo"))
    assert minimal.payload_json == "null" and minimal.queue == "default"
    delayed = stub.Submit(pb.SubmitRequest(type="echo", delay_secs=3600, queue=uniq()))
    assert delayed.status == "scheduled" and delayed.HasField("run_at")


@pytest.mark.parametrize("request_, code", [
    (pb.SubmitRequest(type=""), "BADREQ"),
    (pb.SubmitRequest(type="x", payload_json="{nope"), "BADREQ"),
    (pb.SubmitRequest(type="x", priority=10), "BADREQ"),
    (pb.SubmitRequest(type="x", queue="bad queue"), "BADREQ"),
    (pb.SubmitRequest(type="x", id="a/b"), "BADREQ"),
    (pb.SubmitRequest(type="x", payload_json='"' + "a" * 70000 + '"'), None),
])
def test_submit_errors(stub, request_, code):
    status, tq_code = status_of(stub.Submit, request_)
    if code is None:  # over api.max_body_bytes: refused by gRPC itself
        assert status == SC.RESOURCE_EXHAUSTED
    else:
        assert status == SC.INVALID_ARGUMENT and tq_code == code


def test_submit_bulk_and_queue_full(stub):
    queue = uniq()
    out = stub.SubmitBulk(pb.SubmitBulkRequest(tasks=[
        pb.SubmitRequest(type="e", queue=queue, payload_json=str(i)) for i in range(7)]))
    kinds = [r.WhichOneof("result") for r in out.results]
    assert kinds.count("submitted") == 5 and kinds.count("error") == 2
    first = out.results[0].submitted
    assert first.status == "pending" and not first.duplicate
    assert stub.Get(pb.TaskRef(id=first.id)).payload_json == "0"
    assert {r.error.code for r in out.results if r.HasField("error")} == {"QUEUEFULL"}
    status, code = status_of(stub.Submit, pb.SubmitRequest(type="e", queue=queue))
    assert status == SC.RESOURCE_EXHAUSTED and code == "QUEUEFULL"
    status, code = status_of(stub.SubmitBulk, pb.SubmitBulkRequest())
    assert status == SC.INVALID_ARGUMENT


def test_get_list_cancel_requeue(stub):
    queue = uniq()
    ids = [stub.Submit(pb.SubmitRequest(type="a" if i % 2 else "b", queue=queue)).id
           for i in range(4)]
    seen, cursor = [], None
    while True:
        req = pb.ListRequest(queue=queue, limit=1)
        if cursor:
            req.cursor = cursor
        page = stub.List(req)
        seen += [t.id for t in page.tasks]
        if not page.HasField("next_cursor"):
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(ids)
    assert {t.type for t in stub.List(pb.ListRequest(queue=queue, type="a")).tasks} == {"a"}
    assert len(stub.List(pb.ListRequest(queue=queue, status="pending")).tasks) == 4
    assert status_of(stub.List, pb.ListRequest(status="bogus")) == (SC.INVALID_ARGUMENT,
                                                                     "BADREQ")
    assert status_of(stub.Get, pb.TaskRef(id="missing")) == (SC.NOT_FOUND, "NOTFOUND")
    assert status_of(stub.Get, pb.TaskRef(id="")) == (SC.INVALID_ARGUMENT, "BADREQ")
    assert stub.Cancel(pb.TaskRef(id=ids[0])).status == "cancelled"
    assert status_of(stub.Cancel, pb.TaskRef(id=ids[0])) == (SC.FAILED_PRECONDITION,
                                                             "BADSTATE")
    assert stub.Requeue(pb.TaskRef(id=ids[0])).status == "pending"
    assert status_of(stub.Requeue, pb.TaskRef(id=ids[0])) == (SC.FAILED_PRECONDITION,
                                                              "BADSTATE")


def test_queue_depth_and_pause(stub, node):
    queue = uniq()
    stub.Submit(pb.SubmitRequest(type="e", queue=queue))
    depths = stub.QueueDepth(pb.QueueDepthRequest()).queues
    assert depths[queue].pending == 1 and not depths[queue].paused
    one = stub.QueueDepth(pb.QueueDepthRequest(queue=queue)).queues
    assert list(one) == [queue]
    assert status_of(stub.QueueDepth, pb.QueueDepthRequest(queue=uniq()))[0] == SC.NOT_FOUND
    assert stub.SetQueuePaused(pb.SetQueuePausedRequest(queue=queue, paused=True)).paused
    assert stub.QueueDepth(pb.QueueDepthRequest(queue=queue)).queues[queue].paused
    with Client(node.addr, identity={"worker_id": uniq("w")}) as worker:
        assert worker.fetch([queue], timeout_ms=200) == []
        stub.SetQueuePaused(pb.SetQueuePausedRequest(queue=queue, paused=False))
        assert len(worker.fetch([queue], timeout_ms=2000)) == 1
    assert status_of(stub.SetQueuePaused, pb.SetQueuePausedRequest(queue="bad name"))[0] == \
        SC.INVALID_ARGUMENT


def test_workers_stats_cluster_snapshot(stub, node, tmp_path):
    worker_id = uniq("w")
    with Client(node.addr, identity={"worker_id": worker_id, "hostname": "h2", "pid": 42,
                                     "queues": ["a", "b"], "concurrency": 2}):
        workers = {w.worker_id: w for w in stub.Workers(pb.WorkersRequest()).workers}
        w = workers[worker_id]
        assert w.hostname == "h2" and w.pid == 42 and list(w.queues) == ["a", "b"]
        assert w.state == "active" and w.HasField("last_seen")
        reply = stub.SetWorkerState(pb.SetWorkerStateRequest(worker_id=worker_id,
                                                              state="quiet"))
        assert reply.state == "quiet"
        workers = {w.worker_id: w for w in stub.Workers(pb.WorkersRequest()).workers}
        assert workers[worker_id].state == "quiet"
    assert status_of(stub.SetWorkerState, pb.SetWorkerStateRequest(
        worker_id=worker_id, state="sleepy")) == (SC.INVALID_ARGUMENT, "BADREQ")
    assert status_of(stub.SetWorkerState, pb.SetWorkerStateRequest(
        worker_id="nobody", state="stop"))[0] == SC.NOT_FOUND
    stats = stub.Stats(pb.StatsRequest())
    assert stats.totals["submitted"] >= 0 and "pending" in stats.tasks
    assert stats.applied_index > 0 and "estimate_num_keys" in stats.rocksdb
    cluster = stub.ClusterStatus(pb.ClusterStatusRequest())
    assert cluster.mode == "single" and cluster.role == "leader" and cluster.leader
    assert cluster.nodes[0].reachable
    assert not cluster.HasField("restored") and not cluster.nodes[0].HasField("restored")
    assert cluster.restore_mismatch is False
    snap = stub.CreateSnapshot(pb.CreateSnapshotRequest(path=str(tmp_path / "snap")))
    assert snap.applied_index > 0 and Path(snap.path).is_dir()
    assert status_of(stub.CreateSnapshot, pb.CreateSnapshotRequest(path=snap.path)) == (
        SC.INVALID_ARGUMENT, "BADREQ")


def test_health_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "tq.v1.TaskQueue"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert info.value.code() == SC.NOT_FOUND


def test_server_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="tq.v1.TaskQueue"),
    ]))
    listed, files = next(replies), next(replies)
    names = {s.name for s in listed.list_services_response.service}
    assert {"tq.v1.TaskQueue", "grpc.health.v1.Health"} <= names
    assert files.file_descriptor_response.file_descriptor_proto


@pytest.mark.parametrize("raw", [b"\x12\x02\xff\xfe", b"\xff\xff\xff"],
                         ids=["bad-utf8", "corrupt-wire"])
def test_malformed_protobuf_is_invalid_argument(channel, raw):
    call = channel.unary_unary("/tq.v1.TaskQueue/Submit", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as info:
        call(raw, timeout=5)
    assert info.value.code() == SC.INVALID_ARGUMENT
    assert dict(info.value.trailing_metadata())["tq-error-code"] == "BADREQ"


def test_cluster_status_message_carries_restore_identities():
    from broker.api.grpc_server import _cluster

    ident = {"backup_sha256": "ab" * 32, "backup_applied_index": 42,
             "backup_time": "2024-01-15T02:30:04Z"}
    msg = _cluster({"mode": "raft", "node_id": "n1", "restored": ident,
                    "restore_mismatch": True,
                    "nodes": [{"node_id": "n1", "reachable": True, "restored": ident},
                              {"node_id": "n2", "reachable": True, "restored": None}]})
    assert msg.restore_mismatch and msg.restored.backup_applied_index == 42
    assert msg.nodes[0].restored.backup_sha256 == "ab" * 32
    assert msg.nodes[0].restored.backup_time == "2024-01-15T02:30:04Z"
    assert not msg.nodes[1].HasField("restored")
