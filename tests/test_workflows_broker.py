"""Workflows against a real broker process: RESP with a real tq-worker, REST, tq-admin, and
the canvas builders (taskqueue/canvas.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import httpx
import pytest

from taskqueue.canvas import chain, chord, group, signature
from taskqueue.client import Client
from taskqueue.errors import BrokerError
from tests.api_support import module_broker, rest_url
from tests.helpers_worker import ROOT, WorkerProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = module_broker(tmp_path_factory, "workflows")
    yield proc
    proc.stop()


def uniq(prefix="q"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_chord_and_chain_run_by_a_real_worker(node, tmp_path):
    queue = uniq()
    echo = lambda payload: signature("echo", payload, queue=queue)  # noqa: E731
    flow = chain(echo({"step": 1}),
                 echo({"step": 2}),  # .s() semantics: receives step 1's result
                 chord([echo(i) for i in range(5)], echo("cb")))
    worker = WorkerProcess(node.addr, tmp_path, "--queues", queue, "--concurrency", "4").start()
    try:
        with Client(node.addr) as client:
            handle = flow.submit(client)
            state = handle.wait(timeout=60)
    finally:
        worker.stop()
    assert state["status"] == "completed", state
    by_role = {t["role"]: t for t in state["tasks"]}
    assert by_role["step[1]"]["result"] == {"previous": {"step": 1}, "payload": {"step": 2}}
    callback = by_role["step[2].callback"]
    # Members received step 2's result (pass_result on the chord), echoed it back; the
    # callback got their results in member order.
    results = callback["result"]["results"]
    assert [r["payload"] for r in results] == list(range(5))
    assert callback["result"]["errors"] == [None] * 5
    assert state["groups"][0]["completed"] == 5


def test_chord_of_chains_run_by_a_real_worker(node, tmp_path):
    """Celery's chord([chain(a, b), ...], cb) through the canvas builders: each member is a
    chain whose second step gets the first's result; the callback gets each chain's last
    result in member order."""
    queue = uniq()
    echo = lambda payload: signature("echo", payload, queue=queue)  # noqa: E731
    flow = chord([chain(echo({"m": i}), echo("second")) for i in range(4)]
                 + [group(echo("x"), echo("y"))], echo("cb"))
    assert flow.to_tree()["chord"][0]["chain"][1]["pass_result"] is True
    worker = WorkerProcess(node.addr, tmp_path, "--queues", queue, "--concurrency", "4").start()
    try:
        with Client(node.addr) as client:
            state = flow.submit(client).wait(timeout=60)
    finally:
        worker.stop()
    assert state["status"] == "completed", state
    callback = next(t for t in state["tasks"] if t["role"] == "chord.callback")
    results = callback["result"]["results"]
    # echo returns its payload: a chain's second step got {"previous": first's result}
    assert [r["previous"] for r in results[:4]] == [{"m": i} for i in range(4)]
    assert results[4] == ["x", "y"]  # a group member's result: its members' results
    assert state["groups"][0]["completed"] == 5 and state["size"] == 11


def test_rest_and_admin_see_and_cancel_a_workflow(node):
    queue = uniq()  # no worker: nothing runs
    base = f"{rest_url(node)}/api/v1/workflows"
    tree = {"chord": [{"type": "echo", "queue": queue}] * 3,
            "callback": {"type": "echo", "queue": queue}}
    made = httpx.post(base, json={"id": "rest-flow", "workflow": tree})
    assert made.status_code == 201 and made.json()["status"] == "pending"
    again = httpx.post(base, json={"id": "rest-flow", "workflow": tree})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    got = httpx.get(f"{base}/rest-flow", params={"limit": 2}).json()
    assert got["tasks_truncated"] is True and len(got["tasks"]) == 2
    assert got["groups"][0]["size"] == 3
    bad = httpx.post(base, json={"workflow": {"group": []}})
    assert bad.status_code == 400 and "non-empty" in bad.json()["error"]["message"]
    assert httpx.get(f"{base}/nope").status_code == 404

    def admin(*args):
        return subprocess.run([sys.executable, "-m", "admin.cli", "--broker-addr", node.addr,
                               *args], cwd=ROOT, capture_output=True, text=True, timeout=30)

    shown = admin("workflows", "get", "rest-flow", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "pending"
    cancelled = admin("workflows", "cancel", "rest-flow")
    assert cancelled.returncode == 0 and "3 tasks cancelled" in cancelled.stdout
    assert httpx.post(f"{base}/rest-flow/cancel").status_code == 409
    final = httpx.get(f"{base}/rest-flow").json()
    assert final["status"] == "cancelled"
    assert [t["status"] for t in final["tasks"]] == ["cancelled"] * 4


def test_a_failing_member_fails_the_chord_or_reaches_the_callback(node, tmp_path):
    queue = uniq()
    members = [signature("echo", 1, queue=queue),
               signature("fail", {"message": "nope"}, queue=queue, max_retries=0)]
    strict = group(members) | signature("echo", "after", queue=queue)
    partial = chord(members, signature("echo", "cb", queue=queue), on_error="callback")
    worker = WorkerProcess(node.addr, tmp_path, "--queues", queue).start()
    try:
        with Client(node.addr) as client:
            failed = strict.submit(client).wait(timeout=60)
            done = partial.submit(client).wait(timeout=60)
    finally:
        worker.stop()
    assert failed["status"] == "failed"
    assert failed["tasks"][-1]["status"] == "cancelled"  # the step after never ran
    assert done["status"] == "completed"
    cb = done["tasks"][-1]["result"]
    assert cb["results"][0] == 1 and cb["results"][1] is None
    assert cb["errors"][1]["status"] == "dead" and "nope" in cb["errors"][1]["error"]


def test_a_bad_workflow_is_refused_whole_over_resp(node):
    with Client(node.addr) as client:
        with pytest.raises(BrokerError) as refused:
            client.submit_workflow({"chain": [{"type": "echo"}, {"type": "echo",
                                                                  "delay_secs": 5}]})
        assert refused.value.code == "BADREQ" and "delay_secs" in str(refused.value)
        with pytest.raises(BrokerError) as missing:
            client.get_workflow("never-submitted")
        assert missing.value.code == "NOTFOUND"


def test_grpc_workflows_service(node):
    import grpc

    from broker.api import taskqueue_pb2 as pb
    from broker.api import taskqueue_pb2_grpc as pb_grpc
    from tests.api_support import ports

    queue = uniq()
    tree = {"group": [{"type": "echo", "queue": queue}] * 2}
    with grpc.insecure_channel(f"127.0.0.1:{ports(node)['grpc']}") as channel:
        stub = pb_grpc.WorkflowsStub(channel)
        made = stub.SubmitWorkflow(pb.SubmitWorkflowRequest(id="grpc-flow",
                                                            workflow_json=json.dumps(tree)))
        assert made.id == "grpc-flow" and made.status == "pending" and made.size == 2
        got = stub.GetWorkflow(pb.GetWorkflowRequest(id="grpc-flow"))
        assert [t.status for t in got.tasks] == ["pending", "pending"]
        assert got.groups[0].kind == "group" and got.groups[0].size == 2
        assert stub.CancelWorkflow(pb.WorkflowRef(id="grpc-flow")).cancelled_tasks == 2
        with pytest.raises(grpc.RpcError) as bad:
            stub.SubmitWorkflow(pb.SubmitWorkflowRequest(workflow_json="{"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rest_lists_workflows_a_page_at_a_time(node):
    """GET /api/v1/workflows: summaries in id order, one seek per workflow, with a cursor
    that skips the whole of a big workflow's records (not its first key only)."""
    queue = uniq()
    base = f"{rest_url(node)}/api/v1/workflows"
    ids = [f"list-{i:02d}" for i in range(5)]
    for flow_id in ids:
        made = httpx.post(base, json={"id": flow_id, "workflow": {
            "group": [{"type": "echo", "queue": queue}] * 30}})
        assert made.status_code == 201
    # "list-0" is a prefix of "list-00": its keys sort right before that workflow's, and
    # the cursor must step from one to the other without skipping or repeating either.
    assert httpx.post(base, json={"id": "list-0", "workflow": {
        "chain": [{"type": "echo", "queue": queue}]}}).status_code == 201
    seen, after = [], None
    while True:
        page = httpx.get(base, params={"limit": 2, "after": after or ""}).json()
        assert len(page["workflows"]) <= 2
        seen += page["workflows"]
        after = page["next_cursor"]
        if after is None:
            break
    listed = [w["id"] for w in seen if w["id"].startswith("list-")]
    assert listed == sorted(["list-0", *ids])
    one = next(w for w in seen if w["id"] == "list-03")
    assert one["status"] == "pending" and one["size"] == 30 and one["finished_at"] is None
    assert set(one) == {"id", "status", "size", "created_at", "updated_at", "finished_at",
                        "error"}
    for bad in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"after": "bad id!"}):
        r = httpx.get(base, params=bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == "BADREQ", bad


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


@pytest.mark.slow
def test_a_100000_member_group_is_submitted_within_bounded_memory(tmp_path_factory):
    """The largest workflow allowed (MAX_TASKS) on a real broker: accepted whole, every
    member pending, and the broker's RSS grows by well under 1 GB (it grew ~1,040 MB before
    the overlay trimmed orjson's over-allocated buffers; ~330 MB after)."""
    proc = module_broker(tmp_path_factory, "bigworkflow")
    try:
        import threading
        import time

        base = _rss_mb(proc.proc.pid)
        peak, done = [base], threading.Event()

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mb(proc.proc.pid))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        queue = uniq("big")
        with Client(proc.addr) as client:
            reply = client.submit_workflow(
                {"group": [{"type": "noop", "queue": queue, "payload": i}
                           for i in range(100_000)]})
            assert reply["size"] == 100_000
            assert client.queues()[queue]["pending"] == 100_000
            with pytest.raises(BrokerError, match="more than 100000 tasks"):
                client.submit_workflow({"group": [{"type": "noop", "queue": queue}] * 100_001})
        done.set()
        watcher.join()
        print(f"broker RSS {base:.0f} MB -> peak {peak[0]:.0f} MB")
        assert peak[0] - base < 600, (base, peak[0])
    finally:
        proc.stop()
