"""Helpers for the REST / gRPC / metrics / auth / TLS tests: brokers with every API port,
API keys, certificates made with openssl the way the deployment guide does, TLS readiness.
"""

from __future__ import annotations

import functools
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import bcrypt

from tests.brokerproc import BrokerProcess, free_port

# Test API keys and their permissions (bcrypt cost 4 keeps start-up fast; production
# hashes from `htpasswd -nBC 10` are checked in test_api_auth.py too).
KEYS = {
    "admin": ("admin-key-0123456789", ["admin"]),
    "submit": ("submit-key-0123456789", ["submit_tasks"]),
    "read": ("read-key-0123456789", ["read_tasks"]),
    "cancel": ("cancel-key-0123456789", ["cancel_tasks"]),
}


def key_entries(rounds: int = 4) -> list[dict]:
    return [{"name": name, "permissions": perms,
             "key_hash": bcrypt.hashpw(key.encode(), bcrypt.gensalt(rounds)).decode()}
            for name, (key, perms) in KEYS.items()]


def api_overrides(extra: dict | None = None) -> dict:
    from tests.brokerproc import deep_merge

    base = {"api": {"rest_port": free_port(), "grpc_port": free_port()},
            "monitoring": {"prometheus_port": free_port()}}
    return deep_merge(base, extra or {})


def ports(proc: BrokerProcess) -> dict:
    c = proc.config
    return {"resp": c["broker"]["port"], "rest": c["api"]["rest_port"],
            "grpc": c["api"]["grpc_port"], "metrics": c["monitoring"]["prometheus_port"]}


def rest_url(proc: BrokerProcess, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{proc.config['api']['rest_port']}"


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def module_broker(tmp_path_factory, name: str, extra: dict | None = None) -> BrokerProcess:
    """A broker for a whole test module (stop it yourself): REST, gRPC and metrics on."""
    proc = BrokerProcess(tmp_path_factory.mktemp(name), api_overrides(extra), name=name)
    proc.start()
    for port in ports(proc).values():
        wait_port(port)
    return proc


def start_api_broker(broker_factory, extra: dict | None = None, name: str | None = None):
    """A broker with REST, gRPC and metrics on free ports, all of them accepting."""
    proc = broker_factory(api_overrides(extra), name=name)
    for port in ports(proc).values():
        wait_port(port)
    return proc


# ---------------------------------------------------------------------------------- TLS

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path, bits: int = 4096) -> Path:
    """The guide's commands (Security / TLS Configuration), plus ``-subj`` for the CA so
    they run unattended, and a second CA with its own client certificate (the outsider)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", f"rsa:{bits}", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "365", "-nodes", "-subj", "/CN=task-queue-ca", cwd=d)
    _openssl("req", "-newkey", f"rsa:{bits}", "-keyout", "server.key", "-out", "server.csr",
             "-nodes", "-subj", "/CN=task-queue", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "365", cwd=d)
    _openssl("req", "-newkey", f"rsa:{bits}", "-keyout", "client.key", "-out", "client.csr",
             "-nodes", "-subj", "/CN=client", cwd=d)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "client.crt", "-days", "365", cwd=d)
    # Another CA and a client certificate it signed: must be refused under mutual TLS.
    _openssl("req", "-x509", "-newkey", f"rsa:{bits}", "-keyout", "other-ca.key", "-out",
             "other-ca.crt", "-days", "365", "-nodes", "-subj", "/CN=other-ca", cwd=d)
    _openssl("req", "-newkey", f"rsa:{bits}", "-keyout", "other.key", "-out", "other.csr",
             "-nodes", "-subj", "/CN=client", cwd=d)
    _openssl("x509", "-req", "-in", "other.csr", "-CA", "other-ca.crt", "-CAkey",
             "other-ca.key", "-CAcreateserial", "-out", "other.crt", "-days", "365", cwd=d)
    return d


def have_openssl() -> bool:
    return shutil.which("openssl") is not None


SERVER_NAME = "task-queue"  # the CN the guide gives the server certificate


def client_ssl(pki: Path, cert: str | None = "client", ca: str = "ca") -> ssl.SSLContext:
    """A client context trusting ``ca``; presenting ``cert`` (client/other) if given."""
    ctx = ssl.create_default_context(cafile=str(pki / f"{ca}.crt"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    return ctx


def _tls_ready(proc: BrokerProcess, ctx: ssl.SSLContext, wait: float = 20.0) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.proc.returncode}:\n{proc.logs()}")
        try:
            with socket.create_connection(("127.0.0.1", proc.port), timeout=1) as raw:
                with ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"TLS broker did not answer within {wait}s:\n{proc.logs()}")


def start_tls_broker(workdir: Path, pki: Path, mutual: bool, extra: dict | None = None,
                     name: str = "tls") -> BrokerProcess:
    """A broker with TLS on every port (mutual TLS with ``mutual``); stop it yourself."""
    from tests.brokerproc import deep_merge

    api = {"enable_tls": True, "tls_cert_path": str(pki / "server.crt"),
           "tls_key_path": str(pki / "server.key")}
    if mutual:
        api["tls_ca_path"] = str(pki / "ca.crt")
    proc = BrokerProcess(workdir, api_overrides(deep_merge({"api": api}, extra or {})),
                         name=name)
    proc.wait_ready = functools.partial(_tls_ready, proc, client_ssl(pki, "client"))
    proc.start()
    for port in ports(proc).values():
        wait_port(port)
    return proc
