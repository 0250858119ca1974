"""A worker or admin host installs no broker dependencies: prove the tools run without them.

The worker and tq-admin run here in a Python where every broker-only (and optional speed-up)
module fails to import, against a real broker, so the stdlib fallbacks (json instead of
orjson) are exercised end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from taskqueue.client import Client
from tests.helpers_worker import ROOT, wait_statuses

BLOCKED = ["rocksdict", "sanic", "grpc", "orjson", "uvloop", "hiredis", "prometheus_client",
           "bcrypt", "pysyncobj", "broker", "yaml"]

PRELUDE = f"""
import sys, runpy
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked on a light host: " + name)
sys.meta_path.insert(0, _Block())
module = sys.argv.pop(1)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def light(module: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PRELUDE, module, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def test_worker_and_admin_run_without_broker_dependencies(broker):
    with Client(broker.addr) as client:
        task = client.submit("echo", {"light": True})
        worker = light("worker.cli", "--broker-addr", broker.addr, "--concurrency", "2")
        try:
            done = wait_statuses(client, [task["id"]], timeout=20)[task["id"]]
            assert done["status"] == "completed" and done["result"] == {"light": True}
            # Producer code: @task handler's .submit() and the handle's .wait().
            env = dict(os.environ, TQ_BROKER_ADDR=broker.addr)
            producer = light("tests.light_producer", env=env)
            out, err = producer.communicate(timeout=60)
            assert producer.returncode == 0, err
            assert json.loads(out) == {"from": "producer"}
        finally:
            worker.terminate()
            out, err = worker.communicate(timeout=20)
        assert worker.returncode == 0, err
        assert "ImportError" not in err

    admin = light("admin.cli", "--broker-addr", broker.addr, "list", "--status", "completed")
    out, err = admin.communicate(timeout=30)
    assert admin.returncode == 0, err
    listed = [t["id"] for t in json.loads(out)]
    assert task["id"] in listed and len(listed) == 2  # the echo task and the producer's

    # hash-key is the one admin command that needs bcrypt: a clear message, exit 2.
    hashing = light("admin.cli", "hash-key", "k")
    out, err = hashing.communicate(timeout=30)
    assert hashing.returncode == 2 and "pip install bcrypt" in err
