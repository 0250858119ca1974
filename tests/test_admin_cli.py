"""tq-admin as an operator runs it: a subprocess against a real broker, JSON and exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from taskqueue.client import Client
from tests.brokerproc import free_port
from tests.helpers_worker import ROOT


def admin(addr: str | None, *args: str, env: dict | None = None, timeout: float = 30,
          stdin: str | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "admin.cli"]
    if addr:
        argv += ["--broker-addr", addr]
    return subprocess.run(argv + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env, input=stdin)


@pytest.fixture
def client(broker):
    with Client(broker.addr) as c:
        yield c


def test_list_prints_a_json_array_following_cursors(broker, client):
    client.submit_bulk([{"type": "echo", "payload": i} for i in range(30)])
    result = admin(broker.addr, "list", "--status", "pending", "--limit", "25")
    assert result.returncode == 0, result.stderr
    tasks = json.loads(result.stdout)
    assert isinstance(tasks, list) and len(tasks) == 25
    assert all(t["status"] == "pending" and t["type"] == "echo" for t in tasks)
    # Without --json too, and an empty result is still an array.
    empty = admin(broker.addr, "list", "--status", "dead")
    assert empty.returncode == 0 and json.loads(empty.stdout) == []


def test_list_filters_by_queue_and_type(broker, client):
    client.submit("echo", 1, queue="alpha")
    client.submit("sleep", {"seconds": 0}, queue="alpha")
    client.submit("echo", 2, queue="beta")
    tasks = json.loads(admin(broker.addr, "list", "--queue", "alpha", "--type", "echo").stdout)
    assert [(t["queue"], t["type"], t["payload"]) for t in tasks] == [("alpha", "echo", 1)]


def test_get_cancel_requeue(broker, client):
    task = client.submit("echo", {"k": "v"})
    got = admin(broker.addr, "get", task["id"], "--json")
    assert got.returncode == 0 and json.loads(got.stdout)["payload"] == {"k": "v"}
    human = admin(broker.addr, "get", task["id"])
    assert task["id"] in human.stdout and '{"k": "v"}' in human.stdout
    cancelled = admin(broker.addr, "--json", "cancel", task["id"])
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    requeued = admin(broker.addr, "requeue", task["id"])
    assert requeued.stdout.split() == [task["id"], "pending"]


def test_queue_depth_pause_resume(broker, client):
    client.submit("echo", None, queue="orders")
    assert admin(broker.addr, "pause", "orders").returncode == 0
    depth = json.loads(admin(broker.addr, "queue-depth", "--json").stdout)
    assert depth["orders"]["pending"] == 1 and depth["orders"]["paused"] is True
    table = admin(broker.addr, "queue-depth").stdout.splitlines()
    assert table[0].split()[:3] == ["QUEUE", "SCHEDULED", "PENDING"]
    assert table[1].split()[0] == "orders" and table[1].split()[-1] == "yes"
    admin(broker.addr, "resume", "orders")
    assert json.loads(admin(broker.addr, "queue-depth", "--json").stdout)["orders"][
        "paused"] is False


def test_workers_stats_cluster_status(broker, client):
    with Client(broker.addr, identity={"worker_id": "w-admin-test", "hostname": "h",
                                       "pid": 42, "queues": ["default"],
                                       "concurrency": 3}):
        workers = json.loads(admin(broker.addr, "workers", "--json").stdout)
        assert [w["worker_id"] for w in workers] == ["w-admin-test"]
        table = admin(broker.addr, "workers").stdout
        assert "w-admin-test" in table and "WORKER_ID" in table
    stats = json.loads(admin(broker.addr, "stats", "--json").stdout)
    assert "rocksdb" in stats and "tasks" in stats
    assert "rocksdb.estimate_num_keys" in admin(broker.addr, "stats").stdout
    cluster = json.loads(admin(broker.addr, "cluster-status", "--json").stdout)
    assert cluster["mode"] == "single" and len(cluster["nodes"]) == 1
    assert "leader" in admin(broker.addr, "cluster-status").stdout


def test_worker_state(broker):
    with Client(broker.addr, identity={"worker_id": "w-quiet"}):
        result = admin(broker.addr, "worker-state", "w-quiet", "quiet")
        assert result.returncode == 0, result.stderr
        workers = json.loads(admin(broker.addr, "workers", "--json").stdout)
        assert workers[0]["state"] == "quiet"


def test_submit_and_snapshot(broker, tmp_path):
    result = admin(broker.addr, "submit", "echo", "--payload", '{"n": 1}', "--queue", "smoke",
                   "--priority", "3", "--json")
    assert result.returncode == 0, result.stderr
    task = json.loads(result.stdout)
    assert task["queue"] == "smoke" and task["priority"] == 3 and task["payload"] == {"n": 1}
    target = tmp_path / "snap"
    snap = admin(broker.addr, "create-snapshot", str(target), "--json")
    assert snap.returncode == 0, snap.stderr
    assert json.loads(snap.stdout)["path"] == str(target) and target.exists()


def test_watch_refreshes_until_interrupted(broker):
    proc = subprocess.Popen([sys.executable, "-m", "admin.cli", "--broker-addr", broker.addr,
                             "queue-depth", "--watch", "0.2"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # A suite started in the background (`cmd &` in a script) runs
                            # with SIGINT ignored, and Python then never raises
                            # KeyboardInterrupt: give the child the default disposition.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Interrupt after the third refresh is printed (each is flushed), not after a fixed
    # sleep: on a loaded machine the start-up alone can take most of one.
    seen, deadline = [], time.monotonic() + 30
    while sum("Ctrl-C to stop" in line for line in seen) < 3:
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, ("".join(seen), proc.poll())
        seen.append(line)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert ("".join(seen) + out).count("Ctrl-C to stop") >= 3


def test_hash_key_is_a_bcrypt_hash_of_the_key():
    bcrypt = pytest.importorskip("bcrypt")
    result = admin(None, "hash-key", "s3cret", "--rounds", "4")
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert hashed.startswith("$2") and bcrypt.checkpw(b"s3cret", hashed.encode())
    from_stdin = admin(None, "hash-key", "--rounds", "4", stdin="piped\n")
    assert bcrypt.checkpw(b"piped", from_stdin.stdout.strip().encode())
    # bcrypt looks at 72 bytes at most: a longer key could never log in, so it is refused.
    too_long = admin(None, "hash-key", "k" * 73, "--rounds", "4")
    assert too_long.returncode != 0 and "72" in too_long.stderr
    assert admin(None, "hash-key", "k" * 72, "--rounds", "4").returncode == 0


def test_api_key_from_environment(broker_factory):
    bcrypt = pytest.importorskip("bcrypt")
    key_hash = bcrypt.hashpw(b"ops-key", bcrypt.gensalt(rounds=4)).decode()
    secured = broker_factory({"auth": {"enabled": True, "api_keys": [
        {"key_hash": key_hash, "permissions": ["read_tasks"]}]}}, name="secured")
    import os
    env = dict(os.environ, TQ_API_KEY="ops-key")
    assert admin(secured.addr, "queue-depth", env=env).returncode == 0
    refused = admin(secured.addr, "queue-depth", "--api-key", "wrong")
    assert refused.returncode == 1 and "NOAUTH" in refused.stderr
    # A key without the admin permission cannot pause.
    denied = admin(secured.addr, "pause", "default", env=env)
    assert denied.returncode == 1 and "NOPERM" in denied.stderr


@pytest.mark.parametrize("args, code, message", [
    (("get", "no-such-task"), 1, "NOTFOUND"),
    (("submit", "echo", "--payload", "{not json"), 2, "not valid JSON"),
    (("list", "--status", "bogus"), 2, "invalid choice"),
    (("list", "--limit", "0"), 2, "--limit"),
    (("frobnicate",), 2, "invalid choice"),
])
def test_exit_codes(broker, args, code, message):
    result = admin(broker.addr, *args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr


def test_exit_code_3_when_the_broker_is_unreachable():
    addr = f"127.0.0.1:{free_port()}"
    result = admin(addr, "queue-depth")
    assert result.returncode == 3
    assert "cannot reach the broker" in result.stderr and addr in result.stderr


def test_broker_addr_from_environment(broker):
    import os
    env = dict(os.environ, TQ_BROKER_ADDR=broker.addr)
    assert admin(None, "cluster-status", "--json", env=env).returncode == 0


def test_list_streams_an_export_spanning_several_pages(broker, client):
    for start in range(0, 2500, 1000):
        client.submit_bulk([{"type": "echo", "payload": i, "queue": "export"}
                            for i in range(start, min(start + 1000, 2500))])
    result = admin(broker.addr, "list", "--queue", "export", "--limit", "2200")
    assert result.returncode == 0, result.stderr
    tasks = json.loads(result.stdout)
    assert len(tasks) == 2200 and len({t["id"] for t in tasks}) == 2200
    everything = json.loads(admin(broker.addr, "list", "--queue", "export",
                                  "--limit", "100000").stdout)
    assert sorted(t["payload"] for t in everything) == list(range(2500))


def test_import_round_trips_a_list_export_and_is_idempotent(broker_factory, tmp_path):
    source, target = broker_factory(name="src"), broker_factory(name="dst")
    with Client(source.addr) as c:
        ids = {c.submit("echo", {"n": i}, queue="mig")["id"] for i in range(1500)}
    export = admin(source.addr, "list", "--queue", "mig", "--limit", "5000")
    assert export.returncode == 0, export.stderr
    path = tmp_path / "tasks.json"
    path.write_text(export.stdout)
    first = admin(target.addr, "--json", "import", str(path))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["imported"] == 1500
    again = admin(target.addr, "--json", "import", str(path))
    assert json.loads(again.stdout) == {"imported": 0, "duplicates": 1500, "failed": 0,
                                        "errors": []}
    with Client(target.addr) as c:
        assert c.queues()["mig"]["pending"] == 1500
        assert {t["id"] for t in c.iter_tasks(status="pending", queue="mig")} == ids
    # invalid input anywhere in a batch rejects the batch: nothing of it is submitted
    path.write_text(json.dumps([{"type": "echo", "id": "fine"},
                                {"type": "echo", "priority": 99}]))
    bad = admin(target.addr, "import", str(path))
    assert bad.returncode == 1 and "priority" in bad.stderr
    with Client(target.addr) as c:
        assert "default" not in c.queues()


def test_import_draws_a_progress_bar_on_a_terminal(broker, tmp_path):
    import os
    import pty

    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([{"type": "echo", "payload": i} for i in range(2500)]))
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "admin.cli", "--broker-addr", broker.addr,
                             "import", str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=follower, text=True)
    os.close(follower)
    out, _ = proc.communicate(timeout=60)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    assert proc.returncode == 0 and "imported 2500" in out
    assert b"importing [" in drawn and b"2500/2500" in drawn


def _cluster_reply(identities: list, mismatch: bool) -> dict:
    nodes = []
    for i, restored in enumerate(identities):
        node = {"node_id": f"n{i + 1}", "address": f"127.0.0.1:{7011 + 10 * i}",
                "role": "leader" if i == 0 else "follower", "term": 2, "commit_index": 9,
                "applied_index": 9, "lag": 0, "reachable": True, "restored": restored}
        nodes.append(node)
    return {"mode": "raft", "node_id": "n1", "role": "leader", "leader": nodes[0]["address"],
            "leader_id": "n1", "term": 2, "commit_index": 9, "applied_index": 9,
            "restored": identities[0], "restore_mismatch": mismatch, "nodes": nodes}


@pytest.mark.parametrize("mismatch", [False, True])
def test_cluster_status_shows_restore_identities_and_warns_on_a_mix(mismatch):
    """The broker's verdict (restore_mismatch) decides: table and --json both print the
    status; a mix adds a warning on stderr and exit code 4 (degraded)."""
    from taskqueue.resp import encode_bulk
    from tests.fake_broker import FakeBroker

    a = {"backup_sha256": "5d41402abc4b2a76" + "0" * 48, "backup_applied_index": 91234,
         "backup_time": "2024-01-15T02:30:04Z"}
    b = dict(a, backup_sha256="7e2" + "1" * 61, backup_applied_index=95000)
    reply = _cluster_reply([a, a, b if mismatch else a], mismatch)
    fake = FakeBroker().start()
    fake.override["CLUSTER"] = encode_bulk(json.dumps(reply).encode())
    try:
        table = admin(fake.address, "cluster-status")
        as_json = admin(fake.address, "cluster-status", "--json")
    finally:
        fake.stop()
    assert "RESTORED_FROM" in table.stdout and "5d41402abc4b@91234" in table.stdout
    assert json.loads(as_json.stdout)["nodes"][2]["restored"] == reply["nodes"][2]["restored"]
    for result in (table, as_json):
        if mismatch:
            assert result.returncode == 4, result.stderr
            assert "WARNING" in result.stderr and "n3 7e2111111111@95000" in result.stderr
            assert "n1 5d41402abc4b@91234" in result.stderr
        else:
            assert result.returncode == 0, result.stderr
            assert result.stderr == ""


@pytest.mark.parametrize("caught_up", [True, False])
def test_cluster_status_says_when_the_node_is_catching_up(caught_up):
    from taskqueue.resp import encode_bulk
    from tests.fake_broker import FakeBroker

    reply = dict(_cluster_reply([None, None, None], False), caught_up=caught_up)
    fake = FakeBroker().start()
    fake.override["CLUSTER"] = encode_bulk(json.dumps(reply).encode())
    try:
        table = admin(fake.address, "cluster-status")
    finally:
        fake.stop()
    assert table.returncode == 0, table.stderr
    assert ("catching up with the leader" in table.stdout) is not caught_up


def test_get_wait_blocks_until_the_task_finishes(broker, client):
    task = client.submit("echo", None, queue="waited")
    # Nobody works the queue: --wait answers the unfinished state after its timeout.
    pending = admin(broker.addr, "get", task["id"], "--wait", "0.5", "--json")
    assert pending.returncode == 0 and json.loads(pending.stdout)["status"] == "pending"
    waiting = subprocess.Popen(
        [sys.executable, "-m", "admin.cli", "--broker-addr", broker.addr, "get", task["id"],
         "--wait", "60", "--json"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    with Client(broker.addr, identity={"worker_id": "w-wait", "queues": ["waited"]}) as w:
        job = w.fetch(["waited"], timeout_ms=5000)[0]
        time.sleep(1)  # tq-admin is connected and waiting by now (or finds it done)
        w.ack(job["id"], job["token"], "done")
    out, _ = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and json.loads(out)["result"] == "done"


def test_an_http_port_is_named_at_once_not_after_a_timeout(broker_factory):
    """Issue 11: `--broker-addr 127.0.0.1:8080` hung 30 s and said "HELLO: timed out"."""
    rest, grpc, metrics = free_port(), free_port(), free_port()
    node = broker_factory({"api": {"rest_port": rest, "grpc_port": grpc},
                           "monitoring": {"prometheus_port": metrics}}, name="ports")
    for port, what in ((rest, "answers HTTP,"), (grpc, "answers HTTP/2 (gRPC)"),
                       (metrics, "answers HTTP,")):
        started = time.monotonic()
        result = admin(f"127.0.0.1:{port}", "queue-depth")
        assert time.monotonic() - started < 15  # the reply timeout is 30 s
        assert result.returncode == 3, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert what in lines[0] and f"127.0.0.1:{port}" in lines[0]
        assert "the protocol port is broker.port, 6379 by default" in lines[0]
        assert lines[0].count(str(port)) == 1  # the address once, not three times
    assert admin(node.addr, "queue-depth").returncode == 0  # the protocol port still works


def test_the_default_ports_are_named():
    from taskqueue.wrong_port import describe

    assert "(8080 is the REST API's port by default)" in describe(b"HTTP/1.1 400 Bad", 8080)
    assert "9091 is the metrics' port" in describe(b"<!DOCTYPE HTML>", 9091)
    settings_frame = b"\x00\x00\x18\x04\x00\x00\x00\x00\x00"
    assert "9090 is the gRPC API's port" in describe(settings_frame, 9090)
    assert describe(b"$118\r\n{", 6379) is None and describe(b"-NOAUTH", 6379) is None


@pytest.mark.parametrize("addr", ["127.0.0.1:70000", "127.0.0.1:0", "127.0.0.1:-1"])
def test_a_port_out_of_range_is_a_usage_error(addr):
    result = admin(addr, "queue-depth")
    assert result.returncode == 2, result.stderr
    assert "1-65535" in result.stderr and "refused" not in result.stderr


def on_a_terminal(addr: str, *args: str, columns: int = 140) -> str:
    """tq-admin with its output on a pseudo-terminal `columns` wide, as a person runs it."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "admin.cli", "--broker-addr", addr, *args],
                            cwd=ROOT, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(30) == 0, proc.stderr.read()
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_list_is_a_table_on_a_terminal_and_json_into_a_pipe(broker, client):
    """Issue 11: `list` printed raw JSON with epoch times to a person; a pipe or a file still
    gets the JSON array (the deployment guide exports with `list > tasks.json`)."""
    done = client.submit("echo", {"n": 1}, queue="tabled")
    with Client(broker.addr, identity={"worker_id": "table-w"}) as worker:
        [job] = worker.fetch(["tabled"], timeout_ms=2000)
        worker.ack(job["id"], job["token"], {"sent": True})
    waiting = client.submit("resize", {"text": "x" * 300}, queue="tabled", priority=7)
    text = on_a_terminal(broker.addr, "list", "--queue", "tabled")
    lines = text.strip().splitlines()
    assert lines[0].split() == ["ID", "QUEUE", "TYPE", "STATUS", "PRI", "TRIES", "CREATED",
                                "UPDATED", "DETAIL"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {done["id"], waiting["id"]}
    assert 'completed' in rows[done["id"]] and 'result {"sent": true}' in rows[done["id"]]
    assert "pending" in rows[waiting["id"]] and " 7 " in rows[waiting["id"]]
    created = time.strftime("%Y-%m-%d", time.gmtime(done["created_at"]))
    assert created in rows[done["id"]]  # a readable time, not epoch seconds
    assert all(len(line) <= 140 for line in lines), lines  # the 300-char payload is cut
    assert rows[waiting["id"]].endswith("~")
    # --json on a terminal, and the default into a pipe: the JSON array.
    assert {t["id"] for t in json.loads(on_a_terminal(broker.addr, "list", "--queue",
                                                      "tabled", "--json"))} == set(rows)
    piped = admin(broker.addr, "list", "--queue", "tabled")
    assert {t["id"] for t in json.loads(piped.stdout)} == set(rows)
    # --table into a pipe: the table, lines whole (no terminal to fit).
    forced = admin(broker.addr, "list", "--queue", "tabled", "--table").stdout
    assert forced.startswith("ID ") and "x" * 300 in forced


def test_import_of_a_table_says_how_to_export(broker, tmp_path):
    table = tmp_path / "tasks.txt"
    table.write_text("ID  QUEUE  TYPE\nabc  default  echo\n")
    result = admin(broker.addr, "import", str(table))
    assert result.returncode == 2 and "tq-admin list --json" in result.stderr
