"""``tq-admin schedules list|get|create|update|pause|resume|delete|run``.

    tq-admin schedules create nightly --cron "30 2 * * *" --tz Europe/Berlin --type report
    tq-admin schedules create spec.json          # a whole schedule as JSON (- for stdin)
    tq-admin schedules update nightly --misfire all --misfire-limit 10
    tq-admin schedules list                      # next fire time and last slot per schedule
"""

from __future__ import annotations

import argparse
import json
import sys

from admin import output


class UsageError(Exception):
    pass


ACTIONS = ("list", "get", "create", "update", "pause", "resume", "delete", "run")


def add_parser(add) -> None:
    p = add("schedules", "periodic tasks: " + "|".join(ACTIONS))
    actions = p.add_subparsers(dest="schedule_action", metavar="ACTION", required=True)
    made = [actions.add_parser("list", help="every schedule, its next fire and last slot")]
    for name, text in (("get", "one schedule"), ("pause", "stop firing"),
                       ("resume", "fire again from the next slot"), ("delete", "remove it"),
                       ("run", "enqueue its task once, now")):
        made.append(actions.add_parser(name, help=text))
        made[-1].add_argument("id")
    for name, text in (("create", "a new schedule (options, or a JSON file)"),
                       ("update", "change the given fields")):
        a = actions.add_parser(name, help=text)
        a.add_argument("id", help="the schedule id, or a JSON file with the whole schedule")
        a.add_argument("--cron", help='"minute hour day month weekday [second]"')
        a.add_argument("--tz", help="IANA time zone of --cron (default UTC)")
        a.add_argument("--interval", type=int, dest="interval_secs", metavar="SECS")
        a.add_argument("--type", help="the task's type (its handler)")
        a.add_argument("--queue")
        a.add_argument("--payload", help="the task's payload, JSON")
        a.add_argument("--priority", type=int)
        a.add_argument("--max-retries", type=int)
        a.add_argument("--timeout", type=float, dest="timeout_secs", metavar="SECS")
        a.add_argument("--misfire", choices=("skip", "once", "all"))
        a.add_argument("--misfire-limit", type=int)
        a.add_argument("--misfire-grace", type=int, dest="misfire_grace_secs", metavar="SECS")
        a.add_argument("--jitter", type=float, dest="jitter_secs", metavar="SECS")
        a.add_argument("--start-at", type=float, metavar="UNIX_SECS")
        a.add_argument("--end-at", type=float, metavar="UNIX_SECS")
        a.add_argument("--paused", action="store_true", default=None)
        made.append(a)
    for action in made:
        action.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                            help="print JSON instead of tables")


def _spec(args) -> dict:
    if args.id.endswith(".json") or args.id == "-":
        try:
            text = sys.stdin.read() if args.id == "-" else open(args.id).read()
            return json.loads(text)
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{args.id}: {exc}") from None
    spec: dict = {"id": args.id}
    for name in ("cron", "tz", "interval_secs", "misfire", "misfire_limit",
                 "misfire_grace_secs", "jitter_secs", "start_at", "end_at", "paused"):
        if getattr(args, name) is not None:
            spec[name] = getattr(args, name)
    task = {}
    for name in ("type", "queue", "priority", "max_retries", "timeout_secs"):
        if getattr(args, name) is not None:
            task[name] = getattr(args, name)
    if args.payload is not None:
        try:
            task["payload"] = json.loads(args.payload)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--payload: not JSON: {exc}") from None
    if task:
        spec["task"] = task
    return spec


def run(client, args):
    action = args.schedule_action
    if action == "list":
        rows, after = [], None
        while True:  # follow the cursor: a list is every schedule
            page = client.schedules(after=after, limit=1000)
            rows.extend(page["schedules"])
            after = page["next_cursor"]
            if after is None:
                return {"schedules": rows, "counts": page["counts"]}
    if action == "create":
        return client.create_schedule(_spec(args))
    if action == "update":
        spec = _spec(args)
        return client.update_schedule(spec.pop("id"), **spec)
    if action == "get":
        return client.schedule(args.id)
    if action == "delete":
        return client.delete_schedule(args.id)
    if action == "run":
        return client.run_schedule(args.id)
    if action == "pause":
        return client.pause_schedule(args.id)
    return client.resume_schedule(args.id)


def _when(value) -> str:
    return "-" if value is None else output.timestamp(value)


def show(result) -> None:
    if "schedules" in result:
        output.table(["ID", "WHEN", "TZ", "STATE", "NEXT FIRE", "LAST SLOT", "FIRED",
                      "MISFIRES", "TYPE", "QUEUE"],
                     [[s["id"], s["cron"] or f"every {s['interval_secs']}s", s["tz"],
                       s["state"], _when(s["next_fire_at"]), _when(s["last_slot_at"]),
                       s["fired"], s["misfires"], s["task"]["type"], s["task"]["queue"]]
                      for s in result["schedules"]])
        counts = result["counts"]
        print(f"{counts['total']} schedules, {counts['paused']} paused")
        return
    if "deleted" in result:
        print(f"schedule {result['id']}: " + ("deleted" if result["deleted"] else "not found"))
        return
    if "state" not in result:  # run: the task it enqueued
        print(f"{result['id']}  {result['status']}")
        return
    head = dict(result)
    head.pop("read_from", None)
    for key in ("next_fire_at", "last_slot_at", "last_fired_at", "created_at", "updated_at",
                "start_at", "end_at"):
        head[key] = _when(head.get(key))
    output.key_values(head, flatten=False)
