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
    """pysyncobj's mmap journal with an explicit msync policy.

    ``sync_interval_ms == 0``: every ``add`` is msynced before it returns, i.e. before the
    follower answers ``next_node_idx`` or the leader counts itself toward a commit.
    ``N > 0``: msync when N ms passed since the last one (checked on every add and by
    :meth:`sync_if_due`, which the tick thread calls), so a power cut loses at most ~N ms.
    A killed process loses nothing either way: the mmap lives in the page cache.
    """

    def __init__(self, path: str, sync_interval_ms: int):
        super().__init__(path)
        self._FileJournal__metaStorer = SyncedMetaStorer(path + ".meta")
        self._interval = sync_interval_ms / 1000.0
        self._dirty = False
        self._deferred = False
        self._last_sync = time.monotonic()
        self.syncs = 0

    def add(self, command, idx, term):
        super().add(command, idx, term)
        self._dirty = True
        if not self._deferred:
            self.sync_if_due()

    def deleteEntriesFrom(self, entryFrom):
        super().deleteEntriesFrom(entryFrom)
        self._dirty = True
        self.sync_if_due()

    def deleteEntriesTo(self, entryTo):
        # FileJournal rewrites the remaining entries through add(): one msync at the end.
        self._deferred = True
        try:
            super().deleteEntriesTo(entryTo)
        finally:
            self._deferred = False
        self._dirty = True
        self.sync()

    def clear(self):
        super().clear()
        self._dirty = True

    def sync_if_due(self) -> None:
        if self._dirty and (self._interval == 0
                            or time.monotonic() - self._last_sync >= self._interval):
            self.sync()

    def sync(self) -> None:
        if self._dirty:
            self._dirty = False
            self.flush()
            self.syncs += 1
        self._last_sync = time.monotonic()

    def onOneSecondTimer(self):
        super().onOneSecondTimer()
        self.sync_if_due()


@contextlib.contextmanager
def engine_patches(sync_interval_ms: int, authenticator: HmacAuthenticator, journals: list):
    """While a SyncObj is constructed: our journal factory and our frame authenticator."""
    def create_journal(journal_file=None):
        if journal_file is None:
            return _journal.MemoryJournal()
        journal = DurableJournal(journal_file, sync_interval_ms)
        journals.append(journal)
        return journal

    with _PATCH_LOCK:
        saved = (_syncobj.createJournal, _syncobj.getEncryptor, _syncobj.HAS_CRYPTO)
        _syncobj.createJournal = create_journal
        _syncobj.getEncryptor = lambda password: authenticator
        _syncobj.HAS_CRYPTO = True
        try:
            yield
        finally:
            _syncobj.createJournal, _syncobj.getEncryptor, _syncobj.HAS_CRYPTO = saved


# ------------------------------------------------------------- talking to a peer's Raft port

def _send(sock: socket.socket, auth: HmacAuthenticator, message) -> None:
    data = auth.encrypt_at_time(zlib.compress(_pickle.dumps(message), 3), int(time.monotonic()))
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


def query_status(address: str, auth: HmacAuthenticator, command: str = "tqstatus",
                 timeout: float = 0.5):
    """Call utility ``command`` on the peer whose Raft port is ``address``; its reply."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.settimeout(timeout)
        my_key = os.urandom(32)
        _send(sock, auth, my_key)
        echoed, their_key = _recv(sock, auth)
        if echoed != my_key:
            raise InvalidFrame("handshake key mismatch")
        _send(sock, auth, (their_key, [command]))
        echoed, reply = _recv(sock, auth)
        if echoed != my_key:
            raise InvalidFrame("reply key mismatch")
        return reply
