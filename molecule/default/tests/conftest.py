"""Shared helpers for the Molecule verify tests (testinfra over the docker connection)."""
import base64
import json
import os

import pytest

PROBE = os.path.join(os.path.dirname(__file__), "..", "files", "tq_probe.py")
CA = "/etc/task-queue/tls/ca.crt"
# The lab runs with mutual TLS (broker_tls_client_auth): every broker port wants the node's
# client certificate (tls role).
CERT = "/etc/task-queue/tls/client.crt"
KEY = "/etc/task-queue/tls/client.key"
CURL_TLS = f"--cacert {CA} --cert {CERT} --key {KEY}"
PROBE_ENV = f"TQ_TLS_CERT={CERT} TQ_TLS_KEY={KEY}"
LB_URL = "https://tqm-node4:8080"
WORKER_KEY = "molecule-worker-key"
BROKERS = ["tqm-node1", "tqm-node2", "tqm-node3"]


def push_probe(host):
    """Copy tq_probe.py to the node (side_effect may not have run)."""
    with open(PROBE, "rb") as fh:
        data = base64.b64encode(fh.read()).decode()
    host.run(f"echo {data} | base64 -d > /usr/local/bin/tq_probe.py && chmod 0755 /usr/local/bin/tq_probe.py")


def run_json(host, command):
    out = host.run(command)
    try:
        return out.rc, json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return out.rc, {"stdout": out.stdout, "stderr": out.stderr}


@pytest.fixture
def probe(host):
    push_probe(host)
    return "/usr/local/bin/tq_probe.py"
