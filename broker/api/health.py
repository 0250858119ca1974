"""Is this node fit to serve? One verdict for REST ``/health`` and gRPC's health service.

Load balancers, the roles' restart handlers and container health checks read it, so every
API must agree on it.
"""

from __future__ import annotations

HEALTHY = "healthy"
STOPPING = "stopping"
NO_LEADER = "no_leader"
CATCHING_UP = "catching_up"
WRITE_STALLED = "write_stalled"


def write_stalled(log) -> float:
    """Seconds the node's write path has been stuck (proposals waiting and no entry applied
    for the log's ``stall_secs``), 0.0 when it moves or has nothing to do."""
    check = getattr(log, "write_stalled", None)
    return check() if check is not None else 0.0


def node_health(broker) -> tuple[str, dict]:
    """``(verdict, body)``: the verdict is :data:`HEALTHY` or why not; the body is what
    ``/health`` shows (the verdict as ``status``, plus the node's role and leader)."""
    if broker.stopping.is_set():
        return STOPPING, {"status": STOPPING}
    status = broker.service.log.status()
    body = {"role": status.get("role"), "node_id": status.get("node_id"),
            "leader": status.get("leader")}
    # A cluster node serves when it knows a leader it can reach (leader_id is set only
    # then): a follower cut off from the quorum stops passing the check.
    if not status.get("leader") or (status.get("mode") != "single"
                                    and not status.get("leader_id")):
        return NO_LEADER, {"status": NO_LEADER, **body}
    # Proposals wait and nothing commits (a wedged loop, a leader whose followers do not
    # answer): writes sent here hang, so a load balancer must send them elsewhere.
    stalled = write_stalled(broker.service.log)
    if stalled:
        return WRITE_STALLED, {"status": WRITE_STALLED, **body,
                               "stalled_secs": round(stalled, 1)}
    # A node re-syncing after a lost disk or a restore would answer reads with what it
    # has so far: keep load balancers and rolling restarts off it until it caught up.
    if not status.get("caught_up", True):
        return CATCHING_UP, {"status": CATCHING_UP, **body,
                             "applied_index": status.get("applied_index")}
    return HEALTHY, {"status": HEALTHY, **body}
