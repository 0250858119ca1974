"""Real broker processes for tests: a config file with free ports, start, wait, kill, restart.

Every test that needs a broker runs the real ``python -m broker.cli`` in a subprocess: real
RocksDB, real sockets, real signals.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


_handed_ports: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free port below the kernel's ephemeral range, never handed out twice.

    A port from bind(0) lies in the ephemeral range, which is also where outgoing
    connections take their source ports: between the test picking it and the broker binding
    it, a peer's connection could take it (CI saw a Raft port "already in use" this way).
    Below the range, only another listener can take it, and this process hands each port
    out once."""
    floor = _ephemeral_floor()
    for _ in range(200):
        port = random.randrange(max(1024, floor - 12000), floor)
        if port in _handed_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_ports.add(port)
        return port
    with socket.socket() as s:  # a crowded host: fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class BrokerProcess:
    """One broker. ``addr`` is its protocol address; ``config`` the dict it was given."""

    def __init__(self, workdir: Path, overrides: dict | None = None, name: str = "broker"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        base = {
            "broker": {"host": "127.0.0.1", "port": self.port, "sweep_interval_ms": 50},
            "persistence": {"data_dir": str(self.workdir / "data"),
                            "wal_sync_interval_ms": 100},
            "api": {"rest_port": 0, "grpc_port": 0},
            "monitoring": {"prometheus_port": 0, "log_level": "info"},
            "worker": {"heartbeat_interval_secs": 0.5, "lease_timeout_secs": 2},
            # Tests send wrong keys on purpose, all from 127.0.0.1: the per-address slowdown
            # would make each wait up to 4 s. tests/test_conn_limits.py tests it, set on.
            "auth": {"failed_attempt_delay_secs": 0},
        }
        self.config = deep_merge(base, overrides or {})
        self.port = self.config["broker"]["port"]
        self.config_path = self.workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = self.workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: float = 20.0) -> "BrokerProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("TQ_LOG", None)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "--config", str(self.config_path)],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.wait_ready(wait)
        return self

    def wait_ready(self, wait: float = 20.0) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"broker did not answer within {wait}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, like a power cut of the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else 0

    def restart(self) -> "BrokerProcess":
        self.terminate()
        return self.start()

    def stop(self) -> None:
        try:
            self.terminate(10)
        except subprocess.TimeoutExpired:
            self.kill()
        if getattr(self, "_log", None):
            self._log.close()
