"""ufw: active, default deny, only the ports each group needs."""

testinfra_hosts = ["all"]


def _status(host):
    return host.check_output("ufw status verbose")


def test_ufw_active_default_deny(host):
    status = _status(host)
    assert "Status: active" in status
    assert "deny (incoming)" in status
    assert "22/tcp" in status


def test_ports_per_group(host):
    status = _status(host)
    groups = host.ansible.get_variables()["group_names"]
    if "brokers" in groups:
        for port in ("6379/tcp", "8080/tcp", "9090/tcp", "9091/tcp", "6380/tcp"):
            assert port in status
    else:
        assert "6380/tcp" not in status and "9091/tcp" not in status
    if "lb" in groups:
        for port in ("6379/tcp", "8080/tcp", "8404/tcp"):
            assert port in status
    for line in status.splitlines():
        if "ALLOW IN" in line and not line.startswith("22/tcp"):
            assert "172.28.50.0/24" in line, line  # every service port has a source range


def test_closed_port_is_dropped(host):
    """A port nobody opened is filtered between nodes (the packet is dropped, not refused)."""
    groups = host.ansible.get_variables()["group_names"]
    if "lb" not in groups:
        return
    out = host.run("curl -s -o /dev/null --max-time 3 http://tqm-node1:9999/; echo rc=$?")
    assert "rc=28" in out.stdout  # timeout: dropped by ufw (a refused port gives rc=7)
