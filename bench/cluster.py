"""``python -m bench.cluster``: the bench figures against a 3-node Raft cluster, and failover.

Starts a single node and a 3-node cluster on 127.0.0.1 (same ``wal_sync_interval_ms``),
measures submit (single, bulk), drain and round trip against each (the cluster through its
leader), then SIGKILLs the cluster's leader ``--failovers`` times under a steady submitter
and reports the time from the SIGKILL to the first acknowledged submit (median, max; and
to a new leader) and whether any acknowledged submit was lost. A raw redis reference is
measured first (bench/redis_ref.py) and every figure is also given as a ratio. ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import yaml

from bench import figures, redis_ref
from bench.procs import ROOT, LocalBroker, cpu_secs, free_port, wait_for_ping
from taskqueue.client import Client
from taskqueue.errors import BrokerError, ConnectionLost

SECRET = "bench-cluster-secret"


class LocalCluster:
    def __init__(self, size: int, wal_sync_interval_ms: int, election_timeout_ms: int,
                 command=None):
        # command(k) -> argv of node k (default: the broker itself)
        self.command = command or (lambda k: [sys.executable, "-m", "broker.cli",
                                              "--config", self.configs[k]])
        self.tmp = tempfile.mkdtemp(prefix="tq-bench-cluster-")
        self.ports = [free_port() for _ in range(size)]
        self.raft_ports = [free_port() for _ in range(size)]
        self.configs = []
        for i in range(size):
            others = [j for j in range(size) if j != i]
            config = {
                "broker": {"host": "127.0.0.1", "port": self.ports[i],
                           "queue_depth_threshold": 10_000_000},
                "persistence": {"data_dir": os.path.join(self.tmp, f"n{i + 1}"),
                                "wal_sync_interval_ms": wal_sync_interval_ms},
                "raft": {"enabled": True, "node_id": f"n{i + 1}",
                         "peers": [f"127.0.0.1:{self.ports[j]}" for j in others],
                         "port": self.raft_ports[i],
                         "peer_raft_ports": [f"127.0.0.1:{self.raft_ports[j]}" for j in others],
                         "secret": SECRET, "election_timeout_ms": election_timeout_ms},
                "api": {"rest_port": 0, "grpc_port": 0},
                "monitoring": {"prometheus_port": 0, "log_level": "warning"},
            }
            path = os.path.join(self.tmp, f"n{i + 1}.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(config, f)
            self.configs.append(path)
        self.procs: list[subprocess.Popen | None] = [None] * size

    def addr(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def start(self, i: int | None = None) -> None:
        for k in ([i] if i is not None else range(len(self.ports))):
            log = open(os.path.join(self.tmp, f"n{k + 1}.log"), "ab")
            self.procs[k] = subprocess.Popen(self.command(k), cwd=ROOT, stdout=log,
                                             stderr=subprocess.STDOUT)
        for k in ([i] if i is not None else range(len(self.ports))):
            wait_for_ping(self.ports[k], 60, self.procs[k])

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p is not None:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()

    def leader(self, timeout: float = 30.0, exclude: int | None = None) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in range(len(self.ports)):
                if i == exclude or self.procs[i] is None or self.procs[i].poll() is not None:
                    continue
                try:
                    with Client(self.addr(i), connect_timeout=0.3, reply_timeout=1) as c:
                        if c.cluster()["role"] == "leader":
                            return i
                except (BrokerError, ConnectionLost, OSError):
                    pass
            time.sleep(0.01)
        raise TimeoutError("no leader")


def measure(addr: str, args, broker_pids: list[int]) -> dict:
    """The figures against ``addr``; ``broker_pids``: every broker process serving it, whose
    CPU the drain is charged with (a cluster's three nodes each apply every entry)."""
    single = figures.submit_single_latency(addr, args.single_tasks)
    out = {
        "submit_single_per_sec": round(single["per_sec"]),
        "submit_single_p50_ms": single["p50_ms"],
        "submit_single_p99_ms": single["p99_ms"],
        "submit_concurrent_per_sec": round(figures.submit_concurrent(
            addr, args.concurrent_tasks, args.clients)),
        "round_trip": figures.round_trip(addr, args.latency_samples, 4),
    }
    if not args.quick:
        out["submit_bulk_per_sec"] = round(figures.submit_bulk(addr, args.tasks))
        cpu_before = [cpu_secs(pid) for pid in broker_pids]
        out["drain_per_sec"] = round(figures.drain(addr, args.tasks, args.workers,
                                                   args.concurrency))
        # Broker CPU per drained task (the drain's bulk pre-load included, ~25 us a task on
        # a single node): every node together (what one shared host pays), and the busiest
        # node's (what bounds a cluster whose nodes have a host each).
        used = [(cpu_secs(pid) - before) / args.tasks * 1e6
                for pid, before in zip(broker_pids, cpu_before)]
        out["drain_broker_cpu_us_per_task"] = round(sum(used))
        out["drain_busiest_broker_cpu_us_per_task"] = round(max(used))
    return out


def compare(cluster: dict, single: dict) -> dict:
    """The cluster's figures as ratios to the single node's (same run)."""
    out = {}
    for key in ("submit_single_per_sec", "submit_concurrent_per_sec", "submit_bulk_per_sec",
                "drain_per_sec", "drain_broker_cpu_us_per_task",
                "drain_busiest_broker_cpu_us_per_task"):
        if cluster.get(key) and single.get(key):
            out[key.replace("_per_sec", "") + "_vs_single"] = round(cluster[key] / single[key], 3)
    out["round_trip_p50_vs_single"] = round(cluster["round_trip"]["p50_ms"]
                                            / single["round_trip"]["p50_ms"], 2)
    return out


def failovers(cluster: LocalCluster, rounds: int) -> dict:
    """Kill the leader ``rounds`` times under a steady submitter: the time from the SIGKILL
    to the first submit acknowledged after it (what a client sees), and to a new leader."""
    acked: dict[str, str] = {}
    ack_times: list[float] = []
    stop = threading.Event()

    def submitter():
        c = Client([cluster.addr(i) for i in range(len(cluster.ports))], connect_timeout=0.5,
                   reply_timeout=3)
        n = 0
        while not stop.is_set():
            n += 1
            key = f"fo-{n}"
            for _ in range(100):
                try:
                    task = c.submit("noop", n, queue="failover", idempotency_key=key)
                    acked[key] = task["id"]
                    ack_times.append(time.monotonic())
                    break
                except (BrokerError, ConnectionLost):
                    c.close()
                    c.addresses = c.addresses[1:] + c.addresses[:1]
                    c.address = None
                    time.sleep(0.02)

    thread = threading.Thread(target=submitter, daemon=True)
    thread.start()
    times, leader_times = [], []
    try:
        for _ in range(rounds):
            time.sleep(1.0)
            leader = cluster.leader()
            t0 = time.monotonic()
            cluster.kill(leader)
            cluster.leader(30, exclude=leader)
            leader_times.append(time.monotonic() - t0)
            deadline = time.monotonic() + 30
            while not (ack_times and ack_times[-1] > t0) and time.monotonic() < deadline:
                time.sleep(0.005)
            first = next((t for t in ack_times[-200:] if t > t0), None)
            times.append((first or time.monotonic()) - t0)
            cluster.start(leader)
    finally:
        stop.set()
        thread.join(30)
    time.sleep(1.0)
    leader = cluster.leader()
    with Client(cluster.addr(leader), reply_timeout=30) as c:
        present = {t["id"] for t in c.iter_tasks(queue="failover", page_size=10000)}
    lost = [k for k, tid in acked.items() if tid not in present]
    times.sort()
    return {"failover_median_secs": round(statistics.median(times), 3),
            "failover_max_secs": round(max(times), 3), "failovers": len(times),
            "failover_new_leader_median_secs": round(statistics.median(leader_times), 3),
            "failover_acked_submits": len(acked), "failover_lost": len(lost)}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench.cluster",
                                description=__doc__.split("\n")[0])
    p.add_argument("-n", "--tasks", type=int, default=20000)
    p.add_argument("--single-tasks", type=int, default=3000)
    p.add_argument("--latency-samples", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--wal-sync-interval-ms", type=int, default=100)
    p.add_argument("--election-timeout-ms", type=int, default=1000)
    p.add_argument("--failovers", type=int, default=5)
    p.add_argument("--clients", type=int, default=64, help="concurrent submitting clients")
    p.add_argument("--concurrent-tasks", type=int, default=6400)
    p.add_argument("--quick", action="store_true",
                   help="skip bulk and drain (submit, round trip, failover only)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the raw redis reference (bench/redis_ref.py)")
    p.add_argument("--skip-single", action="store_true", help="cluster figures only")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out: dict = {"wal_sync_interval_ms": args.wal_sync_interval_ms, "cpus": os.cpu_count(),
                 "election_timeout_ms": args.election_timeout_ms}
    ref = None if args.no_reference else redis_ref.reference(args.single_tasks,
                                                              args.latency_samples)
    out["reference_redis"] = ref or "unavailable (no redis-server on PATH)"
    if not args.skip_single:
        single = LocalBroker(args.wal_sync_interval_ms)
        single.start()
        try:
            out["single"] = measure(single.addr, args, [single.proc.pid])
        finally:
            single.stop()
    cluster = LocalCluster(3, args.wal_sync_interval_ms, args.election_timeout_ms)
    cluster.start()
    try:
        leader = cluster.leader()
        out["cluster"] = measure(cluster.addr(leader), args, [p.pid for p in cluster.procs])
        out["cluster"].update(redis_ref.ratios(out["cluster"], ref))
        if "single" in out:
            out["single"].update(redis_ref.ratios(out["single"], ref))
            out["cluster_vs_single"] = compare(out["cluster"], out["single"])
        if args.failovers:
            out.update(failovers(cluster, args.failovers))
    finally:
        cluster.stop()
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:<26} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
