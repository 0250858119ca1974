"""task-queue client library: the wire codec and the clients every host uses.

Light on purpose (standard library only): workers, the admin CLI and user code import it
without the broker's heavy dependencies.
"""

from taskqueue.errors import BrokerError, ConnectionLost, TaskQueueError  # noqa: F401

__version__ = "0.1.0"

