# The producer against the real agent and the Kinesis emulator: 100,000 records acked
# and read back, SPOOL_FULL, bad input, queue bounds while the agent is stopped, streams.
import signal
import threading
import uuid

import pytest

from shardline import InvalidRecord, Producer, QueueFull, RecordTooLarge, SpoolFull
from conftest import read_back, wait_until

pytestmark = pytest.mark.agent
T = 120  # seconds: a guard against hangs, never a timing assertion


def _tag():
    return uuid.uuid4().hex[:12].encode()


def _record(tag, i, size=256):
    head = b"%s-%07d-" % (tag, i)
    return head + b"." * (size - len(head))


def test_100k_records_acked_and_read_back(emulator, agent):
    a = agent()
    tag = _tag()
    n = 100_000
    sent = {_record(tag, i) for i in range(n)}
    keys = {}
    with Producer(a.socket) as p:
        futs = []
        for i in range(n):
            data = _record(tag, i)
            if i % 10 == 0:  # some with keys of their own, the rest random
                keys[data] = "user-%d" % (i % 97)
                futs.append(p.put(data, partition_key=keys[data]))
            else:
                futs.append(p.put(data))
        for f in futs:
            assert f.result(T) is None
        assert p.acknowledged_records == n and p.failed_records == 0
    rows = read_back(emulator, tag, n)
    got = [data for _, data in rows]
    assert set(got) == sent
    assert len(got) == n
    for key, data in rows:
        if data in keys:
            assert key == keys[data]


def test_spool_full_is_a_typed_error(agent):
    a = agent(spool_full=True)
    tag = _tag()
    with Producer(a.socket, max_batch_records=50) as p:
        errors = []
        for chunk in range(200):  # at most 40 MiB against a 2 MiB spool
            futs = [p.put(_record(tag, chunk * 50 + i, 4096)) for i in range(50)]
            errors = [f.exception(T) for f in futs if f.exception(T) is not None]
            if errors:
                break
        assert errors, "the agent never answered SPOOL_FULL"
        for e in errors:
            assert isinstance(e, SpoolFull)
            assert e.status == "SPOOL_FULL" and e.status_code == 3
            assert not e.in_doubt
        # The connection goes on: the next frame gets its own answer.
        again = p.put(_record(tag, 10**6, 4096)).exception(T)
        assert again is None or isinstance(again, SpoolFull)
        assert p.in_doubt_records == 0


def test_bad_input_is_refused_by_put(emulator, agent):
    a = agent()
    tag = _tag()
    with Producer(a.socket) as p:
        bad = [
            dict(partition_key=""),
            dict(partition_key="\u0436" * 257),
            dict(explicit_hash_key="340282366920938463463374607431768211456"),
            dict(explicit_hash_key=" 1"),
            dict(record_id="x" * 65),
            dict(stream=""),
        ]
        for kwargs in bad:
            with pytest.raises(InvalidRecord):
                p.put(tag + b"-bad", **kwargs)
        with pytest.raises(RecordTooLarge):
            p.put(b"\0" * (10 * 1024 * 1024), partition_key="k")
        assert p.outstanding_records == 0
        assert not p.stats()["connected"]  # nothing was sent: no connection yet
        assert p.put(tag + b"-good", explicit_hash_key="0" * 40).result(T) is None
    rows = read_back(emulator, tag, 1)
    assert [d for _, d in rows] == [tag + b"-good"]


def test_queue_full_raises_while_the_agent_is_stopped(emulator, agent):
    a = agent()
    tag = _tag()
    p = Producer(a.socket, max_queued_records=2000, block_when_full=False)
    p.put(tag + b"-first").result(T)  # connected
    a.signal(signal.SIGSTOP)
    try:
        futs = []
        with pytest.raises(QueueFull):
            for i in range(2001):
                futs.append(p.put(_record(tag, i)))
        assert len(futs) == 2000
        assert p.outstanding_records == 2000
    finally:
        a.signal(signal.SIGCONT)
    for f in futs:
        assert f.result(T) is None
    p.close()
    assert len(read_back(emulator, tag, 2001)) == 2001


def test_put_blocks_while_the_agent_is_stopped(emulator, agent):
    a = agent()
    tag = _tag()
    p = Producer(a.socket, max_queued_records=1000)
    p.put(tag + b"-first").result(T)
    a.signal(signal.SIGSTOP)
    futs = []

    def putter():
        for i in range(3000):
            futs.append(p.put(_record(tag, i)))

    t = threading.Thread(target=putter)
    try:
        t.start()
        wait_until(lambda: len(futs) == 1000 and p.outstanding_records == 1000, T, "a full queue")
        t.join(0.5)
        assert t.is_alive() and len(futs) == 1000  # blocked in put, nothing failed
        assert p.failed_records == 0
    finally:
        a.signal(signal.SIGCONT)
    t.join(T)
    assert not t.is_alive()
    for f in futs:
        assert f.result(T) is None
    p.close()
    assert len(read_back(emulator, tag, 3001)) == 3001


def test_streams_route_records_and_unknown_ones_are_refused(emulator, agent):
    a = agent(streams=["audit"])
    tag = _tag()
    with Producer(a.socket) as p:
        futs = [p.put(tag + b"-audit-%d" % i, stream="audit") for i in range(10)]
        futs += [p.put(tag + b"-logs-%d" % i) for i in range(10)]
        for f in futs:
            assert f.result(T) is None
        err = p.put(tag + b"-nowhere", stream="nowhere").exception(T)
        assert isinstance(err, InvalidRecord) and err.status == "INVALID_RECORD"
        assert not err.in_doubt
    audit = read_back(emulator, tag, 10, stream="audit")
    logs = read_back(emulator, tag, 10, stream="logs")
    assert sorted(d for _, d in audit) == sorted(tag + b"-audit-%d" % i for i in range(10))
    assert sorted(d for _, d in logs) == sorted(tag + b"-logs-%d" % i for i in range(10))
