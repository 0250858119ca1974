"""Starts the optional API listeners of a broker: REST, gRPC and Prometheus metrics.

``Broker.start()`` calls :func:`start_all` after the worker protocol is listening. Each
listener binds ``broker.host`` on its configured port (skipped when the port is 0) with the
broker's TLS context (``broker.ssl``, or plaintext). A listener that cannot start stops the
ones already started and fails the broker's start-up with an ``OSError`` naming the port.
"""

from __future__ import annotations

import logging

log = logging.getLogger("tq.api")


async def start_all(broker) -> list:
    config = broker.config
    host = config.broker.host
    ssl = broker.ssl
    started: list = []

    async def start(name: str, listener, port: int):
        try:
            await listener.start(host, port, ssl=ssl)
        except OSError as exc:
            raise OSError(exc.errno, f"{name} cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}") from exc
        except RuntimeError as exc:  # grpc: "Failed to bind"
            raise OSError(f"{name} cannot listen on {host}:{port}: {exc}") from exc
        started.append(listener)
        return listener

    try:
        if config.api.rest_port:
            from broker.api.rest import RestServer

            broker.rest_api = await start("api.rest_port", RestServer(broker),
                                          config.api.rest_port)
        if config.api.grpc_port:
            from broker.api.grpc_server import GrpcServer

            broker.grpc_api = await start("api.grpc_port", GrpcServer(broker),
                                          config.api.grpc_port)
        if config.monitoring.prometheus_port:
            from broker.api.metrics import MetricsServer

            broker.metrics = await start("monitoring.prometheus_port", MetricsServer(broker),
                                         config.monitoring.prometheus_port)
    except BaseException:
        for listener in reversed(started):
            try:
                await listener.stop()
            except Exception:
                log.exception("error stopping %r", listener)
        raise
    return started
