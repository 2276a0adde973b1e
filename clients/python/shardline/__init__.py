# shardline-client: a pure-Python producer for the shardline agent's acknowledged framed
# Unix-socket protocol (version 1).
"""Send records to a shardline agent's framed socket; each put resolves once the
agent has made the record durable in its spool.

    from shardline import Producer

    with Producer("/run/shardline/app.sock") as p:
        fut = p.put(b"hello", partition_key="user-42")
        fut.result(timeout=10)
"""

from ._future import RecordFuture
from ._records import random_partition_key
from .errors import (
    AgentError,
    Closed,
    ConnectionLost,
    InvalidRecord,
    QueueFull,
    RecordTooLarge,
    ShardlineError,
    SpoolFull,
)
from .producer import Producer

__version__ = "0.1.0"

__all__ = [
    "Producer",
    "RecordFuture",
    "ShardlineError",
    "InvalidRecord",
    "RecordTooLarge",
    "SpoolFull",
    "ConnectionLost",
    "AgentError",
    "Closed",
    "QueueFull",
    "random_partition_key",
]
