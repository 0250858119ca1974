"""The service façade: the only place that turns a request into a command and awaits it.

Adapters (RESP, REST, gRPC) decode a request, authenticate the caller, call one method here
with plain Python values, and encode what it returns or the :class:`ServiceError` it raises.
This module validates input, checks permissions, stamps time / lease deadlines / jitter into
commands, proposes them to the log, wakes blocked fetches, and answers reads from the store.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import defaultdict

from broker import keys, listindex, tokens
from broker import validation as v
from broker.auth import ADMIN, CANCEL, READ, SUBMIT, WORKER, Authenticator, Principal
from broker.cluster_service import ClusterService
from broker.commands import limits
from broker.commands.schedules import metrics as schedule_metrics
from broker.config import Config
from broker.log.base import Log, NotLeader, Unavailable
from broker.machine import FINISHED, STATUSES, TOTALS, Rejected, public
from broker.parked_fetches import ParkedFetches
from broker.store import Store
from broker.waiters import TaskWaiters, TooManyWaiters
from broker.schedule_service import ScheduleService
from broker.workflow_service import WorkflowService
from taskqueue import errors, jsonutil

MAX_FETCH = 1000
MAX_WAIT_MS = 300_000  # the longest WAIT-TASK / ?wait= a caller may ask for
MAX_LIST = 10000
LIST_SCAN_BUDGET = 100_000


class ServiceError(Exception):
    """A request failed; ``code`` is a protocol error code (taskqueue.errors)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


def now_ms() -> int:
    return int(time.time() * 1000)


class Service(WorkflowService, ScheduleService, ClusterService):
    def __init__(self, config: Config, store: Store, log: Log, auth: Authenticator):
        self.config = config
        self.store = store
        self.log = log
        self.auth = auth
        self.machine = log.machine
        self.node_id = log.status()["node_id"]
        self._max_payload = config.broker.max_payload_bytes
        self._depth_limit = config.broker.queue_depth_threshold
        self._lease_ms = int(config.worker.lease_timeout_secs * 1000)
        self._parked = ParkedFetches()
        self._rates = RateTracker()
        # Optional listener for claims and settlements (the metrics module installs one to
        # time queue waits and runs). Called on the loop; must be cheap and must not raise.
        self.observer = None
        self.started_at = time.time()
        log.on_applied = self._parked.wake
        self.task_waiters = TaskWaiters()
        log.on_finished = self.task_waiters.notify

    # -------------------------------------------------------------------- plumbing

    _now = staticmethod(now_ms)  # for the family mixins (broker/workflow_service.py)
    _error = ServiceError

    async def _propose(self, command: list):
        return await self._committed(self.log.propose_soon(command))

    async def _committed(self, proposal: asyncio.Future):
        """A proposal's result, its refusals as the client's errors."""
        try:
            result = await proposal
        except NotLeader as exc:
            raise ServiceError(errors.NOTLEADER, f"leader={exc.leader or ''}") from None
        except Unavailable as exc:
            raise ServiceError(errors.UNAVAILABLE, str(exc)) from None
        if isinstance(result, Rejected):
            raise ServiceError(result.code, result.message)
        return result

    @staticmethod
    def _require(principal: Principal, permission: str) -> None:
        if not principal.allows(permission):
            raise ServiceError(errors.NOPERM,
                               f"this API key lacks the {permission!r} permission")

    @staticmethod
    def require_worker(principal: Principal) -> None:
        """A worker takes tasks (it reads them) and writes their outcome (it changes them):
        a read-only key may do neither (docs/protocol.md, "The worker's trust model")."""
        if not principal.may_work():
            raise ServiceError(errors.NOPERM,
                               f"a worker connection needs the {' and '.join(WORKER)} "
                               "permissions; this API key lacks "
                               + ", ".join(p for p in WORKER if not principal.allows(p)))

    # ----------------------------------------------------------------- handshake

    def hello_reply(self, reached: str | None = None) -> dict:
        """HELLO's reply. ``reached``: the address the client connected to (host:port)."""
        status = self.log.status()
        return {"v": 1, "node_id": status["node_id"],
                "role": "single" if status["mode"] == "single" else status["role"],
                "leader": self._reachable_leader(status["leader"], reached),
                "heartbeat_interval_secs": self.config.worker.heartbeat_interval_secs,
                "lease_timeout_secs": self.config.worker.lease_timeout_secs}

    def _reachable_leader(self, leader: str | None, reached: str | None) -> str | None:
        """This node leads and no broker.advertise_host is set: its default advertised
        address (127.0.0.1 when it binds 0.0.0.0) means nothing to a client on another host,
        while the address that client connected to reaches this node by definition."""
        if (reached and leader is not None and leader == self.config.advertise_address
                and not self.config.broker.advertise_host):
            return reached
        return leader

    async def register_worker(self, principal: Principal, worker_id: str, info: dict):
        self.require_worker(principal)
        record = {
            "hostname": str(info.get("hostname", ""))[:255],
            "pid": info.get("pid") if isinstance(info.get("pid"), int) else None,
            "queues": v.queue_list(info.get("queues")),
            "concurrency": v.bounded_int(info, "concurrency", 1, 1, 1_000_000),
            "labels": [str(x)[:100] for x in info.get("labels", [])][:20]
            if isinstance(info.get("labels"), list) else [],
            "node": self.node_id,
        }
        await self._propose(["hello", now_ms(), worker_id, record])

    # ----------------------------------------------------------------- producers

    async def submit(self, principal: Principal, value, raw_size: int | None = None):
        """One task object -> the task; a list -> a list of tasks or per-task errors."""
        self._require(principal, SUBMIT)
        now = now_ms()
        try:
            specs, bulk = v.task_specs(value, now, self._max_payload, raw_size)
        except v.Invalid as exc:
            raise ServiceError(exc.code, exc.message) from None
        if not bulk:
            proposal = self.log.propose_soon(["submit", now, specs[0], self._depth_limit])
            self._hand_to_parked_fetch(now, specs[0])
            result = await self._committed(proposal)
            self._rates.add("submitted")
            return result
        # A bulk submit wakes parked FETCHes after it commits (on_applied), as before: its
        # producer wants throughput, and the wake's claims batch among themselves.
        results = await self.log.propose_many(
            [["submit", now, spec, self._depth_limit] for spec in specs])
        self._rates.add("submitted", len(specs))
        # Bulk replies carry only what a producer needs back: one small object per task.
        return [_bulk_entry(r, {"id": r["id"], "status": r["status"],
                                "duplicate": r.get("duplicate", False)}
                            if isinstance(r, dict) else None)
                for r in results]

    # ------------------------------------------------------------------- workers

    async def fetch(self, principal: Principal, worker_id: str, args: dict):
        self.require_worker(principal)
        queues = v.queue_list(args.get("queues"))
        count = v.bounded_int(args, "count", 1, 1, MAX_FETCH)
        timeout_ms = v.bounded_int(args, "timeout_ms", 2000, 0, 60000)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000.0
        handed = None  # the claim a submit proposed for this FETCH while it was parked
        while True:
            if handed is not None:
                jobs, handed = await self._committed(handed), None
            elif self._told_to_rest(worker_id):
                return None
            else:
                jobs = await self._propose(self._claim_command(now_ms(), worker_id, queues,
                                                               count))
            if jobs:
                self._rates.add("claimed", len(jobs))
                if self.observer is not None:
                    self.observer.claimed(jobs)
                return jobs
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            # A rate-limited queue with work: claim again when its next token is due (the
            # end of a lease wakes a FETCH held back by concurrency, like a new task does).
            throttled_ms = (limits.retry_after_ms(self.machine, self.store, queues, now_ms())
                            if self.machine.limits else None)
            wait = remaining if throttled_ms is None else min(remaining,
                                                              max(1, throttled_ms) / 1000.0)
            parked = self._parked.park(worker_id, queues, count)
            try:
                handed = await asyncio.wait_for(parked.future, wait)
            except asyncio.TimeoutError:
                if wait >= remaining:
                    return None
            finally:
                self._parked.unpark(parked)

    def _claim_command(self, now: int, worker_id: str, queues: list[str], count: int) -> list:
        return ["claim", now, worker_id, queues, count, self._lease_ms, tokens.nonce()]

    def _hand_to_parked_fetch(self, now: int, spec: dict) -> None:
        """Propose, right behind a submit of ``spec`` just queued, the claim of a FETCH
        parked on the task's queue: both ride in one log entry, so the parked worker has
        its task when the submit commits instead of being woken to claim it in a second
        commit (broker/parked_fetches.py). The claim is the FETCH's own claim command, at
        the submit's time."""
        if spec["run_at_ms"] is not None and spec["run_at_ms"] > now:
            return  # not due yet: nothing to hand
        parked = self._parked.take(spec["queue"])
        if parked is None:
            return
        if self._told_to_rest(parked.worker_id):
            parked.future.set_result(None)  # it looks again, and rests
            return
        claim = self.log.propose_soon(self._claim_command(now, parked.worker_id,
                                                          parked.queues, parked.count))
        # Its FETCH awaits it; if that FETCH was cancelled meanwhile (the connection
        # closed), its leases expire as any unanswered FETCH's do.
        claim.add_done_callback(_retrieve_outcome)
        parked.future.set_result(claim)

    def _told_to_rest(self, worker_id: str) -> bool:
        """An operator set this worker quiet or stop (WORKER-STATE): hand it no more jobs."""
        raw = self.store.get(keys.worker(worker_id))
        return raw is not None and jsonutil.loads(raw).get("state") in ("quiet", "stop")

    async def ack(self, principal: Principal, worker_id: str, items):
        """Settle leases this worker holds: the machine checks both the token and that the
        lease is ``worker_id``'s (the worker identity of the caller's connection)."""
        return await self._settle(principal, worker_id, items, self._ack_command, "acked")

    async def fail(self, principal: Principal, worker_id: str, items):
        return await self._settle(principal, worker_id, items, self._fail_command, "failed")

    def _ack_command(self, now: int, worker_id: str, item: dict) -> list:
        return ["ack", now, v.task_id(item), _token(item),
                v.json_value(item.get("result"), "result"), worker_id]

    def _fail_command(self, now: int, worker_id: str, item: dict) -> list:
        error = v.json_value(item.get("error"), "error")
        backtrace = item.get("backtrace")
        retry = item.get("retry", True)
        if not isinstance(retry, bool):
            raise v.Invalid("retry: expected true or false")
        return ["fail", now, v.task_id(item), _token(item),
                str(error)[:10000] if error is not None else "failed",
                str(backtrace)[:100000] if backtrace is not None else None,
                retry, random.random(), worker_id]

    async def _settle(self, principal: Principal, worker_id: str, items, build, rate: str):
        """ACK/FAIL of one job (returns "OK" or raises) or of a list (per-item results)."""
        self.require_worker(principal)
        if not isinstance(worker_id, str):
            raise ServiceError(errors.BADREQ, "ACK and FAIL need a worker connection")
        now = now_ms()
        bulk = isinstance(items, list)
        if bulk and not 0 < len(items) <= MAX_FETCH:
            raise ServiceError(errors.BADREQ, f"1-{MAX_FETCH} items expected")
        try:
            commands = [build(now, worker_id, v.obj(item, "item"))
                        for item in (items if bulk else [items])]
        except v.Invalid as exc:
            raise ServiceError(exc.code, exc.message) from None
        if not bulk:
            result = await self._propose(commands[0])
            self._rates.add(rate)
            if self.observer is not None:
                self.observer.settled(rate, commands)
            return result
        results = await self.log.propose_many(commands)
        if self.observer is not None:
            self.observer.settled(rate, [c for c, r in zip(commands, results) if r == "OK"])
        self._rates.add(rate, len(commands))
        return [_bulk_entry(r, r) for r in results]

    async def heartbeat(self, principal: Principal, worker_id: str, args: dict):
        self.require_worker(principal)
        held = args.get("tasks", [])
        if not isinstance(held, list) or len(held) > 100_000:
            raise ServiceError(errors.BADREQ, "tasks: expected a list of [id, token] pairs")
        pairs = []
        for entry in held:
            if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)
                    or not tokens.valid(entry[1])):
                raise ServiceError(errors.BADREQ, "tasks: expected a list of [id, token] pairs")
            pairs.append(entry)
        return await self._propose(["heartbeat", now_ms(), worker_id, pairs, self._lease_ms,
                                    len(pairs)])

    async def bye(self, principal: Principal, worker_id: str):
        return await self._propose(["bye", now_ms(), worker_id])

    # ------------------------------------------------------------------ operators

    def get(self, principal: Principal, task_id: str) -> dict:
        self._require(principal, READ)
        task = self.store.get_json(keys.task(task_id))
        if task is None:
            if not self.log.caught_up():  # it may exist: this node has not received it yet
                raise ServiceError(errors.UNAVAILABLE,
                                   f"task {task_id!r} is not on this node yet: it is catching "
                                   "up with the leader; retry, or read from the leader")
            raise ServiceError(errors.NOTFOUND, f"no task {task_id!r}")
        return public(task)

    async def wait_task(self, principal: Principal, task_id: str, timeout_ms: int,
                        owner=None) -> dict:
        """The task once it is completed, dead or cancelled, or as it is when ``timeout_ms``
        pass first (the caller reads ``status``).

        Answered from this node's store, woken by this node's apply of the final transition
        (broker/waiters.py): on a follower it waits for the follower's own apply, so it never
        answers a result this node does not hold. A node that loses the cluster just times
        out with the (true, unfinished) state it has; the wait never invents a result."""
        self._require(principal, READ)
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or not (
                0 <= timeout_ms <= MAX_WAIT_MS):
            raise ServiceError(errors.BADREQ, f"timeout_ms: expected 0-{MAX_WAIT_MS}")
        task = self.get(principal, task_id)
        if task["status"] in FINISHED or timeout_ms == 0:
            return task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000.0
        while True:
            try:
                future = self.task_waiters.add(task_id, owner)
            except TooManyWaiters as exc:
                raise ServiceError(errors.BADREQ if exc.per_owner else errors.UNAVAILABLE,
                                   str(exc)) from None
            try:
                # Re-read after registering: nothing can apply in between (both run on
                # this loop), but a wake-up may have been for an earlier transition.
                task = self.get(principal, task_id)
                if task["status"] in FINISHED:
                    return task
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return task
                # A timer resolving the same future (cheaper than wait_for on the hot
                # round trip): either the apply or the timeout wakes us, then we re-read.
                timer = loop.call_later(remaining, _resolve, future)
                try:
                    await future
                finally:
                    timer.cancel()
            finally:
                self.task_waiters.discard(task_id, owner, future)

    def list_tasks(self, principal: Principal, args: dict) -> dict:
        self._require(principal, READ)
        status = args.get("status")
        if status is not None and status not in STATUSES:
            raise ServiceError(errors.BADREQ,
                               f"status: expected one of {', '.join(STATUSES)}")
        queue = args.get("queue")
        task_type = args.get("type")
        if queue is not None:
            v.queue_name(queue)
        if task_type is not None and not isinstance(task_type, str):
            raise ServiceError(errors.BADREQ, "type: expected a string")
        limit = v.bounded_int(args, "limit", 100, 1, MAX_LIST)
        cursor = args.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise ServiceError(errors.BADREQ, "cursor: expected the next_cursor of a page")
        ranges = self._listing_ranges(status, queue, task_type)
        start, ranges = self._resume(ranges, cursor)
        tasks, last_key, scanned = [], None, 0
        for lower in ranges:
            for key, value in self.store.scan(max(start, lower), keys.prefix_end(lower),
                                              LIST_SCAN_BUDGET - scanned):
                scanned += 1
                last_key = key
                task = self._listed_task(lower, key, value)
                if task is None:
                    continue
                if ((queue and task["queue"] != queue)
                        or (task_type and task["type"] != task_type)
                        or (status and task["status"] != status)):
                    continue
                tasks.append(public(task))
                if len(tasks) >= limit:
                    break
            if len(tasks) >= limit or scanned >= LIST_SCAN_BUDGET:
                break
        more = last_key is not None and (len(tasks) >= limit or scanned >= LIST_SCAN_BUDGET)
        next_cursor = (last_key + b"\x00").hex() if more else None
        return {"tasks": tasks, "next_cursor": next_cursor, "read_from": self.read_from()}

    def _listed_task(self, lower: bytes, key: bytes, value: bytes) -> dict | None:
        """The task an entry of the listing range ``lower`` stands for."""
        if lower[:1] == keys.TASK:
            return jsonutil.loads(value)
        if lower[:1] == keys.BY_TYPE:  # empty entries: the task id ends the key
            task_id = listindex.task_id_of(lower, key)
        elif lower == keys.LEASE:  # a lease entry carries the task id in its key
            task_id = key[9:]
        else:  # the other status indexes hold the task id
            task_id = value
        return self.store.get_json(keys.TASK + task_id)

    @staticmethod
    def _resume(ranges: list[bytes], cursor: str | None) -> tuple[bytes, list[bytes]]:
        """Where a listing's page starts: the cursor's key and the ranges from the one it
        falls in, or the first range's start. A cursor from another listing is BADREQ."""
        if not cursor:
            return b"", ranges
        try:
            start = bytes.fromhex(cursor)
        except ValueError:
            raise ServiceError(errors.BADREQ, "cursor: not a cursor this broker made")
        for n, lower in enumerate(ranges):
            if lower <= start < keys.prefix_end(lower):
                return start, ranges[n:]
        raise ServiceError(errors.BADREQ, "cursor: belongs to another listing")

    def _listing_ranges(self, status: str | None, queue: str | None,
                        task_type: str | None) -> list[bytes]:
        """The key prefixes, in order, whose entries list the tasks of a filter (see
        broker/keys.py): with a type, the listing index; else the status's own index; else
        with a queue, the listing index; else the task table. Whatever the range, rows are
        still checked against every filter while scanning."""
        if task_type is not None or (status is None and queue is not None):
            return listindex.listing_ranges(task_type, queue, self.machine.counters.queues)
        return [self._listing_range(status, queue)]

    def read_from(self) -> dict:
        """Which node answered a read and how far behind the leader it may be.

        Reads are served from this node's RocksDB without a round to the leader: on a
        follower they can miss the last ``lag`` committed entries.
        """
        status = self.log.status()
        me = status["nodes"][0] if status.get("nodes") else {}
        return {"node_id": status["node_id"], "role": status["role"],
                "applied_index": status["applied_index"], "lag": me.get("lag"),
                "caught_up": status.get("caught_up", True)}

    @staticmethod
    def _listing_range(status: str | None, queue: str | None) -> bytes:
        """The key prefix whose entries list tasks of ``status`` (see broker/keys.py)."""
        if status == "pending":
            return keys.ready_prefix(queue) if queue else keys.READY
        if status == "running":
            return keys.LEASE
        if status in ("scheduled", "failed"):
            return keys.SCHEDULE  # shared by both: filtered by status while scanning
        if status:
            return keys.status_prefix(status)
        return keys.TASK

    async def cancel(self, principal: Principal, task_id: str):
        self._require(principal, CANCEL)
        return await self._propose(["cancel", now_ms(), task_id])

    async def requeue(self, principal: Principal, task_id: str):
        self._require(principal, CANCEL)
        return await self._propose(["requeue", now_ms(), task_id])

    def queues(self, principal: Principal) -> dict:
        self._require(principal, READ)
        out = {}
        for name, counts in sorted(self.machine.counters.queues.items()):
            out[name] = dict(counts, paused=name in self.machine.paused)
        for name in self.machine.paused:
            out.setdefault(name, dict({s: 0 for s in STATUSES}, paused=True))
        if self.machine.limits:  # the limit and how much of it is in use (queue-depth)
            for name, limit in limits.read_all(self.machine, self.store, now_ms()).items():
                out.setdefault(name, dict({s: 0 for s in STATUSES}, paused=False))
                out[name]["limit"] = limit
        return {"queues": out, "read_from": self.read_from()}

    async def set_paused(self, principal: Principal, queue: str, paused: bool):
        self._require(principal, ADMIN)
        return await self._propose(["pause" if paused else "resume", now_ms(),
                                    v.queue_name(queue)])

    # ------------------------------------------------------------------- limits

    async def set_limit(self, principal: Principal, queue, spec) -> dict:
        """Set (replace) a queue's rate and/or concurrency limit (broker/commands/limits.py)."""
        self._require(principal, ADMIN)
        queue = v.queue_name(queue)
        try:
            limit = limits.normalise_spec(spec)
        except ValueError as exc:
            raise ServiceError(errors.BADREQ, str(exc)) from None
        return await self._propose(["limit_set", now_ms(), queue, limit])

    async def clear_limit(self, principal: Principal, queue) -> dict:
        self._require(principal, ADMIN)
        queue = v.queue_name(queue)
        return {"queue": queue,
                "cleared": bool(await self._propose(["limit_clear", now_ms(), queue]))}

    def get_limits(self, principal: Principal, queue=None) -> dict:
        """Every limit (or ``queue``'s) with what is in use: running, tokens, throttled."""
        self._require(principal, READ)
        if queue is not None:
            queue = v.queue_name(queue)
        return {"limits": limits.read_all(self.machine, self.store, now_ms(), queue),
                "read_from": self.read_from()}

    def workers(self, principal: Principal) -> dict:
        self._require(principal, READ)
        rows = [jsonutil.loads(value) for _, value in
                self.store.scan(keys.WORKER, keys.prefix_end(keys.WORKER), 10000)]
        return {"workers": rows, "read_from": self.read_from()}

    def live_workers(self) -> int:
        """Workers seen within their lease timeout: what tq_workers_connected reports."""
        cutoff = time.time() - max(self.config.worker.lease_timeout_secs,
                                   2 * self.config.worker.heartbeat_interval_secs)
        return sum(1 for _, value in self.store.scan(keys.WORKER, keys.prefix_end(keys.WORKER),
                                                     10000)
                   if jsonutil.loads(value).get("last_seen", 0) >= cutoff)

    async def worker_state(self, principal: Principal, worker_id: str, state: str):
        self._require(principal, ADMIN)
        # Checked here, at the edge: a missing or non-string worker_id reached apply and
        # failed there (INTERNAL, rolled back), found by tests/test_fuzz_resp.py.
        if not isinstance(worker_id, str) or not v.TASK_ID.fullmatch(worker_id):
            raise ServiceError(errors.BADREQ, "worker_id: required, 1-128 characters of "
                               "A-Z a-z 0-9 _ . : -")
        if state not in ("active", "quiet", "stop"):
            raise ServiceError(errors.BADREQ, "state: expected active, quiet or stop")
        return await self._propose(["worker_state", now_ms(), worker_id, state])

    def stats(self, principal: Principal) -> dict:
        self._require(principal, READ)
        counters = self.machine.counters
        by_status = {s: 0 for s in STATUSES}
        for counts in counters.queues.values():
            for s in STATUSES:
                by_status[s] += counts[s]
        return {
            "node_id": self.node_id,
            "uptime_secs": round(time.time() - self.started_at, 3),
            "applied_index": self.machine.applied_index,
            "tasks": by_status,
            "totals": {name: counters.totals.get(name, 0) for name in TOTALS},
            "rates_per_sec": self._rates.rates(),
            "workers": self.live_workers(),
            "rocksdb": self.store.rocksdb_stats(),
            "data_dir": str(self.store.path),
            "read_from": self.read_from(),
        }

    async def snapshot(self, principal: Principal, path: str) -> dict:
        self._require(principal, ADMIN)
        if not isinstance(path, str) or not path:
            raise ServiceError(errors.BADREQ, "path: required")
        if os.path.exists(path):
            raise ServiceError(errors.BADREQ, f"path: {path} already exists")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ServiceError(errors.BADREQ, f"path: directory {parent} does not exist")
        try:
            index = await self.log.snapshot(path)
        except Exception as exc:
            raise ServiceError(errors.INTERNAL, f"checkpoint failed: {exc}") from None
        return {"path": os.path.abspath(path), "applied_index": index}

    def cluster(self, principal: Principal) -> dict:
        self._require(principal, READ)
        return self.log.status()

    # ------------------------------------------------------------------- metrics

    def metrics_view(self) -> dict:
        """Everything the Prometheus endpoint reports, read at scrape time (no permission:
        the metrics port is unauthenticated, like the guide's scrape config assumes)."""
        counters = self.machine.counters
        return {
            "queues": {name: dict(counts) for name, counts in counters.queues.items()},
            "paused": set(self.machine.paused),
            "limits": (limits.read_all(self.machine, self.store, now_ms())
                       if self.machine.limits else {}),
            "schedules": schedule_metrics(self.store),
            "totals": {name: counters.totals.get(name, 0) for name in TOTALS},
            "operations": dict(self._rates.totals),
            "workers": self.live_workers(),
            "rocksdb": self.store.rocksdb_stats(),
            "log": self.log.status(),
            "is_leader": self.log.is_leader(),
        }


def _token(item: dict):
    value = item.get("token")
    if not tokens.valid(value):
        raise v.Invalid(f"token: required, the fencing token FETCH returned with the job "
                        f"(a string of 1-{tokens.MAX_TOKEN_CHARS} characters)")
    return value


def _retrieve_outcome(future: asyncio.Future) -> None:
    """Mark a proposal's failure as seen: one nobody awaits any more (its FETCH went away)
    must not log "Future exception was never retrieved"."""
    if not future.cancelled():
        future.exception()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _bulk_entry(result, success):
    """One entry of a bulk reply: ``success`` or ``{"error": {"code", "message"}}``."""
    if isinstance(result, Rejected):
        return {"error": {"code": result.code, "message": result.message}}
    if isinstance(result, NotLeader):
        return {"error": {"code": errors.NOTLEADER, "message": f"leader={result.leader or ''}"}}
    if isinstance(result, BaseException):
        return {"error": {"code": errors.UNAVAILABLE, "message": str(result)}}
    return success


class RateTracker:
    """Per-node operation rates over a sliding window of one-second buckets."""

    WINDOW = 10

    def __init__(self):
        self._buckets: dict[str, dict[int, int]] = defaultdict(dict)
        self.totals: dict[str, int] = defaultdict(int)  # lifetime counts on this node

    def add(self, name: str, count: int = 1) -> None:
        self.totals[name] += count
        second = int(time.monotonic())
        bucket = self._buckets[name]
        bucket[second] = bucket.get(second, 0) + count
        if len(bucket) > self.WINDOW + 2:
            for old in [s for s in bucket if s < second - self.WINDOW]:
                del bucket[old]

    def rates(self) -> dict[str, float]:
        now = int(time.monotonic())
        out = {}
        for name, bucket in self._buckets.items():
            total = sum(c for s, c in bucket.items() if now - self.WINDOW <= s < now)
            out[name] = round(total / self.WINDOW, 2)
        return out
