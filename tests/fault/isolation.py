"""Loopback network partitions for the fault tests: cut one node of a local
:class:`tests.fault.cluster.Cluster` off from its peers' Raft traffic, and heal.

Shared by tests/fault/test_raft_faults.py, tests/test_raft_health.py,
tests/test_raft_prevote.py and tests/test_workflows_cluster.py; each skips (with
:data:`SKIP_REASON`) where :meth:`Isolation.available` says it cannot run.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.fault.cluster import Cluster

SKIP_REASON = "needs root, iptables with the cgroup match and a writable cgroup v2 hierarchy"


class Isolation:
    """Cut one node off from the other nodes' Raft traffic on loopback (root + iptables + a
    writable cgroup v2 hierarchy; the round is skipped otherwise).

    Every packet on loopback passes the OUTPUT chain once, so all rules live there: drop
    anything to or from the node's Raft port (connections the peers opened), anything on
    the node's existing outgoing Raft connections (their local ports, read from /proc), and,
    through a cgroup match on the node's process, every new connection it opens to a peer's
    Raft port. The peers keep talking to each other and clients keep reaching every node.
    """

    CHAIN = "TQFAULT"

    def __init__(self):
        self.active = False
        self.cgroup: str | None = None
        self.root = self._cgroup2_root()
        self.home = self.root

    @staticmethod
    def _cgroup_of(pid: int, root: str) -> str:
        """The cgroup v2 directory ``pid`` is in (to move it back there)."""
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                for line in f:
                    if line.startswith("0::"):
                        return os.path.join(root, line[3:].strip().lstrip("/"))
        except OSError:
            pass
        return root

    @staticmethod
    def _cgroup2_root() -> str | None:
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    left, _, right = line.partition(" - ")
                    if right.split()[0] == "cgroup2":
                        path = left.split()[4]
                        if os.access(path, os.W_OK):
                            return path
        except OSError:
            pass
        return None

    @classmethod
    def available(cls) -> bool:
        if os.geteuid() != 0 or shutil.which("iptables") is None:
            return False
        root = cls._cgroup2_root()
        if not root:
            return False
        probe_dir = os.path.join(root, f"tqfault-probe-{os.getpid()}")
        home = cls._cgroup_of(os.getpid(), root)
        try:  # can we create a cgroup and move a process into it (and back)?
            os.mkdir(probe_dir)
            with open(os.path.join(probe_dir, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            with open(os.path.join(home, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            return False
        finally:
            try:
                os.rmdir(probe_dir)
            except OSError:
                pass
        probe = subprocess.run(["iptables", "-w", "-C", "OUTPUT", "-m", "cgroup", "--path",
                                "/", "-j", "ACCEPT"], capture_output=True, text=True)
        return "No chain/target/match" not in probe.stderr and \
            "Couldn't load match" not in probe.stderr

    def _ipt(self, *args, check=True):
        return subprocess.run(["iptables", "-w", *args], capture_output=True, check=check)

    @staticmethod
    def _local_ports(pid: int, remote_ports: set[int]) -> set[int]:
        """Local ports of ``pid``'s TCP connections to any of ``remote_ports``."""
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        ports = set()
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if inode in inodes and int(remote.split(":")[1], 16) in remote_ports:
                    ports.add(int(local.split(":")[1], 16))
        return ports

    def isolate(self, cluster: Cluster, i: int) -> None:
        pid = cluster.nodes[i].proc.pid
        self.home = self._cgroup_of(pid, self.root)
        name = f"tqfault-{os.getpid()}-{i}"
        os.makedirs(os.path.join(self.root, name), exist_ok=True)
        self.cgroup = name
        with open(os.path.join(self.root, name, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        self._ipt("-N", self.CHAIN, check=False)
        self._ipt("-F", self.CHAIN)
        self._ipt("-I", "OUTPUT", "-j", self.CHAIN)
        self.active = True
        own = cluster.raft_ports[i]
        others = {p for j, p in enumerate(cluster.raft_ports) if j != i}
        rules = [["-p", "tcp", "--dport", str(own)], ["-p", "tcp", "--sport", str(own)]]
        for port in self._local_ports(pid, others):
            rules += [["-p", "tcp", "--dport", str(port)], ["-p", "tcp", "--sport", str(port)]]
        for port in others:  # sockets it creates from now on carry the cgroup
            rules.append(["-m", "cgroup", "--path", name, "-p", "tcp", "--dport", str(port)])
        for rule in rules:
            self._ipt("-A", self.CHAIN, *rule, "-j", "DROP")

    def heal(self, cluster: Cluster | None = None) -> None:
        if self.active:
            self._ipt("-D", "OUTPUT", "-j", self.CHAIN, check=False)
            self._ipt("-F", self.CHAIN, check=False)
            self._ipt("-X", self.CHAIN, check=False)
            self.active = False
        if self.cgroup:
            path = os.path.join(self.root, self.cgroup)
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    pids = f.read().split()
                for pid in pids:
                    with open(os.path.join(self.home, "cgroup.procs"), "w") as f:
                        f.write(pid)
                os.rmdir(path)
            except OSError:
                pass
            self.cgroup = None
