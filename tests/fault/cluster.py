"""A local Raft cluster of real broker processes on 127.0.0.1, for the raft tests and bench.

Every node gets its own protocol port and an explicit Raft port (``raft.port`` and the peers'
``raft.peer_raft_ports``), so nothing depends on port + 1 being free.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import rocksdict

from taskqueue.client import Client
from taskqueue.errors import BrokerError, ConnectionLost
from tests.brokerproc import BrokerProcess, deep_merge, free_port

SECRET = "local-test-cluster-secret"
TRUNCATE_WARNING = "truncating already-applied log entries"


class Cluster:
    def __init__(self, root: Path, size: int = 3, overrides: dict | None = None,
                 election_timeout_ms: int = 500):
        self.root = Path(root)
        self.ports = [free_port() for _ in range(size)]
        self.raft_ports = [free_port() for _ in range(size)]
        self.nodes: list[BrokerProcess] = []
        for i in range(size):
            others = [j for j in range(size) if j != i]
            config = {
                "broker": {"port": self.ports[i]},
                "raft": {"enabled": True, "node_id": f"n{i + 1}",
                         "peers": [f"127.0.0.1:{self.ports[j]}" for j in others],
                         "port": self.raft_ports[i],
                         "peer_raft_ports": [f"127.0.0.1:{self.raft_ports[j]}" for j in others],
                         "secret": SECRET, "election_timeout_ms": election_timeout_ms},
            }
            config = deep_merge(config, overrides or {})
            self.nodes.append(BrokerProcess(self.root / f"n{i + 1}", config, name=f"n{i + 1}"))

    # ------------------------------------------------------------------ processes

    @property
    def addrs(self) -> list[str]:
        return [n.addr for n in self.nodes]

    def alive(self, i: int) -> bool:
        proc = self.nodes[i].proc
        return proc is not None and proc.poll() is None

    def start(self) -> "Cluster":
        for node in self.nodes:
            self._launch(node)
        for node in self.nodes:
            node.wait_ready(30)
        return self

    def _launch(self, node: BrokerProcess) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("TQ_LOG", None)
        node._log = open(node.log_path, "ab")
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "--config", str(node.config_path)],
            cwd=Path(__file__).resolve().parents[2], stdout=node._log,
            stderr=subprocess.STDOUT, env=env)

    def restart(self, i: int) -> None:
        self._launch(self.nodes[i])
        self.nodes[i].wait_ready(30)

    def restart_all(self) -> None:
        """Start every stopped node at once (as after a power cut), then wait for each."""
        down = [i for i in range(len(self.nodes)) if not self.alive(i)]
        for i in down:
            self._launch(self.nodes[i])
        for i in down:
            self.nodes[i].wait_ready(30)

    def kill(self, i: int) -> None:
        self.nodes[i].kill()

    def pause(self, i: int) -> None:
        self.nodes[i].proc.send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self.nodes[i].proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for i, node in enumerate(self.nodes):
            if self.alive(i):
                try:
                    node.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
        for node in self.nodes:
            node.stop()

    # ---------------------------------------------------------------------- state

    def client(self, i: int, timeout: float = 3.0) -> Client:
        return Client(self.nodes[i].addr, connect_timeout=1.0, reply_timeout=timeout)

    def status(self, i: int) -> dict | None:
        try:
            with self.client(i, 2.0) as c:
                return c.cluster()
        except (BrokerError, ConnectionLost, OSError):
            return None

    def leader(self, timeout: float = 15.0, exclude: int | None = None) -> int:
        """Index of the node that is leader (agreed by a majority of live nodes' view)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = {}
            for i in range(len(self.nodes)):
                if i == exclude or not self.alive(i):
                    continue
                st = self.status(i)
                if st is not None:
                    views[i] = st
            for i, st in views.items():
                if st["role"] == "leader":
                    agree = sum(1 for other in views.values()
                                if other["leader"] == self.nodes[i].addr
                                and other["term"] == st["term"])
                    if agree * 2 > len(self.nodes):
                        return i
            time.sleep(0.05)
        views = {self.nodes[i].name: (self.status(i) or {}).get("nodes", [None])[0]
                 for i in range(len(self.nodes)) if self.alive(i)}
        raise TimeoutError(f"no leader elected within {timeout:.0f}s: {views}")

    def wait_converged(self, timeout: float = 30.0) -> int:
        """Wait until every live node applied the same index (stable twice); return it."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            indexes = []
            for i in range(len(self.nodes)):
                if self.alive(i):
                    st = self.status(i)
                    indexes.append(None if st is None else
                                   (st["commit_index"], st["applied_index"],
                                    st["nodes"][0]["raft_applied_index"]))
            if indexes and None not in indexes:
                raft_applied = {x[2] for x in indexes}
                commits = {x[0] for x in indexes}
                if len(raft_applied) == 1 and commits == raft_applied:
                    if last == indexes[0]:
                        return indexes[0][1]
                    last = indexes[0]
                else:
                    last = None
            time.sleep(0.3)
        raise TimeoutError(f"nodes did not converge within {timeout}s: {indexes}")

    def tasks(self, i: int) -> dict[str, dict]:
        """Every task a node holds, by id (LIST, following cursors)."""
        out = {}
        with Client(self.nodes[i].addr, reply_timeout=30) as c:
            for task in c.iter_tasks(page_size=10000):
                out[task["id"]] = task
        return out

    def task_digest(self, i: int) -> str:
        h = hashlib.sha256()
        for task_id, task in sorted(self.tasks(i).items()):
            h.update(repr(sorted(task.items())).encode())
        return h.hexdigest()

    def db_digest(self, i: int) -> str:
        """sha256 of every key and value in a stopped node's RocksDB."""
        path = self.nodes[i].config["persistence"]["data_dir"]
        db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            h = hashlib.sha256()
            it = db.iter()
            it.seek_to_first()
            while it.valid():
                h.update(it.key())
                h.update(b"\x00")
                h.update(it.value())
                h.update(b"\x01")
                it.next()
            return h.hexdigest()
        finally:
            db.close()

    def applied_in_db(self, i: int) -> int:
        path = self.nodes[i].config["persistence"]["data_dir"]
        db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            from broker import keys
            raw = db.get(keys.META_APPLIED)
            return 0 if raw is None else int(raw)
        finally:
            db.close()

    def frozen_db_digests(self, attempts: int = 30) -> dict[str, str]:
        """Digest of every node's RocksDB, read while all nodes are SIGSTOPped at the same
        applied index (the leader's sweeper keeps committing small entries)."""
        for _ in range(attempts):
            for i in range(len(self.nodes)):
                self.pause(i)
            try:
                indexes = {self.applied_in_db(i) for i in range(len(self.nodes))}
                if len(indexes) == 1:
                    return {self.nodes[i].name: self.db_digest(i)
                            for i in range(len(self.nodes))}
            finally:
                for i in range(len(self.nodes)):
                    self.resume(i)
            time.sleep(0.2)
        raise AssertionError("nodes never stood still at one applied index")

    def count_in_logs(self, text: str) -> int:
        total = 0
        for node in self.nodes:
            try:
                total += node.log_path.read_text(errors="replace").count(text)
            except OSError:
                pass
        return total
