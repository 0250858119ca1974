"""``tq-admin``: inspect and operate a task-queue broker.

    tq-admin --broker-addr 10.0.1.10:6379 cluster-status
    tq-admin queue-depth --watch 2
    tq-admin limits set emails --rate 50 --burst 10 --concurrency 8
    tq-admin list --status dead                            # a table on a terminal
    tq-admin list --status completed --limit 100000 > tasks.json   # a JSON array

Tables for people by default, ``--json`` for scripts (accepted before or after the
subcommand). Connection settings: ``--broker-addr`` (env ``TQ_BROKER_ADDR``, default
127.0.0.1:6379, a comma-separated list of cluster nodes allowed), ``--api-key`` (env
``TQ_API_KEY``), ``--tls-ca``/``--tls-cert``/``--tls-key``.

Exit codes:

====  ==============================================================================
0     success
1     the broker answered with an error (the message names its code, e.g. NOTFOUND)
2     usage error (bad arguments, bad JSON in --payload)
3     cannot connect to the broker (or the connection broke mid-command)
4     the broker answered, but the cluster is degraded: ``cluster-status`` found
      reachable nodes restored from different backups (or some not restored); the
      output is printed as usual and a warning goes to stderr
====  ==============================================================================
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator

from admin import output
from admin import schedules, workflows
from taskqueue.client import Client
from taskqueue.errors import BrokerError, ConnectionLost
from taskqueue.tlsutil import client_context_from_paths

EXIT_OK, EXIT_BROKER_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_DEGRADED = 0, 1, 2, 3, 4

STATUSES = ("scheduled", "pending", "running", "completed", "failed", "dead", "cancelled")
QUEUE_COLUMNS = ("scheduled", "pending", "running", "failed", "completed", "dead",
                 "cancelled")


class UsageError(Exception):
    pass


# ----------------------------------------------------------------------------- commands
# Each takes (client, args) and returns what to print as JSON; ``args.json`` false means
# it is printed by the command's ``human`` renderer instead.

def cmd_cluster_status(client, args):
    return client.cluster()


def show_cluster(info):
    # caught_up false: this node re-syncs (lost disk, restore); its reads are incomplete
    syncing = "   (catching up with the leader)" if info.get("caught_up") is False else ""
    print(f"mode: {info.get('mode')}   node: {info.get('node_id')}   "
          f"leader: {info.get('leader') or '-'}{syncing}")
    output.table(["node_id", "address", "role", "term", "commit_index", "applied_index",
                  "lag", "reachable", "restored_from"],
                 [[*(n.get(k) for k in ("node_id", "address", "role", "term", "commit_index",
                                        "applied_index", "lag", "reachable")),
                   _restored_label(n)]
                  for n in info.get("nodes", [])])


def _restored_label(node) -> str:
    """``SHA256[:12]@INDEX`` of the backup a node's data was restored from; ``-`` never
    restored; ``?`` unknown (a peer that is unreachable and never said)."""
    restored = node.get("restored")
    if isinstance(restored, dict):
        return f"{str(restored.get('backup_sha256') or '?')[:12]}@" \
               f"{restored.get('backup_applied_index')}"
    if "restored" not in node or (restored is None and not node.get("reachable")):
        return "?"
    return "-"


def check_cluster(info) -> int:
    """Exit code of cluster-status: EXIT_DEGRADED, with a warning on stderr, when the
    broker found reachable nodes that were restored from different backups."""
    if not isinstance(info, dict) or not info.get("restore_mismatch"):
        return EXIT_OK
    seen = ", ".join(f"{n.get('node_id')} " + ("not restored" if n.get("restored") is None
                                                else _restored_label(n))
                     for n in info.get("nodes", []) if n.get("reachable"))
    print("tq-admin: WARNING: the nodes' data comes from different restores (another "
          f"backup, or a node not restored): {seen}. They apply the same log to different "
          "data and diverge silently. Stop every broker and restore the SAME backup on "
          "EVERY node (tq-broker --config FILE --restore BACKUP; docs/operations.md, "
          "Restoring a cluster).", file=sys.stderr)
    return EXIT_DEGRADED


def cmd_workers(client, args):
    return client.workers()


def show_workers(workers):
    now = time.time()
    output.table(["worker_id", "hostname", "pid", "queues", "concurrency", "running",
                  "state", "last_seen"],
                 [[w.get("worker_id"), w.get("hostname"), w.get("pid"), w.get("queues"),
                   w.get("concurrency"), _count(w.get("running")), w.get("state"),
                   output.age(w.get("last_seen"), now)] for w in workers])


def _count(value):
    return len(value) if isinstance(value, (list, tuple)) else value


def cmd_queue_depth(client, args):
    return client.queues()


def show_queues(queues):
    limited = any(q.get("limit") for q in queues.values())
    output.table(["queue", *QUEUE_COLUMNS, "paused", *(("rate", "concurrency")
                                                       if limited else ())],
                 [[name, *(q.get(c, 0) for c in QUEUE_COLUMNS), q.get("paused", False),
                   *(_limit_usage(q.get("limit")) if limited else ())]
                  for name, q in sorted(queues.items())])


def _limit_usage(limit) -> tuple[str, str]:
    """("50/s burst 10 (3 left)", "4/8 running") or "-" where a queue has no such limit."""
    if not limit:
        return "-", "-"
    rate = "-"
    if limit.get("rate") is not None:
        rate = (f"{limit['rate']:g}/s burst {limit['burst']} "
                f"({int(limit.get('tokens') or 0)} left)")
    running = "-"
    if limit.get("concurrency") is not None:
        running = f"{limit.get('running', 0)}/{limit['concurrency']} running"
    return rate, running


def cmd_limits(client, args):
    if args.action in ("set", "clear") and not args.queue:
        raise UsageError(f"limits {args.action} needs a QUEUE")
    if args.action == "set":
        if args.rate is None and args.concurrency is None:
            raise UsageError("limits set needs --rate, --concurrency or both")
        return {args.queue: client.set_limit(args.queue, rate=args.rate, burst=args.burst,
                                             concurrency=args.concurrency)}
    if args.action == "clear":
        return client.clear_limit(args.queue)
    return client.limits(args.queue)


def show_limits(reply):
    if "cleared" in reply:
        print(f"queue {reply['queue']}: " + ("limit cleared" if reply["cleared"]
                                             else "had no limit"))
        return
    output.table(["queue", "rate", "concurrency", "throttled (rate)",
                  "throttled (concurrency)"],
                 [[name, *_limit_usage(limit), limit.get("throttled_rate", 0),
                   limit.get("throttled_concurrency", 0)]
                  for name, limit in sorted(reply.items())])


def cmd_stats(client, args):
    return client.stats()


def cmd_list(client, args):
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    # A generator: the output streams it, so exporting 100,000 tasks needs no more memory
    # than one page.
    return client.iter_tasks(status=args.status, queue=args.queue, type=args.type,
                             limit=args.limit)


def show_tasks(tasks, stream=None):
    """The tasks ``list`` found as a table: times readable, the widest columns cut to the
    terminal (``--json`` prints the whole objects)."""
    stream = stream or sys.stdout
    now = time.time()
    rows = [(t.get("id"), t.get("queue"), t.get("type"), t.get("status"), t.get("priority"),
             t.get("attempts"), output.timestamp(t.get("created_at")),
             output.age(t.get("updated_at"), now), _task_detail(t)) for t in tasks]
    headers = ["id", "queue", "type", "status", "pri", "tries", "created", "updated",
               "detail"]
    # Cut the detail first, then type and queue; never the id (get/cancel/requeue take it).
    output.table(headers, rows, stream, width=output.terminal_width(stream),
                 shrink=(8, 2, 1))


def _task_detail(task: dict) -> str:
    """What one wants to know of a task at a glance: why it failed, what it returned, or
    what it was given."""
    if task.get("error") and task.get("status") in ("failed", "dead", "scheduled"):
        return str(task["error"]).splitlines()[0]
    if task.get("status") == "completed":
        return "result " + json.dumps(task.get("result"), ensure_ascii=False)
    return "payload " + json.dumps(task.get("payload"), ensure_ascii=False)


def cmd_get(client, args):
    if getattr(args, "wait", None) is not None:
        # Block until the task is completed, dead or cancelled (or --wait seconds pass).
        return client.wait(args.id, timeout=args.wait)
    return client.get(args.id)


def show_task(task):
    shown = dict(task)
    for key in ("created_at", "updated_at", "started_at", "finished_at", "run_at",
                "lease_expires_at"):
        if shown.get(key) is not None:
            shown[key] = output.timestamp(shown[key])
    backtrace = shown.pop("backtrace", None)
    output.key_values(shown, flatten=False)
    if backtrace:
        print("backtrace:\n" + backtrace.rstrip())


def cmd_cancel(client, args):
    return client.cancel(args.id)


def cmd_requeue(client, args):
    return client.requeue(args.id)


def show_task_state(task):
    print(f"{task['id']}  {task['status']}")


def cmd_pause(client, args):
    client.pause(args.queue)
    return {"queue": args.queue, "paused": True}


def cmd_resume(client, args):
    client.resume(args.queue)
    return {"queue": args.queue, "paused": False}


def show_pause(reply):
    print(f"queue {reply['queue']} {'paused' if reply['paused'] else 'resumed'}")


def cmd_worker_state(client, args):
    client.worker_state(args.worker_id, args.state)
    return {"worker_id": args.worker_id, "state": args.state}


def cmd_create_snapshot(client, args):
    progress = output.Progress(None, f"writing snapshot {args.path}")
    progress.update(0)
    try:
        return client.snapshot(args.path)
    finally:
        progress.done()


IMPORT_BATCH = 1000


def cmd_import(client, args):
    """Submit the tasks of a JSON array (e.g. `tq-admin list --json` output) in bulk requests.

    Tasks keep their ids, so importing the same file twice creates nothing new
    (the second run reports them as duplicates).
    """
    try:
        with (sys.stdin if args.file == "-" else open(args.file)) as f:
            tasks = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        hint = (" (a `tq-admin list --table` table? export with `tq-admin list --json`)"
                if isinstance(exc, json.JSONDecodeError) else "")
        raise UsageError(f"cannot read tasks from {args.file}: {exc}{hint}") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise UsageError(f"{args.file}: expected a JSON array of task objects")
    counts = {"imported": 0, "duplicates": 0, "failed": 0}
    errors = []
    progress = output.Progress(len(tasks), "importing")
    for first in range(0, len(tasks), IMPORT_BATCH):
        for task, result in zip(tasks[first:first + IMPORT_BATCH],
                                client.submit_bulk(tasks[first:first + IMPORT_BATCH])):
            if "error" in result and "id" not in result:
                counts["failed"] += 1
                errors.append({"id": task.get("id"), **result["error"]})
            elif result.get("duplicate"):
                counts["duplicates"] += 1
            else:
                counts["imported"] += 1
        progress.update(min(len(tasks), first + IMPORT_BATCH))
    progress.done()
    return {**counts, "errors": errors[:20]}


def show_import(reply):
    print(f"imported {reply['imported']}, duplicates {reply['duplicates']}, "
          f"failed {reply['failed']}")
    for error in reply["errors"]:
        print(f"  {error.get('id')}: {error.get('code')} {error.get('message')}")


def show_snapshot(reply):
    print(f"snapshot written to {reply.get('path')} (applied index {reply.get('applied_index')})")


def cmd_submit(client, args):
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--payload is not valid JSON: {exc}") from None
    options = {"queue": args.queue, "priority": args.priority, "max_retries": args.max_retries,
               "delay_secs": args.delay_secs, "timeout_secs": args.timeout_secs,
               "idempotency_key": args.idempotency_key, "id": args.id}
    return client.submit(args.type, payload, **options)


def cmd_hash_key(args):
    """bcrypt hash of an API key, for auth.api_keys[].key_hash (needs no broker)."""
    try:
        import bcrypt
    except ImportError:
        raise UsageError("hash-key needs the bcrypt package: pip install bcrypt "
                         "(or pip install 'task-queue[broker]')") from None
    key = args.key if args.key is not None else sys.stdin.readline().rstrip("\n")
    if not key:
        raise UsageError("empty key")
    if len(key.encode()) > 72:
        # bcrypt looks at 72 bytes at most: a longer key could never log in.
        raise UsageError(f"the key is {len(key.encode())} bytes; API keys are at most 72 "
                         "bytes (bcrypt's limit): openssl rand -base64 32 makes a 44-byte one")
    hashed = bcrypt.hashpw(key.encode(), bcrypt.gensalt(rounds=args.rounds)).decode()
    return {"key_hash": hashed}


# name -> (function, human renderer); a renderer of None prints the JSON anyway.
# CHECKS: name -> a function of the result giving the exit code (after printing it).
COMMANDS = {
    "cluster-status": (cmd_cluster_status, show_cluster),
    "workers": (cmd_workers, show_workers),
    "queue-depth": (cmd_queue_depth, show_queues),
    "stats": (cmd_stats, output.key_values),
    "limits": (cmd_limits, show_limits),
    "list": (cmd_list, show_tasks),  # see JSON_WHEN_PIPED
    "get": (cmd_get, show_task),
    "cancel": (cmd_cancel, show_task_state),
    "requeue": (cmd_requeue, show_task_state),
    "pause": (cmd_pause, show_pause),
    "resume": (cmd_resume, show_pause),
    "worker-state": (cmd_worker_state,
                     lambda r: print(f"worker {r['worker_id']} set {r['state']}")),
    "create-snapshot": (cmd_create_snapshot, show_snapshot),
    "submit": (cmd_submit, show_task_state),
    "import": (cmd_import, show_import),
    "hash-key": (None, lambda r: print(r["key_hash"])),
    "workflows": (workflows.run, workflows.show),
    "schedules": (schedules.run, schedules.show),
}
CHECKS = {"cluster-status": check_cluster}
# A table on a terminal, the JSON array when the output is a pipe or a file (the deployment
# guide exports with `tq-admin list ... > tasks.json` and pipes it into jq); --table forces
# the table, --json the array.
JSON_WHEN_PIPED = {"list"}


# ----------------------------------------------------------------------------- parsing

def _connection_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The global flags; on subcommands with SUPPRESSed defaults, so that giving them
    after the subcommand works and not giving them keeps the global value."""
    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--broker-addr",
                        default=default(os.environ.get("TQ_BROKER_ADDR", "127.0.0.1:6379")),
                        help="HOST:PORT or a comma-separated list (env TQ_BROKER_ADDR)")
    parser.add_argument("--api-key", default=default(None), help="API key (env TQ_API_KEY)")
    parser.add_argument("--tls-ca", default=default(os.environ.get("TQ_TLS_CA")),
                        help="CA bundle for the broker (env TQ_TLS_CA)")
    parser.add_argument("--tls-cert", default=default(os.environ.get("TQ_TLS_CERT")),
                        help="client certificate (env TQ_TLS_CERT)")
    parser.add_argument("--tls-key", default=default(os.environ.get("TQ_TLS_KEY")),
                        help="client certificate key (env TQ_TLS_KEY)")
    parser.add_argument("--tls-server-name",
                        default=default(os.environ.get("TQ_TLS_SERVER_NAME")),
                        help="name the broker's certificate is issued to, when it is not "
                        "the host in --broker-addr (env TQ_TLS_SERVER_NAME)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print JSON instead of tables")


MEMBERSHIP = {"add-node": "add", "remove-node": "remove", "transfer-leader": "transfer"}


def cmd_membership(args) -> int:
    """Delegates to the broker's Raft membership tool (needs the broker package)."""
    try:
        from broker.log import raft_admin
    except ImportError as exc:
        raise UsageError(f"{args.command} runs on a broker node (needs the broker's "
                         f"dependencies: {exc})") from None
    argv = ["--config", args.config, "--timeout", str(args.timeout), MEMBERSHIP[args.command]]
    if getattr(args, "node", None):
        argv.append(args.node)
    return raft_admin.main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tq-admin", description="Inspect and operate a task-queue broker.",
        epilog="exit codes: 0 ok, 1 broker error reply, 2 usage, 3 cannot connect, "
        "4 cluster degraded (cluster-status: nodes restored from different backups)")
    _connection_flags(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _connection_flags(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, help_text):
        return sub.add_parser(name, help=help_text, parents=[common], description=help_text)

    for name, text in (("cluster-status", "the cluster's nodes, roles and replication lag"),
                       ("queue-depth", "tasks per queue and state")):
        add(name, text).add_argument("--watch", type=float, metavar="SECS",
                                     help="refresh every SECS seconds until Ctrl-C")
    add("workers", "connected workers")
    p = add("limits", "rate and concurrency limits per queue: get [QUEUE], set QUEUE "
            "--rate N [--burst B] --concurrency M, clear QUEUE")
    p.add_argument("action", choices=("get", "set", "clear"))
    p.add_argument("queue", nargs="?")
    p.add_argument("--rate", type=float, help="tasks started per second, cluster-wide")
    p.add_argument("--burst", type=int, help="bucket size (default: one second of --rate)")
    p.add_argument("--concurrency", type=int, help="tasks running at once, cluster-wide")
    add("stats", "task counts, rates and RocksDB figures")
    p = add("list", "tasks as a table on a terminal; into a pipe or a file (or with "
            "--json) as a JSON array, streamed (follows cursors up to --limit)")
    p.add_argument("--table", action="store_true",
                   help="a table even into a pipe or a file (`tq-admin list --table | less`)")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--queue")
    p.add_argument("--type")
    p.add_argument("--limit", type=int, default=100)
    for name, text in (("get", "one task"), ("cancel", "cancel a task"),
                       ("requeue", "put a dead or cancelled task back to pending")):
        p = add(name, text)
        p.add_argument("id")
        if name == "get":
            p.add_argument("--wait", type=float, metavar="SECS", help="wait up to SECS (at most 300) for the task to finish")
    add("pause", "stop handing out a queue's jobs").add_argument("queue")
    add("resume", "resume a paused queue").add_argument("queue")
    p = add("worker-state", "ask a worker to go quiet, stop, or become active again")
    p.add_argument("worker_id")
    p.add_argument("state", choices=("quiet", "stop", "active"))
    add("create-snapshot", "write a consistent RocksDB checkpoint on the broker's host"
        ).add_argument("path")
    # Membership changes speak the Raft port with the cluster secret, so they read a
    # member's configuration file instead of --broker-addr (run them on a broker node).
    for name, text, node in (
            ("add-node", "add a broker to the Raft cluster (by its Raft address)", True),
            ("remove-node", "remove a broker (a leader hands over first)", True),
            ("transfer-leader", "hand leadership to the most caught-up follower", False)):
        p = add(name, text)
        p.add_argument("--config", required=True, help="a member's configuration file")
        p.add_argument("--timeout", type=float, default=15.0)
        if node:
            p.add_argument("node", help="Raft address host:port (broker port + 1 by default)")
    p = add("hash-key", "print the bcrypt hash of an API key for auth.api_keys")
    p.add_argument("key", nargs="?", help="the key (default: read one line from stdin)")
    p.add_argument("--rounds", type=int, default=10)
    add("import", "submit the tasks of a JSON array file (tq-admin list --json output) in "
        "bulk, with a progress bar").add_argument("file", help="file, or - for standard input")
    workflows.add_parser(add)
    schedules.add_parser(add)
    p = add("submit", "submit one task (handy for smoke tests)")
    p.add_argument("type")
    p.add_argument("--payload", default="null", help="JSON (default null)")
    p.add_argument("--queue")
    p.add_argument("--priority", type=int)
    p.add_argument("--max-retries", type=int)
    p.add_argument("--delay-secs", type=float)
    p.add_argument("--timeout-secs", type=float)
    p.add_argument("--idempotency-key")
    p.add_argument("--id")
    return parser


# ----------------------------------------------------------------------------- running

def _print(args, result) -> None:
    _, human = COMMANDS[args.command]
    if args.command in JSON_WHEN_PIPED and not (getattr(args, "table", False)
                                                or sys.stdout.isatty()):
        human = None  # `tq-admin list > tasks.json`, `| jq`: the deployment guide's export
    if args.json or human is None:
        if isinstance(result, Iterator):
            output.json_array(result)  # item by item: an export of 100,000 tasks streams
        else:
            output.to_json(result)
    else:
        human(result)


def _run_once(client: Client, args):
    function, _ = COMMANDS[args.command]
    result = function(client, args)
    _print(args, result)
    return result


def _exit_code(args, result) -> int:
    check = CHECKS.get(args.command)
    if check is None:
        return EXIT_OK
    sys.stdout.flush()  # the output first, then the warning (stderr)
    return check(result)


def _watch(client: Client, args) -> int:
    """Refresh until Ctrl-C; the exit code is the last refresh's."""
    clear = sys.stdout.isatty() and not args.json
    code = EXIT_OK
    try:
        while True:
            if clear:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(time.strftime("%H:%M:%S"), f"(every {args.watch:g}s, Ctrl-C to stop)")
            code = _exit_code(args, _run_once(client, args))
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        pass
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "hash-key":
            _print(args, cmd_hash_key(args))
            return EXIT_OK
        if args.command in MEMBERSHIP:
            return cmd_membership(args)
        ssl_context = client_context_from_paths(args.tls_ca, args.tls_cert, args.tls_key,
                                                args.tls_server_name)
        with Client(args.broker_addr, api_key=args.api_key, ssl_context=ssl_context) as client:
            if getattr(args, "watch", None):
                return _watch(client, args)
            elif args.command == "import":
                # a partial import is a failure an operator's script must notice
                if _run_once(client, args)["failed"]:
                    return EXIT_BROKER_ERROR
            else:
                return _exit_code(args, _run_once(client, args))
    except (UsageError, workflows.UsageError, schedules.UsageError) as exc:
        print(f"tq-admin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokerError as exc:
        print(f"tq-admin: the broker refused: {exc}", file=sys.stderr)
        return EXIT_BROKER_ERROR
    except ConnectionLost as exc:
        # A failed connect says "cannot connect to the broker: HOST:PORT: why[; ...]" for
        # each address tried: name each once.
        text, tried = str(exc), "cannot connect to the broker: "
        where = text[len(tried):] if text.startswith(tried) else f"{args.broker_addr}: {text}"
        print(f"tq-admin: cannot reach the broker at {where}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except BrokenPipeError:  # `tq-admin list | head`
        return EXIT_OK
    except (ValueError, OSError) as exc:  # bad address, unreadable TLS files
        print(f"tq-admin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
