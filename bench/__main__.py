"""``python -m bench``: single-node figures for the task queue.

Prints submit throughput (single and bulk), drain throughput with worker processes on no-op
tasks, and round-trip latency p50/p99 (submit, then wait for completion), and the time from a chord's
last member ACK to its callback being fetchable. Starts its own
broker (``wal_sync_interval_ms`` 100 by default) unless ``--broker-addr`` names a running one.
``--backlog N`` also loads N pending tasks and reports the broker's RSS and restart time.
``--schedules N`` then defines N schedules (none of them due) and measures the drain and the
broker's RSS again beside them (bench/schedules.py).
``--json`` prints one JSON object instead of the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench import figures, redis_ref, schedules, workflows
from bench.procs import LocalBroker, wait_for_ping


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--broker-addr", help="use this running broker instead of starting one")
    p.add_argument("-n", "--tasks", type=int, default=20000, help="tasks per figure")
    p.add_argument("--single-tasks", type=int, default=5000)
    p.add_argument("--latency-samples", type=int, default=500)
    p.add_argument("--workers", type=int, default=2, help="worker processes for the drain")
    p.add_argument("--concurrency", type=int, default=64, help="per worker process")
    p.add_argument("--wal-sync-interval-ms", type=int, default=100)
    p.add_argument("--backlog", type=int, default=0,
                   help="also measure RSS and restart time with this many pending tasks")
    p.add_argument("--chord-members", type=int, default=10_000,
                   help="members of the chord timed for last-ACK-to-callback (0: skip)")
    p.add_argument("--chord-samples", type=int, default=10)
    p.add_argument("--no-reference", action="store_true",
                   help="skip the raw redis reference (bench/redis_ref.py)")
    p.add_argument("--schedules", type=int, default=0,
                   help="then define this many (not due) schedules and measure the drain "
                        "and the broker's RSS again beside them (the issue asks 10000)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    broker = None
    out: dict = {"wal_sync_interval_ms": args.wal_sync_interval_ms, "cpus": os.cpu_count()}
    if args.broker_addr:
        addr = args.broker_addr
    else:
        broker = LocalBroker(args.wal_sync_interval_ms)
        broker.start()
        addr = broker.addr
    ref = None if args.no_reference else redis_ref.reference(args.single_tasks,
                                                              args.latency_samples)
    out["reference_redis"] = ref or "unavailable (no redis-server on PATH)"
    try:
        out["submit_single_per_sec"] = round(figures.submit_single(addr, args.single_tasks))
        out["submit_single_pipelined_per_sec"] = round(
            figures.submit_single_pipelined(addr, args.tasks))
        out["submit_bulk_per_sec"] = round(figures.submit_bulk(addr, args.tasks))
        out["submit_bulk_pipelined_per_sec"] = round(
            figures.submit_bulk(addr, args.tasks, queue="bench-bulk-pipelined", in_flight=4))
        out["drain_per_sec"] = round(figures.drain(addr, args.tasks, args.workers,
                                                   args.concurrency))
        out["round_trip"] = figures.round_trip(addr, args.latency_samples, 4)
        if args.chord_members:
            out["chord_callback"] = workflows.chord_callback_latency(
                addr, args.chord_members, args.chord_samples)
        out.update(redis_ref.ratios(out, ref))
        if broker is not None:
            out["broker_rss_mb"] = round(broker.rss_mb(), 1)
        if args.schedules:
            out.update(with_schedules(addr, broker, args))
        if args.backlog and broker is not None:
            out.update(backlog(broker, args.backlog))
    finally:
        if broker is not None:
            broker.stop()
    if args.json:
        print(json.dumps(out))
    else:
        print_table(out)
    return 0


def with_schedules(addr: str, broker: LocalBroker | None, args) -> dict:
    """The drain again with ``args.schedules`` schedules defined (none of them due), and the
    broker's RSS before and after defining them."""
    n = args.schedules
    rss_before = broker.rss_mb() if broker is not None else None
    start = time.perf_counter()
    schedules.define(addr, n)
    out = {"schedules_defined": n,
           "schedules_define_secs": round(time.perf_counter() - start, 1)}
    if broker is not None:  # right after defining them, before the drain adds tasks
        out[f"broker_rss_mb_before_{n}_schedules"] = round(rss_before, 1)
        out[f"broker_rss_mb_with_{n}_schedules"] = round(broker.rss_mb(), 1)
    out[f"drain_per_sec_with_{n}_schedules"] = round(figures.drain(
        addr, args.tasks, args.workers, args.concurrency))
    return out


def backlog(broker: LocalBroker, n: int) -> dict:
    """Load ``n`` pending tasks; report RSS before and after a restart, and restart time."""
    start = time.perf_counter()
    figures.submit_bulk(broker.addr, n, queue="backlog")
    load_secs = time.perf_counter() - start
    rss_loaded = broker.rss_mb()
    broker.stop()
    restart_secs = broker.start()
    from taskqueue.client import Client

    with Client(broker.addr, identity={"worker_id": "bench-probe"}) as client:
        t0 = time.perf_counter()
        jobs = client.fetch(["backlog"], count=1, timeout_ms=5000)
        first_fetch_ms = (time.perf_counter() - t0) * 1000
        assert jobs, "no task fetched after restart"
        depth = client.queues()["backlog"]["pending"]
    return {"backlog_tasks": n, "backlog_load_secs": round(load_secs, 1),
            "backlog_rss_mb": round(rss_loaded, 1), "backlog_restart_secs": round(restart_secs, 2),
            "backlog_rss_after_restart_mb": round(broker.rss_mb(), 1),
            "backlog_first_fetch_ms": round(first_fetch_ms, 2), "backlog_pending": depth}


def print_table(out: dict) -> None:
    rt = out.pop("round_trip")
    out["round_trip_p50_ms"] = rt["p50_ms"]
    out["round_trip_p99_ms"] = rt["p99_ms"]
    chord = out.pop("chord_callback", None)
    if chord:  # last member's ACK -> callback fetched (docs/workflows.md)
        out[f"chord_{chord['members']}_last_ack_to_callback_p50_ms"] = chord["p50_ms"]
        out[f"chord_{chord['members']}_last_ack_to_callback_max_ms"] = chord["max_ms"]
    width = max(len(k) for k in out)
    for key, value in out.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
