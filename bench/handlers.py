"""Handlers the benchmark's workers run: no work at all, so the queue itself is measured."""

from worker import task


@task("noop")
async def noop(payload):
    return None
