"""RaftLog building blocks without a cluster: frame authentication, the journal, addresses."""

from __future__ import annotations

import pickle
import zlib

import pytest

from broker import config as cfg
from broker.log.raft_engine import DurableJournal, HmacAuthenticator, InvalidFrame


def raft_config(tmp_path, peers: list[str]):
    """node1 on 127.0.0.1:7001 (Raft on 7002), data in tmp_path/data."""
    return cfg.from_mapping({
        "broker": {"host": "127.0.0.1", "port": 7001},
        "persistence": {"data_dir": str(tmp_path / "data")},
        "raft": {"enabled": True, "node_id": "node1", "secret": "test-raft-secret-0123",
                 "peers": peers},
    })


def test_frames_round_trip_and_reject_tampering():
    auth = HmacAuthenticator("secret")
    data = zlib.compress(pickle.dumps({"type": "append_entries"}))
    token = auth.encrypt_at_time(data, 42)
    assert auth.extract_timestamp(token) == 42
    assert auth.decrypt(token) == data
    tampered = bytearray(token)
    tampered[20] ^= 1
    with pytest.raises(InvalidFrame):
        auth.extract_timestamp(bytes(tampered))
    with pytest.raises(InvalidFrame):
        HmacAuthenticator("other secret").decrypt(token)
    with pytest.raises(InvalidFrame):
        auth.decrypt(b"\x80\x02cos\nsystem\n")  # a raw pickle is never accepted
    with pytest.raises(ValueError):
        HmacAuthenticator("")


def test_unauthenticated_bytes_are_never_unpickled(monkeypatch):
    """pysyncobj's TcpConnection drops a frame that fails verification before pickle.loads."""
    from pysyncobj import tcp_connection

    calls = []
    monkeypatch.setattr(tcp_connection.pickle, "loads", lambda data: calls.append(data))
    conn = tcp_connection.TcpConnection(poller=None)
    conn.encryptor = HmacAuthenticator("secret")
    evil = zlib.compress(pickle.dumps("boom"))
    frame = len(evil).to_bytes(4, "little", signed=True) + evil
    conn._TcpConnection__readBuffer = frame
    conn.disconnect = lambda: None
    assert conn._TcpConnection__processParseMessage() is None
    assert calls == []


def _ids(journal):
    return [entry[1] for entry in journal[:]] if len(journal) else []


def test_journal_truncation_is_logical_until_a_conflict(tmp_path):
    path = str(tmp_path / "journal")
    j = DurableJournal(path, 0)
    for i in range(1, 11):
        j.add(b"c%d" % i, i, 1)
    j.deleteEntriesFrom(5)  # pysyncobj truncates although nothing conflicts
    assert len(j) == 5
    j.add(b"c6", 6, 1)  # the same entry again: re-adopted, the file is untouched
    assert len(j) == 6
    assert len(DurableJournal(path, 0)) == 10  # a crash now loses nothing
    j.add(b"x7", 7, 2)  # a conflicting entry: now the tail really goes
    assert [e[1] for e in j[:]] == list(range(1, 8)) and j[-1][2] == 2
    reopened = DurableJournal(path, 0)
    assert [e[1] for e in reopened[:]] == list(range(1, 8)) and reopened[-1][2] == 2


def test_journal_compaction_and_snapshot_load_keep_later_entries(tmp_path):
    path = str(tmp_path / "journal")
    j = DurableJournal(path, 0)
    for i in range(1, 10):
        j.add(b"c%d" % i, i, 1)
    j.deleteEntriesTo(3)  # compaction: crash-safe rewrite
    assert _ids(j) == [4, 5, 6, 7, 8, 9]
    assert _ids(DurableJournal(path, 0)) == [4, 5, 6, 7, 8, 9]
    # loading a snapshot whose last two entries (5, 6) we hold: entries after them stay
    j.clear()
    j.add(b"c5", 5, 1)
    j.add(b"c6", 6, 1)
    assert _ids(j) == [5, 6, 7, 8, 9]
    assert _ids(DurableJournal(path, 0)) == [5, 6, 7, 8, 9]
    # a snapshot we know nothing of replaces the journal
    j.clear()
    j.add(b"s1", 20, 3)
    j.add(b"s2", 21, 3)
    assert _ids(j) == [20, 21]
    assert _ids(DurableJournal(path, 0)) == [20, 21]


def test_journal_sync_policy(tmp_path):
    every = DurableJournal(str(tmp_path / "a"), 0)
    every.add(b"x", 1, 1)
    every.add(b"y", 2, 1)
    assert every.syncs == 2
    lazy = DurableJournal(str(tmp_path / "b"), 60000)
    lazy.add(b"x", 1, 1)
    assert lazy.syncs == 0
    lazy.sync()
    assert lazy.syncs == 1


def test_raft_addresses_default_to_port_plus_one(tmp_path):
    from broker.log.raft import RaftLog
    from broker.machine import StateMachine
    from broker.store import Store

    config = raft_config(tmp_path, ["10.0.0.2:7001", "10.0.0.3:7005"])
    store = Store(tmp_path / "data")
    try:
        rl = RaftLog(config, StateMachine(store), store)
        assert rl.raft_address == "127.0.0.1:7002"
        assert rl.peer_raft == ["10.0.0.2:7002", "10.0.0.3:7006"]
        assert rl.client_address["10.0.0.3:7006"] == "10.0.0.3:7005"
        assert rl.raft_dir == tmp_path / "data.raft"
        status = rl.status()
        assert status["mode"] == "raft" and status["node_id"] == "node1"
        assert [n["address"] for n in status["nodes"]] == [
            "127.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7005"]
    finally:
        store.close()


def test_secret_is_mandatory():
    with pytest.raises(cfg.ConfigError, match="raft.secret"):
        cfg.from_mapping({"raft": {"enabled": True, "node_id": "n1"}})


def test_journal_keeps_only_current_term_entries_after_a_leaders_snapshot(tmp_path):
    path = str(tmp_path / "journal")
    j = DurableJournal(path, 0)
    for i in range(1, 6):
        j.add(b"c%d" % i, i, 1)
    for i in range(6, 9):
        j.add(b"c%d" % i, i, 2)
    j.add(b"old9", 9, 1)  # cannot happen in order, but must stop the run
    j.add(b"c10", 10, 2)
    j.retain_term = 2  # installing the term-2 leader's snapshot ending at (4, 5)
    j.clear()
    j.add(b"c4", 4, 1)
    j.add(b"c5", 5, 1)
    assert _ids(j) == [4, 5, 6, 7, 8]
    assert _ids(DurableJournal(path, 0)) == [4, 5, 6, 7, 8]


def test_status_compares_the_restore_identities_of_reachable_nodes(tmp_path):
    """Each node's Mrestored (sha256 and original index) is in its status; the view is a
    mismatch only when reachable nodes that reported one disagree (None included)."""
    import json

    from broker import keys
    from broker.log.raft import RaftLog
    from broker.machine import StateMachine
    from broker.store import Store

    config = raft_config(tmp_path, ["10.0.0.2:7001", "10.0.0.3:7001"])
    record = {"backup_applied_index": 42, "backup_sha256": "ab" * 32,
              "backup_time": "2024-01-15T02:30:04Z", "rebased": True}
    store = Store(tmp_path / "data")
    store.db[keys.META_RESTORED] = json.dumps(record).encode()
    try:
        rl = RaftLog(config, StateMachine(store), store)
        mine = {"backup_sha256": "ab" * 32, "backup_applied_index": 42,
                "backup_time": "2024-01-15T02:30:04Z"}
        assert rl.restored == mine
        status = rl.status()  # peers never heard from: not compared, shown as None
        assert status["restored"] == mine and status["restore_mismatch"] is False
        assert [n["restored"] for n in status["nodes"]] == [mine, None, None]

        def peer(restored, reachable=True, **extra):
            return {"node_id": "p", "role": "follower", "reachable": reachable,
                    "restored": restored, **extra}

        rl._peer_status = {"10.0.0.2:7002": peer(mine), "10.0.0.3:7002": peer(mine)}
        assert rl.status()["restore_mismatch"] is False
        other = dict(mine, backup_sha256="cd" * 32)
        rl._peer_status["10.0.0.3:7002"] = peer(other)
        assert rl.status()["restore_mismatch"] is True
        rl._peer_status["10.0.0.3:7002"] = peer(None)  # kept its old data: not restored
        assert rl.status()["restore_mismatch"] is True
        rl._peer_status["10.0.0.3:7002"] = peer(None, reachable=False)  # down: not compared
        assert rl.status()["restore_mismatch"] is False
        del rl._peer_status["10.0.0.3:7002"]["restored"]  # an older broker: no field
        rl._peer_status["10.0.0.3:7002"]["reachable"] = True
        assert rl.status()["restore_mismatch"] is False
    finally:
        store.close()


def test_caught_up_once_the_leaders_commit_index_is_applied(tmp_path):
    """A (re)started node is caught up when it has applied the commit index the leader last
    reported to its status poll (its own, when it leads); after that it stays so."""
    from types import SimpleNamespace

    from broker.log.raft import RaftLog
    from broker.machine import StateMachine
    from broker.store import Store

    config = raft_config(tmp_path, ["10.0.0.2:7001", "10.0.0.3:7001"])
    store = Store(tmp_path / "data")
    try:
        rl = RaftLog(config, StateMachine(store), store)
        assert rl.caught_up() is False  # no engine yet
        engine = SimpleNamespace(leader=None, raftCommitIndex=0, raftLastApplied=0)
        engine._getLeader = lambda: engine.leader
        rl.engine = engine
        assert rl.caught_up() is False  # no leader known
        engine.leader = SimpleNamespace(address="10.0.0.2:7002")
        assert rl.caught_up() is False  # the leader's status not polled yet
        rl._peer_status = {"10.0.0.2:7002": {"reachable": True, "role": "leader",
                                             "commit_index": 500}}
        engine.raftLastApplied = 499
        assert rl.caught_up() is False
        rl._peer_status["10.0.0.2:7002"]["role"] = "follower"  # it was deposed meanwhile
        engine.raftLastApplied = 500
        assert rl.caught_up() is False
        rl._peer_status["10.0.0.2:7002"]["role"] = "leader"
        assert rl.caught_up() is True
        engine.raftLastApplied = 10  # never flips back: later lag is ordinary follower lag
        assert rl.caught_up() is True

        leading = RaftLog(config, StateMachine(store), store)
        leading.engine = SimpleNamespace(raftCommitIndex=7, raftLastApplied=6,
                                         _getLeader=lambda: SimpleNamespace(
                                             address=leading.raft_address))
        assert leading.caught_up() is False  # a new leader still applying its backlog
        leading.engine.raftLastApplied = 7
        assert leading.caught_up() is True
    finally:
        store.close()


def test_answers_read_right_after_a_freeze_are_not_fresh_contact(tmp_path, monkeypatch):
    """Answers that waited in the sockets while the leader was frozen are read the moment it
    runs again: they must not make it look as if a majority just answered (check-quorum)."""
    from types import SimpleNamespace

    from broker.log import raft
    from broker.machine import StateMachine
    from broker.store import Store

    clock = [100.0]
    monkeypatch.setattr(raft.time, "monotonic", lambda: clock[0])
    store = Store(tmp_path / "data")
    try:
        rl = raft.RaftLog(raft_config(tmp_path, ["10.0.0.2:7001", "10.0.0.3:7001"]),
                          StateMachine(store), store)
        assert rl.election_timeout == 1.0 and rl.heartbeat_period == 0.1
        peers = [SimpleNamespace(address=a) for a in rl.peer_raft]
        rl.engine = SimpleNamespace(raftCurrentTerm=5, _isLeader=lambda: True)

        def answers_at(t):
            clock[0] = t
            for peer in peers:
                rl._heard_from(peer)
            return rl._heard.get(peers[0].address)

        assert answers_at(100.0) == (5, 100.0)  # a new leader counts its first answers
        assert answers_at(100.1) == (5, 100.1)
        assert answers_at(102.0) == (5, 100.1)  # frozen 1.9 s: what it reads now is stale
        assert answers_at(102.15) == (5, 100.1)
        assert answers_at(102.25) == (5, 102.25)  # replies to heartbeats sent after it
        rl.engine.raftCurrentTerm = 6
        assert answers_at(110.0) == (6, 110.0)  # a new term is a new leadership
    finally:
        store.close()
