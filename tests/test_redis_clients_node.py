"""node-redis and ioredis, from npm, with their defaults, against a real broker (issue 11).

The libraries are installed once by npm into .test-cache/node/ (ignored by git) from
docs/examples/node/package.json, the manifest the examples' readers use, and reinstalled
when that manifest changes. scripts/test.sh installs node and npm when they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.api_support import KEYS, key_entries, module_broker
from tests.brokerproc import ROOT

EXAMPLES = ROOT / "docs" / "examples" / "node"
CACHE = ROOT / ".test-cache" / "node"
ADMIN_KEY = KEYS["admin"][0]

pytestmark = pytest.mark.slow  # npm install on the first run; each script ~1-2 s of node


def node_dir() -> Path:
    """A directory with the libraries installed and this project's scripts beside them."""
    if not (shutil.which("node") and shutil.which("npm")):
        if os.environ.get("CI"):
            pytest.fail("node and npm are needed (scripts/test.sh installs them)")
        pytest.skip("node and npm are not installed (scripts/test.sh installs them)")
    CACHE.mkdir(parents=True, exist_ok=True)
    manifest = (EXAMPLES / "package.json").read_bytes()
    stamp = CACHE / ".installed-manifest"
    if not stamp.exists() or stamp.read_bytes() != manifest:
        (CACHE / "package.json").write_bytes(manifest)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts",
                        "--loglevel=error"], cwd=CACHE, check=True, timeout=300,
                       stdin=subprocess.DEVNULL)
        stamp.write_bytes(manifest)
    for script in [ROOT / "tests" / "node" / "round_trip.mjs", *EXAMPLES.glob("*.mjs")]:
        shutil.copyfile(script, CACHE / script.name)
    return CACHE


@pytest.fixture(scope="module")
def node():
    return node_dir()


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    proc = module_broker(tmp_path_factory, "node-auth",
                         {"auth": {"enabled": True, "api_keys": key_entries()}})
    yield proc
    proc.stop()


def run_node(node: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["node", *args], cwd=node, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("library", ["node-redis", "ioredis"])
def test_round_trip_with_defaults(node, secured, library):
    out = run_node(node, "round_trip.mjs", library, secured.addr, ADMIN_KEY, f"q-{library}")
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["pong"] == "PONG"
    assert seen["submitted"] == ["pending", "pending"]
    assert seen["payload"] == {"n": 1}
    assert seen["fetched"] is True
    assert seen["ack"] == "OK" and seen["fail"] == "OK"
    assert seen["final"] == ["completed", "dead"]
    assert seen["empty"] is None
    assert seen["error"].startswith("BADREQ")  # our errors reach the application as such


@pytest.mark.parametrize("library", ["node-redis", "ioredis"])
def test_a_wrong_key_is_refused(node, secured, library):
    out = run_node(node, "round_trip.mjs", library, secured.addr, "not-a-key", "q-bad",
                   timeout=30)
    assert out.returncode != 0
    assert "invalid API key" in out.stderr


def test_the_examples_producer_and_worker(node, secured):
    """docs/examples/node as its readers run it: the worker (node-redis) takes what the
    producer (ioredis) submits, and the producer's WAIT-TASKs see the results."""
    env = {**os.environ, "TQ_BROKER_ADDR": secured.addr, "TQ_API_KEY": ADMIN_KEY}
    worker = subprocess.Popen(["node", "worker.mjs", "--max-tasks", "3"], cwd=node, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    try:
        producer = subprocess.run(["node", "producer.mjs", "3"], cwd=node, env=env,
                                  capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)
        assert producer.returncode == 0, producer.stderr
        results = [json.loads(line) for line in producer.stdout.splitlines()]
        assert [(r["status"], r["result"]) for r in results] == \
            [("completed", {"n": 0}), ("completed", {"n": 1}), ("completed", {"n": 2})]
        out, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        assert "done after 3 task(s)" in out
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
