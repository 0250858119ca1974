"""Listener lifecycle: a taken port fails start-up naming its key; SIGTERM with idle API
clients connected still shuts down promptly and cleanly."""

from __future__ import annotations

import socket
import time

import grpc
import httpx
import pytest

from broker.api import taskqueue_pb2 as pb
from broker.api import taskqueue_pb2_grpc as pb_grpc
from tests.api_support import api_overrides, ports, rest_url, wait_port
from tests.brokerproc import BrokerProcess


@pytest.mark.parametrize("key", ["api.rest_port", "api.grpc_port",
                                 "monitoring.prometheus_port"])
def test_taken_port_fails_startup_naming_the_key(tmp_path, key):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        section, name = key.split(".")
        proc = BrokerProcess(tmp_path, api_overrides({section: {name: taken}}), name="clash")
        try:
            proc.start(wait=20)  # the worker port may answer before the APIs bind
        except RuntimeError:
            pass
        try:
            assert proc.proc.wait(20) == 1
        finally:
            proc.stop()
    assert f"{key} cannot listen on 127.0.0.1:{taken}" in proc.logs()


def test_sigterm_with_idle_api_clients(tmp_path):
    proc = BrokerProcess(tmp_path, api_overrides(), name="term")
    proc.start()
    p = ports(proc)
    for port in p.values():
        wait_port(port)
    http = httpx.Client(base_url=rest_url(proc))  # keep-alive connection stays open
    assert http.get("/health").status_code == 200
    channel = grpc.insecure_channel(f"127.0.0.1:{p['grpc']}")
    pb_grpc.TaskQueueStub(channel).Stats(pb.StatsRequest(), timeout=5)
    idle = socket.create_connection(("127.0.0.1", p["metrics"]))
    try:
        started = time.monotonic()
        assert proc.terminate(timeout=15) == 0
        elapsed = time.monotonic() - started
        print(f"shutdown took {elapsed:.2f}s")
        assert elapsed < 8
    finally:
        idle.close()
        channel.close()
        http.close()
        proc.stop()
    assert "broker stopped" in proc.logs()
