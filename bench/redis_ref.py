"""The reference every bench figure is a ratio to: a raw redis-py list loop against a
private ``redis-server`` on loopback, measured in the same run as our figures.

No acknowledgements, no durability (``--save ''``, no AOF): the ceiling of "one blocking
client does a round trip per task on this machine right now". A shared 2-core host moves
every figure by tens of percent from one minute to the next; a ratio to this reference,
taken minutes apart in one run, moves far less.

* ``lpush_single_per_sec``: one blocking client, one ``LPUSH`` per task, waiting for each
  reply (our ``submit_single_per_sec``).
* ``round_trip``: ``LPUSH`` a job, a worker process ``BRPOP``s it, runs the handler body
  (one ``INCR``), ``LPUSH``es a reply the client ``BRPOP``s (our submit -> completed).

``redis-server`` is looked up on PATH (Debian: ``apt-get install redis-server``); without
it the reference is reported as unavailable and the ratios are left out.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.procs import free_port

WORKER = """
import sys, redis
r = redis.Redis(port=int(sys.argv[1]))
while True:
    _, job = r.brpop("ref:jobs")
    if job == b"stop":
        break
    r.incr("ref:counter")  # the handler body
    r.lpush("ref:done:" + job.decode(), 1)
"""


class RedisServer:
    def __init__(self):
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="tq-bench-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def available(self) -> bool:
        return self.binary is not None

    def __enter__(self) -> "RedisServer":
        import redis
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.tmp, "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return self
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def lpush_single(port: int, n: int) -> float:
    import redis
    r = redis.Redis(port=port)
    start = time.perf_counter()
    for i in range(n):
        r.lpush("ref:single", i)
    return n / (time.perf_counter() - start)


def round_trip(port: int, n: int) -> dict:
    import redis
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(port)])
    r = redis.Redis(port=port)
    samples = []
    try:
        for i in range(n + 20):
            start = time.perf_counter()
            r.lpush("ref:jobs", str(i))
            if r.brpop("ref:done:" + str(i), timeout=30) is None:
                raise RuntimeError("reference worker did not answer")
            if i >= 20:
                samples.append((time.perf_counter() - start) * 1000)
    finally:
        r.lpush("ref:jobs", "stop")
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 3),
            "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3), "samples": len(samples)}


def reference(single_tasks: int, latency_samples: int) -> dict | None:
    """The reference figures, or None when no redis-server is installed."""
    server = RedisServer()
    if not server.available:
        return None
    with server:
        return {"lpush_single_per_sec": round(lpush_single(server.port, single_tasks)),
                "round_trip": round_trip(server.port, latency_samples)}


def ratios(figures: dict, ref: dict | None) -> dict:
    """Each comparable figure divided by the reference's (``x_vs_redis``: 1.0 = as fast
    as raw redis for throughput; for latency, how many times redis's latency)."""
    if not ref:
        return {}
    out = {}
    if figures.get("submit_single_per_sec"):
        out["submit_single_vs_redis"] = round(
            figures["submit_single_per_sec"] / ref["lpush_single_per_sec"], 3)
    rt, ref_rt = figures.get("round_trip"), ref["round_trip"]
    if rt:
        out["round_trip_p50_vs_redis"] = round(rt["p50_ms"] / ref_rt["p50_ms"], 2)
        out["round_trip_p99_vs_redis"] = round(rt["p99_ms"] / ref_rt["p99_ms"], 2)
    return out

