"""The web dashboard (/ui) in a real browser: Debian's headless Chromium driven by Selenium,
against a real broker process with auth on.

Every scenario drives the page the way an operator would (type the key, click the buttons)
and checks the outcome through the broker's own API, not through the page: the page is
right only if the broker agrees. Each scenario saves a screenshot to docs/images/ (the
pictures docs/dashboard.md shows).

Needs /usr/bin/chromium and /usr/bin/chromedriver (scripts/test.sh installs Debian's
``chromium`` and ``chromium-driver``); without them the browser tests skip, except under CI
where a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from taskqueue.client import Client
from tests.api_support import KEYS, key_entries, module_broker, rest_url
from tests.helpers_worker import WorkerProcess, wait_for

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1360,900", "--force-device-scale-factor=1")
# Buttons that change something carry data-action (navigation uses data-nav).
ACTION = "[data-action]"


def key(name: str) -> str:
    return KEYS[name][0]


# ------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = module_broker(tmp_path_factory, "dash",
                         {"auth": {"enabled": True, "api_keys": key_entries()},
                          "worker": {"heartbeat_interval_secs": 0.5,
                                     "lease_timeout_secs": 5}})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def http(node):
    with httpx.Client(base_url=rest_url(node), timeout=10,
                      headers={"Authorization": f"Bearer {key('admin')}"}) as client:
        yield client


@pytest.fixture(scope="module")
def resp(node):
    """A raw worker-protocol client (admin key, with a worker id: may FETCH/ACK/FAIL)."""
    client = Client(node.addr, api_key=key("admin"), identity={"worker_id": "dash-raw"})
    client.connect()
    yield client
    client.close()


def _have_browser() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


@pytest.fixture(scope="module")
def driver():
    if not _have_browser():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing (scripts/test.sh installs them)")
        pytest.skip("no Chromium/chromedriver (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download
    profile = tempfile.mkdtemp(prefix="tq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    browser.set_page_load_timeout(20)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Dash:
    """The dashboard as a user sees it. The page re-renders every poll, so every lookup is
    a wait and every click retries an element that went stale underneath it."""

    def __init__(self, driver, base: str):
        self.d = driver
        self.base = base

    def login(self, api_key: str) -> None:
        from selenium.webdriver.common.by import By

        self.d.get(f"{self.base}/ui/")
        self.d.execute_script("sessionStorage.clear()")
        self.d.get(f"{self.base}/ui/#/overview")
        self.d.refresh()
        field = self.wait(lambda: self.d.find_element(By.ID, "api-key")
                          if self.d.find_element(By.ID, "api-key").is_displayed() else None)
        field.send_keys(api_key)
        self.click("#login-button")

    def go(self, hash_: str) -> None:
        self.d.get(f"{self.base}/ui/{hash_}")

    def wait(self, probe, timeout: float = 10.0, what: str = "the page"):
        from selenium.common.exceptions import (NoSuchElementException,
                                                StaleElementReferenceException)

        deadline = time.monotonic() + timeout
        while True:
            try:
                value = probe()
                if value:
                    return value
            except (NoSuchElementException, StaleElementReferenceException):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; page text:\n"
                                     f"{self.d.find_element('tag name', 'body').text[:3000]}")
            time.sleep(0.1)

    def find(self, css: str, timeout: float = 10.0):
        return self.wait(lambda: self.d.find_element("css selector", css), timeout, css)

    def all(self, css: str):
        return self.d.find_elements("css selector", css)

    def text(self, css: str) -> str:
        return self.wait(lambda: self.d.find_element("css selector", css).text, what=css)

    def enabled(self, css: str) -> bool:
        # Read inside a wait (as a 1-tuple, so False is an answer): the poll can replace the
        # element between finding it and asking, and that read must be retried, not failed.
        return self.wait(lambda: (self.d.find_element("css selector", css).is_enabled(),),
                         what=css)[0]

    def click(self, css: str, timeout: float = 10.0) -> None:
        from selenium.common.exceptions import (ElementClickInterceptedException,
                                                ElementNotInteractableException)

        def attempt():
            try:
                element = self.d.find_element("css selector", css)
                if not element.is_enabled():
                    return False
                # Into the middle of the window: scrolled only to its bottom edge, a button
                # below a long table sits under the fixed status bar and the click misses.
                self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                                      element)
                element.click()
                return True
            except (ElementClickInterceptedException, ElementNotInteractableException):
                return False
        self.wait(attempt, timeout, f"clickable {css}")

    def shot(self, name: str) -> Path:
        IMAGES.mkdir(parents=True, exist_ok=True)
        path = IMAGES / f"dashboard-{name}.png"
        time.sleep(0.3)  # let the last render settle
        self.d.save_screenshot(str(path))
        return path

    def severe_console_errors(self) -> list[str]:
        # The first whoami of a fresh tab is a 401 by design (is auth on?); a CSP violation
        # or a script error would show here too.
        return [e["message"] for e in self.d.get_log("browser")
                if e["level"] == "SEVERE" and "401 (Unauthorized)" not in e["message"]]


@pytest.fixture(scope="module")
def dash(driver, node):
    return Dash(driver, rest_url(node))


def task_status(http, task_id: str) -> str:
    return http.get(f"/api/v1/tasks/{task_id}").json()["status"]


# ----------------------------------------------------------------- headers, no browser

def test_ui_is_served_with_security_headers(node):
    base = rest_url(node)
    r = httpx.get(f"{base}/ui")
    assert r.status_code == 302 and r.headers["location"] == "/ui/"
    page = httpx.get(f"{base}/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "location" not in page.headers  # the redirect's header did not leak into others
    # No inline script: every <script> names its file (the CSP would block the rest anyway).
    scripts = re.findall(r"<script\b[^>]*>", page.text)
    assert scripts and all("src=" in tag for tag in scripts)
    js = httpx.get(f"{base}/ui/js/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.headers["x-content-type-options"] == "nosniff"
    # Only shipped files: nothing outside the static folder, nothing unknown.
    for path in ("/ui/../broker.yaml", "/ui/%2e%2e/dash.yaml", "/ui/nope.js",
                 "/ui/js/../../api/openapi.yaml"):
        assert httpx.get(base + path).status_code == 404, path


def test_whoami_reports_the_keys_permissions(node):
    base = rest_url(node)
    read = httpx.get(f"{base}/api/v1/whoami",
                     headers={"Authorization": f"Bearer {key('read')}"}).json()
    assert read["name"] == "read" and read["permissions"] == ["read_tasks"]
    assert read["allows"] == {"submit_tasks": False, "read_tasks": True,
                              "cancel_tasks": False, "admin": False}
    admin = httpx.get(f"{base}/api/v1/whoami", headers={"X-API-Key": key("admin")}).json()
    assert all(admin["allows"].values()) and admin["auth_enabled"] is True
    assert httpx.get(f"{base}/api/v1/whoami").status_code == 401
    assert httpx.get(f"{base}/api/v1/whoami",
                     headers={"Authorization": "Bearer wrong-key"}).status_code == 401


# ------------------------------------------------------------------------ in the browser

def test_wrong_key_is_refused_and_the_key_stays_out_of_urls_and_storage(dash):
    dash.login("not-a-key")
    assert "not accepted" in dash.text("#login-error")
    dash.shot("login")
    dash.login(key("admin"))
    assert "admin" in dash.text("[data-testid=who]")
    page_text = dash.d.find_element("tag name", "body").text
    assert key("admin") not in page_text
    assert key("admin") not in dash.d.current_url
    assert dash.d.execute_script("return window.localStorage.length") == 0
    assert dash.d.get_cookies() == []
    assert dash.severe_console_errors() == []


def test_read_key_sees_everything_and_no_buttons(dash, http, resp):
    """A read_tasks key: every page shows its data, and not one button that changes anything
    (pause, requeue, cancel, quiet...) exists."""
    dead = resp.submit("e", {"n": 1}, queue="ro", max_retries=0)
    job = resp.fetch(["ro"], count=1)[0]
    resp.fail(job["id"], job["token"], "boom")
    wait_for(lambda: task_status(http, dead["id"]) == "dead", 5, what="dead")
    resp.submit("e", {"n": 2}, queue="ro", delay_secs=3600)
    assert http.post("/api/v1/schedules", json={"id": "ro-sched", "interval_secs": 3600,
                                                "task": {"type": "e", "queue": "ro"}}
                     ).status_code == 201
    assert http.put("/api/v1/queues/ro/limit", json={"concurrency": 5}).status_code == 200
    assert http.post("/api/v1/workflows", json={"id": "ro-flow", "workflow": {
        "chain": [{"type": "e", "queue": "ro-flow"}]}}).status_code == 201
    dash.login(key("read"))
    assert "read-only" in dash.text("[data-testid=who]")
    for page, proof in (("#/queues", "[data-queue=ro]"),
                        ("#/failed?status=dead", f"tr[data-id='{dead['id']}']"),
                        (f"#/task/{dead['id']}", "[data-testid=task-status]"),
                        ("#/scheduled", "tr[data-status=scheduled]"),
                        ("#/workers", "table.grid"), ("#/cluster", "[data-node]"),
                        ("#/schedules", "tr[data-schedule=ro-sched]"),
                        ("#/workflows", "tr[data-workflow=ro-flow]"),
                        ("#/workflow/ro-flow", "[data-testid=workflow-tree] li"),
                        ("#/overview", "[data-testid=throughput-chart] svg")):
        dash.go(page)
        dash.find(proof)
        time.sleep(0.2)
        assert dash.all(ACTION) == [], f"{page} shows a button to a read-only key"
        if page == "#/queues":  # the limit is shown, the form to change it is not
            assert "0 of 5 running" in dash.text("tr[data-queue=ro] [data-testid=queue-limit]")
            assert dash.all("[data-testid=limit-rate]") == []
        if page.startswith("#/failed"):
            dash.shot("read-only")
    assert dash.severe_console_errors() == []


def test_task_submitted_through_resp_appears_live(dash, http, resp):
    dash.login(key("admin"))
    dash.go("#/tasks?queue=live")
    dash.find("table.grid")
    task = resp.submit("resize", {"image": "cat.png", "width": 640}, queue="live")
    # No reload: the page's own polling brings it in.
    row = f"tr[data-id='{task['id']}']"
    dash.find(row, timeout=8)
    assert "resize" in dash.text(row) and "pending" in dash.text(row)
    dash.shot("tasks")
    dash.click(f"tr[data-id='{task['id']}'] a")
    assert dash.text("[data-testid=task-id]") == task["id"]
    assert '"cat.png"' in dash.text("[data-testid=payload]")
    assert "submitted" in dash.text("[data-testid=timeline]")
    dash.go("#/overview")
    dash.wait(lambda: len(dash.all("[data-testid=throughput-chart] path.line")) >= 3,
              what="throughput lines")


def test_dead_task_is_requeued_from_the_page_and_then_completes(dash, http, resp):
    task = resp.submit("charge", {"order": 42}, queue="billing", max_retries=0)
    job = resp.fetch(["billing"], count=1)[0]
    assert job["id"] == task["id"]
    resp.fail(job["id"], job["token"], "card declined", backtrace="Traceback: ...")
    wait_for(lambda: task_status(http, task["id"]) == "dead", 5, what="dead")

    dash.login(key("admin"))
    dash.go("#/failed?status=dead&queue=billing")
    assert "card declined" in dash.text(f"tr[data-id='{task['id']}']")
    dash.shot("failed")
    dash.click(f"tr[data-id='{task['id']}'] button[data-action=requeue]")
    wait_for(lambda: task_status(http, task["id"]) == "pending", 5, what="requeued")
    # Gone from the dead list without a reload.
    dash.wait(lambda: not dash.all(f"tr[data-id='{task['id']}']"), what="row leaves dead")

    dash.go(f"#/task/{task['id']}")
    dash.wait(lambda: "pending" in dash.text("[data-testid=task-status]"), what="pending")
    job = resp.fetch(["billing"], count=1)[0]
    assert job["id"] == task["id"]
    resp.ack(job["id"], job["token"], {"charged": True})
    dash.wait(lambda: "completed" in dash.text("[data-testid=task-status]"), what="completed")
    assert '"charged": true' in dash.text("[data-testid=result]")
    assert dash.all("[data-action=requeue]") == [] and dash.all("[data-action=cancel]") == []
    dash.shot("task")


def test_queue_is_paused_and_resumed_from_the_page(dash, http, resp):
    resp.submit("send", {"to": "a@example.com"}, queue="mail")
    dash.login(key("admin"))
    dash.go("#/queues")
    dash.click("tr[data-queue=mail] button[data-action=pause]")
    wait_for(lambda: http.get("/api/v1/queues/mail").json()["paused"], 5, what="paused")
    dash.find("tr[data-queue=mail] button[data-action=resume]")
    assert "paused" in dash.text("tr[data-queue=mail]")
    dash.click("tr[data-queue=mail] button[data-action=resume]")
    wait_for(lambda: not http.get("/api/v1/queues/mail").json()["paused"], 5, what="resumed")
    dash.find("tr[data-queue=mail] button[data-action=pause]")
    # A limit typed into the form (it survives the page's polling) reaches the broker.
    for name, value in (("queue", "mail"), ("rate", "2.5"), ("concurrency", "4")):
        dash.find(f"[data-testid=limit-{name}]").send_keys(value)
        time.sleep(1.2)  # a refresh in between: what is typed stays
    dash.click("button[data-action=set-limit]")
    wait_for(lambda: http.get("/api/v1/queues/mail/limit").status_code == 200, 5,
             what="limit set")
    limit = http.get("/api/v1/queues/mail/limit").json()
    assert (limit["rate"], limit["burst"], limit["concurrency"]) == (2.5, 3, 4)
    assert "2.5/s (burst 3), 0 of 4 running" in dash.text(
        "tr[data-queue=mail] [data-testid=queue-limit]")
    dash.shot("queues")
    dash.click("button[data-action=clear-limit]")
    wait_for(lambda: http.get("/api/v1/queues/mail/limit").status_code == 404, 5,
             what="limit cleared")
    dash.wait(lambda: not dash.all("tr[data-queue=mail] [data-testid=queue-limit]"),
              what="limit gone from the row")


def test_worker_is_told_to_quiet_from_the_page(dash, http, resp, node, tmp_path):
    worker = WorkerProcess(node.addr, tmp_path, "--queues", "quietq", "--concurrency", "2",
                           "--api-key", key("admin"), name="dashw").start()
    try:
        row = f"tr[data-worker='{worker.worker_id}']"
        dash.login(key("admin"))
        dash.go("#/overview")
        # A few seconds of real traffic for the Overview's charts (and its screenshot).
        for i in range(16):
            resp.submit_bulk([{"type": "echo", "queue": "quietq", "payload": {"i": i}}]
                             * (20 + 3 * i)
                             + [{"type": "fail", "queue": "quietq", "max_retries": 1,
                                 "retry_backoff_secs": 0.2}] * (i % 4))
            time.sleep(0.35)
        dash.wait(lambda: dash.text("[data-testid=total-completed] .card-value") != "0",
                  what="completions counted")
        dash.shot("overview")
        dash.go("#/workers")
        dash.find(row, timeout=15)
        assert "quietq" in dash.text(row)
        dash.click(f"{row} button[data-action=quiet]")
        wait_for(lambda: any(w["worker_id"] == worker.worker_id and w["state"] == "quiet"
                             for w in http.get("/api/v1/workers").json()["workers"]),
                 5, what="worker quiet")
        dash.wait(lambda: "quiet" in dash.text(f"{row} [data-testid=worker-state]"),
                  what="quiet badge")
        dash.shot("workers")
    finally:
        worker.stop()


def test_cluster_and_scheduled_pages(dash, resp):
    resp.submit("report", {"month": 11}, queue="reports", delay_secs=1800)
    dash.login(key("admin"))
    dash.go("#/scheduled")
    dash.find("tr[data-status=scheduled]")
    dash.shot("scheduled")
    dash.go("#/cluster")
    assert dash.text("[data-node] [data-testid=node-role]") == "leader"
    assert dash.all("[data-action=transfer-leader]") == []  # one node: nothing to hand over
    dash.shot("cluster")
    assert dash.severe_console_errors() == []


def test_schedules_page_shows_fire_times_and_pauses_resumes_and_runs(dash, http):
    created = http.post("/api/v1/schedules", json={
        "id": "heartbeat", "interval_secs": 1,
        "task": {"type": "ping", "queue": "beats", "payload": {"hello": 1}}})
    assert created.status_code == 201
    assert http.post("/api/v1/schedules", json={
        "id": "nightly-report", "cron": "30 2 * * *", "tz": "Europe/Paris", "misfire": "once",
        "task": {"type": "report", "queue": "reports"}}).status_code == 201
    row = "tr[data-schedule=heartbeat]"
    dash.login(key("admin"))
    dash.go("#/schedules")
    # Live: the per-second schedule's fired count and last slot move without a reload.
    dash.wait(lambda: int(dash.text(f"{row} [data-testid=fired]")) >= 2, 10, "two slots fired")
    assert dash.text(f"{row} [data-testid=last-slot]") != "—"
    assert "in " in dash.text("tr[data-schedule=nightly-report] [data-testid=next-fire]")
    assert "30 2 * * * Europe/Paris" in dash.text("tr[data-schedule=nightly-report]")
    dash.shot("schedules")

    dash.click(f"{row} button[data-action=pause]")
    wait_for(lambda: http.get("/api/v1/schedules/heartbeat").json()["state"] == "paused", 5,
             what="paused")
    dash.wait(lambda: dash.text(f"{row} [data-testid=schedule-state]") == "paused",
              what="paused badge")
    assert dash.text(f"{row} [data-testid=next-fire]") == "—"
    fired = http.get("/api/v1/schedules/heartbeat").json()["fired"]
    before = http.get("/api/v1/queues/beats").json()["pending"]
    dash.click(f"{row} button[data-action=run]")  # one extra task, slots untouched
    wait_for(lambda: http.get("/api/v1/queues/beats").json()["pending"] == before + 1, 5,
             what="run now enqueued one task")
    dash.click(f"{row} button[data-action=resume]")
    wait_for(lambda: http.get("/api/v1/schedules/heartbeat").json()["state"] == "active", 5,
             what="resumed")
    dash.wait(lambda: int(dash.text(f"{row} [data-testid=fired]")) > fired, 10,
              "fires again after resume")
    assert http.delete("/api/v1/schedules/heartbeat").status_code == 200  # quiet for the rest


def test_workflows_page_shows_the_tree_live_and_cancels(dash, http, resp):
    tree = {"chain": [
        {"type": "fetch", "queue": "flows", "payload": {"url": "a.csv"}},
        {"chord": [{"type": "thumb", "queue": "flows", "payload": size}
                   for size in (64, 128, 256)],
         "callback": {"type": "collect", "queue": "flows"}},
        {"type": "publish", "queue": "flows"}]}
    assert http.post("/api/v1/workflows", json={"id": "nightly-2026-12-03",
                                                "workflow": tree}).status_code == 201
    assert http.post("/api/v1/workflows", json={"id": "thumbnails-batch", "workflow": {
        "group": [{"type": "x", "queue": "flows-other"}]}}).status_code == 201
    dash.login(key("admin"))
    dash.go("#/workflows")
    dash.find("tr[data-workflow=nightly-2026-12-03]")
    dash.find("[data-testid=workflow-id-input]").send_keys("thumbnails-batch")
    dash.click("button[data-nav=open-workflow]")
    assert dash.text("[data-testid=workflow-id]") == "thumbnails-batch"
    assert "1 of 1" not in dash.text("[data-testid=workflow-tree]")
    dash.go("#/workflows")
    dash.click("tr[data-workflow=nightly-2026-12-03] a")
    assert dash.text("[data-testid=workflow-id]") == "nightly-2026-12-03"
    items = dash.wait(lambda: dash.all("[data-testid=workflow-tree] li[data-task]"),
                      what="tree")
    assert len(items) == 6  # fetch, 3 thumbs, collect, publish
    first = "nightly-2026-12-03.0"
    assert dash.text(f"li[data-task='{first}'] [data-testid=member-status]") == "pending"
    assert dash.text("li[data-task='nightly-2026-12-03.5'] [data-testid=member-status]") \
        == "waiting"

    # The chain advances as a worker (this test, over RESP) completes steps: no reload.
    job = resp.fetch(["flows"], count=1)[0]
    assert job["id"] == first
    resp.ack(job["id"], job["token"], {"rows": 3})
    dash.wait(lambda: dash.text(f"li[data-task='{first}'] [data-testid=member-status]")
              == "completed", what="first step completed")
    dash.wait(lambda: len(dash.all("[data-testid=workflow-tree] li[data-status=pending]")) == 3,
              what="the chord's three members pending")
    jobs = resp.fetch(["flows"], count=1)
    resp.ack(jobs[0]["id"], jobs[0]["token"], {"thumb": True})
    dash.wait(lambda: "1 of 3 done" in dash.text("li[data-group] [data-testid=group-progress]"),
              what="chord progress")
    assert "running" in dash.text("[data-testid=workflow-status]")
    dash.shot("workflow")

    dash.click("button[data-action=cancel-workflow]")
    wait_for(lambda: http.get("/api/v1/workflows/nightly-2026-12-03").json()["status"]
             == "cancelled", 5, what="cancelled")
    dash.wait(lambda: dash.text("[data-testid=workflow-status]") == "cancelled",
              what="cancelled badge")
    assert dash.all("button[data-action=cancel-workflow]") == []
    statuses = {t["status"] for t in http.get("/api/v1/workflows/nightly-2026-12-03")
                .json()["tasks"]}
    assert statuses == {"completed", "cancelled"}
    dash.go("#/workflows")
    dash.wait(lambda: dash.text("tr[data-workflow=nightly-2026-12-03] "
                                "[data-testid=workflow-status]") == "cancelled",
              what="the list shows it cancelled")
    dash.shot("workflows")
    assert dash.severe_console_errors() == []


def _pages_through(dash, hash_: str, row_css: str, attr: str, rows: set[str]) -> None:
    """Opens a listing of 51-100 items (pages of 50) holding ``rows``, goes next, then
    previous: the two pages split the items without overlap, and each button is enabled
    only where there is a page to go to."""
    def shown():
        return frozenset(el.get_attribute(attr) for el in dash.all(row_css))

    prev_page, next_page = ("div.pager button[data-nav=prev-page]",
                            "div.pager button[data-nav=next-page]")
    dash.go(hash_)
    def page_where(ok):
        rows_now = shown()
        return rows_now if ok(rows_now) else None

    first = dash.wait(lambda: page_where(lambda s: len(s) == 50 and s & rows),
                      what="a first page of 50")
    assert not dash.enabled(prev_page)
    dash.click(next_page)
    second = dash.wait(lambda: page_where(lambda s: s and not s & first),
                       what="the second page")
    assert rows <= first | second and len(second) < 50
    assert "page 2" in dash.text("div.pager")
    assert not dash.enabled(next_page)
    dash.click(prev_page)
    dash.wait(lambda: shown() == first, what="back on the first page")
    assert "page 1" in dash.text("div.pager")


def test_tasks_schedules_and_workflows_page_forward_and_back(dash, http, resp):
    tasks = [{"type": "pager-probe", "queue": "pages", "payload": {"n": n},
              "id": f"pager-{n:03d}"} for n in range(55)]
    assert all("error" not in r for r in resp.submit_bulk(tasks))
    flows = {f"pager-flow-{n:03d}" for n in range(55)}
    schedules = {f"pager-sched-{n:03d}" for n in range(55)}
    try:
        for wid in sorted(flows):
            assert http.post("/api/v1/workflows", json={"id": wid, "workflow": {
                "group": [{"type": "noop", "queue": "pages-flows"}]}}).status_code == 201
        for sid in sorted(schedules):
            assert http.post("/api/v1/schedules", json={
                "id": sid, "cron": "0 0 1 1 *",
                "task": {"type": "noop", "queue": "pages-sched"}}).status_code == 201
        dash.login(key("admin"))
        _pages_through(dash, "#/tasks?type=pager-probe", "tr[data-id]", "data-id",
                       {t["id"] for t in tasks})
        # The queue filter offers every queue as its own option (not one text node).
        dash.wait(lambda: "pages" in {o.get_attribute("value") for o in
                                      dash.all("[data-testid=filter-queue] option")},
                  what="the queue filter's options")
        # Earlier tests leave a few workflows and schedules: still fewer than 100 in all.
        _pages_through(dash, "#/workflows", "tr[data-workflow]", "data-workflow", flows)
        _pages_through(dash, "#/schedules", "tr[data-schedule]", "data-schedule", schedules)
    finally:
        for sid in schedules:
            http.delete(f"/api/v1/schedules/{sid}")
    assert dash.severe_console_errors() == []


def test_transfer_leader_needs_admin_and_a_cluster(node):
    base = rest_url(node)
    url = f"{base}/api/v1/cluster/transfer-leader"
    refused = httpx.post(url, headers={"Authorization": f"Bearer {key('read')}"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "NOPERM"
    alone = httpx.post(url, headers={"Authorization": f"Bearer {key('admin')}"})
    assert alone.status_code == 409 and alone.json()["error"]["code"] == "BADSTATE"


# --------------------------------------------------------------- 3 nodes, leader killed

@pytest.mark.slow
def test_cluster_page_shows_the_new_leader_after_the_leader_is_killed(driver, tmp_path):
    from tests.test_api_cluster import rest, start_api_cluster, wait_single_leader

    cluster = start_api_cluster(tmp_path, {"auth": {"enabled": True,
                                                    "api_keys": key_entries()}})
    try:
        # Leadership handed over from the page (admin), opened on a follower.
        first = wait_single_leader(cluster, [0, 1, 2])
        dash = Dash(driver, rest(cluster.nodes[(first + 1) % 3]))
        dash.login(key("admin"))
        dash.go("#/cluster")
        dash.wait(lambda: dash.text("[data-testid=cluster-leader] .card-value")
                  == f"n{first + 1}", 10, "the first leader")
        dash.click("button[data-action=transfer-leader]")
        moved = wait_single_leader(cluster, [0, 1, 2])
        assert moved != first
        dash.wait(lambda: dash.text("[data-testid=cluster-leader] .card-value")
                  == f"n{moved + 1}", 10, "the new leader after the transfer")
        dash.shot("cluster-transfer")
        # A loaded machine can re-elect once while starting: settle on a leader the page
        # (opened on a follower) agrees on before killing it.
        for attempt in range(3):
            old = wait_single_leader(cluster, [0, 1, 2])
            old_id = f"n{old + 1}"
            dash = Dash(driver, rest(cluster.nodes[(old + 1) % 3]))
            dash.login(key("read"))
            dash.go("#/cluster")
            try:
                dash.wait(lambda: dash.text("[data-testid=cluster-leader] .card-value")
                          == old_id, 10, "the first leader")
                break
            except AssertionError:
                if attempt == 2:
                    raise
        old_term = int(dash.text("[data-testid=cluster-term] .card-value"))
        assert "follower" in dash.text("[data-testid=read-from]")
        cluster.kill(old)
        killed_at = time.monotonic()
        dash.wait(lambda: dash.text("[data-testid=cluster-leader] .card-value")
                  not in (old_id, "none"), 20, "a new leader on the page")
        seen_after = time.monotonic() - killed_at
        new_id = dash.text("[data-testid=cluster-leader] .card-value")
        assert int(dash.text("[data-testid=cluster-term] .card-value")) > old_term
        dash.wait(lambda: "unreachable" in dash.text(f"tr[data-node='{old_id}']"), 20,
                  "the killed node unreachable")
        dash.shot("cluster-failover")
        print(f"new leader {new_id} shown {seen_after:.1f}s after the kill")
        assert seen_after < 15
    finally:
        cluster.stop()
