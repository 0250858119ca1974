"""Whole-cluster restore from a backup, with three real brokers on 127.0.0.1.

Backup through the admin path (backup.sh -> tq-admin create-snapshot) while the cluster
serves, more writes, every node stopped, the same archive restored on every node with
``tq-broker --restore``, the nodes started again: the backup's tasks are on every node, the
later ones are not, the new log commits and replicates, and the nodes end byte-identical.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from broker.restore import _sha256
from taskqueue.client import Client
from tests.brokerproc import ROOT
from tests.fault.cluster import Cluster
from tests.test_ops_scripts import run

pytestmark = pytest.mark.slow


def test_cluster_restored_from_one_backup_on_every_node(tmp_path):
    cluster = Cluster(tmp_path / "c", 3, election_timeout_ms=400)
    cluster.start()
    try:
        leader = cluster.leader(20)
        with cluster.client(leader) as c:
            kept = [r["id"] for r in c.submit_bulk(
                [{"type": "t", "queue": "q", "payload": i} for i in range(50)])]
            kept.append(c.submit("t", "keyed", queue="q", idempotency_key="k-backup")["id"])
        with Client(cluster.nodes[leader].addr, identity={"worker_id": "w-before",
                                                          "queues": ["q"]}) as w:
            jobs = w.fetch(["q"], count=10, timeout_ms=2000)
            for job in jobs:
                w.ack(job["id"], job["token"], {"done": True})
        completed_before = {job["id"] for job in jobs}
        assert len(completed_before) == 10
        cluster.wait_converged(20)
        backup = run("backup.sh", "--broker-addr", cluster.nodes[leader].addr,
                     "--backup-dir", str(tmp_path / "backups"))
        assert backup.returncode == 0, backup.stderr
        tarball = backup.stdout.strip()
        with cluster.client(leader) as c:
            later = [r["id"] for r in c.submit_bulk(
                [{"type": "t", "queue": "q", "payload": f"later {i}"} for i in range(20)])]
        backup_index = cluster.wait_converged(20)
        assert backup_index > 3

        for node in cluster.nodes:
            node.stop()

        # The guard: node 1's data replaced by the archive by hand (no --restore) refuses
        # to start, with the command to run instead, and creates no journal.
        data1 = Path(cluster.nodes[0].config["persistence"]["data_dir"])
        shutil.move(str(data1), str(tmp_path / "n1-by-hand-aside"))
        shutil.move(str(data1.with_name("data.raft")), str(tmp_path / "n1-raft-aside"))
        data1.mkdir()
        with tarfile.open(tarball) as tar:
            tar.extractall(data1, filter="data")
        refused = subprocess.run([sys.executable, "-m", "broker.cli", "--config",
                                  str(cluster.nodes[0].config_path)], cwd=ROOT,
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode == 1, refused.stderr
        assert "refusing to start" in refused.stderr and "--restore" in refused.stderr
        assert not data1.with_name("data.raft").exists()

        for node in cluster.nodes:
            done = subprocess.run([sys.executable, "-m", "broker.cli", "--config",
                                   str(node.config_path), "--restore", tarball], cwd=ROOT,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            assert "applied index reset to 0" in done.stderr
        cluster.restart_all()

        leader = cluster.leader(20)
        cluster.wait_converged(20)
        identities = set()
        for i in range(3):
            tasks = cluster.tasks(i)
            assert set(kept) <= set(tasks), cluster.nodes[i].name
            assert not set(later) & set(tasks), cluster.nodes[i].name
            assert {t for t in kept if tasks[t]["status"] == "completed"} == completed_before
            with cluster.client(i) as c:
                status = c.cluster()
            assert status["applied_index"] < backup_index  # a new log, counted from 1
            # every node reports the same restore identity: the archive it came from
            assert status["restored"]["backup_sha256"] == _sha256(Path(tarball))
            identities.add(tuple(sorted(status["restored"].items())))
            assert 3 < status["restored"]["backup_applied_index"] < backup_index
            assert status["restore_mismatch"] is False

        assert len(identities) == 1
        # A new submit, claim and ack through the new log, on a follower and the leader.
        follower = (leader + 1) % 3
        with cluster.client(follower) as c:
            again = c.submit("t", "keyed", queue="q", idempotency_key="k-backup")
            assert again["id"] == kept[-1] and again.get("duplicate") is True
            new = c.submit("t", "after the restore", queue="fresh")["id"]
        with Client(cluster.nodes[leader].addr, identity={"worker_id": "w-after",
                                                          "queues": ["fresh"]}) as w:
            [job] = w.fetch(["fresh"], count=5, timeout_ms=5000)
            assert job["id"] == new
            w.ack(job["id"], job["token"], {"ok": 1})
        deadline = time.monotonic() + 20
        while True:
            seen = []
            for i in range(3):
                with cluster.client(i) as c:
                    seen.append(c.get(new)["status"] if new in cluster.tasks(i) else None)
            if seen == ["completed"] * 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seen == ["completed"] * 3
        cluster.wait_converged(20)
        assert len({cluster.task_digest(i) for i in range(3)}) == 1
        assert len(set(cluster.frozen_db_digests().values())) == 1
    finally:
        cluster.stop()


def test_follower_installs_a_leader_snapshot_and_keeps_it_across_a_kill(tmp_path):
    """A follower that fell behind the leader's compacted journal installs its snapshot (the
    durable swap of Store.replace_with), and a SIGKILL right after leaves it consistent."""
    cluster = Cluster(tmp_path / "c", 3, {"raft": {"snapshot_min_entries": 100}},
                      election_timeout_ms=400)
    cluster.start()
    try:
        leader = cluster.leader(20)
        follower = (leader + 1) % 3
        cluster.kill(follower)
        with cluster.client(leader) as c:
            ids = [c.submit("t", i, queue="q")["id"] for i in range(300)]
        cluster.restart(follower)
        deadline = time.monotonic() + 30
        while "installed snapshot" not in cluster.nodes[follower].logs():
            assert time.monotonic() < deadline, cluster.nodes[follower].logs()
            time.sleep(0.1)
        cluster.wait_converged(30)
        cluster.kill(follower)
        data = Path(cluster.nodes[follower].config["persistence"]["data_dir"])
        assert sorted(p.name for p in data.parent.iterdir() if p.is_dir()) == [
            "data", "data.raft"]  # no staging left over
        cluster.restart(follower)
        cluster.wait_converged(30)
        assert set(ids) <= set(cluster.tasks(follower))
        assert len({cluster.task_digest(i) for i in range(3)}) == 1
    finally:
        cluster.stop()
