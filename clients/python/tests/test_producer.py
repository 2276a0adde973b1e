# The producer against a scripted fake agent: acks, batching, streams, pipelining,
# every status, SHUTTING_DOWN resends, lost connections, queue bounds, close and flush.
import threading
import time

import pytest

from shardline import (
    AgentError,
    Closed,
    ConnectionLost,
    InvalidRecord,
    Producer,
    QueueFull,
    RecordTooLarge,
    SpoolFull,
    _wire,
)
from conftest import wait_until

T = 30  # seconds: a guard against hangs, never a timing assertion


def _resp(req, status, message="refused"):
    return _wire.Response(req.id, status, message, 0)


def test_records_are_acked_and_arrive_in_order(fake):
    agent = fake()
    with Producer(agent.path, linger=0.001) as p:
        futs = [p.put(b"r%d" % i, partition_key="k%d" % (i % 3)) for i in range(1000)]
        for f in futs:
            assert f.result(T) is None
            assert f.done() and f.exception() is None
        assert p.outstanding_records == 0
        assert p.acknowledged_records == 1000
    recs = agent.records()
    assert [r.data for r in recs] == [b"r%d" % i for i in range(1000)]
    assert [r.partition_key for r in recs[:3]] == ["k0", "k1", "k2"]
    assert [q.id for q in agent.requests] == list(range(1, len(agent.requests) + 1))
    assert all(q.ack and q.stream is None for q in agent.requests)


def test_frames_respect_the_record_and_byte_bounds(fake):
    agent = fake()
    with Producer(agent.path, linger=0.05, max_batch_records=7, max_batch_bytes=4096) as p:
        for i in range(50):
            p.put(b"x" * 10)
        p.put(b"y" * 10_000)  # larger than a frame: goes alone
        for i in range(20):
            p.put(b"z" * 1000)
        assert p.flush(T)
    sizes = [len(q.records) for q in agent.requests]
    assert max(sizes) <= 7
    assert sum(sizes) == 71
    big = [q for q in agent.requests if any(r.data.startswith(b"y") for r in q.records)]
    assert len(big) == 1 and len(big[0].records) == 1
    for q in agent.requests:
        frame = sum(len(r.data) for r in q.records)
        assert frame < 4096 or len(q.records) == 1


def test_streams_never_share_a_frame(fake):
    agent = fake()
    with Producer(agent.path, linger=0.05, stream="audit") as p:
        for i in range(30):
            p.put(b"%d" % i, stream=("logs", "metrics", None)[i % 3])
        assert p.flush(T)
    by_stream = {}
    for q in agent.requests:
        by_stream.setdefault(q.stream, []).extend(int(r.data) for r in q.records)
    assert by_stream == {
        "logs": list(range(0, 30, 3)),
        "metrics": list(range(1, 30, 3)),
        "audit": list(range(2, 30, 3)),
    }
    with Producer(agent.path) as p:
        with pytest.raises(InvalidRecord):
            p.put(b"x", stream="")


def test_in_flight_frames_are_bounded(fake):
    agent = fake()
    agent.hold.set()
    p = Producer(agent.path, linger=0, max_batch_records=1, max_in_flight=3)
    futs = [p.put(b"%d" % i) for i in range(10)]
    wait_until(lambda: len(agent.requests) == 3, T, "three frames in flight")
    time.sleep(0.2)
    assert len(agent.requests) == 3  # no fourth frame before an answer
    assert p.outstanding_records == 10
    agent.release()
    for f in futs:
        f.result(T)
    assert [int(r.data) for r in agent.records()] == list(range(10))
    p.close()


def test_agent_statuses_become_typed_errors(fake):
    statuses = {
        b"invalid": (_wire.INVALID_RECORD, InvalidRecord, False),
        b"large": (_wire.RECORD_TOO_LARGE, RecordTooLarge, False),
        b"full": (_wire.SPOOL_FULL, SpoolFull, False),
        b"bad": (_wire.BAD_FRAME, AgentError, False),
        b"internal": (_wire.INTERNAL, AgentError, True),
        b"unknown": (9, AgentError, True),
    }

    def answer(req):
        code = statuses.get(req.records[0].data, (0,))[0]
        return _resp(req, code, "because") if code else None

    agent = fake(answer)
    with Producer(agent.path, linger=0, max_batch_records=1) as p:
        futs = {k: p.put(k) for k in statuses}
        ok = p.put(b"fine")
        assert ok.result(T) is None
        for k, (code, cls, in_doubt) in statuses.items():
            err = futs[k].exception(T)
            assert type(err) is cls, k
            assert err.in_doubt is in_doubt, k
            assert err.status_code == code
            assert err.status == (_wire.STATUS_NAMES[code] if code < 7 else None)
            assert "because" in err.message
            with pytest.raises(cls):
                futs[k].result(T)
        assert p.failed_records == 6 and p.in_doubt_records == 2
        assert p.acknowledged_records == 1


def test_an_answer_with_id_zero_fails_the_oldest_frame(fake):
    agent = fake(lambda req: _wire.Response(0, _wire.BAD_FRAME, "unreadable", 0) if req.id == 1 else None)
    with Producer(agent.path, linger=0, max_batch_records=1) as p:
        first, second = p.put(b"a"), p.put(b"b")
        assert isinstance(first.exception(T), AgentError)
        assert first.exception().status == "BAD_FRAME"
        assert second.result(T) is None


def test_a_mismatched_answer_ends_the_connection_in_doubt(fake):
    agent = fake(lambda req: _wire.Response(req.id + 100, 0, "", 1) if req.conn == 1 else None)
    with Producer(agent.path, linger=0, max_batch_records=1) as p:
        err = p.put(b"a").exception(T)
        assert isinstance(err, ConnectionLost) and err.in_doubt
        assert p.put(b"b").result(T) is None  # a new connection
    assert agent.connections == 2


def test_shutting_down_resends_on_a_new_connection(fake):
    # Connection 1 spools its first frame, then refuses the rest as the agent stops.
    def answer(req):
        if req.conn == 1 and req.id > 1:
            return _resp(req, _wire.SHUTTING_DOWN, "stopping")
        return None

    agent = fake(answer)
    agent.hold.set()
    with Producer(agent.path, linger=0, max_batch_records=10, reconnect_backoff=0.01) as p:
        futs = [p.put(b"%d" % i) for i in range(100)]
        wait_until(lambda: len(agent.requests) >= 10, T, "ten frames written")
        agent.release()
        for f in futs:
            assert f.result(T) is None
        assert p.failed_records == 0 and p.in_doubt_records == 0
    first = [int(r.data) for q in agent.requests if q.conn == 1 and q.id == 1 for r in q.records]
    later = [int(r.data) for q in agent.requests if q.conn > 1 for r in q.records]
    assert first + later == list(range(100))  # resent whole, in order, none twice
    assert agent.connections >= 2


def test_a_lost_connection_fails_written_frames_in_doubt(fake):
    agent = fake(lambda req: "close" if req.conn == 1 and req.id == 2 else None)
    with Producer(agent.path, linger=0, max_batch_records=1, reconnect_backoff=0.01) as p:
        a, b = p.put(b"a"), p.put(b"b")
        assert a.result(T) is None
        err = b.exception(T)
        assert isinstance(err, ConnectionLost) and err.in_doubt and err.status is None
        assert p.put(b"c").result(T) is None
        assert p.in_doubt_records == 1


def test_queue_full_raises_when_not_blocking(fake):
    agent = fake()
    agent.hold.set()
    with Producer(agent.path, linger=0, max_queued_records=10, block_when_full=False) as p:
        futs = [p.put(b"%d" % i) for i in range(10)]
        with pytest.raises(QueueFull):
            p.put(b"one too many")
        assert p.outstanding_records == 10
        agent.release()
        for f in futs:
            f.result(T)
        p.put(b"room again").result(T)


def test_queue_bound_in_bytes(fake):
    agent = fake()
    agent.hold.set()
    with Producer(agent.path, linger=0, max_queued_bytes=5000, block_when_full=False) as p:
        p.put(b"x" * 3000)
        with pytest.raises(QueueFull):
            p.put(b"x" * 3000)
        agent.release()
        assert p.flush(T)
        p.put(b"x" * 10_000).result(T)  # an empty queue takes any record


def test_put_blocks_while_the_queue_is_full(fake):
    agent = fake()
    agent.hold.set()
    p = Producer(agent.path, linger=0, max_queued_records=10)
    done = []

    def putter():
        for i in range(30):
            done.append(p.put(b"%d" % i))

    t = threading.Thread(target=putter)
    t.start()
    wait_until(lambda: len(done) == 10 and p.outstanding_records == 10, T, "a full queue")
    t.join(0.3)
    assert t.is_alive() and len(done) == 10  # blocked, not failed
    agent.release()
    t.join(T)
    assert not t.is_alive()
    for f in done:
        f.result(T)
    p.close()


def test_close_fails_unsent_records_as_closed(tmp_path):
    p = Producer(str(tmp_path / "nobody.sock"), reconnect_backoff=0.01)
    futs = [p.put(b"x") for _ in range(5)]
    assert p.close(timeout=0.3) is False
    for f in futs:
        err = f.exception(0)
        assert isinstance(err, Closed) and not err.in_doubt
    assert p.outstanding_records == 0
    with pytest.raises(Closed):
        p.put(b"late")


def test_close_fails_written_records_in_doubt(fake):
    agent = fake()
    agent.hold.set()
    p = Producer(agent.path, linger=0)
    fut = p.put(b"x")
    wait_until(lambda: agent.requests, T, "the frame written")
    assert p.close(timeout=0.2) is False
    err = fut.exception(0)
    assert isinstance(err, ConnectionLost) and err.in_doubt
    assert p.outstanding_records == 0 and p.in_doubt_records == 1
    agent.release()


def test_put_before_the_agent_listens_waits_for_it(fake, tmp_path):
    path = str(tmp_path / "fake0.sock")
    p = Producer(path, reconnect_backoff=0.01, max_reconnect_backoff=0.05)
    fut = p.put(b"early")
    time.sleep(0.1)
    assert not fut.done()
    fake()
    assert fut.result(T) is None
    p.close()


def test_callbacks_and_flush(fake):
    agent = fake()
    agent.hold.set()
    seen = []
    with Producer(agent.path, linger=0) as p:
        fut = p.put(b"x")
        fut.add_done_callback(seen.append)
        assert p.flush(0.05) is False
        assert not fut.done() and seen == []
        agent.release()
        assert p.flush(T) is True
        assert seen == [fut]
        fut.add_done_callback(seen.append)  # already done: called at once
        assert seen == [fut, fut]
        with pytest.raises(TimeoutError):
            agent.hold.set()
            p.put(b"y").result(0.05)
        agent.release()


def test_bad_input_is_refused_before_anything_is_sent(fake):
    agent = fake()
    with Producer(agent.path) as p:
        for kwargs in (
            dict(partition_key=""),
            dict(partition_key="k" * 257),
            dict(explicit_hash_key="-1"),
            dict(record_id="a b"),
            dict(stream=""),
        ):
            with pytest.raises(InvalidRecord):
                p.put(b"x", **kwargs)
        with pytest.raises(RecordTooLarge):
            p.put(b"\0" * (10 * 1024 * 1024))
        with pytest.raises(TypeError):
            p.put(12)
        assert p.outstanding_records == 0
        assert not p.stats()["connected"]
    assert agent.connections == 0 and agent.requests == []


def test_options_are_checked():
    for bad in (
        dict(linger=-1),
        dict(max_batch_records=0),
        dict(max_in_flight=0),
        dict(max_batch_bytes=(16 << 20) + 1),
        dict(max_queued_records=0),
        dict(reconnect_backoff=0),
        dict(stream=""),
    ):
        with pytest.raises((ValueError, InvalidRecord)):
            Producer("/nonexistent.sock", **bad)


def test_put_from_a_callback_does_not_block_on_a_full_queue(fake):
    # "b" is never answered and fills the byte bound: the callback of "a" (on the
    # reader thread, which alone could free room) gets QueueFull instead of blocking.
    # ("b" is answered by nothing, so answers stay in order: "a" is first.)
    agent = fake(lambda req: "silent" if req.records[0].data.startswith(b"b") else None)
    outcomes = []

    def again(_fut):
        try:
            p.put(b"c" * 3000)
            outcomes.append("queued")
        except QueueFull:
            outcomes.append("full")

    agent.hold.set()
    p = Producer(agent.path, linger=0, max_batch_records=1, max_queued_bytes=5000)
    p.put(b"a").add_done_callback(again)
    blocker = p.put(b"b" * 4000)
    wait_until(lambda: len(agent.requests) == 2, T, "both frames written")
    agent.release()
    wait_until(lambda: outcomes, T, "the callback")
    assert outcomes == ["full"]
    assert p.close(0.2) is False
    assert isinstance(blocker.exception(0), ConnectionLost)


def test_close_twice_and_exit_on_error(fake):
    agent = fake()
    with pytest.raises(RuntimeError):
        with Producer(agent.path) as p:
            fut = p.put(b"x")
            raise RuntimeError("boom")
    assert fut.result(0) is None  # the exit flushed it
    assert p.close() is True


def test_many_threads_put_at_once(fake):
    agent = fake()
    with Producer(agent.path, max_queued_records=3000) as p:
        futs = {}

        def putter(t):
            futs[t] = [p.put(b"%d-%d" % (t, i), stream=("a", "b")[t % 2]) for i in range(5000)]

        threads = [threading.Thread(target=putter, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T)
        assert p.flush(T)
        assert all(f.exception(0) is None for fs in futs.values() for f in fs)
        assert p.acknowledged_records == 20_000 and p.outstanding_records == 0
    for t in range(4):
        mine = [r.data for r in agent.records() if r.data.startswith(b"%d-" % t)]
        assert mine == [b"%d-%d" % (t, i) for i in range(5000)]  # each once, in order
