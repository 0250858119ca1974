"""API-key authentication and permissions, shared by every port (RESP, REST, gRPC).

Keys are stored in the configuration as bcrypt hashes. bcrypt costs tens of milliseconds by
design, so a key is verified once on a small thread pool (never on the event loop) and the
outcome cached under a SHA-256 digest of the key: a steady stream of requests pays one dict
lookup. Only successful verifications are cached, so a wrong key is re-checked each time
(that is the brute-force cost bcrypt exists to impose). Keys are never logged. Admission to
the bcrypt thread is bounded and throttled per source address: see broker/auth_throttle.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from broker.auth_throttle import (BCRYPT_MAX_KEY_BYTES, BUSY, INVALID, MISSING, TOO_LONG,
                                  FailureTable, VerifyGate)

SUBMIT, READ, CANCEL, ADMIN = "submit_tasks", "read_tasks", "cancel_tasks", "admin"
# What a worker connection (HELLO with worker_id: FETCH, ACK, FAIL, HEARTBEAT) needs: it
# reads tasks and it changes them (takes them, writes their results). A read-only key
# (a dashboard's) must not be able to take a task or forge its result.
WORKER = (READ, SUBMIT)


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may do."""

    name: str
    permissions: frozenset[str]

    def allows(self, permission: str) -> bool:
        return ADMIN in self.permissions or permission in self.permissions

    def may_work(self) -> bool:
        """May this key be a worker (every permission in WORKER)?"""
        perms = self.permissions
        return ADMIN in perms or (READ in perms and SUBMIT in perms)


# The caller when auth is disabled: everything is allowed.
ANONYMOUS_ADMIN = Principal("anonymous", frozenset({ADMIN}))


class AuthError(Exception):
    """Missing or wrong key (``code`` NOAUTH) or missing permission (NOPERM)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Authenticator:
    def __init__(self, enabled: bool, api_keys: list[dict], workers: int = 1, *,
                 max_pending: int = 64, failed_delay: float = 0.25,
                 failed_max_delay: float = 4.0):
        self.enabled = enabled
        self._keys = [(k["key_hash"].encode(), Principal(k["name"], frozenset(k["permissions"])))
                      for k in api_keys]
        self._cache: dict[bytes, Principal] = {}
        # One thread: on 2-core nodes more bcrypt threads only steal the loop's core.
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tq-bcrypt")
        # Bounded admission to that thread, per-address turns and failure slowdown.
        self.gate = VerifyGate(max_pending, FailureTable(failed_delay, failed_max_delay))

    @property
    def failure_counts(self) -> dict[str, int]:
        """Failed authentications by reason since start (tq_auth_failures_total)."""
        return dict(self.gate.counts)

    async def authenticate(self, api_key: str | None, peer: str | None = None) -> Principal:
        """The key's principal; ``peer`` (the source address) throttles wrong keys."""
        if not self.enabled:
            return ANONYMOUS_ADMIN
        gate = self.gate
        if not api_key:
            gate.counts[MISSING] += 1
            raise AuthError("NOAUTH", "an API key is required")
        raw = api_key.encode()
        digest = hashlib.sha256(raw).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if gate.failures:  # a right key forgets its address's failures
                gate.failures.succeeded(peer or "?")
            return cached
        if len(raw) > BCRYPT_MAX_KEY_BYTES:
            # bcrypt cannot check it: no configured hash can match such a key.
            gate.counts[TOO_LONG] += 1
            raise AuthError("NOAUTH", f"invalid API key (longer than {BCRYPT_MAX_KEY_BYTES} "
                            "bytes, bcrypt's limit)")
        if gate.full():
            gate.counts[BUSY] += 1
            raise AuthError("UNAVAILABLE", "too many API key checks waiting on this node "
                            "(auth.max_pending_verifications); retry")
        address = peer or "?"
        loop = asyncio.get_running_loop()

        async def check():
            hit = self._cache.get(digest)  # verified while this one waited its turn
            if hit is not None:
                return hit
            return await loop.run_in_executor(self._pool, self._verify, raw)

        principal = await gate.run(address, check)
        if principal is None:
            gate.counts[INVALID] += 1
            gate.failures.failed(address)
            raise AuthError("NOAUTH", "invalid API key")
        gate.failures.succeeded(address)
        if len(self._cache) > 10000:  # bounded: keys are few, but input is not
            self._cache.clear()
        self._cache[digest] = principal
        return principal

    def _verify(self, key: bytes) -> Principal | None:
        import bcrypt

        found = None
        for key_hash, principal in self._keys:
            # Check every hash, so timing does not reveal which entry matched.
            try:
                ok = bcrypt.checkpw(key, _normalise(key_hash))
            except ValueError:
                ok = False
            if ok and found is None:
                found = principal
        return found

    @staticmethod
    def require(principal: Principal, permission: str) -> None:
        if not principal.allows(permission):
            raise AuthError("NOPERM", f"this API key lacks the {permission!r} permission")

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _normalise(key_hash: bytes) -> bytes:
    # htpasswd writes $2y$ hashes; the bcrypt module checks $2a$/$2b$ (same algorithm).
    if key_hash.startswith(b"$2y$") or key_hash.startswith(b"$2x$"):
        return b"$2b$" + key_hash[4:]
    return key_hash

