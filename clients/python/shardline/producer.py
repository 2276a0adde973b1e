# The Producer: queues records into per-stream batches, a writer thread pipelines them
# as frames over one Unix-socket connection, a reader thread matches the agent's answers
# in order and resolves each batch's records; reconnects with backoff.
import logging
import random
import socket
import threading
import time
from collections import deque

from . import _wire
from ._future import FAILED, PENDING, SUCCEEDED, RecordFuture, _Batch, run_callbacks
from ._records import FAST_DATA_BYTES, check_stream, encode_plain, encode_record
from .errors import (
    AgentError,
    Closed,
    ConnectionLost,
    InvalidRecord,
    QueueFull,
    RecordTooLarge,
    SpoolFull,
)

log = logging.getLogger("shardline")

_monotonic = time.monotonic
# Room a frame keeps beside its records: length prefix, version, request id.
_FRAME_OVERHEAD = 4 + 1 + 11
_READ_BYTES = 256 * 1024


class _Conn:
    """One connection to the agent and the frames written on it, oldest first."""

    __slots__ = ("sock", "inflight", "requeue", "next_id", "draining", "dead", "writing", "reader", "acked")

    def __init__(self, sock):
        self.sock = sock
        self.inflight = deque()
        self.requeue = []  # batches answered SHUTTING_DOWN, to send again
        self.next_id = 0
        self.draining = False  # SHUTTING_DOWN seen: write nothing more, read what is owed
        self.dead = False
        self.writing = False  # the writer thread is inside sendall on this socket
        self.reader = None
        self.acked = False  # any OK came on it


def _shutdown(sock, how=socket.SHUT_RDWR):
    try:
        sock.shutdown(how)
    except OSError:
        pass


def _agent_error(resp):
    code = resp.status_code
    name = resp.status
    message = resp.message or (name or "status %d" % code)
    if code == _wire.INVALID_RECORD:
        return InvalidRecord(message, name, code)
    if code == _wire.RECORD_TOO_LARGE:
        return RecordTooLarge(message, name, code)
    if code == _wire.SPOOL_FULL:
        return SpoolFull(message, name, code)
    if code == _wire.BAD_FRAME:
        return AgentError(message, name, code, in_doubt=False)
    if code == _wire.INTERNAL:
        return AgentError(message, name, code, in_doubt=True)
    return AgentError("unknown status %d: %s" % (code, resp.message), None, code, in_doubt=True)


class Producer:
    """Sends records to a shardline agent's framed socket and reports, per record, when
    the agent has made it durable.

    Args:
        socket_path: the agent's `[[socket]]` path (`framing = "frames"`).
        linger: seconds a batch waits for more records before it is sent.
        max_batch_records: records per frame, at most.
        max_batch_bytes: bytes per frame, at most (a larger record goes alone).
        max_in_flight: frames written and not yet answered, at most.
        max_queued_records, max_queued_bytes: bound on records put and not yet answered.
        block_when_full: put blocks while the queue is full (else raises QueueFull).
        stream: default stream for put (None: the socket's own).
        reconnect_backoff, max_reconnect_backoff: first and largest wait (seconds)
            between connection attempts; doubles, jittered.
    """

    def __init__(
        self,
        socket_path,
        *,
        linger=0.01,
        max_batch_records=500,
        max_batch_bytes=1 << 20,
        max_in_flight=16,
        max_queued_records=100_000,
        max_queued_bytes=64 << 20,
        block_when_full=True,
        stream=None,
        reconnect_backoff=0.1,
        max_reconnect_backoff=5.0,
    ):
        if linger < 0:
            raise ValueError("linger must be >= 0")
        if max_batch_records < 1 or max_in_flight < 1:
            raise ValueError("max_batch_records and max_in_flight must be >= 1")
        if not 1024 <= max_batch_bytes <= _wire.MAX_FRAME_BYTES:
            raise ValueError("max_batch_bytes must be in 1024..%d" % _wire.MAX_FRAME_BYTES)
        if max_queued_records < 1 or max_queued_bytes < 1:
            raise ValueError("max_queued_records and max_queued_bytes must be >= 1")
        if reconnect_backoff <= 0 or max_reconnect_backoff < reconnect_backoff:
            raise ValueError("0 < reconnect_backoff <= max_reconnect_backoff")
        self.socket_path = socket_path
        self._linger = linger
        self._max_batch_records = max_batch_records
        self._max_batch_bytes = max_batch_bytes
        self._max_in_flight = max_in_flight
        self._max_q_records = max_queued_records
        self._max_q_bytes = max_queued_bytes
        self._block = block_when_full
        self._backoff0 = reconnect_backoff
        self._backoff_max = max_reconnect_backoff
        self._backoff = reconnect_backoff
        self._next_connect = 0.0
        self._tails = {None: _wire.request_tail(True, None)}
        if stream is not None:
            self._tails[stream] = _wire.request_tail(True, check_stream(stream))
        self._stream = stream

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the writer waits on it
        self._space = threading.Condition(self._lock)  # blocked puts wait on it
        self._open = {}  # stream -> batch still taking records
        self._ready = deque()  # batches to write, in order
        self._pending = {}  # every unfinished batch, oldest first (a set with order)
        self._conn = None
        self._readers = []
        self._closed = False  # no more puts
        self._stopping = False  # the threads end
        self._urgent = 0  # flushes under way: open batches go without lingering
        self._writer_waiting = False
        self._space_waiters = 0
        self._out_records = 0
        self._out_bytes = 0
        self._acked = 0
        self._failed = 0
        self._in_doubt = 0
        self._writer = threading.Thread(target=self._write_loop, name="shardline-writer", daemon=True)
        self._writer.start()

    # ----- the caller's side

    def put(self, data, partition_key=None, explicit_hash_key=None, stream=None, record_id=None):
        """Queues one record; returns its RecordFuture. Raises InvalidRecord or
        RecordTooLarge at once for a record the agent would refuse, QueueFull when the
        queue is full and block_when_full is False, Closed after close."""
        if (
            partition_key is None
            and explicit_hash_key is None
            and record_id is None
            and type(data) is bytes
            and len(data) < FAST_DATA_BYTES
        ):
            entry = encode_plain(data)
        else:
            entry = encode_record(data, partition_key, explicit_hash_key, record_id)
        if stream is None:
            stream = self._stream
        tail = self._tails.get(stream)
        if tail is None:
            tail = _wire.request_tail(True, check_stream(stream))
            self._tails[stream] = tail
        size = len(entry)
        fut = RecordFuture()
        with self._lock:
            if self._closed:
                raise Closed("the producer is closed")
            if self._out_records >= self._max_q_records or (
                self._out_bytes + size > self._max_q_bytes and self._out_records
            ):
                self._wait_for_space(size)
            self._out_records += 1
            self._out_bytes += size
            b = self._open.get(stream)
            if b is None or b.nbytes + size > b.limit:
                if b is not None:
                    self._ready.append(b)
                b = _Batch(stream, tail, self._max_batch_bytes - _FRAME_OVERHEAD - len(tail), self._lock)
                self._open[stream] = b
                self._pending[b] = None
                if self._writer_waiting:
                    self._wake.notify()
            b.entries.append(entry)
            b.nbytes += size
            if len(b.entries) >= self._max_batch_records or b.nbytes >= b.limit:
                del self._open[stream]
                self._ready.append(b)
                if self._writer_waiting:
                    self._wake.notify()
            fut._batch = b
        return fut

    def _wait_for_space(self, size):
        """With the lock held: waits until the record fits the queue bound."""
        if not self._block or threading.current_thread() in self._readers:
            raise QueueFull(
                "queue full: %d records, %d bytes outstanding" % (self._out_records, self._out_bytes)
            )
        self._space_waiters += 1
        try:
            while self._out_records >= self._max_q_records or (
                self._out_bytes + size > self._max_q_bytes and self._out_records
            ):
                if self._closed:
                    raise Closed("the producer is closed")
                # Whatever waits in open batches goes now: nothing else frees room.
                self._urgent += 1
                if self._writer_waiting:
                    self._wake.notify()
                try:
                    self._space.wait()
                finally:
                    self._urgent -= 1
        finally:
            self._space_waiters -= 1
        if self._closed:
            raise Closed("the producer is closed")

    def flush(self, timeout=None):
        """Waits until every record put before this call has its outcome (acknowledged
        or failed). Returns False if `timeout` seconds passed first, else True."""
        deadline = None if timeout is None else _monotonic() + timeout
        with self._lock:
            batches = list(self._pending)
            if not batches:
                return True
            self._urgent += 1
            if self._writer_waiting:
                self._wake.notify()
        try:
            for b in batches:
                if b.state != PENDING:
                    continue
                left = None if deadline is None else max(0.0, deadline - _monotonic())
                if not b.event.wait(left):
                    return False
            return True
        finally:
            with self._lock:
                self._urgent -= 1

    def close(self, timeout=None):
        """Stops new puts, waits (up to `timeout` seconds; None: as long as it takes)
        for every record's outcome, then closes the connection. Records still without
        one fail: Closed if they were never written (or the agent refused them while
        shutting down), ConnectionLost (in doubt) if they were written. Returns True if
        every record had its outcome before the timeout."""
        with self._lock:
            already = self._stopping
            self._closed = True
            self._space.notify_all()
            if self._writer_waiting:
                self._wake.notify()
        if already:
            return not self._pending
        everything = self.flush(timeout)
        finished = []
        with self._lock:
            self._stopping = True
            conn = self._conn
            inflight = set(conn.inflight) if conn is not None and not conn.dead else ()
            err = Closed("the producer was closed before the record was sent")
            for b in list(self._pending):
                if b not in inflight:
                    self._finish(b, err, finished)
            self._open.clear()
            self._ready.clear()
            self._wake.notify_all()
        self._complete(finished)
        if conn is not None:
            # Nothing more to write: the agent answers what it owes, then closes.
            _shutdown(conn.sock, socket.SHUT_WR if everything else socket.SHUT_RDWR)
            if conn.reader is not None:
                conn.reader.join(2.0)
            _shutdown(conn.sock)
        self._writer.join()
        for t in list(self._readers):
            t.join()
        return everything

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----- counters

    @property
    def outstanding_records(self):
        """Records put and not yet answered (acknowledged or failed)."""
        return self._out_records

    @property
    def outstanding_bytes(self):
        return self._out_bytes

    @property
    def acknowledged_records(self):
        """Records the agent acknowledged (durable in its spool), in all."""
        return self._acked

    @property
    def failed_records(self):
        """Records that failed (any error, in doubt or not), in all."""
        return self._failed

    @property
    def in_doubt_records(self):
        """Records that failed in doubt (written, no answer; or INTERNAL), in all."""
        return self._in_doubt

    def stats(self):
        """The counters as one dict, read together."""
        with self._lock:
            return {
                "outstanding_records": self._out_records,
                "outstanding_bytes": self._out_bytes,
                "acknowledged_records": self._acked,
                "failed_records": self._failed,
                "in_doubt_records": self._in_doubt,
                "connected": self._conn is not None and not self._conn.dead,
            }

    # ----- completion (lock held for _finish; _complete after releasing it)

    def _finish(self, b, error, finished):
        if b.state != PENDING:
            return
        del self._pending[b]
        n = len(b.entries)
        self._out_records -= n
        self._out_bytes -= b.nbytes
        if error is None:
            self._acked += n
            b.state = SUCCEEDED
        else:
            self._failed += n
            if error.in_doubt:
                self._in_doubt += n
            b.error = error
            b.state = FAILED
        b.entries = ()
        finished.append((b, b.callbacks))
        b.callbacks = None
        if self._space_waiters:
            self._space.notify_all()

    @staticmethod
    def _complete(finished):
        for b, callbacks in finished:
            b.event.set()
            if callbacks:
                run_callbacks(callbacks)

    # ----- the writer thread

    def _promote(self, now, room):
        """Moves open batches whose linger passed (all of them when urgent) to the
        ready queue, while that leaves frames to fill `room`. Returns the time the next
        open batch is due, or None."""
        due = None
        if not self._open:
            return None
        force = self._urgent or self._closed
        linger = self._linger
        for stream, b in list(self._open.items()):
            at = b.created + linger
            if (force or at <= now) and len(self._ready) < room:
                del self._open[stream]
                self._ready.append(b)
            elif due is None or at < due:
                due = at
        return due

    def _write_loop(self):
        lock = self._lock
        while True:
            with lock:
                while True:
                    if self._stopping:
                        return
                    conn = self._conn
                    now = _monotonic()
                    if conn is None:
                        if self._ready or self._open:
                            wait = self._next_connect - now
                            if wait <= 0:
                                batches = None
                                break
                        else:
                            wait = None
                    elif conn.draining:
                        wait = None
                    else:
                        room = self._max_in_flight - len(conn.inflight)
                        wait = None
                        if room > 0:
                            due = self._promote(now, room)
                            if self._ready:
                                batches = []
                                ready = self._ready
                                while ready and len(batches) < room:
                                    b = ready.popleft()
                                    conn.next_id += 1
                                    b.id = conn.next_id
                                    batches.append(b)
                                conn.inflight.extend(batches)
                                conn.writing = True
                                break
                            if due is not None:
                                wait = max(due - now, 0.0005)
                    self._writer_waiting = True
                    self._wake.wait(wait)
                    self._writer_waiting = False
            if batches is None:
                self._connect()
                continue
            encode = _wire.encode_frame
            data = b"".join([encode(b.id, b.entries, b.nbytes, b.tail) for b in batches])
            failed = False
            try:
                conn.sock.sendall(data)
            except OSError as e:
                log.debug("writing to %s failed: %s", self.socket_path, e)
                failed = True
            with lock:
                conn.writing = False
                close = conn.dead
                # A draining connection closed its own side: its reader still takes
                # what the agent owes.
                if failed and not close and not conn.draining:
                    _shutdown(conn.sock)
            if close:
                conn.sock.close()

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            with self._lock:
                self._retry_later()
            log.debug("connecting to %s failed: %s", self.socket_path, e)
            return
        conn = _Conn(sock)
        with self._lock:
            if self._stopping:
                sock.close()
                return
            self._conn = conn
            reader = threading.Thread(
                target=self._read_loop, args=(conn,), name="shardline-reader", daemon=True
            )
            conn.reader = reader
            self._readers.append(reader)
        log.debug("connected to %s", self.socket_path)
        reader.start()

    def _retry_later(self):
        """With the lock held: the next connection attempt waits the jittered backoff,
        which doubles."""
        self._next_connect = _monotonic() + self._backoff * random.uniform(0.5, 1.0)
        self._backoff = min(self._backoff * 2, self._backoff_max)

    # ----- the reader thread

    def _read_loop(self, conn):
        sock = conn.sock
        reader = _wire.ResponseReader()
        recv = sock.recv
        try:
            while True:
                data = recv(_READ_BYTES)
                if not data:
                    break
                items = reader.feed(data)
                if items and not self._answered(conn, items):
                    break
        except _wire.FrameError as e:
            log.warning("unreadable answer from %s: %s", self.socket_path, e)
        except OSError as e:
            log.debug("reading from %s failed: %s", self.socket_path, e)
        finally:
            self._ended(conn)
            with self._lock:
                self._readers.remove(threading.current_thread())

    def _answered(self, conn, items):
        """Resolves the frames these answers are for; False when the connection must
        end (an answer that matches no frame)."""
        finished = []
        go_on = True
        with self._lock:
            inflight = conn.inflight
            for resp in items:
                if isinstance(resp, _wire.FrameError) or not inflight:
                    log.warning(
                        "unexpected answer from %s: %s", self.socket_path, resp
                    )
                    go_on = False
                    break
                b = inflight[0]
                if resp.id != b.id and resp.id != 0:
                    log.warning(
                        "answer %d from %s does not match request %d", resp.id, self.socket_path, b.id
                    )
                    go_on = False
                    break
                inflight.popleft()
                code = resp.status_code
                if code == _wire.OK:
                    if not conn.acked:
                        conn.acked = True
                        self._backoff = self._backoff0
                    self._finish(b, None, finished)
                elif code == _wire.SHUTTING_DOWN:
                    conn.requeue.append(b)
                    if not conn.draining:
                        conn.draining = True
                        log.info("%s is shutting down; reconnecting", self.socket_path)
                        _shutdown(conn.sock, socket.SHUT_WR)
                else:
                    self._finish(b, _agent_error(resp), finished)
            if self._writer_waiting:
                self._wake.notify()
        if not go_on:
            _shutdown(conn.sock)
        self._complete(finished)
        return go_on

    def _ended(self, conn):
        """The connection is over: what the agent refused while shutting down goes back
        to the front of the queue, what it never answered fails in doubt."""
        finished = []
        with self._lock:
            conn.dead = True
            if self._conn is conn:
                self._conn = None
            requeue = conn.requeue
            lost = list(conn.inflight)
            conn.inflight.clear()
            for b in reversed(requeue):
                b.id = 0
                if self._stopping:
                    self._finish(b, Closed("the producer was closed before the record was sent"), finished)
                else:
                    self._ready.appendleft(b)
            if lost:
                err = ConnectionLost(
                    "the connection to %s ended before the agent answered" % self.socket_path
                )
                for b in lost:
                    self._finish(b, err, finished)
            if requeue or lost or not conn.acked:
                self._retry_later()
            else:
                self._next_connect = 0.0
            close = not conn.writing
            self._wake.notify_all()
        if close:
            conn.sock.close()
        else:
            _shutdown(conn.sock)  # the writer is inside sendall: it fails, then closes it
        if lost:
            log.warning(
                "connection to %s lost with %d frames unanswered (in doubt)", self.socket_path, len(lost)
            )
        self._complete(finished)
