"""Prometheus scrapes every broker and loads the alert rules; Grafana provisioning files."""
import json
import time

testinfra_hosts = ["monitoring"]


def _api(host, path):
    return json.loads(host.check_output(f"curl -fsS 'http://localhost:9090/api/v1/{path}'"))


def test_prometheus_running_and_config_valid(host):
    assert host.service("prometheus").is_running and host.service("prometheus").is_enabled
    assert host.run("promtool check config /etc/prometheus/prometheus.yml").rc == 0


def test_every_broker_scraped(host):
    deadline = time.time() + 90
    while True:
        targets = _api(host, "targets")["data"]["activeTargets"]
        tq = [t for t in targets if t["labels"]["job"] == "task-queue"]
        up = sorted(t["labels"]["node"] for t in tq if t["health"] == "up")
        if up == ["tqm-node1", "tqm-node2", "tqm-node3"] or time.time() > deadline:
            break
        time.sleep(5)
    assert up == ["tqm-node1", "tqm-node2", "tqm-node3"], [(t["labels"], t["health"], t.get("lastError")) for t in tq]


def test_scrapes_present_the_client_certificate(host):
    """Mutual TLS: Prometheus presents a copy of the node's client certificate; the key is
    readable by the prometheus user, the tls role's key stays 0400 taskqueue."""
    config = host.file("/etc/prometheus/prometheus.yml").content_string
    assert "cert_file: /etc/prometheus/task-queue-client.crt" in config
    assert "key_file: /etc/prometheus/task-queue-client.key" in config
    key = host.file("/etc/prometheus/task-queue-client.key")
    assert key.user == "root" and key.group == "prometheus" and key.mode == 0o640
    assert host.run("runuser -u prometheus -- head -c0 /etc/prometheus/task-queue-client.key").rc == 0
    original = host.file("/etc/task-queue/tls/client.key")
    assert original.user == "taskqueue" and original.mode == 0o400


def test_metrics_stored(host):
    deadline = time.time() + 60
    while True:
        result = _api(host, "query?query=sum(tq_raft_is_leader)")["data"]["result"]
        if (result and float(result[0]["value"][1]) == 1) or time.time() > deadline:
            break
        time.sleep(5)
    assert result and float(result[0]["value"][1]) == 1
    assert _api(host, "query?query=tq_workers_connected")["data"]["result"]


def test_alert_rules_loaded(host):
    groups = _api(host, "rules")["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    for alert in ("HighPendingTasks", "WorkerDown", "HighFailureRate", "TaskQueueLeaderMissing",
                  "TaskQueueNodeDown", "TaskQueueRaftLag", "TaskQueueDiskLow",
                  "TaskQueueRestoreMismatch", "TaskQueueNodeCatchingUp"):
        assert alert in names


def test_grafana_provisioning(host):
    ds = host.file("/etc/grafana/provisioning/datasources/task-queue.yml").content_string
    assert "type: prometheus" in ds and "http://localhost:9090" in ds
    board = json.loads(host.file("/var/lib/grafana/dashboards/task-queue-dashboard.json").content_string)
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in ("tq_tasks_pending", "tq_tasks_total", "tq_workers_connected", "tq_raft_is_leader",
                   "tq_task_run_seconds_bucket"):
        assert metric in exprs
