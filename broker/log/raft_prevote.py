"""Raft pre-vote for pysyncobj 0.3.17: a node asks before it bumps its term.

Without it, a node cut off from the others (a partition, a dead switch port) times out
again and again and raises its term each time; when the network heals, its first
RequestVote carries a term above the leader's, and the healthy leader steps down: the
cluster takes no writes for another election (seen in 3 of 10 partitions, 1.3–1.6 s).

With pre-vote (Raft thesis §9.6): when this node's election deadline passes, it first sends
``tq_pre_vote`` with the term it *would* use, and pysyncobj's election (term + 1,
RequestVote) runs only once a majority (itself included) said yes. A node answers yes only
when a real vote could be granted (the asker's log is at least as up to date, its term not
behind) and it has not heard from a leader for :attr:`PreVote.window` seconds. Nothing
changes state on either side: a refused or unanswered pre-vote leaves every term alone, so
an isolated node comes back at the term it left with and follows the leader it finds.

A leadership transfer (pysyncobj's ``timeout_now``) skips the pre-vote: the leader itself
asked this node to take over. Peers that do not speak pre-vote ignore the message (never
a yes): in a mixed-version cluster the old nodes still win elections.

Runs on the loop thread (inside the tick and the transport's message callback).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("tq.log.raft")

PRE_VOTE = "tq_pre_vote"
PRE_VOTE_REPLY = "tq_pre_vote_reply"
_LEADER = 2  # pysyncobj _RAFT_STATE.LEADER


class PreVote:
    def __init__(self, engine, window: float, kick):
        self.engine = engine
        self.window = window  # heard from a leader this recently: refuse
        self.kick = kick  # run a tick soon (the election, once allowed)
        self.leader_seen = 0.0
        self._asking_term: int | None = None  # current term when the round started
        self._yes: set = set()
        self._allowed_term: int | None = None
        self.rounds = 0
        self.refused = 0

    # -- pysyncobj state (name-mangled privates of SyncObj, checked against 0.3.17)
    def _get(self, name):
        return getattr(self.engine, "_SyncObj__" + name)

    def _last_log(self) -> tuple[int, int]:
        journal = self._get("raftLog")
        return journal[-1][1], journal[-1][2]

    def _majority(self, votes: int) -> bool:
        return votes * 2 > len(self._get("otherNodes")) + 1

    # -- the candidate side, before each tick
    def before_tick(self) -> None:
        engine = self.engine
        if self._get("raftState") == _LEADER or self._get("selfNode") is None:
            self._asking_term = None
            return
        now = time.monotonic()
        if self._get("raftElectionDeadline") >= now or not self._get("connectedToAnyone")():
            return
        term = engine.raftCurrentTerm
        if self._get("transferInProgress") or self._allowed_term == term:
            self._allowed_term = None
            return  # pysyncobj runs its election in this tick
        # Hold pysyncobj's election for another randomized timeout; ask meanwhile.
        engine._SyncObj__raftElectionDeadline = now + self._get("generateRaftTimeout")()
        self._asking_term = term
        self._yes = {"self"}
        self.rounds += 1
        last_index, last_term = self._last_log()
        message = {"type": PRE_VOTE, "term": term + 1, "last_log_index": last_index,
                   "last_log_term": last_term}
        transport = self._get("transport")
        for node in list(self._get("otherNodes")):
            transport.send(node, message)
        self._count()

    def _count(self) -> None:
        if self._majority(len(self._yes)):
            self._allowed_term = self._asking_term
            self._asking_term = None
            self.engine._SyncObj__raftElectionDeadline = 0  # elect at the next tick
            self.kick()

    # -- messages (the transport's callback, before pysyncobj sees anything)
    def heard(self, message: dict) -> None:
        """An AppendEntries arrived: a leader of a current term is alive."""
        if message.get("term", -1) >= self.engine.raftCurrentTerm:
            self.leader_seen = time.monotonic()

    def on_message(self, node, message: dict) -> None:
        if message.get("type") == PRE_VOTE:
            granted = self._would_vote(message)
            if not granted:
                self.refused += 1
            self._get("transport").send(node, {"type": PRE_VOTE_REPLY, "term": message["term"],
                                               "granted": granted})
        elif message.get("type") == PRE_VOTE_REPLY:
            if (message.get("granted") and self._asking_term is not None
                    and message.get("term") == self._asking_term + 1
                    and self.engine.raftCurrentTerm == self._asking_term):
                self._yes.add(getattr(node, "address", str(node)))
                self._count()

    def _would_vote(self, message: dict) -> bool:
        engine = self.engine
        try:
            term = int(message["term"])
            their_index, their_term = int(message["last_log_index"]), int(message["last_log_term"])
        except (KeyError, TypeError, ValueError):
            return False
        if term < engine.raftCurrentTerm:
            return False
        if self._get("raftState") == _LEADER:
            return False  # this leader is alive: it answers for itself
        if time.monotonic() - self.leader_seen < self.window:
            return False  # a leader was heard from just now
        last_index, last_term = self._last_log()
        return their_term > last_term or (their_term == last_term and their_index >= last_index)
