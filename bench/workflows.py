"""Chord figure: from the last member's ACK to the callback being fetchable.

One client plays the worker (no worker processes, so the figure is the broker's): it
submits a chord of ``members`` tasks on a fresh queue, claims and ACKs all members but
one, then times ACK of the last member followed by a FETCH of the callback. The callback
is submitted in the same apply as that ACK (docs/workflows.md), so the FETCH finds it at
once; the figure is the two round trips plus the apply.
"""

from __future__ import annotations

import statistics
import time
import uuid

from taskqueue.client import Client

BATCH = 1000


def chord_callback_latency(addr: str, members: int, samples: int) -> dict:
    timings = []
    with Client(addr, identity={"worker_id": f"bench-chord-{uuid.uuid4().hex[:8]}"}) as c:
        for _ in range(samples + 2):
            queue = f"bench-chord-{uuid.uuid4().hex[:10]}"
            tree = {"chord": [{"type": "noop", "queue": queue, "payload": i}
                              for i in range(members)],
                    "callback": {"type": "noop", "queue": queue}}
            c.submit_workflow(tree)
            jobs = []
            while len(jobs) < members:
                jobs += c.fetch([queue], count=min(BATCH, members - len(jobs)),
                                timeout_ms=5000)
            last, rest = jobs[-1], jobs[:-1]
            for i in range(0, len(rest), BATCH):
                c.ack_many([(j["id"], j["token"], j["payload"])
                            for j in rest[i:i + BATCH]])
            start = time.perf_counter()
            c.ack(last["id"], last["token"], last["payload"])
            callback = c.fetch([queue], count=1, timeout_ms=5000)
            elapsed = (time.perf_counter() - start) * 1000
            if not callback or len(callback[0]["payload"]["results"]) != members:
                raise RuntimeError("chord bench: the callback was not fetchable")
            c.ack(callback[0]["id"], callback[0]["token"], None)
            timings.append(elapsed)
    timings = sorted(timings[2:])  # warm-up
    return {"members": members, "samples": len(timings),
            "p50_ms": round(statistics.median(timings), 3),
            "max_ms": round(timings[-1], 3)}
