"""``tq-admin workflows submit|get|cancel``: workflows (docs/workflows.md) from the shell.

    tq-admin workflows submit flow.json        # {"id"?, "workflow": {...}} or just the tree
    tq-admin workflows get ID [--limit N]
    tq-admin workflows cancel ID
"""

from __future__ import annotations

import argparse
import json
import sys

from admin import output


class UsageError(Exception):
    pass


def add_parser(add) -> None:
    """Register the subcommand (``add(name, help)`` returns an argparse parser)."""
    p = add("workflows", "submit, show or cancel a workflow (chain, group, chord)")
    actions = p.add_subparsers(dest="workflow_action", metavar="ACTION", required=True)
    s = actions.add_parser("submit", help="submit a workflow from a JSON file (- for stdin)")
    s.add_argument("file")
    s.add_argument("--id", help="the workflow id (default: the file's, else a new one)")
    g = actions.add_parser("get", help="a workflow's status, group progress and tasks")
    g.add_argument("id")
    g.add_argument("--limit", type=int, default=None, help="at most this many tasks")
    c = actions.add_parser("cancel", help="cancel what has not run yet")
    c.add_argument("id")
    for action in (s, g, c):  # --json after the action too, like every other subcommand
        action.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                            help="print JSON instead of tables")


def run(client, args):
    action = args.workflow_action
    if action == "submit":
        try:
            text = sys.stdin.read() if args.file == "-" else open(args.file).read()
            document = json.loads(text)
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{args.file}: {exc}") from None
        if isinstance(document, dict) and "workflow" in document:
            tree, flow_id = document["workflow"], document.get("id")
        else:
            tree, flow_id = document, None
        return client.submit_workflow(tree, id=args.id or flow_id)
    if action == "get":
        return client.get_workflow(args.id, args.limit)
    return client.cancel_workflow(args.id)


def show(result) -> None:
    if "tasks" not in result:  # submit / cancel: the summary
        extra = f"  ({result['cancelled_tasks']} tasks cancelled)" if "cancelled_tasks" in (
            result) else ""
        print(f"{result['id']}  {result['status']}  {result['size']} tasks"
              f"{'  (already submitted)' if result.get('duplicate') else ''}{extra}")
        return
    head = {k: result.get(k) for k in ("id", "status", "size", "error")}
    for key in ("created_at", "finished_at"):
        if result.get(key) is not None:
            head[key] = output.timestamp(result[key])
    output.key_values(head, flatten=False)
    for g in result["groups"]:
        print(f"  {g['role']}: {g['completed']}/{g['size']} completed, {g['dead']} dead, "
              f"{g['cancelled']} cancelled")
    for t in result["tasks"]:
        print(f"  {t['status']:<10} {t['id']}  {t['role']}")
    if result.get("tasks_truncated"):
        print(f"  ... {result['size'] - len(result['tasks'])} more (--limit)")
