"""Broker nodes: services, files, permissions, hardening, sysctl, admin tooling."""
import json

testinfra_hosts = ["brokers"]


def test_broker_instance_enabled_and_running(host):
    unit = host.service(f"task-queue-broker@{host.backend.get_hostname()}")
    assert unit.is_enabled
    assert unit.is_running


def test_plain_unit_installed_but_unused(host):
    assert host.file("/etc/systemd/system/task-queue-broker.service").exists
    assert not host.service("task-queue-broker").is_running


def test_service_user_and_directories(host):
    user = host.user("taskqueue")
    assert user.exists and user.shell == "/bin/false"
    for path in ("/opt/task-queue", "/etc/task-queue", "/var/lib/task-queue"):
        f = host.file(path)
        assert f.is_directory and f.user == "taskqueue" and f.group == "taskqueue"
    data = host.file(f"/var/lib/task-queue/{host.backend.get_hostname()}")
    assert data.is_directory and data.user == "taskqueue" and data.mode == 0o750


def test_config_is_private_and_valid(host):
    name = host.backend.get_hostname()
    cfg = host.file(f"/etc/task-queue/{name}.yaml")
    assert cfg.user == "taskqueue" and cfg.mode == 0o640
    assert host.run(f"/usr/local/bin/tq-broker --check-config /etc/task-queue/{name}.yaml").rc == 0
    text = cfg.content_string
    assert "molecule-worker-key" not in text and "molecule-admin-key" not in text  # hashes only
    assert "enable_tls: true" in text and "enabled: true" in text


def test_tls_material(host):
    for name in ("server", "client"):
        key = host.file(f"/etc/task-queue/tls/{name}.key")
        assert key.user == "taskqueue" and key.mode == 0o400
        assert host.file(f"/etc/task-queue/tls/{name}.crt").exists
    assert not host.file("/etc/task-queue/tls/ca.key").exists  # the CA key stays on the controller
    out = host.check_output("openssl x509 -in /etc/task-queue/tls/server.crt -noout -ext subjectAltName")
    assert host.backend.get_hostname() in out and "tqm-node4" in out


def test_release_layout(host):
    current = host.file("/opt/task-queue/current")
    assert current.is_symlink and current.linked_to.startswith("/opt/task-queue/releases/")
    for script in ("tq-broker", "tq-worker"):
        assert host.file(f"/usr/local/bin/{script}").is_symlink
        assert host.check_output(f"readlink /usr/local/bin/{script}") == f"/opt/task-queue/current/bin/{script}"
    assert host.file("/usr/local/bin/tq-admin").mode == 0o755


def test_unit_hardening(host):
    unit = host.file("/etc/systemd/system/task-queue-broker@.service").content_string
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "LimitNOFILE=65536", "User=taskqueue",
                 "ExecStart=/usr/local/bin/tq-broker --config /etc/task-queue/%i.yaml"):
        assert line in unit
    props = host.check_output(f"systemctl show -p NoNewPrivileges -p ProtectSystem task-queue-broker@{host.backend.get_hostname()}")
    assert "NoNewPrivileges=yes" in props and "ProtectSystem=strict" in props


def test_sysctl_file_and_logrotate(host):
    sysctl = host.file("/etc/sysctl.d/60-task-queue.conf").content_string
    assert "net.core.somaxconn=65535" in sysctl.replace(" ", "")
    assert "net.ipv4.tcp_fastopen=3" in sysctl.replace(" ", "")
    rotate = host.file("/etc/logrotate.d/task-queue").content_string
    assert "/var/log/task-queue/*.log" in rotate and "rotate 14" in rotate
    assert host.run("logrotate -d /etc/logrotate.d/task-queue").rc == 0


def test_admin_preconfigured_for_operators(host):
    env = host.file("/etc/task-queue/admin.env")
    assert env.user == "root" and env.group == "tqadmin" and env.mode == 0o640
    out = host.run("tq-admin --json cluster-status")
    assert out.rc == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["mode"] == "raft"
    # mutual TLS: tq-admin presents a copy of the node's client certificate
    text = env.content_string
    assert "TQ_TLS_CERT=/etc/task-queue/admin-client.crt" in text and "TQ_TLS_KEY=/etc/task-queue/admin-client.key" in text
    key = host.file("/etc/task-queue/admin-client.key")
    assert key.user == "root" and key.group == "tqadmin" and key.mode == 0o640
    assert sorted(n["node_id"] for n in info["nodes"]) == ["tqm-node1", "tqm-node2", "tqm-node3"]


def test_operator_runs_tq_admin_without_root(host):
    """An operator in tqadmin (common_operators), not root and not in the service group,
    runs the preconfigured tq-admin; another unprivileged user reads none of the secrets."""
    assert "tqadmin" in host.user("tqops").groups
    assert "taskqueue" not in host.user("tqops").groups
    out = host.run("runuser -u tqops -- tq-admin --json cluster-status")
    assert out.rc == 0, out.stderr
    assert json.loads(out.stdout)["mode"] == "raft"
    name = host.backend.get_hostname()
    for secret in ("/etc/task-queue/admin.env", "/etc/task-queue/admin-client.key",
                   f"/etc/task-queue/{name}.yaml", "/etc/task-queue/tls/server.key"):
        assert host.run(f"runuser -u nobody -- cat {secret}").rc != 0, secret
    assert host.run("runuser -u nobody -- ls /etc/task-queue").rc != 0


def test_health_endpoint(host):
    out = host.check_output(
        f"curl -fsS --cacert /etc/task-queue/tls/ca.crt --cert /etc/task-queue/tls/client.crt"
        f" --key /etc/task-queue/tls/client.key https://{host.backend.get_hostname()}:8080/health")
    assert json.loads(out)["status"] == "healthy"


def test_config_requires_client_certificates(host):
    text = host.file(f"/etc/task-queue/{host.backend.get_hostname()}.yaml").content_string
    assert "tls_ca_path: /etc/task-queue/tls/ca.crt" in text


def test_health_refused_without_client_certificate(host):
    out = host.run(f"curl -sS -o /dev/null --max-time 5 --tls-max 1.2 --cacert /etc/task-queue/tls/ca.crt"
                   f" https://{host.backend.get_hostname()}:8080/health")
    assert out.rc == 35, (out.rc, out.stderr)  # TLS handshake failed
