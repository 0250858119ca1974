"""Raft log: pysyncobj 0.3.17 behind :class:`broker.log.base.Log` (see docs/clustering.md).

Threads. pysyncobj runs one *tick thread*: it polls the peers' sockets, runs elections,
advances the commit index and applies committed entries by calling
:meth:`_Engine.apply_entry`. That call must be fast and must never raise (an exception is
retried on every tick and wedges the node), so it only runs the state machine, writes the
entry's WriteBatch to RocksDB and hands results to the asyncio loop with
``call_soon_threadsafe``. The loop thread never touches the state machine: it reads a
*view* (counters, paused queues, applied index) that the tick thread republishes after each
entry, so a ``QUEUES``/``STATS`` never iterates a dict that apply is changing.

Group commit. Proposals queue on the loop; the commit loop turns everything queued (up to
``persistence.max_batch_commands`` and ~8 MB) into ONE replicated entry and keeps at most
:data:`MAX_IN_FLIGHT` entries outstanding, so under load thousands of client writes share
one AppendEntries round trip and one RocksDB write per node.

Leader and followers. The leader appends; a follower hands its entry to pysyncobj, which
forwards it to the leader. The leader re-stamps forwarded commands with its own clock
(``command[1]``), so every time in the log comes from a leader. The proposer learns the
result when *it* applies the committed entry: followers return the real result, computed
by their own deterministic apply. Nothing is acknowledged before its entry committed: the
result callback fires only from apply, which runs only up to the commit index.
Failures map to :class:`NotLeader` (certainly not appended: no leader, or the leader said
it is not one) or :class:`Unavailable` (outcome unknown: leader changed, timed out).

Snapshots. pysyncobj compacts its journal after ``raft.snapshot_min_entries`` entries by
calling our serializer on the tick thread: a RocksDB checkpoint plus the Raft metadata,
tarred into one file that pysyncobj streams to lagging followers in chunks. The receiver's
deserializer installs it (``store.replace_with`` + ``machine.load``) only if it is ahead of
the local database; the loop is held while the database is swapped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import shutil
import tarfile
import threading
import time
from pathlib import Path

from pysyncobj import FAIL_REASON, SERIALIZER_STATE, SyncObj, SyncObjConf, replicated
from pysyncobj import pickle as _pickle
from pysyncobj.node import TCPNode

from broker.config import Config
from broker.log.base import GroupCommitLog, NotLeader, Unavailable, deliver
from broker.log.raft_engine import (HmacAuthenticator, _fsync_dir, engine_patches,
                                    query_status)
from broker.log.raft_loop import LoopPoller, TickDriver
from broker.log.raft_peer_guard import PeerGuardTransport
from broker.log.raft_prevote import PRE_VOTE, PRE_VOTE_REPLY, PreVote
from broker import keys
from broker.machine import BaseMismatch, Counters, StateMachine, public
from broker.restore import identities_disagree, restore_identity, restored_from
from broker.store import Store
from taskqueue import jsonutil

log = logging.getLogger("tq.log.raft")

MAX_IN_FLIGHT = 4
MAX_ENTRY_BYTES = 8 << 20
STATUS_POLL_SECS = 1.0
ROLES = {0: "follower", 1: "candidate", 2: "leader"}
TICK_PERIOD = 0.05  # timer ticks (heartbeats, election deadline); events tick at once
# How long a leader's new commit index may wait for the next AppendEntries to carry it
# before it is sent on its own (_Engine._SyncObj__applyLogEntries).
COMMIT_INDEX_DELAY = 0.002

# Outcomes of a failed pysyncobj command.
_NO_OP = b"\x01"  # pysyncobj _COMMAND_TYPE.NO_OP: the entry a new leader appends first
_REGULAR = b"\x00"  # _COMMAND_TYPE.REGULAR: a replicated method call
_NOT_APPENDED = {FAIL_REASON.MISSING_LEADER, FAIL_REASON.NOT_LEADER, FAIL_REASON.QUEUE_FULL,
                 FAIL_REASON.REQUEST_DENIED}


EXIT_BASE_MISMATCH = 78  # the log was written on another base state (EX_CONFIG)


def now_ms() -> int:
    return int(time.time() * 1000)


class MachineView:
    """What the loop thread sees of the state machine; republished after every entry."""

    def __init__(self, machine: StateMachine):
        self._machine = machine
        self.store = machine.store
        self.hints = machine.hints  # RangeHints: single dict lookups, safe across threads
        self.publish()

    def publish(self) -> None:
        m = self._machine
        c = m.counters
        self.counters = Counters({"queues": {q: dict(v) for q, v in c.queues.items()},
                                  "totals": dict(c.totals)})
        self.paused = set(m.paused)
        self.applied_index = m.applied_index

    def __getattr__(self, name):
        return getattr(self._machine, name)


class _GuardedTransport(PeerGuardTransport):  # frame caps, handshake deadline, replays
    """Drops the commit index from AppendEntries that carry no consistency check.

    pysyncobj 0.3.17 advances a follower's commit index to ``min(leader commit, own last
    index)`` after *every* append_entries, including the snapshot-transfer ones (a chunk, or
    an empty one while the leader's serializer is busy) that carry no ``prevLogIdx``: a
    follower still holding uncommitted entries of an old term (a deposed leader) then
    applies them, and a deposed leader acknowledges its clients' writes that never
    committed. Measured in our fault suite (isolated leader, snapshots every 100 entries).
    Only append_entries that passed the prevLogIdx/prevLogTerm check may move the commit
    index; the snapshot install itself sets the applied index.
    """

    _constructing = True  # see ready

    @property
    def ready(self):
        """True while SyncObj's constructor runs: with autoTick off it would spin until the
        port is bound; the first tick binds it (and retries, as the tick thread did)."""
        return self._ready or self._constructing

    def setOnMessageReceivedCallback(self, callback):
        if callback is None:
            return super().setOnMessageReceivedCallback(None)

        def guarded(node, message):
            kind = message.get("type") if isinstance(message, dict) else None
            prevote = getattr(getattr(self._syncObj, "_owner", None), "prevote", None)
            if kind in (PRE_VOTE, PRE_VOTE_REPLY):
                if prevote is not None:
                    prevote.on_message(node, message)
                return  # ours alone: pysyncobj has no such message
            if kind == "append_entries" and prevote is not None:
                prevote.heard(message)
            if isinstance(message, dict) and message.get("type") == "append_entries" \
                    and "prevLogIdx" not in message and "commit_index" in message:
                if message.get("serialized"):
                    owner = getattr(self._syncObj, "_owner", None)
                    if owner is not None:
                        owner._snapshot_message()
                message = dict(message, commit_index=0)
            callback(node, message)
            if isinstance(message, dict) and message.get("type") == "next_node_idx":
                owner = getattr(self._syncObj, "_owner", None)
                if owner is not None:
                    owner._heard_from(node)

        super().setOnMessageReceivedCallback(guarded)


def quorum_contact(term: int, peers: list[str], heard: dict[str, tuple[int, float]],
                   now: float, window: float) -> bool:
    """Check-quorum: did a majority of the members (this leader included) answer this
    leader, in its current ``term``, within the last ``window`` seconds?

    ``heard`` maps a peer's Raft address to (term, monotonic time) of its last answer to an
    AppendEntries. A leader that fails this may be deposed without knowing it (cut off, or
    frozen while the others elected a new one): it must not call itself the leader.
    """
    fresh = sum(1 for peer in peers
                if (seen := heard.get(peer)) is not None and seen[0] == term
                and now - seen[1] <= window)
    return (fresh + 1) * 2 > len(peers) + 1


class _Engine(SyncObj):
    """The SyncObj whose one replicated method applies one entry (a batch of commands)."""

    def __init__(self, owner: "RaftLog", self_addr, others, conf, driver: TickDriver):
        self._owner = owner
        self._commit_index_timer: asyncio.TimerHandle | None = None
        self._commit_index_sent = 0  # the commit index the last AppendEntries carried
        super().__init__(self_addr, others, conf, transportClass=_GuardedTransport)
        transport = self._SyncObj__transport
        transport._constructing = False
        transport.tryGetReady()  # bind now; a failure is retried by every tick
        # A queued command wakes the loop's tick, not a pipe the tick thread polls.
        self._SyncObj__pipeNotifier = driver
        journal = self._SyncObj__raftLog
        journal_add = journal.add

        def add(command, idx, term):
            journal_add(command, idx, term)
            if command == _NO_OP and self._isLeader():
                self._append_restore_identity(journal_add, idx + 1, term)

        journal.add = add

    def _append_restore_identity(self, journal_add, idx: int, term: int) -> None:
        """Tick thread, right after pysyncobj appended a new leader's no-op: a leader whose
        database came from a restore the log has not recorded appends the ``restored``
        command as the next entry, before anything a client proposes in its term."""
        identity = self._owner._machine.restore_unlogged()
        if identity is None:
            return
        blob = jsonutil.dumps([["restored", now_ms(), identity]])
        func_id = self._methodToID[self._getFuncName("apply_entry")]
        journal_add(_REGULAR + _pickle.dumps((func_id, (blob,))), idx, term)
        log.info("leader in term %d: recording the restore this cluster runs on (backup "
                 "sha256 %s at index %s) as raft entry %d", term, identity["backup_sha256"],
                 identity["backup_applied_index"], idx)

    def _SyncObj__applyLogEntries(self):
        """pysyncobj's apply step. pysyncobj would send every follower the new commit index
        right after an apply: two frames out, two answers in, two more ticks on the leader,
        all of it landing while the client's next request arrives (it was most of the
        leader's loop time between a reply and the next read). Here that message waits
        COMMIT_INDEX_DELAY: the next proposal's AppendEntries carries the commit index
        anyway (then nothing extra is sent), and on an idle leader the followers learn it
        COMMIT_INDEX_DELAY later. Raft's safety never depends on when followers learn it."""
        if SyncObj._SyncObj__applyLogEntries(self) and self._isLeader() \
                and self._commit_index_timer is None:
            self._commit_index_timer = self._owner._loop.call_later(
                COMMIT_INDEX_DELAY, self._send_commit_index)
        return False

    def _SyncObj__sendAppendEntries(self):
        # Every AppendEntries (with entries or a heartbeat) carries the current commit index.
        self._commit_index_sent = self._SyncObj__raftCommitIndex
        return SyncObj._SyncObj__sendAppendEntries(self)

    def _send_commit_index(self) -> None:
        self._commit_index_timer = None
        try:
            if self._isLeader() and self._SyncObj__raftCommitIndex > self._commit_index_sent:
                self._SyncObj__sendAppendEntries()
        except Exception:
            log.exception("sending the commit index failed")

    @replicated
    def apply_entry(self, blob):
        return self._owner._apply(self.raftLastApplied + 1, blob)

    def _applyCommand(self, command, callback, commandType=None):
        # A tuple callback is a command forwarded by a follower: stamp it with our clock.
        if isinstance(callback, tuple) and commandType is None and self._isLeader():
            command = self._owner._restamp(command)
        super()._applyCommand(command, callback, commandType)


class RaftLog(GroupCommitLog):
    def __init__(self, config: Config, machine: StateMachine, store: Store):
        super().__init__(machine)
        self._machine = machine
        self.view = MachineView(machine)
        self.machine = self.view  # what Service reads, from the loop thread
        self.store = store
        self.config = config
        raft = config.raft
        self.node_id = raft.node_id
        self.address = config.advertise_address
        adv_host = self.address.rpartition(":")[0]
        raft_port = raft.port or config.broker.port + 1
        self.raft_address = f"{adv_host}:{raft_port}"
        bind_host = config.broker.host or "0.0.0.0"
        self.bind_address = f"{bind_host}:{raft_port}"
        peers = list(raft.peers)
        if raft.peer_raft_ports:
            peer_raft = list(raft.peer_raft_ports)
        else:
            peer_raft = []
            for peer in peers:
                host, _, port = peer.rpartition(":")
                peer_raft.append(f"{host}:{int(port) + 1}")
        # raft address -> client (broker protocol) address; members added later are
        # learned from their status replies
        self.client_address = dict(zip(peer_raft, peers))
        self.client_address[self.raft_address] = self.address
        self._static_peers = peer_raft
        self.sync_interval_ms = config.persistence.wal_sync_interval_ms
        self.max_batch = config.persistence.max_batch_commands
        self.forward_timeout = raft.forward_timeout_secs
        # Stuck: proposals wait and nothing was applied for longer than a write may take.
        self.stall_secs = raft.forward_timeout_secs + raft.election_timeout_ms / 1000.0
        self.election_timeout = raft.election_timeout_ms / 1000.0
        self.heartbeat_period = min(0.1, self.election_timeout / 4)  # AppendEntries period
        data_dir = Path(config.persistence.data_dir)
        self.raft_dir = data_dir.with_name(data_dir.name + ".raft")
        self.auth = HmacAuthenticator(raft.secret)
        self.engine: _Engine | None = None
        self.driver: TickDriver | None = None
        self.prevote: PreVote | None = None
        self.journals: list = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._wal_dirty = False
        self._peer_status: dict[str, dict] = {}
        self._status_thread: threading.Thread | None = None
        self._halt = threading.Event()
        self.snapshots_installed = 0
        self._loaded_once = False
        self._own_snapshot_at_start = False
        self._snap_lock = threading.Lock()
        self._snap_seq = 0
        self._install_gen = 0
        self._snap_state = SERIALIZER_STATE.NOT_SERIALIZING
        self.snapshots_taken = 0
        self.apply_errors = 0
        # where this database came from (Mrestored): re-read when a snapshot replaces it
        self.restored = restore_identity(restored_from(store))
        self._restore_state: tuple = (False, ())  # last logged (mismatch, identities)
        # peer raft address -> (term, monotonic time) of its last answer to this leader
        self._heard: dict[str, tuple[int, float]] = {}
        self._last_answer: tuple[int, float] = (-1, 0.0)  # (term, monotonic) of any answer
        self._distrust_until = 0.0  # see _heard_from
        self._caught_up = False  # see caught_up(); never goes back to False

    # ---------------------------------------------------------------------- lifecycle

    def _conf(self) -> SyncObjConf:
        et = self.election_timeout
        period = self.heartbeat_period
        return SyncObjConf(
            password="(see HmacAuthenticator)",
            autoTick=False,  # the loop drives the tick (raft_loop.TickDriver)
            autoTickPeriod=TICK_PERIOD,
            appendEntriesUseBatch=False,  # send as soon as an entry is appended (latency)
            appendEntriesPeriod=period,
            raftMinTimeout=et,
            raftMaxTimeout=et * 1.6,
            leaderFallbackTimeout=max(et, period * 3),
            connectionTimeout=max(3.5, et * 2),
            connectionRetryTime=0.5,
            appendEntriesBatchSizeBytes=64 << 20,  # our entries are never chunked
            sendBufferSize=1 << 20,
            recvBufferSize=1 << 20,
            commandsQueueSize=100_000,
            commandsWaitLeader=True,
            logCompactionMinEntries=self.config.raft.snapshot_min_entries,
            logCompactionMinTime=10 ** 9,  # by entry count only
            journalFile=str(self.raft_dir / "journal"),
            fullDumpFile=str(self.raft_dir / "snapshot.tar"),
            serializer=self._serialize,
            serializeChecker=self._serialize_state,
            deserializer=self._deserialize,
            bindAddress=self.bind_address,
            dynamicMembershipChange=True,  # python -m broker.log.raft_admin add/remove
            useFork=False,
        )

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.raft_dir.mkdir(parents=True, exist_ok=True)
        conf = self._conf()
        self._own_snapshot_at_start = os.path.isfile(conf.fullDumpFile)

        self.driver = TickDriver(self._loop, TICK_PERIOD)
        poller = LoopPoller(self._loop, self.driver.kick)
        # Built on the loop thread: its sockets are the loop's (LoopPoller).
        with engine_patches(self.sync_interval_ms, self.auth, self.journals, poller):
            self.engine = _Engine(self, self.raft_address, self.peer_raft, conf, self.driver)
        self.engine._SyncObj__transport.setOnUtilityMessageCallback("tqstatus",
                                                                    self._utility_status)
        # Refuse pre-votes while a leader was heard within half an election timeout (its
        # heartbeats come every heartbeat_period): raft_prevote.py.
        self.prevote = PreVote(self.engine, max(3 * self.heartbeat_period,
                                                self.election_timeout / 2), self.driver.kick)
        self.driver.before_tick = self.prevote.before_tick
        self.driver.start(self.engine)
        threading.Thread(target=self._sync_loop, daemon=True, name="tq-raft-sync").start()
        self._start_task(self._commit_loop(), "tq-raft-commit")
        self._status_thread = threading.Thread(target=self._poll_peers, daemon=True,
                                               name="tq-raft-status")
        self._status_thread.start()
        log.info("raft node %s: raft %s (bind %s), peers %s, journal in %s", self.node_id,
                 self.raft_address, self.bind_address, ", ".join(self.peer_raft),
                 self.raft_dir)

    async def stop(self) -> None:
        await self._stop_proposals()
        self._halt.set()
        if self.engine is not None:
            self.driver.stop()
            timer = getattr(self.engine, "_commit_index_timer", None)
            if timer is not None:  # a stopped engine sends nothing more
                timer.cancel()
            self.engine.destroy()  # autoTick off: closes the peer sockets right here
        try:
            self.store.sync_wal()
        except Exception:
            log.exception("final WAL sync failed")

    # -------------------------------------------------------------------- proposing

    async def _wait_for_leader(self) -> bool:
        deadline = time.monotonic() + max(2.0, 3 * self.election_timeout)
        while self.engine._getLeader() is None:
            if time.monotonic() > deadline or self._stopping:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _commit_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                taken, held = [], False
                try:
                    if not await self._wait_for_leader():
                        queued, self._queue = self._queue, []
                        self._fail(queued, NotLeader(None))
                        continue
                    await self._slots.acquire()
                    held = True
                    taken = self._queue[: self.max_batch]
                    del self._queue[: self.max_batch]
                    # Encoded here, before anything is sent: a command that cannot be
                    # encoded is failed alone (it used to end this loop, silently).
                    taken, blob = self._encodable(taken)
                    while blob is not None and len(blob) > MAX_ENTRY_BYTES and len(taken) > 1:
                        half = len(taken) // 2
                        self._queue[:0] = taken[half:]
                        taken = taken[:half]
                        blob = jsonutil.dumps([item[0] for item in taken])
                    if not taken:
                        self._slots.release()
                        continue
                    held = False  # _send owns the slot now: its settle releases it
                    self._send(taken, blob)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # A bug in this loop must not end it: fail what it held and go on.
                    log.error("raft commit loop: %d proposals failed by an internal error",
                              len(taken), exc_info=True)
                    if held:
                        self._slots.release()
                    self._fail(taken, Unavailable(f"internal error proposing it: "
                                                  f"{type(exc).__name__}; outcome unknown"))

    def _send(self, taken: list, blob: bytes) -> None:
        loop = self._loop
        state = {"done": False}
        self.in_flight += 1

        def settle(results, error):  # loop thread, exactly once
            if state["done"]:
                return
            state["done"] = True
            timer.cancel()
            self.in_flight -= 1
            self._slots.release()
            try:
                self._settle(taken, results, error)
            except Exception as exc:  # a bug here must not leave the proposers waiting
                log.error("settling %d proposals failed", len(taken), exc_info=True)
                self._fail(taken, Unavailable(f"internal error: {type(exc).__name__}; "
                                              "outcome unknown"))

        def callback(results, error):  # inside the tick (loop thread), or another thread
            if self._on_loop_thread():
                settle(results, error)  # the proposer resumes in the next loop turn
            else:
                self._to_loop(settle, results, error)

        timer = loop.call_later(self.forward_timeout, settle, None, "timeout")
        try:
            self.engine.apply_entry(blob, callback=callback)
        except Exception as exc:  # never expected; fail this batch only
            log.exception("proposing to pysyncobj failed")
            settle(None, exc)
            return
        # Append it and send its AppendEntries now, not one loop turn later (in between,
        # the loop would run whatever else became ready first).
        if self.driver is not None:
            self.driver.tick_now()

    def _settle(self, taken: list, results, error) -> None:
        if error == FAIL_REASON.SUCCESS and isinstance(results, list) \
                and len(results) == len(taken):
            for (_, sink, slot), result in zip(taken, results):
                deliver(sink, slot, result)
            return
        if error == FAIL_REASON.SUCCESS:
            exc = Unavailable("committed, but this node applied it from a snapshot; "
                              "result unknown (retry: retries are idempotent)")
        elif error in _NOT_APPENDED:
            exc = NotLeader(self.leader_address())
        elif error == "timeout":
            self._settle_timed_out(taken)
            return
        elif isinstance(error, BaseException):
            exc = Unavailable(f"{type(error).__name__}: {error}")
        else:
            exc = Unavailable(f"leader changed (raft code {error}); outcome unknown")
        self._fail(taken, exc)

    def _settle_timed_out(self, taken: list) -> None:
        """No answer within raft.forward_timeout_secs. The entry may still commit (or have
        committed: a node that rejoined and installed a snapshot never hears back about the
        entries inside it). What this node has applied by now is answered as it is: a
        submit whose task is here committed. For the rest the outcome is unknown."""
        unknown = Unavailable(f"no answer within {self.forward_timeout:g}s "
                              "(raft.forward_timeout_secs): outcome unknown, it may have "
                              "committed (retry: retries are idempotent)")
        for command, sink, slot in taken:
            known = None
            try:
                known = self._known_submit(command)
            except Exception:
                log.debug("looking up a timed-out submit failed", exc_info=True)
            if known is not None:
                deliver(sink, slot, known)
            else:
                deliver(sink, slot, unknown, failed=True)

    def _known_submit(self, command: list) -> dict | None:
        """The result of a submit command read back from RocksDB, when its task is there
        as this command made it (same type, queue and payload); else None."""
        if not command or command[0] != "submit":
            return None
        spec = command[2]
        task = self.store.get_json(keys.task(spec["id"]))
        if task is None or any(task.get(f) != spec.get(f) for f in ("type", "queue", "payload")):
            return None
        out = public(task)
        # made by an earlier submit of the same id (a retry): the answer a duplicate gets
        if task.get("created_at", 0) * 1000 < command[1] - 1000 * (self.forward_timeout + 60):
            out["duplicate"] = True
        return out

    def _restamp(self, command: bytes) -> bytes:
        """Leader, tick thread: give a forwarded entry's commands the leader's clock."""
        try:
            if command[:1] != b"\x00":
                return command
            call = _pickle.loads(command[1:])
            func_id, args = call[0], call[1]
            commands = jsonutil.loads(args[0])
            now = now_ms()
            for cmd in commands:
                cmd[1] = now
            return command[:1] + _pickle.dumps((func_id, (jsonutil.dumps(commands),)))
        except Exception:
            log.exception("could not re-stamp a forwarded entry; appending it as it came")
            return command

    # --------------------------------------------------------------- tick thread: apply

    def _apply(self, index: int, blob: bytes):
        """Apply one committed entry. Tick thread. Never raises."""
        machine = self._machine
        if index <= machine.applied_index:
            return []  # replay after restart or snapshot install: already in RocksDB
        try:
            commands = jsonutil.loads(blob)
        except Exception:
            log.critical("undecodable entry %d skipped", index)
            self.apply_errors += 1
            return []
        try:
            results, batch = machine.apply_entry(index, commands)
        except BaseMismatch as exc:
            # Nothing of this entry is written. Continuing would serve tasks that differ
            # from every other node's; restarting (systemd) comes back to this same refusal
            # until the database is fixed.
            log.critical("refusing to apply raft entry %d: %s. This node would hold different "
                         "tasks than the rest of the cluster; stopping. Fix: restore this node "
                         "from the same archive with tq-broker --restore, or wipe it after "
                         "the leader has taken a snapshot (docs/operations.md, Restoring a "
                         "cluster)", index, exc)
            logging.shutdown()
            os._exit(EXIT_BASE_MISMATCH)
        except Exception:
            # apply_entry contains per-command errors itself; reaching here is a bug.
            log.critical("apply of entry %d failed; exiting (restart replays the log)", index,
                         exc_info=True)
            os._exit(70)
        try:
            if batch is not None:
                # Unsynced even with wal_sync_interval_ms 0: the entry is already fsynced in
                # the journal of a majority (that is what made it committed), and a node
                # whose RocksDB lost its last writes replays them from its journal (apply
                # is idempotent: entries at or below the stored applied index are skipped).
                self.store.write(batch, False)
                self._wal_dirty = True
        except Exception:
            # Memory is ahead of the disk: continuing could acknowledge what is not stored.
            log.critical("RocksDB write of entry %d failed; exiting", index, exc_info=True)
            os._exit(70)
        self.view.publish()
        self.progress_at = time.monotonic()  # the watchdog's "the write path moves"
        woken, finished = machine.woken, machine.finished
        if woken or finished:
            self._to_loop(self._notify, woken, finished)
        return results

    def _on_loop_thread(self) -> bool:
        return self.driver is not None and self.driver.on_loop_thread()

    def _to_loop(self, fn, *args) -> None:
        """Run ``fn`` on the loop after the current tick (from the tick itself: no wake-up
        syscall; from another thread: call_soon_threadsafe)."""
        loop = self._loop
        try:
            if self._on_loop_thread():
                loop.call_soon(fn, *args)
            else:
                loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed: shutting down
            pass

    def _notify(self, woken, finished) -> None:
        try:
            if woken:
                self.on_applied(woken)
            if finished:
                self.on_finished(finished)
        except Exception:
            log.exception("on_applied failed")

    def _sync_loop(self) -> None:
        """fsync RocksDB's WAL (and, when wal_sync_interval_ms > 0, the journal) every N ms
        (100 ms when N is 0, where the journal is fsynced inline), off the Raft thread: an
        fsync can take tens of ms and heartbeats must not wait for it."""
        interval = (self.sync_interval_ms or 100) / 1000.0
        while not self._halt.wait(interval):
            try:
                if self._wal_dirty:
                    self._wal_dirty = False
                    self.store.sync_wal()
                for journal in self.journals:
                    journal.sync_from_other_thread()
            except Exception:
                log.exception("periodic sync failed")

    # ------------------------------------------------------------ tick thread: snapshots

    def _serialize(self, tmp_name: str, raft_data) -> None:
        """pysyncobj's serializer (tick thread): checkpoint now, tar in the background.

        The RocksDB checkpoint (hard links, a few ms) is taken here, between two applies,
        so it holds exactly the state at the snapshot's index. Writing the tar (the whole
        database) happens on a thread; :meth:`_serialize_state` tells pysyncobj when it is
        done, and only then does pysyncobj compact its journal. Until then ``tmp_name``
        (which pysyncobj renames over the snapshot file when we return) is a hard link to
        the previous snapshot, so a crash meanwhile leaves the old snapshot + full journal.
        """
        started = time.monotonic()
        last_entry, prev_entry, cluster = raft_data
        final = tmp_name[:-len(".tmp")] if tmp_name.endswith(".tmp") else tmp_name + ".final"
        with self._snap_lock:
            self._snap_seq += 1
            seq = self._snap_seq
            generation = self._install_gen
        work = self.raft_dir / f"checkpoint-{seq}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        self.store.checkpoint(work)
        meta = {
            "applied_index": self._machine.applied_index,
            "entries": [[base64.b64encode(e[0]).decode(), e[1], e[2]]
                        for e in (last_entry, prev_entry)],
            "cluster": sorted(getattr(n, "address", str(n)) for n in cluster),
            "node_id": self.node_id,
        }
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if os.path.exists(final):
            os.link(final, tmp_name)
        else:
            open(tmp_name, "wb").close()  # no snapshot yet: the journal still starts at 1
        self._snap_state = SERIALIZER_STATE.SERIALIZING
        threading.Thread(target=self._build_snapshot, name="tq-raft-snapshot", daemon=True,
                         args=(work, meta, final, generation, started)).start()

    def _build_snapshot(self, work: Path, meta: dict, final: str, generation: int,
                        started: float) -> None:
        building = final + ".building"
        state = SERIALIZER_STATE.FAILED
        try:
            with tarfile.open(building, "w") as tar:
                raw = json.dumps(meta).encode()
                info = tarfile.TarInfo("raft.json")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
                tar.add(str(work), arcname="db")
            with open(building, "rb+") as f:
                os.fsync(f.fileno())
            with self._snap_lock:
                if self._install_gen != generation:
                    log.info("snapshot at %d discarded: a leader's snapshot arrived meanwhile",
                             meta["entries"][0][1])
                else:
                    os.replace(building, final)
                    _fsync_dir(str(self.raft_dir))
                    state = SERIALIZER_STATE.SUCCESS
                    self.snapshots_taken += 1
                    log.info("snapshot at raft index %d (machine index %d) in %.0f ms",
                             meta["entries"][0][1], meta["applied_index"],
                             (time.monotonic() - started) * 1000)
        except Exception:
            log.exception("building the snapshot failed")
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(building)
            self._snap_state = state

    def _serialize_state(self) -> int:
        """pysyncobj's serializeChecker (tick thread)."""
        state = self._snap_state
        if state in (SERIALIZER_STATE.SUCCESS, SERIALIZER_STATE.FAILED):
            self._snap_state = SERIALIZER_STATE.NOT_SERIALIZING
        return state

    def _snapshot_message(self) -> None:
        """Tick thread, before pysyncobj handles a snapshot chunk from a leader: a
        background build finishing now must not rename over the file being received."""
        with self._snap_lock:
            self._install_gen += 1

    def _deserialize(self, filename: str):
        """pysyncobj's deserializer: install the checkpoint if it is ahead of RocksDB.

        The first call at start-up loads this node's own last snapshot: the journal keeps
        its entries after the snapshot. For a snapshot received from a leader it keeps only
        the entries of the leader's current term after it (see DurableJournal).
        """
        startup = self._own_snapshot_at_start and not self._loaded_once
        self._loaded_once = True
        term = None if startup or self.engine is None else self.engine.raftCurrentTerm
        for journal in self.journals:
            journal.retain_term = term
        with tarfile.open(filename, "r") as tar:
            meta = json.loads(tar.extractfile("raft.json").read())
            entries = [(base64.b64decode(c), i, t) for c, i, t in meta["entries"]]
            if meta["applied_index"] > self._machine.applied_index:
                started = time.monotonic()
                target = self.raft_dir / "install.tmp"
                shutil.rmtree(target, ignore_errors=True)
                members = [m for m in tar.getmembers() if m.name.startswith("db/")
                           and not m.issym() and not m.islnk() and ".." not in m.name]
                tar.extractall(target, members=members, filter="data")
                # Staged and fsynced while the loop still serves; swapped (renames, parent
                # fsynced) with the loop parked: durable before the node acts on it.
                self.store.prepare_replacement(target / "db", consume=True)
                self._exclusive(self._install)
                shutil.rmtree(target, ignore_errors=True)
                self.snapshots_installed += 1
                log.info("installed snapshot: machine index %d (raft %d) in %.0f ms",
                         self._machine.applied_index, entries[0][1],
                         (time.monotonic() - started) * 1000)
        # Node objects, not strings: pysyncobj drops itself from this set by comparing
        # with its own TCPNode (a string never equals one, and the node became its own
        # peer: a 3-node cluster counted 4 members and lost its quorum with one node down).
        return entries[0], entries[1], {TCPNode(addr) for addr in meta["cluster"]}

    def _install(self) -> None:
        self.store.swap_prepared()
        self._machine.load()
        self.view.publish()
        self.restored = restore_identity(restored_from(self.store))

    def _exclusive(self, fn) -> None:
        """Run ``fn`` (tick thread) while the event loop is parked: no read sees the swap."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._on_loop_thread():
            fn()  # the tick runs on the loop: nothing else runs while fn does
            return
        entered, done = threading.Event(), threading.Event()

        def park():
            entered.set()
            done.wait(60)

        try:
            loop.call_soon_threadsafe(park)
        except RuntimeError:
            fn()
            return
        entered.wait(5)
        try:
            fn()
        finally:
            done.set()

    # ------------------------------------------------------------------------ status

    def is_leader(self) -> bool:
        return self.engine is not None and self.engine._isLeader()

    def _heard_from(self, node) -> None:
        """Tick thread: a peer answered an AppendEntries (pysyncobj's next_node_idx).

        An answer is stamped when it is read, not when it was sent. A leader frozen (SIGSTOP,
        a long GC, an overloaded host) reads, the moment it runs again, the answers that
        waited in its sockets since before the freeze, while the others may have elected a
        new leader meanwhile: counted as fresh, they made /health/leader answer 200 on the
        deposed leader (seen in CI). So after a silence longer than the election timeout in
        the same term, answers read within the next two heartbeat periods are not counted:
        by then the ones read are replies to AppendEntries sent after the freeze.
        """
        engine = self.engine
        if engine is None or not engine._isLeader():
            return
        now, term = time.monotonic(), engine.raftCurrentTerm
        last_term, last_at = self._last_answer
        self._last_answer = (term, now)
        if term == last_term and now - last_at > self.election_timeout:
            self._distrust_until = now + 2 * self.heartbeat_period
        if now < self._distrust_until:
            return
        self._heard[getattr(node, "address", str(node))] = (term, now)

    def leads_with_quorum(self) -> bool:
        """Leader, and a majority answered it in its term within ``raft.election_timeout_ms``.

        pysyncobj's own state says "leader" until its tick thread notices the new term or the
        missing answers; a leader frozen (GC, SIGSTOP, overloaded host) or cut off meanwhile
        is still "leader" there, next to the newly elected one. ``/health/leader`` uses this
        instead: followers start an election only after an election timeout without hearing
        the leader, so a leader with answers younger than that is not yet replaced (a
        check-quorum for routing, not a read lease: nothing is acknowledged on it).

        The window is half an election timeout: an answer is stamped when this leader
        *reads* it, which can be a loop turn or more after the follower reset its election
        clock on the AppendEntries it answers (the loop also serves clients); the other half
        covers that delay. Heartbeats come every ``heartbeat_period`` (at most a quarter of
        the election timeout), so a healthy leader always has an answer that young.
        """
        engine = self.engine
        if engine is None or not engine._isLeader():
            return False
        return quorum_contact(engine.raftCurrentTerm, self.peer_raft, dict(self._heard),
                              time.monotonic(), self.election_timeout / 2)

    def caught_up(self) -> bool:
        """Has this node applied everything the leader had committed when it last looked?

        A node restarted on an empty or old disk (a lost disk, a restore to rejoin) answers
        reads from whatever it has applied so far: a task it has not received yet would be a
        404 that is not true. Until it has applied the leader's commit index, as the status
        poll last read it (or its own, when it leads), ``/health`` says ``catching_up`` and a
        missing task is UNAVAILABLE rather than NOTFOUND. Once caught up it stays so: a
        follower's reads may then trail by its lag, as documented (docs/clustering.md).
        Any thread; reads only what the status poll stored, no network.
        """
        if self._caught_up:
            return True
        engine = self.engine
        if engine is None:
            return False
        leader = engine._getLeader()
        leader_raft = getattr(leader, "address", None) if leader is not None else None
        if leader_raft is None:
            return False
        if leader_raft == self.raft_address:
            target = engine.raftCommitIndex
        else:
            peer = self._peer_status.get(leader_raft) or {}
            if not peer.get("reachable") or peer.get("role") != "leader":
                return False
            target = peer.get("commit_index") or 0
        if engine.raftLastApplied < target:
            return False
        self._caught_up = True
        log.info("caught up with the leader (applied index %d, leader's commit %d)",
                 engine.raftLastApplied, target)
        return True

    def leader_address(self) -> str | None:
        if self.engine is None:
            return None
        leader = self.engine._getLeader()
        if leader is None:
            return None
        return self._client_address(getattr(leader, "address", str(leader)))

    def _self_status(self) -> dict:
        engine = self.engine
        leader = engine._getLeader() if engine else None
        leader_raft = getattr(leader, "address", None) if leader is not None else None
        return {
            "node_id": self.node_id,
            "address": self.address,
            "raft_address": self.raft_address,
            "role": ROLES.get(engine._SyncObj__raftState, "unknown") if engine else "starting",
            "term": engine.raftCurrentTerm if engine else 0,
            "commit_index": engine.raftCommitIndex if engine else 0,
            "raft_applied_index": engine.raftLastApplied if engine else 0,
            "applied_index": self.view.applied_index,
            "leader": self._client_address(leader_raft) if leader_raft else None,
            "leader_raft": leader_raft,
            "members": [self.raft_address] + self.peer_raft,
            "snapshots_taken": self.snapshots_taken,
            "snapshots_installed": self.snapshots_installed,
            "restored": self.restored,
            "caught_up": self._caught_up,
            "time": time.time(),
        }

    def _utility_status(self, args, callback) -> None:  # tick thread
        try:
            callback(self._self_status(), None)
        except Exception as exc:
            callback(None, str(exc))

    @property
    def peer_raft(self) -> list[str]:
        """The other members' Raft addresses (the configured peers, then as changed by
        membership entries in the log)."""
        engine = self.engine
        if engine is None:
            return list(self._static_peers)
        try:
            return sorted(getattr(n, "address", str(n)) for n in engine.otherNodes)
        except RuntimeError:  # the set changed while copied: membership entry applying
            return list(self._static_peers)

    def _client_address(self, raft_addr: str) -> str:
        known = self.client_address.get(raft_addr)
        if known:
            return known
        host, _, port = raft_addr.rpartition(":")
        return f"{host}:{int(port) - 1}"  # the default layout: Raft port = broker port + 1

    def _poll_peers(self) -> None:
        while not self._halt.wait(STATUS_POLL_SECS):
            try:
                self._poll_round()
            except Exception:  # the thread must not end: health reads what it stores
                log.exception("raft status poll failed")

    def _poll_round(self) -> None:
        for raft_addr in self.peer_raft:
            try:
                reply = query_status(raft_addr, self.auth)
                if isinstance(reply, dict):
                    reply["reachable"] = True
                    reply["checked_at"] = time.time()
                    if isinstance(reply.get("address"), str):
                        self.client_address[raft_addr] = reply["address"]
                    self._peer_status[raft_addr] = reply
                    continue
            except Exception:
                pass
            old = self._peer_status.get(raft_addr, {})
            self._peer_status[raft_addr] = dict(old, reachable=False,
                                                checked_at=time.time())
        self.caught_up()
        try:
            self._log_restore_mismatch(self.status())
        except Exception:
            log.debug("restore identity check failed", exc_info=True)

    def _log_restore_mismatch(self, status: dict) -> None:
        """Status thread: say so in the log when the nodes' restores start or stop to
        disagree (once per change, not every poll)."""
        mismatch = status.get("restore_mismatch", False)
        seen = sorted(
            (str(n.get("node_id")), "not restored" if not n.get("restored") else
             f"{str(n['restored'].get('backup_sha256') or '')[:12]}@"
             f"{n['restored'].get('backup_applied_index')}")
            for n in status.get("nodes", []) if n.get("reachable"))
        state = (mismatch, tuple(seen) if mismatch else ())
        if state == self._restore_state:
            return
        was_mismatch = self._restore_state[0]
        self._restore_state = state
        listed = ", ".join(f"{node} {ident}" for node, ident in seen)
        if mismatch:
            log.warning("nodes restored from different backups: %s; they apply the same log "
                        "to different data and diverge. Stop every broker and restore the "
                        "SAME backup on EVERY node (docs/operations.md, Restoring a cluster)",
                        listed)
        elif was_mismatch:  # unreachable nodes are not compared: they are not listed
            log.info("the reachable nodes report the same restore again: %s", listed)

    def status(self) -> dict:
        me = self._self_status()
        nodes = [dict(me, reachable=True)]
        for raft_addr in self.peer_raft:
            peer = dict(self._peer_status.get(raft_addr, {}))
            peer.setdefault("node_id", None)
            peer.setdefault("role", "unknown")
            peer.setdefault("term", None)
            peer.setdefault("commit_index", None)
            peer.setdefault("applied_index", None)
            peer.setdefault("reachable", False)
            peer["address"] = self._client_address(raft_addr)
            peer["node_id"] = peer["node_id"] or peer["address"]  # until it first answers
            peer["raft_address"] = raft_addr
            if not peer["reachable"]:
                peer["role"] = "unreachable"
            nodes.append(peer)
        # Before the defaults: a peer that never answered (or runs a version without the
        # field) is not compared; one that answered with null is (it was not restored).
        mismatch = identities_disagree(nodes)
        for node in nodes:
            node.setdefault("restored", None)
        commit = max([n["commit_index"] or 0 for n in nodes if n.get("reachable")] or [0])
        for node in nodes:
            applied = node.get("applied_index")
            raft_applied = node.get("raft_applied_index")
            node["lag"] = None if raft_applied is None else max(0, commit - raft_applied)
            node.pop("time", None)
            node["applied_index"] = applied
        leader_id = next((n["node_id"] for n in nodes
                          if n.get("reachable") and n.get("role") == "leader"
                          and n.get("address") == me["leader"]), None)
        return {"mode": "raft", "node_id": self.node_id, "role": me["role"],
                "leader": me["leader"], "leader_id": leader_id, "term": me["term"],
                "commit_index": me["commit_index"], "applied_index": me["applied_index"],
                "restored": me["restored"], "restore_mismatch": mismatch,
                "caught_up": self.caught_up(), "nodes": nodes}

    async def snapshot(self, path: str) -> int:
        loop = self._loop
        await loop.run_in_executor(None, self.store.checkpoint, path)

        def read_index():
            import rocksdict
            from broker import keys
            db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True),
                                 access_type=rocksdict.AccessType.read_only())
            try:
                raw = db.get(keys.META_APPLIED)
            finally:
                db.close()
            return 0 if raw is None else int(raw)

        try:
            return await loop.run_in_executor(None, read_index)
        except Exception:
            return self.view.applied_index
