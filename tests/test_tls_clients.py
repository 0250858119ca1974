"""Client, tq-worker and tq-admin over TLS to a real broker with ``api.enable_tls``."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest

from taskqueue.client import Client
from taskqueue.errors import ConnectionLost
from taskqueue.tlsutil import client_context
from tests.brokerproc import BrokerProcess
from tests.helpers_worker import ROOT, WorkerProcess, wait_statuses

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A throwaway CA and a server certificate for 127.0.0.1."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=tq-test-ca", cwd=d)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
            cwd=d)
    return d


class TlsBroker(BrokerProcess):
    """tests/brokerproc.py pings in plain text to see the broker is up; this pings over TLS."""

    ca: str = ""
    server_name: str = "127.0.0.1"  # the name its certificate is checked against

    def wait_ready(self, wait: float = 20.0) -> None:
        ctx = client_context(self.ca)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw, \
                        ctx.wrap_socket(raw, server_hostname=self.server_name) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"TLS broker did not answer within {wait}s:\n{self.logs()}")


@pytest.fixture
def tls_broker(tmp_path, certs):
    broker = TlsBroker(tmp_path / "tls", {"api": {
        "enable_tls": True, "tls_cert_path": str(certs / "server.crt"),
        "tls_key_path": str(certs / "server.key")}}, name="tls")
    broker.ca = str(certs / "ca.crt")
    broker.start()
    yield broker
    broker.stop()


def test_client_verifies_the_broker_certificate(tls_broker, certs):
    with Client(tls_broker.addr, ssl_context=client_context(str(certs / "ca.crt"))) as c:
        assert c.ping() == "PONG"
    # Without the CA the broker's certificate is not trusted.
    with pytest.raises((ConnectionLost, ssl.SSLError)):
        Client(tls_broker.addr, ssl_context=client_context()).connect()
    # Plain text to a TLS port fails cleanly too.
    with pytest.raises(ConnectionLost):
        Client(tls_broker.addr, connect_timeout=2, reply_timeout=2).connect()


def test_worker_and_admin_over_tls(tls_broker, certs, tmp_path):
    ca = str(certs / "ca.crt")
    worker = WorkerProcess(tls_broker.addr, tmp_path, "--tls-ca", ca, name="tls-worker").start()
    try:
        submitted = subprocess.run(
            [sys.executable, "-m", "admin.cli", "--broker-addr", tls_broker.addr, "--tls-ca",
             ca, "--json", "submit", "echo", "--payload", '"secure"'],
            cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert submitted.returncode == 0, submitted.stderr
        task_id = json.loads(submitted.stdout)["id"]
        with Client(tls_broker.addr, ssl_context=client_context(ca)) as c:
            task = wait_statuses(c, [task_id], timeout=20)[task_id]
        assert task["status"] == "completed" and task["result"] == "secure"
    finally:
        worker.stop()


def test_guide_certificate_without_ip_san_needs_the_server_name(tmp_path):
    """The guide issues the server certificate to CN=task-queue only (no subjectAltName):
    connecting by IP fails verification unless the client is told the name."""
    d = tmp_path / "pki"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=guide-ca", cwd=d)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=task-queue",
            cwd=d)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", cwd=d)
    broker = TlsBroker(tmp_path / "b", {"api": {
        "enable_tls": True, "tls_cert_path": str(d / "server.crt"),
        "tls_key_path": str(d / "server.key")}}, name="guide-tls")
    # Ready once it answers a TLS PING under the certificate's name (not after a fixed
    # sleep: a broker still starting would make tq-admin exit 3, unreachable, as well).
    broker.ca, broker.server_name = str(d / "ca.crt"), "task-queue"
    broker.start()
    try:
        base = [sys.executable, "-m", "admin.cli", "--broker-addr", broker.addr,
                "--tls-ca", str(d / "ca.crt"), "--json", "queue-depth"]
        refused = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert refused.returncode == 3, refused.stderr
        named = subprocess.run(base + ["--tls-server-name", "task-queue"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30)
        assert named.returncode == 0, named.stderr
        # the same from the environment, as an operator's shell profile sets it
        import os
        env = dict(os.environ, TQ_TLS_CA=str(d / "ca.crt"), TQ_TLS_SERVER_NAME="task-queue")
        from_env = subprocess.run([sys.executable, "-m", "admin.cli", "--broker-addr",
                                   broker.addr, "queue-depth"], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=30)
        assert from_env.returncode == 0, from_env.stderr
    finally:
        broker.stop()
