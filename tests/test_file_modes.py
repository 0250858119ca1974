"""What the broker writes holds payloads in clear: it must not be readable by other users,
whatever umask the broker was started under (issue 10, low: file modes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from taskqueue.client import Client
from tests.brokerproc import BrokerProcess


def world_accessible(root: Path) -> list[str]:
    """Every file or directory under ``root`` (itself included) that others can read,
    write or enter."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & stat.S_IRWXO:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return found


def test_data_written_under_a_permissive_umask_is_private(tmp_path):
    old = os.umask(0o022)  # a login shell's default: without the broker's own umask, 0644
    try:
        broker = BrokerProcess(tmp_path).start()
    finally:
        os.umask(old)
    try:
        with Client(broker.addr) as client:
            for i in range(20):
                client.submit("t", {"secret": i})
        data = Path(broker.config["persistence"]["data_dir"])
        assert any(data.iterdir())
        assert world_accessible(data) == []
    finally:
        broker.stop()
