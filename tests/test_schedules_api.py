"""Schedules through a real broker: RESP (Client), REST, tq-admin, metrics, and the
configuration's ``schedules:`` section reconciled on start."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from taskqueue.client import Client
from taskqueue.errors import BrokerError
from tests.api_support import module_broker, ports, rest_url

ROOT = Path(__file__).resolve().parent.parent
DECLARED = {"id": "from-config", "interval_secs": 3600,
            "task": {"type": "cfg", "queue": "cfgq"}, "enabled": False}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = module_broker(tmp_path_factory, "schedules",
                         {"schedules": {"list": [DECLARED], "tick_ms": 50}})
    yield proc
    proc.stop()


def uniq(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_per_second_schedule_fires_each_slot_once_over_resp(node):
    sid, queue = uniq(), uniq("q")
    with Client(node.addr) as c:
        created = c.create_schedule({"id": sid, "interval_secs": 1,
                                     "task": {"type": "tick", "queue": queue,
                                              "payload": {"a": 1}, "priority": 3}})
        assert created["state"] == "active" and created["next_fire_at"] > time.time() - 1
        with pytest.raises(BrokerError, match="BADSTATE"):
            c.create_schedule({"id": sid, "interval_secs": 1, "task": {"type": "x"}})
        first = created["next_fire_at"]
        wait_for(lambda: c.schedule(sid)["fired"] >= 3)
        c.pause_schedule(sid)
        view = c.schedule(sid)
        assert view["state"] == "paused" and view["next_fire_at"] is None
        slots = [first + i for i in range(view["fired"])]
        assert view["last_slot_at"] == slots[-1]
        for slot in slots:
            task = c.get(f"sched:{sid}:{int(slot * 1000)}")
            assert task["type"] == "tick" and task["payload"] == {"a": 1}
            assert task["priority"] == 3 and task["queue"] == queue
        depth = c.queues()[queue]
        assert depth["pending"] == len(slots)  # no slot twice, none missing
        time.sleep(1.5)
        assert c.schedule(sid)["fired"] == len(slots)  # paused: nothing more
        ran = c.run_schedule(sid)
        assert ran["id"].startswith(f"sched:{sid}:run:")
        resumed = c.resume_schedule(sid)
        assert resumed["state"] == "active" and resumed["next_fire_at"] > time.time() - 1
        updated = c.update_schedule(sid, cron="0 0 1 1 *", tz="Asia/Tokyo")
        assert updated["interval_secs"] is None and updated["task"]["priority"] == 3
        assert c.delete_schedule(sid) == {"id": sid, "deleted": True}
        with pytest.raises(BrokerError, match="NOTFOUND"):
            c.schedule(sid)
        with pytest.raises(BrokerError, match="BADREQ.*cron"):
            c.create_schedule({"id": uniq(), "cron": "61 * * * *", "task": {"type": "x"}})


def test_rest_crud_and_listing(node):
    base = f"{rest_url(node)}/api/v1"
    sid = uniq()
    with httpx.Client(timeout=10) as http:
        r = http.post(f"{base}/schedules", json={
            "id": sid, "cron": "*/5 * * * *", "tz": "Europe/Berlin",
            "task": {"type": "report"}, "misfire": "all", "misfire_limit": 3})
        assert r.status_code == 201, r.text
        assert r.json()["misfire"] == "all"
        assert http.get(f"{base}/schedules/{sid}").json()["tz"] == "Europe/Berlin"
        r = http.patch(f"{base}/schedules/{sid}", json={"jitter_secs": 2.5})
        assert r.status_code == 200 and r.json()["jitter_secs"] == 2.5
        assert r.json()["cron"] == "*/5 * * * *"
        assert http.post(f"{base}/schedules/{sid}/pause").json()["state"] == "paused"
        assert http.post(f"{base}/schedules/{sid}/resume").json()["state"] == "active"
        r = http.post(f"{base}/schedules/{sid}/run")
        assert r.status_code == 201 and r.json()["type"] == "report"
        listed = http.get(f"{base}/schedules", params={"limit": 1000}).json()
        ids = [s["id"] for s in listed["schedules"]]
        assert sid in ids and "from-config" in ids and ids == sorted(ids)
        r = http.post(f"{base}/schedules", json={"id": "x", "cron": "* * *",
                                                 "task": {"type": "t"}})
        assert r.status_code == 400 and "5 fields" in r.text
        assert http.delete(f"{base}/schedules/{sid}").json()["deleted"] is True
        assert http.get(f"{base}/schedules/{sid}").status_code == 404


def test_configuration_schedules_are_reconciled_on_start(node):
    with Client(node.addr) as c:
        view = wait_for(lambda: _get(c, "from-config"))
        assert view["state"] == "paused" and view["task"]["queue"] == "cfgq"
        assert view["interval_secs"] == 3600


def _get(c, sid):
    try:
        return c.schedule(sid)
    except BrokerError:
        return None


def test_tq_admin_schedules_and_metrics(node):
    sid = uniq()

    def admin(*args):
        return subprocess.run([sys.executable, "-m", "admin.cli", "--broker-addr", node.addr,
                               "schedules", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)

    done = admin("create", sid, "--interval", "1", "--type", "adm", "--payload", '{"k": 2}')
    assert done.returncode == 0, done.stderr
    with Client(node.addr) as c:
        wait_for(lambda: c.schedule(sid)["fired"] >= 1)
    done = admin("list")
    row = next(line for line in done.stdout.splitlines() if line.startswith(sid))
    assert "every 1s" in row and "active" in row
    done = admin("get", sid, "--json")
    assert json.loads(done.stdout)["task"]["payload"] == {"k": 2}
    assert admin("update", sid, "--misfire", "skip").returncode == 0
    assert admin("pause", sid).returncode == 0
    assert "paused" in admin("get", sid).stdout
    assert admin("run", sid).returncode == 0
    text = httpx.get(f"http://127.0.0.1:{ports(node)['metrics']}/metrics").text
    assert 'tq_schedules_total{state="paused"}' in text
    assert f'tq_schedule_last_fired_timestamp{{schedule="{sid}"}}' in text
    assert "deleted" in admin("delete", sid).stdout
    assert admin("get", sid).returncode == 1
    assert admin("create", uniq(), "--type", "x").returncode == 1  # neither cron nor interval


def test_grpc_schedules(node):
    import grpc

    from broker.api import taskqueue_pb2 as pb
    from broker.api import taskqueue_pb2_grpc as pb_grpc

    sid = uniq()
    with grpc.insecure_channel(f"127.0.0.1:{ports(node)['grpc']}") as channel:
        stub = pb_grpc.SchedulesStub(channel)
        made = stub.CreateSchedule(pb.ScheduleSpec(
            id=sid, cron="0 9 * * MON-FRI", tz="America/New_York", misfire="skip",
            task=pb.ScheduleTask(type="g", queue="gq", payload_json='{"x": [1]}')), timeout=10)
        assert made.state == "active" and made.spec.tz == "America/New_York"
        assert made.HasField("next_fire_at") and not made.HasField("last_slot_at")
        got = stub.UpdateSchedule(pb.ScheduleSpec(id=sid, task=pb.ScheduleTask(priority=7)),
                                  timeout=10)
        assert got.spec.task.priority == 7 and got.spec.task.payload_json == '{"x":[1]}'
        assert stub.PauseSchedule(pb.ScheduleRef(id=sid), timeout=10).state == "paused"
        assert stub.ResumeSchedule(pb.ScheduleRef(id=sid), timeout=10).state == "active"
        task = stub.RunSchedule(pb.ScheduleRef(id=sid), timeout=10)
        assert task.type == "g" and task.priority == 7
        page = stub.ListSchedules(pb.ListSchedulesRequest(limit=1000), timeout=10)
        assert sid in [s.spec.id for s in page.schedules] and page.total >= 1
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateSchedule(pb.ScheduleSpec(id=uniq(), cron="* *",
                                                task=pb.ScheduleTask(type="g")), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert stub.DeleteSchedule(pb.ScheduleRef(id=sid), timeout=10).deleted
        with pytest.raises(grpc.RpcError) as err:
            stub.GetSchedule(pb.ScheduleRef(id=sid), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
