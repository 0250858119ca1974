"""The pieces of pysyncobj 0.3.17 that we replace: journal durability and peer authentication.

pysyncobj is pinned (pyproject) because this module reaches into it in three places, all
checked against the 0.3.17 source:

* ``pysyncobj.syncobj.createJournal`` is a module-level factory; :func:`engine_patches`
  swaps in :class:`DurableJournal` while a ``SyncObj`` is being built, so that
  ``persistence.wal_sync_interval_ms`` governs the Raft journal (0: msync every appended
  entry before the node answers its leader or counts itself in a commit; N: at most every
  N ms) and the term/vote meta file is fsynced before any vote is sent.
* ``pysyncobj.syncobj.getEncryptor`` / ``HAS_CRYPTO``: pysyncobj's ``password`` option needs
  the ``cryptography`` package (Fernet). We do not depend on it: :class:`HmacAuthenticator`
  offers the same three methods and authenticates every frame with HMAC-SHA256 under a key
  derived from ``raft.secret``. A frame whose MAC does not verify is dropped (and the
  connection closed) *before* pysyncobj unpickles it. Frames are authenticated, not
  encrypted: run Raft traffic on a private network (docs/clustering.md).
* :func:`query_status` speaks pysyncobj's wire format (length, MAC'd zlib'd pickle, the
  random-key handshake) to call a utility command on a peer's Raft port.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import socket
import struct
import threading
import time
import zlib

from pysyncobj import journal as _journal
from pysyncobj import pickle as _pickle
from pysyncobj import syncobj as _syncobj

from broker.log import raft_frames

_PATCH_LOCK = threading.Lock()

MAGIC = b"TQR1"
_HEAD = len(MAGIC) + 8
_MAC = 32


class InvalidFrame(Exception):
    pass


class HmacAuthenticator:
    """Stands in for pysyncobj's Fernet encryptor: ``encrypt_at_time``, ``extract_timestamp``
    and ``decrypt``, with HMAC-SHA256 authentication only."""

    def __init__(self, secret: str | bytes):
        if isinstance(secret, str):
            secret = secret.encode()
        if not secret:
            raise ValueError("raft.secret is empty")
        self._key = hashlib.pbkdf2_hmac("sha256", secret, b"task-queue raft frames v1", 100_000)
        self._cache = (None, None)  # (last verified frame, its body): one assignment, atomic

    def encrypt_at_time(self, data: bytes, timestamp: int) -> bytes:
        body = MAGIC + struct.pack(">Q", max(0, int(timestamp))) + data
        return body + hmac.new(self._key, body, hashlib.sha256).digest()

    def _verify(self, token: bytes) -> bytes:
        cached = self._cache
        if cached[0] is token:
            return cached[1]
        if len(token) < _HEAD + _MAC or token[:len(MAGIC)] != MAGIC:
            raise InvalidFrame("not an authenticated frame")
        body = token[:-_MAC]
        expected = hmac.new(self._key, body, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, token[-_MAC:]):
            raise InvalidFrame("bad MAC (wrong raft.secret?)")
        self._cache = (token, body)
        return body

    def extract_timestamp(self, token: bytes) -> int:
        return struct.unpack(">Q", self._verify(token)[len(MAGIC):_HEAD])[0]

    def decrypt(self, token: bytes) -> bytes:
        body = self._verify(token)
        self._cache = (None, None)
        return body[_HEAD:]


class SyncedMetaStorer(_journal.MetaStorer):
    """The term/vote file, fsynced (file and directory) before the rename counts."""

    def __init__(self, path: str):
        super().__init__(path)
        self._file = path

    def storeMeta(self, meta) -> None:
        tmp = self._file + ".tmp"
        with open(tmp, "wb") as f:
            f.write(_pickle.dumps(meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._file)
        _fsync_dir(os.path.dirname(self._file) or ".")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableJournal(_journal.FileJournal):
    """pysyncobj's mmap journal with an explicit msync policy and crash-safe rewrites.

    Durability (``sync_interval_ms``): ``0`` fsyncs every appended entry before ``add``
    returns, i.e. before a follower answers ``next_node_idx`` or the leader counts itself
    toward a commit; ``N > 0``: the owner calls :meth:`sync_from_other_thread` every N ms
    from a background thread, so a power cut loses at most ~N ms and the Raft thread never
    waits for the disk. A killed process loses nothing either way: the mmap lives in the
    page cache.

    Crash safety. pysyncobj 0.3.17 rewrites the journal in place in three places, and a
    SIGKILL inside the rewrite loses entries this node already acknowledged to its leader
    (which can lose a committed entry if the leader dies too):

    * a follower truncates its log after ``prevLogIdx`` whenever it holds more entries, not
      only on a term conflict, then re-appends the same entries (the "truncating
      already-applied log entries" warning). Here a truncation is *logical*: the entries stay
      in the file as a pending tail; an ``add`` of an identical entry re-adopts it without
      touching the file; only a different entry makes the truncation physical.
    * log compaction (``deleteEntriesTo``) cleared the file and re-added the kept entries:
      here a new file is written, fsynced and renamed over the old one.
    * loading a snapshot ``clear()``s the journal and adds the snapshot's last two entries.
      When the journal already holds those two entries, the entries after them are kept:
      all of them for this node's own snapshot at start-up (compaction interrupted by a
      crash), and for a snapshot received from a leader only the run of entries of the
      leader's current term (``retain_term``). pysyncobj re-sends snapshots to followers
      that already have them (stale ``next_node_idx`` replies reset the leader's next
      index) and then reports the follower's whole journal as matching the leader's: an
      entry of the current term can only have come from that leader, so it is safe to
      keep and report; dropping it would make the follower forget entries it already
      acknowledged (and which may have been committed counting it).
    """

    def __init__(self, path: str, sync_interval_ms: int):
        super().__init__(path)
        self._path = path
        self._FileJournal__metaStorer = SyncedMetaStorer(path + ".meta")
        self._interval = sync_interval_ms / 1000.0
        self._dirty = False
        self._last_sync = time.monotonic()
        self._tail: list = []  # logically truncated, physically present entries
        self._cleared: list | None = None  # entries of a pending clear()
        self._readopt = False  # re-adopt the whole tail at the next read (after a restore)
        self.keep_after_snapshot = True
        self.retain_term = None  # None: keep every entry after the snapshot (start-up)
        self.syncs = 0
        self.readopted = 0

    # -- the logical view
    @property
    def _entries(self) -> list:
        return self._FileJournal__journal

    def _settle_view(self) -> None:
        if self._readopt:
            self._readopt = False
            self._entries.extend(self._tail)
            self.readopted += len(self._tail)
            self._tail = []
        if self._cleared is not None:  # a clear() nothing was added after: make it real
            self._cleared = None
            self._tail = []
            super().clear()
            self._dirty = True
            self.sync_if_due()

    def __getitem__(self, item):
        if self._readopt or self._cleared is not None:
            self._settle_view()
        return self._entries[item]

    def __len__(self):
        if self._readopt or self._cleared is not None:
            self._settle_view()
        return len(self._entries)

    def _realize_tail(self) -> None:
        """Make a pending truncation physical (a conflicting entry is about to be added)."""
        if self._tail:
            entries = self._entries
            keep = len(entries)
            entries.extend(self._tail)
            self._tail = []
            super().deleteEntriesFrom(keep)
            self._dirty = True

    @staticmethod
    def _same(entry, command, idx, term) -> bool:
        return entry[1] == idx and entry[2] == term and bytes(entry[0]) == bytes(command)

    def add(self, command, idx, term):
        if self._cleared is not None:
            old, self._cleared = self._cleared, None
            for pos, entry in enumerate(old):
                if self._same(entry, command, idx, term):
                    # Restore what the file holds, drop only the entries before this one
                    # (crash-safe rewrite), keep the rest as a tail to re-adopt.
                    cut = pos + 2
                    while cut < len(old) and (self.retain_term is None
                                              or old[cut][2] == self.retain_term):
                        cut += 1
                    self._entries[:] = old[:cut]
                    self._compact(pos)
                    self._tail = self._entries[1:]
                    del self._entries[1:]
                    self._readopt = True
                    return
            self._tail = []
            super().clear()
        if self._tail:
            if self._same(self._tail[0], command, idx, term):
                self._entries.append(self._tail.pop(0))
                return
            self._readopt = False
            self._realize_tail()
        elif self._readopt:
            self._readopt = False
        super().add(command, idx, term)
        self._dirty = True
        self.sync_if_due()

    def deleteEntriesFrom(self, entryFrom):
        self._settle_view()
        if self._tail:
            self._realize_tail()
        entries = self._entries
        if entryFrom >= len(entries):
            return
        self._tail = entries[entryFrom:]
        del entries[entryFrom:]

    def deleteEntriesTo(self, entryTo):
        self._settle_view()
        self._realize_tail()
        self._compact(entryTo)

    def clear(self):
        self._settle_view()
        self._realize_tail()
        if not self.keep_after_snapshot:
            super().clear()
            self._dirty = True
            return
        self._cleared = list(self._entries)
        del self._entries[:]

    def _compact(self, entry_to: int) -> None:
        """Keep entries[entry_to:]: write a new file, fsync, rename over the old one."""
        keep = self._entries[entry_to:]
        records = []
        offset = _journal.FIRST_RECORD_OFFSET
        for command, idx, term in keep:
            data = struct.pack("<QQ", idx, term) + _pickle.to_bytes(command)
            size = struct.pack("<I", len(data))
            records.append(size + data + size)
            offset += len(data) + 8
        header = bytearray(self._FileJournal__getDefaultHeader())
        header[_journal.LAST_RECORD_OFFSET_OFFSET:_journal.LAST_RECORD_OFFSET_OFFSET + 4] = \
            struct.pack("<I", offset)
        tmp = self._path + ".compact"
        with open(tmp, "wb") as f:
            f.write(bytes(header))
            for record in records:
                f.write(record)
            f.flush()
            os.fsync(f.fileno())
        self._FileJournal__journalFile._destroy()
        os.replace(tmp, self._path)
        _fsync_dir(os.path.dirname(self._path) or ".")
        self._FileJournal__journalFile = _journal.ResizableFile(
            self._path, defaultContent=self._FileJournal__getDefaultHeader())
        self._entries[:] = keep
        self._FileJournal__currentOffset = offset
        self._last_sync = time.monotonic()

    # -- durability
    def sync_if_due(self) -> None:
        """Tick thread: with ``sync_interval_ms == 0``, fsync what was just written."""
        if self._dirty and self._interval == 0:
            self.sync()

    def sync(self) -> None:
        """fsync the journal file (the mmap's dirty pages are the file's page cache).

        os.fsync releases the GIL; mmap.flush (msync) would hold it for the whole write.
        """
        if self._dirty:
            self._dirty = False
            os.fsync(self._FileJournal__journalFile._ResizableFile__f.fileno())
            self.syncs += 1
        self._last_sync = time.monotonic()

    def sync_from_other_thread(self) -> None:
        """Background sync for ``sync_interval_ms > 0``: fsync through a fresh descriptor,
        so it never touches the mmap or file object the tick thread may be replacing."""
        if not self._dirty:
            return
        self._dirty = False
        fd = os.open(self._path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.syncs += 1
        self._last_sync = time.monotonic()


@contextlib.contextmanager
def engine_patches(sync_interval_ms: int, authenticator: HmacAuthenticator, journals: list,
                   poller=None):
    """While a SyncObj is constructed: our journal factory, our frame authenticator and,
    when given, the poller it uses (raft_loop.LoopPoller: the tick runs on the loop)."""
    def create_journal(journal_file=None):
        if journal_file is None:
            return _journal.MemoryJournal()
        journal = DurableJournal(journal_file, sync_interval_ms)
        journals.append(journal)
        return journal

    raft_frames.install()  # cheap frame compression, same wire format (raft_frames.py)
    with _PATCH_LOCK:
        saved = (_syncobj.createJournal, _syncobj.getEncryptor, _syncobj.HAS_CRYPTO,
                 _syncobj.createPoller)
        _syncobj.createJournal = create_journal
        _syncobj.getEncryptor = lambda password: authenticator
        _syncobj.HAS_CRYPTO = True
        if poller is not None:
            _syncobj.createPoller = lambda poller_type: poller
        try:
            yield
        finally:
            (_syncobj.createJournal, _syncobj.getEncryptor, _syncobj.HAS_CRYPTO,
             _syncobj.createPoller) = saved


# ------------------------------------------------------------- talking to a peer's Raft port

def _send(sock: socket.socket, auth: HmacAuthenticator, message) -> None:
    data = auth.encrypt_at_time(raft_frames.compress(_pickle.dumps(message)),
                                int(time.monotonic()))
    sock.sendall(struct.pack("i", len(data)) + data)


def _recv(sock: socket.socket, auth: HmacAuthenticator, limit: int = 4 << 20):
    def exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            buf += chunk
        return buf
    (size,) = struct.unpack("i", exactly(4))
    if not 0 < size <= limit:
        raise InvalidFrame(f"frame of {size} bytes")
    payload = auth.decrypt(exactly(size))  # verified before anything is unpickled
    return _pickle.loads(zlib.decompress(payload))


def utility(address: str, auth: HmacAuthenticator, args: list, timeout: float = 0.5):
    """Call a pysyncobj utility command (``["status"]``, ``["add", "h:p"]``, ``["remove",
    "h:p"]``, ``["transfer"]``, our ``["tqstatus"]``) on the node whose Raft port is
    ``address``; return its reply."""
    from broker.log.raft_peer_guard import FrameSequence  # imports this module

    auth = FrameSequence(auth, address)  # numbered frames, as the peer port requires
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=min(timeout, 2.0)) as sock:
        sock.settimeout(timeout)
        my_key = os.urandom(32)
        _send(sock, auth, my_key)
        echoed, their_key = _recv(sock, auth)
        if echoed != my_key:
            raise InvalidFrame("handshake key mismatch")
        _send(sock, auth, (their_key, list(args)))
        echoed, reply = _recv(sock, auth)
        if echoed != my_key:
            raise InvalidFrame("reply key mismatch")
        return reply


def query_status(address: str, auth: HmacAuthenticator, command: str = "tqstatus",
                 timeout: float = 0.5):
    """Our node status from the peer whose Raft port is ``address``."""
    return utility(address, auth, [command], timeout)
