"""The cluster seen from the HAProxy/worker/Prometheus node: one leader, HAProxy follows it,
a task submitted through HAProxy is completed by the worker, nothing acknowledged was lost."""
import base64
import json
import time

from conftest import BROKERS, CA, CERT, CURL_TLS, KEY, LB_URL, PROBE_ENV, WORKER_KEY, run_json

testinfra_hosts = ["lb"]


def _leaders(host):
    leaders = []
    for node in BROKERS:
        out = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 {CURL_TLS} https://{node}:8080/health/leader")
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
        out = host.check_output(f"curl -fsS {CURL_TLS} {LB_URL}/health/leader")
        assert json.loads(out)["node_id"] == leaders[0]
    # the protocol port is forwarded too (TLS passthrough to the leader)
    cert = host.run(f"echo | openssl s_client -connect tqm-node4:6379 -servername tqm-node4 -CAfile {CA} -cert {CERT} -key {KEY} 2>/dev/null | openssl x509 -noout -subject")
    assert leaders[0] in cert.stdout


def test_worker_running(host):
    unit = host.service("task-queue-worker")
    assert unit.is_enabled and unit.is_running
    env = host.file("/etc/task-queue/worker.env")
    assert env.user == "root" and env.mode == 0o600
    text = host.file("/etc/systemd/system/task-queue-worker.service").content_string
    assert "--broker-addr tqm-node4:6379" in text and "--tls-ca /etc/task-queue/tls/ca.crt" in text
    assert f"--tls-cert {CERT}" in text and f"--tls-key {KEY}" in text  # mutual TLS


def test_task_through_haproxy_completed_by_worker(host, probe):
    rc, result = run_json(host, f"{PROBE_ENV} python3 {probe} once {LB_URL} {WORKER_KEY} {CA}")
    assert rc == 0 and result["ok"], result


def test_workers_registered(host):
    out = host.run(f"curl -fsS {CURL_TLS} -H 'Authorization: Bearer molecule-admin-key' {LB_URL}/api/v1/workers")
    assert out.rc == 0, out.stderr
    assert "tqm-node4" in out.stdout


def test_no_acknowledged_task_lost(host, probe):
    """Every task acknowledged during side_effect (leader kill, partition, rolling upgrade and
    rollback) exists and was completed."""
    if not host.file("/var/tmp/tq-load/acked").exists:
        import pytest
        pytest.skip("side_effect did not run")
    rc, result = run_json(host, f"{PROBE_ENV} python3 {probe} check {LB_URL} {WORKER_KEY} {CA} /var/tmp/tq-load 180")
    assert rc == 0 and result["ok"], result
    assert result["acked"] > 0


def test_haproxy_checks_present_the_client_certificate(host):
    """HAProxy's check-ssl health checks carry the node's client certificate (cert + key in one
    PEM file, readable by root and the haproxy group only)."""
    pem = host.file("/etc/haproxy/task-queue-client.pem")
    assert pem.user == "root" and pem.group == "haproxy" and pem.mode == 0o640
    text = pem.content_string
    assert "BEGIN CERTIFICATE" in text and "PRIVATE KEY" in text
    assert " crt /etc/haproxy/task-queue-client.pem" in host.file("/etc/haproxy/haproxy.cfg").content_string
    # the tls role's key itself is not loosened
    key = host.file(KEY)
    assert key.user == "taskqueue" and key.mode == 0o400


def test_broker_ports_refuse_a_client_without_certificate(host):
    """Mutual TLS: a client with only the CA is refused in the TLS handshake on every broker's
    REST and metrics ports (directly and through HAProxy); with the client certificate it gets 200."""
    urls = [f"https://{node}:{port}/{path}" for node in BROKERS
            for port, path in ((8080, "health"), (9091, "metrics"))] + [f"{LB_URL}/health/leader"]
    for url in urls:
        # TLS 1.2: the server asks for the certificate within the handshake, which fails (curl 35).
        bare = host.run(f"curl -sS -o /dev/null --max-time 5 --tls-max 1.2 --cacert {CA} {url}")
        assert bare.rc == 35, (url, bare.rc, bare.stderr)
        # TLS 1.3 (the default): the client's half of the handshake ends before the server checks
        # the certificate, so curl sees the refusal on its first read (52/55/56): no HTTP answer.
        bare = host.run(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 5 --cacert {CA} {url}")
        assert bare.rc != 0 and bare.stdout.strip() == "000", (url, bare.rc, bare.stdout, bare.stderr)
        code = host.check_output(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 5 {CURL_TLS} {url}")
        assert code == "200", (url, code)


def test_protocol_port_refuses_a_client_without_certificate(host):
    """The worker protocol port (6379) too: the handshake without a client certificate fails,
    with it a PING is answered."""
    script = (
        "import socket, ssl, sys\n"
        f"ctx = ssl.create_default_context(cafile='{CA}')\n"
        f"if sys.argv[2] == 'cert': ctx.load_cert_chain('{CERT}', '{KEY}')\n"
        "try:\n"
        "    with socket.create_connection((sys.argv[1], 6379), timeout=5) as raw:\n"
        "        with ctx.wrap_socket(raw, server_hostname=sys.argv[1]) as s:\n"
        "            s.sendall(b'*1\\r\\n$4\\r\\nPING\\r\\n')\n"
        "            reply = s.recv(64)\n"
        "except (ssl.SSLError, OSError) as exc:\n"
        "    print('refused', type(exc).__name__, exc)\n"
        "    sys.exit(3)\n"
        "print('refused: closed' if not reply else reply)\n"
        "sys.exit(0 if reply else 3)\n"
    )
    data = base64.b64encode(script.encode()).decode()
    host.run(f"echo {data} | base64 -d > /tmp/tq_mtls_ping.py")
    for node in BROKERS:
        bare = host.run(f"python3 /tmp/tq_mtls_ping.py {node} none")
        assert bare.rc == 3 and "refused" in bare.stdout, (node, bare.stdout, bare.stderr)
        good = host.run(f"python3 /tmp/tq_mtls_ping.py {node} cert")
        assert good.rc == 0 and "PONG" in good.stdout, (node, good.stdout, good.stderr)
