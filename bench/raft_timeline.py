"""``python -m bench.raft_timeline``: where one cluster commit's time goes, stage by stage.

Starts a 3-node cluster whose brokers run with trace hooks (this module, ``--node``),
submits ``--samples`` tasks one at a time from one blocking client, and prints the median
and p90 of each stage of a commit, from the client's send to its reply:

    client send -> leader loop propose -> commit loop hands the entry to pysyncobj ->
    the tick (on the loop) appends it to the leader's journal -> AppendEntries framed and sent ->
    follower reads it -> follower journal append -> follower's answer sent -> leader reads
    the answer -> apply -> result back on the loop -> reply -> client

Every process stamps ``time.monotonic_ns()`` (CLOCK_MONOTONIC: one clock for every process
of the machine), so stages that cross processes subtract directly. The hooks wrap methods
of pysyncobj and of ``broker.log.raft`` from the outside; nothing in the broker knows about
them. A measuring tool, not a benchmark: the hooks themselves cost a few µs per stage.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import sys
import threading
import time

_EVENTS: list = []
_LOCK = threading.Lock()


def _stamp(name: str, key=None) -> None:
    _EVENTS.append((name, time.monotonic_ns(), key, threading.get_ident()))


def _dump(path: str) -> None:
    with _LOCK:
        events, _EVENTS[:] = list(_EVENTS), []
    with open(path, "a") as f:
        for event in events:
            f.write(json.dumps(event) + "\n")


def install(trace_path: str) -> None:
    """Wrap the stages of a commit with time stamps (in this broker process)."""
    from pysyncobj import tcp_connection

    from broker.log import raft, raft_engine

    def wrap(cls, name, before=None, after=None):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            if before:
                before(self, *args)
            result = original(self, *args, **kwargs)
            if after:
                after(self, *args)
            return result
        setattr(cls, name, wrapper)

    original_propose = raft.RaftLog.propose

    async def propose(self, command):
        _stamp("propose")
        try:
            return await original_propose(self, command)
        finally:
            _stamp("propose_done")
    raft.RaftLog.propose = propose

    wrap(raft.RaftLog, "_send", before=lambda self, taken, blob: _stamp("send"))
    wrap(raft.RaftLog, "_settle", before=lambda self, *a: _stamp("settle"))
    wrap(raft.RaftLog, "_apply", before=lambda self, index, blob: _stamp("apply", index),
         after=lambda self, index, blob: _stamp("apply_done", index))
    wrap(raft_engine.DurableJournal, "add",
         before=lambda self, command, idx, term: _stamp("append", idx),
         after=lambda self, command, idx, term: _stamp("append_done", idx))

    def frame_key(message):
        if not isinstance(message, dict):
            return None
        kind = message.get("type")
        if kind == "append_entries" and message.get("entries"):
            return "ae", message["entries"][-1][1]
        if kind == "next_node_idx" and message.get("success"):
            return "ack", message["next_node_idx"] - 1
        return None

    def before_send(self, message):
        key = frame_key(message)
        if key:
            _stamp(key[0] + "_send", key[1])

    def after_send(self, message):
        key = frame_key(message)
        if key:
            _stamp(key[0] + "_sent", key[1])
    wrap(tcp_connection.TcpConnection, "send", before=before_send, after=after_send)

    def before_process(self, descr, event):
        if event & 1:
            _stamp("readable")
    wrap(tcp_connection.TcpConnection, "_TcpConnection__processConnection",
         before=before_process)

    def before_received(self, node, message):
        key = frame_key(message)
        if key:
            _stamp(key[0] + "_recv", key[1])
    wrap(raft._GuardedTransport, "_onMessageReceived", before=before_received)

    def flusher():
        while True:
            time.sleep(0.5)
            _dump(trace_path)
    threading.Thread(target=flusher, daemon=True).start()
    atexit.register(_dump, trace_path)


def run_node(config: str, trace_path: str) -> int:
    install(trace_path)
    from broker import cli
    return cli.main(["--config", config])


# ------------------------------------------------------------------------------ analysis

STAGES = [
    ("client -> leader loop (RESP read, parse, validate)", "c_send", "propose"),
    ("loop: propose -> commit loop hands the entry over", "propose", "send"),
    ("loop: handed over -> journal append starts (same tick)", "send", "append"),
    ("leader journal append", "append", "append_done"),
    ("append -> first AppendEntries framing starts", "append_done", "ae_send1"),
    ("first AppendEntries: pickle, zlib, MAC, send()", "ae_send1", "ae_sent1"),
    ("AppendEntries wire + follower wakes + parse", "ae_sent1", "f_ae_recv"),
    ("follower: AppendEntries handled, answer framed+sent", "f_ae_recv", "f_ack_sent"),
    ("answer wire + leader wakes + parse", "f_ack_sent", "ack_recv"),
    ("leader: answer read -> apply starts (commit index)", "ack_recv", "apply"),
    ("apply (state machine + RocksDB write)", "apply", "apply_done"),
    ("apply done -> proposer's future settled (same tick)", "apply_done", "settle"),
    ("loop: settle -> proposer resumes", "settle", "propose_done"),
    ("reply written -> client has it", "propose_done", "c_recv"),
]


def analyse(traces: dict[str, list], client: list[tuple[int, int]], leader: str) -> dict:
    """Per submit: the first stamp of each stage inside its client window."""
    lead = sorted(traces[leader], key=lambda e: e[1])
    first: dict = {}  # (node, name, key) -> first stamp
    for node, events in traces.items():
        for name, t, key, _ in events:
            if key is not None:
                first.setdefault((node, name, key), t)
    followers = [k for k in traces if k != leader]
    rows = []
    li = 0
    for c_send, c_recv in client:
        while li < len(lead) and lead[li][1] < c_send:
            li += 1
        row = {"c_send": c_send, "c_recv": c_recv}
        idx = None
        j = li
        while j < len(lead) and lead[j][1] <= c_recv:
            name, t, key, _ = lead[j]
            if name == "append" and idx is None and key is not None:
                idx = key
            if name in ("propose", "send", "propose_done", "settle") and name not in row:
                row[name] = t
            j += 1
        if idx is None:
            continue
        for name in ("append", "append_done", "apply", "apply_done", "ack_recv"):
            if (leader, name, idx) in first:
                row[name] = first[(leader, name, idx)]
        if (leader, "ae_sent", idx) in first:
            row["ae_sent1"] = first[(leader, "ae_sent", idx)]
            row["ae_send1"] = first[(leader, "ae_send", idx)]
        best = None  # the follower whose answer was sent first
        for node in followers:
            recv, sent = first.get((node, "ae_recv", idx)), first.get((node, "ack_sent", idx))
            if recv and sent and (best is None or sent < best[1]):
                best = (recv, sent)
        if best:
            row["f_ae_recv"], row["f_ack_sent"] = best
        rows.append(row)
    out = {"samples": len(rows), "stages": []}
    for label, a, b in STAGES:
        deltas = [(r[b] - r[a]) / 1000 for r in rows if a in r and b in r]
        if not deltas:
            continue
        deltas.sort()
        out["stages"].append({"stage": label, "p50_us": round(statistics.median(deltas)),
                              "p90_us": round(deltas[int(len(deltas) * 0.9)]),
                              "mean_us": round(statistics.fmean(deltas))})
    totals = sorted((c_recv - c_send) / 1000 for c_send, c_recv in client)
    out["round_trip_p50_us"] = round(statistics.median(totals))
    out["round_trip_p90_us"] = round(totals[int(len(totals) * 0.9)])
    out["round_trip_p99_us"] = round(totals[int(len(totals) * 0.99)])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.raft_timeline",
                                description=__doc__.split("\n")[0])
    p.add_argument("--node", nargs=2, metavar=("CONFIG", "TRACE"), help=argparse.SUPPRESS)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--wal-sync-interval-ms", type=int, default=100)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.node:
        return run_node(*args.node)

    from bench.cluster import LocalCluster
    from taskqueue.client import Client

    cluster = LocalCluster(3, args.wal_sync_interval_ms, 1000,
                           command=lambda k: [sys.executable, "-m", "bench.raft_timeline",
                                              "--node", cluster.configs[k],
                                              os.path.join(cluster.tmp, f"trace{k}.jsonl")])
    cluster.start()
    client_times = []
    try:
        leader = cluster.leader()
        with Client(cluster.addr(leader)) as client:
            for i in range(200):  # warm up: connections, caches
                client.submit("noop", i, queue="timeline-warmup")
            for i in range(args.samples):
                t0 = time.monotonic_ns()
                client.submit("noop", i, queue="timeline")
                client_times.append((t0, time.monotonic_ns()))
        time.sleep(1.2)  # the nodes' flushers write what they hold
    finally:
        cluster.stop()
    traces = {}
    for k in range(3):
        path = os.path.join(cluster.tmp, f"trace{k}.jsonl")
        with open(path) as f:
            traces[k] = [tuple(json.loads(line)) for line in f]
    out = analyse(traces, client_times, leader)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['samples']} sequential submits on a 3-node cluster "
          f"(wal_sync_interval_ms {args.wal_sync_interval_ms})")
    print(f"{'stage':<52} {'p50 µs':>8} {'p90 µs':>8} {'mean µs':>8}")
    for s in out["stages"]:
        print(f"{s['stage']:<52} {s['p50_us']:>8} {s['p90_us']:>8} {s['mean_us']:>8}")
    print(f"round trip p50 {out['round_trip_p50_us']} µs, p90 {out['round_trip_p90_us']} µs, "
          f"p99 {out['round_trip_p99_us']} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
