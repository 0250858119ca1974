"""Keeps bcrypt checks of API keys from being a way to stall a node.

A bcrypt check costs tens of milliseconds on purpose, and it runs on one thread. Without
limits a flood of wrong keys (100 pipelined HELLOs, or many connections each sending one)
queues behind that thread and a legitimate first login waits for all of them. Three rules:

* a bounded number of checks may wait on the node (``auth.max_pending_verifications``);
  one more is refused at once (``UNAVAILABLE``, retry later) instead of queueing;
* checks take turns per source address: one address has at most one check running or
  queued for the thread, so a flood from one address delays another address by one check;
* after a wrong key, the next check from the same address first waits
  ``auth.failed_attempt_delay_secs``, doubling per further failure up to
  ``auth.failed_attempt_max_delay_secs`` (a success forgets the address). The table of
  addresses is bounded; the least recently failed ones are forgotten first.

The protocol side adds the last rule: at most one HELLO in flight per connection.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict

# Failure reasons counted for tq_auth_failures_total.
MISSING, INVALID, TOO_LONG, BUSY = "missing_key", "invalid_key", "key_too_long", "busy"
BCRYPT_MAX_KEY_BYTES = 72  # bcrypt ignores (old versions) or refuses (5.x) longer keys


class FailureTable:
    """Consecutive failed checks per source address (bounded, least recent dropped)."""

    def __init__(self, base_delay: float, max_delay: float, size: int = 4096):
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.size = size
        self._failures: OrderedDict[str, int] = OrderedDict()

    def delay(self, address: str) -> float:
        """Seconds a check from ``address`` waits before it runs."""
        failures = self._failures.get(address, 0)
        if not failures or not self.base_delay:
            return 0.0
        return min(self.max_delay, self.base_delay * (2 ** min(failures - 1, 30)))

    def failed(self, address: str) -> None:
        self._failures[address] = self._failures.pop(address, 0) + 1
        while len(self._failures) > self.size:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def __len__(self) -> int:
        return len(self._failures)


class VerifyGate:
    """Admission to the bcrypt thread: bounded, one check at a time per address."""

    def __init__(self, max_pending: int, failures: FailureTable):
        self.max_pending = max_pending
        self.failures = failures
        self.pending = 0
        self._turns: dict[str, asyncio.Lock] = {}
        self.counts: Counter = Counter()  # failure reason -> count, for the metrics

    def full(self) -> bool:
        return self.pending >= self.max_pending

    async def run(self, address: str, check):
        """Await ``check()`` (a coroutine function) in ``address``'s turn, after its delay.

        The caller has checked ``full()``; the pending count covers the wait for the turn,
        the delay and the check itself.
        """
        self.pending += 1
        lock = self._turns.get(address)
        if lock is None:
            lock = self._turns[address] = asyncio.Lock()
        try:
            async with lock:
                delay = self.failures.delay(address)
                if delay:
                    await asyncio.sleep(delay)
                return await check()
        finally:
            self.pending -= 1
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._turns.pop(address, None)
