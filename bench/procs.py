"""Starting and measuring the processes a benchmark drives (brokers, workers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_secs(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def wait_for_ping(port: int, timeout: float, proc: subprocess.Popen | None = None) -> float:
    """Seconds until the broker answers PING."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"broker on port {port} did not answer in {timeout}s")


class LocalBroker:
    """A broker the benchmark starts itself, on free ports and a temporary data dir."""

    def __init__(self, wal_sync_interval_ms: int = 100, data_dir: str | None = None):
        self.tmp = tempfile.mkdtemp(prefix="tq-bench-")
        self.port = free_port()
        config = {
            "broker": {"host": "127.0.0.1", "port": self.port,
                       "queue_depth_threshold": 10_000_000},
            "persistence": {"data_dir": data_dir or os.path.join(self.tmp, "data"),
                            "wal_sync_interval_ms": wal_sync_interval_ms},
            "api": {"rest_port": 0, "grpc_port": 0},
            "monitoring": {"prometheus_port": 0, "log_level": "warning"},
        }
        self.config_path = os.path.join(self.tmp, "broker.yaml")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f)
        self.proc: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start; return seconds until it answers."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "--config", self.config_path], cwd=ROOT,
            stdout=open(os.path.join(self.tmp, "broker.log"), "ab"), stderr=subprocess.STDOUT)
        return wait_for_ping(self.port, 120, self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)


def start_workers(addr: str, processes: int, concurrency: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "--broker-addr", addr,
         "--concurrency", str(concurrency), "--pool", "async", "--handlers", "bench.handlers",
         "--log-level", "warning"], cwd=ROOT)
        for _ in range(processes)]


def stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
