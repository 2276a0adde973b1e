# A frame's shared completion state (_Batch) and the cheap per-record handle that put
# returns (RecordFuture): one event per frame, one slot per record.
import threading
import time

PENDING, SUCCEEDED, FAILED = 0, 1, 2


class _Batch:
    """Records bound for one frame (one stream): queued, written, then answered once
    for all. A batch that the agent answers SHUTTING_DOWN is sent again whole."""

    __slots__ = (
        "stream",  # the stream name, or None for the socket's own
        "entries",  # encoded records (Request field-2 entries)
        "nbytes",  # their total length
        "created",  # monotonic time of its first record (for linger)
        "limit",  # bytes of records it takes, at most
        "tail",  # the request's fields after the records (ack, stream), encoded
        "id",  # the request id of its latest writing, 0 before
        "state",
        "error",
        "event",
        "callbacks",  # [(future, fn)] added before it finished, or None
        "lock",  # the producer's lock (guards state and callbacks)
    )

    def __init__(self, stream, tail, limit, lock):
        self.stream = stream
        self.entries = []
        self.nbytes = 0
        self.created = time.monotonic()
        self.limit = limit
        self.tail = tail
        self.id = 0
        self.state = PENDING
        self.error = None
        self.event = threading.Event()
        self.callbacks = None
        self.lock = lock


class RecordFuture:
    """What put returns: resolves when the agent's OK covers the record (it is durable
    in the agent's spool), or fails with a ShardlineError. Its methods mirror
    concurrent.futures.Future's."""

    __slots__ = ("_batch",)

    def done(self):
        """Whether the record has its outcome (acknowledged or failed)."""
        return self._batch.state != PENDING

    def running(self):
        return self._batch.state == PENDING

    def cancelled(self):
        return False

    def cancel(self):
        """Records cannot be cancelled once put: always False."""
        return False

    def result(self, timeout=None):
        """None once the record is acknowledged; raises its error if it failed, or
        TimeoutError if it has no outcome within `timeout` seconds."""
        b = self._batch
        if b.state == PENDING and not b.event.wait(timeout):
            raise TimeoutError("record not answered within %s s" % timeout)
        if b.error is not None:
            raise b.error._copy() from b.error.__cause__
        return None

    def exception(self, timeout=None):
        """The record's error, or None once acknowledged; TimeoutError as result."""
        b = self._batch
        if b.state == PENDING and not b.event.wait(timeout):
            raise TimeoutError("record not answered within %s s" % timeout)
        return b.error

    def add_done_callback(self, fn):
        """Calls fn(future) once the record has its outcome (at once if it has). Called
        on the producer's reader thread: keep it short, and do not block in it."""
        b = self._batch
        with b.lock:
            if b.state == PENDING:
                if b.callbacks is None:
                    b.callbacks = []
                b.callbacks.append((self, fn))
                return
        _call(fn, self)

    def __repr__(self):
        b = self._batch
        if b.state == PENDING:
            return "<RecordFuture pending>"
        if b.error is None:
            return "<RecordFuture acknowledged>"
        return "<RecordFuture failed %r>" % (b.error,)


def _call(fn, fut):
    try:
        fn(fut)
    except Exception:  # a callback's failure is its own; log it like concurrent.futures
        import logging

        logging.getLogger("shardline").exception("exception calling callback for %r", fut)


def run_callbacks(callbacks):
    for fut, fn in callbacks:
        _call(fn, fut)
