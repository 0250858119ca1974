"""RocksDB key layout. Every key the broker writes is built here and nowhere else.

One key space, a one-byte prefix per table (documented in docs/architecture.md):

=========  ==========================================================  =================
prefix     key                                                         value
=========  ==========================================================  =================
``T``      task id                                                     task record (JSON)
``R``      queue, NUL, (9 - priority) as 1 byte, seq (8 bytes)         task id
``S``      run-at ms (8 bytes), seq (8 bytes)                          task id
``L``      lease deadline ms (8 bytes), task id                        fencing token
``X``      finished status, NUL, changed-at ms (8 bytes), seq (8 bytes) task id
``I``      idempotency key                                             task id
``W``      worker id                                                   worker record (JSON)
``Q``      queue name                                                  rate/concurrency limit
                                                                       and its bucket (JSON)
``F``      workflow id, NUL, table letter, rest (see below)                workflow records
``P``      schedule id                                                 schedule record (JSON)
``N``      next fire ms (8 bytes), schedule id                         empty (due index)
``Y``      queue, NUL, type, NUL, task id                              empty (LIST by
                                                                       queue/type:
                                                                       listindex.py)
``M``      meta name (``applied``, ``seq``, ``counters``, ``paused``,      JSON
           ``restored``, ``restorelogged``, ``limitsconfig``,
           ``schedules``, ``schedulesconfig``, ``listindex``)
=========  ==========================================================  =================

Workflows (broker/commands/workflows.py) keep every record of one workflow under
``F<id>\x00``, so purging a finished workflow is one range: ``w`` the workflow record,
``n<node>`` a node of its tree, ``m<node>`` a group's member specs, ``c<node>`` a group's
O(1) progress counter, ``o<node>`` / ``o<node>\x00<m>`` the first final outcome of a task
node / of a group's member m (also the "counted" marker), ``k<node>\x00<c>`` a chord's
chunk c of members' results (a count while it fills, then the results spliced), ``l`` the
ids of all its tasks. ``F\x00<finished ms><id>`` orders finished workflows
for retention (workflow ids never start with NUL).

Each task is in exactly one of the R, S, L, X indexes, chosen by its status: pending in R,
scheduled and failed (waiting for a retry) in S, running in L, completed/dead/cancelled in X.

Integers are fixed-width big-endian so that byte order is numeric order: the ready index
iterates highest priority first, then FIFO by the sequence number the state machine assigns;
the schedule and lease indexes iterate by time. Queue and status names cannot contain NUL
(validated on input), so the NUL separator keeps one queue's keys contiguous.
"""

from __future__ import annotations

import struct

_U64 = struct.Struct(">Q")

TASK = b"T"
READY = b"R"
SCHEDULE = b"S"
LEASE = b"L"
STATUS = b"X"
IDEMPOTENCY = b"I"
WORKER = b"W"
META = b"M"
LIMIT = b"Q"  # broker/commands/limits.py
FLOW = b"F"
FLOW_FINISHED = b"F\x00"
PERIODIC = b"P"  # schedules (broker/commands/schedules.py)
PERIODIC_DUE = b"N"  # schedules by next fire time: the timer finds due ones without a scan
BY_TYPE = b"Y"  # tasks by queue and type, for LIST (broker/listindex.py)

META_APPLIED = b"Mapplied"
META_SEQ = b"Mseq"
META_COUNTERS = b"Mcounters"
META_PAUSED = b"Mpaused"
META_RESTORED = b"Mrestored"  # written by a restore (broker/restore.py), never by apply
# the restore identity the Raft log recorded (a "restored" command applied on this base)
META_RESTORE_LOGGED = b"Mrestorelogged"
# the fingerprint of the configuration's limits: section last reconciled (limits_reconcile)
META_LIMITS_CONFIG = b"Mlimitsconfig"
# how many schedules exist and how many are paused (metrics read it, nothing scans)
META_SCHEDULES = b"Mschedules"
# the fingerprint of the configuration's schedules: section last reconciled
META_SCHEDULES_CONFIG = b"Mschedulesconfig"
# present once every stored task is in the BY_TYPE index (listindex.backfill)
META_LIST_INDEX = b"Mlistindex"


def u64(value: int) -> bytes:
    return _U64.pack(value)


def read_u64(data: bytes, offset: int = 0) -> int:
    return _U64.unpack_from(data, offset)[0]


def task(task_id: str) -> bytes:
    return TASK + task_id.encode()


def ready_prefix(queue: str) -> bytes:
    return READY + queue.encode() + b"\x00"


def ready(queue: str, priority: int, seq: int) -> bytes:
    return READY + queue.encode() + b"\x00" + bytes((9 - priority,)) + _U64.pack(seq)


def schedule(run_at_ms: int, seq: int) -> bytes:
    return SCHEDULE + _U64.pack(run_at_ms) + _U64.pack(seq)


def schedule_until(now_ms: int) -> bytes:
    """Upper bound (exclusive) of the schedule entries due at ``now_ms``."""
    return SCHEDULE + _U64.pack(now_ms + 1)


def lease(deadline_ms: int, task_id: str) -> bytes:
    return LEASE + _U64.pack(deadline_ms) + task_id.encode()


def lease_until(now_ms: int) -> bytes:
    return LEASE + _U64.pack(now_ms + 1)


def status_prefix(status: str) -> bytes:
    return STATUS + status.encode() + b"\x00"


def status(status_name: str, changed_ms: int, seq: int) -> bytes:
    return STATUS + status_name.encode() + b"\x00" + _U64.pack(changed_ms) + _U64.pack(seq)


def status_until(status_name: str, cutoff_ms: int) -> bytes:
    return STATUS + status_name.encode() + b"\x00" + _U64.pack(cutoff_ms)


def idempotency(key: str) -> bytes:
    return IDEMPOTENCY + key.encode()


def by_type_prefix(queue: str, task_type: str | None = None) -> bytes:
    """Tasks of ``queue`` (and of ``task_type`` in it) in the listing index."""
    prefix = BY_TYPE + queue.encode() + b"\x00"
    return prefix if task_type is None else prefix + task_type.encode() + b"\x00"


def by_type(queue: str, task_type: str, task_id: str) -> bytes:
    # One encode: this runs in every submit's apply (queue and type cannot hold NUL).
    return f"Y{queue}\x00{task_type}\x00{task_id}".encode()


def worker(worker_id: str) -> bytes:
    return WORKER + worker_id.encode()


def limit(queue: str) -> bytes:
    return LIMIT + queue.encode()


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        raise ValueError("prefix of only 0xff bytes has no end")
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))


def flow_prefix(flow_id: str) -> bytes:
    """Every key of one workflow starts with this (broker/commands/workflows.py)."""
    return FLOW + flow_id.encode() + b"\x00"


def flow(flow_id: str) -> bytes:
    return flow_prefix(flow_id) + b"w"


def flow_tasks(flow_id: str) -> bytes:
    return flow_prefix(flow_id) + b"l"


def flow_node(flow_id: str, node: str) -> bytes:
    return flow_prefix(flow_id) + b"n" + node.encode()


def flow_members(flow_id: str, node: str) -> bytes:
    """A group's member task specs, apart from its node record (read at start and by views,
    never by a member's completion)."""
    return flow_prefix(flow_id) + b"m" + node.encode()


def flow_counter(flow_id: str, node: str) -> bytes:
    return flow_prefix(flow_id) + b"c" + node.encode()


def flow_outcome(flow_id: str, node: str, member: int | None = None) -> bytes:
    key = flow_prefix(flow_id) + b"o" + node.encode()
    return key if member is None else key + b"\x00" + _U64.pack(member)


def flow_chunk(flow_id: str, node: str, chunk: int) -> bytes:
    """A chord's results of members [chunk*B, (chunk+1)*B), rolled up once all are counted
    (broker/commands/workflows.py, ``_Flow.roll_up``)."""
    return flow_prefix(flow_id) + b"k" + node.encode() + b"\x00" + _U64.pack(chunk)


def flow_finished(finished_ms: int, flow_id: str) -> bytes:
    return FLOW_FINISHED + _U64.pack(finished_ms) + flow_id.encode()


def flow_finished_until(cutoff_ms: int) -> bytes:
    return FLOW_FINISHED + _U64.pack(cutoff_ms)


def periodic(schedule_id: str) -> bytes:
    return PERIODIC + schedule_id.encode()


def periodic_due(next_fire_ms: int, schedule_id: str) -> bytes:
    return PERIODIC_DUE + _U64.pack(next_fire_ms) + schedule_id.encode()


def periodic_due_until(now_ms: int) -> bytes:
    """Upper bound (exclusive) of the schedules due at ``now_ms``."""
    return PERIODIC_DUE + _U64.pack(now_ms + 1)
