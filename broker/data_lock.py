"""Telling a broker that its data directory is another broker's, before it touches it.

RocksDB takes a POSIX lock on ``<data_dir>/LOCK`` while the database is open. A second
broker on the same directory used to die in ``rocksdict.Rdict`` with a 20-line traceback
ending in ``IO error: While lock file: .../LOCK``; worse, before that it settled what it
took for an interrupted swap next to the directory (broker/store.py), under the running
broker's feet. :func:`check_free` runs first and refuses with one sentence that names the
directory, the process holding it and what to do.

The lock is looked up in ``/proc/locks`` (Linux), not by trying ``fcntl.lockf``: POSIX
locks belong to the process, so probing and then closing the probe's file would release a
lock this same process holds on that database. Where ``/proc/locks`` does not exist the
check finds nothing and :func:`from_rocksdb_error` recognises RocksDB's own refusal instead.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC_LOCKS = "/proc/locks"


class DataDirInUse(Exception):
    """Another process has this data directory's database open (the message says what to do)."""

    def __init__(self, data_dir: Path, pid: int | None):
        self.data_dir = data_dir
        self.pid = pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(
            f"the data directory {data_dir} is in use: {holder} (another broker?) holds its "
            f"RocksDB lock {data_dir / 'LOCK'}. Stop that broker first, or give this one a "
            f"directory of its own (--data-dir DIR or persistence.data_dir)")


def holder_pid(lock_file: Path, locks_table: str = PROC_LOCKS) -> int | None:
    """The pid of the process holding a POSIX lock on ``lock_file``, if /proc/locks says so."""
    try:
        st = os.stat(lock_file)
        with open(locks_table) as f:
            table = f.read()
    except OSError:
        return None
    # A line: "1: POSIX  ADVISORY  WRITE 12345 fd:01:4198401 0 EOF" (device in hex); a
    # process waiting for the lock has "->" after the number and is not the holder.
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == wanted:
                return int(fields[4])
        except ValueError:
            continue
    return None


def check_free(data_dir: Path) -> None:
    """Raise DataDirInUse when another process holds ``data_dir``'s RocksDB lock."""
    pid = holder_pid(Path(data_dir) / "LOCK")
    if pid is not None and pid != os.getpid():
        raise DataDirInUse(Path(data_dir), pid)


def from_rocksdb_error(data_dir: Path, exc: BaseException) -> DataDirInUse | None:
    """RocksDB's "While lock file" refusal as a DataDirInUse, or None for other errors."""
    if "lock file" in str(exc).lower():
        return DataDirInUse(Path(data_dir), holder_pid(Path(data_dir) / "LOCK"))
    return None
