"""The RESP/JSON fuzzer (tests/fuzz_support.py) against a real 3-node Raft cluster, auth on
(issue 10, "Tests that prove it").

Each example sends fuzzed requests (or a malformed stream) to one node, leader or follower
(a follower forwards writes), and then checks: every request answered or the connection
closed within a bound, no INTERNAL; a legitimate client gets a write and a read answered on
every node within PROBE_BOUND (the write path is not frozen anywhere); the leader's task
table is unchanged when nothing the example sent succeeded at changing tasks. Garbage is
also sent to the nodes' Raft peer ports. At the end every node holds the same tasks.
"""

from __future__ import annotations

import socket
import time

import bcrypt
import pytest
import yaml
from hypothesis import given, note
from hypothesis import strategies as st

from taskqueue import resp
from taskqueue.client import Client
from tests import fuzz_support as fz
from tests.api_support import KEYS, key_entries
from tests.brokerproc import free_port
from tests.fault.cluster import Cluster
from tests.test_fuzz_resp import (PRINCIPALS, REPLY_BOUND, SEED_NOTE, fuzz, handshake,
                                  principals)

pytestmark = pytest.mark.slow

PROBE_BOUND = 5.0  # a forwarded write on a loaded 2-core machine
EXAMPLES, STREAMS, PEER_STREAMS = 90, 40, 20  # ~45 s with the cluster start


class ClusterTarget:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.leader = self.find_leader(30)
        self.probes = []
        for i in range(3):
            probe = Client(cluster.nodes[i].addr, api_key=KEYS["admin"][0],
                           connect_timeout=PROBE_BOUND, reply_timeout=PROBE_BOUND)
            probe.connect()
            self.probes.append(probe)
        self.paused = False
        self.table = None

    def find_leader(self, timeout: float) -> int:
        """The node a majority calls leader (Cluster.leader, with the admin key: auth is on)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = {}
            for i, node in enumerate(self.cluster.nodes):
                try:
                    with Client(node.addr, api_key=KEYS["admin"][0], connect_timeout=1,
                                reply_timeout=2) as c:
                        views[i] = c.cluster()
                except Exception:  # noqa: BLE001 - not up yet / no leader yet
                    pass
            for i, view in views.items():
                if view["role"] == "leader" and sum(
                        1 for other in views.values()
                        if other["leader"] == self.cluster.nodes[i].addr) >= 2:
                    return i
            time.sleep(0.1)
        raise TimeoutError("no leader")

    def wire(self, i: int, principal: str) -> fz.Wire:
        wire = fz.Wire(self.cluster.nodes[i].addr, timeout=REPLY_BOUND)
        handshake(wire, principal)
        return wire

    def read_table(self, i: int) -> dict:
        wire = self.wire(i, "admin")
        try:
            return fz.task_table(lambda c, a: wire.call(c, a, timeout=REPLY_BOUND))
        finally:
            wire.close()

    def check_service(self, context) -> None:
        for i, node in enumerate(self.cluster.nodes):
            assert self.cluster.alive(i), f"{node.name} died after {context}\n{node.logs()}"
        started = time.monotonic()
        # A replicated write through every node (followers forward it), then a read.
        for probe in self.probes:
            (probe.resume if self.paused else probe.pause)("fz-probe")
            self.paused = not self.paused
            probe.queues()
        took = time.monotonic() - started
        assert took < PROBE_BOUND, f"legitimate clients waited {took:.2f}s after {context}"

    def check_unchanged(self, changed: bool, context) -> None:
        # The leader's table: a rejected request on a follower must not have been forwarded
        # and applied either. (The probes' writes came after it in the log.)
        before, after = self.table, self.read_table(self.leader)
        self.table = after
        if not changed and before is not None:
            odd = fz.unexplained_changes(before, after)
            assert not odd, ("rejected input changed tasks", context, len(odd),
                             {i: (before.get(i), after.get(i)) for i in odd[:3]})


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    keys = key_entries() + [{"name": "worker", "permissions": fz.WORKER_KEY[1],
                             "key_hash": bcrypt.hashpw(fz.WORKER_KEY[0].encode(),
                                                       bcrypt.gensalt(4)).decode()}]
    cluster = Cluster(tmp_path_factory.mktemp("fuzzcluster"), 3, election_timeout_ms=1500,
                      overrides={
                          "auth": {"enabled": True, "api_keys": keys},
                          "broker": {"max_frame_bytes": fz.MAX_FRAME,
                                     "max_payload_bytes": fz.MAX_PAYLOAD,
                                     "request_timeout_secs": 3, "handshake_timeout_secs": 3},
                          "worker": {"lease_timeout_secs": 3600}})
    for node in cluster.nodes:
        node.config["api"]["rest_port"] = free_port()
        node.config_path.write_text(yaml.safe_dump(node.config))
    cluster.start()
    try:
        target = ClusterTarget(cluster)
        from tests.test_fuzz_resp import seed_tasks
        seed_tasks(cluster.nodes[target.leader].addr)
        target.table = target.read_table(target.leader)
        yield target
        # Every node ends with the same tasks; nobody logged a bug.
        deadline = time.monotonic() + 30
        while True:
            tables = [target.read_table(i) for i in range(3)]
            if tables[0] == tables[1] == tables[2]:
                break
            assert time.monotonic() < deadline, "the nodes' task tables differ"
            time.sleep(0.3)
        for node in cluster.nodes:
            log = node.log_path.read_text(errors="replace")
            for marker in ("internal error", "Task exception was never retrieved",
                           "Exception in callback", "Future exception was never retrieved"):
                assert marker not in log, f"{marker!r} in {node.name}'s log:\n{log[-4000:]}"
    finally:
        cluster.stop()


def run_on_node(ct: ClusterTarget, i: int, principal: str, requests, tail: bytes = b""):
    context = (ct.cluster.nodes[i].name, principal, [[a[:100] for a in r] for r in requests],
               tail[:100])
    wire = ct.wire(i, principal)
    replies = []
    try:
        wire.send(b"".join(map(fz.encode, requests)) + (tail or resp.encode_request("PING")))
        deadline = time.monotonic() + REPLY_BOUND
        if tail:
            try:
                wire.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            replies = wire.replies_until_eof(deadline)
        else:
            for _ in range(len(requests) + 1):
                replies.append(wire.reply(deadline))
    except fz.Closed:
        pass
    except fz.Timeout:
        pytest.fail(f"no reply within {REPLY_BOUND}s: a node hangs on {context}")
    finally:
        wire.close()
    for reply in replies:
        fz.check_reply(reply, context)
    answered = replies[:len(requests)] + [None] * (len(requests) - len(replies))
    if not tail and len(replies) < len(requests) + 1:
        # closed early (QUIT, a refused HELLO): what was not answered never ran
        answered = replies[:len(requests)] + [resp.Error("X", "")] * (
            len(requests) - len(replies))
    changed = any(fz.changed_state(r[0].decode(errors="replace"), reply)
                  for r, reply in zip(requests, answered))
    ct.check_service(context)
    ct.check_unchanged(changed, context)


nodes = st.sampled_from([0, 1, 2])


@fuzz(EXAMPLES)
@given(i=nodes, principal=principals, requests=st.lists(fz.requests(), min_size=1,
                                                        max_size=4))
def test_fuzzed_requests_on_every_node(ct, i, principal, requests):
    note(SEED_NOTE)
    run_on_node(ct, i, principal, requests)


@fuzz(STREAMS)
@given(i=nodes, principal=st.sampled_from(PRINCIPALS),
       prefix=st.lists(fz.requests(), max_size=2), data=fz.malformed)
def test_fuzzed_malformed_streams_on_every_node(ct, i, principal, prefix, data):
    note(SEED_NOTE)
    run_on_node(ct, i, principal, prefix, data)


@fuzz(PEER_STREAMS)
@given(i=nodes, data=st.one_of(
    st.binary(min_size=1, max_size=2000),
    st.sampled_from([b"\xff" * 8, b"\x7f\xff\xff\xff", b"\x00\x00\x00\x10" + b"x" * 16,
                     (2 ** 31 - 1).to_bytes(4, "big") + b"x" * 1000])))
def test_garbage_on_the_raft_peer_port_changes_nothing(ct, i, data):
    """Unauthenticated bytes on a node's Raft port: the cluster keeps its leader (same term
    is not required, service is) and serves on every node."""
    note(SEED_NOTE)
    port = ct.cluster.raft_ports[i]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(2)
            try:
                while s.recv(65536):
                    pass
            except (socket.timeout, OSError):
                pass
    except OSError:
        pass
    ct.check_service(("raft port", i, data[:60]))
    ct.check_unchanged(False, ("raft port", i, data[:60]))
