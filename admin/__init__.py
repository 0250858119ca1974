"""tq-admin: the operator's command line for a task-queue broker (see admin/cli.py)."""
