# The errors a producer reports: client validation, the agent's refusals, lost
# connections (in doubt) and a closed or full producer.


class ShardlineError(Exception):
    """Base of every error this client reports.

    Attributes:
        status: the agent's status name (e.g. "SPOOL_FULL"), or None when the error
            is the client's own (validation, a lost connection, a closed producer)
            or the agent answered a status code this client does not know.
        status_code: the agent's numeric status, or None.
        message: what went wrong, for a human.
        in_doubt: True when the records were written to the agent but no answer
            came (or the agent failed internally): they may or may not be spooled.
    """

    in_doubt_default = False

    def __init__(self, message, status=None, status_code=None, in_doubt=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.status_code = status_code
        self.in_doubt = self.in_doubt_default if in_doubt is None else in_doubt

    def _copy(self):
        """A fresh instance with the same fields (each raise gets its own traceback)."""
        e = type(self).__new__(type(self))
        ShardlineError.__init__(e, self.message, self.status, self.status_code, self.in_doubt)
        e.__cause__ = self.__cause__
        return e

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.status, self.status_code, self.in_doubt))

    def __repr__(self):
        extra = ""
        if self.status is not None or self.status_code is not None:
            extra += ", status=%r" % (self.status or self.status_code)
        if self.in_doubt:
            extra += ", in_doubt=True"
        return "%s(%r%s)" % (type(self).__name__, self.message, extra)


def _rebuild(cls, message, status, status_code, in_doubt):
    e = cls.__new__(cls)
    ShardlineError.__init__(e, message, status, status_code, in_doubt)
    return e


class InvalidRecord(ShardlineError, ValueError):
    """A record the agent does not take: bad partition key, explicit hash key, record
    id or stream (refused by put before anything is sent, or answered INVALID_RECORD)."""


class RecordTooLarge(ShardlineError, ValueError):
    """Data plus partition key over 10 MiB (or the stream's limit): RECORD_TOO_LARGE."""


class SpoolFull(ShardlineError):
    """The agent's spool is full (SPOOL_FULL): the records were not spooled, and may be
    put again."""


class ConnectionLost(ShardlineError):
    """The records were written but the connection ended before their answer came:
    in doubt, they may or may not be spooled."""

    in_doubt_default = True


class AgentError(ShardlineError):
    """BAD_FRAME, INTERNAL or a status this client does not know. INTERNAL and unknown
    statuses are in doubt."""


class Closed(ShardlineError):
    """The producer is closed (put after close), or close's timeout passed before the
    record was sent: it was not sent."""


class QueueFull(ShardlineError):
    """The producer's queue is at its bound and block_when_full is False: nothing was
    queued."""
