#!/usr/bin/env python3
"""Cluster checks for the Molecule lab, run with the system python3 on a node that has the
release's tq-admin (the HAProxy/worker node). Every look at a broker goes through tq-admin.

    tq_cluster_check.py members   TQADMIN BROKER...
        the membership each reachable broker reports (tq-admin cluster-status --json)
    tq_cluster_check.py converged TQADMIN SECS IDS_FILE BROKER...
        waits until the brokers' applied indexes are read within APPLIED_WINDOW entries of
        each other (before and after reading the tables) and they hold the same task table (sha256 of the canonical JSON of tq-admin list), and
        checks that every task id in IDS_FILE is on every broker

TQADMIN is the tq-admin command line with its connection flags, as ONE argument (split on
spaces). BROKER is host:port. Prints one JSON object; exit 0 on success.
"""
import hashlib
import json
import subprocess
import sys
import time


# How many log entries apart the brokers' applied indexes may be read (see converged).
APPLIED_WINDOW = 5


def tq_admin(tq, broker, *args, timeout=120):
    out = subprocess.run(tq.split() + ["--json", "--broker-addr", broker, *args],
                         capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{broker} {' '.join(args)}: rc {out.returncode}: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def applied(tq, broker):
    return tq_admin(tq, broker, "cluster-status")["applied_index"]


def members(tq, brokers):
    seen = {}
    for broker in brokers:
        try:
            info = tq_admin(tq, broker, "cluster-status", timeout=20)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
            seen[broker] = {"error": str(exc)}
            continue
        seen[broker] = {"node_id": info.get("node_id"), "role": info.get("role"),
                        "members": sorted(n.get("node_id") or "?" for n in info.get("nodes", [])),
                        "reachable": sorted(n.get("node_id") or "?" for n in info.get("nodes", [])
                                            if n.get("reachable"))}
    return {"ok": True, "brokers": seen}


def table(tq, broker):
    tasks = tq_admin(tq, broker, "list", "--limit", "100000000")
    digest = hashlib.sha256()
    for task in sorted(tasks, key=lambda t: t["id"]):
        digest.update(json.dumps(task, sort_keys=True).encode())
    return digest.hexdigest(), {t["id"] for t in tasks}


def converged(tq, secs, ids_file, brokers):
    with open(ids_file) as fh:
        ids = {line.strip() for line in fh if line.strip()}
    deadline = time.monotonic() + secs
    last = None
    while True:
        try:
            before = {b: applied(tq, b) for b in brokers}
            tables = {b: table(tq, b) for b in brokers}
            after = {b: applied(tq, b) for b in brokers}
            digests = {b: tables[b][0] for b in brokers}
            last = {"applied_before": before, "applied_after": after, "digests": digests,
                    "tasks": {b: len(tables[b][1]) for b in brokers}}
            # A live cluster keeps committing entries that change no task (the worker's
            # heartbeats, sweeps), so the brokers' applied indexes are read within a small
            # window of each other rather than required to stand still; the task tables
            # themselves must be identical.
            window = max(after.values()) - min(before.values())
            if window <= APPLIED_WINDOW and len(set(digests.values())) == 1:
                missing = {b: sorted(ids - tables[b][1])[:10] for b in brokers}
                ok = not any(missing.values())
                return dict(last, ok=ok, ids=len(ids), missing=missing)
        except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
            last = {"error": str(exc)}
        if time.monotonic() > deadline:
            return dict(last or {}, ok=False, reason="no converged moment before the deadline")
        time.sleep(2)


def main(argv):
    mode = argv[1]
    if mode == "members":
        result = members(argv[2], argv[3:])
    elif mode == "converged":
        result = converged(argv[2], float(argv[3]), argv[4], argv[5:])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result, sort_keys=True))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
