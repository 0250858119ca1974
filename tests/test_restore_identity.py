"""A cluster restored from one backup records that backup in its Raft log, and a node whose
database is not that backup cannot silently apply the log: three real brokers on 127.0.0.1.

Two nodes restored from one backup, the third from another: the first leader records its
backup (a ``restored`` command) before any write, and the odd node, once it reaches that
entry, stops with exit 78 and a log line naming the remedy, having written nothing of it.
Restored from the same backup as the others, it joins and the nodes agree. A node whose disk
is lost after the restore (started empty) refuses the same way, again after a restart,
and the two others keep serving.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from broker.restore import _sha256
from taskqueue.client import Client
from tests.brokerproc import ROOT, BrokerProcess, free_port
from tests.fault.cluster import Cluster
from tests.test_admin_cli import admin

pytestmark = pytest.mark.slow


def tq_restore(node, backup) -> None:
    done = subprocess.run([sys.executable, "-m", "broker.cli", "--config",
                           str(node.config_path), "--restore", str(backup)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def metric(node, name: str) -> float:
    port = node.config["monitoring"]["prometheus_port"]
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[-1])
    raise KeyError(name)


def wait_all_reported(cluster, timeout: float = 30.0) -> list[dict]:
    """Every node's status once each sees all three reachable, each with a restore identity
    (all of them are restored in this test, so None means "not heard from yet")."""
    deadline = time.monotonic() + timeout
    while True:
        views = [cluster.status(i) for i in range(3)]
        if all(v is not None and len(v["nodes"]) == 3
               and all(n["reachable"] and n["restored"] for n in v["nodes"])
               for v in views):
            return views
        assert time.monotonic() < deadline, views
        time.sleep(0.2)




EXIT_BASE_MISMATCH = 78


def wait_refused(cluster, i: int, timeout: float = 60.0) -> str:
    """Node ``i`` exits by itself with the base-mismatch code; returns its log."""
    proc = cluster.nodes[i].proc
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"n{i + 1} kept running: {cluster.nodes[i].logs()}") from None
    text = cluster.nodes[i].log_path.read_text(errors="replace")
    assert code == EXIT_BASE_MISMATCH, text[-3000:]
    return text


def db_tasks(cluster, i: int) -> set[str]:
    """Task ids in a stopped node's RocksDB (read offline)."""
    import rocksdict

    from broker import keys
    path = cluster.nodes[i].config["persistence"]["data_dir"]
    db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True),
                         access_type=rocksdict.AccessType.read_only())
    try:
        out, it = set(), db.iter()
        it.seek(keys.TASK)
        while it.valid() and it.key()[:1] == keys.TASK:
            out.add(it.key()[1:].decode())
            it.next()
        return out
    finally:
        db.close()


def test_a_node_on_another_base_than_the_logged_restore_refuses_to_apply(tmp_path):
    # Two backups of one single-node broker, a few tasks apart (directories: --restore
    # takes a create-snapshot directory as well as a backup.sh archive).
    source = BrokerProcess(tmp_path / "source", name="source").start()
    try:
        with Client(source.addr) as c:
            first = [c.submit("t", i, queue="q")["id"] for i in range(5)]
            snap_a = c.snapshot(str(tmp_path / "backup-a"))
            second = [c.submit("t", i, queue="q")["id"] for i in range(3)]
            c.snapshot(str(tmp_path / "backup-b"))
    finally:
        source.stop()
    ident_a = (_sha256(tmp_path / "backup-a"), snap_a["applied_index"])

    cluster = Cluster(tmp_path / "c", 3, election_timeout_ms=400)
    node1 = cluster.nodes[0]
    node1.config["monitoring"] = dict(node1.config["monitoring"], prometheus_port=free_port())
    node1.config_path.write_text(yaml.safe_dump(node1.config))
    for node, backup in zip(cluster.nodes, ("backup-a", "backup-a", "backup-b")):
        tq_restore(node, tmp_path / backup)
    try:
        # n1 and n2 (backup-a) elect a leader, which records backup-a first thing.
        for i in (0, 1):
            cluster._launch(cluster.nodes[i])
        for i in (0, 1):
            cluster.nodes[i].wait_ready(30)
        leader = cluster.leader(30)
        with cluster.client(leader) as c:
            new = c.submit("t", "after the restore", queue="q")["id"]
        assert cluster.count_in_logs("recording the restore this cluster runs on (backup "
                                     f"sha256 {ident_a[0]} at index {ident_a[1]})") >= 1

        # n3 (backup-b) gets the log from index 1 and stops at that entry, unwritten.
        cluster._launch(cluster.nodes[2])
        text = wait_refused(cluster, 2)
        assert "CRITICAL tq.log.raft: refusing to apply raft entry" in text
        assert f"the log records a cluster restored from backup sha256 {ident_a[0]}" in text
        assert "restore this node from the same archive with tq-broker --restore" in text
        assert cluster.applied_in_db(2) == 0
        assert db_tasks(cluster, 2) == set(first) | set(second)  # backup-b, untouched
        with cluster.client(leader) as c:  # the two others keep serving
            c.submit("t", "while n3 is down", queue="q")

        # Restored from the backup the others have, it joins and the nodes agree.
        tq_restore(cluster.nodes[2], tmp_path / "backup-a")
        cluster.restart(2)
        deadline = time.monotonic() + 30
        while True:
            views = wait_all_reported(cluster)
            if not any(v["restore_mismatch"] for v in views):
                break
            assert time.monotonic() < deadline, views
            time.sleep(0.3)
        for view in views:
            assert {(n["restored"]["backup_sha256"], n["restored"]["backup_applied_index"])
                    for n in view["nodes"]} == {ident_a}
        table = admin(node1.addr, "cluster-status")
        assert table.returncode == 0 and table.stderr == "", table.stderr
        assert table.stdout.count(f"{ident_a[0][:12]}@{ident_a[1]}") == 3
        assert metric(node1, "tq_raft_restore_mismatch") == 0
        cluster.wait_converged(30)
        tasks = cluster.tasks(2)
        assert set(first) | {new} <= set(tasks) and not set(second) & set(tasks)
        digests = {cluster.task_digest(i) for i in range(3)}
        assert len(digests) == 1

        # "A node's disk is lost" after the restore: started empty it receives the log from
        # index 1 (no snapshot taken yet), and stops at the restore entry instead of
        # applying the new log onto nothing. A restart (systemd) refuses again.
        cluster.nodes[2].stop()
        data3 = Path(cluster.nodes[2].config["persistence"]["data_dir"])
        shutil.rmtree(data3)
        shutil.rmtree(data3.with_name(data3.name + ".raft"))
        for _attempt in range(2):
            cluster._launch(cluster.nodes[2])
            text = wait_refused(cluster, 2)
            cluster.nodes[2]._log.close()
            assert "this node's database is not restored from any backup" in text
            assert "wipe it after the leader has taken a snapshot" in text
            assert cluster.applied_in_db(2) == 0 and db_tasks(cluster, 2) == set()
        assert text.count("this node's database is not restored from any backup") == 2
        leader = cluster.leader(30)
        with cluster.client(leader) as c:
            c.submit("t", "n3 refused", queue="q")
        deadline = time.monotonic() + 15
        while True:
            view = cluster.status(0)
            if view and [n["reachable"] for n in view["nodes"]
                         if n["node_id"] == "n3"] == [False]:
                break
            assert time.monotonic() < deadline, view
            time.sleep(0.3)
    finally:
        cluster.stop()


def test_a_node_wiped_after_the_leader_took_a_snapshot_rejoins_from_it(tmp_path):
    """The other remedy: once the leader has compacted its journal, a node started empty gets
    the snapshot first (the backup's data, Mrestored and the logged record) and applies the
    rest of the log normally."""
    source = BrokerProcess(tmp_path / "source", name="source").start()
    try:
        with Client(source.addr) as c:
            first = [c.submit("t", i, queue="q")["id"] for i in range(5)]
            snap = c.snapshot(str(tmp_path / "backup"))
    finally:
        source.stop()
    ident = (_sha256(tmp_path / "backup"), snap["applied_index"])
    cluster = Cluster(tmp_path / "c", 3, {"raft": {"snapshot_min_entries": 100}},
                      election_timeout_ms=400)
    for node in cluster.nodes:
        tq_restore(node, tmp_path / "backup")
    cluster.start()
    try:
        leader = cluster.leader(30)
        with cluster.client(leader) as c:
            later = [c.submit("t", i, queue="q")["id"] for i in range(250)]
        deadline = time.monotonic() + 30
        while not (cluster.status(leader) or {}).get("nodes", [{}])[0].get("snapshots_taken"):
            assert time.monotonic() < deadline, "the leader took no snapshot"
            time.sleep(0.2)
        wiped = (leader + 1) % 3
        cluster.nodes[wiped].stop()
        data = Path(cluster.nodes[wiped].config["persistence"]["data_dir"])
        shutil.rmtree(data)
        shutil.rmtree(data.with_name(data.name + ".raft"))
        cluster.restart(wiped)
        deadline = time.monotonic() + 30
        while "installed snapshot" not in cluster.nodes[wiped].logs():
            assert cluster.alive(wiped), cluster.nodes[wiped].logs()
            assert time.monotonic() < deadline, cluster.nodes[wiped].logs()
            time.sleep(0.1)
        cluster.wait_converged(30)
        assert cluster.alive(wiped)
        assert "refusing to apply" not in cluster.nodes[wiped].log_path.read_text()
        status = cluster.status(wiped)
        assert (status["restored"]["backup_sha256"],
                status["restored"]["backup_applied_index"]) == ident
        assert set(first) | set(later) <= set(cluster.tasks(wiped))
        assert len({cluster.task_digest(i) for i in range(3)}) == 1
    finally:
        cluster.stop()
