# Client-side record validation (the agent's rules) and each record's encoding as a
# Request's field-2 entry, done once when the record is put.
import re
from random import getrandbits

from ._wire import VARINT_TABLE, _varint_slow
from .errors import InvalidRecord, RecordTooLarge

MAX_PARTITION_KEY_CHARS = 256
#: Data plus UTF-8 partition key, at most (the largest record a stream takes).
MAX_RECORD_BYTES = 10 * 1024 * 1024
MAX_RECORD_ID_CHARS = 64
_MAX_HASH_KEY = (1 << 128) - 1
_RECORD_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def random_partition_key():
    """A random partition key of 16 hex digits, as the agent gives records without one."""
    return "%016x" % getrandbits(64)


def _excerpt(value, limit=64):
    return value if len(value) <= limit else value[:limit] + "…"


def check_partition_key(key):
    """The key's UTF-8 bytes, or InvalidRecord."""
    if not isinstance(key, str):
        raise InvalidRecord("partition key must be a str, not %s" % type(key).__name__)
    if not key:
        raise InvalidRecord("empty partition key")
    if len(key) > MAX_PARTITION_KEY_CHARS:
        raise InvalidRecord(
            "partition key of %d characters exceeds the %d-character Kinesis limit"
            % (len(key), MAX_PARTITION_KEY_CHARS)
        )
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRecord("partition key is not valid Unicode (lone surrogate)") from None


def check_explicit_hash_key(value):
    """The key's ASCII bytes, or InvalidRecord: decimal digits only, 0..2**128-1."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= _MAX_HASH_KEY:
            raise InvalidRecord("explicit hash key %d is not in 0..2^128-1" % value)
        return str(value).encode("ascii")
    if not isinstance(value, str):
        raise InvalidRecord(
            "explicit hash key must be a str of decimal digits, not %s" % type(value).__name__
        )
    if not value or not value.isascii() or not value.isdigit():
        raise InvalidRecord("invalid explicit hash key %r: decimal digits only" % _excerpt(value))
    significant = value.lstrip("0")
    if len(significant) > 39 or (significant and int(significant) > _MAX_HASH_KEY):
        raise InvalidRecord("explicit hash key %r is not in 0..2^128-1" % _excerpt(value))
    return value.encode("ascii")


def check_record_id(value):
    """The id's ASCII bytes, or InvalidRecord: 1..64 ASCII letters, digits and -._:"""
    if not isinstance(value, str):
        raise InvalidRecord("record id must be a str, not %s" % type(value).__name__)
    if _RECORD_ID.fullmatch(value) is None:
        if not value or len(value) > MAX_RECORD_ID_CHARS:
            raise InvalidRecord("record id of %d characters is not 1 to 64" % len(value))
        raise InvalidRecord(
            "record id %r: ids are ASCII letters, digits and -._:" % _excerpt(value)
        )
    return value.encode("ascii")


def check_stream(value):
    """The stream name's UTF-8 bytes, or InvalidRecord: a non-empty str."""
    if not isinstance(value, str):
        raise InvalidRecord("stream must be a str, not %s" % type(value).__name__)
    if not value:
        raise InvalidRecord("empty stream name")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRecord("stream name is not valid Unicode (lone surrogate)") from None


def _data_bytes(data):
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError("data must be bytes-like or str, not %s" % type(data).__name__)


def encode_record(data, partition_key=None, explicit_hash_key=None, record_id=None):
    """Validates one record and returns its encoding as a Request's field-2 entry
    (key byte, length, Record message). Checks run in the agent's order, so a record
    with several faults gets the status the agent would answer."""
    data = _data_bytes(data)
    rid = None if record_id is None else check_record_id(record_id)
    ehk = None if explicit_hash_key is None else check_explicit_hash_key(explicit_hash_key)
    if partition_key is None:
        pk = b"%016x" % getrandbits(64)
    else:
        pk = check_partition_key(partition_key)
    n = len(data)
    npk = len(pk)
    if n + npk > MAX_RECORD_BYTES:
        raise RecordTooLarge(
            "record of %d bytes (data and partition key) exceeds the %d-byte limit"
            % (n + npk, MAX_RECORD_BYTES)
        )
    parts = [b"\x12", b"", b"\x0a", VARINT_TABLE[npk], pk]
    if ehk is not None:
        parts += (b"\x12", VARINT_TABLE[len(ehk)], ehk)
    if n:
        parts += (b"\x1a", VARINT_TABLE[n] if n < 16384 else _varint_slow(n), data)
    if rid is not None:
        parts += (b"\x22", VARINT_TABLE[len(rid)], rid)
    body = sum(map(len, parts)) - 1  # less the entry's own key byte
    parts[1] = VARINT_TABLE[body] if body < 16384 else _varint_slow(body)
    return b"".join(parts)


#: Data shorter than this has a record entry whose length varint is in the table.
FAST_DATA_BYTES = 16384 - 21


def encode_plain(data, _getrandbits=getrandbits, _table=VARINT_TABLE, _join=b"".join):
    """encode_record for the common case (bytes data of fewer than FAST_DATA_BYTES,
    random partition key, no other field): the put fast path."""
    pk = b"%016x" % _getrandbits(64)
    n = len(data)
    if n:
        return _join((b"\x12", _table[20 + n if n < 128 else 21 + n], b"\x0a\x10", pk, b"\x1a", _table[n], data))
    return _join((b"\x12\x12\x0a\x10", pk))
