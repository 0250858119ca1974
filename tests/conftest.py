"""Shared fixtures: real broker processes (see tests/brokerproc.py)."""

from __future__ import annotations

import pytest

from tests.brokerproc import BrokerProcess


@pytest.fixture
def broker_factory(tmp_path):
    """``broker_factory(overrides)`` starts a broker; all are stopped after the test."""
    started: list[BrokerProcess] = []

    def make(overrides: dict | None = None, name: str | None = None, start: bool = True):
        proc = BrokerProcess(tmp_path / (name or f"b{len(started)}"), overrides,
                             name=name or f"b{len(started)}")
        started.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def broker(broker_factory):
    """A single-node broker on free ports, wal_sync_interval_ms 100, short leases."""
    return broker_factory()
