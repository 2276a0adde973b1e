# Record validation and encoding beyond the shared vectors: the put fast path, Python
# types, and the varint table.
import re

import pytest

from shardline import InvalidRecord, RecordTooLarge, random_partition_key
from shardline._records import (
    FAST_DATA_BYTES,
    MAX_RECORD_BYTES,
    check_stream,
    encode_plain,
    encode_record,
)
from shardline._wire import _varint_slow, varint
from fakeagent import decode_request


def _decode_entry(entry):
    # A record entry is a field-2 entry of a Request: decode it as one.
    return decode_request(entry).records[0]


@pytest.mark.parametrize("n", [0, 1, 106, 107, 108, 127, 128, 256, 1000, FAST_DATA_BYTES - 1])
def test_fast_path_matches_the_general_encoder(n):
    entry = encode_plain(b"x" * n)
    rec = _decode_entry(entry)
    assert re.fullmatch("[0-9a-f]{16}", rec.partition_key)
    assert rec.data == b"x" * n
    assert entry == encode_record(b"x" * n, rec.partition_key)


def test_random_partition_keys_are_16_hex_digits_and_differ():
    keys = {random_partition_key() for _ in range(1000)}
    assert len(keys) > 990
    assert all(re.fullmatch("[0-9a-f]{16}", k) for k in keys)
    keys = {_decode_entry(encode_record(b"d")).partition_key for _ in range(100)}
    assert len(keys) > 90


def test_data_types():
    for data in (b"abc", bytearray(b"abc"), memoryview(b"abc"), "abc"):
        assert _decode_entry(encode_record(data, "k")).data == b"abc"
    assert _decode_entry(encode_record("é", "k")).data == "é".encode()
    with pytest.raises(TypeError):
        encode_record(123, "k")


def test_fields_round_trip():
    rec = _decode_entry(encode_record(b"d", "ключ", "12345", "id-1:2.3_4"))
    assert (rec.partition_key, rec.explicit_hash_key, rec.data, rec.record_id) == (
        "ключ",
        "12345",
        b"d",
        "id-1:2.3_4",
    )


def test_explicit_hash_key_as_int():
    assert _decode_entry(encode_record(b"d", "k", 2**128 - 1)).explicit_hash_key == str(2**128 - 1)
    for bad in (-1, 2**128, True, 1.5):
        with pytest.raises(InvalidRecord):
            encode_record(b"d", "k", bad)


def test_explicit_hash_key_edge_cases():
    for good in ("0", "0" * 5000, "0" * 100 + "340282366920938463463374607431768211455"):
        encode_record(b"d", "k", good)
    for bad in ("1" * 5000, "1\n", "١", "²", "1_000"):
        with pytest.raises(InvalidRecord):
            encode_record(b"d", "k", bad)


def test_partition_key_counts_code_points():
    encode_record(b"d", "\U0001F600" * 256)  # 256 code points, 512 UTF-16 units, 1024 bytes
    with pytest.raises(InvalidRecord):
        encode_record(b"d", "\U0001F600" * 257)
    with pytest.raises(InvalidRecord):
        encode_record(b"d", "\ud800")  # a lone surrogate has no UTF-8
    with pytest.raises(InvalidRecord):
        encode_record(b"d", b"bytes-key")


def test_record_id_rules():
    with pytest.raises(InvalidRecord):
        encode_record(b"d", "k", record_id="abc\n")
    with pytest.raises(InvalidRecord):
        encode_record(b"d", "k", record_id=5)


def test_size_limit_counts_the_key_bytes():
    encode_record(b"\0" * (MAX_RECORD_BYTES - 3), "\u0436" + "k")
    with pytest.raises(RecordTooLarge) as e:
        encode_record(b"\0" * (MAX_RECORD_BYTES - 2), "\u0436" + "k")
    assert e.value.status is None and not e.value.in_doubt
    # A random key counts too (16 bytes).
    with pytest.raises(RecordTooLarge):
        encode_record(b"\0" * (MAX_RECORD_BYTES - 15))


def test_fault_order_matches_the_agent():
    # The agent checks the record id, the hash key, the partition key, then the size.
    with pytest.raises(InvalidRecord):
        encode_record(b"\0" * (MAX_RECORD_BYTES + 1), "", "x")
    with pytest.raises(InvalidRecord):
        encode_record(b"\0" * (MAX_RECORD_BYTES + 1), "k", record_id="")


def test_stream_names():
    assert check_stream("audit") == b"audit"
    for bad in ("", None, b"audit"):
        with pytest.raises(InvalidRecord):
            check_stream(bad)


def test_varints():
    for n in (0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**64 - 1):
        assert varint(n) == _varint_slow(n)
    assert varint(2**64 - 1) == b"\xff" * 9 + b"\x01"
    assert varint(300) == b"\xac\x02"
