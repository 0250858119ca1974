"""Assembles one broker node: store, state machine, log, service, sweeper and listeners.

Everything runs on one uvloop event loop in one process (see docs/architecture.md): the
RESP worker protocol, the REST API (Sanic), gRPC (grpc.aio) and the Prometheus endpoint.
Start-up order: open RocksDB, replay/attach the log, start the listeners; shutdown runs the
other way round so that nothing is accepted that cannot be committed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket

from broker.api.resp_server import RespServer
from broker.auth import Authenticator
from broker.config import Config
from broker.log.base import Log
from broker.limits_config import LimitsReconciler
from broker.log.local import LocalLog
from broker.machine import StateMachine
from broker.restore import StartupRefused, check_raft_start
from broker.schedule_timer import ScheduleTimer
from broker.service import Service
from broker.store import Store
from broker.sweeper import Sweeper

log = logging.getLogger("tq.broker")


def build_log(config: Config, machine: StateMachine, store: Store) -> Log:
    if config.raft.enabled:
        from broker.log.raft import RaftLog  # imports pysyncobj only when clustering

        return RaftLog(config, machine, store)
    return LocalLog(machine, store, node_id=config.raft.node_id or socket.gethostname(),
                    address=config.advertise_address,
                    sync_interval_ms=config.persistence.wal_sync_interval_ms,
                    max_batch=config.persistence.max_batch_commands)


class Broker:
    """One node. ``await run()`` serves until ``stop()`` (or SIGTERM/SIGINT)."""

    def __init__(self, config: Config):
        self.config = config
        self.stopping = asyncio.Event()
        self.store: Store | None = None
        self.listeners: list = []  # objects with async stop(), stopped in reverse order

    async def start(self) -> None:
        config = self.config
        p = config.persistence
        self.store = Store(p.data_dir, write_buffer_size=p.write_buffer_size,
                           max_write_buffer_number=p.max_write_buffer_number,
                           block_cache_size=p.block_cache_size)
        self.machine = StateMachine(self.store)
        try:
            # A database with an applied index under a journal that does not exist yet
            # (a backup or a single-node directory dropped in): refuse, never skip entries.
            check_raft_start(config, self.machine.applied_index)
        except StartupRefused:
            self.store.close()
            raise
        self.log = build_log(config, self.machine, self.store)
        a = config.auth
        self.auth = Authenticator(a.enabled, a.api_keys,
                                  max_pending=a.max_pending_verifications,
                                  failed_delay=a.failed_attempt_delay_secs,
                                  failed_max_delay=a.failed_attempt_max_delay_secs)
        self.service = Service(config, self.store, self.log, self.auth)
        await self.log.start()
        self.sweeper = Sweeper(self.service)
        self.sweeper.start()
        self.limits_reconciler = LimitsReconciler(self.service)
        self.limits_reconciler.start()
        self.schedule_timer = ScheduleTimer(self.service)
        self.schedule_timer.start()
        self.ssl = self._server_ssl()
        host = config.broker.host
        b = config.broker
        self.resp = RespServer(self.service, self.auth,
                               max_connections=b.max_connections,
                               max_frame_bytes=b.max_frame_bytes,
                               max_unauthenticated=b.max_unauthenticated_connections,
                               handshake_timeout=b.handshake_timeout_secs,
                               request_timeout=b.request_timeout_secs,
                               max_inflight=b.max_inflight_requests,
                               reply_buffer_bytes=b.reply_buffer_bytes)
        await self.resp.start(host, config.broker.port, ssl=self.ssl)
        self.listeners.append(self.resp)
        await self._start_optional_apis()
        # Start-up objects live for the process: keep the cyclic GC from rescanning them
        # (gen-2 pauses of ~20 ms were measured on this stack without it).
        gc.freeze()
        # Apply allocates many short-lived dicts per command; collecting generation 0 every
        # 700 allocations (the default) cost ~6% of apply time in the measurements.
        gc.set_threshold(100_000, 50, 100)
        log.info("broker %s serving: protocol %s:%d, applied index %d, data in %s",
                 self.service.node_id, host, config.broker.port, self.machine.applied_index,
                 self.store.path)
        if not config.auth.enabled and not _is_loopback(host):
            log.warning("listening on %s without authentication (auth.enabled: false): "
                        "anyone who reaches these ports can submit, read and cancel tasks. "
                        "Bind broker.host to 127.0.0.1, or turn auth on (docs/operations.md, "
                        "Security)", host)

    def _server_ssl(self):
        api = self.config.api
        if not api.enable_tls:
            return None
        from taskqueue.tlsutil import server_context

        return server_context(api.tls_cert_path, api.tls_key_path, api.tls_ca_path or None)

    async def _start_optional_apis(self) -> None:
        """REST, gRPC and metrics listeners, each only when its port is non-zero."""
        try:
            from broker.api import listeners
        except ImportError:  # the APIs module is not part of this build
            return
        for listener in await listeners.start_all(self):
            self.listeners.append(listener)

    async def stop(self) -> None:
        for listener in reversed(self.listeners):
            try:
                await listener.stop()
            except Exception:
                log.exception("error stopping %r", listener)
        await self.limits_reconciler.stop()
        await self.schedule_timer.stop()
        await self.sweeper.stop()
        await self.log.stop()
        self.auth.close()
        self.store.close()
        log.info("broker stopped")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.start()
        await self.stopping.wait()
        log.info("shutting down")
        await self.stop()


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: only this machine can connect."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
