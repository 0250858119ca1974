"""Prometheus metrics on ``monitoring.prometheus_port``.

Nothing is counted on the hot path that the broker does not count anyway: a custom collector
reads the state machine's counters, the service's per-node operation totals, the log's
status and RocksDB's properties *at scrape time* (one call to ``Service.metrics_view()`` on
the event loop, about a hundred microseconds). The only per-request work is two histogram
observations per task (queue wait at claim, run time at ACK/FAIL) through the service's
observer hook.

The HTTP side is prometheus_client's threaded WSGI server, not a handler on the loop: it
keeps the formatting (about 2 ms a scrape) off the loop thread. With TLS the accepted socket
is wrapped without handshaking in the accept thread, so a silent client cannot stall the
listener; each connection times out after 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from broker.api.conn_guard import (HANDSHAKE_TIMEOUT, MAX_CONNECTIONS, REQUEST_TIMEOUT,
                                   UNAUTHENTICATED_LIMIT)
from broker.api.health import write_stalled
from broker.log import raft_peer_guard
from broker.auth_throttle import BUSY, INVALID, MISSING, TOO_LONG
from broker.machine import STATUSES

log = logging.getLogger("tq.metrics")

CLOSE_REASONS = (HANDSHAKE_TIMEOUT, REQUEST_TIMEOUT, UNAUTHENTICATED_LIMIT, MAX_CONNECTIONS)
AUTH_FAILURE_REASONS = (INVALID, MISSING, TOO_LONG, BUSY)
ROLES = ("leader", "follower", "candidate", "single", "unknown")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                   300, 600, 1800, 3600, float("inf"))


class TaskTimer:
    """The service observer: queue-wait time at claim, run time at ACK/FAIL.

    Run time is measured from the claim this node handed out to the ACK/FAIL it received
    (a task claimed before a restart or on another node is not timed). The map of running
    tasks is bounded; when full it is dropped (some run times go unobserved).
    """

    LIMIT = 200_000

    def __init__(self, registry: CollectorRegistry):
        self.wait = Histogram("tq_task_queue_wait_seconds",
                              "Time a task waited from becoming due (submit, run_at or retry "
                              "time) to being claimed. Not observed for lease-expiry "
                              "requeues.", buckets=LATENCY_BUCKETS, registry=registry)
        run = Histogram("tq_task_run_seconds", "Time from claim to ACK (outcome=completed) "
                        "or FAIL (outcome=failed), for claims made by this node.",
                        ["outcome"], buckets=LATENCY_BUCKETS, registry=registry)
        self.run = {"acked": run.labels("completed"), "failed": run.labels("failed")}
        self.started: dict[tuple[str, int], float] = {}

    def claimed(self, jobs) -> None:
        started_map = self.started
        if len(started_map) + len(jobs) > self.LIMIT:
            started_map.clear()
        for job in jobs:
            started = job.get("started_at")
            if started is None:
                continue
            due = job.get("run_at")
            if due is None and job.get("attempts") == 1:
                due = job.get("created_at")
            if due is not None:
                self.wait.observe(max(0.0, started - due))
            started_map[(job["id"], job.get("token"))] = started

    def settled(self, rate: str, commands) -> None:
        hist = self.run.get(rate)
        if hist is None:
            return
        for command in commands:
            started = self.started.pop((command[2], command[3]), None)
            if started is not None:
                hist.observe(max(0.0, command[1] / 1000.0 - started))


class BrokerCollector:
    """Reads everything at scrape time, on the loop, through ``Service.metrics_view()``."""

    def __init__(self, broker, loop: asyncio.AbstractEventLoop):
        self.broker = broker
        self.loop = loop

    async def _snapshot(self) -> dict:
        broker = self.broker
        view = broker.service.metrics_view()
        resp = getattr(broker, "resp", None)
        view["resp_connections"] = len(resp.connections) if resp else 0
        view["resp_worker_connections"] = resp.worker_connections() if resp else 0
        view["resp_accepted"] = resp.total_accepted if resp else 0
        guard = getattr(resp, "guard", None)
        view["resp_unauthenticated"] = len(guard.unauthenticated) if guard else 0
        view["resp_closed"] = dict(guard.closed) if guard else {}
        view["resp_reading_paused"] = resp.reading_paused() if resp else 0
        auth = getattr(broker, "auth", None)
        view["auth_failures"] = auth.failure_counts if auth is not None else {}
        view["raft_peer_refusals"] = dict(raft_peer_guard.refusals)
        rest = getattr(broker, "rest_api", None)
        view["rest_connections"] = (len(rest.server.connections)
                                    if rest is not None and rest.server is not None else None)
        view["uptime"] = time.time() - broker.service.started_at
        log_ = broker.service.log
        view["write_stalled"] = write_stalled(log_)
        view["proposals_waiting"] = len(getattr(log_, "_queue", ())) + getattr(
            log_, "in_flight", 0)
        return view

    def describe(self):
        return []  # no fixed description: keep registration from calling collect()

    def collect(self):
        try:
            view = asyncio.run_coroutine_threadsafe(self._snapshot(), self.loop).result(5)
        except Exception as exc:
            log.warning("metrics snapshot failed: %s", exc)
            return
        yield from self._families(view)

    @staticmethod
    def _limit_families(limits: dict):
        """Rate and concurrency limits (broker/commands/limits.py): only limited queues."""
        rated = {q: lim for q, lim in sorted(limits.items()) if lim.get("rate") is not None}
        bounded = {q: lim for q, lim in sorted(limits.items())
                   if lim.get("concurrency") is not None}
        g = GaugeMetricFamily("tq_queue_rate_limit", "Tasks a queue may start per second, "
                              "cluster-wide (its token bucket's refill rate).",
                              labels=["queue"])
        for name, lim in rated.items():
            g.add_metric([name], lim["rate"])
        yield g
        g = GaugeMetricFamily("tq_queue_rate_burst", "A rate-limited queue's bucket size.",
                              labels=["queue"])
        for name, lim in rated.items():
            g.add_metric([name], lim["burst"])
        yield g
        g = GaugeMetricFamily("tq_queue_rate_tokens", "Tokens in a rate-limited queue's "
                              "bucket now (tasks it may start at once).", labels=["queue"])
        for name, lim in rated.items():
            g.add_metric([name], lim.get("tokens") or 0.0)
        yield g
        g = GaugeMetricFamily("tq_queue_concurrency_limit", "Tasks of a queue that may run "
                              "at once, cluster-wide (compare tq_queue_depth running).",
                              labels=["queue"])
        for name, lim in bounded.items():
            g.add_metric([name], lim["concurrency"])
        yield g
        c = CounterMetricFamily("tq_queue_throttled", "Claims a queue's limit held back "
                                "while it had pending tasks, cluster-wide.",
                                labels=["queue", "limit"])
        for name, lim in sorted(limits.items()):
            c.add_metric([name, "rate"], lim.get("throttled_rate", 0))
            c.add_metric([name, "concurrency"], lim.get("throttled_concurrency", 0))
        yield c

    @staticmethod
    def _schedule_families(found: dict | None):
        """Schedules (broker/commands/schedules.py): counts always, and each schedule's
        last fired slot while there are at most 1000 schedules (bounded series)."""
        if not found:
            return
        g = GaugeMetricFamily("tq_schedules_total", "Schedules defined, by state.",
                              labels=["state"])
        g.add_metric(["active"], found["total"] - found["paused"])
        g.add_metric(["paused"], found["paused"])
        yield g
        if found.get("last_slot") is not None:
            g = GaugeMetricFamily("tq_schedule_last_fired_timestamp", "The slot (Unix time) "
                                  "a schedule last enqueued, per schedule.",
                                  labels=["schedule"])
            for name, slot in sorted(found["last_slot"].items()):
                g.add_metric([name], slot)
            yield g

    @staticmethod
    def _families(view: dict):
        queues = view["queues"]
        by_status = {s: 0 for s in STATUSES}
        for counts in queues.values():
            for status in STATUSES:
                by_status[status] += counts.get(status, 0)

        g = GaugeMetricFamily("tq_tasks_pending", "Tasks ready to run (status pending), all "
                              "queues.", value=by_status["pending"])
        yield g
        g = GaugeMetricFamily("tq_tasks_current", "Tasks currently in each status, all queues.",
                              labels=["status"])
        for status in STATUSES:
            g.add_metric([status], by_status[status])
        yield g
        g = GaugeMetricFamily("tq_queue_depth", "Tasks in each queue by status.",
                              labels=["queue", "status"])
        for name, counts in sorted(queues.items()):
            for status in STATUSES:
                g.add_metric([name, status], counts.get(status, 0))
        yield g
        g = GaugeMetricFamily("tq_queue_paused", "1 when the queue is paused.",
                              labels=["queue"])
        for name in sorted(set(queues) | view["paused"]):
            g.add_metric([name], 1 if name in view["paused"] else 0)
        yield g
        yield from BrokerCollector._limit_families(view.get("limits") or {})
        yield from BrokerCollector._schedule_families(view.get("schedules"))

        c = CounterMetricFamily("tq_tasks", "Lifetime task outcomes, cluster-wide (from the "
                                "replicated state machine).", labels=["status"])
        for name, value in view["totals"].items():
            c.add_metric([name], value)
        yield c
        c = CounterMetricFamily("tq_operations", "Requests this node served since it "
                                "started: submitted, claimed, acked, failed tasks.",
                                labels=["op"])
        ops = view["operations"]
        for name in ("submitted", "claimed", "acked", "failed"):
            c.add_metric([name], ops.get(name, 0))
        yield c

        yield GaugeMetricFamily("tq_workers_connected", "Workers whose last heartbeat is "
                                "within the lease timeout (cluster-wide registry).",
                                value=view["workers"])
        g = GaugeMetricFamily("tq_connections", "Open client connections on this node.",
                              labels=["protocol"])
        g.add_metric(["resp"], view["resp_connections"])
        if view["rest_connections"] is not None:
            g.add_metric(["rest"], view["rest_connections"])
        yield g
        yield GaugeMetricFamily("tq_worker_connections", "Worker protocol connections "
                                "(HELLO with a worker_id) on this node.",
                                value=view["resp_worker_connections"])
        yield CounterMetricFamily("tq_resp_connections_accepted", "Worker protocol "
                                  "connections accepted since start.",
                                  value=view["resp_accepted"])
        yield GaugeMetricFamily("tq_resp_unauthenticated_connections", "Worker protocol "
                                "connections that have not completed HELLO (limit "
                                "broker.max_unauthenticated_connections).",
                                value=view.get("resp_unauthenticated", 0))
        yield GaugeMetricFamily("tq_resp_reading_paused_connections", "Worker protocol "
                                "connections the broker stopped reading (flow control: "
                                "unread replies or requests in flight above their limits).",
                                value=view.get("resp_reading_paused", 0))
        c = CounterMetricFamily("tq_resp_connections_closed", "Worker protocol connections "
                                "the broker closed on a limit.", labels=["reason"])
        closed = view.get("resp_closed", {})
        for reason in CLOSE_REASONS:
            c.add_metric([reason], closed.get(reason, 0))
        yield c
        c = CounterMetricFamily("tq_auth_failures", "Failed API key authentications on "
                                "this node, every port (busy: refused because "
                                "auth.max_pending_verifications checks were waiting).",
                                labels=["reason"])
        failures = view.get("auth_failures", {})
        for reason in AUTH_FAILURE_REASONS:
            c.add_metric([reason], failures.get(reason, 0))
        yield c
        c = CounterMetricFamily("tq_raft_peer_refusals", "Raft peer connections this node "
                                "closed before or while authenticating them (always 0 in "
                                "single-node mode).", labels=["reason"])
        refused = view.get("raft_peer_refusals", {})
        for reason in raft_peer_guard.REFUSAL_REASONS.values():
            c.add_metric([reason], refused.get(reason, 0))
        yield c
        yield GaugeMetricFamily("tq_uptime_seconds", "Seconds since this broker started.",
                                value=view["uptime"])

        for name, value in sorted(view["rocksdb"].items()):
            if value is not None:
                yield GaugeMetricFamily(f"tq_rocksdb_{name}", f"RocksDB property "
                                        f"({name.replace('_', '-')}).", value=value)

        status = view["log"]
        role = status.get("role") or "unknown"
        g = GaugeMetricFamily("tq_raft_role", "1 for this node's current role (single-node "
                              "mode reports leader).", labels=["role"])
        for name in ROLES if role in ROLES else ROLES + (role,):
            g.add_metric([name], 1 if name == role else 0)
        yield g
        yield GaugeMetricFamily("tq_raft_is_leader", "1 when this node takes writes.",
                                value=1 if view["is_leader"] else 0)
        for key, help_text in (("term", "Current Raft term (0 in single-node mode)."),
                               ("commit_index", "Highest log index known committed."),
                               ("applied_index", "Highest log index applied to RocksDB.")):
            value = status.get(key)
            if isinstance(value, (int, float)):
                yield GaugeMetricFamily(f"tq_raft_{key}", help_text, value=value)
        yield GaugeMetricFamily("tq_raft_caught_up", "0 while this node has not yet applied "
                                "what the leader had committed when it (re)joined.",
                                value=1 if status.get("caught_up", True) else 0)
        nodes = status.get("nodes") or []
        g = GaugeMetricFamily("tq_raft_node_lag", "Entries each node's applied index trails "
                              "the commit index, as this node sees it.", labels=["node_id"])
        r = GaugeMetricFamily("tq_raft_node_reachable", "1 when this node can reach the "
                              "node.", labels=["node_id"])
        for node in nodes:
            if isinstance(node.get("lag"), (int, float)):
                g.add_metric([str(node.get("node_id"))], node["lag"])
            r.add_metric([str(node.get("node_id"))], 1 if node.get("reachable") else 0)
        yield g
        yield r

        # Where the data came from (tq-broker --restore): one series per node, so
        # `count(count by (backup_sha256) (tq_restore_info)) > 1` compares the whole cluster
        # even when the nodes cannot reach each other; empty labels: never restored.
        restored = status.get("restored") if isinstance(status.get("restored"), dict) else {}
        g = GaugeMetricFamily("tq_restore_info", "Always 1; labels name the backup this "
                              "node's database was restored from (empty: never restored).",
                              labels=["backup_sha256", "backup_applied_index"])
        g.add_metric([str(restored.get("backup_sha256") or ""),
                      "" if restored.get("backup_applied_index") is None
                      else str(restored["backup_applied_index"])], 1)
        yield g
        stalled = view.get("write_stalled", 0.0)
        yield GaugeMetricFamily("tq_log_write_stalled", "1 while proposals wait and no entry "
                                "was applied for longer than a write may take (the write "
                                "path is stuck; /health says write_stalled).",
                                value=1 if stalled else 0)
        yield GaugeMetricFamily("tq_log_write_stalled_seconds", "How long the write path "
                                "has been stuck (0 when it moves).", value=stalled)
        yield GaugeMetricFamily("tq_log_proposals_waiting", "Proposals queued or in flight "
                                "on this node, not yet answered.",
                                value=view.get("proposals_waiting", 0))
        yield GaugeMetricFamily("tq_raft_restore_mismatch", "1 when the reachable nodes "
                                "report different restores (another archive, or a node not "
                                "restored): a mixed cluster that diverges silently.",
                                value=1 if status.get("restore_mismatch") else 0)


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # an idle or slow connection cannot pin a thread

    def log_message(self, format, *args):
        pass


class _Server(ThreadingWSGIServer):
    ssl_context = None
    allow_reuse_address = True

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.ssl_context is not None:
            # Handshake later, in the connection's own thread (first read), with its timeout.
            sock.settimeout(_QuietHandler.timeout)
            sock = self.ssl_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        # A failed TLS handshake or a client gone mid-request: not worth a traceback.
        log.debug("metrics request from %s failed", client_address, exc_info=True)


class MetricsServer:
    def __init__(self, broker):
        self.broker = broker
        self.registry = CollectorRegistry(auto_describe=False)
        self.timer = TaskTimer(self.registry)
        self.httpd = None
        self.thread = None

    async def start(self, host: str, port: int, ssl=None) -> None:
        self.registry.register(BrokerCollector(self.broker, asyncio.get_running_loop()))
        self.broker.service.observer = self.timer
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]

        class Server(_Server):
            address_family = family
            ssl_context = ssl

        self.httpd = make_server(sockaddr[0], port, make_wsgi_app(self.registry), Server,
                                 handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="tq-metrics",
                                       kwargs={"poll_interval": 0.5}, daemon=True)
        self.thread.start()
        log.info("metrics on %s:%d%s", host, port, " (TLS)" if ssl else "")

    async def stop(self) -> None:
        if self.broker.service.observer is self.timer:
            self.broker.service.observer = None
        httpd, self.httpd = self.httpd, None
        if httpd is None:
            return
        # shutdown() blocks until serve_forever returns: not on the loop thread.
        await asyncio.get_running_loop().run_in_executor(None, httpd.shutdown)
        httpd.server_close()
