"""The Raft peer port's defences, around pysyncobj 0.3.17's TCP transport.

pysyncobj reads a frame as a 4-byte length and then that many bytes, and checks the frame's
MAC (:class:`broker.log.raft_engine.HmacAuthenticator`) only once the whole frame is in.
Anyone who can reach the Raft port could therefore make a node buffer up to 2 GiB, hold
connections open forever without saying anything, and (on the path between two nodes)
replay a frame inside a connection: pysyncobj only checks that a frame's whole-second
timestamp is ``>=`` the previous one. :class:`PeerGuardTransport` is the transport the
engine runs on (``broker.log.raft._GuardedTransport`` derives from it); it adds:

* **Frame caps, before any MAC check.** A connection is *unauthenticated* until a frame
  carrying the random key this node chose for that connection has verified (pysyncobj's
  handshake: the peer proves it holds ``raft.secret`` *now*, a recorded frame cannot do
  that). Until then a declared length above :data:`UNAUTHENTICATED_FRAME_CAP` closes the
  connection, and at most one such frame is read from the socket. After it, the cap is
  :func:`authenticated_frame_cap` (what a leader can really send: one AppendEntries batch).
* **Handshake deadline.** A connection that has not authenticated
  :data:`HANDSHAKE_TIMEOUT_SECS` after it was opened is closed (checked every tick), and at
  most :data:`MAX_UNAUTHENTICATED` of them are kept (the oldest goes first).
* **Replay protection.** Every connection numbers its frames 1, 2, 3, ... in the field that
  pysyncobj filled with a timestamp (:class:`FrameSequence`); a frame whose number is not
  the next one is dropped with the connection. Brokers of the previous version send
  timestamps: a connection whose first frame is not number 1 is accepted in that legacy
  mode (so a rolling upgrade works) and a warning names the peer.
* **AppendEntries pre-filter** (:func:`prefilter_append_entries`): see there.

Every refusal is logged (WARNING, at most once per :data:`LOG_EVERY_SECS` per kind and peer)
and counted in :data:`refusals` (``tq_raft_peer_refusals_total{reason}``), every one: the log
line is rate-limited, the count is not.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import Counter

from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from broker.log.raft_engine import HmacAuthenticator, InvalidFrame

log = logging.getLogger("tq.log.raft.peer")

# Handshake frames are a 32-byte random key, then (key, address) or (key, utility command):
# about a hundred bytes each. 64 KiB leaves room and bounds what a stranger costs us.
UNAUTHENTICATED_FRAME_CAP = 64 << 10
MIN_FRAME = 4 + 8 + 32  # HmacAuthenticator: magic, sequence number, MAC
HANDSHAKE_TIMEOUT_SECS = 5.0
MAX_UNAUTHENTICATED = 32
# An authenticated peer's buffered input: at most one frame, or this much read ahead of parsing.
READ_AHEAD_BYTES = 4 << 20
LOG_EVERY_SECS = 60.0
_LEGACY = "legacy"

# A refusal's kind (as logged) -> its metric label. "legacy" is a warning, not a refusal.
REFUSAL_REASONS = {
    "frame size": "frame_too_large",
    "replay": "frame_out_of_sequence",
    "bad frame": "failed_authentication",
    "too many": "too_many_unauthenticated",
    "handshake timeout": "handshake_timeout",
}
# Connections refused since start, by metric label; one broker per process, so per node.
refusals: Counter[str] = Counter()


def authenticated_frame_cap(append_entries_batch_bytes: int) -> int:
    """The largest frame an authenticated peer may declare.

    pysyncobj fills an AppendEntries with entries until their total reaches
    ``appendEntriesBatchSizeBytes`` (an entry of that size or more is sent in chunks of that
    size), so a batch stays below twice that; pickling and zlib add far less than 1 MiB.
    """
    return 2 * append_entries_batch_bytes + (1 << 20)


class FrameSequence:
    """One connection's view of :class:`HmacAuthenticator`: frames numbered 1, 2, 3, ...

    pysyncobj calls ``encrypt_at_time(data, now)`` and ``extract_timestamp(frame)`` and
    requires the latter not to decrease; we put a per-connection counter where it put the
    time and require each received frame to carry the next number, so a frame replayed,
    dropped or reordered inside a connection ends it. (Across connections the random keys of
    pysyncobj's handshake already bind frames to their connection.)
    """

    def __init__(self, auth: HmacAuthenticator, peer: str = "?"):
        self._auth = auth
        self.peer = peer
        self.reset()

    def reset(self) -> None:
        """A new socket: numbering starts again on both sides."""
        self.sent = 0
        self.received = 0
        self.mode = None  # None until the first frame: "counter" or legacy
        self.refused = ""  # why the last frame was refused, for the log

    def encrypt_at_time(self, data: bytes, timestamp: int = 0) -> bytes:
        self.sent += 1
        return self._auth.encrypt_at_time(data, self.sent)

    def extract_timestamp(self, token: bytes) -> int:
        try:
            number = self._auth.extract_timestamp(token)  # verifies the MAC first
        except InvalidFrame as exc:
            self.refused = str(exc)  # pysyncobj swallows the exception: keep why
            raise
        if self.mode is None:
            # A broker of the previous version sends monotonic seconds (never 1 on a host
            # that has been up for more than a second): accept that peer, say so.
            self.mode = "counter" if number == 1 else _LEGACY
            if self.mode == _LEGACY:
                _warn("legacy", self.peer, "Raft peer %s sends timestamped frames (a broker "
                      "of an older version): frames replayed inside its connections are not "
                      "detected until it is upgraded", self.peer)
        if self.mode == _LEGACY:
            if number < self.received:
                self.refused = "frame older than the previous one"
                raise InvalidFrame(self.refused)
        elif number != self.received + 1:
            _warn("replay", self.peer, "Raft peer %s: frame number %d where %d was due "
                  "(replayed or reordered frame); connection closed",
                  self.peer, number, self.received + 1)
            self.refused = "frame out of sequence"
            raise InvalidFrame(self.refused)
        self.received = number
        return number

    def decrypt(self, token: bytes) -> bytes:
        return self._auth.decrypt(token)


_last_warned: dict[tuple[str, str], float] = {}


def _warn(kind: str, peer: str, message: str, *args) -> None:
    if kind in REFUSAL_REASONS:
        refusals[REFUSAL_REASONS[kind]] += 1
    now = time.monotonic()
    key = (kind, peer.rpartition(":")[0])
    if now - _last_warned.get(key, -LOG_EVERY_SECS) >= LOG_EVERY_SECS:
        _last_warned[key] = now
        if len(_last_warned) > 1000:  # many sources: forget the old ones
            _last_warned.clear()
        log.warning(message, *args)


class _ConnectionGuard:
    """What :class:`PeerGuardTransport` knows about one TcpConnection (one socket at a time:
    pysyncobj reuses an outgoing connection object for every reconnect)."""

    def __init__(self, conn, auth: HmacAuthenticator, peer: str, authenticated_cap: int,
                 incoming: bool):
        self.conn = conn
        self.peer = peer
        self.incoming = incoming  # accepted: never reused; outgoing: reconnects
        self.frames = FrameSequence(auth, peer)
        self.authenticated_cap = authenticated_cap
        self.opened = time.monotonic()
        self.authenticated = False
        self.overdue = False
        conn.encryptor = self.frames
        # pysyncobj calls these through the instance (self.__processRead() is looked up as
        # conn._TcpConnection__processRead), so instance attributes wrap them.
        self._read = conn._TcpConnection__processRead
        self._parse = conn._TcpConnection__processParseMessage
        conn._TcpConnection__processRead = self.read
        conn._TcpConnection__processParseMessage = self.parse

    def restart(self) -> None:
        self.frames.reset()
        self.opened = time.monotonic()
        self.authenticated = False
        self.overdue = False

    def cap(self) -> int:
        return self.authenticated_cap if self.authenticated else UNAUTHENTICATED_FRAME_CAP

    def refuse(self, kind: str, message: str, *args) -> None:
        _warn(kind, self.peer, message, *args)
        self.conn.disconnect()

    def read(self) -> bool:
        """One recv() of pysyncobj's read loop; False stops the loop until the next poll."""
        conn = self.conn
        buffered = len(conn._TcpConnection__readBuffer)
        if buffered >= 4:
            (declared,) = struct.unpack("i", conn._TcpConnection__readBuffer[:4])
            cap = self.cap()
            if not MIN_FRAME <= declared <= cap:
                self.refuse("frame size", "Raft peer %s declared a frame of %d bytes (limit "
                            "%d %s authentication); connection closed", self.peer, declared,
                            cap, "after" if self.authenticated else "before")
                return False
            if buffered >= 4 + declared and buffered >= (
                    READ_AHEAD_BYTES if self.authenticated else 0):
                return False  # a whole frame waits: parse before reading more
        if self.authenticated:
            return self._read()
        # Before authentication: never more than one capped frame in memory.
        budget = UNAUTHENTICATED_FRAME_CAP + 4 - buffered
        saved = conn._TcpConnection__recvBufferSize
        conn._TcpConnection__recvBufferSize = max(1, min(saved, budget))
        try:
            return self._read()
        finally:
            conn._TcpConnection__recvBufferSize = saved

    def parse(self):
        conn = self.conn
        # A frame that verifies *and* carries our random key for this connection (pysyncobj
        # checks it whenever recvRandKey is set) proves the peer holds the secret now.
        proves = conn.recvRandKey is not None
        was_connected = conn.state != CONNECTION_STATE.DISCONNECTED
        self.frames.refused = ""
        message = self._parse()
        if message is not None:
            if proves:
                self.authenticated = True
        elif was_connected and conn.state == CONNECTION_STATE.DISCONNECTED \
                and self.frames.refused != "frame out of sequence":  # logged already
            why = self.frames.refused or "authentic, but another connection's or undecodable"
            _warn("bad frame", self.peer, "Raft peer %s sent a frame that failed "
                  "authentication (%s); connection closed", self.peer, why)
        return message


def _peer_name(conn) -> str:
    try:
        host, port = conn._TcpConnection__socket.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, AttributeError, ValueError):
        return "?"


class PeerGuardTransport(TCPTransport):
    """pysyncobj's TCPTransport with the defences described in the module docstring."""

    def __init__(self, syncObj, selfNode, otherNodes):
        self._guards: dict[int, _ConnectionGuard] = {}  # id(conn) -> guard, live conns only
        self._auth = syncObj.encryptor
        self._frame_cap = authenticated_frame_cap(syncObj.conf.appendEntriesBatchSizeBytes)
        self._reply_next_idx = None
        self.resent_entries_skipped = 0
        super().__init__(syncObj, selfNode, otherNodes)

    # -- connections
    def _guard(self, conn, peer: str, incoming: bool) -> _ConnectionGuard:
        guard = _ConnectionGuard(conn, self._auth, peer, self._frame_cap, incoming)
        self._guards[id(conn)] = guard
        return guard

    def _onNewIncomingConnection(self, conn):
        super()._onNewIncomingConnection(conn)
        if self._auth is None:
            return
        self._guard(conn, _peer_name(conn), incoming=True)
        strangers = sorted((g for g in self._guards.values()
                            if not g.authenticated and g.conn in self._unknownConnections),
                           key=lambda g: g.opened)
        for guard in strangers[:max(0, len(strangers) - MAX_UNAUTHENTICATED)]:
            guard.refuse("too many", "more than %d unauthenticated Raft peer connections: "
                         "closing the oldest, from %s", MAX_UNAUTHENTICATED, guard.peer)

    def addNode(self, node):
        super().addNode(node)
        conn = self._connections.get(node)
        if self._auth is None or conn is None or id(conn) in self._guards:
            return
        guard = self._guard(conn, getattr(node, "address", str(node)), incoming=False)
        connect = conn.connect

        def guarded_connect(host, port):
            guard.restart()
            return connect(host, port)

        conn.connect = guarded_connect

    def _onDisconnected(self, conn):
        guard = self._guards.get(id(conn))
        if guard is not None and guard.incoming and guard.conn is conn:
            del self._guards[id(conn)]
        super()._onDisconnected(conn)

    def dropNode(self, node):
        conn = self._connections.get(node)
        super().dropNode(node)
        if conn is not None:
            self._guards.pop(id(conn), None)

    def _onTick(self):
        super()._onTick()
        self._close_overdue()

    def _close_overdue(self) -> None:
        """Close connections still unauthenticated after the handshake deadline.

        Tick callbacks run before the poller reads the sockets, so a connection is marked
        overdue on one tick and closed on the next if it still has not authenticated: a tick
        thread that stalled past the deadline does not drop a peer whose handshake is waiting
        in the socket."""
        deadline = time.monotonic() - HANDSHAKE_TIMEOUT_SECS
        for guard in list(self._guards.values()):
            if guard.authenticated or guard.opened > deadline \
                    or guard.conn.state == CONNECTION_STATE.DISCONNECTED:
                continue
            if not guard.overdue:
                guard.overdue = True
                continue
            guard.refuse("handshake timeout", "Raft peer connection %s did not authenticate "
                         "within %.0f s; closed", guard.peer, HANDSHAKE_TIMEOUT_SECS)

    # -- AppendEntries pre-filter
    def setOnMessageReceivedCallback(self, callback):
        if callback is None:
            return super().setOnMessageReceivedCallback(None)

        def prefiltered(node, message):
            if isinstance(message, dict) and message.get("type") == "append_entries":
                message = self._prefilter(message)
            try:
                callback(node, message)
            finally:
                self._reply_next_idx = None

        super().setOnMessageReceivedCallback(prefiltered)

    def _prefilter(self, message: dict) -> dict:
        syncobj = self._syncObj
        if message.get("term", -1) < syncobj._SyncObj__raftCurrentTerm:
            return message  # pysyncobj ignores it
        journal = syncobj._SyncObj__raftLog
        filtered, reply, skipped = prefilter_append_entries(message, journal)
        self.resent_entries_skipped += skipped
        self._reply_next_idx = reply
        if filtered is not message and filtered["entries"] and \
                filtered["prevLogIdx"] < journal[-1][1]:
            first = filtered["entries"][0]
            applied = syncobj._SyncObj__raftLastApplied
            if first[1] > applied:  # an applied one is pysyncobj's CRITICAL, and deserves it
                log.info("replacing %d uncommitted log entries from index %d (term %d) with "
                         "the leader's (term %d): normal after a leader change",
                         journal[-1][1] - filtered["prevLogIdx"], first[1],
                         _term_at(journal, first[1]), first[2])
        return filtered

    def send(self, node, message):
        reply = self._reply_next_idx
        if reply is not None and isinstance(message, dict) \
                and message.get("type") == "next_node_idx" and message.get("success"):
            self._reply_next_idx = None
            message = dict(message, next_node_idx=reply)
        return super().send(node, message)


def _term_at(journal, idx: int):
    first = journal[0][1]
    if first <= idx <= journal[-1][1]:
        return journal[idx - first][2]
    return None


def prefilter_append_entries(message: dict, journal) -> tuple[dict, int | None, int]:
    """Keep Raft's log-matching rule where pysyncobj 0.3.17 does not.

    pysyncobj's follower deletes every entry after ``prevLogIdx`` whenever it holds more,
    then appends the message's entries: the same entries, most of the time. A leader sends
    entries as soon as they are appended, several messages in flight, and sets the follower's
    next index to what each *reply* says: a reply to an earlier message moves it back, and the
    leader re-sends entries the follower holds and may already have applied (pysyncobj then
    logs ``CRITICAL truncating already-applied log entries ... may have diverged``; after a
    paused or partitioned follower catches up, hundreds of entries deep). Raft says an entry
    with the same index and term *is* the same entry: keep it, and truncate only from the
    first entry that conflicts.

    ``journal`` is the follower's log (``journal[k] = (command, idx, term)``). Returns
    ``(message, reply_next_idx, skipped)``: the message pysyncobj should process (``message``
    itself when nothing changes), the ``next_node_idx`` its success reply must carry instead
    of pysyncobj's (or None), and how many entries were dropped as already held.

    * Entries the log already holds (same index and term) are dropped from the message and
      ``prevLogIdx`` moves to the last of them; what is left starts at the first conflict.
    * If nothing is left and the log holds more after that point, the message becomes a
      heartbeat at the log's own last entry (pysyncobj truncates nothing there), its commit
      index is capped at the last entry the leader vouched for, and the reply says that entry
      (the leader must not count entries it did not check).
    """
    if "prevLogIdx" not in message or "transmission" in message or not len(journal):
        return message, None, 0
    prev, entries = message["prevLogIdx"], list(message.get("entries") or ())
    first, last = journal[0][1], journal[-1][1]
    if not first <= prev <= last or journal[prev - first][2] != message["prevLogTerm"]:
        return message, None, 0  # pysyncobj answers "no match"
    matched = 0
    for entry in entries:
        idx = entry[1]
        if idx != prev + matched + 1:
            return message, None, 0  # not contiguous: not something we reason about
        if idx > last or journal[idx - first][2] != entry[2]:
            break
        matched += 1
    verified = prev + matched
    if verified == last and matched == 0:
        return message, None, 0  # appends at the end: nothing to filter
    if matched < len(entries) or verified == last:
        prev_term = journal[verified - first][2]
        return (dict(message, prevLogIdx=verified, prevLogTerm=prev_term,
                     entries=entries[matched:]), None, matched)
    # Every entry is held and the log goes on after them.
    return (dict(message, prevLogIdx=last, prevLogTerm=journal[-1][2], entries=[],
                 commit_index=min(message["commit_index"], verified)), verified + 1, matched)
