"""Steady client load with a client-side record of every acknowledged operation.

Producers submit with an idempotency key per logical task and a NEW task id on every attempt,
so a retry after an unknown outcome (timeout, broken connection, leader change) that created a
second task would be visible as two tasks with one key. Workers fetch and ack immediately and
record every claim and every ack the broker acknowledged.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict

from taskqueue.client import Client
from taskqueue.errors import BrokerError, ConnectionLost

QUEUE = "fault"
RETRYABLE = ("UNAVAILABLE", "NOTLEADER", "MAXCONN", "INTERNAL")


class Record:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked_submits: dict[str, str] = {}  # idempotency key -> task id
        self.submit_detail: dict[str, tuple] = {}  # key -> (node answering, time, attempts)
        self.submit_attempts = 0
        self.unknown_outcomes = 0  # attempts whose outcome the client could not know
        self.retried_keys: set[str] = set()  # keys resubmitted after an unknown outcome
        self.claims: dict[str, list[int]] = defaultdict(list)  # task id -> tokens
        self.acked_acks: dict[str, set[int]] = defaultdict(set)  # task id -> tokens acked OK
        self.ack_attempts = 0
        self.ok_times: list[float] = []  # monotonic time of every acknowledged operation
        self.errors: dict[str, int] = defaultdict(int)

    def ok(self) -> None:
        self.ok_times.append(time.monotonic())

    def operations(self) -> int:
        with self.lock:
            return len(self.acked_submits) + sum(len(t) for t in self.acked_acks.values())

    def max_gap(self, since: float = 0.0) -> float:
        with self.lock:
            times = sorted(t for t in self.ok_times if t >= since)
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def _client(addrs: list[str], identity: dict | None = None) -> Client:
    return Client(list(addrs), connect_timeout=1.0, reply_timeout=4.0, identity=identity)


def _rotate(c: Client) -> None:
    c.close()
    c.addresses = c.addresses[1:] + c.addresses[:1]
    c.address = None


class Load:
    """``producers`` and ``workers`` threads; thread k prefers node ``k % len(addrs)``."""

    def __init__(self, addrs: list[str], producers: int = 3, workers: int = 3,
                 record: Record | None = None):
        self.addrs = addrs
        self.record = record or Record()
        self.stop_event = threading.Event()
        self.threads = []
        for k in range(producers):
            self.threads.append(threading.Thread(target=self._produce, args=(k,), daemon=True))
        for k in range(workers):
            self.threads.append(threading.Thread(target=self._work, args=(k,), daemon=True))
        self.paused = threading.Event()

    def _prefer(self, k: int) -> list[str]:
        n = len(self.addrs)
        return [self.addrs[(k + j) % n] for j in range(n)]

    def start(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)

    def _produce(self, k: int) -> None:
        rec = self.record
        c = _client(self._prefer(k))
        n = 0
        run = uuid.uuid4().hex[:6]
        while not self.stop_event.is_set():
            n += 1
            key = f"p{k}-{run}-{n}"
            unknown = False
            for attempt in range(40):
                if self.stop_event.is_set() and attempt:
                    break
                with rec.lock:
                    rec.submit_attempts += 1
                    if unknown:
                        rec.retried_keys.add(key)
                try:
                    task = c.submit("fault", {"k": key}, queue=QUEUE, idempotency_key=key,
                                    id=uuid.uuid4().hex, max_retries=100)
                except ConnectionLost:
                    unknown = True
                    with rec.lock:
                        rec.unknown_outcomes += 1
                        rec.errors["submit:connection"] += 1
                    _rotate(c)
                    time.sleep(0.05)
                    continue
                except BrokerError as exc:
                    with rec.lock:
                        rec.errors[f"submit:{exc.code}"] += 1
                        if exc.code == "UNAVAILABLE":
                            unknown = True
                            rec.unknown_outcomes += 1
                    if exc.code not in RETRYABLE:
                        break
                    if exc.code == "NOTLEADER":
                        _rotate(c)
                    time.sleep(0.05)
                    continue
                with rec.lock:
                    rec.acked_submits[key] = task["id"]
                    rec.submit_detail[key] = (c.address, time.time(), attempt,
                                              task.get("duplicate", False))
                    rec.ok()
                break

    def _work(self, k: int) -> None:
        rec = self.record
        worker_id = f"w{k}-{uuid.uuid4().hex[:6]}"
        c = _client(self._prefer(k + 1), identity={"worker_id": worker_id, "queues": [QUEUE]})
        while not self.stop_event.is_set():
            try:
                jobs = c.fetch([QUEUE], count=10, timeout_ms=300)
            except ConnectionLost:
                _rotate(c)
                time.sleep(0.05)
                continue
            except BrokerError as exc:
                with rec.lock:
                    rec.errors[f"fetch:{exc.code}"] += 1
                if exc.code == "NOTLEADER":
                    _rotate(c)
                time.sleep(0.05)
                continue
            for job in jobs:
                with rec.lock:
                    rec.claims[job["id"]].append(job["token"])
                self._ack(c, job)

    def _ack(self, c: Client, job: dict) -> None:
        rec = self.record
        for _ in range(10):
            with rec.lock:
                rec.ack_attempts += 1
            try:
                c.ack(job["id"], job["token"], {"token": job["token"]})
            except ConnectionLost:
                _rotate(c)
                time.sleep(0.05)
                continue
            except BrokerError as exc:
                with rec.lock:
                    rec.errors[f"ack:{exc.code}"] += 1
                if exc.code in ("UNAVAILABLE", "NOTLEADER"):
                    if exc.code == "NOTLEADER":
                        _rotate(c)
                    time.sleep(0.05)
                    continue
                return  # LEASELOST: someone else holds it now; not ours to complete
            with rec.lock:
                rec.acked_acks[job["id"]].add(job["token"])
                rec.ok()
            return


def check(record: Record, tasks: dict[str, dict]) -> dict:
    """Compare the client-side record with one node's task table. Returns the counts."""
    by_key: dict[str, list[dict]] = defaultdict(list)
    for task in tasks.values():
        if task.get("idempotency_key"):
            by_key[task["idempotency_key"]].append(task)
    losses = [key for key, task_id in record.acked_submits.items()
              if task_id not in tasks or tasks[task_id]["idempotency_key"] != key]
    duplicates = [key for key, found in by_key.items() if len(found) > 1]
    double_completed = [tid for tid, tokens in record.acked_acks.items() if len(tokens) > 1]
    undone = [tid for tid in record.acked_acks
              if tid not in tasks or tasks[tid]["status"] != "completed"]
    return {"losses": losses, "duplicates": duplicates, "double_completed": double_completed,
            "undone_acks": undone}
