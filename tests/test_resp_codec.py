"""The RESP codec (taskqueue/resp.py): round trips, chunking, limits, and fuzzing.

The request parser reads bytes from the network on the broker: whatever arrives, it may only
ever return well-formed requests (non-empty lists of bytes) or raise ProtocolError. Anything
else (another exception, a wrong type, an endless loop) would crash or wedge a connection
handler, so that is the property the fuzz tests check.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskqueue.resp import (MAX_ARRAY_ELEMENTS, MAX_INLINE_BYTES, NULL, OK, Error,
                            ProtocolError, ReplyParser, RequestParser, encode_bulk,
                            encode_error, encode_int, encode_request, encode_simple)

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

args_strategy = st.lists(st.binary(max_size=64), min_size=1, max_size=MAX_ARRAY_ELEMENTS)
frames_strategy = st.lists(args_strategy, min_size=1, max_size=6)


def drain(parser: RequestParser, out: list | None = None,
          limit: int = 10_000) -> list[list[bytes]]:
    """Every request the parser yields from what it holds, checking each one's shape;
    appended to ``out`` as they come, so the caller keeps them if a later one raises."""
    out = [] if out is None else out
    for _ in range(limit):
        request = parser.get()
        if request is None:
            return out
        assert isinstance(request, list) and request, request
        assert all(isinstance(a, bytes) for a in request), request
        out.append(request)
    raise AssertionError("the parser kept returning requests without consuming input")


def parse_all(data: bytes, chunks: list[int] | None = None, **limits) -> list[list[bytes]]:
    parser = RequestParser(**limits)
    if chunks is None:
        parser.feed(data)
        return drain(parser)
    out, pos = [], 0
    for size in chunks:
        parser.feed(data[pos:pos + size])
        pos += size
        out.extend(drain(parser))
    parser.feed(data[pos:])
    out.extend(drain(parser))
    return out


def outcome(data: bytes, chunks: list[int] | None = None):
    """("ok", requests) or ("error", requests before it, code)."""
    parser = RequestParser(max_bulk_bytes=1024)
    got = []
    try:
        if chunks is None:
            parser.feed(data)
            drain(parser, got)
        else:
            pos = 0
            for size in [*chunks, len(data)]:
                parser.feed(data[pos:pos + size])
                pos += size
                drain(parser, got)
    except ProtocolError as exc:
        assert exc.code in ("BADREQ", "TOOLARGE")
        return ("error", got, exc.code)
    return ("ok", got)


# ----------------------------------------------------------------------------- round trips

@given(args_strategy)
def test_request_round_trip(args):
    assert parse_all(encode_request(*args)) == [args]


@given(frames_strategy, st.lists(st.integers(0, 40), max_size=30))
def test_chunked_feeding_equals_whole_feeding(frames, chunks):
    data = b"".join(encode_request(*f) for f in frames)
    assert parse_all(data, chunks) == parse_all(data) == frames


def test_str_arguments_are_encoded_as_utf8():
    assert parse_all(encode_request("SUBMIT", '{"é":1}')) == [[b"SUBMIT", '{"é":1}'.encode()]]


def test_inline_commands():
    assert parse_all(b"PING\r\nQUIT\n") == [[b"PING"], [b"QUIT"]]


def test_blank_lines_are_skipped_without_recursion():
    # Found by the fuzz below: each blank line used to cost one level of recursion, so a
    # peer could raise RecursionError (not ProtocolError) in the broker.
    data = b"\r\n" * 5000 + encode_request("PING") + b"\n" * 5000 + b"PING\r\n"
    assert parse_all(data) == [[b"PING"], [b"PING"]]


def test_incomplete_frame_waits_for_more():
    frame = encode_request("GET", b'{"id":"x"}')
    parser = RequestParser()
    for byte in frame[:-1]:
        parser.feed(bytes([byte]))
        assert parser.get() is None
    parser.feed(frame[-1:])
    assert parser.get() == [b"GET", b'{"id":"x"}']
    assert parser.get() is None


# ----------------------------------------------------------------------------- limits

def test_too_many_elements_is_rejected():
    with pytest.raises(ProtocolError) as info:
        parse_all(encode_request(*[b"x"] * (MAX_ARRAY_ELEMENTS + 1)))
    assert info.value.code == "BADREQ"


def test_oversized_bulk_is_rejected_on_its_header():
    # Only the header is sent: the parser must refuse before the body is buffered.
    parser = RequestParser(max_bulk_bytes=1000)
    parser.feed(b"*2\r\n$6\r\nSUBMIT\r\n$1001\r\n")
    with pytest.raises(ProtocolError) as info:
        parser.get()
    assert info.value.code == "TOOLARGE"


def test_bulk_at_the_limit_is_accepted():
    assert parse_all(encode_request(b"x" * 1000), max_bulk_bytes=1000) == [[b"x" * 1000]]


def test_huge_announced_array_is_rejected():
    with pytest.raises(ProtocolError):
        parse_all(b"*999999999999\r\n")


@pytest.mark.parametrize("data", [
    b"*1\r\n$" + b"9" * 200,            # header line never ends
    b"x" * (MAX_INLINE_BYTES + 10),     # inline command never ends
])
def test_unterminated_lines_are_bounded(data):
    with pytest.raises(ProtocolError):
        parse_all(data)


@pytest.mark.parametrize("data", [
    b"*1\r\n:5\r\n",                    # not a bulk string
    b"*1\r\n$-1\r\n",                   # null bulk
    b"*0\r\n",                          # empty array
    b"*-1\r\n",
    b"*1\r\n$3\r\nabcXY",               # missing CRLF after the body
    b"*1\r\n$ 3\r\nabc\r\n",            # spaces in a length
    b"*+1\r\n$3\r\nabc\r\n",
    b"*1\r\n$1_0\r\n",
])
def test_malformed_frames_raise_protocol_error(data):
    with pytest.raises(ProtocolError) as info:
        parse_all(data)
    assert info.value.code == "BADREQ"


# ----------------------------------------------------------------------------- fuzzing

@FUZZ
@given(st.binary(max_size=512), st.lists(st.integers(1, 64), max_size=20))
def test_fuzz_arbitrary_bytes(data, chunks):
    outcome(data, chunks)  # asserts the property inside


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value in edits:
        if not buf:
            buf.append(value)
            continue
        i = where % len(buf)
        if kind == 0:
            buf[i] = value                       # replace a byte
        elif kind == 1:
            buf.insert(i, value)                 # insert a byte
        elif kind == 2:
            del buf[i]                           # delete a byte
        elif kind == 3:
            del buf[i:]                          # truncate
        else:
            buf[i:i] = bytes(buf[i:i + value % 8])  # duplicate a slice
    return bytes(buf)


interesting_bytes = st.sampled_from(b"*$:+-\r\n0123456789 -x\x00\xff")


@FUZZ
@given(frames_strategy,
       st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10_000),
                          st.one_of(interesting_bytes, st.integers(0, 255))),
                min_size=1, max_size=6),
       st.lists(st.integers(1, 64), max_size=10))
def test_fuzz_mutated_valid_frames(frames, edits, chunks):
    data = _mutate(b"".join(encode_request(*f) for f in frames), edits)
    whole = outcome(data)
    chunked = outcome(data, chunks)
    # Feeding in pieces never changes what a stream means.
    assert whole[0] == chunked[0]
    assert whole[1] == chunked[1]


# ----------------------------------------------------------------------------- replies

def parse_replies(data: bytes, chunk: int | None = None) -> list:
    parser = ReplyParser()
    out = []
    step = chunk or len(data) or 1
    for pos in range(0, len(data), step):
        parser.feed(data[pos:pos + step])
        while (reply := parser.get()) is not ReplyParser.NEED_MORE:
            out.append(reply)
    return out


@given(st.lists(st.one_of(
    st.binary(max_size=100).map(lambda b: (encode_bulk(b), b)),
    st.integers(-2**62, 2**62).map(lambda i: (encode_int(i), i)),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30).map(
        lambda t: (encode_simple(t), t)),
    st.just((NULL, None)),
    st.just((OK, "OK")),
), min_size=1, max_size=10), st.integers(1, 16))
def test_reply_round_trip_in_any_chunks(pairs, chunk):
    data = b"".join(frame for frame, _ in pairs)
    expected = [value for _, value in pairs]
    assert parse_replies(data) == expected
    assert parse_replies(data, chunk) == expected


def test_error_reply_parses_code_and_message():
    assert parse_replies(encode_error("NOTFOUND", "no task x")) == [Error("NOTFOUND", "no task x")]


def test_error_reply_cannot_break_framing():
    # A message with CR/LF inside must not end the error line early.
    data = encode_error("BADREQ", "bad\r\n+OK\r\nvalue") + OK
    assert parse_replies(data) == [Error("BADREQ", "bad  +OK  value"), "OK"]


def test_reply_arrays():
    data = b"*2\r\n$2\r\nhi\r\n:3\r\n*-1\r\n"
    assert parse_replies(data, 1) == [[b"hi", 3], None]


def test_the_parser_says_which_requests_were_inline():
    parser = RequestParser()
    parser.feed(b"PING\r\n" + encode_request("PING"))
    assert parser.get() == [b"PING"] and parser.last_inline
    assert parser.get() == [b"PING"] and not parser.last_inline
