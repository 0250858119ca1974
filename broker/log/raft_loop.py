"""pysyncobj's tick on the broker's asyncio loop, driven by events instead of timed polls.

pysyncobj 0.3.17 normally runs its own *tick thread*: a ``poll()`` with a 50 ms timeout,
then one pass over elections, commit index, apply and AppendEntries. A cluster commit then
crossed threads twice on the leader (the loop hands the proposal to the tick thread through
a pipe; the result comes back through ``call_soon_threadsafe``), and each crossing cost a
thread wake-up plus a GIL hand-over: 0.2 ms at the median, up to ~1 ms at p90 on a busy
2-core host (docs/performance.md, "A cluster commit, stage by stage").

Here pysyncobj runs with ``autoTick=False`` and the loop drives it:

* :class:`LoopPoller` is pysyncobj's poller interface over ``loop.add_reader`` /
  ``add_writer``: a peer's frame is read by the loop the moment it arrives, and its
  handler (journal append, answer) runs right there.
* :class:`TickDriver` runs ``SyncObj._onTick`` at the end of every loop turn in which
  something happened (a frame read, a proposal handed over: :meth:`TickDriver.kick`), and
  every ``period`` seconds for the timers (heartbeats, election deadline). A proposal is
  appended and its AppendEntries sent in the same loop turn it was handed over; an answer
  that completes a majority is applied in the turn it was read.

Consequence for the rest of the code: pysyncobj callbacks (apply, serializer, deserializer,
utility messages) run on the loop thread. They must stay short, as before (a slow apply
already delayed heartbeats on the tick thread); the loop is "parked" while they run.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from pysyncobj.poller import POLL_EVENT_TYPE

log = logging.getLogger("tq.log.raft")

_READ = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR  # errors show as readable on the loop
_WRITE = POLL_EVENT_TYPE.WRITE


class LoopPoller:
    """pysyncobj's ``Poller`` (subscribe/unsubscribe/poll) on an asyncio loop. Loop thread
    only. ``on_event`` runs after every event handed to pysyncobj (it kicks a tick)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_event):
        self._loop = loop
        self._on_event = on_event
        self._callbacks: dict[int, object] = {}
        self._registered: dict[int, tuple[bool, bool]] = {}  # fd -> (reader, writer)

    def subscribe(self, descr: int, callback, eventMask: int) -> None:
        self._callbacks[descr] = callback
        want_read, want_write = bool(eventMask & _READ), bool(eventMask & _WRITE)
        has_read, has_write = self._registered.get(descr, (False, False))
        if want_read and not has_read:
            self._loop.add_reader(descr, self._ready, descr, POLL_EVENT_TYPE.READ)
        elif has_read and not want_read:
            self._loop.remove_reader(descr)
        if want_write and not has_write:
            self._loop.add_writer(descr, self._ready, descr, POLL_EVENT_TYPE.WRITE)
        elif has_write and not want_write:
            self._loop.remove_writer(descr)
        self._registered[descr] = (want_read, want_write)

    def unsubscribe(self, descr: int) -> None:
        self._callbacks.pop(descr, None)
        has_read, has_write = self._registered.pop(descr, (False, False))
        # pysyncobj closes a socket before unsubscribing it: the loop drops the closed
        # descriptor here, before anything can reuse its number (same loop turn). uvloop
        # (the broker's loop) accepts that; the stdlib selector loop raises EBADF and keeps
        # a stale key, which is dropped so the number can be registered again.
        try:
            if has_read:
                self._loop.remove_reader(descr)
            if has_write:
                self._loop.remove_writer(descr)
        except OSError:
            selector = getattr(self._loop, "_selector", None)
            if selector is not None:
                try:
                    selector.unregister(descr)
                except (KeyError, ValueError, OSError):
                    pass

    def poll(self, timeout: float) -> None:
        """The loop polls; pysyncobj's end-of-tick poll returns at once."""

    def _ready(self, descr: int, event: int) -> None:
        callback = self._callbacks.get(descr)
        if callback is None:
            return
        try:
            callback(descr, event)
        except Exception:  # a handler's bug must not end the loop's reading of peers
            log.exception("raft: handling an event on descriptor %d failed", descr)
        self._on_event()


class TickDriver:
    """Runs ``engine._onTick(0)`` on the loop: after events (coalesced, one per loop turn)
    and every ``period`` seconds. ``before_tick`` runs first (pre-vote hooks in there)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float, before_tick=None):
        self._loop = loop
        self._thread = threading.get_ident()
        self.period = period
        self.before_tick = before_tick
        self.engine = None
        self._pending = False
        self._handle: asyncio.Handle | None = None  # the kicked tick, not run yet
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self.ticks = 0

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread

    def start(self, engine) -> None:
        self.engine = engine
        self._timer = self._loop.call_later(self.period, self._timed)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()

    def kick(self) -> None:
        """Tick at the end of this loop turn (once, however many events asked)."""
        if not self._pending and not self._stopped:
            self._pending = True
            self._handle = self._loop.call_soon(self._tick)

    def tick_now(self) -> None:
        """Run the tick a kick asked for right here (loop thread) instead of one loop turn
        later: a proposal handed over is appended and its AppendEntries sent at once."""
        if self._pending and self.on_loop_thread():
            self._handle.cancel()
            self._tick()

    def notify(self) -> None:
        """pysyncobj's pipe notifier: a command was queued, from any thread."""
        if self.on_loop_thread():
            self.kick()
        else:
            try:
                self._loop.call_soon_threadsafe(self.kick)
            except RuntimeError:  # loop closed: shutting down
                pass

    def _timed(self) -> None:
        try:
            self._tick()
        finally:
            if not self._stopped:
                self._timer = self._loop.call_later(self.period, self._timed)

    def _tick(self) -> None:
        self._pending = False
        engine = self.engine
        if engine is None or self._stopped:
            return
        self.ticks += 1
        try:
            if self.before_tick is not None:
                self.before_tick()
            engine._onTick(0.0)
        except Exception:  # as pysyncobj's own tick thread did: log, go on at the next one
            log.exception("raft tick failed")
