"""Connection lifecycle limits of the protocol port (docs/protocol.md, "Limits").

A connection is *unauthenticated* from accept until its HELLO succeeds, then
*authenticated*. The two are counted apart, so clients that never say HELLO cannot take the
places of those that do:

* at most ``broker.max_unauthenticated_connections`` unauthenticated connections: when one
  more is accepted, the oldest of them that is not in the middle of a HELLO is closed
  (``-MAXCONN``). An attacker must then open connections faster than a real client says
  HELLO to keep one out, instead of opening 49 once;
* an unauthenticated connection that has not sent ``HELLO`` within
  ``broker.handshake_timeout_secs`` is closed (``-NOAUTH``). A HELLO being checked is not
  timed here: the bcrypt gate (broker/auth_throttle.py) bounds that wait;
* ``broker.max_connections`` bounds the authenticated ones: the HELLO that would exceed it is
  answered ``-MAXCONN`` and the connection closed;
* on every connection, a request whose first byte arrived ``broker.request_timeout_secs``
  ago and that is still not whole closes the connection (``-BADREQ``): a sender trickling
  one byte a second cannot hold a connection. The clock restarts at every complete request,
  so a steady pipeline is never cut; a connection the broker itself stopped reading (flow
  control) is not timed.

One watchdog task checks the clocks twice per shortest timeout (at most once a second), so
the per-request cost is a timestamp in ``data_received``, not a timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict

from taskqueue import errors

log = logging.getLogger("tq.resp")

# Why the broker closed a connection (tq_resp_connections_closed_total{reason}).
HANDSHAKE_TIMEOUT = "handshake_timeout"
REQUEST_TIMEOUT = "request_timeout"
UNAUTHENTICATED_LIMIT = "unauthenticated_limit"
MAX_CONNECTIONS = "max_connections"


class ConnGuard:
    def __init__(self, *, max_connections: int, max_unauthenticated: int,
                 handshake_timeout: float, request_timeout: float):
        self.max_connections = max_connections
        self.max_unauthenticated = max_unauthenticated
        self.handshake_timeout = handshake_timeout
        self.request_timeout = request_timeout
        # Unauthenticated connections in accept order -> the time their HELLO is due.
        self.unauthenticated: OrderedDict = OrderedDict()
        self.authenticated: set = set()
        self.closed: Counter = Counter()  # reason -> connections closed by the broker
        self._watchdog: asyncio.Task | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._watchdog = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        task, self._watchdog = self._watchdog, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    # ------------------------------------------------------------ connection hooks

    def admit(self, conn) -> None:
        """A new connection: make room among the unauthenticated ones, start its clock."""
        pool = self.unauthenticated
        while len(pool) >= self.max_unauthenticated:
            victim = next((c for c in pool if not c.hello_in_flight), None) or next(iter(pool))
            del pool[victim]
            self.closed[UNAUTHENTICATED_LIMIT] += 1
            victim.drop(errors.MAXCONN, "too many connections without HELLO "
                        "(broker.max_unauthenticated_connections): this, the oldest, is closed")
        pool[conn] = asyncio.get_running_loop().time() + self.handshake_timeout

    def authenticate(self, conn) -> bool:
        """HELLO succeeded: move ``conn`` to the authenticated ones, if there is room."""
        if conn in self.authenticated:
            return True
        if len(self.authenticated) >= self.max_connections:
            self.closed[MAX_CONNECTIONS] += 1
            return False
        self.unauthenticated.pop(conn, None)
        self.authenticated.add(conn)
        return True

    def forget(self, conn) -> None:
        self.unauthenticated.pop(conn, None)
        self.authenticated.discard(conn)

    # ------------------------------------------------------------------ watchdog

    def interval(self) -> float:
        return max(0.05, min(1.0, self.handshake_timeout / 2, self.request_timeout / 2))

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval())
            try:
                self.check(loop.time())
            except Exception:  # never let the watchdog die silently
                log.exception("connection watchdog round failed")

    def check(self, now: float) -> None:
        late = [c for c, due in self.unauthenticated.items()
                if due <= now and not c.hello_in_flight]
        for conn in late:
            self.unauthenticated.pop(conn, None)
            self.closed[HANDSHAKE_TIMEOUT] += 1
            conn.drop(errors.NOAUTH, f"no HELLO within {self.handshake_timeout:g}s "
                      "(broker.handshake_timeout_secs)")
        limit = now - self.request_timeout
        for conn in [c for c in (*self.unauthenticated, *self.authenticated)
                     if c.partial_since is not None and c.partial_since <= limit]:
            self.closed[REQUEST_TIMEOUT] += 1
            conn.drop(errors.BADREQ, f"request not received whole within "
                      f"{self.request_timeout:g}s (broker.request_timeout_secs)")
