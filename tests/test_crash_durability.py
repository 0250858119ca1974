"""SIGKILL the broker under load: every acknowledged write survives, nothing completes twice.

Producers and workers run in threads with their own connections and keep a client-side
record of every operation the broker acknowledged. The broker is killed with SIGKILL in the
middle of the traffic (no shutdown code runs), restarted on the same data directory, and the
record is checked against what the broker then says.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

from taskqueue.client import Client
from taskqueue.errors import BrokerError, TaskQueueError


class Load:
    def __init__(self, addr: str):
        self.addr = addr
        self.stop = threading.Event()
        self.submitted: set[str] = set()  # acknowledged submits
        self.acked: dict[str, set[int]] = defaultdict(set)  # task -> tokens acked OK
        self.lock = threading.Lock()
        self.threads = []

    def producer(self, n: int):
        client = Client(self.addr, connect_timeout=1)
        i = 0
        while not self.stop.is_set():
            task_id = f"p{n}-{i}"
            try:
                client.submit("echo", {"i": i}, id=task_id)
            except (TaskQueueError, OSError):
                client.close()
                time.sleep(0.05)
                continue  # outcome unknown: retried with the same id next time round
            with self.lock:
                self.submitted.add(task_id)
            i += 1
        client.close()

    def worker(self, n: int):
        client = Client(self.addr, identity={"worker_id": f"w{n}"}, connect_timeout=1)
        while not self.stop.is_set():
            try:
                jobs = client.fetch(["default"], count=10, timeout_ms=200)
                for job in jobs:
                    try:
                        client.ack(job["id"], job["token"], "ok")
                    except BrokerError as exc:
                        assert exc.code == "LEASELOST", exc
                        continue
                    with self.lock:
                        self.acked[job["id"]].add(job["token"])
            except (TaskQueueError, OSError):
                client.close()
                time.sleep(0.05)
        client.close()

    def start(self, producers=3, workers=2):
        for n in range(producers):
            self.threads.append(threading.Thread(target=self.producer, args=(n,), daemon=True))
        for n in range(workers):
            self.threads.append(threading.Thread(target=self.worker, args=(n,), daemon=True))
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


@pytest.mark.slow
@pytest.mark.parametrize("sync_ms", [0, 100])
def test_sigkill_under_load_loses_nothing_acknowledged(broker_factory, sync_ms):
    b = broker_factory({"persistence": {"wal_sync_interval_ms": sync_ms},
                        "worker": {"lease_timeout_secs": 1, "heartbeat_interval_secs": 0.3}})
    load = Load(b.addr)
    load.start()
    kills = 0
    for _ in range(3):
        time.sleep(1.0)
        b.kill()
        kills += 1
        time.sleep(0.2)
        b.start()
    time.sleep(1.0)
    load.finish()

    with Client(b.addr) as client:
        missing = [t for t in load.submitted if _status(client, t) is None]
        assert not missing, f"{len(missing)} acknowledged submits lost, e.g. {missing[:3]}"
        twice = {t: tokens for t, tokens in load.acked.items() if len(tokens) > 1}
        assert not twice, f"tasks completed twice: {list(twice.items())[:3]}"
        not_completed = [t for t in load.acked if _status(client, t) != "completed"]
        assert not not_completed, f"acknowledged acks undone: {not_completed[:3]}"
        stats = client.stats()
    assert len(load.submitted) > 100 and len(load.acked) > 50, (
        len(load.submitted), len(load.acked))
    # each completion counted once by the broker, whatever the clients retried
    assert stats["totals"]["completed"] == stats["tasks"]["completed"]
    print(f"sync_ms={sync_ms}: kills={kills} submitted={len(load.submitted)} "
          f"acked={len(load.acked)} lost=0 duplicates=0")


def _status(client: Client, task_id: str):
    try:
        return client.get(task_id)["status"]
    except BrokerError as exc:
        if exc.code == "NOTFOUND":
            return None
        raise
