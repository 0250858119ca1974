"""Store.replace_with (a follower installing a leader's snapshot) is durable before it returns,
and Store.open settles a swap that a crash interrupted at any step."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from broker import store as store_mod
from broker.store import Store


def make_db(path: Path, value: bytes) -> Path:
    s = Store(path)
    s.db[b"Tk"] = value
    s.close()
    return path


def read_value(store: Store) -> bytes | None:
    return store.get(b"Tk")


def test_replace_with_fsyncs_every_file_and_directory_before_returning(tmp_path, monkeypatch):
    source = tmp_path / "checkpoint-src"
    src_store = Store(tmp_path / "src")
    src_store.db[b"Tk"] = b"new"
    src_store.checkpoint(source)
    src_store.close()
    files = {p.name for p in source.iterdir() if p.is_file()}
    assert "CURRENT" in files

    store = Store(tmp_path / "data")
    store.db[b"Tk"] = b"old"
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        events.append(("replace", f"{a} -> {b}"))
        return real_replace(a, b)

    monkeypatch.setattr(store_mod.os, "fsync", fsync)
    monkeypatch.setattr(store_mod.os, "replace", replace)
    store.replace_with(source)
    monkeypatch.undo()
    try:
        assert read_value(store) == b"new"
        installing = str(tmp_path / "data.installing")
        synced = {Path(p).name for kind, p in events
                  if kind == "fsync" and p.startswith(installing + "/")}
        assert files <= synced, files - synced  # every file of the checkpoint
        assert ("fsync", installing) in events  # its directory
        # The rename that puts it in place is followed by an fsync of the parent directory.
        swap = next(i for i, (kind, what) in enumerate(events)
                    if kind == "replace" and what.endswith(f"-> {tmp_path / 'data'}"))
        assert ("fsync", str(tmp_path)) in events[swap:]
        assert not any(p.name.startswith("data.") for p in tmp_path.iterdir())
    finally:
        store.close()


def open_and_look(tmp_path):
    """Open the store at tmp_path/data; return the value it holds and what tmp_path holds."""
    store = Store(tmp_path / "data")
    try:
        return read_value(store), sorted(p.name for p in tmp_path.iterdir())
    finally:
        store.close()


def test_open_finishes_a_swap_interrupted_between_the_renames(tmp_path):
    make_db(tmp_path / "data.ready", b"new")   # complete and fsynced
    make_db(tmp_path / "data.old", b"old")     # the previous database, already moved
    assert open_and_look(tmp_path) == (b"new", ["data"])


def test_open_drops_a_swap_that_never_began(tmp_path):
    make_db(tmp_path / "data", b"old")
    make_db(tmp_path / "data.ready", b"new")       # crash before the database was closed
    (tmp_path / "data.installing").mkdir()          # and an incomplete copy
    (tmp_path / "data.installing" / "CURRENT").write_text("half")
    assert open_and_look(tmp_path) == (b"old", ["data"])


def test_open_puts_back_the_old_database_if_nothing_replaced_it(tmp_path):
    make_db(tmp_path / "data.old", b"old")
    store = Store(tmp_path / "data")
    try:
        assert read_value(store) == b"old"  # never an empty database in its place
    finally:
        store.close()


def test_swap_without_a_prepared_database_changes_nothing(tmp_path):
    store = Store(tmp_path / "data")
    try:
        store.db[b"Tk"] = b"old"
        with pytest.raises(FileNotFoundError):
            store.swap_prepared()
        assert read_value(store) == b"old"
    finally:
        store.close()
    shutil.rmtree(tmp_path / "data")
