// Unit tests of the Producer against a scripted fake agent: batching, streams, pipelining,
// every answer status, lost connections, SHUTTING_DOWN, backpressure, flush and close.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const { startFakeAgent } = require('../testing/fake-agent');
const { tempDir, waitFor, sleep } = require('../testing/harness');
const {
  Producer, InvalidRecordError, RecordTooLargeError, SpoolFullError, ConnectionLostError,
  AgentError, ClosedError, QueueFullError, Status,
} = require('..');

/** A fake agent answering with handler, a producer on it, and their cleanup. */
async function setup(t, handler, options = {}) {
  const dir = tempDir();
  const sock = path.join(dir, 'fake.sock');
  const agent = await startFakeAgent(sock, handler);
  const producer = new Producer(sock, { lingerMs: 5, ...options });
  t.after(async () => {
    await producer.close({ timeout: 0 });
    await agent.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { agent, producer, sock, dir };
}

const settle = (ps) => Promise.allSettled(ps);
/** Only against hangs: nothing here is timed. */
const T = { timeout: 60000 };

test('records are batched: up to maxRecordsPerFrame per frame, ids 1, 2, 3, ack always set', T, async (t) => {
  const { agent, producer } = await setup(t);
  const acks = [];
  for (let i = 0; i < 1200; i++) acks.push(producer.put(`r${i}`));
  assert.equal(producer.outstanding, 1200);
  await Promise.all(acks);
  assert.equal(producer.outstanding, 0);
  const sizes = agent.requests.map((r) => r.records.length);
  assert.deepEqual(sizes, [500, 500, 200]);
  assert.deepEqual(agent.requests.map((r) => r.id), [1, 2, 3]);
  assert.ok(agent.requests.every((r) => r.ack && r.stream === null));
  const data = agent.requests.flatMap((r) => r.records.map((x) => x.data.toString()));
  assert.deepEqual(data, acks.map((_, i) => `r${i}`));
  assert.ok(agent.requests[0].records.every((r) => /^[0-9a-f]{16}$/.test(r.partitionKey)));
  assert.equal(producer.stats.acked, 1200);
});

test('frames stay under maxFrameBytes; a larger record goes alone', T, async (t) => {
  const { agent, producer } = await setup(t, undefined, { maxFrameBytes: 64 * 1024 });
  const acks = [];
  for (let i = 0; i < 10; i++) acks.push(producer.put(Buffer.alloc(20000, i)));
  acks.push(producer.put(Buffer.alloc(200000, 1)));
  acks.push(producer.put(Buffer.alloc(10, 2)));
  await Promise.all(acks);
  const sizes = agent.requests.map((r) => r.records.length);
  assert.deepEqual(sizes, [3, 3, 3, 1, 1, 1]);
  assert.equal(agent.requests[4].records[0].data.length, 200000);
});

test('records of different streams never share a frame; order within a stream is kept', T, async (t) => {
  const { agent, producer } = await setup(t, undefined, { stream: 'main' });
  const acks = [];
  const want = { main: [], audit: [], other: [] };
  for (let i = 0; i < 900; i++) {
    const stream = ['main', 'audit', 'other'][i % 3];
    want[stream].push(`${stream}-${i}`);
    acks.push(producer.put(`${stream}-${i}`, i % 3 === 0 ? undefined : { stream }));
  }
  await Promise.all(acks);
  const got = { main: [], audit: [], other: [] };
  for (const r of agent.requests) {
    for (const rec of r.records) {
      assert.ok(rec.data.toString().startsWith(`${r.stream}-`), 'a frame holds one stream');
      got[r.stream].push(rec.data.toString());
    }
  }
  assert.deepEqual(got, want);
});

test('keys, explicit hash keys and record ids are sent as given', T, async (t) => {
  const { agent, producer } = await setup(t);
  await Promise.all([
    producer.put('a', { partitionKey: 'ключ', explicitHashKey: 12345678901234567890123n, recordId: 'order-7' }),
    producer.put(new Uint8Array([1, 2, 3]), { partitionKey: 'k' }),
  ]);
  const [a, b] = agent.requests.flatMap((r) => r.records);
  assert.deepEqual(a, { partitionKey: 'ключ', explicitHashKey: '12345678901234567890123', data: Buffer.from('a'), recordId: 'order-7' });
  assert.deepEqual(b, { partitionKey: 'k', explicitHashKey: null, data: Buffer.from([1, 2, 3]), recordId: null });
});

test('every refusal status becomes its typed error with status, message and in-doubt', T, async (t) => {
  const statuses = [Status.INVALID_RECORD, Status.RECORD_TOO_LARGE, Status.SPOOL_FULL, Status.BAD_FRAME, Status.INTERNAL, 9];
  let n = 0;
  const { producer } = await setup(t, () => ({ statusCode: statuses[n++], message: `refused ${n}` }), { maxRecordsPerFrame: 1 });
  const results = await settle(statuses.map((_, i) => producer.put(`r${i}`)));
  const errs = results.map((r) => r.reason);
  const want = [
    [InvalidRecordError, 'INVALID_RECORD', false],
    [RecordTooLargeError, 'RECORD_TOO_LARGE', false],
    [SpoolFullError, 'SPOOL_FULL', false],
    [AgentError, 'BAD_FRAME', false],
    [AgentError, 'INTERNAL', true],
    [AgentError, null, true],
  ];
  want.forEach(([Class, status, inDoubt], i) => {
    assert.ok(errs[i] instanceof Class, `${i}: ${errs[i]}`);
    assert.equal(errs[i].status, status);
    assert.equal(errs[i].inDoubt, inDoubt);
    assert.equal(errs[i].statusCode, statuses[i]);
  });
  assert.match(errs[0].message, /refused 1/);
  assert.match(errs[5].message, /unknown status 9/);
  assert.deepEqual([producer.stats.failed, producer.stats.inDoubt], [6, 2]);
});

test('an answer with id 0 fails the oldest frame in flight; later frames go on', T, async (t) => {
  let n = 0;
  const { producer } = await setup(t, (req) => (n++ === 0 ? { id: 0n, statusCode: Status.BAD_FRAME, message: 'unreadable' } : undefined),
    { maxRecordsPerFrame: 2 });
  const results = await settle([0, 1, 2, 3].map((i) => producer.put(`r${i}`)));
  assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected', 'fulfilled', 'fulfilled']);
  assert.ok(results[0].reason instanceof AgentError);
  assert.equal(results[0].reason.status, 'BAD_FRAME');
});

test('an unreadable answer fails its frame in doubt; the connection goes on', T, async (t) => {
  let n = 0;
  const { producer, agent } = await setup(t, () => (n++ === 0 ? Buffer.from('00000003020801', 'hex') : undefined),
    { maxRecordsPerFrame: 1 });
  const results = await settle([producer.put('a'), producer.put('b')]);
  assert.equal(results[0].reason.inDoubt, true);
  assert.ok(results[0].reason instanceof AgentError);
  assert.equal(results[1].status, 'fulfilled');
  assert.equal(agent.connections.length, 1);
});

test('an answer for the wrong id or a fatal frame ends the connection: in flight in doubt, the rest sent again', T, async (t) => {
  for (const bad of [{ id: 99n }, Buffer.from('ffffffff', 'hex')]) {
    let n = 0;
    const { producer, agent } = await setup(t, () => (n++ === 0 ? bad : undefined),
      { maxRecordsPerFrame: 1, maxInFlight: 1, reconnectMinMs: 1 });
    const results = await settle([producer.put('a'), producer.put('b'), producer.put('c')]);
    assert.ok(results[0].reason instanceof ConnectionLostError);
    assert.equal(results[0].reason.inDoubt, true);
    assert.deepEqual(results.slice(1).map((r) => r.status), ['fulfilled', 'fulfilled']);
    assert.equal(agent.connections.length, 2);
  }
});

test('a connection the agent closes: written records in doubt, queued ones sent after reconnecting', T, async (t) => {
  let n = 0;
  const { producer, agent } = await setup(t, () => (n++ === 1 ? 'close' : undefined),
    { maxRecordsPerFrame: 10, maxInFlight: 1, reconnectMinMs: 1 });
  const acks = [];
  for (let i = 0; i < 40; i++) acks.push(producer.put(`r${i}`));
  const results = await settle(acks);
  const lost = results.map((r, i) => [r, i]).filter(([r]) => r.status === 'rejected');
  assert.deepEqual(lost.map(([, i]) => i), [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
  assert.ok(lost.every(([r]) => r.reason instanceof ConnectionLostError && r.reason.inDoubt));
  assert.equal(agent.connections.length, 2);
  assert.deepEqual(producer.stats.inDoubt, 10);
});

test('only frames handed to the socket are in doubt when it breaks; the rest wait in the queue and go later', T, async (t) => {
  const dir = tempDir();
  const sock = path.join(dir, 'stuck.sock');
  // The first connection never reads: the socket's buffers fill, then it is broken.
  const agent = await startFakeAgent(sock, undefined, { onConnection: (conn, i) => { if (i === 0) conn.sock.pause(); } });
  const producer = new Producer(sock, { maxRecordsPerFrame: 1, maxInFlight: 16, reconnectMinMs: 1 });
  t.after(async () => { await producer.close({ timeout: 0 }); await agent.close(); });
  const N = 64;
  const acks = [];
  for (let i = 0; i < N; i++) acks.push(producer.put(Buffer.alloc(100000, i)));
  await waitFor(() => agent.connections.length === 1, 'the connection');
  await sleep(200);
  const handed = producer.stats.inFlight;
  assert.ok(handed > 0 && handed < 16, `frames handed to the socket: ${handed}`);
  agent.connections[0].sock.destroy();
  const results = await settle(acks);
  const inDoubt = results.filter((r) => r.status === 'rejected');
  assert.ok(inDoubt.every((r) => r.reason instanceof ConnectionLostError && r.reason.inDoubt));
  assert.equal(inDoubt.length, handed);
  assert.equal(producer.stats.acked, N - handed);
});

test('SHUTTING_DOWN: the frame and those after it are sent again, in order, after reconnecting; nothing in doubt', T, async (t) => {
  let conn1 = null;
  const { producer, agent } = await setup(t, (req, conn) => {
    if (conn1 === null) conn1 = conn;
    if (conn !== conn1) return undefined;
    if (req.id === 1) return undefined; // spooled
    return { statusCode: Status.SHUTTING_DOWN, message: 'stopping' };
  }, { maxRecordsPerFrame: 5, maxInFlight: 4, reconnectMinMs: 1 });
  const acks = [];
  for (let i = 0; i < 30; i++) acks.push(producer.put(`r${i}`));
  await Promise.all(acks);
  assert.equal(agent.connections.length, 2);
  const resent = agent.requests.slice(4).flatMap((r) => r.records.map((x) => x.data.toString()));
  assert.deepEqual(resent, acks.slice(5).map((_, i) => `r${i + 5}`));
  assert.equal(producer.stats.inDoubt, 0);
  assert.equal(producer.stats.failed, 0);
  assert.equal(producer.stats.resent, 15);
});

test('pipelining: at most maxInFlight frames unanswered', T, async (t) => {
  const held = [];
  const { producer, agent } = await setup(t, (req, conn) => { held.push([req, conn]); return 'hold'; },
    { maxRecordsPerFrame: 1, maxInFlight: 3 });
  const acks = [0, 1, 2, 3, 4].map((i) => producer.put(`r${i}`));
  await waitFor(() => agent.requests.length === 3, 'three frames');
  await sleep(50);
  assert.equal(agent.requests.length, 3);
  const [req, conn] = held.shift();
  conn.answer(req);
  await acks[0];
  await waitFor(() => agent.requests.length === 4, 'a fourth frame');
  while (held.length) { const [r, c] = held.shift(); c.answer(r); }
  await waitFor(() => held.length > 0, 'the fifth frame');
  const [r5, c5] = held.shift();
  c5.answer(r5);
  await Promise.all(acks);
});

test('an agent that is not there yet: records wait, then go once it listens', T, async (t) => {
  const dir = tempDir();
  const sock = path.join(dir, 'late.sock');
  const producer = new Producer(sock, { reconnectMinMs: 5, reconnectMaxMs: 20 });
  const acks = [producer.put('a'), producer.put('b')];
  await sleep(100);
  assert.equal(producer.outstanding, 2);
  const agent = await startFakeAgent(sock);
  t.after(async () => { await producer.close({ timeout: 0 }); await agent.close(); });
  await Promise.all(acks);
  assert.equal(agent.requests.length, 1);
});

test('flush waits for every record put before it; it never rejects', T, async (t) => {
  const held = [];
  const { producer } = await setup(t, (req, conn) => { held.push([req, conn]); return 'hold'; },
    { maxRecordsPerFrame: 1, lingerMs: 100000 });
  await producer.flush();
  const a = producer.put('a');
  const b = producer.put('b');
  b.catch(() => {});
  let flushed = false;
  const f = producer.flush().then(() => { flushed = true; });
  await waitFor(() => held.length === 2, 'both frames');
  held[0][1].answer(held[0][0]);
  await a;
  await sleep(20);
  assert.equal(flushed, false);
  held[1][1].answer(held[1][0], { statusCode: Status.SPOOL_FULL });
  await f;
  await assert.rejects(b, SpoolFullError);
});

test('close: waits for answers; put after close is refused with ClosedError', T, async (t) => {
  const { producer } = await setup(t);
  const acks = [0, 1, 2].map((i) => producer.put(`r${i}`));
  await producer.close();
  await Promise.all(acks);
  await assert.rejects(producer.put('late'), ClosedError);
  assert.equal(producer.outstanding, 0);
});

test('close timeout: written records fail in doubt, never-written ones with ClosedError', T, async (t) => {
  const { producer, agent } = await setup(t, () => 'hold', { maxRecordsPerFrame: 1, maxInFlight: 2 });
  const acks = [0, 1, 2, 3].map((i) => producer.put(`r${i}`));
  await waitFor(() => agent.requests.length === 2, 'two frames');
  await producer.close({ timeout: 50 });
  const results = await settle(acks);
  assert.ok(results.slice(0, 2).every((r) => r.reason instanceof ConnectionLostError && r.reason.inDoubt));
  assert.ok(results.slice(2).every((r) => r.reason instanceof ClosedError && !r.reason.inDoubt));
  assert.equal(producer.outstanding, 0);
});

test('queue full in error mode: QueueFullError at once, room again once answered', T, async (t) => {
  const held = [];
  const { producer } = await setup(t, (req, conn) => { held.push([req, conn]); return 'hold'; },
    { whenFull: 'error', maxQueuedRecords: 10 });
  const acks = [];
  for (let i = 0; i < 10; i++) acks.push(producer.put(`r${i}`));
  assert.equal(producer.full, true);
  await assert.rejects(producer.put('over'), (e) => e instanceof QueueFullError && !e.inDoubt);
  assert.equal(producer.outstanding, 10);
  await waitFor(() => held.length === 1, 'the frame');
  const drained = new Promise((r) => producer.once('drain', r));
  held[0][1].answer(held[0][0]);
  await Promise.all(acks);
  await drained;
  assert.equal(producer.full, false);
  producer.put('again').catch(() => {}); // held: failed by close at the end
  assert.equal(producer.outstanding, 1);
});

test('queue full in block mode: ready() waits for room; a put beyond the bound waits its turn', T, async (t) => {
  const held = [];
  const { producer, agent } = await setup(t, (req, conn) => { held.push([req, conn]); return 'hold'; },
    { maxQueuedRecords: 4, maxRecordsPerFrame: 2 });
  const acks = [0, 1, 2, 3].map((i) => producer.put(`r${i}`));
  assert.equal(producer.full, true);
  let ready = false;
  const r = producer.ready().then(() => { ready = true; });
  const late = producer.put('r4');
  assert.deepEqual([producer.outstanding, producer.stats.waiting], [5, 1]);
  await waitFor(() => held.length === 2, 'two frames');
  await sleep(30);
  assert.equal(ready, false);
  const [req, conn] = held.shift();
  conn.answer(req);
  await r;
  await Promise.all(acks.slice(0, 2));
  await waitFor(() => held.length === 2, 'the late record written');
  while (held.length) { const [q, c] = held.shift(); c.answer(q); }
  await Promise.all([...acks, late]);
  assert.deepEqual(agent.requests.flatMap((q) => q.records.map((x) => x.data.toString())), ['r0', 'r1', 'r2', 'r3', 'r4']);
});

test('the byte bound counts too; one record larger than it still goes alone', T, async (t) => {
  const { producer } = await setup(t, undefined, { maxQueuedBytes: 1000, whenFull: 'error' });
  const big = producer.put(Buffer.alloc(5000));
  await assert.rejects(producer.put('x'), QueueFullError);
  await big;
  await producer.put('x');
});

test('options are checked', () => {
  assert.throws(() => new Producer('/x', { maxInFlight: 0 }), RangeError);
  assert.throws(() => new Producer('/x', { whenFull: 'drop' }), TypeError);
  assert.throws(() => new Producer('/x', { lingerMS: 5 }), TypeError);
  assert.throws(() => new Producer('/x', { maxFrameBytes: 17 * 1024 * 1024 }), RangeError);
  assert.throws(() => new Producer(''), TypeError);
});
