"""The REST API against a real broker process: every endpoint, errors and their codes."""

from __future__ import annotations

import uuid

import httpx
import pytest

from taskqueue.client import Client
from tests.api_support import module_broker, rest_url


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = module_broker(tmp_path_factory, "rest",
                         {"broker": {"queue_depth_threshold": 5},
                          "api": {"max_body_bytes": 4096}})
    yield proc
    proc.stop()


@pytest.fixture
def http(node):
    with httpx.Client(base_url=rest_url(node), timeout=10) as client:
        yield client


def uniq(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error_of(response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str)
    return body["error"]["code"]


# ------------------------------------------------------------------------------- health

def test_health_and_leader(http):
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "healthy"
    r = http.get("/health/leader")
    assert r.status_code == 200 and r.json()["status"] == "leader"


def test_openapi_document_is_served(http):
    r = http.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/tasks" in doc["paths"]


# -------------------------------------------------------------------------------- tasks

def test_minimal_submit_returns_201_and_the_task(http):
    r = http.post("/api/v1/tasks", json={"type": "echo", "payload": {"msg": "hi"}})
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["status"] == "pending" and task["id"]
    for field in ("id", "type", "queue", "payload", "priority", "max_retries", "run_at",
                  "timeout_secs", "idempotency_key", "status", "attempts", "result",
                  "error", "created_at", "updated_at", "started_at", "finished_at"):
        assert field in task
    assert task["payload"] == {"msg": "hi"} and task["queue"] == "default"
    got = http.get(f"/api/v1/tasks/{task['id']}")
    assert got.status_code == 200 and got.json() == task


def test_submit_all_fields_duplicate_and_delayed(http):
    queue = uniq()
    body = {"id": uniq("t"), "type": "mail", "queue": queue, "payload": [1, "x", None],
            "priority": 7, "max_retries": 0, "timeout_secs": 2.5, "retry_backoff_secs": 0.5,
            "idempotency_key": uniq("k"), "delay_secs": 3600}
    r = http.post("/api/v1/tasks", json=body)
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["status"] == "scheduled" and task["priority"] == 7
    assert task["run_at"] > task["created_at"] + 3000
    again = http.post("/api/v1/tasks", json=body)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["id"] == task["id"]


def test_exported_task_is_accepted_back_as_is(http):
    task = http.post("/api/v1/tasks", json={"type": "echo", "payload": 1}).json()
    exported = dict(task, id=uniq("copy"), status="completed", attempts=3,
                    result={"ok": True}, error="old", worker="w1", finished_at=1.0)
    r = http.post("/api/v1/tasks", json=exported)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending" and r.json()["attempts"] == 0


@pytest.mark.parametrize("body,code", [
    (b"{not json", 400),
    (b"", 400),
    (b"[1, 2]", 400),
    (b'"a string"', 400),
    (b'{"payload": 1}', 400),                     # type missing
    (b'{"type": 5}', 400),                        # wrong type
    (b'{"type": "x", "priority": "high"}', 400),
    (b'{"type": "x", "priority": 10}', 400),
    (b'{"type": "x", "max_retries": true}', 400),
    (b'{"type": "x", "queue": "bad queue"}', 400),
    (b'{"type": "x", "id": "a/b"}', 400),
    (b'{"type": "x", "bogus": 1}', 400),
    (b'{"type": "x", "run_at": "yesterday"}', 400),
    (b'{"type": "x", "run_at": NaN}', 400),
])
def test_bad_bodies_get_400_never_500(http, body, code):
    r = http.post("/api/v1/tasks", content=body, headers={"content-type": "application/json"})
    assert r.status_code == code, r.text
    assert error_of(r) == "BADREQ"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx"])
def test_a_body_not_declared_json_gets_415(http, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = http.post("/api/v1/tasks", content=b'{"type": "x"}', headers=headers)
    assert r.status_code == 415, r.text
    assert error_of(r) == "BADREQ"
    # a queue of its own per case: the module's broker allows 5 waiting tasks per queue
    queue = "ct-" + (content_type or "none").replace("/", "-")
    ok = http.post("/api/v1/tasks", content=b'{"type": "x", "queue": "%s"}' % queue.encode(),
                   headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 201, ok.text


def test_oversize_body_gets_413(http):
    r = http.post("/api/v1/tasks", json={"type": "x", "payload": "a" * 10000})
    assert r.status_code == 413
    assert error_of(r) == "TOOLARGE"


def test_get_unknown_and_bad_id(http):
    r = http.get("/api/v1/tasks/no-such-task")
    assert r.status_code == 404 and error_of(r) == "NOTFOUND"
    r = http.get("/api/v1/tasks/" + "x" * 200)
    assert r.status_code == 400 and error_of(r) == "BADREQ"


def test_unknown_route_and_method_are_json(http):
    r = http.get("/api/v1/nope")
    assert r.status_code == 404 and error_of(r) == "NOTFOUND"
    r = http.delete("/api/v1/tasks")
    assert r.status_code == 405 and error_of(r) == "BADREQ"
    assert {"GET", "POST"} <= {m.strip() for m in r.headers["allow"].split(",")}


def test_bulk_submit(http):
    queue = uniq()
    tasks = [{"type": "echo", "queue": queue, "payload": i} for i in range(3)]
    r = http.post("/api/v1/tasks/bulk", json={"tasks": tasks})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [set(t) for t in results] == [{"id", "status", "duplicate"}] * 3
    assert [http.get(f"/api/v1/tasks/{t['id']}").json()["payload"] for t in results] == \
        [0, 1, 2]
    r = http.post("/api/v1/tasks/bulk", json=[{"type": "echo", "queue": queue}])
    assert r.status_code == 200 and len(r.json()["results"]) == 1
    # Queue depth threshold is 5: the 6th waiting task is refused per task.
    r = http.post("/api/v1/tasks/bulk", json={"tasks": [{"type": "e", "queue": queue}] * 3})
    codes = [None if "id" in x else x["error"]["code"] for x in r.json()["results"]]
    assert codes.count("QUEUEFULL") == 2 and codes.count(None) == 1
    for bad in ({"tasks": []}, {"tasks": "x"}, {"nope": 1}, {"tasks": [{"payload": 1}]},
                {"tasks": [{"type": "x"}] * 1001}):
        r = http.post("/api/v1/tasks/bulk", json=bad)
        assert r.status_code in (400, 413), (bad, r.text)


def test_queue_full_is_429(http):
    queue = uniq()
    for _ in range(5):
        assert http.post("/api/v1/tasks", json={"type": "e", "queue": queue}).status_code == 201
    r = http.post("/api/v1/tasks", json={"type": "e", "queue": queue})
    assert r.status_code == 429 and error_of(r) == "QUEUEFULL"


def test_list_filters_and_cursor_pagination(http):
    queue = uniq()
    ids = set()
    for i in range(4):
        task = http.post("/api/v1/tasks", json={"type": "a" if i % 2 else "b", "queue": queue,
                                                "payload": i}).json()
        ids.add(task["id"])
    seen, cursor, pages = set(), None, 0
    while True:
        params = {"queue": queue, "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/api/v1/tasks", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        seen.update(t["id"] for t in body["tasks"])
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == ids and pages >= 4
    typed = http.get("/api/v1/tasks", params={"queue": queue, "type": "a"}).json()["tasks"]
    assert {t["type"] for t in typed} == {"a"} and len(typed) == 2
    pending = http.get("/api/v1/tasks", params={"queue": queue, "status": "pending",
                                               "limit": 100}).json()["tasks"]
    assert {t["id"] for t in pending} == ids
    none = http.get("/api/v1/tasks", params={"queue": queue, "status": "dead"}).json()
    assert none["tasks"] == [] and none["next_cursor"] is None
    assert none["read_from"]["role"] == "leader" and none["read_from"]["lag"] == 0
    assert none["read_from"]["caught_up"] is True
    for params in ({"status": "bogus"}, {"limit": "x"}, {"limit": 0}, {"limit": 10001},
                   {"cursor": "zz"}, {"queue": "bad queue"}):
        r = http.get("/api/v1/tasks", params=params)
        assert r.status_code == 400 and error_of(r) == "BADREQ", params


def test_cancel_and_requeue(http):
    task = http.post("/api/v1/tasks", json={"type": "e", "queue": uniq()}).json()
    r = http.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = http.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert r.status_code == 409 and error_of(r) == "BADSTATE"
    r = http.post(f"/api/v1/tasks/{task['id']}/requeue")
    assert r.status_code == 200 and r.json()["status"] == "pending"
    r = http.post(f"/api/v1/tasks/{task['id']}/requeue")
    assert r.status_code == 409 and error_of(r) == "BADSTATE"
    assert http.post("/api/v1/tasks/missing/cancel").status_code == 404
    assert http.post("/api/v1/tasks/missing/requeue").status_code == 404


# ------------------------------------------------------------------------------- queues

def test_queue_depths_pause_resume(http, node):
    queue = uniq()
    http.post("/api/v1/tasks", json={"type": "e", "queue": queue})
    depths = http.get("/api/v1/queues").json()["queues"]
    assert depths[queue]["pending"] == 1 and depths[queue]["paused"] is False
    one = http.get(f"/api/v1/queues/{queue}")
    assert one.status_code == 200 and one.json()["queue"] == queue
    assert http.get(f"/api/v1/queues/{uniq()}").status_code == 404
    r = http.post(f"/api/v1/queues/{queue}/pause")
    assert r.status_code == 200 and r.json() == {"queue": queue, "paused": True}
    assert http.get(f"/api/v1/queues/{queue}").json()["paused"] is True
    with Client(node.addr, identity={"worker_id": uniq("w"), "queues": [queue]}) as worker:
        assert worker.fetch([queue], timeout_ms=200) == []
        r = http.post(f"/api/v1/queues/{queue}/resume")
        assert r.status_code == 200 and r.json()["paused"] is False
        assert len(worker.fetch([queue], timeout_ms=2000)) == 1
    assert http.post("/api/v1/queues/bad%20name/pause").status_code == 400


# ----------------------------------------------------------------- workers, stats, etc.

def test_workers_and_worker_state(http, node):
    worker_id = uniq("w")
    with Client(node.addr, identity={"worker_id": worker_id, "hostname": "h1",
                                     "queues": ["default"], "concurrency": 3}):
        rows = http.get("/api/v1/workers").json()["workers"]
        row = next(w for w in rows if w["worker_id"] == worker_id)
        assert row["hostname"] == "h1" and row["concurrency"] == 3
        r = http.post(f"/api/v1/workers/{worker_id}/state", json={"state": "quiet"})
        assert r.status_code == 200 and r.json() == {"worker_id": worker_id, "state": "quiet"}
        rows = http.get("/api/v1/workers").json()["workers"]
        assert next(w for w in rows if w["worker_id"] == worker_id)["state"] == "quiet"
    r = http.post(f"/api/v1/workers/{worker_id}/state", json={"state": "sleepy"})
    assert r.status_code == 400
    r = http.post("/api/v1/workers/nobody/state", json={"state": "stop"})
    assert r.status_code == 404


def test_stats_and_cluster(http):
    stats = http.get("/api/v1/stats").json()
    assert stats["totals"]["submitted"] >= 0 and "pending" in stats["tasks"]
    assert "estimate_num_keys" in stats["rocksdb"]
    cluster = http.get("/api/v1/cluster").json()
    assert cluster["mode"] == "single" and cluster["nodes"][0]["role"] == "leader"
    assert cluster["leader"]


def test_create_snapshot(http, tmp_path):
    target = tmp_path / "snap"
    r = http.post("/api/v1/snapshots", json={"path": str(target)})
    assert r.status_code == 201, r.text
    assert r.json()["path"] == str(target) and r.json()["applied_index"] > 0
    assert target.is_dir()
    r = http.post("/api/v1/snapshots", json={"path": str(target)})
    assert r.status_code == 400 and error_of(r) == "BADREQ"
    assert http.post("/api/v1/snapshots", json={}).status_code == 400
