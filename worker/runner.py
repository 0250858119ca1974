"""The worker's event loop: fetch jobs, run them, report outcomes, heartbeat, shut down.

Three long-lived coroutines share one :class:`Worker`:

* the **fetch loop** asks for as many jobs as there are free slots (one FETCH claims a
  batch) on a connection of its own, because a blocking FETCH would otherwise hold up every
  ACK pipelined behind it;
* the **heartbeat loop** renews the leases of every held job and obeys the broker's
  ``quiet``/``stop``;
* one task per job runs its handler and reports through the :class:`Reporter`, which
  batches the ACKs of jobs that finish together into one ACK array on the control connection.

Staying alive through broker restarts is the point of the structure: neither loop ever
returns before shutdown. Every failure of a call (connection lost, broker error, a bug
surfacing as an exception) is logged and followed by a backoff and a retry, and the clients
reconnect (HELLO included) on the next call. If a loop does die anyway the worker exits
non-zero, so that the process supervisor restarts it, instead of idling while looking alive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from taskqueue import errors, jsonutil
from taskqueue.client import AsyncClient, Backoff, Token
from taskqueue.errors import BrokerError, ConnectionLost
from worker.pools import HandlerFailed, JobTimeout, ThreadPool
from worker.procpool import ProcessPool
from worker.registry import REGISTRY, Registry, await_as_job, JobInfo

log = logging.getLogger("tq.worker")

# Jobs whose handler finished but whose ACK/FAIL the broker has not confirmed yet do not take
# a slot (so acknowledgement latency does not idle the slots), but at most this many may pile
# up before fetching pauses (so a slow or absent broker cannot make the backlog grow).
MAX_UNREPORTED = 1000

MAX_FETCH_COUNT = 1000  # the protocol's limit on one FETCH

# Errors after which retrying cannot help: the operator has to fix the configuration.
FATAL_CODES = frozenset({errors.NOAUTH, errors.NOPERM, errors.BADVERSION})


class WorkerFatal(Exception):
    """The broker refuses this worker (bad API key, permission, protocol version)."""


@dataclass
class WorkerConfig:
    addresses: str | list = "127.0.0.1:6379"
    queues: list[str] = field(default_factory=lambda: ["default"])
    concurrency: int = 4
    pool: str = "thread"  # "thread" | "process" | "async"
    handler_modules: list[str] = field(default_factory=lambda: ["worker.examples"])
    heartbeat_interval_secs: float | None = None  # None: what the broker's HELLO says
    max_tasks_per_child: int | None = None
    shutdown_grace_secs: float = 30.0
    fetch_timeout_ms: int = 2000
    # A reply this late (beyond FETCH's own wait) means a dead connection: drop, reconnect.
    reply_timeout_secs: float = 30.0
    api_key: str | None = None
    ssl_context: Any = None
    worker_id: str | None = None


def make_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class HeldJob:
    """A job this worker has claimed and not yet finished reporting."""

    id: str
    token: Token  # opaque: sent back exactly as FETCH gave it
    task: asyncio.Task | None = None
    lost: bool = False  # the broker says our lease is gone: never report on it
    finished: bool = False  # the handler is done; its outcome is being reported


class Reporter:
    """Sends ACKs in batches and FAILs one by one, retrying through reconnects.

    Jobs that finish while an ACK batch is in flight form the next batch, so under load one
    ACK command carries many results (one broker write) and when idle an ACK goes out at once.
    """

    MAX_BATCH = 1000

    def __init__(self, client: AsyncClient, stopping: asyncio.Event):
        self.client = client
        self._stopping = stopping
        self._pending: list[tuple[dict, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    async def ack(self, id: str, token: Token, result: Any) -> str:
        """Returns "OK" or the error code the broker gave for this job."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append(({"id": id, "token": token, "result": result}, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        backoff = Backoff(0.05, 5.0)
        while self._pending:
            batch = self._pending[: self.MAX_BATCH]
            del self._pending[: self.MAX_BATCH]
            try:
                outcomes = await self._with_retry(self._send_acks, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter must hear about it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            retry_later = False
            for (item, done), outcome in zip(batch, outcomes):
                if outcome in errors.RETRYABLE and not self._stopping.is_set():
                    # One entry of a bulk ACK met e.g. UNAVAILABLE: send it again.
                    self._pending.append((item, done))
                    retry_later = True
                elif not done.done():
                    done.set_result(outcome)
            if retry_later:
                await asyncio.sleep(backoff.next())

    async def _send_acks(self, items: list[dict]) -> list[str]:
        if len(items) == 1:
            return [await _outcome(self.client.ack(**items[0]))]
        replies = await self.client.ack_many(items)
        return [r if r == "OK" else r.get("error", {}).get("code", errors.INTERNAL)
                for r in replies]

    async def fail(self, id: str, token: Token, error: str, backtrace: str | None,
                   retry: bool = True) -> str:
        return await self._with_retry(
            lambda: _outcome(self.client.fail(id, token, error, backtrace, retry)))

    async def _with_retry(self, call, *args):
        """Retry through lost connections: re-sending an ACK/FAIL with the same token is
        harmless (docs/protocol.md, "Errors"). During shutdown give up after a few tries:
        the lease then expires and the broker requeues the job."""
        backoff = Backoff(0.05, 5.0)
        attempts = 0
        while True:
            try:
                return await call(*args)
            except (ConnectionLost, BrokerError) as exc:
                if isinstance(exc, BrokerError) and not exc.retryable:
                    raise
                attempts += 1
                if self._stopping.is_set() and attempts >= 3:
                    raise
                delay = backoff.next()
                log.warning("reporting to the broker failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)


async def _outcome(call) -> str:
    """"OK" or the code of a final refusal (LEASELOST, NOTFOUND...) as a value; errors worth
    retrying (connection lost, UNAVAILABLE) and fatal ones (NOAUTH...) still raise."""
    try:
        return await call
    except BrokerError as exc:
        if exc.retryable or exc.code in FATAL_CODES:
            raise
        return exc.code


class Worker:
    def __init__(self, config: WorkerConfig, registry: Registry = REGISTRY):
        self.config = config
        self.registry = registry
        self.worker_id = config.worker_id or make_worker_id()
        identity = {"worker_id": self.worker_id, "hostname": socket.gethostname(),
                    "pid": os.getpid(), "queues": list(config.queues),
                    "concurrency": config.concurrency}
        client_args = dict(api_key=config.api_key, ssl_context=config.ssl_context,
                           identity=identity, reply_timeout=config.reply_timeout_secs)
        # Two connections: FETCH blocks, and nothing may wait behind it (see module doc).
        self.control = AsyncClient(config.addresses, **client_args)
        self.fetcher = AsyncClient(config.addresses, **client_args)
        self.held: dict[str, HeldJob] = {}
        self.running = 0  # held jobs whose handler has not finished
        self.pool: ThreadPool | ProcessPool | None = None
        self.jobs_done = 0
        self.reconnects = 0
        self._quiet = False  # the broker asked us to stop fetching
        self._stopping = asyncio.Event()
        self._drained = asyncio.Event()  # drained: heartbeats (lease renewals) may end
        self._hurry = asyncio.Event()  # a second signal: skip the grace period
        self._capacity_changed = asyncio.Event()
        self.reporter = Reporter(self.control, self._stopping)
        self.heartbeat_interval = config.heartbeat_interval_secs

    # ------------------------------------------------------------------ public
    def request_shutdown(self) -> None:
        """First call: graceful shutdown. Second call: stop waiting for running jobs."""
        if self._stopping.is_set():
            log.warning("second shutdown request: failing back running jobs now")
            self._hurry.set()
        else:
            log.info("shutting down: no new jobs, finishing %d running", len(self.held))
            self._stopping.set()
        self._capacity_changed.set()

    @property
    def free_slots(self) -> int:
        if len(self.held) - self.running >= MAX_UNREPORTED:
            return 0
        stuck = self.pool.stuck if self.pool else 0
        return max(0, self.config.concurrency - self.running - stuck)

    async def run(self) -> int:
        """Run until shutdown; returns the process exit code."""
        self.pool = self._make_pool()
        self.pool.on_slot_freed = self._capacity_changed.set
        if isinstance(self.pool, ProcessPool):
            await self.pool.start()
        try:
            hello = await self._connect()
        except WorkerFatal as exc:
            log.error("%s", exc)
            await self._close()
            return 1
        if hello is None:  # shut down before the broker was ever reachable
            await self._close()
            return 0
        if self.heartbeat_interval is None:
            self.heartbeat_interval = float(hello.get("heartbeat_interval_secs") or 15)
        log.info("worker %s consuming %s (concurrency %d, %s pool, heartbeat %gs)",
                 self.worker_id, ",".join(self.config.queues), self.config.concurrency,
                 self.config.pool, self.heartbeat_interval)
        loops = [asyncio.create_task(self._fetch_loop(), name="fetch-loop"),
                 asyncio.create_task(self._heartbeat_loop(), name="heartbeat-loop")]
        stop_wait = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([stop_wait, *loops], return_when=asyncio.FIRST_COMPLETED)
        exit_code = 0
        for loop_task in loops:
            if loop_task.done() and not self._stopping.is_set():
                exc = loop_task.exception()
                if isinstance(exc, WorkerFatal):
                    log.error("%s", exc)
                else:
                    log.error("the %s ended unexpectedly: %r", loop_task.get_name(), exc)
                exit_code = 1
        self._stopping.set()
        await self._drain(loops)
        stop_wait.cancel()
        return exit_code

    # ------------------------------------------------------------------ connecting
    async def _connect(self) -> dict | None:
        """Connect both clients, retrying with backoff until the broker answers."""
        backoff = Backoff(0.1, 10.0)
        while not self._stopping.is_set():
            try:
                hello = await self.control.connect()
                await self.fetcher.connect()
                return hello
            except BrokerError as exc:
                if exc.code in FATAL_CODES:
                    raise WorkerFatal(f"the broker refused this worker: {exc}") from exc
                log.warning("broker not ready (%s)", exc)
            except ConnectionLost as exc:
                log.warning("%s", exc)
            await self._sleep(backoff.next())
        return None

    async def _sleep(self, seconds: float, until: asyncio.Event | None = None) -> None:
        """Sleep, but wake up at once when ``until`` (default: shutdown) is set."""
        try:
            await asyncio.wait_for((until or self._stopping).wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # ------------------------------------------------------------------ fetching
    async def _wait_for_capacity(self) -> None:
        while not self._stopping.is_set() and (self._quiet or self.free_slots == 0):
            self._capacity_changed.clear()
            # Every change of capacity sets the event; the timeout is a safety net, so that
            # a missed wake-up can only ever delay fetching, never end it.
            await self._sleep(1.0, self._capacity_changed)

    async def _fetch_loop(self) -> None:
        backoff = Backoff(0.1, 10.0)
        failing = False
        while not self._stopping.is_set():
            await self._wait_for_capacity()
            if self._stopping.is_set():
                break
            try:
                jobs = await self.fetcher.fetch(self.config.queues,
                                                min(self.free_slots, MAX_FETCH_COUNT),
                                                self.config.fetch_timeout_ms)
            except Exception as exc:  # noqa: BLE001 - see the module doc: never stop
                if isinstance(exc, BrokerError) and exc.code in FATAL_CODES:
                    raise WorkerFatal(f"the broker refused this worker: {exc}") from exc
                delay = backoff.next()
                log.warning("fetch failed (%s); retrying in %.2fs", exc, delay)
                failing = True
                await self._sleep(delay)
                continue
            if failing:
                log.info("fetching again after reconnecting to the broker")
                self.reconnects += 1
                failing = False
            backoff.reset()
            for job in jobs:
                self._start_job(job)

    def _start_job(self, job: dict) -> None:
        held = HeldJob(job["id"], job["token"])
        self.held[held.id] = held
        # A job fetched by a FETCH that was in flight when shutdown began is not started
        # (task None): _drain gives it straight back.
        if self._stopping.is_set():
            held.finished = True  # never started, so it holds no slot
        else:
            self.running += 1
            held.task = asyncio.create_task(self._run_job(job, held))

    # ------------------------------------------------------------------ running a job
    async def _run_job(self, job: dict, held: HeldJob) -> None:
        try:
            error = backtrace = None
            try:
                result = await self._execute(job)
                jsonutil.dumps(result)  # unserialisable results fail here, not in the ACK
            except JobTimeout as exc:
                error = f"TimeoutError: {exc}"
            except HandlerFailed as exc:
                error, backtrace = exc.error, exc.backtrace
            except asyncio.CancelledError:
                # Lost lease (nothing to report) or shutdown (_drain fails the job back).
                raise
            except Exception as exc:  # noqa: BLE001 - the handler's failure is the job's
                error, backtrace = f"{type(exc).__name__}: {exc}", traceback.format_exc()
            self._finish(held)
            if held.lost:
                log.warning("job %s finished after its lease was lost; not reporting", held.id)
                return
            if error is None:
                outcome = await self.reporter.ack(held.id, held.token, result)
                log.debug("job %s (%s) completed: %s", held.id, job["type"], outcome)
            else:
                outcome = await self.reporter.fail(held.id, held.token, error, backtrace)
                log.info("job %s (%s) failed: %s", held.id, job["type"], error)
            if outcome != "OK":
                log.warning("broker rejected the outcome of job %s: %s", held.id, outcome)
            self.jobs_done += 1
        except (ConnectionLost, BrokerError) as exc:
            # Gave up (shutting down, or a fatal refusal): the lease will expire and the
            # broker requeues the job.
            log.warning("could not report job %s: %s", held.id, exc)
        finally:
            self._release(held)

    async def _execute(self, job: dict) -> Any:
        handler = self.registry.get(job["type"])
        if handler is None:
            raise LookupError(f"no handler registered for task type {job['type']!r} "
                              f"(known: {', '.join(self.registry.names())})")
        info = JobInfo.from_job(job, self.worker_id)
        timeout = job.get("timeout_secs")
        payload = job.get("payload")
        if handler.is_async:
            try:
                return await asyncio.wait_for(await_as_job(handler.fn, payload, info), timeout)
            except asyncio.TimeoutError:
                raise JobTimeout(timeout) from None
        return await self.pool.run(handler, payload, info, timeout)

    def _finish(self, held: HeldJob) -> None:
        """The handler is done (or abandoned): its slot is free for the next job."""
        if not held.finished:
            held.finished = True
            self.running -= 1
            self._capacity_changed.set()

    def _release(self, held: HeldJob) -> None:
        self._finish(held)
        if self.held.get(held.id) is held:
            del self.held[held.id]
        self._capacity_changed.set()

    # ------------------------------------------------------------------ heartbeats
    async def _heartbeat_loop(self) -> None:
        # Runs on through the shutdown grace period: the jobs finishing then need their
        # leases renewed as much as ever.
        while not self._drained.is_set():
            await self._sleep(self.heartbeat_interval, self._drained)
            if self._drained.is_set():
                return
            try:
                await self._heartbeat_once()
            except BrokerError as exc:
                if exc.code in FATAL_CODES:
                    raise WorkerFatal(f"the broker refused this worker: {exc}") from exc
                log.warning("heartbeat refused: %s", exc)
            except Exception as exc:  # noqa: BLE001 - the next beat retries (and reconnects)
                log.warning("heartbeat failed: %s", exc)

    async def _heartbeat_once(self) -> None:
        jobs = [h for h in self.held.values() if not h.lost]
        reply = await self.control.heartbeat([(h.id, h.token) for h in jobs])
        for job_id in reply.get("lost") or []:
            held = self.held.get(job_id)
            # A finished job's ACK may have reached the broker just before this heartbeat
            # (both ride the same connection): the ACK's reply, not `lost`, tells its fate.
            if held is not None and not held.lost and not held.finished:
                log.warning("lease of job %s lost; abandoning it", job_id)
                held.lost = True
                if held.task is not None:
                    held.task.cancel()  # stops async handlers; a thread just runs out
        state = reply.get("state", "active")
        if self._stopping.is_set():
            return
        if state == "stop":
            log.info("the broker asked this worker to stop")
            self.request_shutdown()
        elif (state == "quiet") != self._quiet:
            self._quiet = state == "quiet"
            log.info("the broker set this worker %s", state)
            self._capacity_changed.set()

    # ------------------------------------------------------------------ shutdown
    async def _drain(self, loops: list[asyncio.Task]) -> None:
        """Finish in-flight jobs within the grace period, fail back the rest, say BYE."""
        fetch_loop, heartbeat_loop = loops
        # The fetch loop ends once a FETCH in flight returns (at most fetch_timeout_ms).
        await asyncio.wait([fetch_loop], timeout=self.config.fetch_timeout_ms / 1000 + 5)
        fetch_loop.cancel()
        running = [h.task for h in self.held.values() if h.task is not None]
        if running:
            all_done = asyncio.gather(*running, return_exceptions=True)
            hurry = asyncio.create_task(self._hurry.wait())
            await asyncio.wait([all_done, hurry], timeout=self.config.shutdown_grace_secs,
                               return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
        leftovers = [h for h in self.held.values()
                     if not h.lost and (h.task is None or not h.task.done())]
        if leftovers:
            log.warning("failing back %d unfinished job(s) for retry", len(leftovers))
            for held in leftovers:
                if held.task is not None:
                    held.task.cancel()
            await asyncio.gather(*(self._fail_back(h) for h in leftovers))
        self._drained.set()
        heartbeat_loop.cancel()
        try:
            await asyncio.wait_for(self.control.bye(), 5)
        except Exception as exc:  # noqa: BLE001 - leaving politely is best effort
            log.debug("BYE failed: %s", exc)
        await self._close()
        log.info("worker %s stopped after %d job(s)", self.worker_id, self.jobs_done)

    async def _fail_back(self, held: HeldJob) -> None:
        try:
            await self.reporter.fail(held.id, held.token, "WorkerShutdown: the worker stopped "
                                     "before the job finished", None, retry=True)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not fail back job %s (%s); its lease will expire", held.id, exc)

    async def _close(self) -> None:
        await self.control.close()
        await self.fetcher.close()
        if self.pool is not None:
            await self.pool.close()

    def _make_pool(self):
        if self.config.pool == "process":
            return ProcessPool(self.config.concurrency, self.config.handler_modules,
                               self.config.max_tasks_per_child)
        # "async": async handlers run on the loop anyway; a sync handler still gets a
        # thread, because running it on the loop would starve heartbeats.
        return ThreadPool(self.config.concurrency)
