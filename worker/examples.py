"""Example handlers for the quickstart, the docs and smoke tests: ``--handlers worker.examples``."""

from __future__ import annotations

import time

from worker.registry import task


@task
def echo(payload):
    """Returns its payload."""
    return payload


@task
def sleep(payload):
    """Sleeps ``payload["seconds"]`` (default 1), then returns how long it slept."""
    seconds = float((payload or {}).get("seconds", 1))
    time.sleep(seconds)
    return {"slept": seconds}


@task
def fail(payload):
    """Always raises, so retries and dead-lettering can be watched."""
    message = (payload or {}).get("message", "this task always fails") if isinstance(
        payload, dict) else "this task always fails"
    raise RuntimeError(message)
