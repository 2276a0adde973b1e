# The framed protocol's wire, version 1: varints, request frames and response decoding,
# written by hand so that frames are byte-identical to what the agent's prost produces.
import struct

VERSION = 1
#: Longest frame (what follows the length prefix) either side accepts.
MAX_FRAME_BYTES = 16 * 1024 * 1024
HEADER_BYTES = 4

#: Response status names by code.
STATUS_NAMES = (
    "OK",
    "INVALID_RECORD",
    "RECORD_TOO_LARGE",
    "SPOOL_FULL",
    "SHUTTING_DOWN",
    "BAD_FRAME",
    "INTERNAL",
)
OK, INVALID_RECORD, RECORD_TOO_LARGE, SPOOL_FULL, SHUTTING_DOWN, BAD_FRAME, INTERNAL = range(7)

_U64 = (1 << 64) - 1
_pack_u32 = struct.Struct(">I").pack
_unpack_u32 = struct.Struct(">I").unpack_from


def _varint_slow(n):
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: Varints of 0..16383 (one or two bytes), looked up rather than computed.
VARINT_TABLE = tuple(_varint_slow(n) for n in range(1 << 14))


def varint(n):
    """The protobuf varint of a non-negative integer below 2**64."""
    if n < 16384:
        return VARINT_TABLE[n]
    return _varint_slow(n)


def length_delimited(tag_byte, payload):
    """One length-delimited field (key byte, length, payload) for a field number < 16."""
    n = len(payload)
    return b"".join((tag_byte, VARINT_TABLE[n] if n < 16384 else _varint_slow(n), payload))


_ACK_TRUE = b"\x18\x01"


def stream_field(stream_bytes):
    """Request field 4 (`stream`), or b"" for the socket's own stream."""
    if stream_bytes is None:
        return b""
    return length_delimited(b"\x22", stream_bytes)


def encode_frame(req_id, entries, entries_len, tail):
    """A whole request frame (length prefix included).

    `entries`: the encoded records (each a field-2 entry, see `_records.encode_record`),
    `entries_len` their total length, `tail` the encoded ack and stream fields.
    """
    if req_id:
        id_part = b"\x08" + (VARINT_TABLE[req_id] if req_id < 16384 else _varint_slow(req_id))
    else:
        id_part = b""
    length = 1 + len(id_part) + entries_len + len(tail)
    parts = [_pack_u32(length), b"\x01", id_part]
    parts.extend(entries)
    parts.append(tail)
    return b"".join(parts)


def request_tail(ack, stream_bytes):
    """The fields after the records: ack (3) and stream (4)."""
    return (_ACK_TRUE if ack else b"") + stream_field(stream_bytes)


class Response:
    """The agent's answer to one request."""

    __slots__ = ("id", "status_code", "message", "records")

    def __init__(self, id=0, status_code=0, message="", records=0):
        self.id = id
        self.status_code = status_code
        self.message = message
        self.records = records

    @property
    def status(self):
        """The status name, or None for a code this client does not know."""
        c = self.status_code
        return STATUS_NAMES[c] if 0 <= c < len(STATUS_NAMES) else None

    def __eq__(self, other):
        return isinstance(other, Response) and (
            self.id,
            self.status_code,
            self.message,
            self.records,
        ) == (other.id, other.status_code, other.message, other.records)

    def __repr__(self):
        return "Response(id=%d, status=%s, message=%r, records=%d)" % (
            self.id,
            self.status or self.status_code,
            self.message,
            self.records,
        )


class FrameError(Exception):
    """A frame that cannot be read. `kind`: too_large, empty, version or protobuf;
    `fatal`: the stream cannot be read past it (the connection must close)."""

    def __init__(self, kind, message, fatal=False):
        super().__init__(message)
        self.kind = kind
        self.fatal = fatal


def _protobuf(message):
    return FrameError("protobuf", "frame is not a valid protobuf message: " + message)


def _read_varint(buf, pos, end):
    """(value, new position) of the varint at `pos`; as prost: at most 10 bytes, and
    the tenth may only be 0 or 1."""
    result = 0
    shift = 0
    for count in range(10):
        if pos >= end:
            raise _protobuf("invalid varint")
        b = buf[pos]
        pos += 1
        if b < 0x80:
            if count == 9 and b >= 0x02:
                raise _protobuf("invalid varint")
            return result | (b << shift), pos
        result |= (b & 0x7F) << shift
        shift += 7
    raise _protobuf("invalid varint")


_RECURSION_LIMIT = 100


def _skip_field(buf, pos, end, wire_type, tag, depth):
    if wire_type == 0:
        _, pos = _read_varint(buf, pos, end)
        return pos
    if wire_type == 1:
        n = 8
    elif wire_type == 5:
        n = 4
    elif wire_type == 2:
        n, pos = _read_varint(buf, pos, end)
    elif wire_type == 3:
        if depth >= _RECURSION_LIMIT:
            raise _protobuf("recursion limit reached")
        while True:
            inner_tag, inner_type, pos = _read_key(buf, pos, end)
            if inner_type == 4:
                if inner_tag != tag:
                    raise _protobuf("unexpected end group tag")
                return pos
            pos = _skip_field(buf, pos, end, inner_type, inner_tag, depth + 1)
    else:  # an end group without its start
        raise _protobuf("unexpected end group tag")
    if n > end - pos:
        raise _protobuf("buffer underflow")
    return pos + n


def _read_key(buf, pos, end):
    key, pos = _read_varint(buf, pos, end)
    if key > 0xFFFFFFFF:
        raise _protobuf("invalid key value: %d" % key)
    wire_type = key & 7
    if wire_type > 5:
        raise _protobuf("invalid wire type value: %d" % wire_type)
    tag = key >> 3
    if tag < 1:
        raise _protobuf("invalid tag value: 0")
    return tag, wire_type, pos


def _check_wire_type(expected, got):
    if expected != got:
        raise _protobuf("invalid wire type: %d (expected %d)" % (got, expected))


def decode_response_body(buf, pos=0, end=None):
    """Decodes a Response message (what follows the version byte)."""
    if end is None:
        end = len(buf)
    resp = Response()
    while pos < end:
        tag, wire_type, pos = _read_key(buf, pos, end)
        if tag == 1:
            _check_wire_type(0, wire_type)
            resp.id, pos = _read_varint(buf, pos, end)
        elif tag == 2:
            _check_wire_type(0, wire_type)
            v, pos = _read_varint(buf, pos, end)
            v &= 0xFFFFFFFF  # an enum is an int32 on the wire, as prost reads it
            resp.status_code = v - (1 << 32) if v >= 1 << 31 else v
        elif tag == 3:
            _check_wire_type(2, wire_type)
            n, pos = _read_varint(buf, pos, end)
            if n > end - pos:
                raise _protobuf("buffer underflow")
            try:
                resp.message = bytes(buf[pos : pos + n]).decode("utf-8")
            except UnicodeDecodeError:
                raise _protobuf("invalid string value: data is not UTF-8 encoded") from None
            pos += n
        elif tag == 4:
            _check_wire_type(0, wire_type)
            v, pos = _read_varint(buf, pos, end)
            resp.records = v & 0xFFFFFFFF
        else:
            pos = _skip_field(buf, pos, end, wire_type, tag, 0)
    return resp


def frame_length(buf, pos=0):
    """The length prefix at `pos`, checked: FrameError when over the limit (fatal)."""
    (n,) = _unpack_u32(buf, pos)
    if n > MAX_FRAME_BYTES:
        raise FrameError(
            "too_large",
            "frame of %d bytes exceeds the %d-byte frame limit" % (n, MAX_FRAME_BYTES),
            fatal=True,
        )
    return n


def decode_frame_body(buf, pos, n):
    """Decodes the response whose frame body (version byte and message, `n` bytes)
    starts at `pos`."""
    if n == 0:
        raise FrameError("empty", "empty frame")
    version = buf[pos]
    if version != VERSION:
        raise FrameError(
            "version",
            "unsupported protocol version %d (this client speaks %d)" % (version, VERSION),
        )
    return decode_response_body(buf, pos + 1, pos + n)


def decode_response_frame(frame):
    """Decodes one whole frame (length prefix included) holding a Response."""
    if len(frame) < HEADER_BYTES:
        raise _protobuf("frame shorter than its length prefix")
    n = frame_length(frame)
    if len(frame) != HEADER_BYTES + n:
        raise _protobuf("frame of %d bytes holds %d" % (n, len(frame) - HEADER_BYTES))
    return decode_frame_body(frame, HEADER_BYTES, n)


class ResponseReader:
    """Splits a byte stream into responses. `feed` returns the answers completed so far
    as (response or FrameError) items; a fatal FrameError is raised instead."""

    __slots__ = ("_buf",)

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data):
        buf = self._buf
        buf += data
        out = []
        pos = 0
        size = len(buf)
        while size - pos >= HEADER_BYTES:
            n = frame_length(buf, pos)
            if size - pos - HEADER_BYTES < n:
                break
            start = pos + HEADER_BYTES
            pos = start + n
            try:
                out.append(decode_frame_body(buf, start, n))
            except FrameError as e:
                out.append(e)
        if pos:
            del buf[:pos]
        return out

    def pending(self):
        """Bytes held of a frame not yet complete."""
        return len(self._buf)


def encode_response(resp):
    """A whole response frame, canonical (as the agent writes it); for tests."""
    parts = []
    if resp.id:
        parts.append(b"\x08" + varint(resp.id))
    if resp.status_code:
        parts.append(b"\x10" + varint(resp.status_code & _U64))
    if resp.message:
        parts.append(length_delimited(b"\x1a", resp.message.encode("utf-8")))
    if resp.records:
        parts.append(b"\x20" + varint(resp.records))
    body = b"\x01" + b"".join(parts)
    return _pack_u32(len(body)) + body
