"""The deployment guide's Data Migration loop: export with `tq-admin list`, re-import each
task with POST /api/v1/tasks on the new cluster.

The guide's loop as printed pipes `jq -r '.[] | @json'` into `xargs -I {}`, and xargs
strips the double quotes out of every line (and stops at a line with an odd number of
them), so curl POSTs `{id:...,type:echo,...}`: the
broker answers 400 (never 500) and nothing is imported. With `xargs -d '\\n'` (GNU) the same
loop round-trips every task. Both are tested; docs/api.md gives the working loop.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from taskqueue.client import Client
from tests.api_support import rest_url, start_api_broker

pytestmark = pytest.mark.skipif(not (shutil.which("jq") and shutil.which("curl")
                                     and shutil.which("bash")),
                                reason="needs jq, curl and bash like the guide")

KEPT = ("id", "type", "queue", "payload", "priority", "max_retries", "timeout_secs",
        "retry_backoff_secs", "idempotency_key")


def tq_admin() -> list[str]:
    exe = Path(sys.executable).with_name("tq-admin")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "admin.cli"]


def fill_old_cluster(old) -> list[dict]:
    specs = [
        {"type": "echo", "payload": {"msg": "hello 'world'", "n": 1}},
        {"type": "mail", "queue": "emails", "payload": ["a b", {"x": None}], "priority": 5,
         "max_retries": 0, "timeout_secs": 30.5, "idempotency_key": "order-17"},
        {"type": "resize", "payload": "quote \" and backslash \\ and $HOME", "priority": 9,
         "retry_backoff_secs": 2.0},
    ]
    with Client(old.addr) as producer:
        submitted = [producer.submit_task(dict(spec)) for spec in specs]
    queues = sorted({t["queue"] for t in submitted})
    with Client(old.addr, identity={"worker_id": "migrate-w", "queues": queues}) as worker:
        jobs = worker.fetch(queues, count=10, timeout_ms=2000)
        assert len(jobs) == len(specs)
        for job in jobs:
            worker.ack(job["id"], job["token"], {"done": job["type"]})
    return submitted


def export(old, path: Path) -> list[dict]:
    with open(path, "w") as out:
        subprocess.run(tq_admin() + ["--broker-addr", old.addr, "list", "--status",
                                     "completed", "--limit", "100000"],
                       stdout=out, check=True, timeout=60)
    exported = json.loads(path.read_text())
    assert isinstance(exported, list)
    return exported


def import_loop(path: Path, url: str, xargs: str, check: bool = True) -> str:
    script = (f"jq -r '.[] | @json' {path} | \\\n"
              f"  {xargs} curl -s -X POST {url}/api/v1/tasks \\\n"
              f"    -H \"Content-Type: application/json\" -d '{{}}'")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))
    assert done.returncode == 0 or not check, done.stderr
    return done.stdout


def test_export_and_reimport_round_trips_tasks(broker_factory, tmp_path):
    old = start_api_broker(broker_factory, name="old")
    new = start_api_broker(broker_factory, name="new")
    submitted = fill_old_cluster(old)
    exported = export(old, tmp_path / "tasks.json")
    assert {t["id"] for t in exported} == {t["id"] for t in submitted}
    assert all(t["status"] == "completed" for t in exported)

    # The loop exactly as the guide prints it: xargs eats the quotes (and gives up on an
    # odd number of them) -> 400s, never a 5xx, nothing imported.
    out = import_loop(tmp_path / "tasks.json", rest_url(new), "xargs -I {}", check=False)
    assert "INTERNAL" not in out
    plain = tmp_path / "plain.json"  # only tasks with no escaped quote or backslash
    plain.write_text(json.dumps([t for t in exported if "\\" not in json.dumps(t)]))
    out = import_loop(plain, rest_url(new), "xargs -I {}")
    assert '"code":"BADREQ"' in out and "INTERNAL" not in out
    with httpx.Client(base_url=rest_url(new)) as http:
        assert http.get("/api/v1/tasks").json()["tasks"] == []

        # The working loop: one JSON document per line, no quote processing.
        out = import_loop(tmp_path / "tasks.json", rest_url(new), "xargs -d '\\n' -I {}")
        assert "error" not in out.replace('"error":null', ""), out
        for task in exported:
            got = http.get(f"/api/v1/tasks/{task['id']}")
            assert got.status_code == 200, got.text
            copy = got.json()
            assert {k: copy[k] for k in KEPT} == {k: task[k] for k in KEPT}
            assert copy["status"] == "pending" and copy["attempts"] == 0
            assert copy["result"] is None

        # Re-running the import is harmless: same ids come back as duplicates.
        for task in exported:
            again = http.post("/api/v1/tasks", json=task)
            assert again.status_code == 200 and again.json()["duplicate"] is True
    # And the imported tasks run on the new cluster.
    with Client(new.addr, identity={"worker_id": "new-w",
                                    "queues": ["default", "emails"]}) as worker:
        jobs = worker.fetch(["default", "emails"], count=10, timeout_ms=2000)
        assert {j["id"] for j in jobs} == {t["id"] for t in exported}
