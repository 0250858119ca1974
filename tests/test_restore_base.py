"""The ``restored`` command on a real RocksDB: a log written on top of a restored backup is
applied only by nodes whose database is that backup; any other base refuses with nothing
written (and the Raft node stops with the remedy in its log)."""

from __future__ import annotations

import json
import logging
import types

import pytest

from broker import keys
from broker.log import raft
from broker.machine import BaseMismatch, StateMachine
from broker.store import Store
from taskqueue import jsonutil
from tests.test_machine import Harness, spec

IDENT = {"backup_sha256": "ab" * 32, "backup_applied_index": 41}
OTHER = {"backup_sha256": "cd" * 32, "backup_applied_index": 41}


def restored_harness(path, identity=IDENT, tasks=("a", "b")) -> Harness:
    """A database as ``tq-broker --restore`` leaves it on a Raft node: the backup's state,
    ``Mrestored`` naming the archive, applied index re-based to 0."""
    h = Harness(path)
    for i, task_id in enumerate(tasks):
        h.apply(["submit", 1000 + i, spec(task_id), 1000])
    record = dict(identity, backup_time="2026-01-01T00:00:00Z", rebased=True)
    h.store.db.put(keys.META_RESTORED, json.dumps(record, sort_keys=True).encode())
    h.store.db.put(keys.META_APPLIED, b"0")
    h.machine = StateMachine(h.store)
    return h


def test_a_restored_node_records_the_identity_once_and_agrees_byte_for_byte(tmp_path):
    one, two = restored_harness(tmp_path / "1"), restored_harness(tmp_path / "2")
    for h in (one, two):
        assert h.machine.restore_unlogged() == IDENT
        assert h.apply(["restored", 5000, dict(IDENT)]) == "OK"
        assert h.machine.restore_unlogged() is None
        h.apply(["submit", 6000, spec("c"), 1000])
    assert one.digest() == two.digest()
    assert jsonutil.loads(one.store.get(keys.META_RESTORE_LOGGED)) == IDENT
    # persisted: a restart (or a snapshot carrying it) does not propose it again
    assert StateMachine(one.store).restore_unlogged() is None
    # a second copy (a new leader that had not applied the first yet) changes nothing
    before = one.digest(skip=(keys.META_APPLIED,))
    assert one.apply(["restored", 7000, dict(IDENT)]) == "OK"
    assert one.digest(skip=(keys.META_APPLIED,)) == before


def test_a_stale_record_of_an_earlier_restore_is_not_this_restore(tmp_path):
    h = restored_harness(tmp_path / "1")
    h.store.db.put(keys.META_RESTORE_LOGGED, jsonutil.dumps(OTHER))
    assert StateMachine(h.store).restore_unlogged() == IDENT


def test_a_node_never_restored_proposes_nothing(tmp_path):
    h = Harness(tmp_path / "1")
    h.apply(["submit", 1000, spec("a"), 1000])
    assert h.machine.restore_unlogged() is None


@pytest.mark.parametrize("base", ["empty", "other backup"])
def test_any_other_base_refuses_the_entry_with_nothing_written(tmp_path, base):
    if base == "empty":  # a wiped disk or a new node: the log from index 1 onto nothing
        h = Harness(tmp_path / "1")
    else:  # restored from another archive than the leader
        h = restored_harness(tmp_path / "1", OTHER, tasks=("x",))
    before = h.digest(skip=())
    seq, counters = h.machine.seq, h.machine.counters.to_json()
    entry = [["submit", 4000, spec("early"), 1000], ["restored", 5000, dict(IDENT)],
             ["submit", 5000, spec("late"), 1000]]
    with pytest.raises(BaseMismatch) as refused:
        h.machine.apply_entry(h.machine.applied_index + 1, entry)
    assert "sha256 " + IDENT["backup_sha256"] in str(refused.value)
    assert h.digest(skip=()) == before  # nothing reached RocksDB
    # and nothing stays in memory from the commands before it in the entry
    assert (h.machine.seq, h.machine.counters.to_json()) == (seq, counters)
    assert h.machine.applied_index == 0 and h.machine.restore_logged is None
    with pytest.raises(BaseMismatch):  # a restart applies the same log: the same refusal
        StateMachine(h.store).apply_entry(1, entry)


def test_the_raft_apply_stops_the_node_before_writing_and_names_the_remedy(
        tmp_path, monkeypatch, caplog):
    h = Harness(tmp_path / "1")
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(raft.os, "_exit", fake_exit)
    monkeypatch.setattr(raft.logging, "shutdown", lambda: None)
    node = types.SimpleNamespace(_machine=h.machine, store=h.store, apply_errors=0)
    before = h.digest(skip=())
    blob = jsonutil.dumps([["restored", 5000, dict(IDENT)]])
    with caplog.at_level(logging.CRITICAL, logger="tq.log.raft"), pytest.raises(SystemExit):
        raft.RaftLog._apply(node, 3, blob)
    assert exits == [raft.EXIT_BASE_MISMATCH] and exits[0] != 0
    assert h.digest(skip=()) == before
    message = caplog.text
    assert "refusing to apply raft entry 3" in message
    assert "tq-broker --restore" in message
    assert "wipe it after the leader has taken a snapshot" in message


def test_the_raft_apply_of_the_matching_identity_writes_and_continues(tmp_path):
    h = restored_harness(tmp_path / "1")
    published = []
    node = types.SimpleNamespace(
        _machine=h.machine, store=h.store, apply_errors=0, _wal_dirty=False,
        view=types.SimpleNamespace(publish=lambda: published.append(1)))
    assert raft.RaftLog._apply(node, 1, jsonutil.dumps([["restored", 5000, dict(IDENT)]])) \
        == ["OK"]
    assert published and h.store.applied_index() == 1
    assert jsonutil.loads(h.store.get(keys.META_RESTORE_LOGGED)) == IDENT


def test_store_reopen_keeps_the_logged_identity(tmp_path):
    h = restored_harness(tmp_path / "1")
    h.apply(["restored", 5000, dict(IDENT)])
    h.store.close()
    again = StateMachine(Store(tmp_path / "1"))
    assert again.restore_unlogged() is None and again.restored == IDENT


def test_restore_clears_the_record_of_an_earlier_restore(tmp_path):
    """A backup of a cluster that was itself restored carries that log's record; restoring
    it is a new base the new log must record again."""
    from broker import config as cfg
    from broker.restore import restore

    h = restored_harness(tmp_path / "backup", OTHER)
    h.apply(["restored", 5000, dict(OTHER)])
    h.store.close()
    config = cfg.from_mapping({
        "persistence": {"data_dir": str(tmp_path / "node" / "data")},
        "raft": {"enabled": True, "node_id": "n1", "secret": "test-raft-secret-0123",
                 "peers": ["127.0.0.1:7001", "127.0.0.1:7003"]}})
    summary = restore(config, tmp_path / "backup", stamp="t")
    machine = StateMachine(Store(tmp_path / "node" / "data"))
    assert machine.restored == {"backup_sha256": summary["backup_sha256"],
                                "backup_applied_index": 1}
    assert machine.restore_logged is None
    assert machine.restore_unlogged() == machine.restored
