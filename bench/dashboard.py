"""``python -m bench.dashboard``: how fast the dashboard's pages load with a big store.

Starts a broker (REST on, auth off), fills it with ``--tasks`` pending tasks over RESP bulk
submits (4 queues, 7 types) plus a few dead tasks, a rare type, workflows and schedules,
then times (a) the REST calls the pages make and (b) each page in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, through Selenium): from navigation until its table
is drawn. ``--data-dir`` keeps the store, so a second run skips the fill. ``--json`` prints
one JSON object. docs/dashboard.md quotes a run with 1,000,000 tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import yaml

from bench.procs import ROOT, free_port, wait_for_ping
from taskqueue.client import Client

QUEUES = ("emails", "images", "reports", "billing")
# (page, CSS selector that is there once the page has drawn its data)
PAGES = (("overview", "[data-testid=throughput-chart] svg"),
         ("queues", "tr[data-queue=emails]"),
         ("tasks", "tr[data-id]"),
         ("tasks?status=pending&queue=billing", "tr[data-id]"),
         ("tasks?type=rare", "tr[data-id]"),
         ("failed?status=dead", "tr[data-id]"),
         ("scheduled", "tr[data-id]"),
         ("schedules", "tr[data-schedule]"),
         ("workflows", "tr[data-workflow]"),
         ("workers", "table.grid"),
         ("cluster", "[data-node]"))
API = ("/api/v1/stats", "/api/v1/queues", "/api/v1/tasks?limit=50",
       "/api/v1/tasks?status=pending&queue=billing&limit=50", "/api/v1/tasks?type=rare&limit=50",
       "/api/v1/tasks?type=rare&queue=emails&limit=50", "/api/v1/tasks?queue=billing&limit=50",
       "/api/v1/tasks?status=dead&limit=50", "/api/v1/tasks?status=scheduled&limit=50",
       "/api/v1/schedules?limit=50", "/api/v1/workflows?limit=50", "/api/v1/limits",
       "/api/v1/workers", "/api/v1/cluster")


def start_broker(data_dir: str, tmp: str):
    port, rest = free_port(), free_port()
    config = {"broker": {"host": "127.0.0.1", "port": port,
                         "queue_depth_threshold": 100_000_000},
              "persistence": {"data_dir": data_dir, "wal_sync_interval_ms": 100},
              "api": {"rest_port": rest, "grpc_port": 0},
              "monitoring": {"prometheus_port": 0, "log_level": "warning"}}
    path = os.path.join(tmp, "broker.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "--config", path], cwd=ROOT,
                            stdout=open(os.path.join(tmp, "broker.log"), "ab"),
                            stderr=subprocess.STDOUT)
    wait_for_ping(port, 300, proc)
    return proc, f"127.0.0.1:{port}", f"http://127.0.0.1:{rest}"


def fill(addr: str, rest: str, n: int) -> float:
    start = time.monotonic()
    with Client(addr) as c:
        for base in range(0, n, 1000):
            c.submit_bulk([{"type": f"t{(base + i) % 7}", "queue": QUEUES[(base + i) % 4],
                            "payload": {"n": base + i, "pad": "x" * 64}}
                           for i in range(min(1000, n - base))])
        c.submit_bulk([{"type": "rare", "queue": "emails"}] * 20)
        c.submit_bulk([{"type": "later", "queue": "reports", "delay_secs": 3600 + i}
                       for i in range(100)])
        c.submit_bulk([{"type": "doomed", "queue": "doomed", "max_retries": 0}] * 200)
    with Client(addr, identity={"worker_id": "bench-dash"}) as w:
        for job in w.fetch(["doomed"], count=200, timeout_ms=5000):
            w.fail(job["id"], job["token"], "boom")
    for i in range(60):
        httpx.post(f"{rest}/api/v1/workflows", json={"id": f"flow-{i:03d}", "workflow": {
            "chord": [{"type": "thumb", "queue": "flows"}] * 10,
            "callback": {"type": "collect", "queue": "flows"}}}).raise_for_status()
        httpx.post(f"{rest}/api/v1/schedules", json={
            "id": f"sched-{i:03d}", "interval_secs": 3600 + i,
            "task": {"type": "tick", "queue": "ticks"}}).raise_for_status()
    return time.monotonic() - start


def time_api(rest: str, rounds: int = 5) -> dict:
    out = {}
    with httpx.Client(base_url=rest, timeout=60) as http:
        for path in API:
            samples = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                http.get(path).raise_for_status()
                samples.append((time.perf_counter() - t0) * 1000)
            out[path] = round(statistics.median(samples), 1)
            print(f"api {path}: {out[path]} ms", file=sys.stderr, flush=True)
    return out


def time_pages(rest: str, rounds: int = 3) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    profile = tempfile.mkdtemp(prefix="tq-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1360,900",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    out = {}
    try:
        for page, proof in PAGES:
            samples = []
            for _ in range(rounds):
                driver.get("about:blank")
                t0 = time.perf_counter()
                driver.get(f"{rest}/ui/#/{page}")  # returns once the document has loaded
                while not driver.find_elements("css selector", proof):
                    if time.perf_counter() - t0 > 30:
                        raise TimeoutError(f"{page}: {proof} never appeared")
                    time.sleep(0.01)
                samples.append((time.perf_counter() - t0) * 1000)
            out[page] = round(statistics.median(samples), 1)
            print(f"page {page}: {samples}", file=sys.stderr, flush=True)
        # Deep in the list: page 20 of all tasks, one "Next" at a time.
        driver.get("about:blank")
        driver.get(f"{rest}/ui/#/tasks")
        steps = []
        for _ in range(20):
            first = None
            while first is None:
                rows = driver.find_elements("css selector", "tr[data-id]")
                try:
                    first = rows[0].get_attribute("data-id") if rows else None
                except Exception:  # redrawn under us: look again
                    pass
                time.sleep(0.01)
            t0 = time.perf_counter()
            # The pager is redrawn every second: click the one there now, from the page.
            driver.execute_script("document.querySelector('[data-nav=next-page]').click()")
            while True:
                rows = driver.find_elements("css selector", "tr[data-id]")
                try:
                    if rows and rows[0].get_attribute("data-id") != first:
                        break
                except Exception:  # redrawn under us: look again
                    pass
                time.sleep(0.01)
            steps.append((time.perf_counter() - t0) * 1000)
        out["tasks: next page (median of 20)"] = round(statistics.median(steps), 1)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dashboard",
                                description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=1_000_000)
    p.add_argument("--data-dir", help="keep the store here (an existing one is reused)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="tq-bench-dash-")
    data_dir = args.data_dir or os.path.join(tmp, "data")
    reuse = os.path.isdir(data_dir) and bool(os.listdir(data_dir))
    proc, addr, rest = start_broker(data_dir, tmp)
    try:
        for _ in range(100):  # REST comes up just after RESP
            try:
                httpx.get(f"{rest}/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        filled = None if reuse else round(fill(addr, rest, args.tasks), 1)
        queues = httpx.get(f"{rest}/api/v1/queues", timeout=30).json()["queues"]
        result = {"tasks_stored": sum(n for q in queues.values() for k, n in q.items()
                                      if k != "paused"),
                  "fill_secs": filled, "api_ms": time_api(rest), "page_ms": time_pages(rest)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)  # a --data-dir store lives elsewhere
    if args.json:
        print(json.dumps(result))
    else:
        print(f"tasks stored: {result['tasks_stored']:,} (fill {result['fill_secs']} s)")
        for group in ("api_ms", "page_ms"):
            for name, ms in result[group].items():
                print(f"{group[:-3]:5} {ms:8.1f} ms  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
