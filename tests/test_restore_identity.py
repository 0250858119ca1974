"""A mixed cluster after a restore is visible: three real brokers on 127.0.0.1, two restored
from one backup and the third from another. Every node reports its restore identity (the
backup's sha256 and original applied index, from ``Mrestored``), ``tq-admin cluster-status``
warns and exits 4 (degraded), and ``tq_raft_restore_mismatch`` is 1; once the odd node is
restored from the same backup as the others, all of it clears; a node started empty after
the restore (a lost disk) is flagged as not restored.
"""

from __future__ import annotations

import json
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


def test_mixed_restore_is_reported_and_clears_once_every_node_has_the_same_backup(tmp_path):
    # Two backups of one single-node broker, a few tasks apart (directories: --restore
    # takes a create-snapshot directory as well as a backup.sh archive).
    source = BrokerProcess(tmp_path / "source", name="source").start()
    try:
        with Client(source.addr) as c:
            first = [c.submit("t", i, queue="q")["id"] for i in range(5)]
            snap_a = c.snapshot(str(tmp_path / "backup-a"))
            second = [c.submit("t", i, queue="q")["id"] for i in range(3)]
            snap_b = c.snapshot(str(tmp_path / "backup-b"))
    finally:
        source.stop()
    assert snap_b["applied_index"] > snap_a["applied_index"]
    ident_a = (_sha256(tmp_path / "backup-a"), snap_a["applied_index"])
    ident_b = (_sha256(tmp_path / "backup-b"), snap_b["applied_index"])

    cluster = Cluster(tmp_path / "c", 3, election_timeout_ms=400)
    node1 = cluster.nodes[0]
    node1.config["monitoring"] = dict(node1.config["monitoring"], prometheus_port=free_port())
    node1.config_path.write_text(yaml.safe_dump(node1.config))
    for node, backup in zip(cluster.nodes, ("backup-a", "backup-a", "backup-b")):
        tq_restore(node, tmp_path / backup)
    cluster.start()
    try:
        cluster.leader(30)
        views = wait_all_reported(cluster)
        for i, view in enumerate(views):
            mine = (view["restored"]["backup_sha256"], view["restored"]["backup_applied_index"])
            assert mine == (ident_b if i == 2 else ident_a)
            assert [(n["node_id"], n["restored"]["backup_sha256"]) for n in view["nodes"]
                    if n["node_id"] == "n3"] == [("n3", ident_b[0])]
            assert view["restore_mismatch"] is True, view

        table = admin(node1.addr, "cluster-status")
        assert table.returncode == 4, table.stderr
        assert "RESTORED_FROM" in table.stdout
        assert f"{ident_b[0][:12]}@{ident_b[1]}" in table.stdout
        assert "WARNING" in table.stderr and "restore the SAME backup" in table.stderr
        as_json = admin(node1.addr, "cluster-status", "--json")
        assert as_json.returncode == 4 and "WARNING" in as_json.stderr
        assert json.loads(as_json.stdout)["restore_mismatch"] is True
        assert metric(node1, "tq_raft_restore_mismatch") == 1
        assert "WARNING tq.log.raft: nodes restored from different backups: n1 " \
            f"{ident_a[0][:12]}@{ident_a[1]}" in node1.log_path.read_text()

        # The odd node restored from the backup the others have (its data and journal are
        # moved aside): it catches up on the new log, and the warning is gone everywhere.
        cluster.nodes[2].stop()
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
        assert "the reachable nodes report the same restore again: n1 " \
            f"{ident_a[0][:12]}@{ident_a[1]}, n2 " in node1.log_path.read_text()
        cluster.wait_converged(30)
        tasks = cluster.tasks(2)
        assert set(first) <= set(tasks) and not set(second) & set(tasks)

        # "A node's disk is lost" after a restore: started empty, it replays the new log
        # (which counts from 1 on top of the backup) onto an empty database, so it lacks
        # the backup's tasks. It reports no restore: flagged until it is restored too.
        cluster.nodes[2].stop()
        data3 = Path(cluster.nodes[2].config["persistence"]["data_dir"])
        shutil.rmtree(data3)
        shutil.rmtree(data3.with_name(data3.name + ".raft"))
        cluster.restart(2)
        deadline = time.monotonic() + 30
        while True:
            view = cluster.status(0)
            n3 = [n for n in view["nodes"] if n["node_id"] == "n3"] if view else []
            if n3 and n3[0]["reachable"] and n3[0]["restored"] is None:
                break
            assert time.monotonic() < deadline, view
            time.sleep(0.2)
        assert view["restore_mismatch"] is True and cluster.status(2)["restored"] is None
        table = admin(node1.addr, "cluster-status")
        assert table.returncode == 4 and "n3 not restored" in table.stderr, table.stderr
        cluster.wait_converged(30)
        assert not set(first) & set(cluster.tasks(2))  # the divergence it warns about
    finally:
        cluster.stop()
