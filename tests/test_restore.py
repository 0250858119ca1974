"""``tq-broker --restore`` (broker/restore.py) and the Raft start-up guard, against real
broker processes and real backups; the whole-cluster restore is tests/test_raft_restore.py.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import rocksdict

from broker import keys
from taskqueue.client import Client
from tests.brokerproc import ROOT, BrokerProcess, free_port
from tests.test_ops_scripts import run


def tq_broker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "broker.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def read_meta(data_dir: Path) -> tuple[int, dict | None]:
    db = rocksdict.Rdict(str(data_dir), rocksdict.Options(raw_mode=True),
                         access_type=rocksdict.AccessType.read_only())
    try:
        applied = db.get(keys.META_APPLIED)
        restored = db.get(keys.META_RESTORED)
    finally:
        db.close()
    return (0 if applied is None else int(applied),
            None if restored is None else json.loads(restored))


def backup_of(broker: BrokerProcess, backups: Path) -> str:
    result = run("backup.sh", "--broker-addr", broker.addr, "--backup-dir", str(backups))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def raft_config(workdir: Path, data_dir: Path) -> BrokerProcess:
    """A raft-enabled node whose peers do not exist (enough for restore and the guard)."""
    return BrokerProcess(workdir, {
        "persistence": {"data_dir": str(data_dir)},
        "raft": {"enabled": True, "node_id": "n1", "secret": "test-raft-secret-0123",
                 "peers": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"],
                 "election_timeout_ms": 300}}, name="raft")


def test_single_node_restore_keeps_the_index_and_refuses_an_open_database(broker_factory,
                                                                          tmp_path):
    broker = broker_factory()
    data_dir = Path(broker.config["persistence"]["data_dir"])
    with Client(broker.addr) as c:
        kept = [c.submit("t", i)["id"] for i in range(3)]
    tarball = backup_of(broker, tmp_path / "backups")
    with Client(broker.addr) as c:
        later = c.submit("t", "after")["id"]

    busy = tq_broker("--config", str(broker.config_path), "--restore", tarball)
    assert busy.returncode == 1 and "stop the broker first" in busy.stderr, busy.stderr
    assert not list(data_dir.parent.glob("*.before-restore-*"))

    broker.terminate()
    applied_before, _ = read_meta(data_dir)
    done = tq_broker("--config", str(broker.config_path), "--restore", tarball)
    assert done.returncode == 0, done.stderr
    assert "3 tasks" in done.stderr and "previous data moved to" in done.stderr
    [aside] = data_dir.parent.glob("data.before-restore-*")
    assert (aside / "CURRENT").exists()
    applied, restored = read_meta(data_dir)
    assert 0 < applied < applied_before  # the backup's own index: the local log continues
    assert restored["backup_applied_index"] == applied and restored["rebased"] is False

    broker.start()
    with Client(broker.addr) as c:
        assert [c.get(i)["id"] for i in kept] == kept
        with pytest.raises(Exception, match="NOTFOUND"):
            c.get(later)
        new = c.submit("t", "new")["id"]  # the local log goes on past the backup's index
        assert c.get(new)["status"] == "pending"
    broker.terminate()
    assert read_meta(data_dir)[0] == applied + 1


def test_raft_restore_rebases_and_moves_the_journal_aside(broker_factory, tmp_path):
    broker = broker_factory()
    with Client(broker.addr) as c:
        for i in range(4):
            c.submit("t", i)
    tarball = backup_of(broker, tmp_path / "backups")
    broker.stop()
    node = raft_config(tmp_path / "node", tmp_path / "node" / "data")
    data_dir = Path(node.config["persistence"]["data_dir"])
    data_dir.mkdir(parents=True)
    (data_dir / "old-file").write_text("x")
    raft_dir = data_dir.with_name("data.raft")
    raft_dir.mkdir()
    (raft_dir / "journal").write_text("old journal")

    done = tq_broker("--config", str(node.config_path), "--restore", tarball)
    assert done.returncode == 0, done.stderr
    assert "applied index reset to 0" in done.stderr and "EVERY node" in done.stderr
    applied, restored = read_meta(data_dir)
    assert applied == 0
    assert restored["rebased"] is True and restored["backup_applied_index"] > 0
    assert len(restored["backup_sha256"]) == 64 and restored["backup_time"]
    assert not raft_dir.exists()
    [old_data] = data_dir.parent.glob("data.before-restore-*")
    [old_raft] = data_dir.parent.glob("data.raft.before-restore-*")
    assert (old_data / "old-file").exists() and (old_raft / "journal").exists()

    # Restoring the same archive twice gives byte-identical meta (nothing host- or
    # time-dependent): what makes the nodes of one cluster identical.
    second = raft_config(tmp_path / "node2", tmp_path / "node2" / "data")
    assert tq_broker("--config", str(second.config_path), "--restore", tarball).returncode == 0
    assert read_meta(Path(second.config["persistence"]["data_dir"])) == (applied, restored)


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("bad,message", [
    ([_file("./CURRENT"), _file("../escape")], "unsafe path"),
    ([_file("./CURRENT"), _file("/etc/evil")], "unsafe path"),
    ([_file("./CURRENT"), _file("./MANIFEST-1")], "does not open as a RocksDB"),
    ([_file("./keep")], "no RocksDB CURRENT"),
    ([_file("./CURRENT")], "no RocksDB MANIFEST"),
    ("symlink", "not a regular file or directory"),
])
def test_restore_refuses_unsafe_or_broken_archives_and_changes_nothing(tmp_path, bad,
                                                                       message):
    node = raft_config(tmp_path / "node", tmp_path / "node" / "data")
    data_dir = Path(node.config["persistence"]["data_dir"])
    data_dir.mkdir(parents=True)
    (data_dir / "keep").write_text("x")
    if bad == "symlink":
        link = tarfile.TarInfo("./CURRENT")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        bad = [(link, None), _file("./MANIFEST-1")]
    archive = _tar(tmp_path / "bad.tar.gz", bad)
    result = tq_broker("--config", str(node.config_path), "--restore", str(archive))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert (data_dir / "keep").exists()
    assert sorted(p.name for p in data_dir.parent.iterdir()) == ["data", "raft.yaml"]
    assert not (tmp_path / "etc").exists() and not (tmp_path / "node" / "escape").exists()


def test_raft_node_refuses_to_start_on_a_backup_without_a_journal(broker_factory, tmp_path):
    """The start-up guard: a single-node database (or a backup unpacked by hand) under a
    missing journal would have its first N new entries skipped; the broker refuses."""
    broker = broker_factory()
    with Client(broker.addr) as c:
        c.submit("t", "x")
    broker.stop()
    single_data = Path(broker.config["persistence"]["data_dir"])
    node = raft_config(tmp_path / "node", single_data)
    proc = subprocess.run([sys.executable, "-m", "broker.cli", "--config",
                           str(node.config_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "refusing to start" in proc.stderr
    assert "has no Raft journal" in proc.stderr and "--restore" in proc.stderr
    assert not single_data.with_name("data.raft").exists()  # no journal was created
    assert read_meta(single_data)[0] > 0  # untouched

    # After --restore of that very directory (moved away first) the node starts.
    moved = tmp_path / "moved-away"
    single_data.rename(moved)
    done = tq_broker("--config", str(node.config_path), "--restore", str(moved))
    assert done.returncode == 0, done.stderr
    assert read_meta(single_data)[0] == 0


def test_restore_sh_restores_a_raft_node_through_tq_broker(broker_factory, tmp_path):
    """restore.sh --config: the Raft node's data and journal are replaced by tq-broker
    --restore; it waits while the database is open and refuses without --config."""
    broker = broker_factory()
    with Client(broker.addr) as c:
        c.submit("t", "x")
    tarball = backup_of(broker, tmp_path / "backups")
    broker.stop()
    node = raft_config(tmp_path / "node", tmp_path / "node" / "data")
    data_dir = Path(node.config["persistence"]["data_dir"])
    raft_dir = data_dir.with_name("data.raft")
    node.start()  # a lone Raft node: no leader, but its database is open
    try:
        refused = run("restore.sh", "--no-service", "--data-dir", str(data_dir), tarball)
        assert refused.returncode == 1 and "Raft cluster node" in refused.stderr
        assert "--config" in refused.stderr
        busy = run("restore.sh", "--no-service", "--config", str(node.config_path), tarball)
        assert busy.returncode == 1 and "still has the database open" in busy.stderr
        assert not list(data_dir.parent.glob("*.before-restore-*"))
    finally:
        node.terminate()
    assert (raft_dir / "journal").exists()
    pidfile = tmp_path / "pid"
    result = run("restore.sh", "--config", str(node.config_path),
                 "--stop-cmd", "true", "--start-cmd", f"echo started >{pidfile}", tarball)
    assert result.returncode == 0, result.stderr
    assert "applied index reset to 0" in result.stderr and pidfile.read_text() == "started\n"
    assert read_meta(data_dir)[0] == 0 and not raft_dir.exists()
    assert len(list(data_dir.parent.glob("data.raft.before-restore-*"))) == 1
