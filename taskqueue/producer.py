"""The producer side of ``@task`` handlers: ``resize.submit(payload)`` returns a handle.

Configure once per process (or set ``TQ_BROKER_ADDR`` / ``TQ_API_KEY``)::

    import taskqueue
    taskqueue.configure("10.0.1.10:6379,10.0.1.11:6379", api_key="...")

    handle = resize.submit({"path": "a.png"}, priority=5)   # enqueued now
    print(handle.wait(timeout=30))                          # the handler's result

Standard library only, like the rest of ``taskqueue``: producer hosts never need the
broker's dependencies. Each thread gets its own blocking :class:`Client` (it is not
thread-safe), opened on first use and reused.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from taskqueue.client import Client
from taskqueue.errors import TaskFailed

_settings: dict[str, Any] = {}
_local = threading.local()
_generation = 0  # bumped by configure(): threads reopen their client


def configure(addresses: str | list | None = None, *, api_key: str | None = None,
              **client_options: Any) -> None:
    """Where ``submit`` sends tasks: broker addresses (``host:port``, comma-separated for a
    cluster), an API key, and any other :class:`Client` option (ssl_context,
    connect_timeout, reply_timeout). Unset: ``TQ_BROKER_ADDR`` (default 127.0.0.1:6379) and
    ``TQ_API_KEY`` from the environment."""
    global _generation
    _settings.clear()
    _settings.update(client_options)
    if addresses is not None:
        _settings["addresses"] = addresses
    if api_key is not None:
        _settings["api_key"] = api_key
    _generation += 1


def client() -> Client:
    """This thread's client to the configured broker (connected on first use)."""
    current = getattr(_local, "client", None)
    if current is not None and getattr(_local, "generation", None) == _generation:
        return current
    if current is not None:
        current.close()
    options = dict(_settings)
    addresses = options.pop("addresses", None) or os.environ.get("TQ_BROKER_ADDR",
                                                                  "127.0.0.1:6379")
    _local.client = Client(addresses, **options)
    _local.generation = _generation
    return _local.client


def submit(task_type: str, payload: Any = None, **options: Any) -> "TaskHandle":
    """Enqueue one task of ``task_type``; ``options`` as for :meth:`Client.submit` (queue,
    priority, max_retries, delay_secs, run_at, timeout_secs, idempotency_key, id)."""
    return TaskHandle(client().submit(task_type, payload, **options))


class TaskHandle:
    """A submitted task: ``id``, the last state seen (``task``), and :meth:`wait`."""

    def __init__(self, task: dict):
        self.task = task
        self.id: str = task["id"]

    @property
    def status(self) -> str:
        return self.task["status"]

    def refresh(self) -> dict:
        self.task = client().get(self.id)
        return self.task

    def wait(self, timeout: float = 30.0) -> Any:
        """The handler's result once the task completed. Raises :class:`TaskFailed` if it
        ended dead or cancelled, ``TimeoutError`` if it is still unfinished after
        ``timeout`` seconds (call again to keep waiting). Answered by the broker when it
        applies the completion (WAIT-TASK), not by polling."""
        self.task = client().wait(self.id, timeout=timeout)
        status = self.task["status"]
        if status == "completed":
            return self.task.get("result")
        if status in ("dead", "cancelled"):
            raise TaskFailed(self.task)
        raise TimeoutError(f"task {self.id} is still {status} after {timeout} s")

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id} {self.status}>"
