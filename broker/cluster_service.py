"""Leadership transfer on request (a mixin of :class:`broker.service.Service`).

``POST /api/v1/cluster/transfer-leader`` (admin) does what ``tq-admin transfer-leader``
does, from any node: it sends pysyncobj's ``transfer`` utility command to the leader's Raft
port over the same HMAC-authenticated channel (``raft.secret``), and the leader hands over
to its most caught-up connected follower (Raft TimeoutNow). The leader refuses when no
follower has every entry yet; nothing changes then. The reply comes once another node leads,
or after TRANSFER_WAIT_SECS with ``transferred: false`` (the request is best-effort: a
follower that loses its election leaves the old leader in charge).
"""

from __future__ import annotations

import asyncio
import time

from broker.auth import ADMIN
from taskqueue import errors

TRANSFER_WAIT_SECS = 5.0


class ClusterService:
    async def transfer_leader(self, principal) -> dict:
        self._require(principal, ADMIN)
        status = self.log.status()
        auth = getattr(self.log, "auth", None)
        if status.get("mode") != "raft" or auth is None:
            raise self._error(errors.BADSTATE, "this broker runs alone (no raft section): "
                              "there is no leadership to hand over")
        leader = next((n for n in status["nodes"] if n["node_id"] == status["leader_id"]), None)
        if leader is None or not leader.get("raft_address"):
            raise self._error(errors.UNAVAILABLE, "no leader right now; retry in a moment")
        from broker.log.raft_engine import utility  # pysyncobj: a raft-mode broker only

        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(None, utility, leader["raft_address"], auth,
                                               ["transfer"], 3.0)
        except OSError as exc:
            raise self._error(errors.UNAVAILABLE, f"the leader {leader['node_id']} did not "
                              f"answer on its Raft port ({exc})") from None
        if not (isinstance(reply, str) and reply.startswith("SUCCESS")):
            raise self._error(errors.BADSTATE, f"the leader {leader['node_id']} refused: "
                              f"{reply} (no follower has caught up with every entry yet, "
                              "or it is no longer the leader); retry")
        deadline = time.monotonic() + TRANSFER_WAIT_SECS
        now = status
        while time.monotonic() < deadline:
            now = self.log.status()
            if now.get("leader_id") and now["leader_id"] != leader["node_id"]:
                break
            await asyncio.sleep(0.1)
        moved = bool(now.get("leader_id")) and now["leader_id"] != leader["node_id"]
        return {"previous_leader": leader["node_id"], "leader": now.get("leader_id"),
                "term": now.get("term"), "transferred": moved}
