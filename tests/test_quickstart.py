"""The README's first command works: a broker, a worker and tasks flowing end to end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.slow
def test_quickstart_runs_tasks_through_a_broker_and_a_worker(tmp_path):
    busy = [p for p in (6379, 8080, 9090, 9091) if not _port_free(p)]
    if busy:
        pytest.skip(f"the quickstart uses the guide's default ports; busy: {busy}")
    env = dict(os.environ, TQ_VENV=str(Path(sys.executable).parent.parent))
    proc = subprocess.run(["bash", "scripts/quickstart.sh", "--once"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "24 completed, 1 dead" in output, output[-4000:]
    assert "result of the first echo task: {'n': 0}" in output
