"""Cheap framing for pysyncobj's peer messages: zlib streams without zlib's per-call setup.

pysyncobj 0.3.17 frames every peer message as ``zlib.compress(pickle.dumps(message), 3)``.
On this project's hosts one ``zlib.compress`` call costs ~150 µs whatever its input size
(deflateInit allocates and clears its window and hash tables every call), while pickling
the message takes ~5 µs. A cluster commit frames at least six messages (two AppendEntries,
their two answers, the two that carry the new commit index), three of them on the
client's critical path: zlib setup was the largest single cost of a commit
(docs/performance.md, "A cluster commit, stage by stage").

:func:`compress` keeps the wire format — the receiver still runs ``zlib.decompress`` — but
writes messages below :data:`COMPRESS_FROM` bytes as *stored* deflate blocks (RFC 1950 /
1951: a two-byte header, blocks of up to 65,535 raw bytes, an Adler-32 trailer): a few
µs, byte-for-byte what any zlib inflates. Larger messages (group-committed entries, snapshot
chunks) are still compressed, at level 1, where the setup is small next to the work and the
bytes saved matter on a real network. Peers running stock pysyncobj framing and peers
running this one understand each other.
"""

from __future__ import annotations

import struct
import zlib

COMPRESS_FROM = 16 << 10
_HEADER = b"\x78\x01"  # deflate, 32 KB window, no dictionary, "fastest" (FCHECK valid)
_STORED_MAX = 0xFFFF


def stored(data: bytes) -> bytes:
    """``data`` as a valid zlib stream of stored (uncompressed) deflate blocks."""
    view = memoryview(data)
    parts = [_HEADER]
    size = len(data)
    pos = 0
    while True:
        chunk = view[pos:pos + _STORED_MAX]
        n = len(chunk)
        last = pos + n >= size
        parts.append(struct.pack("<BHH", 1 if last else 0, n, n ^ 0xFFFF))
        parts.append(chunk)
        pos += n
        if last:
            break
    parts.append(struct.pack(">I", zlib.adler32(data)))
    return b"".join(parts)


def compress(data: bytes, level: int = -1) -> bytes:
    """What pysyncobj's framing calls ``zlib.compress``: stored blocks for small messages,
    level-1 deflate for large ones (``level`` is ignored)."""
    if len(data) < COMPRESS_FROM:
        return stored(data)
    return zlib.compress(data, 1)


class _ZlibForFrames:
    """Stands in for the ``zlib`` module inside ``pysyncobj.tcp_connection`` only."""

    compress = staticmethod(compress)
    decompress = staticmethod(zlib.decompress)

    def __getattr__(self, name):
        return getattr(zlib, name)


def install() -> None:
    """Make pysyncobj's TCP framing use :func:`compress` (idempotent, process-wide)."""
    from pysyncobj import tcp_connection
    if not isinstance(tcp_connection.zlib, _ZlibForFrames):
        tcp_connection.zlib = _ZlibForFrames()
