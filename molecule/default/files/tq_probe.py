#!/usr/bin/env python3
"""Client-side probe for the Molecule lab, run on the HAProxy node with the system python3.

    tq_probe.py once   URL KEY CA             submit one echo task, wait for it to complete
    tq_probe.py load   URL KEY CA DIR         submit tasks until DIR/stop exists; every task
                                              acknowledged with 201 is appended to DIR/acked
    tq_probe.py check  URL KEY CA DIR [SECS]  every acknowledged task exists and completed

Prints one JSON object; exit 0 on success. URL is the REST base, e.g. https://lb:8080.
With mutual TLS, TQ_TLS_CERT and TQ_TLS_KEY (as for tq-worker and tq-admin) name the client
certificate and key to present.
"""
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request


def request(method, url, key, ctx, body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError) as exc:
        return 0, str(exc)


def submit(base, key, ctx, payload):
    return request("POST", f"{base}/api/v1/tasks", key, ctx, {"type": "echo", "payload": payload})


def status_of(base, key, ctx, task_id):
    code, body = request("GET", f"{base}/api/v1/tasks/{task_id}", key, ctx)
    return code, (body or {}).get("status") if isinstance(body, dict) else None


def once(base, key, ctx, timeout=60.0):
    code, body = submit(base, key, ctx, {"probe": time.time()})
    if code != 201:
        return {"ok": False, "submit_status": code, "body": body}
    task_id = body["id"]
    deadline = time.monotonic() + timeout
    status = body.get("status")
    while time.monotonic() < deadline:
        _, status = status_of(base, key, ctx, task_id)
        if status == "completed":
            return {"ok": True, "id": task_id, "status": status}
        time.sleep(0.5)
    return {"ok": False, "id": task_id, "status": status}


def load(base, key, ctx, out):
    os.makedirs(out, exist_ok=True)
    acked = errors = 0
    n = 0
    with open(os.path.join(out, "acked"), "a", buffering=1) as log:
        while not os.path.exists(os.path.join(out, "stop")):
            n += 1
            code, body = submit(base, key, ctx, {"n": n})
            if code == 201 and isinstance(body, dict) and body.get("id"):
                log.write(body["id"] + "\n")
                acked += 1
            else:
                errors += 1
            if n % 50 == 0:
                with open(os.path.join(out, "progress.json"), "w") as fh:
                    json.dump({"sent": n, "acked": acked, "errors": errors}, fh)
            time.sleep(0.1)
    summary = {"sent": n, "acked": acked, "errors": errors}
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(summary, fh)
    return summary


def completed_ids(base, key, ctx):
    """Every completed task's id, read in pages of 10,000 (GET /api/v1/tasks?status=...).
    One request per page instead of one per task: the lab acknowledges thousands of tasks,
    and a TLS handshake plus an API-key check for each took minutes."""
    ids, cursor = set(), None
    while True:
        query = "status=completed&limit=10000" + (f"&cursor={cursor}" if cursor else "")
        code, body = request("GET", f"{base}/api/v1/tasks?{query}", key, ctx, timeout=60)
        if code != 200 or not isinstance(body, dict):
            return None  # the listing failed (a failover under way): ask again later
        ids.update(task["id"] for task in body.get("tasks", []))
        cursor = body.get("next_cursor")
        if not cursor:
            return ids


def check(base, key, ctx, out, timeout=120.0):
    with open(os.path.join(out, "acked")) as fh:
        ids = [line.strip() for line in fh if line.strip()]
    pending = list(dict.fromkeys(ids))
    missing, deadline = [], time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        done = completed_ids(base, key, ctx)
        if done is not None:
            pending = [task_id for task_id in pending if task_id not in done]
        # Only the tasks not listed as completed are looked up one by one, to tell a task
        # still on its way (pending, running) from one the cluster lost (404).
        still, missing = [], []
        for task_id in pending if len(pending) <= 200 else ():
            code, status = status_of(base, key, ctx, task_id)
            if code == 404:
                missing.append(task_id)
            elif status != "completed":
                still.append(task_id)
        if len(pending) <= 200:
            pending = still
        if pending:
            time.sleep(2)
    return {"ok": not pending and not missing, "acked": len(ids), "missing": missing[:20],
            "missing_count": len(missing), "not_completed": pending[:20],
            "not_completed_count": len(pending)}


def main(argv):
    mode, base, key, cafile = argv[1:5]
    ctx = ssl.create_default_context(cafile=cafile)
    if os.environ.get("TQ_TLS_CERT"):
        ctx.load_cert_chain(os.environ["TQ_TLS_CERT"], os.environ.get("TQ_TLS_KEY") or None)
    if mode == "once":
        result = once(base, key, ctx)
    elif mode == "load":
        result = load(base, key, ctx, argv[5])
        result["ok"] = True
    elif mode == "check":
        result = check(base, key, ctx, argv[5], float(argv[6]) if len(argv) > 6 else 120.0)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
