"""Sanic's HTTP protocol with a request deadline that a slow sender cannot push back.

Sanic restarts its timeout clock on every ``data_received``: a client sending one byte a
second keeps a request header (``REQUEST_TIMEOUT``) or body (``RESPONSE_TIMEOUT``) open for
as long as it likes. Here a request must arrive whole, header and body, within
``broker.request_timeout_secs`` of its first byte; otherwise it is answered 408 and the
connection closed. The clock stops once the body is in, so a long poll (``?wait=``) is not
cut, and an idle keep-alive connection is still governed by Sanic's keep-alive timeout.
"""

from __future__ import annotations

from time import monotonic

from sanic.exceptions import RequestTimeout
from sanic.http.constants import Stage
from sanic.server.protocols.http_protocol import HttpProtocol


def bounded_protocol(request_timeout: float) -> type[HttpProtocol]:
    """An HttpProtocol subclass enforcing ``request_timeout`` (seconds) per request."""

    class BoundedHttpProtocol(HttpProtocol):
        __slots__ = ("_request_began",)

        def connection_made(self, transport):
            self._request_began = None
            super().connection_made(transport)

        def _receiving(self) -> bool:
            http = getattr(self, "_http", None)  # made by the connection task
            if http is None:
                return False
            stage = http.stage
            return (stage is Stage.REQUEST or (stage is Stage.IDLE and bool(self.recv_buffer))
                    or (stage is Stage.HANDLER and bool(http.request_body)))

        def data_received(self, data: bytes):
            if not self._receiving():
                self._request_began = monotonic()  # the first byte of a new request
            super().data_received(data)

        def check_timeouts(self):
            began = self._request_began
            if (self._task and began is not None and self._receiving()
                    and monotonic() - began > request_timeout):
                self._http.exception = RequestTimeout(
                    f"request not received whole within {request_timeout:g}s "
                    "(broker.request_timeout_secs)")
                self._task.cancel()
                # Sanic answers 408 on the cancelled task but may go on waiting for the rest
                # of the body: the connection ends shortly after, whatever it does.
                self.loop.call_later(0.5, self._abort)
                return
            super().check_timeouts()

        def _abort(self):
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.abort()

    return BoundedHttpProtocol
