"""Recognising a port that is not the broker's protocol port, from its first answer to HELLO.

A newcomer's ``tq-admin --broker-addr 127.0.0.1:8080`` reached the REST port, which waited
for the end of an HTTP request that never came: 30 s, then "HELLO: timed out". So the
handshake ends its HELLO frame with a blank line (:data:`HANDSHAKE_END`): the broker skips
blank lines between requests, while an HTTP/1 server takes it as the end of a (bad) request
and answers at once. An HTTP/2 (gRPC) server sends its settings frame on its own, and a
TLS server an alert. :func:`describe` names what answered and which port to use instead.
"""

from __future__ import annotations

# The broker's parser skips blank lines; for an HTTP/1 server they end the request headers.
HANDSHAKE_END = b"\r\n\r\n"

# What the broker may send first: a RESP2/RESP3 type byte (HELLO's reply is a bulk string or
# an error).
RESP_TYPES = frozenset(b"+-:$*_%#,(=!~>|")

# The broker's default ports (docs/configuration.md), to name the one that was reached.
DEFAULT_PORTS = {8080: "the REST API's", 9090: "the gRPC API's", 9091: "the metrics'"}
PROTOCOL_PORT = 6379


def describe(first_bytes: bytes, port: int) -> str | None:
    """Why the peer on ``port`` is not a broker protocol port, or None when it may be one."""
    if not first_bytes or first_bytes[0] in RESP_TYPES:
        return None
    if first_bytes.startswith(b"HTTP/") or first_bytes.lstrip()[:1] == b"<":
        what = "HTTP"  # an HTTP/1 status line, or an HTTP/0.9-style HTML error page
    elif _http2_settings(first_bytes):
        what = "HTTP/2 (gRPC)"
    elif first_bytes[0] == 0x15 and first_bytes[1:2] == b"\x03":
        return ("answers TLS: the broker has TLS on; give the client its CA (tq-admin "
                "--tls-ca FILE, env TQ_TLS_CA)")
    else:
        what = "something other than the broker protocol"
    known = DEFAULT_PORTS.get(port)
    where = (f"{port} is {known} port by default" if known
             else "a REST, gRPC or metrics port?")
    return (f"answers {what}, not the broker protocol ({where}); the protocol port is "
            f"broker.port, {PROTOCOL_PORT} by default")


def _http2_settings(data: bytes) -> bool:
    """An HTTP/2 frame header whose type is SETTINGS (4), as a server's preface begins."""
    return len(data) >= 9 and data[3] == 0x04 and data[0] == 0 and data[4] in (0, 1)
