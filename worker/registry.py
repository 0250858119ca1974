"""Handlers by name: the ``@task`` decorator, the registry it fills, and the current job.

User code::

    from worker import task, current_job

    @task                      # registered as "resize"
    def resize(payload): ...

    @task("emails.send")       # registered under an explicit name
    async def send(payload):
        job = current_job()    # id, attempts, queue... of the job being run
        ...

Producer code enqueues through the same names (taskqueue/producer.py)::

    taskqueue.configure("127.0.0.1:6379")        # or TQ_BROKER_ADDR
    handle = resize.submit({"path": "a.png"}, priority=5)
    result = handle.wait(timeout=30)

A handler takes the task's JSON payload and returns a JSON-serialisable result; raising
fails the attempt (the broker retries it with backoff until ``max_retries``). Modules are
loaded by ``tq-worker --handlers my.module``; importing them is what registers the handlers.
"""

from __future__ import annotations

import contextvars
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True, slots=True)
class Handler:
    name: str
    fn: Callable[[Any], Any]
    is_async: bool


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What a handler may want to know about the job it is running."""

    id: str
    type: str
    queue: str
    attempts: int
    max_retries: int
    token: str | int  # the fencing token, opaque (taskqueue.client.Token)
    timeout_secs: float | None
    worker_id: str | None = None

    @classmethod
    def from_job(cls, job: dict, worker_id: str | None = None) -> "JobInfo":
        return cls(id=job["id"], type=job["type"], queue=job.get("queue", "default"),
                   attempts=job.get("attempts", 1), max_retries=job.get("max_retries", 0),
                   token=job["token"], timeout_secs=job.get("timeout_secs"),
                   worker_id=worker_id)


_current_job: contextvars.ContextVar[JobInfo] = contextvars.ContextVar("tq_current_job")


def current_job() -> JobInfo:
    """The job the calling handler runs for; raises LookupError outside a handler."""
    try:
        return _current_job.get()
    except LookupError:
        raise LookupError("current_job() called outside a task handler") from None


def call_as_job(fn: Callable[[Any], Any], payload: Any, info: JobInfo) -> Any:
    """Call ``fn(payload)`` with ``current_job()`` set; for threads and child processes,
    which do not inherit the event loop's context."""
    token = _current_job.set(info)
    try:
        return fn(payload)
    finally:
        _current_job.reset(token)


async def await_as_job(fn: Callable[[Any], Any], payload: Any, info: JobInfo) -> Any:
    """The async twin of :func:`call_as_job`; run it in its own asyncio task."""
    _current_job.set(info)  # the task's context is its own copy: nothing to reset
    return await fn(payload)


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, fn: Callable, name: str | None = None) -> Handler:
        name = name or fn.__name__
        existing = self._handlers.get(name)
        # Re-importing a module (a child process, a reload) registers the same function
        # again; two different functions under one name is a mistake worth stopping for.
        if existing and _origin(existing.fn) != _origin(fn):
            raise ValueError(f"task name {name!r} is already registered by "
                             f"{_origin(existing.fn)}")
        handler = Handler(name, fn, inspect.iscoroutinefunction(fn))
        self._handlers[name] = handler
        return handler

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)


def _origin(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


REGISTRY = Registry()


def task(name_or_fn: str | Callable | None = None, *, name: str | None = None):
    """Register a handler: ``@task``, ``@task("name")`` or ``@task(name="name")``."""
    if callable(name_or_fn):
        return _producible(name_or_fn, REGISTRY.register(name_or_fn, name).name)
    explicit = name_or_fn or name

    def decorate(fn: Callable) -> Callable:
        return _producible(fn, REGISTRY.register(fn, explicit).name)

    return decorate


def _producible(fn: Callable, task_name: str) -> Callable:
    """Give a handler its producer side: ``fn.submit(payload, **options)`` enqueues a task
    of its name on the broker ``taskqueue.configure`` names and returns a TaskHandle
    (taskqueue/producer.py). The function itself stays a plain function."""

    def submit(payload: Any = None, **options: Any):
        from taskqueue import producer  # light: standard library only

        return producer.submit(task_name, payload, **options)

    def s(payload: Any = None, **options: Any):
        """A signature for a workflow (taskqueue/canvas.py): in a chain it receives the
        previous step's result."""
        from taskqueue.canvas import Signature

        return Signature(task_name, payload, **options)

    def si(payload: Any = None, **options: Any):
        """An immutable signature: in a chain it does not receive the previous result."""
        from taskqueue.canvas import Signature

        return Signature(task_name, payload, immutable=True, **options)

    try:
        fn.task_name = task_name
        fn.submit = submit
        fn.s = s
        fn.si = si
    except (AttributeError, TypeError):  # a callable without a __dict__ (a builtin)
        pass
    return fn


def load_handler_modules(modules: list[str], app_dir: str | None = None) -> Registry:
    """Import the handler modules (which registers their handlers) and return the registry.

    ``app_dir`` (tq-worker's --app-dir, default the current directory) goes first on
    ``sys.path``, so ``tq-worker --handlers myapp.tasks`` run beside ``myapp/`` finds it,
    as celery and rq do. Process-pool children inherit ``sys.path`` from this process.
    """
    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if not os.path.isdir(path):
            raise ImportError(f"--app-dir {app_dir}: no such directory")
        if path not in sys.path:
            sys.path.insert(0, path)
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.split(".")[0] == exc.name.split(".")[0]:
                where = os.path.abspath(app_dir) if app_dir is not None else os.getcwd()
                raise ImportError(
                    f"cannot import handler module {module!r}: {exc} (looked in {where} and "
                    "the installed packages; run tq-worker from the directory that holds "
                    "it, or pass --app-dir DIR)") from exc
            raise
    return REGISTRY
