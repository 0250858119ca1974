"""The cluster seen from the HAProxy/worker/Prometheus node: one leader, HAProxy follows it,
a task submitted through HAProxy is completed by the worker, nothing acknowledged was lost."""
import json
import time

from conftest import BROKERS, CA, LB_URL, WORKER_KEY, run_json

testinfra_hosts = ["lb"]


def _leaders(host):
    leaders = []
    for node in BROKERS:
        out = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 --cacert {CA} https://{node}:8080/health/leader")
        if out.stdout.strip() == "200":
            leaders.append(node)
    return leaders


def test_exactly_one_leader(host):
    deadline = time.time() + 60
    leaders = _leaders(host)
    while len(leaders) != 1 and time.time() < deadline:
        time.sleep(2)
        leaders = _leaders(host)
    assert len(leaders) == 1, leaders


def test_haproxy_routes_to_the_leader(host):
    assert host.service("haproxy").is_running and host.service("haproxy").is_enabled
    leaders = _leaders(host)
    assert len(leaders) == 1
    for port in (8080,):
        out = host.check_output(f"curl -fsS --cacert {CA} {LB_URL}/health/leader")
        assert json.loads(out)["node_id"] == leaders[0]
    # the protocol port is forwarded too (TLS passthrough to the leader)
    cert = host.run(f"echo | openssl s_client -connect tqm-node4:6379 -servername tqm-node4 -CAfile {CA} 2>/dev/null | openssl x509 -noout -subject")
    assert leaders[0] in cert.stdout


def test_worker_running(host):
    unit = host.service("task-queue-worker")
    assert unit.is_enabled and unit.is_running
    env = host.file("/etc/task-queue/worker.env")
    assert env.user == "root" and env.mode == 0o600
    text = host.file("/etc/systemd/system/task-queue-worker.service").content_string
    assert "--broker-addr tqm-node4:6379" in text and "--tls-ca /etc/task-queue/tls/ca.crt" in text


def test_task_through_haproxy_completed_by_worker(host, probe):
    rc, result = run_json(host, f"python3 {probe} once {LB_URL} {WORKER_KEY} {CA}")
    assert rc == 0 and result["ok"], result


def test_workers_registered(host):
    out = host.run(f"curl -fsS --cacert {CA} -H 'Authorization: Bearer molecule-admin-key' {LB_URL}/api/v1/workers")
    assert out.rc == 0, out.stderr
    assert "tqm-node4" in out.stdout


def test_no_acknowledged_task_lost(host, probe):
    """Every task acknowledged during side_effect (leader kill, partition, rolling upgrade and
    rollback) exists and was completed."""
    if not host.file("/var/tmp/tq-load/acked").exists:
        import pytest
        pytest.skip("side_effect did not run")
    rc, result = run_json(host, f"python3 {probe} check {LB_URL} {WORKER_KEY} {CA} /var/tmp/tq-load 180")
    assert rc == 0 and result["ok"], result
    assert result["acked"] > 0
