"""The command table: every op the state machine applies, gathered from its families.

A family is one module with one job (tasks and leases, workers, queues, housekeeping,
cluster, ...). It exports ``COMMANDS``, a dict ``op name -> function(machine, now, *args)``,
may export ``on_load(machine)``, called whenever the machine (re)reads its state from the
store (start, snapshot install), to rebuild what the family keeps in memory, and may export
``on_transition(machine, task, old_status, new_status, now)``, which the
machine calls in every task transition, inside the same entry, so a family that follows
tasks (a concurrency limit, a chord's counter) changes in the same WriteBatch as the task.

A command function must be deterministic: everything it needs (time, random draws, limits
from configuration) is in its arguments, stamped by the proposer. It returns its result, or
a :class:`broker.model.Rejected`; it never raises on bad input.
"""

from __future__ import annotations

from broker.commands import (cluster, housekeeping, limits, queues, schedules, tasks, workers,
                             workflows)

FAMILIES = (tasks, workers, queues, housekeeping, cluster, limits, workflows, schedules)


def _gather():
    table: dict = {}
    for family in FAMILIES:
        for name, function in family.COMMANDS.items():
            if name in table:
                raise RuntimeError(f"command {name!r} is defined twice ({family.__name__})")
            table[name] = function
    hooks = tuple(f.on_transition for f in FAMILIES if hasattr(f, "on_transition"))
    loaders = tuple(f.on_load for f in FAMILIES if hasattr(f, "on_load"))
    return table, hooks, loaders


COMMANDS, TRANSITION_HOOKS, LOAD_HOOKS = _gather()
