"""RESP2 codec: the one implementation of the wire format, used by the broker and every client.

Two incremental parsers live here:

* :class:`RequestParser` (broker side) accepts what clients send: arrays of bulk strings, plus
  the inline ``PING``/``QUIT`` a human types into telnet. It enforces hard limits *before*
  allocating, because its input comes from the network: a frame announcing a 2 GiB bulk or a
  billion-element array is rejected on its header, not buffered.
* :class:`ReplyParser` (client side) accepts what the broker sends: simple strings, errors,
  integers, bulk strings and arrays.

Both are fed bytes as they arrive and yield complete messages; neither does any I/O.
The encoders are plain functions. Pure Python on purpose: a worker host needs no compiler and
no extra package, and the hot path cost is dominated by what a command does, not by framing.
"""

from __future__ import annotations

from dataclasses import dataclass

CRLF = b"\r\n"

MAX_ARRAY_ELEMENTS = 16
DEFAULT_MAX_BULK_BYTES = 16 * 1024 * 1024
MAX_HEADER_BYTES = 64  # "*16\r\n", "$16777216\r\n": a header line never needs more
MAX_INLINE_BYTES = 1024


class ProtocolError(Exception):
    """The byte stream is not valid RESP: the connection cannot be resynchronised.

    ``code`` is the error code the broker replies with before closing (BADREQ or TOOLARGE).
    """

    def __init__(self, message: str, code: str = "BADREQ"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Error:
    """A RESP error reply, ``-CODE message``, as the client parser returns it."""

    code: str
    message: str


class RequestParser:
    """Incremental parser for client requests (arrays of bulk strings).

    ``feed(data)`` buffers bytes; ``get()`` returns the next complete request as a list of
    ``bytes`` or ``None`` when more input is needed, and raises :class:`ProtocolError` on
    malformed or oversized input.
    """

    __slots__ = ("_buf", "_pos", "max_bulk_bytes", "max_elements", "last_inline")

    def __init__(self, max_bulk_bytes: int = DEFAULT_MAX_BULK_BYTES,
                 max_elements: int = MAX_ARRAY_ELEMENTS):
        self._buf = bytearray()
        self._pos = 0
        # Whether the request get() returned last was an inline command (the broker takes
        # only PING and QUIT inline, docs/protocol.md).
        self.last_inline = False
        self.max_bulk_bytes = max_bulk_bytes
        self.max_elements = max_elements

    def feed(self, data: bytes) -> None:
        if self._pos:
            # Drop consumed bytes before growing, so the buffer holds at most one
            # partial frame plus the newest read.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def _line(self, start: int, limit: int) -> tuple[bytes, int] | None:
        """The header line starting at ``start`` (without CRLF) and the offset after it."""
        buf = self._buf
        end = buf.find(CRLF, start, start + limit + 2)
        if end < 0:
            if len(buf) - start > limit + 1:
                raise ProtocolError("header line too long")
            return None
        return bytes(buf[start:end]), end + 2

    @staticmethod
    def _int(raw: bytes, what: str) -> int:
        # int() would accept " 12", "+12", "1_2": the wire format allows only digits.
        if not raw or not (raw.isdigit() or (raw[:1] == b"-" and raw[1:].isdigit())):
            raise ProtocolError(f"invalid {what} {raw[:20]!r}")
        return int(raw)

    def get(self) -> list[bytes] | None:
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            return None
        if buf[pos] != 0x2A:  # not '*': an inline command
            return self._get_inline(pos)
        self.last_inline = False
        head = self._line(pos + 1, MAX_HEADER_BYTES)
        if head is None:
            return None
        count = self._int(head[0], "array length")
        if count < 1 or count > self.max_elements:
            raise ProtocolError(f"array of {count} elements (allowed 1..{self.max_elements})")
        cursor = head[1]
        args: list[bytes] = []
        for _ in range(count):
            if cursor >= len(buf):
                return None
            if buf[cursor] != 0x24:  # '$'
                raise ProtocolError("request array elements must be bulk strings")
            line = self._line(cursor + 1, MAX_HEADER_BYTES)
            if line is None:
                return None
            size = self._int(line[0], "bulk length")
            if size < 0:
                raise ProtocolError("null bulk string in a request")
            if size > self.max_bulk_bytes:
                raise ProtocolError(
                    f"bulk string of {size} bytes exceeds the {self.max_bulk_bytes}-byte limit",
                    code="TOOLARGE")
            start = line[1]
            end = start + size
            if end + 2 > len(buf):
                return None
            if buf[end:end + 2] != CRLF:
                raise ProtocolError("bulk string not terminated by CRLF")
            args.append(bytes(buf[start:end]))
            cursor = end + 2
        self._pos = cursor
        return args

    def _get_inline(self, pos: int) -> list[bytes] | None:
        buf = self._buf
        # Blank lines are skipped in a loop, not by recursing into get(): a peer sending
        # thousands of empty lines must not be able to raise RecursionError.
        while True:
            end = buf.find(b"\n", pos, pos + MAX_INLINE_BYTES + 1)
            if end < 0:
                if len(buf) - pos > MAX_INLINE_BYTES:
                    raise ProtocolError("inline command too long")
                return None
            words = bytes(buf[pos:end]).strip().split()
            self._pos = pos = end + 1
            if words:
                self.last_inline = True
                return words
            if pos >= len(buf):
                return None
            if buf[pos] == 0x2A:  # a RESP array follows the blank lines
                return self.get()


class ReplyParser:
    """Incremental parser for broker replies (client side).

    ``get()`` returns ``NEED_MORE`` until a whole reply is buffered, then the reply:
    ``str`` for a simple string, :class:`Error`, ``int``, ``bytes`` or ``None`` for a
    (null) bulk string, ``list`` for an array.
    """

    NEED_MORE = object()

    __slots__ = ("_buf", "_pos", "max_bulk_bytes")

    def __init__(self, max_bulk_bytes: int = 512 * 1024 * 1024):
        self._buf = bytearray()
        self._pos = 0
        self.max_bulk_bytes = max_bulk_bytes

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def get(self):
        result = self._parse(self._pos)
        if result is None:
            return self.NEED_MORE
        value, self._pos = result
        return value

    def _parse(self, pos: int):
        buf = self._buf
        if pos >= len(buf):
            return None
        end = buf.find(CRLF, pos)
        if end < 0:
            return None
        kind = buf[pos]
        body = bytes(buf[pos + 1:end])
        after = end + 2
        if kind == 0x2B:  # '+'
            return body.decode(), after
        if kind == 0x2D:  # '-'
            text = body.decode(errors="replace")
            code, _, message = text.partition(" ")
            return Error(code, message), after
        if kind == 0x3A:  # ':'
            return int(body), after
        if kind == 0x24:  # '$'
            size = int(body)
            if size < 0:
                return None, after
            if size > self.max_bulk_bytes:
                raise ProtocolError(f"reply bulk of {size} bytes is too large", "TOOLARGE")
            if after + size + 2 > len(buf):
                return None
            return bytes(buf[after:after + size]), after + size + 2
        if kind == 0x2A:  # '*'
            count = int(body)
            if count < 0:
                return None, after
            items = []
            cursor = after
            for _ in range(count):
                item = self._parse(cursor)
                if item is None:
                    return None
                value, cursor = item
                items.append(value)
            return items, cursor
        raise ProtocolError(f"unexpected reply type byte {kind!r}")


# ----------------------------------------------------------------------------- encoders

def encode_request(*args: bytes | str) -> bytes:
    """One request frame: ``encode_request("SUBMIT", b'{...}')``."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def encode_simple(text: str) -> bytes:
    return b"+" + text.encode() + CRLF


OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL = b"$-1\r\n"


def encode_error(code: str, message: str) -> bytes:
    # An error line must not contain CR or LF, or the client would mis-frame what follows.
    clean = message.replace("\r", " ").replace("\n", " ")
    return b"-" + code.encode() + b" " + clean.encode(errors="replace") + CRLF


def encode_bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def encode_int(value: int) -> bytes:
    return b":%d\r\n" % value
