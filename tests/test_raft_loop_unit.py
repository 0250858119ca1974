"""The pieces of the loop-driven Raft path without a cluster: stored zlib frames, the loop
poller, the pre-vote decision (the 3-process behaviour is in test_raft_prevote.py)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import zlib
from types import SimpleNamespace

import pytest

from broker.log import raft_frames
from broker.log.raft import _Engine
from broker.log.raft_loop import LoopPoller, TickDriver
from broker.log.raft_prevote import PRE_VOTE, PRE_VOTE_REPLY, PreVote


@pytest.mark.parametrize("size", [0, 1, 500, 65535, 65536, 200_000])
def test_frames_are_zlib_streams_any_zlib_inflates(size):
    data = os.urandom(size)
    assert zlib.decompress(raft_frames.stored(data)) == data
    assert zlib.decompress(raft_frames.compress(data, 3)) == data
    if size < raft_frames.COMPRESS_FROM:
        assert raft_frames.compress(data) == raft_frames.stored(data)


def test_frames_install_only_touches_pysyncobjs_framing():
    from pysyncobj import tcp_connection
    raft_frames.install()
    raft_frames.install()  # idempotent
    assert tcp_connection.zlib.compress is raft_frames.compress
    assert tcp_connection.zlib.decompress is zlib.decompress
    assert zlib.compress is not raft_frames.compress


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_loop_poller_hands_events_to_pysyncobj_and_kicks_a_tick(loop_kind):
    async def main():
        loop = asyncio.get_running_loop()
        kicks, seen = [], []
        poller = LoopPoller(loop, lambda: kicks.append(1))
        a, b = socket.socketpair()
        a.setblocking(False)
        poller.subscribe(a.fileno(), lambda fd, ev: seen.append((ev, a.recv(10))), 1 | 4)
        b.send(b"x")
        for _ in range(50):
            await asyncio.sleep(0.01)
            if seen:
                break
        assert seen == [(1, b"x")] and kicks
        poller.subscribe(a.fileno(), lambda fd, ev: seen.append(("w", ev)), 1 | 2 | 4)
        await asyncio.sleep(0.05)
        assert ("w", 2) in seen  # writable is reported while asked for
        fd = a.fileno()
        a.close()  # pysyncobj closes first, then unsubscribes
        poller.unsubscribe(fd)
        b.close()
        poller.poll(0.05)  # pysyncobj's end-of-tick poll: returns at once
        c, d = socket.socketpair()  # the closed descriptor's number can be used again
        c.setblocking(False)
        poller.subscribe(c.fileno(), lambda fd, ev: seen.append(("c", c.recv(10))), 1 | 4)
        d.send(b"y")
        for _ in range(50):
            await asyncio.sleep(0.01)
            if ("c", b"y") in seen:
                break
        assert ("c", b"y") in seen
        poller.unsubscribe(c.fileno())
        c.close()
        d.close()

    started = time.monotonic()
    if loop_kind == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    assert time.monotonic() - started < 5


def fake_engine(term=3, log=((b"", 1, 1), (b"", 5, 3)), state=0):
    sent = []
    engine = SimpleNamespace(raftCurrentTerm=term)
    engine.__dict__.update({
        "_SyncObj__raftState": state, "_SyncObj__raftLog": list(log),
        "_SyncObj__otherNodes": {"b", "c"}, "_SyncObj__selfNode": "a",
        "_SyncObj__raftElectionDeadline": 0.0, "_SyncObj__transferInProgress": False,
        "_SyncObj__connectedToAnyone": lambda: True,
        "_SyncObj__generateRaftTimeout": lambda: 1.0,
        "_SyncObj__transport": SimpleNamespace(send=lambda node, m: sent.append((node, m))),
    })
    return engine, sent


def test_pre_vote_holds_the_election_until_a_majority_said_yes():
    engine, sent = fake_engine()
    kicks = []
    pv = PreVote(engine, 0.5, lambda: kicks.append(1))
    pv.before_tick()  # deadline passed: ask, and push pysyncobj's deadline
    assert engine._SyncObj__raftElectionDeadline > time.monotonic()
    assert {m["type"] for _, m in sent} == {PRE_VOTE} and sent[0][1]["term"] == 4
    assert engine.raftCurrentTerm == 3  # nothing changed
    pv.on_message(SimpleNamespace(address="b"), {"type": PRE_VOTE_REPLY, "term": 4,
                                                  "granted": False})
    assert not kicks
    pv.on_message(SimpleNamespace(address="b"), {"type": PRE_VOTE_REPLY, "term": 4,
                                                  "granted": True})
    assert kicks and engine._SyncObj__raftElectionDeadline == 0
    sent.clear()
    pv.before_tick()  # now pysyncobj runs its own election in this tick
    assert not sent and engine._SyncObj__raftElectionDeadline == 0


def test_pre_vote_is_refused_while_a_leader_is_heard_or_the_log_is_behind():
    engine, sent = fake_engine()
    pv = PreVote(engine, 0.5, lambda: None)
    ask = {"type": PRE_VOTE, "term": 4, "last_log_index": 5, "last_log_term": 3}
    pv.on_message("b", ask)
    assert sent[-1][1] == {"type": PRE_VOTE_REPLY, "term": 4, "granted": True}
    pv.heard({"type": "append_entries", "term": 3})
    pv.on_message("b", ask)
    assert sent[-1][1]["granted"] is False  # a leader was heard just now
    pv.leader_seen = 0.0
    pv.on_message("b", dict(ask, last_log_index=4))  # shorter log, same term
    assert sent[-1][1]["granted"] is False
    pv.on_message("b", dict(ask, term=2))  # behind this node's term
    assert sent[-1][1]["granted"] is False
    engine._SyncObj__raftState = 2  # a leader answers for itself
    pv.on_message("b", ask)
    assert sent[-1][1]["granted"] is False
    assert engine.raftCurrentTerm == 3


def test_a_transfer_skips_the_pre_vote():
    engine, sent = fake_engine()
    engine._SyncObj__transferInProgress = True
    PreVote(engine, 0.5, lambda: None).before_tick()
    assert not sent and engine._SyncObj__raftElectionDeadline == 0


def test_tick_now_runs_the_kicked_tick_in_place_and_only_once():
    async def main():
        loop = asyncio.get_running_loop()
        driver = TickDriver(loop, period=60.0)
        ticks = []
        driver.start(SimpleNamespace(_onTick=lambda timeout: ticks.append(timeout)))
        driver.tick_now()  # nothing kicked: nothing runs
        assert ticks == []
        driver.kick()
        driver.kick()
        driver.tick_now()
        assert ticks == [0.0]  # right here, not a loop turn later
        await asyncio.sleep(0.01)
        assert ticks == [0.0]  # the kicked tick was not run a second time
        driver.kick()
        await asyncio.sleep(0.01)
        assert ticks == [0.0, 0.0]  # a kick still ticks at the end of the turn
        driver.stop()

    asyncio.run(main())


def commit_index_engine(commit_index, sent_index, leader=True):
    sends = []
    engine = SimpleNamespace(_commit_index_timer="pending", _commit_index_sent=sent_index,
                             _isLeader=lambda: leader)
    engine.__dict__.update({"_SyncObj__raftCommitIndex": commit_index,
                            "_SyncObj__sendAppendEntries": lambda: sends.append(1)})
    return engine, sends


@pytest.mark.parametrize("commit_index,sent_index,leader,expect_send", [
    (7, 6, True, True),    # no AppendEntries carried index 7 yet: send it on its own
    (7, 7, True, False),   # the next proposal's AppendEntries carried it: nothing extra
    (7, 6, False, False),  # no longer leader: nothing to tell
])
def test_the_deferred_commit_index_goes_out_only_when_no_append_entries_carried_it(
        commit_index, sent_index, leader, expect_send):
    engine, sends = commit_index_engine(commit_index, sent_index, leader)
    _Engine._send_commit_index(engine)
    assert bool(sends) == expect_send
    assert engine._commit_index_timer is None  # the next apply may schedule one again
