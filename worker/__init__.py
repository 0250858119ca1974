"""tq-worker: runs task handlers for jobs fetched from the broker.

``from worker import task, current_job`` is all a handler module needs.
"""

from worker.registry import JobInfo, current_job, task

__all__ = ["JobInfo", "current_job", "task"]
