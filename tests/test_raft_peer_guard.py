"""The Raft peer port against strangers and replays, and the AppendEntries pre-filter.

Real broker processes, real sockets: a one-node Raft cluster for the port's defences (its
Raft port is the same code a three-node cluster runs), three nodes under load for the
pre-filter. Issue 10, items 6 and 7.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pysyncobj import pickle as _pickle

from broker import config as cfg
from broker.log import raft_peer_guard as guard
from broker.log.raft_engine import HmacAuthenticator, query_status
from broker.log.raft_peer_guard import prefilter_append_entries
from tests.brokerproc import BrokerProcess, free_port
from tests.fault.cluster import SECRET, TRUNCATE_WARNING, Cluster

ROOT = Path(__file__).resolve().parent.parent
AUTH = HmacAuthenticator(SECRET)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("peerguard"), 1,
                      overrides={"monitoring": {"prometheus_port": free_port()}})
    cluster.start()
    try:
        cluster.leader(20)
        yield cluster
    finally:
        cluster.stop()


def raft_addr(cluster) -> tuple[str, int]:
    return "127.0.0.1", cluster.raft_ports[0]


def refusals(cluster) -> dict[str, float]:
    """tq_raft_peer_refusals_total by reason, scraped from the node's metrics port."""
    port = cluster.nodes[0].config["monitoring"]["prometheus_port"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {sample.labels["reason"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "tq_raft_peer_refusals_total"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the other side closed ``sock`` within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            continue
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def frame(number: int, message) -> bytes:
    data = AUTH.encrypt_at_time(zlib.compress(_pickle.dumps(message), 3), number)
    return struct.pack("i", len(data)) + data


def read_frame(sock: socket.socket):
    def exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf
    (size,) = struct.unpack("i", exactly(4))
    return _pickle.loads(zlib.decompress(AUTH.decrypt(exactly(size))))


def handshake(sock: socket.socket, number) -> bytes:
    """pysyncobj's key exchange as a utility client; returns the node's key."""
    my_key = os.urandom(32)
    sock.sendall(frame(number(), my_key))
    echoed, their_key = read_frame(sock)
    assert echoed == my_key
    return their_key


# ------------------------------------------------------------------ item 6: the peer port

def test_a_huge_declared_frame_is_refused_before_it_is_buffered(node):
    """Before: a declared 2^31-1 bytes made the node read and keep everything sent (64 MB
    measured). Now the connection closes once the header is read, and memory stays flat."""
    pid = node.nodes[0].proc.pid
    counted = refusals(node)
    before = rss_kib(pid)
    sent, refused = 0, False
    with socket.create_connection(raft_addr(node), timeout=5) as sock:
        sock.sendall(struct.pack("i", 2 ** 31 - 1))
        chunk = b"\0" * (256 << 10)
        try:
            while sent < (48 << 20):
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            refused = True
    grown = rss_kib(pid) - before
    assert refused, f"the node accepted {sent >> 20} MB of one unauthenticated frame"
    assert grown < 16 << 10, f"the node grew by {grown >> 10} MB"
    # just above the cap is refused too; the node goes on serving its peers
    with socket.create_connection(raft_addr(node), timeout=5) as sock:
        sock.sendall(struct.pack("i", guard.UNAUTHENTICATED_FRAME_CAP + 1) + b"\0" * 4096)
        assert closed_by_peer(sock, 3)
    # a frame of a fitting size under another secret: closed, and the log says why
    other = HmacAuthenticator("another-cluster-secret")
    data = other.encrypt_at_time(zlib.compress(_pickle.dumps(os.urandom(32))), 1)
    with socket.create_connection(raft_addr(node), timeout=5) as sock:
        sock.sendall(struct.pack("i", len(data)) + data)
        assert closed_by_peer(sock, 3)
    assert query_status("%s:%d" % raft_addr(node), AUTH)["role"] == "leader"
    logs = node.nodes[0].logs()
    assert "declared a frame of 2147483647 bytes" in logs
    assert "failed authentication (bad MAC (wrong raft.secret?))" in logs
    # every refusal is counted, though the second oversized frame's log line is rate-limited
    now = refusals(node)
    assert now["frame_too_large"] - counted["frame_too_large"] == 2
    assert now["failed_authentication"] - counted["failed_authentication"] == 1


def test_a_replayed_frame_inside_a_connection_closes_it(node):
    """Before: pysyncobj accepted any frame whose whole-second timestamp was >= the last
    one, so the same bytes sent again in the same second were executed again."""
    numbers = iter(range(1, 100))
    counted = refusals(node)["frame_out_of_sequence"]
    with socket.create_connection(raft_addr(node), timeout=3) as sock:
        their_key = handshake(sock, lambda: next(numbers))
        command = frame(next(numbers), (their_key, ["tqstatus"]))
        sock.sendall(command)
        assert read_frame(sock)[1]["role"] == "leader"
        sock.sendall(frame(next(numbers), (their_key, ["tqstatus"])))  # the next number: fine
        assert read_frame(sock)[1]["role"] == "leader"
        sock.sendall(command)  # the same bytes again
        assert closed_by_peer(sock, 3), "a replayed frame was answered"
    assert "replayed or reordered frame" in node.nodes[0].logs()
    assert refusals(node)["frame_out_of_sequence"] == counted + 1


def test_a_broker_of_the_previous_version_is_still_understood(node):
    """Older brokers put monotonic seconds where frames now carry numbers: a connection
    whose first frame is not number 1 is served in that mode (rolling upgrades), and the
    node says which peer should be upgraded."""
    stamp = lambda: int(time.monotonic()) + 1000  # noqa: E731 - what the old code sent
    with socket.create_connection(raft_addr(node), timeout=3) as sock:
        their_key = handshake(sock, stamp)
        sock.sendall(frame(stamp(), (their_key, ["tqstatus"])))
        assert read_frame(sock)[1]["role"] == "leader"
    assert "sends timestamped frames" in node.nodes[0].logs()


@pytest.mark.slow
def test_idle_and_slow_strangers_are_closed(node):
    """Before: a connection that never completed the handshake was kept forever, however
    many there were. Now: closed after the handshake deadline, at most MAX_UNAUTHENTICATED
    kept (oldest first out), and a peer with the secret still gets in meanwhile."""
    idle = [socket.create_connection(raft_addr(node), timeout=3)
            for _ in range(guard.MAX_UNAUTHENTICATED + 8)]
    slow = socket.create_connection(raft_addr(node), timeout=3)
    stop = threading.Event()

    def dribble():  # a valid-looking small frame, one byte every 0.3 s
        for byte in frame(1, os.urandom(32)) * 10:
            if stop.wait(0.3):
                return
            try:
                slow.send(bytes([byte]))
            except OSError:
                return

    sender = threading.Thread(target=dribble, daemon=True)
    sender.start()
    try:
        started = time.monotonic()
        assert query_status("%s:%d" % raft_addr(node), AUTH)["role"] == "leader"
        first = [s for s in idle[:8] if closed_by_peer(s, 2)]
        assert len(first) == 8, "the oldest strangers beyond the limit were kept"
        limit = guard.HANDSHAKE_TIMEOUT_SECS + 4
        assert closed_by_peer(slow, limit), "a one-byte-at-a-time sender was kept"
        rest = [s for s in idle[8:] if closed_by_peer(s, limit - (time.monotonic() - started))]
        assert len(rest) == len(idle) - 8, "idle unauthenticated connections were kept"
        assert query_status("%s:%d" % raft_addr(node), AUTH)["role"] == "leader"
    finally:
        stop.set()
        for s in idle + [slow]:
            s.close()
    assert "did not authenticate within" in node.nodes[0].logs()


@pytest.mark.parametrize("secret, why", [
    ("s", "1 characters"), ("   ", "0 characters"), ("short-secret", "12 characters"),
    ("abababababababababab", "2 different characters"),
])
def test_a_weak_raft_secret_is_refused(tmp_path, secret, why):
    with pytest.raises(cfg.ConfigError, match=f"raft.secret: too weak \\({why}"):
        cfg.from_mapping({"raft": {"enabled": True, "node_id": "n1", "secret": secret}})
    cfg.from_mapping({"raft": {"enabled": True, "node_id": "n1", "secret": SECRET}})
    # the broker itself refuses to start on it
    proc = BrokerProcess(tmp_path, {"raft": {"enabled": True, "node_id": "n1",
                                             "secret": secret}})
    out = subprocess.run([sys.executable, "-m", "broker.cli", "--check-config",
                          str(proc.config_path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "raft.secret: too weak" in out.stdout + out.stderr


def test_the_role_and_the_docs_state_the_same_limits():
    tasks = (ROOT / "roles/broker/tasks/main.yml").read_text()
    assert f"broker_raft_secret | trim | length >= {cfg.MIN_RAFT_SECRET_CHARS}" in tasks
    assert f"unique | list | length >= {cfg.MIN_RAFT_SECRET_DISTINCT}" in tasks
    ops = (ROOT / "docs/operations.md").read_text()
    for number in (f"{guard.UNAUTHENTICATED_FRAME_CAP >> 10} KiB",
                   f"{guard.HANDSHAKE_TIMEOUT_SECS:g} s", f"{guard.MAX_UNAUTHENTICATED}",
                   f"{guard.authenticated_frame_cap(64 << 20) >> 20} MiB"):
        assert number in ops, f"docs/operations.md does not say {number}"


# ------------------------------------------------------------ item 7: AppendEntries

def entries(first: int, last: int, term: int = 1) -> list:
    return [(b"c%d" % i, i, term) for i in range(first, last + 1)]


def append(prev: int, prev_term: int, new: list, commit: int = 0) -> dict:
    return {"type": "append_entries", "term": 2, "commit_index": commit, "entries": new,
            "prevLogIdx": prev, "prevLogTerm": prev_term}


def test_prefilter_keeps_entries_of_the_same_index_and_term():
    log = entries(1, 20)
    # the leader moved its next index back and re-sends 12..15: all held, the log goes on
    message, reply, skipped = prefilter_append_entries(append(11, 1, entries(12, 15), 20), log)
    assert (message["prevLogIdx"], message["entries"], skipped) == (20, [], 4)
    assert message["commit_index"] == 15 and reply == 16  # only what the leader vouched for
    # a heartbeat behind our last entry: nothing truncated, reply covers what it checked
    message, reply, _ = prefilter_append_entries(append(11, 1, [], 20), log)
    assert (message["prevLogIdx"], message["commit_index"], reply) == (20, 11, 12)
    # held entries, then new ones: only the new ones are appended
    message, reply, skipped = prefilter_append_entries(append(18, 1, entries(19, 23), 21), log)
    assert (message["prevLogIdx"], [e[1] for e in message["entries"]]) == (20, [21, 22, 23])
    assert reply is None and skipped == 2 and message["commit_index"] == 21
    # a conflict: truncation starts at the first entry whose term differs, not before
    new = entries(12, 14) + entries(15, 16, term=2)
    message, reply, skipped = prefilter_append_entries(append(11, 1, new), log)
    assert message["prevLogIdx"] == 14 and [e[1] for e in message["entries"]] == [15, 16]
    assert reply is None and skipped == 3


def test_prefilter_leaves_what_pysyncobj_must_answer_alone():
    log = entries(5, 20)  # compacted up to 4
    for message in (append(3, 1, entries(4, 8)),  # before our first entry
                    append(10, 7, entries(11, 12)),  # prevLogTerm differs: "no match"
                    append(25, 1, entries(26, 26)),  # beyond our log
                    append(20, 1, entries(21, 22)),  # at the end: nothing to filter
                    dict(append(10, 1, []), transmission="start", data=b"")):
        assert prefilter_append_entries(message, log) == (message, None, 0)
    snapshot = {"type": "append_entries", "term": 2, "commit_index": 9, "serialized": b""}
    assert prefilter_append_entries(snapshot, log) == (snapshot, None, 0)


def test_frame_numbers_must_follow_each_other():
    sender, receiver = guard.FrameSequence(AUTH), guard.FrameSequence(AUTH)
    frames = [sender.encrypt_at_time(b"x%d" % i, 0) for i in range(3)]
    assert [receiver.extract_timestamp(f) for f in frames[:2]] == [1, 2]
    with pytest.raises(Exception, match="out of sequence"):
        receiver.extract_timestamp(frames[0])  # replayed
    legacy = guard.FrameSequence(AUTH)  # a first frame that is not number 1: legacy mode
    assert legacy.extract_timestamp(frames[1]) == 2 and legacy.mode == "legacy"
    with pytest.raises(Exception, match="older"):
        legacy.extract_timestamp(frames[0])


@pytest.mark.slow
def test_loaded_cluster_logs_no_critical_truncation(tmp_path):
    """Before: a follower that fell behind (SIGSTOP here; a partition or a slow disk
    alike) and caught up made pysyncobj log ``CRITICAL truncating already-applied log
    entries`` dozens of times (33 in 6 s of this test), hundreds of entries deep: the leader
    re-sends entries the follower holds and has applied, and pysyncobj truncates them.
    Now they are recognised (same index and term) and kept."""
    cluster = Cluster(tmp_path, 3, election_timeout_ms=1000)
    cluster.start()
    try:
        leader = cluster.leader(20)
        slow = (leader + 1) % 3
        stop = time.monotonic() + 6
        errors, done = [], [0]

        def produce():
            with cluster.client(leader, timeout=10) as c:
                while time.monotonic() < stop:
                    try:
                        c.submit_bulk([{"type": "t", "queue": "q", "payload": j}
                                       for j in range(20)])
                        done[0] += 20
                    except Exception as exc:  # counted, then asserted on
                        errors.append(exc)

        producers = [threading.Thread(target=produce) for _ in range(4)]
        for t in producers:
            t.start()
        while time.monotonic() < stop - 0.6:
            time.sleep(0.3)
            cluster.pause(slow)
            time.sleep(0.3)
            cluster.resume(slow)
        for t in producers:
            t.join()
        # an entry far above the 64 KiB pre-authentication cap still replicates
        with cluster.client(leader, timeout=10) as c:
            c.submit_bulk([{"type": "big", "queue": "q", "payload": "x" * 60000}
                           for _ in range(10)])
        cluster.wait_converged(30)
        assert len({cluster.task_digest(i) for i in range(3)}) == 1
        assert not errors, errors[:3]
        assert done[0] > 2000
    finally:
        cluster.stop()
    assert cluster.count_in_logs(TRUNCATE_WARNING) == 0
    assert cluster.count_in_logs("CRITICAL") == 0
