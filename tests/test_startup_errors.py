"""Start-up failures a newcomer meets, each answered in one line that says what to do (issue 11).

Real broker processes: a second ``tq-broker`` on a data directory a running broker holds.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from taskqueue.client import Client
from tests.brokerproc import ROOT, free_port


def run_broker(config: dict, config_path) -> subprocess.CompletedProcess:
    config_path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "broker.cli", "--config", str(config_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_a_second_broker_on_a_data_directory_in_use_says_so_in_one_line(broker_factory,
                                                                        tmp_path):
    first = broker_factory(name="first")
    data_dir = first.config["persistence"]["data_dir"]
    with Client(first.addr) as client:
        task = client.submit("echo", 1)
    # A sibling the running broker might be installing (a swap, broker/store.py): the
    # second broker must not "settle" it.
    installing = tmp_path / "first" / "data.installing"
    installing.mkdir()
    second = dict(first.config, broker=dict(first.config["broker"], port=free_port()))
    out = run_broker(second, tmp_path / "second.yaml")
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert f"the data directory {data_dir} is in use" in lines[0]
    assert f"process {first.proc.pid}" in lines[0]  # who holds it
    assert "--data-dir" in lines[0]  # what to do
    assert installing.exists()
    # The running broker is untouched.
    with Client(first.addr) as client:
        assert client.get(task["id"])["status"] == "pending"


def test_a_failed_open_leaves_no_empty_data_directory(tmp_path, monkeypatch):
    """RocksDB refusing to open a directory the store just made: the directory goes too,
    so the next start does not find an empty database directory it never had."""
    from broker import store

    def refuse(path, options):
        raise Exception("IO error: No space left on device")

    monkeypatch.setattr(store.rocksdict, "Rdict", refuse)
    data_dir = tmp_path / "fresh"
    with pytest.raises(Exception, match="No space left"):
        store.Store(data_dir)
    assert not data_dir.exists()
    # A directory that was there before is left as it was.
    data_dir.mkdir()
    (data_dir / "keep").write_text("x")
    with pytest.raises(Exception, match="No space left"):
        store.Store(data_dir)
    assert (data_dir / "keep").exists()
