"""Workflows: chains, groups and chords advanced inside the apply of their tasks' transitions.

A workflow is a tree (broker/workflow_spec.py flattens and stamps it on the proposer):
``submit_workflow`` stores its nodes and submits the tasks that can run first; every later
step happens in :func:`on_transition`, which the machine calls in each task transition of
the same entry, so "the last member completed" and "the callback is pending" are one
WriteBatch. Nothing here reads the clock or scans: a member's completion costs a few point
reads and writes whatever the group's size (the group's counter record, see below).

Exactly once. A task node or a group member is *counted* on its first transition to a final
status (completed, dead, cancelled) while its workflow is active: that writes its outcome
record (``o`` key, broker/keys.py), and the outcome record's existence is the marker that it
was counted. A retry (failed -> pending) is not final and counts nothing; a member that
ends twice (requeued after dying, or a replayed entry: replays are skipped by the machine
anyway) finds its marker and changes nothing. A group's counter reaches N exactly once, so
its callback is submitted exactly once.

Rules (docs/workflows.md): a group's member may itself be a chain, group or chord (it is
counted when that node finishes, as :meth:`_Flow.node_done` says); a chain runs its steps in order, a step with ``pass_result``
gets the previous step's result; a step that ends dead or cancelled fails the chain and
the steps after it never run (the view shows them ``cancelled``; requeueing the dead task
later runs it but does not resume the chain). A group is done when every member is final;
it fails if one did not complete. A chord runs its callback with the results in member
order when all completed; when some did not, ``on_error`` decides: ``fail`` (default)
fails the chord without running the callback, ``callback`` runs it with the partial results
and the errors. Cancelling a workflow cancels its tasks that have not started; running
ones finish, but nothing further is submitted.
"""

from __future__ import annotations

import orjson  # the broker's JSON library (taskqueue/jsonutil.py): Fragment splices raw JSON

import rocksdict

from broker import keys
from broker.commands import tasks
from broker.model import CANCELLED, COMPLETED, FINISHED, RUNNING, Rejected
from taskqueue import errors, jsonutil

# Workflow statuses (a workflow is not a task: it has no dead, it "failed").
W_PENDING, W_RUNNING, W_COMPLETED, W_FAILED, W_CANCELLED = (
    "pending", "running", "completed", "failed", "cancelled")
W_FINISHED = (W_COMPLETED, W_FAILED, W_CANCELLED)
NO_LIMIT = 1 << 62  # a step submitted by the workflow itself is never refused for depth
# A chord's results are rolled up per chunk of CHUNK members, in the apply that counts the
# chunk's last member, so the firing ACK reads N/CHUNK records instead of N (see roll_up).
CHUNK = 128
CHUNK_BYTES = 1 << 20  # a chunk whose results are bigger stays unrolled (read one by one)
# The largest input a step may be handed (a chord's results, the previous step's result),
# JSON-encoded. Results are bounded one by one (an ACK fits a frame), a chord's sum is not:
# 10,000 members of 10 KB each would make a 100 MB callback no worker can FETCH (the client
# reads frames of up to 16 MiB) and that every node keeps in its memtable and log. Half a
# frame leaves room for the step's own payload. A constant, not a setting: every node of a
# cluster must decide the same in apply.
HANDED_MAX_BYTES = 8 << 20
# A group with pass_result hands the same input to each member: one apply writes it once per
# member. Bounded too, or an 8 MB result before a 100,000-member group would be 800 GB.
HANDED_FANOUT_MAX_BYTES = 256 << 20


# ------------------------------------------------------------------------- commands

def submit_workflow(m, now: int, flat: dict, depth_limit: int):
    """Store the workflow and submit the tasks that run first; accepted or rejected whole."""
    ov = m.overlay
    flow_id = flat["id"]
    existing = m.load_json(keys.flow(flow_id))
    if existing is not None:  # a retried submit of the same workflow id
        return dict(_summary(existing), duplicate=True)
    for task_id in flat["tasks"]:
        if ov.get(keys.task(task_id)) is not None:
            return Rejected(errors.BADSTATE, f"task id {task_id!r} is already taken")
    nodes = flat["nodes"]
    for queue in sorted({spec["queue"] for spec in _first_wave(nodes, flat["root"])}):
        if m.counters.waiting(queue) >= depth_limit:
            return Rejected(errors.QUEUEFULL,
                            f"queue {queue!r} holds {depth_limit} waiting tasks "
                            f"(broker.queue_depth_threshold)")
    record = {"id": flow_id, "status": W_PENDING, "root": flat["root"],
              "size": len(flat["tasks"]), "created_at": now / 1000.0,
              "updated_at": now / 1000.0, "finished_at": None, "error": None}
    ov.put(keys.flow(flow_id), jsonutil.dumps(record))
    ov.put(keys.flow_tasks(flow_id), jsonutil.dumps(flat["tasks"]))
    for nid, node in nodes.items():
        if node["k"] == "group":  # the specs apart: a member's completion never reads them
            ov.put(keys.flow_members(flow_id, nid), jsonutil.dumps(node["members"]))
            node = dict(node, members=None, n=len(node["members"]))
        ov.put(keys.flow_node(flow_id, nid), jsonutil.dumps(node))
    _Flow(m, flow_id, now).start(flat["root"], None)
    return _summary(m.load_json(keys.flow(flow_id)))


def cancel_workflow(m, now: int, flow_id: str):
    record = m.load_json(keys.flow(flow_id))
    if record is None:
        return Rejected(errors.NOTFOUND, f"no workflow {flow_id!r}")
    if record["status"] in W_FINISHED:
        return Rejected(errors.BADSTATE, f"workflow {flow_id!r} is already {record['status']}")
    # Finished first: the cancellations below then count nothing (on_transition skips a
    # finished workflow), so no callback fires and no chain step starts.
    _finish(m, record, W_CANCELLED, now, "cancelled")
    cancelled = 0
    for task_id in m.load_json(keys.flow_tasks(flow_id)):
        task = m.load_task(task_id)
        if task is not None and task["status"] not in FINISHED and task["status"] != RUNNING:
            if not isinstance(tasks.cancel(m, now, task_id), Rejected):
                cancelled += 1
    return dict(_summary(record), cancelled_tasks=cancelled)


def purge_workflows(m, now: int, cutoff_ms: int, limit: int):
    """Delete the records of workflows finished before ``cutoff_ms``, at most ``limit``
    keys per command (a big workflow takes several). Its tasks are purged by ``purge`` as
    any finished task; the workflow keeps its own copy of their outcomes, so the two
    retentions do not depend on each other."""
    ov = m.overlay
    deleted = 0
    for index_key, flow_id in list(m.store.scan(keys.FLOW_FINISHED,
                                                keys.flow_finished_until(cutoff_ms), limit)):
        if index_key in ov.deleted:
            continue
        prefix = keys.flow_prefix(flow_id.decode())
        whole = True
        for key, _ in m.store.scan(prefix, keys.prefix_end(prefix)):  # a lazy iterator
            if key in ov.deleted:  # deleted by an earlier command of this entry
                continue
            if deleted >= limit:
                whole = False
                break
            ov.delete(key)
            deleted += 1
        if not whole:
            break
        ov.delete(index_key)
        deleted += 1
        if deleted >= limit:
            break
    return deleted


COMMANDS = {
    "submit_workflow": submit_workflow,
    "cancel_workflow": cancel_workflow,
    "purge_workflows": purge_workflows,
}


# ---------------------------------------------------------------- following tasks

def on_transition(m, task: dict, old_status, new_status: str, now: int) -> None:
    """Called by the machine in every task transition (broker/commands/__init__.py)."""
    ref = task.get("_wf")
    if ref is None:
        return
    if new_status == RUNNING:
        record = m.load_json(keys.flow(ref["w"]))
        if record is not None and record["status"] == W_PENDING:
            record["status"] = W_RUNNING
            record["updated_at"] = now / 1000.0
            m.overlay.put(keys.flow(ref["w"]), jsonutil.dumps(record))
        return
    if new_status not in FINISHED:
        return  # pending, scheduled, failed (waiting for a retry): nothing to count
    flow_id, nid, member = ref["w"], ref["n"], ref.get("m")
    marker = keys.flow_outcome(flow_id, nid, member)
    if m.overlay.get(marker) is not None:
        return  # counted already: its first final status is the one that counts
    record = m.load_json(keys.flow(flow_id))
    if record is None or record["status"] in W_FINISHED:
        return  # cancelled or over: nothing follows
    outcome = encode_outcome(
        task["id"], new_status, task.get("result"),
        None if new_status == COMPLETED else (task.get("error") or new_status))
    m.overlay.put(marker, outcome)
    flow = _Flow(m, flow_id, now)
    if member is None:
        flow.node_done(nid, new_status == COMPLETED)
    else:
        flow.member_done(nid, new_status, member, outcome)


# ---------------------------------------------------------------------- the engine

class _Flow:
    """Advances one workflow inside the current entry (``m.overlay``)."""

    def __init__(self, m, flow_id: str, now: int):
        self.m = m
        self.id = flow_id
        self.now = now

    def node(self, nid: str) -> dict:
        return self.m.load_json(keys.flow_node(self.id, nid))

    def start(self, nid: str, inbound: dict | None) -> None:
        """Submit what node ``nid`` runs first. ``inbound``: what the previous step hands
        it (``{"previous": result}`` or a chord's ``{"results", "errors"}``)."""
        node = self.node(nid)
        kind = node["k"]
        if kind == "chain":
            self.start(node["steps"][0], inbound)
            return
        handed = inbound if node.get("pass") else None
        members = None if kind == "task" else self.m.load_json(keys.flow_members(self.id, nid))
        if handed is not None:
            refusal = _input_refusal(nid, _encoded_size(handed),
                                     1 if members is None else len(members))
            if refusal is not None:
                # Not submitted: the node fails with the reason instead of tasks no worker
                # could fetch. A group fails whole (every member would get the same input).
                self.node_done(nid, False, refusal)
                return
        if kind == "task":
            if not self._submit(node["spec"], {"w": self.id, "n": nid}, handed):
                self.node_done(nid, False)
            return
        # "roll": roll the results up per chunk; only a chord's callback reads them all.
        self.m.overlay.put(keys.flow_counter(self.id, nid), jsonutil.dumps(
            {"n": len(members), COMPLETED: 0, "dead": 0, CANCELLED: 0,
             "roll": node["cb"] is not None}))
        for i, spec in enumerate(members):
            if "node" in spec:  # a chain/group/chord member: counted by node_done
                self.start(spec["node"], handed)
            elif not self._submit(spec, {"w": self.id, "n": nid, "m": i}, handed):
                self._lost_member(nid, i, spec["id"])

    def _submit(self, spec: dict, ref: dict, handed: dict | None) -> bool:
        if handed is not None:
            spec = dict(spec, payload=dict(handed, payload=spec.get("payload")))
        result = tasks.submit(self.m, self.now, spec, NO_LIMIT, workflow=ref)
        return not (isinstance(result, Rejected) or result.get("duplicate"))

    def _lost_member(self, nid: str, i: int, task_id: str) -> None:
        """A member whose id a task outside the workflow took meanwhile: it counts as dead."""
        outcome = encode_outcome(task_id, "dead", None, "task id taken by another task")
        self.m.overlay.put(keys.flow_outcome(self.id, nid, i), outcome)
        self.member_done(nid, "dead", i, outcome)

    def member_done(self, nid: str, status: str, i: int, outcome: bytes) -> None:
        """Member ``i`` of group ``nid`` reached its final status ``status`` (its
        ``outcome`` record just written); counted once, O(1)."""
        key = keys.flow_counter(self.id, nid)
        counter = self.m.load_json(key)
        counter[status] += 1
        self.m.overlay.put(key, jsonutil.dumps(counter))
        if counter.get("roll"):
            self.roll_up(nid, i, counter["n"], outcome)
        if counter[COMPLETED] + counter["dead"] + counter[CANCELLED] < counter["n"]:
            return
        group = self.node(nid)
        ok = counter[COMPLETED] == counter["n"]
        if group["cb"] is None:
            self.node_done(nid, ok)
        elif ok or group["on_error"] == "callback":
            self.start(group["cb"], self.members_handed(nid, counter["n"], ok))
        else:
            self.node_done(nid, False)

    def roll_up(self, nid: str, i: int, n: int, outcome: bytes) -> None:
        """Count member ``i`` in its chunk; the chunk's last member splices the chunk's
        results into the chunk record (``b"=" + r0,r1,...``).

        While a chunk fills, its record is ``b"#<count>"``; a full chunk whose results pass
        CHUNK_BYTES becomes ``b"!"`` (the callback then reads its members one by one). Per
        member this is one more point read and write, plus, once per chunk, CHUNK reads:
        bounded whatever the chord's size. At 10,000 members the firing ACK then reads 79
        chunk records instead of iterating 10,000 outcomes (~10 ms of Python before)."""
        ov = self.m.overlay
        chunk = i // CHUNK
        key = keys.flow_chunk(self.id, nid, chunk)
        size = min(CHUNK, n - chunk * CHUNK)
        raw = ov.get(key)
        filled = 1 if raw is None else int(raw[1:]) + 1
        if filled < size:
            ov.put(key, b"#%d" % filled)
            return
        parts, total = [], 0
        for j in range(chunk * CHUNK, chunk * CHUNK + size):
            record = outcome if j == i else ov.get(keys.flow_outcome(self.id, nid, j))
            result = record[record.index(b"\n") + 1:]
            total += len(result) + 1
            if total > CHUNK_BYTES:
                ov.put(key, b"!")
                return
            parts.append(result)
        ov.put(key, b"=" + b",".join(parts))

    def members_handed(self, nid: str, n: int, all_completed: bool) -> dict:
        """What a chord's callback receives: ``results`` and ``errors`` in member order.

        The one O(N) step of a chord, run once. When every member completed (the common
        case) the results are spliced, undecoded (orjson.Fragment), from the chunk
        records :meth:`roll_up` wrote: N/CHUNK point reads."""
        ov = self.m.overlay
        if all_completed and self.m.load_json(keys.flow_counter(self.id, nid)).get("roll"):
            parts = []
            for chunk in range((n + CHUNK - 1) // CHUNK):
                raw = ov.get(keys.flow_chunk(self.id, nid, chunk))
                if raw[:1] == b"=":
                    parts.append(raw[1:])
                    continue
                for j in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):  # too big
                    record = ov.get(keys.flow_outcome(self.id, nid, j))
                    parts.append(record[record.index(b"\n") + 1:])
            results = b"[" + b",".join(parts) + b"]"
            return {"results": orjson.Fragment(results), "errors": [None] * n}
        # Partial results (or a chord stored before chunks existed): scan the outcomes.
        base = keys.flow_outcome(self.id, nid) + b"\x00"
        # One forward scan of the contiguous outcome keys (member order: big-endian
        # indexes), ~3x faster than point reads at 10,000 members; then the outcomes this
        # entry wrote itself, which are not in RocksDB yet. An outcome is written once and
        # never overwritten, so a stored one is never stale.
        raw = [None] * n
        options = rocksdict.ReadOptions()
        options.set_iterate_upper_bound(keys.prefix_end(base))
        offset = len(base)
        for key, value in ov.store.db.items(from_key=base, read_opt=options):
            raw[keys.read_u64(key, offset)] = value
        puts = ov.puts
        for i, value in enumerate(raw):
            if value is None:
                raw[i] = puts[base + keys.u64(i)]
        if all_completed:
            results = b"[" + b",".join(r[r.index(b"\n") + 1:] for r in raw) + b"]"
            return {"results": orjson.Fragment(results), "errors": [None] * n}
        outcomes = [decode_outcome(r) for r in raw]
        return {"results": [o["r"] if o["s"] == COMPLETED else None for o in outcomes],
                "errors": [None if o["s"] == COMPLETED else
                           {"id": o["id"], "status": o["s"], "error": o["e"]}
                           for o in outcomes]}

    def node_done(self, nid: str, ok: bool, error: str | None = None) -> None:
        """Node ``nid`` finished (``ok``: it completed): start what follows it. ``error``:
        why it failed, when it failed for a reason of its own (it travels up with the
        failure to the workflow record; without it the record names the node)."""
        node = self.node(nid)
        parent_id = node["p"]
        if not ok and error is None:
            error = f"node {nid} did not complete"
        if parent_id is None:
            record = self.m.load_json(keys.flow(self.id))
            _finish(self.m, record, W_COMPLETED if ok else W_FAILED, self.now,
                    None if ok else error)
            return
        parent = self.node(parent_id)
        if parent["k"] == "group":
            if node["i"] == "cb":  # nid is the chord's callback: the chord ends with it
                self.node_done(parent_id, ok, error)
                return
            # nid is a member of its own shape (a chain, group or chord): count it as
            # member i, with its result as a task member's would be. This runs once: a
            # node finishes once, since each of its tasks is counted once.
            status = COMPLETED if ok else "dead"
            outcome = encode_outcome(None, status, self.result(nid) if ok else None,
                                     None if ok else error)
            self.m.overlay.put(keys.flow_outcome(self.id, parent_id, node["i"]), outcome)
            self.member_done(parent_id, status, node["i"], outcome)
            return
        following = node["i"] + 1
        if ok and following < len(parent["steps"]):
            step_id = parent["steps"][following]
            step = self.node(step_id)
            inbound = {"previous": self.result(nid)} if _receives(self, step) else None
            self.start(step_id, inbound)
        else:
            self.node_done(parent_id, ok, error)

    def result(self, nid: str):
        """A finished node's result: a task's result, a group's list of member results,
        a chord's callback result, a chain's last step's result."""
        node = self.node(nid)
        if node["k"] == "task":
            outcome = decode_outcome(self.m.overlay.get(keys.flow_outcome(self.id, nid)))
            return None if outcome is None else outcome["r"]
        if node["k"] == "chain":
            return self.result(node["steps"][-1])
        if node["cb"] is not None:
            return self.result(node["cb"])
        outcomes = [decode_outcome(self.m.overlay.get(keys.flow_outcome(self.id, nid, i)))
                    for i in range(node["n"])]
        return [o["r"] if o else None for o in outcomes]


def encode_outcome(task_id: str, status: str, result, error) -> bytes:
    """A counted task's outcome: a JSON header, a newline, the result's JSON. The result
    stays apart so a chord's callback payload can splice it in undecoded; orjson never
    writes a raw newline, so the first one ends the header."""
    return jsonutil.dumps({"id": task_id, "s": status, "e": error}) + b"\n" + jsonutil.dumps(
        result)


def decode_outcome(raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    header, _, result = raw.partition(b"\n")
    outcome = jsonutil.loads(header)
    outcome["r"] = jsonutil.loads(result)
    return outcome


def _input_refusal(nid: str, size: int, receivers: int) -> str | None:
    """Why node ``nid`` may not be handed an input of ``size`` bytes for ``receivers``
    tasks, or None when it may."""
    if size > HANDED_MAX_BYTES:
        return (f"node {nid}: its input from the previous step is {size} bytes, over the "
                f"{HANDED_MAX_BYTES}-byte limit for results handed to a step")
    if size * receivers > HANDED_FANOUT_MAX_BYTES:
        return (f"node {nid}: its input from the previous step ({size} bytes) for each of its "
                f"{receivers} members is {size * receivers} bytes, over the "
                f"{HANDED_FANOUT_MAX_BYTES}-byte limit for results handed to a group")
    return None


def _encoded_size(handed: dict) -> int:
    """The JSON size of what a step is handed: encoded once more (a chord's spliced results,
    a Fragment, are copied, not re-encoded), deterministic, so every node of a cluster
    measures the same."""
    return len(jsonutil.dumps(handed))


def _receives(flow: _Flow, node: dict) -> bool:
    """Does ``node`` (a chain step) take the previous step's result (``pass_result``)?"""
    while node["k"] == "chain":
        node = flow.node(node["steps"][0])
    return bool(node.get("pass"))


def _finish(m, record: dict, status: str, now: int, error) -> None:
    record.update(status=status, updated_at=now / 1000.0, finished_at=now / 1000.0,
                  error=error)
    m.overlay.put(keys.flow(record["id"]), jsonutil.dumps(record))
    m.overlay.put(keys.flow_finished(now, record["id"]), record["id"].encode())


def _first_wave(nodes: dict, nid: str):
    """The task specs ``submit_workflow`` submits at once (for the queue-depth check)."""
    node = nodes[nid]
    if node["k"] == "chain":
        yield from _first_wave(nodes, node["steps"][0])
    elif node["k"] == "task":
        yield node["spec"]
    else:
        for spec in node["members"]:
            if "node" in spec:
                yield from _first_wave(nodes, spec["node"])
            else:
                yield spec


def _summary(record: dict) -> dict:
    return {"id": record["id"], "status": record["status"], "size": record["size"]}


# ---------------------------------------------------------------- read side (service)

def view(store, flow_id: str, task_limit: int) -> dict | None:
    """The workflow as clients see it, from ``store`` (a :class:`broker.store.Store`):
    its record, each group's O(1) progress, and up to ``task_limit`` of its tasks in tree
    order with their status. A task not submitted yet shows ``waiting`` while the workflow
    is active and ``cancelled`` once it is over (it never ran)."""
    store_get, raw_get = store.get_json, store.get
    record = store_get(keys.flow(flow_id))
    if record is None:
        return None
    out = {k: record[k] for k in ("id", "status", "size", "created_at", "updated_at",
                                  "finished_at", "error")}
    never = "cancelled" if record["status"] in W_FINISHED else "waiting"
    groups, rows = [], []

    def walk(nid: str, role: str, level: int):
        node = store_get(keys.flow_node(flow_id, nid))
        if node["k"] == "chain":
            for i, step in enumerate(node["steps"]):
                walk(step, f"{role}.step[{i}]" if role else f"step[{i}]", level + 1)
            return
        if node["k"] == "task":
            add(node["spec"]["id"], role or "task", keys.flow_outcome(flow_id, nid))
            return
        counter = store_get(keys.flow_counter(flow_id, nid))
        kind = "chord" if node["cb"] is not None else "group"
        groups.append({"node": nid, "kind": kind, "role": role or kind,
                       "size": node["n"], "on_error": node["on_error"],
                       "started": counter is not None,
                       "completed": counter[COMPLETED] if counter else 0,
                       "dead": counter["dead"] if counter else 0,
                       "cancelled": counter[CANCELLED] if counter else 0})
        prefix = role or kind
        members = store_get(keys.flow_members(flow_id, nid)) if len(rows) < task_limit else []
        for i, spec in enumerate(members):
            if len(rows) >= task_limit:
                break
            if "node" in spec:
                walk(spec["node"], f"{prefix}.member[{i}]", level + 1)
            else:
                add(spec["id"], f"{prefix}.member[{i}]", keys.flow_outcome(flow_id, nid, i))
        if node["cb"] is not None:
            walk(node["cb"], f"{prefix}.callback", level + 1)

    def add(task_id: str, role: str, outcome_key: bytes):
        if len(rows) >= task_limit:
            return
        task = store_get(keys.task(task_id))
        if task is not None and task.get("_wf", {}).get("w") == flow_id:
            rows.append({"id": task_id, "role": role, "status": task["status"],
                         "result": task.get("result"), "error": task.get("error")})
            return
        outcome = decode_outcome(raw_get(outcome_key))  # its record was purged, or never ran
        if outcome is not None:
            rows.append({"id": task_id, "role": role, "status": outcome["s"],
                         "result": outcome["r"], "error": outcome["e"]})
        else:
            rows.append({"id": task_id, "role": role, "status": never, "result": None,
                         "error": None})

    walk(record["root"], "", 0)
    out["groups"] = groups
    out["tasks"] = rows
    out["tasks_truncated"] = record["size"] > len(rows)
    return out

