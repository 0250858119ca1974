"""Queues: pause and resume (a paused queue hands out no leases)."""

from __future__ import annotations


def pause(m, now: int, queue: str):
    m.paused.add(queue)
    return "OK"


def resume(m, now: int, queue: str):
    m.paused.discard(queue)
    m.woken.add(queue)
    return "OK"


COMMANDS = {
    "pause": pause,
    "resume": resume,
}
