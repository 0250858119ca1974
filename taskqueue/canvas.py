"""Building workflows the way Celery's canvas does: ``chain``, ``group``, ``chord``, ``.s()``.

Standard library only (like all of ``taskqueue``): this builds the request tree that
``WORKFLOW-SUBMIT`` takes (docs/workflows.md) and submits it; the broker does the rest::

    from taskqueue.canvas import chain, chord, group, signature

    flow = chain(fetch.s({"url": url}),            # @task handlers get .s() and .si()
                 parse.s(),                        # receives fetch's result
                 chord([thumb.s({"size": n}) for n in (64, 128)], collect.s()))
    handle = flow.submit()                         # one request, accepted whole
    handle.wait(timeout=60)                        # the workflow once it is finished

Differences from Celery, because a task here takes one JSON payload (not ``*args``):
a step that receives the previous result gets ``{"previous": result, "payload": its own
payload}``; a chord callback gets ``{"results": [...], "errors": [...], "payload": ...}``.
As in Celery, ``.s()`` in a chain receives the previous result and ``.si()`` (immutable)
does not; a chord callback always receives the members' results.
"""

from __future__ import annotations

import time
from typing import Any

from taskqueue.client import SUBMIT_OPTIONS, new_task_id

TERMINAL = ("completed", "failed", "cancelled")


class _Node:
    def to_tree(self) -> dict:
        raise NotImplementedError

    def to_request(self, id: str | None = None) -> dict:
        """The ``WORKFLOW-SUBMIT`` argument (an id is drawn when none is given)."""
        return {"id": id or new_task_id(), "workflow": self.to_tree()}

    def submit(self, client=None, id: str | None = None) -> "WorkflowHandle":
        """Submit on ``client`` (default: the producer's, see taskqueue.configure)."""
        if client is None:
            from taskqueue import producer

            client = producer.client()
        request = self.to_request(id)
        return WorkflowHandle(client, client.submit_workflow(request["workflow"],
                                                             id=request["id"]))

    # Celery's `a | b` makes a chain.
    def __or__(self, other: "_Node") -> "Chain":
        return chain(self, other)


class Signature(_Node):
    """One task: its type (the handler name), payload and task options."""

    def __init__(self, type: str, payload: Any = None, *, immutable: bool = False,
                 **options: Any):
        if not options.keys() <= SUBMIT_OPTIONS:
            unknown = options.keys() - SUBMIT_OPTIONS
            raise TypeError(f"unknown task option(s): {', '.join(sorted(unknown))}")
        self.type = type
        self.payload = payload
        self.immutable = immutable
        self.options = {k: v for k, v in options.items() if v is not None}
        self.pass_result = False  # set by chain() for a mutable step after the first

    def to_tree(self) -> dict:
        tree = {"type": self.type, "payload": self.payload, **self.options}
        if self.pass_result:
            tree["pass_result"] = True
        return tree

    def __repr__(self) -> str:
        return f"{self.type}.{'si' if self.immutable else 's'}({self.payload!r})"


def signature(type: str, payload: Any = None, **options: Any) -> Signature:
    """A task by handler name, for handlers this process does not import."""
    return Signature(type, payload, **options)


class Chain(_Node):
    def __init__(self, steps: list[_Node]):
        self.steps = list(steps)

    def to_tree(self) -> dict:
        trees = []
        for i, step in enumerate(self.steps):
            tree = step.to_tree()
            if i and _mutable(step):
                _receive(tree)
            trees.append(tree)
        return {"chain": trees}


class Group(_Node):
    def __init__(self, members: list[_Node]):
        for member in members:
            if not isinstance(member, _Node):
                raise TypeError("a group's members are signatures, chains, groups or "
                                f"chords, not {type(member).__name__}")
        self.members = list(members)  # a chain member: Celery's group(chain(...), ...)
        self.immutable = all(not _mutable(m) for m in self.members)

    def to_tree(self) -> dict:
        return {"group": [m.to_tree() for m in self.members]}


class Chord(_Node):
    def __init__(self, header: Group, body: _Node, on_error: str = "fail"):
        if on_error not in ("fail", "callback"):
            raise ValueError("on_error: 'fail' (default) or 'callback' (partial results)")
        self.header = header
        self.body = body
        self.on_error = on_error
        self.immutable = header.immutable

    def to_tree(self) -> dict:
        tree = {"chord": [m.to_tree() for m in self.header.members],
                "callback": self.body.to_tree()}
        if self.on_error != "fail":
            tree["on_error"] = self.on_error
        return tree


def chain(*steps: _Node) -> Chain:
    """Steps one after another; a chain inside a chain is flattened."""
    flat: list[_Node] = []
    for step in steps:
        flat.extend(step.steps if isinstance(step, Chain) else [step])
    if not flat:
        raise ValueError("a chain needs at least one step")
    return Chain(flat)


def group(*members) -> Group:
    """``group(a.s(1), b.s(2))`` or ``group([a.s(i) for i in ...])``."""
    if len(members) == 1 and isinstance(members[0], (list, tuple)):
        members = tuple(members[0])
    if not members:
        raise ValueError("a group needs at least one member")
    return Group(list(members))


def chord(header, body: _Node, on_error: str = "fail") -> Chord:
    """``chord(group_or_list_of_signatures, callback)``; ``on_error="callback"`` runs the
    callback with partial results and the errors when members did not complete."""
    if not isinstance(header, Group):
        header = group(header)
    return Chord(header, body, on_error)


def _mutable(step: _Node) -> bool:
    """Does ``step`` take the previous step's result (as a chain step or a member)?"""
    first = step.steps[0] if isinstance(step, Chain) else step
    return not getattr(first, "immutable", False)


def _receive(tree: dict) -> None:
    """Mark a chain step to receive the previous step's result."""
    while "chain" in tree:
        tree = tree["chain"][0]
    tree["pass_result"] = True  # on a group or chord: every member receives it


class WorkflowHandle:
    """A submitted workflow: ``id``, the last state seen, :meth:`refresh`, :meth:`wait`."""

    def __init__(self, client, summary: dict):
        self.client = client
        self.id: str = summary["id"]
        self.state = summary

    @property
    def status(self) -> str:
        return self.state["status"]

    def refresh(self, limit: int | None = None) -> dict:
        self.state = self.client.get_workflow(self.id, limit)
        return self.state

    def wait(self, timeout: float = 60.0, interval: float = 0.05) -> dict:
        """The workflow once it is completed, failed or cancelled (polls, backing off to
        1 s); raises ``TimeoutError`` if it is still running after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.refresh()
            if state["status"] in TERMINAL:
                return state
            if time.monotonic() >= deadline:
                raise TimeoutError(f"workflow {self.id} is still {state['status']} after "
                                   f"{timeout} s")
            time.sleep(interval)
            interval = min(interval * 2, 1.0)

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.id} {self.status}>"
