"""The operator scripts in scripts/ops, run as an operator would against real brokers.

backup.sh / restore.sh (snapshot, tar, retention; stop, replace, start), health-check.sh
(exit codes, with and without jq), migrate.sh (export with tq-admin, import over REST).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from taskqueue.client import Client
from taskqueue.errors import ConnectionLost
from tests.brokerproc import BrokerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "scripts" / "ops"
BIN = Path(sys.executable).parent  # tq-admin lives beside the interpreter (the venv)
BASH = shutil.which("bash")


def run(script: str, *args: str, env: dict | None = None, timeout: float = 60,
        path: str | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["PATH"] = path or f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    full_env.pop("TQ_BROKER_ADDR", None)
    full_env.update(env or {})
    return subprocess.run([BASH, str(OPS / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT, stdin=subprocess.DEVNULL)


def rest_broker(broker_factory, name: str | None = None):
    """A broker with its REST port on, returned once that port answers (the protocol port,
    which the fixture waits for, opens first)."""
    broker = broker_factory({"api": {"rest_port": free_port()}}, name=name)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", broker.config["api"]["rest_port"]), 1):
                return broker
        except OSError:
            assert time.monotonic() < deadline, broker.logs()
            time.sleep(0.05)


def complete(addr: str, specs: list[dict]) -> list[str]:
    """Submits the tasks and runs them to completion (fetch + ack, as a worker does)."""
    with Client(addr, identity={"worker_id": "ops-test"}) as worker, Client(addr) as producer:
        ids = [producer.submit_task(spec)["id"] for spec in specs]
        done = 0
        while done < len(ids):
            jobs = worker.fetch(["default"], count=50, timeout_ms=2000)
            assert jobs, "the broker handed out fewer jobs than were submitted"
            for job in jobs:
                worker.ack(job["id"], job["token"], {"echo": job["payload"]})
                done += 1
        return ids


# --------------------------------------------------------------------------- backup.sh

def test_backup_snapshots_tars_and_keeps_seven_days(broker_factory, tmp_path):
    broker = broker_factory()
    ids = complete(broker.addr, [{"type": "echo", "payload": {"n": i}} for i in range(5)])
    backups = tmp_path / "backups"
    backups.mkdir()
    old = backups / "backup-20000101.tar.gz"
    old.write_bytes(b"old")
    os.utime(old, (time.time() - 10 * 86400,) * 2)
    recent = backups / "backup-20991231.tar.gz"  # a name only; 3 days old: kept
    recent.write_bytes(b"recent")
    os.utime(recent, (time.time() - 3 * 86400,) * 2)

    result = run("backup.sh", "--broker-addr", broker.addr, "--backup-dir", str(backups))
    assert result.returncode == 0, result.stderr
    tarball = Path(result.stdout.strip())
    assert tarball.parent == backups
    assert tarball.name == f"backup-{time.strftime('%Y%m%d')}.tar.gz"
    assert not old.exists() and recent.exists()
    # The snapshot directory is packed, then removed; no temporary file is left.
    assert sorted(p.name for p in backups.iterdir()) == sorted([tarball.name, recent.name])
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "./CURRENT" in names and any(n.startswith("./MANIFEST-") for n in names)
    assert "snapshot written to" in result.stderr

    # The tarball is a database: a broker started on it has the tasks.
    restored = tmp_path / "restored"
    restored.mkdir()
    with tarfile.open(tarball) as tar:
        tar.extractall(restored / "data")
    copy = BrokerProcess(restored, name="copy")
    copy.start()
    try:
        with Client(copy.addr) as client:
            assert {client.get(i)["status"] for i in ids} == {"completed"}
    finally:
        copy.stop()

    # A second run the same day does not overwrite the first.
    again = run("backup.sh", "--broker-addr", broker.addr, "--backup-dir", str(backups),
                "--keep-snapshot")
    assert again.returncode == 0, again.stderr
    second = Path(again.stdout.strip())
    assert second != tarball and second.exists() and tarball.exists()
    assert (backups / second.name.replace("backup-", "snapshot-")
            .replace(".tar.gz", "") / "CURRENT").exists()  # --keep-snapshot


def test_backup_fails_loudly_when_the_broker_is_down(tmp_path):
    backups = tmp_path / "b"
    result = run("backup.sh", "--broker-addr", f"127.0.0.1:{free_port()}",
                 "--backup-dir", str(backups))
    assert result.returncode != 0
    assert "cannot reach the broker" in result.stderr
    assert list(backups.iterdir()) == []  # no partial tarball


# --------------------------------------------------------------------------- restore.sh

def test_restore_replaces_the_data_dir_with_the_backup(broker_factory, tmp_path):
    broker = broker_factory()
    data_dir = Path(broker.config["persistence"]["data_dir"])
    before = complete(broker.addr, [{"type": "echo", "payload": i} for i in range(3)])
    backup = run("backup.sh", "--broker-addr", broker.addr,
                 "--backup-dir", str(tmp_path / "backups"))
    assert backup.returncode == 0, backup.stderr
    tarball = backup.stdout.strip()
    with Client(broker.addr) as client:
        after = client.submit("echo", "written after the backup")["id"]

    # While the broker runs, restore refuses and changes nothing.
    busy = run("restore.sh", "--no-service", "--data-dir", str(data_dir), tarball)
    assert busy.returncode == 1
    assert "still has" in busy.stderr and (data_dir / "CURRENT").exists()
    assert not list(tmp_path.glob("**/*.before-restore-*"))

    broker.terminate()
    result = run("restore.sh", "--no-service", "--data-dir", str(data_dir), tarball)
    assert result.returncode == 0, result.stderr
    aside = list(data_dir.parent.glob("data.before-restore-*"))
    assert len(aside) == 1 and (aside[0] / "CURRENT").exists()  # the old data, kept

    broker.start()
    with Client(broker.addr) as client:
        assert [client.get(i)["status"] for i in before] == ["completed"] * 3
        with pytest.raises(Exception, match="NOTFOUND"):
            client.get(after)  # newer than the backup: gone, as a restore means


def test_restore_stops_and_starts_the_broker_with_commands(broker_factory, tmp_path):
    """The systemd steps, replaced by --stop-cmd / --start-cmd (as a test has no systemd)."""
    broker = broker_factory()
    data_dir = Path(broker.config["persistence"]["data_dir"])
    [kept] = complete(broker.addr, [{"type": "echo", "payload": "kept"}])
    backup = run("backup.sh", "--broker-addr", broker.addr,
                 "--backup-dir", str(tmp_path / "backups"))
    tarball = backup.stdout.strip()
    pidfile = tmp_path / "broker.pid"
    start = (f"cd {ROOT}; nohup {sys.executable} -m broker.cli --config "
             f"{broker.config_path} >>{tmp_path / 'restarted.log'} 2>&1 & echo $! >{pidfile}")
    result = run("restore.sh", "--data-dir", str(data_dir),
                 "--stop-cmd", f"kill -TERM {broker.proc.pid}", "--start-cmd", start, tarball)
    try:
        assert result.returncode == 0, result.stderr
        assert "stopping the broker: kill -TERM" in result.stderr
        assert broker.proc.wait(10) == 0  # stopped cleanly by the stop command
        deadline = time.monotonic() + 20
        while True:
            try:
                with Client(broker.addr) as client:
                    assert client.get(kept)["status"] == "completed"
                break
            except (OSError, ConnectionLost):
                assert time.monotonic() < deadline, (tmp_path / "restarted.log").read_text()
                time.sleep(0.1)
    finally:
        if pidfile.exists():
            subprocess.run(["kill", "-TERM", pidfile.read_text().strip()])


def test_restore_refuses_bad_input_and_raft_nodes(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "keep").write_text("x")
    not_a_backup = tmp_path / "x.tar.gz"
    with tarfile.open(not_a_backup, "w:gz") as tar:
        tar.add(data_dir / "keep", arcname="./keep")
    result = run("restore.sh", "--no-service", "--data-dir", str(data_dir), str(not_a_backup))
    assert result.returncode == 1 and "no RocksDB CURRENT" in result.stderr
    missing = run("restore.sh", "--no-service", "--data-dir", str(data_dir), "nope.tar.gz")
    assert missing.returncode == 1 and "no such file" in missing.stderr
    (tmp_path / "data.raft").mkdir()
    raft = run("restore.sh", "--no-service", "--data-dir", str(data_dir), str(not_a_backup))
    assert raft.returncode == 1 and "Raft cluster node" in raft.stderr
    assert (data_dir / "keep").exists()


# --------------------------------------------------------------------------- health-check.sh

def no_jq_path(tmp_path) -> str:
    """A PATH with curl, python3 and the few tools the scripts use, but no jq."""
    bindir = tmp_path / "nojq-bin"
    bindir.mkdir(exist_ok=True)
    # The real interpreter, not a launcher shim that needs more of PATH.
    tools = {"python3": os.path.realpath(sys.executable)}
    tools.update((tool, shutil.which(tool)) for tool in ("curl", "mktemp", "head", "rm"))
    for tool, found in tools.items():
        assert found, tool
        if not (bindir / tool).exists():
            (bindir / tool).symlink_to(found)
    return str(bindir)


def test_health_check_exit_codes(broker_factory, tmp_path):
    broker = rest_broker(broker_factory)
    url = f"http://127.0.0.1:{broker.config['api']['rest_port']}/health"
    paths = [None, no_jq_path(tmp_path)]
    for path in paths:
        assert run("health-check.sh", url, path=path).returncode == 0
        assert run("health-check.sh", "--leader", url, path=path).returncode == 0
    verbose = run("health-check.sh", "-v", url)
    assert verbose.stdout.startswith("healthy")
    broker.terminate()
    for path in paths:
        assert run("health-check.sh", url, path=path).returncode == 1  # nothing answers


class _Fixed(http.server.BaseHTTPRequestHandler):
    status, body = 503, b'{"status": "no_leader", "role": "follower"}'

    def do_GET(self):
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("body", [b'{"status": "no_leader"}', b'{"status": "stopping"}',
                                  b"not json", b'{"status": "healthy"'])
def test_health_check_fails_unless_healthy(tmp_path, body):
    handler = type("H", (_Fixed,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/health"
        assert run("health-check.sh", url).returncode == 1
        assert run("health-check.sh", url, path=no_jq_path(tmp_path)).returncode == 1
    finally:
        server.shutdown()


def test_health_check_default_url_and_env(tmp_path):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), type("H", (_Fixed,), {"status": 200, "body": b'{"status":"healthy"}'}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"TQ_HEALTH_URL": f"http://127.0.0.1:{server.server_address[1]}/health"}
        assert run("health-check.sh", env=env).returncode == 0
    finally:
        server.shutdown()
    assert "http://localhost:8080/health" in (OPS / "health-check.sh").read_text()


# --------------------------------------------------------------------------- migrate.sh

def test_migrate_exports_completed_tasks_and_reimports_them_over_rest(broker_factory,
                                                                      tmp_path):
    old = broker_factory(name="old")
    new = rest_broker(broker_factory, name="new")
    # Payloads that the guide's `xargs -I {}` would mangle: quotes, backslashes, unicode.
    tricky = {"quote": 'say "hi"', "path": "C:\\tmp\\x", "text": "naïve — ünïcode", "n": [1, 2]}
    ids = complete(old.addr, [{"type": "echo", "payload": tricky, "priority": 7},
                              *({"type": "resize", "payload": {"i": i}} for i in range(4))])
    with Client(old.addr) as client:
        pending = client.submit("echo", "not completed: not exported")["id"]
    rest = f"http://127.0.0.1:{new.config['api']['rest_port']}"
    tasks_file = tmp_path / "tasks.json"

    result = run("migrate.sh", "--from", old.addr, "--to", rest, "--file", str(tasks_file))
    assert result.returncode == 0, result.stderr
    assert "exported 5 tasks" in result.stderr
    assert "5 created, 0 already there, 0 failed" in result.stderr
    exported = json.loads(tasks_file.read_text())
    assert {t["id"] for t in exported} == set(ids)

    with Client(new.addr) as client:
        first = client.get(ids[0])
        assert first["payload"] == tricky and first["priority"] == 7
        assert first["type"] == "echo" and first["status"] == "pending"  # runs again there
        assert {client.get(i)["type"] for i in ids[1:]} == {"resize"}
        with pytest.raises(Exception, match="NOTFOUND"):
            client.get(pending)

    # Idempotent: the same import again creates nothing.
    again = run("migrate.sh", "--import-only", "--to", rest, "--file", str(tasks_file))
    assert again.returncode == 0, again.stderr
    assert "0 created, 5 already there, 0 failed" in again.stderr


def test_migrate_reports_failures(broker_factory, tmp_path):
    new = rest_broker(broker_factory)
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps([{"type": "ok", "payload": 1},
                                      {"type": "bad", "priority": 99}]))
    rest = f"http://127.0.0.1:{new.config['api']['rest_port']}"
    result = run("migrate.sh", "--import-only", "--to", rest, "--file", str(tasks_file),
                 path=no_jq_path(tmp_path))
    assert result.returncode == 1
    assert "1 created, 0 already there, 1 failed" in result.stderr
    assert "failed (400)" in result.stderr and "priority" in result.stderr
    export_only = run("migrate.sh", "--export-only", "--from", new.addr,
                      "--file", str(tmp_path / "out.json"), "--all-statuses")
    assert export_only.returncode == 0, export_only.stderr
    assert len(json.loads((tmp_path / "out.json").read_text())) == 1
