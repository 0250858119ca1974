"""Docs a newcomer tripped on (issue 11): the examples they copy are valid as written."""

from __future__ import annotations

import re

from broker import config as cfg
from tests.brokerproc import ROOT


def yaml_blocks(doc: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / doc).read_text(), re.S)


def test_the_one_host_cluster_example_gives_every_listener_its_own_port(tmp_path):
    [block] = [b for b in yaml_blocks("clustering.md") if "node 2 of 3 on one host" in b]
    path = tmp_path / "node2.yaml"
    path.write_text(block)
    config = cfg.load(path)
    ports = {config.broker.port, config.broker.port + 1, config.api.rest_port,
             config.api.grpc_port, config.monitoring.prometheus_port}
    assert len(ports) == 5 and not ports & {6379, 6380, 8080, 9090, 9091}
