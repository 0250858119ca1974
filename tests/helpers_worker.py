"""Helpers for worker and admin tests: tq-worker processes, waiting on task states.

The broker side comes from tests/conftest.py (``broker`` / ``broker_factory`` fixtures).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from taskqueue.client import Client

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"completed", "dead", "cancelled"}


class WorkerProcess:
    """A real ``python -m worker.cli`` process, logging to a file in ``workdir``."""

    def __init__(self, broker_addr: str, workdir: Path, *args: str, name: str = "worker",
                 handlers: str = "tests.worker_handlers", env: dict | None = None):
        self.workdir = Path(workdir)
        self.name = name
        self.worker_id = f"{name}-{os.getpid()}-{time.monotonic_ns() % 100000}"
        self.evidence = self.workdir / "evidence.txt"
        self.log_path = self.workdir / f"{name}.log"
        self.argv = [sys.executable, "-m", "worker.cli", "--broker-addr", broker_addr,
                     "--handlers", handlers, "--worker-id", self.worker_id,
                     "--log-level", "debug", *args]
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", TQ_TEST_EVIDENCE=str(self.evidence),
                        **(env or {}))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:] if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    def evidence_lines(self) -> list[list[str]]:
        if not self.evidence.exists():
            return []
        return [line.split() for line in self.evidence.read_text().splitlines() if line]


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_statuses(client: Client, ids: list[str], statuses=TERMINAL,
                  timeout: float = 20.0) -> dict[str, dict]:
    """Wait until every task is in one of ``statuses``; returns the tasks by id."""
    tasks: dict[str, dict] = {}

    def done():
        for task_id in ids:
            if task_id not in tasks or tasks[task_id]["status"] not in statuses:
                tasks[task_id] = client.get(task_id)
        return all(t["status"] in statuses for t in tasks.values())

    try:
        wait_for(done, timeout, interval=0.1, what=f"tasks to reach {sorted(statuses)}")
    except AssertionError:
        late = {i: t["status"] for i, t in tasks.items() if t["status"] not in statuses}
        raise AssertionError(f"tasks not {sorted(statuses)} in {timeout}s: {late}") from None
    return tasks
