"""TLS on every port (worker protocol, REST, gRPC, metrics), with certificates made by
openssl exactly as the deployment guide's Security section does; mutual TLS refuses
clients without a certificate or with one from another CA; plaintext is refused.

The guide's server certificate carries only ``CN=task-queue`` (no subjectAltName), so
clients here verify the chain and check the name ``task-queue`` (SNI / target name
override) while connecting to 127.0.0.1.
"""

from __future__ import annotations

import socket
import ssl

import grpc
import httpx
import pytest

from broker.api import taskqueue_pb2 as pb
from broker.api import taskqueue_pb2_grpc as pb_grpc
from taskqueue.client import Client
from taskqueue.tlsutil import client_context
from tests.api_support import SERVER_NAME, client_ssl, have_openssl, make_pki, ports, \
    start_tls_broker

pytestmark = pytest.mark.skipif(not have_openssl(), reason="needs the openssl command")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    # The guide's commands with 2048-bit keys (4096 takes ~3 s a key; see the slow test).
    return make_pki(tmp_path_factory.mktemp("pki"), bits=2048)


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory, pki):
    proc = start_tls_broker(tmp_path_factory.mktemp("tls"), pki, mutual=False)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def mtls_node(tmp_path_factory, pki):
    proc = start_tls_broker(tmp_path_factory.mktemp("mtls"), pki, mutual=True, name="mtls")
    yield proc
    proc.stop()


# -------------------------------------------------------------------------- clients

def https_get(port: int, path: str, ctx) -> httpx.Response:
    with httpx.Client(verify=ctx, timeout=5) as http:
        return http.get(f"https://127.0.0.1:{port}{path}",
                        extensions={"sni_hostname": SERVER_NAME})


def resp_ping(port: int, ctx: ssl.SSLContext | None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        sock = ctx.wrap_socket(raw, server_hostname=SERVER_NAME) if ctx else raw
        with sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64)


def grpc_stats(port: int, pki, cert: str | None, ca: str = "ca"):
    key = chain = None
    if cert:
        key = (pki / f"{cert}.key").read_bytes()
        chain = (pki / f"{cert}.crt").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=(pki / f"{ca}.crt").read_bytes(),
                                         private_key=key, certificate_chain=chain)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds,
                             options=[("grpc.ssl_target_name_override", SERVER_NAME)]) as ch:
        return pb_grpc.TaskQueueStub(ch).Stats(pb.StatsRequest(), timeout=5)


def refused(call) -> bool:
    try:
        result = call()
    except (OSError, ssl.SSLError, httpx.HTTPError, grpc.RpcError):
        return True
    return isinstance(result, bytes) and not result.startswith(b"+PONG")


# ---------------------------------------------------------------------------- tests

def test_tls_on_every_port(tls_node, pki):
    p = ports(tls_node)
    ctx = client_ssl(pki, cert=None)
    assert resp_ping(p["resp"], ctx).startswith(b"+PONG")
    r = https_get(p["rest"], "/health", ctx)
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    assert https_get(p["rest"], "/api/v1/stats", ctx).status_code == 200
    assert grpc_stats(p["grpc"], pki, cert=None).node_id
    assert "tq_tasks_pending" in https_get(p["metrics"], "/metrics", ctx).text
    # The project's own client, as a worker would use it (chain verified; the guide's
    # certificate has no SAN for 127.0.0.1, so the name check is off here).
    with Client(tls_node.addr, ssl_context=client_context(str(pki / "ca.crt"),
                                                          check_hostname=False)) as c:
        assert c.submit("echo", {"tls": True})["status"] == "pending"


def test_plaintext_is_refused_when_tls_is_on(tls_node):
    p = ports(tls_node)
    assert refused(lambda: resp_ping(p["resp"], None))
    assert refused(lambda: httpx.get(f"http://127.0.0.1:{p['rest']}/health", timeout=5))
    assert refused(lambda: httpx.get(f"http://127.0.0.1:{p['metrics']}/metrics", timeout=5))
    with grpc.insecure_channel(f"127.0.0.1:{p['grpc']}") as ch:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.TaskQueueStub(ch).Stats(pb.StatsRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_untrusted_server_certificate_is_rejected_by_clients(tls_node, pki):
    """A client trusting only the other CA does not accept the broker."""
    p = ports(tls_node)
    other = client_ssl(pki, cert=None, ca="other-ca")
    assert refused(lambda: resp_ping(p["resp"], other))
    assert refused(lambda: https_get(p["rest"], "/health", other))
    assert refused(lambda: grpc_stats(p["grpc"], pki, cert=None, ca="other-ca"))


def test_mutual_tls_accepts_the_guide_client_certificate(mtls_node, pki):
    p = ports(mtls_node)
    ctx = client_ssl(pki, cert="client")
    assert resp_ping(p["resp"], ctx).startswith(b"+PONG")
    assert https_get(p["rest"], "/api/v1/cluster", ctx).status_code == 200
    assert grpc_stats(p["grpc"], pki, cert="client").node_id
    assert https_get(p["metrics"], "/metrics", ctx).status_code == 200


@pytest.mark.parametrize("cert", [None, "other"], ids=["no-client-cert", "other-ca-cert"])
def test_mutual_tls_refuses_other_clients(mtls_node, pki, cert):
    p = ports(mtls_node)
    ctx = client_ssl(pki, cert=cert)
    assert refused(lambda: resp_ping(p["resp"], ctx))
    assert refused(lambda: https_get(p["rest"], "/health", ctx))
    assert refused(lambda: grpc_stats(p["grpc"], pki, cert=cert))
    assert refused(lambda: https_get(p["metrics"], "/metrics", ctx))
    assert refused(lambda: resp_ping(p["resp"], None))  # and plaintext, of course


def test_dashboard_over_mutual_tls_the_certificate_reaches_it_and_the_key_decides(
        tmp_path, pki):
    """docs/dashboard.md: with mutual TLS the browser's client certificate is enough to load
    /ui; what the page may then do is still the API key's permissions."""
    from tests.api_support import KEYS, key_entries

    proc = start_tls_broker(tmp_path, pki, mutual=True, name="mtls-ui",
                            extra={"auth": {"enabled": True, "api_keys": key_entries()}})
    try:
        rest = ports(proc)["rest"]
        ctx = client_ssl(pki, cert="client")
        page = https_get(rest, "/ui/", ctx)
        assert page.status_code == 200 and "<title>task-queue dashboard" in page.text
        assert https_get(rest, "/ui/js/app.js", ctx).status_code == 200
        for cert in (None, "other"):  # no certificate, or one from another CA: no page
            assert refused(lambda: https_get(rest, "/ui/", client_ssl(pki, cert=cert)))
        # The certificate alone grants nothing in the API the page calls.
        assert https_get(rest, "/api/v1/whoami", ctx).status_code == 401
        with httpx.Client(verify=ctx, timeout=5) as http:
            who = http.get(f"https://127.0.0.1:{rest}/api/v1/whoami",
                           headers={"Authorization": f"Bearer {KEYS['read'][0]}"},
                           extensions={"sni_hostname": SERVER_NAME}).json()
            assert who["permissions"] == ["read_tasks"] and not who["allows"]["admin"]
            paused = http.post(f"https://127.0.0.1:{rest}/api/v1/queues/q/pause",
                               headers={"Authorization": f"Bearer {KEYS['read'][0]}"},
                               extensions={"sni_hostname": SERVER_NAME})
            assert paused.status_code == 403
    finally:
        proc.stop()


@pytest.mark.slow
def test_guide_4096_bit_certificates_on_every_port(tmp_path):
    """The guide's commands verbatim (rsa:4096), mutual TLS, every port."""
    pki = make_pki(tmp_path / "pki", bits=4096)
    node = start_tls_broker(tmp_path / "node", pki, mutual=True, name="guide")
    try:
        p = ports(node)
        ctx = client_ssl(pki, cert="client")
        assert resp_ping(p["resp"], ctx).startswith(b"+PONG")
        assert https_get(p["rest"], "/health", ctx).json()["status"] == "healthy"
        assert grpc_stats(p["grpc"], pki, cert="client").node_id
        assert https_get(p["metrics"], "/metrics", ctx).status_code == 200
        assert refused(lambda: https_get(p["rest"], "/health", client_ssl(pki, "other")))
    finally:
        node.stop()
