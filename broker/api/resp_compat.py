"""What stock Redis client libraries send on connect, answered so they connect with defaults.

redis-py 8, node-redis 6 and ioredis 6 open every connection with a handshake of Redis
commands before the application's first call: ``HELLO 3 [AUTH user pass] [SETNAME name]``
(they default to RESP3; ioredis falls back to RESP2 on ``-NOPROTO``, the others fail),
or ``AUTH [user] pass`` on RESP2, then ``CLIENT SETINFO``/``SETNAME``, ``SELECT`` when a
database other than 0 is configured, and (ioredis' ready check) ``INFO``. Our own commands
then go through the library's generic call (``execute_command``, ``sendCommand``, ``call``).

Everything here is per connection (protocol version, a client name): no broker state, no
replicated command. Authentication is the broker's: the password of ``AUTH``/``HELLO AUTH``
is an API key, checked exactly as HELLO's ``api_key`` (the user name is not used), and a
failed one closes the connection like a failed HELLO.

The broker's HELLO with one JSON object argument stays what docs/protocol.md describes;
only a HELLO whose argument is not a JSON object (``HELLO``, ``HELLO 3 ...``) is Redis'.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from broker.auth import AuthError
from broker.service import ServiceError
from taskqueue import errors, resp

SERVER_NAME = "task-queue"
NULL_RESP3 = b"_\r\n"
MAX_NAME_CHARS = 128  # a client name or library tag we keep; longer ones are cut


class Session:
    """The Redis-side state of one connection (RespConnection.redis)."""

    __slots__ = ("protover", "name", "lib_name", "lib_ver")

    def __init__(self):
        self.protover = 2  # until a HELLO 3
        self.name: str | None = None
        self.lib_name: str | None = None
        self.lib_ver: str | None = None

    @property
    def null(self) -> bytes:
        """The null reply (FETCH that timed out): RESP3 has its own type for it."""
        return NULL_RESP3 if self.protover == 3 else resp.NULL


class RedisCommand(NamedTuple):
    """Read by RespConnection like its own Command; ``arg="raw"`` hands the method the
    request's arguments as bytes (a Redis command is not one JSON document)."""

    method: Callable
    kind: str  # "local": answered inline; "write": runs as a task (authenticates)
    hello: bool = False  # needs an authenticated connection first
    arg: str = "raw"
    worker: bool = False
    overlaps: bool = False


def route(name: bytes, request: list[bytes]) -> RedisCommand | None:
    """The Redis command this request is, or None for the broker's own commands."""
    if name == b"HELLO":
        # The broker's HELLO takes one JSON object; `HELLO`, `HELLO 3 AUTH ...` are Redis'.
        if len(request) == 2 and request[1].lstrip()[:1] == b"{":
            return None
        return _HELLO
    return COMMANDS.get(name)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")[:MAX_NAME_CHARS]


def _bad(message: str) -> ServiceError:
    return ServiceError(errors.BADREQ, message)


# ------------------------------------------------------------------------------ HELLO

def cmd_hello(conn, args: list[bytes], size):
    """``HELLO [protover [AUTH username password] [SETNAME clientname]]``."""
    protover = conn.redis.protover
    if args:
        try:
            protover = int(args[0])
        except ValueError:
            raise _bad("HELLO: the protocol version is not an integer (or send the "
                       "broker's HELLO with a JSON object, docs/protocol.md)") from None
        if protover not in (2, 3):
            raise ServiceError("NOPROTO", f"unsupported protocol version {protover} "
                               "(this broker speaks RESP2 and RESP3)")
    api_key, name, rest = None, None, list(args[1:])
    while rest:
        option = rest.pop(0).upper()
        if option == b"AUTH" and len(rest) >= 2:
            api_key = rest[1].decode("utf-8", errors="replace")  # rest[0], the user, unused
            del rest[:2]
        elif option == b"SETNAME" and rest:
            name = _text(rest.pop(0))
        else:
            raise _bad(f"HELLO: syntax error at option {_text(option)!r}")
    if api_key is not None or conn.principal is None:
        return _checking(conn, _hello_authenticate(conn, protover, name, api_key))
    return _hello_done(conn, protover, name)


def _checking(conn, check):
    """Run an authentication check while the connection goes on reading: a client that
    pipelines ``AUTH key`` and ``SUBMIT`` gets the SUBMIT run with AUTH's outcome, not
    refused with NOAUTH because AUTH is still being checked. Requests that need an
    authenticated connection wait in the reply FIFO until the check is answered
    (RespConnection._dispatch); the handshake's own (CLIENT, SELECT, PING) are answered as
    they come, as the libraries expect."""
    conn.auth_checks += 1
    return _released(conn, check)


async def _released(conn, check):
    try:
        return await check
    finally:
        conn.auth_checks -= 1


async def _hello_authenticate(conn, protover: int, name, api_key):
    if api_key is None:
        # No credentials: with auth off that is every client's lot (anonymous admin); with
        # auth on the connection stays unauthenticated (AUTH or the broker's HELLO next),
        # as Redis lets a client pick its protocol before it authenticates.
        try:
            conn.principal = _admitted(conn, await conn.server.auth.authenticate(
                None, conn._peer_host()))
        except AuthError:
            pass
    else:
        conn.principal = await _authenticate(conn, api_key)
    return _hello_done(conn, protover, name)


def _hello_done(conn, protover: int, name) -> bytes:
    session = conn.redis
    session.protover = protover
    if name is not None:
        session.name = name
    status = conn.service.hello_reply(conn.reached_address())
    fields = [
        ("server", SERVER_NAME),
        ("version", _version()),
        ("proto", protover),
        ("id", id(conn) & 0x7FFFFFFF),
        # "standalone" also on a cluster node: "cluster" would tell a client to speak
        # Redis Cluster (slots, MOVED), which this broker does not.
        ("mode", "standalone"),
        # Redis' own vocabulary: the leader takes writes like a master. Our role too.
        ("role", "master" if status["role"] in ("leader", "single") else "replica"),
        ("modules", []),
        ("tq_role", status["role"]),
        ("tq_node_id", status["node_id"]),
        ("tq_leader", status["leader"]),
    ]
    return _encode_pairs(fields, protover)


def _encode_pairs(fields: list[tuple[str, object]], protover: int) -> bytes:
    out = [b"%%%d\r\n" % len(fields) if protover == 3 else b"*%d\r\n" % (2 * len(fields))]
    for key, value in fields:
        out.append(resp.encode_bulk(key.encode()))
        if isinstance(value, int):
            out.append(resp.encode_int(value))
        elif isinstance(value, list):
            out.append(b"*0\r\n")
        elif value is None:
            out.append(NULL_RESP3 if protover == 3 else resp.NULL)
        else:
            out.append(resp.encode_bulk(str(value).encode()))
    return b"".join(out)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("task-queue")
    except Exception:  # running from a source tree without an install
        return "0"


# ------------------------------------------------------------------------------- AUTH

def cmd_auth(conn, args: list[bytes], size):
    """``AUTH password`` or ``AUTH username password``: the password is an API key."""
    if len(args) not in (1, 2):
        raise _bad("AUTH takes a password (an API key) or a username and a password")
    return _checking(conn, _auth(conn, args[-1].decode("utf-8", errors="replace")))


async def _auth(conn, api_key: str) -> bytes:
    conn.principal = await _authenticate(conn, api_key)
    return resp.OK


async def _authenticate(conn, api_key: str):
    try:
        principal = await conn.server.auth.authenticate(api_key, conn._peer_host())
    except AuthError:
        # As after a failed HELLO: nothing more from this connection.
        conn.close_when_flushed = True
        raise
    return _admitted(conn, principal)


def _admitted(conn, principal):
    """An authenticated connection counts against broker.max_connections, no longer against
    the handshake's limits (broker/api/conn_guard.py), as after the broker's own HELLO."""
    if not conn.server.guard.authenticate(conn):
        conn.close_when_flushed = True
        raise ServiceError(errors.MAXCONN, "too many connections (broker.max_connections)")
    return principal


# ------------------------------------------------------------------- CLIENT, SELECT, INFO

def cmd_client(conn, args: list[bytes], size):
    sub = args[0].upper() if args else b""
    session = conn.redis
    if sub == b"SETINFO" and len(args) == 3:
        attr = args[1].upper()
        if attr == b"LIB-NAME":
            session.lib_name = _text(args[2])
        elif attr == b"LIB-VER":
            session.lib_ver = _text(args[2])
        else:
            raise _bad(f"CLIENT SETINFO: unknown attribute {_text(args[1])!r}")
        return resp.OK
    if sub == b"SETNAME" and len(args) == 2:
        session.name = _text(args[1]) or None
        return resp.OK
    if sub == b"GETNAME" and len(args) == 1:
        return resp.encode_bulk(session.name.encode()) if session.name else session.null
    if sub == b"ID" and len(args) == 1:
        return resp.encode_int(id(conn) & 0x7FFFFFFF)
    # CLIENT MAINT_NOTIFICATIONS, TRACKING, ...: an error reply, which the libraries
    # treat as "not supported here" and go on.
    raise _bad(f"CLIENT {_text(sub)} is not supported (only SETINFO, SETNAME, GETNAME, ID)")


def cmd_select(conn, args: list[bytes], size):
    if len(args) == 1 and args[0].strip() == b"0":
        return resp.OK
    raise _bad("SELECT: this broker has one database, 0 (leave the client's db at 0)")


def cmd_info(conn, args: list[bytes], size):
    """Enough for a ready check (ioredis reads ``loading``); no server internals."""
    status = conn.service.hello_reply()
    lines = ["# Server", f"tq_version:{_version()}", "redis_mode:standalone",
             f"tq_role:{status['role']}", f"tq_node_id:{status['node_id']}",
             "# Persistence", "loading:0", ""]
    return resp.encode_bulk("\r\n".join(lines).encode())


_HELLO = RedisCommand(cmd_hello, "write")
COMMANDS = {
    b"AUTH": RedisCommand(cmd_auth, "write"),
    b"CLIENT": RedisCommand(cmd_client, "local"),
    b"SELECT": RedisCommand(cmd_select, "local"),
    b"INFO": RedisCommand(cmd_info, "local", hello=True),
}
