"""task-queue client library: the wire codec and the clients every host uses.

Light on purpose (standard library only): workers, the admin CLI and user code import it
without the broker's heavy dependencies.
"""

from taskqueue.errors import BrokerError, ConnectionLost, TaskFailed, TaskQueueError  # noqa: F401


def configure(addresses=None, *, api_key=None, **client_options) -> None:
    """Where ``@task`` handlers' ``.submit()`` sends tasks (see taskqueue/producer.py)."""
    from taskqueue import producer

    producer.configure(addresses, api_key=api_key, **client_options)

__version__ = "0.1.0"

