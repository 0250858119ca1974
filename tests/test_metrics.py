"""The Prometheus endpoint: the guide's alert metrics exist, and the values move."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskqueue.client import Client
from tests.api_support import module_broker, ports


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = module_broker(tmp_path_factory, "metrics")
    yield proc
    proc.stop()


def scrape(node) -> dict[tuple, float]:
    r = httpx.get(f"http://127.0.0.1:{ports(node)['metrics']}/metrics", timeout=5)
    assert r.status_code == 200
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_guide_alert_metrics_exist(node):
    s = scrape(node)
    value(s, "tq_tasks_pending")
    value(s, "tq_workers_connected")
    for status in ("submitted", "completed", "failed", "retried", "dead", "cancelled",
                   "expired"):
        value(s, "tq_tasks_total", status=status)
    # Raft figures are present in single-node mode too: this node is the leader.
    assert value(s, "tq_raft_role", role="leader") == 1
    assert value(s, "tq_raft_is_leader") == 1
    assert value(s, "tq_raft_applied_index") >= 0 and value(s, "tq_raft_term") == 0
    assert value(s, "tq_rocksdb_estimate_num_keys") >= 0
    # never restored: the info series with empty labels, and no mismatch
    assert value(s, "tq_restore_info", backup_sha256="", backup_applied_index="") == 1
    assert value(s, "tq_raft_restore_mismatch") == 0


def test_values_move(node):
    before = scrape(node)
    with Client(node.addr) as producer:
        ids = [producer.submit("echo", {"i": i}, queue="mq")["id"] for i in range(3)]
        producer.submit("echo", queue="mq", max_retries=0)
    mid = scrape(node)
    assert value(mid, "tq_tasks_total", status="submitted") == \
        value(before, "tq_tasks_total", status="submitted") + 4
    assert value(mid, "tq_tasks_pending") == value(before, "tq_tasks_pending") + 4
    assert value(mid, "tq_queue_depth", queue="mq", status="pending") == 4
    assert value(mid, "tq_operations_total", op="submitted") >= 4

    with Client(node.addr, identity={"worker_id": "metrics-w", "queues": ["mq"]}) as worker:
        during = scrape(node)
        assert value(during, "tq_workers_connected") >= 1
        assert value(during, "tq_worker_connections") == 1
        assert value(during, "tq_connections", protocol="resp") >= 1
        jobs = worker.fetch(["mq"], count=4, timeout_ms=2000)
        assert len(jobs) == 4
        time.sleep(0.05)
        for job in jobs[:3]:
            worker.ack(job["id"], job["token"], {"ok": True})
        worker.fail(jobs[3]["id"], jobs[3]["token"], "boom", retry=False)
    after = scrape(node)
    assert {j["id"] for j in jobs[:3]} | {jobs[3]["id"]} >= set(ids)
    assert value(after, "tq_tasks_total", status="completed") == \
        value(before, "tq_tasks_total", status="completed") + 3
    assert value(after, "tq_tasks_total", status="dead") == \
        value(before, "tq_tasks_total", status="dead") + 1
    assert value(after, "tq_queue_depth", queue="mq", status="completed") == 3
    assert value(after, "tq_queue_depth", queue="mq", status="pending") == 0
    assert value(after, "tq_tasks_pending") == value(before, "tq_tasks_pending")
    assert value(after, "tq_operations_total", op="claimed") >= 4
    assert value(after, "tq_operations_total", op="acked") >= 3
    assert value(after, "tq_task_queue_wait_seconds_count") >= 4
    assert value(after, "tq_task_run_seconds_count", outcome="completed") >= 3
    assert value(after, "tq_task_run_seconds_count", outcome="failed") >= 1
    assert value(after, "tq_task_run_seconds_sum", outcome="completed") > 0
    assert value(after, "tq_raft_applied_index") > value(before, "tq_raft_applied_index")
    assert value(after, "tq_resp_connections_accepted_total") >= 2


def test_pause_is_visible(node):
    with Client(node.addr) as admin:
        admin.submit("echo", queue="pq")
        admin.pause("pq")
        assert value(scrape(node), "tq_queue_paused", queue="pq") == 1
        admin.resume("pq")
        assert value(scrape(node), "tq_queue_paused", queue="pq") == 0
