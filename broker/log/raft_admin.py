"""``python -m broker.log.raft_admin``: change a running cluster's membership over the Raft port.

    python -m broker.log.raft_admin --config node1.yaml status
    python -m broker.log.raft_admin --config node1.yaml add 10.0.1.13:6380
    python -m broker.log.raft_admin --config node1.yaml remove 10.0.1.11:6380
    python -m broker.log.raft_admin --config node1.yaml transfer

``--config`` is any member's configuration file: it gives the shared ``raft.secret`` and the
member to talk to (its Raft address). Nodes are named by their Raft address (host:port).
``add`` and ``remove`` return when the membership entry committed. Removing the leader first
hands leadership to the most caught-up follower, then removes it through the new leader.
Add one node at a time. Exit codes: 0 done, 1 refused or timed out, 2 usage.

A node being added starts with ``raft.peers`` listing the current members (before or after
the ``add``: it is let in once the entry commits) and catches up by log or snapshot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from broker import config as cfg
from broker.log.raft_engine import HmacAuthenticator, query_status, utility


def _target(config: cfg.Config) -> str:
    host = config.advertise_address.rpartition(":")[0]
    return f"{host}:{config.raft.port or config.broker.port + 1}"


def _ok(reply) -> bool:
    return isinstance(reply, str) and reply.startswith("SUCCESS")


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker.log.raft_admin",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a member's configuration file")
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("command", choices=("status", "add", "remove", "transfer"))
    parser.add_argument("node", nargs="?", help="Raft address host:port (add, remove)")
    args = parser.parse_args(argv)
    try:
        config = cfg.load(args.config)
    except cfg.ConfigError as exc:
        print(f"raft_admin: {exc}", file=sys.stderr)
        return 2
    if not config.raft.enabled or not config.raft.secret:
        print("raft_admin: that configuration has no raft section with a secret",
              file=sys.stderr)
        return 2
    if args.command in ("add", "remove") and not args.node:
        print(f"raft_admin: {args.command} needs a node (host:raftport)", file=sys.stderr)
        return 2
    auth = HmacAuthenticator(config.raft.secret)
    member = _target(config)

    if args.command == "status":
        me = query_status(member, auth, timeout=2)
        out = {"node": me, "peers": {}}
        for peer in me.get("members", []):
            if peer != member:
                try:
                    out["peers"][peer] = query_status(peer, auth, timeout=2)
                except OSError as exc:
                    out["peers"][peer] = {"reachable": False, "error": str(exc)}
        print(json.dumps(out, indent=2, default=str))
        return 0

    if args.command == "transfer":
        reply = utility(member, auth, ["transfer"], args.timeout)
        print(reply)
        return 0 if _ok(reply) else 1

    node = args.node
    if args.command == "add":
        reply = utility(member, auth, ["add", node], args.timeout)
        print(reply)
        return 0 if _ok(reply) else 1

    # remove: a leader hands over first (pysyncobj refuses to remove the leader itself)
    try:
        target = query_status(node, auth, timeout=2)
    except OSError:
        target = {}
    via = member
    if target.get("role") == "leader":
        print(f"{node} is the leader: transferring leadership first")
        reply = utility(node, auth, ["transfer"], args.timeout)
        if not _ok(reply):
            print(reply)
            return 1
        if not _wait(lambda: query_status(node, auth, timeout=1).get("role") != "leader",
                     args.timeout):
            print("leadership did not move", file=sys.stderr)
            return 1
    if via == node:
        others = [m for m in target.get("members", []) if m != node]
        if not others:
            print("no other member to ask", file=sys.stderr)
            return 1
        via = others[0]
    reply = None
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:  # a new leader may still be settling
        reply = utility(via, auth, ["remove", node], args.timeout)
        if _ok(reply):
            break
        time.sleep(0.3)
    print(reply)
    return 0 if _ok(reply) else 1


if __name__ == "__main__":
    sys.exit(main())
