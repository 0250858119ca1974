"""A submitted workflow tree -> the flat, id-stamped form the ``submit_workflow`` command carries.

Runs on the proposer (the node that accepted the request), once, before anything reaches the
log: the whole tree is validated and bounded here, every task and the workflow get their ids
here, so apply (broker/commands/workflows.py) is deterministic and accepts or rejects the
workflow whole. The request shape is documented in docs/workflows.md::

    {"id": "optional workflow id",
     "workflow": NODE}
    NODE  := TASK
           | {"chain": [NODE, ...]}                       # steps one after another
           | {"group": [NODE, ...], "pass_result": bool}   # members side by side
           | {"chord": [NODE, ...], "callback": NODE,       # a group, then its callback
              "on_error": "fail" | "callback"}
    TASK  := a SUBMIT task object (type, payload, queue, priority, max_retries,
             timeout_secs, retry_backoff_secs, id) plus "pass_result": bool

The flat form: ``{"id", "root", "nodes": {node id: node}, "tasks": [task ids]}`` where a node
is ``{"k": "task", "p": parent, "i": index, "spec": task spec, "pass": bool}``,
``{"k": "chain", "p", "i", "steps": [node ids]}`` or ``{"k": "group", "p", "i",
"members": [task spec | {"node": node id}], "cb": node id | None, "on_error": ...,
"pass": bool}``: a member that is a chain, group or chord is a node of its own (its
``i`` is its member index; a chord's callback has ``i`` ``"cb"``).
"""

from __future__ import annotations

import uuid

from broker import validation as v
from taskqueue import jsonutil

MAX_TASKS = 100_000  # tasks in one workflow, callbacks included
MAX_NESTING = 16  # chain/group/chord levels inside each other
MAX_BYTES = 32 << 20  # the flat form, JSON-encoded (payloads included)
ON_ERROR = ("fail", "callback")
# Task fields that make no sense inside a workflow: a step runs when its turn comes (not at
# a time fixed at submit), and the workflow id already makes the submit idempotent.
NOT_IN_WORKFLOW = ("run_at", "delay_secs", "idempotency_key")


def flatten(request, now_ms: int, max_payload_bytes: int) -> dict:
    """Validate ``request``; return the flat workflow. Raises :class:`v.Invalid`."""
    request = v.obj(request, "workflow request")
    unknown = request.keys() - {"id", "workflow"}
    if unknown:
        raise v.Invalid(f"{sorted(unknown)[0]}: not a workflow request field "
                        "(expected id, workflow)")
    flow_id = request.get("id")
    if flow_id is None:
        flow_id = uuid.uuid4().hex
    elif not isinstance(flow_id, str) or not v.TASK_ID.fullmatch(flow_id):
        raise v.Invalid("id: expected 1-128 characters of A-Z a-z 0-9 _ . : -")
    if "workflow" not in request:
        raise v.Invalid("workflow: required, a task, {\"chain\": [...]}, {\"group\": [...]} "
                        "or {\"chord\": [...], \"callback\": ...}")
    builder = _Builder(flow_id, now_ms, max_payload_bytes)
    root = builder.node(request["workflow"], None, 0, 1, "workflow")
    flat = {"id": flow_id, "root": root, "nodes": builder.nodes, "tasks": builder.task_ids}
    size = len(jsonutil.dumps(flat))
    if size > MAX_BYTES:
        raise v.Invalid(f"workflow: {size} bytes once encoded, more than {MAX_BYTES}",
                        "TOOLARGE")
    return flat


class _Builder:
    def __init__(self, flow_id: str, now_ms: int, max_payload_bytes: int):
        self.flow_id = flow_id
        self.now_ms = now_ms
        self.max_payload = max_payload_bytes
        self.nodes: dict[str, dict] = {}
        self.task_ids: list[str] = []
        self._seen: set[str] = set()

    def _new_id(self) -> str:
        return str(len(self.nodes))

    def node(self, value, parent: str | None, index, level: int, where: str) -> str:
        if level > MAX_NESTING:
            raise v.Invalid(f"{where}: workflows nest at most {MAX_NESTING} levels")
        if not isinstance(value, dict):
            raise v.Invalid(f"{where}: expected a task or a chain/group/chord object")
        shapes = [k for k in ("chain", "group", "chord") if k in value]
        if len(shapes) > 1:
            raise v.Invalid(f"{where}: one of chain, group, chord, not {' and '.join(shapes)}")
        if not shapes:
            return self.task_node(value, parent, index, where)
        shape = shapes[0]
        nid = self._new_id()
        if shape == "chain":
            _only(value, {"chain"}, where)
            steps = value["chain"]
            if not isinstance(steps, list) or not steps:
                raise v.Invalid(f"{where}.chain: expected a non-empty list of steps")
            node = self.nodes[nid] = {"k": "chain", "p": parent, "i": index, "steps": []}
            for i, step in enumerate(steps):
                node["steps"].append(self.node(step, nid, i, level + 1, f"{where}.chain[{i}]"))
            return nid
        allowed = {"group", "pass_result"} if shape == "group" else {
            "chord", "callback", "on_error", "pass_result"}
        _only(value, allowed, where)
        members = value[shape]
        if not isinstance(members, list) or not members:
            raise v.Invalid(f"{where}.{shape}: expected a non-empty list of members")
        node = self.nodes[nid] = {"k": "group", "p": parent, "i": index, "members": [],
                                  "cb": None, "on_error": "fail",
                                  "pass": _flag(value, "pass_result", where)}
        for i, member in enumerate(members):
            at = f"{where}.{shape}[{i}]"
            if not isinstance(member, dict):
                raise v.Invalid(f"{at}: expected a task or a chain/group/chord object")
            if any(k in member for k in ("chain", "group", "chord")):
                # A member of its own shape (a chain per member, Celery's group(chain(..))):
                # it counts as done when that node is.
                sub = self.node(member, nid, i, level + 1, at)
                if node["pass"]:
                    self.receives(sub)
                node["members"].append({"node": sub})
            else:
                node["members"].append(self.task(member, at))
        if shape == "chord":
            on_error = value.get("on_error", "fail")
            if on_error not in ON_ERROR:
                raise v.Invalid(f"{where}.on_error: expected one of {', '.join(ON_ERROR)}")
            node["on_error"] = on_error
            if "callback" not in value:
                raise v.Invalid(f"{where}.callback: required for a chord")
            node["cb"] = self.node(value["callback"], nid, "cb", level + 1,
                                   f"{where}.callback")
            self.receives(node["cb"])
        return nid

    def receives(self, nid: str) -> None:
        """The node that a chord's callback starts with gets the members' results."""
        node = self.nodes[nid]
        if node["k"] == "chain":
            self.receives(node["steps"][0])
        else:
            node["pass"] = True

    def task_node(self, value: dict, parent, index, where: str) -> str:
        nid = self._new_id()
        self.nodes[nid] = {"k": "task", "p": parent, "i": index, "spec": None,
                           "pass": _flag(value, "pass_result", where)}
        self.nodes[nid]["spec"] = self.task(value, where)
        return nid

    def task(self, value: dict, where: str) -> dict:
        if len(self.task_ids) >= MAX_TASKS:
            raise v.Invalid(f"workflow: more than {MAX_TASKS} tasks", "TOOLARGE")
        for field in NOT_IN_WORKFLOW:
            if value.get(field) is not None:
                raise v.Invalid(f"{where}.{field}: not allowed in a workflow task")
        fields = {k: val for k, val in value.items() if k != "pass_result"}
        try:
            spec = v.task_spec(fields, self.now_ms, self.max_payload)
        except v.Invalid as exc:
            raise v.Invalid(f"{where}.{exc.message}", exc.code) from None
        if "id" not in value:
            candidate = f"{self.flow_id}.{len(self.task_ids)}"
            spec["id"] = candidate if len(candidate) <= 128 else uuid.uuid4().hex
        if spec["id"] in self._seen:
            raise v.Invalid(f"{where}.id: {spec['id']!r} is used twice in this workflow")
        self._seen.add(spec["id"])
        self.task_ids.append(spec["id"])
        return spec


def _only(value: dict, allowed: set, where: str) -> None:
    extra = value.keys() - allowed
    if extra:
        raise v.Invalid(f"{where}.{sorted(extra)[0]}: not a field here "
                        f"(expected {', '.join(sorted(allowed))})")


def _flag(value: dict, field: str, where: str) -> bool:
    flag = value.get(field, False)
    if not isinstance(flag, bool):
        raise v.Invalid(f"{where}.{field}: expected true or false")
    return flag
