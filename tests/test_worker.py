"""tq-worker against a real broker process: lifecycle, pools, timeouts, signals, failures.

Broker settings come from tests/brokerproc.py: heartbeat 0.5 s, lease 2 s.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from taskqueue.client import Client
from tests.helpers_worker import ROOT, WorkerProcess, wait_for, wait_statuses


@pytest.fixture
def client(broker):
    with Client(broker.addr) as c:
        yield c


@pytest.fixture
def start_worker(broker, tmp_path):
    """``start_worker(*args, name=...)`` runs tq-worker against ``broker``; killed after."""
    workers: list[WorkerProcess] = []

    def start(*args, name=None, addr=None, **kwargs):
        w = WorkerProcess(addr or broker.addr, tmp_path, *args,
                          name=name or f"w{len(workers)}", **kwargs).start()
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


def test_lifecycle_success_failure_retry_and_dead(client, start_worker):
    worker = start_worker("--concurrency", "4")
    echo = client.submit("echo", {"x": [1, 2]})
    sync_ctx = client.submit("whoami", None, queue="default")
    async_job = client.submit("async_echo", "hi")
    failing = client.submit("fail", {"message": "boom"}, max_retries=1, retry_backoff_secs=0.05)
    unknown = client.submit("no_such_handler", None, max_retries=0)
    bad_result = client.submit("unserialisable", None, max_retries=0)
    ids = [t["id"] for t in (echo, sync_ctx, async_job, failing, unknown, bad_result)]
    tasks = wait_statuses(client, ids)

    assert tasks[echo["id"]]["status"] == "completed"
    assert tasks[echo["id"]]["result"] == {"x": [1, 2]}
    who = tasks[sync_ctx["id"]]["result"]
    assert who["id"] == sync_ctx["id"] and who["type"] == "whoami"
    assert who["worker_id"] == worker.worker_id and who["attempts"] == 1
    assert who["pid"] == worker.proc.pid  # thread pool: same process
    assert tasks[async_job["id"]]["result"] == {"echo": "hi", "id": async_job["id"]}

    dead = tasks[failing["id"]]
    assert dead["status"] == "dead" and dead["attempts"] == 2
    assert dead["error"] == "RuntimeError: boom"
    assert "Traceback" in dead["backtrace"] and "examples.py" in dead["backtrace"]
    assert tasks[unknown["id"]]["status"] == "dead"
    assert "no_such_handler" in tasks[unknown["id"]]["error"]
    assert tasks[bad_result["id"]]["status"] == "dead"
    assert "TypeError" in tasks[bad_result["id"]]["error"]
    assert tasks[echo["id"]]["worker"] == worker.worker_id


def test_fetches_in_batches_and_drains_a_backlog(client, start_worker):
    results = client.submit_bulk([{"type": "echo", "payload": i} for i in range(300)])
    ids = [t["id"] for t in results]
    start_worker("--concurrency", "8")
    tasks = wait_statuses(client, ids, timeout=30)
    assert sorted(t["result"] for t in tasks.values()) == list(range(300))
    assert all(t["attempts"] == 1 for t in tasks.values())


def test_thread_pool_timeout_fails_the_job_and_frees_no_wrong_slot(client, start_worker):
    start_worker("--concurrency", "1")
    slow = client.submit("sleep", {"seconds": 30}, timeout_secs=0.5, max_retries=0)
    started = time.monotonic()
    task = wait_statuses(client, [slow["id"]], timeout=10)[slow["id"]]
    assert task["status"] == "dead"
    assert task["error"].startswith("TimeoutError") and "0.5s" in task["error"]
    assert time.monotonic() - started < 5
    # The timed-out thread still sleeps: with concurrency 1 the worker has no free slot
    # until it returns, and must not run a second job on top of it.
    after = client.submit("echo", 1)
    time.sleep(1.5)
    assert client.get(after["id"])["status"] == "pending"


def test_async_handler_timeout(client, start_worker):
    start_worker("--pool", "async")
    job = client.submit("async_sleep", {"seconds": 30}, timeout_secs=0.3, max_retries=0)
    quick = client.submit("async_sleep", {"seconds": 0.01})
    tasks = wait_statuses(client, [job["id"], quick["id"]], timeout=10)
    assert tasks[job["id"]]["status"] == "dead"
    assert "TimeoutError" in tasks[job["id"]]["error"]
    assert tasks[quick["id"]]["result"] == "slept"


def test_process_pool_uses_child_processes_and_recycles_them(client, start_worker):
    worker = start_worker("--pool", "process", "--concurrency", "2",
                          "--max-tasks-per-child", "2")
    ids = [client.submit("whoami", i)["id"] for i in range(12)]
    tasks = wait_statuses(client, ids, timeout=60)
    assert all(t["status"] == "completed" for t in tasks.values()), tasks
    pids = Counter(t["result"]["pid"] for t in tasks.values())
    assert worker.proc.pid not in pids
    assert max(pids.values()) <= 2  # no child ran more than max-tasks-per-child jobs
    assert len(pids) >= 6
    # current_job() works in the child too
    assert all(t["result"]["id"] == i for i, t in tasks.items())


def test_process_pool_runs_cpu_bound_jobs_in_parallel(client, start_worker):
    worker = start_worker("--pool", "process", "--concurrency", "2")
    ids = [client.submit("spin", {"seconds": 1.5})["id"] for _ in range(2)]
    tasks = wait_statuses(client, ids, timeout=30)
    a, b = (tasks[i]["result"] for i in ids)
    assert a["pid"] != b["pid"] and worker.proc.pid not in (a["pid"], b["pid"])
    # Both ran at the same time, each in its own process (no GIL between them).
    assert a["started"] < b["ended"] and b["started"] < a["ended"]


def test_process_pool_kills_a_runaway_handler(client, start_worker):
    start_worker("--pool", "process", "--concurrency", "1")
    runaway = client.submit("spin", {"seconds": 60}, timeout_secs=0.5, max_retries=0)
    task = wait_statuses(client, [runaway["id"]], timeout=20)[runaway["id"]]
    assert task["status"] == "dead" and "TimeoutError" in task["error"]
    # The slot is usable again at once: the runaway child was killed, not waited for.
    after = client.submit("spin", {"seconds": 0.01})
    assert wait_statuses(client, [after["id"]], timeout=10)[after["id"]]["status"] == "completed"


def test_heartbeats_keep_a_long_job_leased(client, start_worker):
    # The broker's lease is 2 s; this job runs 4 s and must not be handed out again.
    worker = start_worker()
    job = client.submit("record", {"seconds": 4})
    task = wait_statuses(client, [job["id"]], timeout=20)[job["id"]]
    assert task["status"] == "completed" and task["attempts"] == 1
    assert [line[0] for line in worker.evidence_lines()] == ["start", "done"]


def test_sigterm_finishes_running_jobs_then_exits_zero(client, start_worker):
    worker = start_worker("--concurrency", "2")
    ids = [client.submit("record", {"seconds": 1.5})["id"] for _ in range(2)]
    wait_for(lambda: len(worker.evidence_lines()) >= 2, 10, what="both jobs to start")
    worker.signal(signal.SIGTERM)
    queued = client.submit("echo", "after shutdown began")
    assert worker.wait(20) == 0
    tasks = wait_statuses(client, ids, timeout=5)
    assert all(t["status"] == "completed" and t["attempts"] == 1 for t in tasks.values())
    # Nothing new was fetched after SIGTERM.
    assert client.get(queued["id"])["status"] == "pending"
    assert client.workers() == [] or all(
        w["worker_id"] != worker.worker_id for w in client.workers())  # BYE


def test_sigterm_fails_back_what_outlives_the_grace_period(client, start_worker):
    worker = start_worker("--shutdown-grace-secs", "0.5")
    job = client.submit("record", {"seconds": 30}, retry_backoff_secs=0.01)
    wait_for(lambda: worker.evidence_lines(), 10, what="the job to start")
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert time.monotonic() - started < 5
    task = client.get(job["id"])
    # Failed back for retry (not dead, not waiting for a lease to expire).
    assert task["status"] in ("failed", "pending"), task
    assert task["error"].startswith("WorkerShutdown")


def test_sigkill_of_a_worker_task_returns_after_the_lease_and_completes_once(
        client, start_worker):
    first = start_worker(name="doomed")
    job = client.submit("record", {"seconds": 3})
    wait_for(lambda: first.evidence_lines(), 10, what="the job to start")
    first.signal(signal.SIGKILL)
    first.wait(5)
    second = start_worker(name="survivor")
    task = wait_statuses(client, [job["id"]], timeout=30)[job["id"]]
    assert task["status"] == "completed"
    assert task["attempts"] == 2 and task["worker"] == second.worker_id
    lines = first.evidence_lines()  # both workers write the same evidence file
    assert [l[0] for l in lines].count("done") == 1
    assert [l[0] for l in lines].count("start") == 2


@pytest.mark.slow
def test_worker_keeps_consuming_across_broker_restarts(broker, client, start_worker):
    """The plague: a worker reconnects after a broker restart but never fetches again."""
    worker = start_worker("--concurrency", "3")
    for round_ in range(3):
        ids = [client.submit("echo", {"round": round_, "i": i})["id"] for i in range(20)]
        tasks = wait_statuses(client, ids, timeout=30)
        assert all(t["status"] == "completed" for t in tasks.values())
        assert {t["worker"] for t in tasks.values()} == {worker.worker_id}
        if round_ == 0:
            broker.kill()     # SIGKILL: no goodbye to the worker
        else:
            broker.terminate()
        time.sleep(1.0)       # the worker sees the broker gone and backs off
        broker.start()
        client.close()        # the test's own client reconnects on its next call
    assert worker.alive()
    assert "fetching again after reconnecting" in worker.logs()


@pytest.mark.slow
def test_job_running_while_the_broker_restarts_is_still_reported(broker, client,
                                                                 start_worker):
    worker = start_worker()
    job = client.submit("record", {"seconds": 2.5})
    wait_for(lambda: worker.evidence_lines(), 10, what="the job to start")
    broker.terminate()
    broker.start()
    client.close()
    task = wait_statuses(client, [job["id"]], timeout=30)[job["id"]]
    assert task["status"] == "completed"


def test_worker_started_before_the_broker_waits_for_it(broker, client, start_worker):
    broker.terminate()
    worker = start_worker()
    time.sleep(1.5)
    assert worker.alive()
    broker.start()
    client.close()
    job = client.submit("echo", "late broker")
    assert wait_statuses(client, [job["id"]], timeout=20)[job["id"]]["result"] == "late broker"


def test_quiet_stop_and_active_from_the_broker(client, start_worker):
    worker = start_worker()
    wait_for(lambda: any(w["worker_id"] == worker.worker_id for w in client.workers()), 10,
             what="the worker to register")
    client.worker_state(worker.worker_id, "quiet")
    # The worker hears it with the next heartbeat (0.5 s) and issues no new FETCH; one
    # already blocking on the broker may still return a job for up to fetch_timeout (2 s).
    time.sleep(3)
    job = client.submit("echo", "while quiet")
    time.sleep(1.5)
    assert client.get(job["id"])["status"] == "pending"
    client.worker_state(worker.worker_id, "active")
    assert wait_statuses(client, [job["id"]], timeout=10)[job["id"]]["status"] == "completed"
    client.worker_state(worker.worker_id, "stop")
    assert worker.wait(15) == 0


def test_bad_api_key_is_fatal(broker_factory, tmp_path):
    bcrypt = pytest.importorskip("bcrypt")
    key_hash = bcrypt.hashpw(b"right-key", bcrypt.gensalt(rounds=4)).decode()
    secured = broker_factory({"auth": {"enabled": True, "api_keys": [
        {"key_hash": key_hash, "permissions": ["admin"]}]}}, name="secured")
    bad = WorkerProcess(secured.addr, tmp_path, "--api-key", "wrong-key", name="bad").start()
    try:
        assert bad.wait(20) == 1
        assert "NOAUTH" in bad.logs()
    finally:
        bad.stop()
    key_file = tmp_path / "api_key.txt"
    key_file.write_text("right-key\n")  # as `openssl rand ... > api_key.txt` leaves it
    from_env = WorkerProcess(secured.addr, tmp_path, name="from-env",
                             env={"TQ_API_KEY": "right-key"}).start()
    from_file = WorkerProcess(secured.addr, tmp_path, "--api-key-file", str(key_file),
                              name="from-file").start()
    try:
        with Client(secured.addr, api_key="right-key") as c:
            ids = [c.submit("echo", i)["id"] for i in range(20)]
            tasks = wait_statuses(c, ids, timeout=20)
            assert all(t["status"] == "completed" for t in tasks.values())
            # One worker may have run all 20 before the other's HELLO landed (a loaded
            # machine): wait for both to register rather than race them.
            wanted = {from_env.worker_id, from_file.worker_id}
            deadline = time.monotonic() + 20
            while not wanted <= {w["worker_id"] for w in c.workers()}:
                assert time.monotonic() < deadline, "both keyed workers register"
                time.sleep(0.1)
    finally:
        from_env.stop()
        from_file.stop()


@pytest.mark.parametrize("args, message", [
    (["--handlers", "no.such.module"], "No module named"),
    (["--handlers", "json"], "no @task handlers"),
    (["--concurrency", "0"], "at least 1"),
    (["--pool", "fork"], "invalid choice"),
])
def test_usage_errors_exit_2(args, message):
    result = subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_second_signal_skips_the_rest_of_the_grace_period(client, start_worker):
    worker = start_worker("--shutdown-grace-secs", "60")
    job = client.submit("record", {"seconds": 60}, retry_backoff_secs=0.01)
    wait_for(lambda: worker.evidence_lines(), 10, what="the job to start")
    worker.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert worker.alive()  # waiting for the job, as it should
    started = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait(15) == 0
    assert time.monotonic() - started < 5
    assert client.get(job["id"])["error"].startswith("WorkerShutdown")


APP_TASKS = '''
from worker import task


@task("myapp.double")
def double(payload):
    return payload * 2
'''


@pytest.mark.parametrize("pool, from_app_dir", [("process", True), ("thread", False)])
def test_handlers_import_from_the_current_directory_like_celery_and_rq(broker, client,
                                                                         tmp_path, pool,
                                                                         from_app_dir):
    """``tq-worker --handlers myapp.tasks`` run beside ``myapp/`` (or elsewhere with
    ``--app-dir``) imports it; process-pool children too."""
    app = tmp_path / "project"
    (app / "myapp").mkdir(parents=True)
    (app / "myapp" / "__init__.py").write_text("")
    (app / "myapp" / "tasks.py").write_text(APP_TASKS)
    # the installed command, as users run it (``python -m`` would put the cwd on sys.path)
    argv = [str(Path(sys.executable).parent / "tq-worker"), "--broker-addr", broker.addr,
            "--handlers", "myapp.tasks", "--pool", pool, "--concurrency", "1"]
    if not from_app_dir:
        argv += ["--app-dir", str(app)]
    proc = subprocess.Popen(argv, cwd=app if from_app_dir else tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        task_id = client.submit("myapp.double", 21)["id"]
        assert wait_statuses(client, [task_id], timeout=30)[task_id]["result"] == 42
    finally:
        proc.kill()
        proc.wait(10)


def test_a_missing_handler_module_names_where_it_looked_and_app_dir(tmp_path):
    tq_worker = str(Path(sys.executable).parent / "tq-worker")
    result = subprocess.run([tq_worker, "--handlers", "myapp.tasks"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert str(tmp_path) in result.stderr and "--app-dir" in result.stderr, result.stderr
