"""Fencing tokens: what a worker must show to settle or renew the lease FETCH gave it.

A token has two jobs. It *fences*: every claim makes a new one, so a worker whose lease ran
out (and whose task another worker now holds) is told ``LEASELOST`` instead of completing
the task a second time. And it is a *secret*: only the connection whose FETCH got the job
learns it (it is in no task listing, no reply to anyone else), so nobody can settle a
lease by guessing. Tokens used to be the machine's global sequence number: small,
increasing, guessed 1,000 at a time in one bulk ACK (issue 10).

So a token is ``"<seq>-<nonce>"``: the sequence number the claim took (unique per claim,
which keeps the fencing exact: a newer lease can never carry an older lease's token) and
64 random bits drawn by the node that proposes the claim, stamped into the command. Apply
only formats the two (it draws nothing: replicas stay byte-identical). It is a string, not
a bigger integer: a 64+ bit JSON number loses digits in JavaScript and overflows int64.
Tokens minted before this format (plain integers) are still accepted, so leases that were
running across an upgrade can still be settled.
"""

from __future__ import annotations

import secrets

MAX_TOKEN_CHARS = 64
NONCE_BITS = 64


def nonce() -> int:
    """The random part of the tokens of one claim: drawn by the proposer, never by apply."""
    return secrets.randbits(NONCE_BITS)


def mint(seq: int, nonce_value: int) -> str:
    """The token of the lease that took sequence number ``seq`` (deterministic)."""
    return f"{seq}-{nonce_value:016x}"


def valid(value) -> bool:
    """A token as a client may send it: a string this broker could have minted, or a
    non-negative integer (a lease from before string tokens)."""
    if type(value) is str:
        return 0 < len(value) <= MAX_TOKEN_CHARS
    return type(value) is int and value >= 0
