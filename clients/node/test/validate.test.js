// Tests of client-side record validation beyond the shared vectors: JavaScript's own input
// shapes (strings, views, BigInt hash keys, lone surrogates) and what put does with bad input.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { makeRecord, codePoints } = require('../lib/validate');
const { Producer, InvalidRecordError, RecordTooLargeError, randomPartitionKey } = require('..');

test('partition keys count Unicode code points, not UTF-16 units or bytes', () => {
  assert.equal(codePoints('😀'.repeat(256)), 256);
  assert.doesNotThrow(() => makeRecord('d', { partitionKey: '😀'.repeat(256) }, null));
  assert.throws(() => makeRecord('d', { partitionKey: '😀'.repeat(257) }, null), InvalidRecordError);
  assert.doesNotThrow(() => makeRecord('d', { partitionKey: 'ж'.repeat(256) }, null));
  assert.throws(() => makeRecord('d', { partitionKey: 'k'.repeat(257) }, null), InvalidRecordError);
});

test('a partition key or stream with a lone surrogate is refused (it is not Unicode)', () => {
  assert.throws(() => makeRecord('d', { partitionKey: 'a\ud800' }, null), InvalidRecordError);
  assert.throws(() => makeRecord('d', { stream: '\udc00' }, null), InvalidRecordError);
});

test('explicit hash keys: decimal strings or BigInts in 0..2^128-1', () => {
  assert.equal(makeRecord('d', { explicitHashKey: 2n ** 128n - 1n }, null).ehk, '340282366920938463463374607431768211455');
  assert.equal(makeRecord('d', { explicitHashKey: 0n }, null).ehk, '0');
  assert.throws(() => makeRecord('d', { explicitHashKey: 2n ** 128n }, null), InvalidRecordError);
  assert.throws(() => makeRecord('d', { explicitHashKey: -1n }, null), InvalidRecordError);
  assert.throws(() => makeRecord('d', { explicitHashKey: 42 }, null), InvalidRecordError);
  assert.throws(() => makeRecord('d', { explicitHashKey: '1e3' }, null), InvalidRecordError);
  assert.equal(makeRecord('d', { explicitHashKey: `000${'9'.repeat(38)}` }, null).ehk.length, 41);
});

test('data: Buffer, Uint8Array, other views and strings; nothing else', () => {
  assert.equal(makeRecord(Buffer.from('abc'), undefined, null).dataLen, 3);
  assert.equal(makeRecord(new Uint8Array(5), undefined, null).dataLen, 5);
  assert.equal(makeRecord(new Float64Array(2), undefined, null).dataLen, 16);
  assert.equal(makeRecord('ж', undefined, null).dataLen, 2);
  for (const bad of [null, undefined, 42, {}, [1, 2]]) {
    assert.throws(() => makeRecord(bad, undefined, null), InvalidRecordError, String(bad));
  }
});

test('the size limit counts the UTF-8 bytes of string data and key', () => {
  const limit = 10 * 1024 * 1024;
  assert.doesNotThrow(() => makeRecord('a'.repeat(limit - 2), { partitionKey: 'ж' }, null));
  assert.throws(() => makeRecord('a'.repeat(limit - 2), { partitionKey: 'жж' }, null), RecordTooLargeError);
  assert.throws(() => makeRecord('ж'.repeat(limit / 2), { partitionKey: 'k' }, null), RecordTooLargeError);
});

test('a record without a key gets 16 hex digits; a stream must be non-empty; record ids are checked', () => {
  assert.match(randomPartitionKey(), /^[0-9a-f]{16}$/);
  assert.notEqual(randomPartitionKey(), randomPartitionKey());
  assert.equal(makeRecord('d', {}, null).pkLen, 16);
  assert.throws(() => makeRecord('d', { stream: '' }, null), InvalidRecordError);
  assert.throws(() => makeRecord('d', { stream: 5 }, null), InvalidRecordError);
  assert.equal(makeRecord('d', {}, 'audit').stream, 'audit');
  assert.equal(makeRecord('d', { stream: 'other' }, 'audit').stream, 'other');
  assert.throws(() => makeRecord('d', { recordId: 'a'.repeat(65) }, null), InvalidRecordError);
  assert.equal(makeRecord('d', { recordId: 'a-b.c:d_e' }, null).rid, 'a-b.c:d_e');
});

test('put refuses bad input with an already-rejected promise and queues nothing', async () => {
  // Nothing listens there: a record that got queued would make the producer connect.
  const p = new Producer('/nonexistent/shardline.sock');
  const refused = [
    p.put(Buffer.from('x'), { partitionKey: '' }),
    p.put(Buffer.from('x'), { explicitHashKey: '-1' }),
    p.put(Buffer.from('x'), { recordId: 'a b' }),
    p.put(Buffer.alloc(10 * 1024 * 1024), { partitionKey: 'k' }),
    p.put(null),
  ];
  assert.equal(p.outstanding, 0);
  assert.equal(p.stats.queued, 0);
  assert.equal(p._state, 'idle');
  const results = await Promise.allSettled(refused);
  const errs = results.map((r) => r.reason);
  assert.ok(results.every((r) => r.status === 'rejected'));
  assert.ok(errs.slice(0, 3).every((e) => e instanceof InvalidRecordError && e.code === 'ERR_SHARDLINE_INVALID_RECORD'));
  assert.ok(errs[3] instanceof RecordTooLargeError);
  assert.ok(errs.every((e) => e.status === null && e.inDoubt === false));
  await p.close();
});
