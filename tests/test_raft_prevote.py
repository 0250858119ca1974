"""Pre-vote on a real 3-node cluster: a follower cut off from the others (iptables on
loopback, root only) keeps its term while isolated, and once healed it follows the leader
it finds instead of deposing it (broker/log/raft_prevote.py).

Without pre-vote the isolated follower raises its term at every election timeout; its first
RequestVote after the heal carries that term and the healthy leader steps down (the term
jumps, writes stop for another election)."""

from __future__ import annotations

import time

import pytest

from tests.fault.cluster import Cluster

ELECTION_MS = 400


@pytest.mark.slow
def test_a_healed_follower_does_not_depose_the_leader(tmp_path):
    from tests.fault.isolation import Isolation

    if not Isolation.available():
        pytest.skip("needs root, iptables with the cgroup match and a cgroup v2 hierarchy")
    cluster = Cluster(tmp_path, 3, election_timeout_ms=ELECTION_MS).start()
    isolation = Isolation()
    try:
        leader = cluster.leader(20)
        with cluster.client(leader) as c:
            c.submit("noop", 0, queue="prevote")
        term = cluster.status(leader)["term"]
        follower = next(i for i in range(3) if i != leader)
        # The follower must have joined the term before it is cut off: CI once isolated a
        # node that had not heard from the new leader yet (term 0, no leader), and pre-vote
        # rightly kept it at 0.
        wait_until_all_follow(cluster, leader, term, follower)
        isolation.isolate(cluster, follower)
        try:
            # ~6 election timeouts: without pre-vote, ~4 elections (and terms) on its own
            time.sleep(6 * ELECTION_MS / 1000)
            isolated = cluster.status(follower)
        finally:
            isolation.heal(cluster)
        assert isolated is not None and isolated["term"] == term, \
            f"the isolated follower moved from term {term} to {isolated and isolated['term']}"
        # healed: the follower catches up with the same leader, in the same term
        wait_until_all_follow(cluster, leader, term, follower)
        time.sleep(3 * ELECTION_MS / 1000)  # and it stays that way
        assert cluster.leader(5) == leader
        assert cluster.status(leader)["term"] == term
        with cluster.client(follower) as c:  # the healed node takes writes (forwarded)
            c.submit("noop", 1, queue="prevote")
    finally:
        isolation.heal(cluster)
        cluster.stop()


def wait_until_all_follow(cluster, leader: int, term: int, follower: int, secs: float = 8):
    """Every node reports ``leader`` in ``term``, and ``follower`` has its commit index."""
    deadline = time.monotonic() + secs
    while True:
        views = [cluster.status(i) for i in range(3)]
        if all(v and v["term"] == term and v["leader"] == cluster.nodes[leader].addr
               for v in views) and views[follower]["commit_index"] >= \
                views[leader]["commit_index"]:
            return
        assert time.monotonic() < deadline, [
            (v or {}).get("role") and (v["role"], v["term"], v["leader"]) for v in views]
        time.sleep(0.1)
