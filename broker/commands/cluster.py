"""Commands about the log itself: a no-op (a new leader's first entry) and the restore
identity a restored cluster records (docs/clustering.md, "Restore identity in the log").
"""

from __future__ import annotations

from broker import keys
from broker.model import BaseMismatch, restore_key
from taskqueue import jsonutil


def noop(m, now: int):
    return None


def restored(m, now: int, identity: dict):
    """A Raft leader restored from a backup records which one (first entry it appends).

    Every node restored from that same archive holds that identity in ``Mrestored``: it
    marks it logged (so no leader proposes it again), byte-identically everywhere. Any
    other node (emptied, restored from another backup) would apply this log to a
    different base: BaseMismatch stops it before it writes anything."""
    if restore_key(identity) != restore_key(m.restored):
        raise BaseMismatch(identity, m.restored)
    logged = {"backup_sha256": identity.get("backup_sha256"),
              "backup_applied_index": identity.get("backup_applied_index")}
    m.overlay.put(keys.META_RESTORE_LOGGED, jsonutil.dumps(logged))
    m.restore_logged = logged
    return "OK"


COMMANDS = {
    "noop": noop,
    "restored": restored,
}
