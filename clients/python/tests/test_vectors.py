# The shared protocol vectors (clients/vectors/protocol.json): request frames encode
# byte for byte, responses decode, bad frames and invalid records are refused.
import pytest

from shardline import InvalidRecord, RecordTooLarge, _wire
from shardline._records import check_stream, encode_record


def _record_args(rec):
    data = bytes.fromhex(rec["data"]) if "data" in rec else b"\0" * rec["data_len"]
    return dict(
        data=data,
        partition_key=rec["partition_key"],
        explicit_hash_key=rec.get("explicit_hash_key"),
        record_id=rec.get("record_id"),
    )


def _encode_request(req):
    entries = [encode_record(**_record_args(r)) for r in req["records"]]
    stream = req.get("stream")
    tail = _wire.request_tail(req["ack"], None if stream is None else check_stream(stream))
    return _wire.encode_frame(int(req["id"]), entries, sum(map(len, entries)), tail)


def test_vectors_cover_every_section(vectors):
    for section in ("requests", "responses", "bad_frames", "invalid_records", "valid_records"):
        assert vectors[section], section


def test_requests_encode_to_their_frames(vectors):
    for v in vectors["requests"]:
        assert _encode_request(v["request"]).hex() == v["frame"], v["name"]


def _expected(resp):
    return _wire.Response(int(resp["id"]), resp["status_code"], resp["message"], resp["records"])


def test_responses_decode(vectors):
    for v in vectors["responses"]:
        frame = bytes.fromhex(v["frame"])
        got = _wire.decode_response_frame(frame)
        want = v["response"]
        assert got == _expected(want), v["name"]
        assert got.status == want["status"], v["name"]
        if v["canonical"]:
            assert _wire.encode_response(got) == frame, v["name"]


def test_responses_decode_from_a_stream_cut_anywhere(vectors):
    frames = [bytes.fromhex(v["frame"]) for v in vectors["responses"]]
    want = [_expected(v["response"]) for v in vectors["responses"]]
    stream = b"".join(frames)
    for step in (1, 2, 3, 7, 64, len(stream)):
        reader = _wire.ResponseReader()
        got = []
        for i in range(0, len(stream), step):
            got += reader.feed(stream[i : i + step])
        assert got == want, step
        assert reader.pending() == 0


def test_bad_frames_are_refused_with_their_kind(vectors):
    for v in vectors["bad_frames"]:
        frame = bytes.fromhex(v["frame"])
        with pytest.raises(_wire.FrameError) as e:
            _wire.decode_response_frame(frame)
        assert e.value.kind == v["error"], v["name"]
        assert e.value.fatal == v["fatal"], v["name"]


def test_bad_frames_in_a_stream(vectors):
    """A recoverable bad frame is reported and the stream goes on; a fatal one stops it."""
    ok = _wire.encode_response(_wire.Response(1, 0, "", 1))
    for v in vectors["bad_frames"]:
        frame = bytes.fromhex(v["frame"])
        reader = _wire.ResponseReader()
        if v["fatal"]:
            with pytest.raises(_wire.FrameError) as e:
                reader.feed(ok + frame + ok)
            assert e.value.kind == v["error"], v["name"]
        else:
            items = reader.feed(ok + frame + ok)
            assert [type(i).__name__ for i in items] == ["Response", "FrameError", "Response"], v["name"]
            assert items[1].kind == v["error"], v["name"]


def test_invalid_records_are_refused_with_their_status(vectors):
    statuses = {"INVALID_RECORD": InvalidRecord, "RECORD_TOO_LARGE": RecordTooLarge}
    for v in vectors["invalid_records"]:
        with pytest.raises(statuses[v["status"]]) as e:
            encode_record(**_record_args(v["record"]))
        assert not e.value.in_doubt, v["name"]


def test_valid_records_are_taken(vectors):
    for v in vectors["valid_records"]:
        entry = encode_record(**_record_args(v["record"]))
        assert entry[0] == 0x12, v["name"]
