# A scripted stand-in for the agent's framed socket, for the producer's unit tests:
# decodes requests, answers them as a test says, can hold answers or drop connections.
import os
import socket
import struct
import threading

from shardline import _wire


class Record:
    __slots__ = ("partition_key", "explicit_hash_key", "data", "record_id")

    def __init__(self):
        self.partition_key = ""
        self.explicit_hash_key = None
        self.data = b""
        self.record_id = None


class Request:
    __slots__ = ("id", "records", "ack", "stream", "conn")

    def __init__(self):
        self.id = 0
        self.records = []
        self.ack = False
        self.stream = None
        self.conn = 0


def _fields(buf):
    """(field number, wire type, value) of each field of a message: an int for a
    varint, bytes for a length-delimited field."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _wire._read_varint(buf, pos, end)
        tag, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _wire._read_varint(buf, pos, end)
        elif wt == 2:
            n, pos = _wire._read_varint(buf, pos, end)
            v = bytes(buf[pos : pos + n])
            pos += n
        elif wt == 1:
            v, pos = buf[pos : pos + 8], pos + 8
        elif wt == 5:
            v, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError("wire type %d" % wt)
        yield tag, wt, v


def decode_request(body):
    """A Request message (what follows the version byte)."""
    req = Request()
    for tag, _, v in _fields(body):
        if tag == 1:
            req.id = v
        elif tag == 2:
            rec = Record()
            for t, _, rv in _fields(v):
                if t == 1:
                    rec.partition_key = rv.decode("utf-8")
                elif t == 2:
                    rec.explicit_hash_key = rv.decode("ascii")
                elif t == 3:
                    rec.data = rv
                elif t == 4:
                    rec.record_id = rv.decode("ascii")
            req.records.append(rec)
        elif tag == 3:
            req.ack = bool(v)
        elif tag == 4:
            req.stream = v.decode("utf-8")
    return req


def _recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            return None
        out += chunk
    return bytes(out)


class FakeAgent:
    """Listens on `path`. `answer(request)` returns the Response to send (None: OK for
    all its records), "close" to drop the connection once the answers before it went
    out, or "silent" to answer nothing. While `hold` is set, answers wait (frames are
    still read). Every request read is kept in `requests`, in order."""

    def __init__(self, path, answer=None):
        self.path = path
        self.answer = answer
        self.requests = []
        self.connections = 0
        self.hold = threading.Event()
        self._released = threading.Condition()
        self._socks = []
        self._lock = threading.Lock()
        self._stop = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self):
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                n = self.connections
                self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock, n), daemon=True).start()

    def _serve(self, sock, n):
        # Reads on, whatever the answers wait for: answers go out in order from their
        # own thread, so a held connection still takes every frame the client writes.
        answers = []
        cond = threading.Condition()
        done = [False]
        writer = threading.Thread(target=self._answer, args=(sock, answers, cond, done), daemon=True)
        writer.start()
        try:
            while True:
                head = _recv_exact(sock, 4)
                if head is None:
                    break
                (length,) = struct.unpack(">I", head)
                body = _recv_exact(sock, length)
                if body is None:
                    break
                assert body[0] == 1, "version byte"
                req = decode_request(body[1:])
                req.conn = n
                with self._lock:
                    self.requests.append(req)
                resp = self.answer(req) if self.answer else None
                if resp == "silent":
                    continue
                if resp is None:
                    resp = _wire.Response(req.id, 0, "", len(req.records))
                with cond:
                    answers.append(resp)
                    cond.notify()
                if resp == "close":
                    break
        except OSError:
            pass
        finally:
            with cond:
                done[0] = True
                cond.notify()
            writer.join()
            try:
                sock.close()
            except OSError:
                pass

    def _answer(self, sock, answers, cond, done):
        """Sends the answers in order (an agent answers what it owes, then closes)."""
        try:
            while True:
                with cond:
                    while not answers and not done[0]:
                        cond.wait()
                    if not answers:
                        break
                    resp = answers.pop(0)
                if resp == "close":
                    sock.shutdown(socket.SHUT_RDWR)
                    return
                with self._released:
                    while self.hold.is_set() and not self._stop:
                        self._released.wait(0.05)
                sock.sendall(_wire.encode_response(resp))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def release(self):
        self.hold.clear()
        with self._released:
            self._released.notify_all()

    def drop_connections(self):
        """Closes every open connection at once (a crash, as the client sees it)."""
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def records(self):
        with self._lock:
            return [r for q in self.requests for r in q.records]

    def close(self):
        self._stop = True
        self.release()
        try:
            self.listener.close()
        except OSError:
            pass
        self.drop_connections()
        try:
            os.unlink(self.path)
        except OSError:
            pass
