// Tests of the wire format: the shared protocol vectors (requests, responses, bad frames,
// invalid and valid records) and the answer reader fed in pieces.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const wire = require('../lib/wire');
const { makeRecord } = require('../lib/validate');
const { InvalidRecordError, RecordTooLargeError } = require('../lib/errors');

const VECTORS = path.resolve(__dirname, '../../vectors/protocol.json');
const vectors = JSON.parse(fs.readFileSync(VECTORS, 'utf8'));

function vectorData(r) {
  return r.data_len !== undefined ? Buffer.alloc(r.data_len, 0x61) : Buffer.from(r.data ?? '', 'hex');
}

test('shared vectors: every request encodes to exactly its frame', () => {
  assert.ok(vectors.requests.length > 0);
  for (const v of vectors.requests) {
    const req = { ...v.request, records: v.request.records.map((r) => ({ ...r, data: Buffer.from(r.data, 'hex') })) };
    assert.equal(wire.encodeRequest(req).toString('hex'), v.frame, v.name);
  }
});

test('shared vectors: the producer\'s own records encode to the same frames', () => {
  for (const v of vectors.requests) {
    const { id, ack, stream = null, records } = v.request;
    if (!ack || id === '0' || records.length === 0 || BigInt(id) > BigInt(Number.MAX_SAFE_INTEGER)) continue;
    if (records.some((r) => r.partition_key === '')) continue;
    const recs = records.map((r) => makeRecord(Buffer.from(r.data, 'hex'), {
      partitionKey: r.partition_key, explicitHashKey: r.explicit_hash_key, recordId: r.record_id, stream,
    }, null));
    const frame = wire.encodeFrame(Number(id), true, stream, recs, 0, recs.length);
    assert.equal(frame.toString('hex'), v.frame, v.name);
  }
});

test('shared vectors: every response decodes (canonical ones encode back)', () => {
  assert.ok(vectors.responses.length > 0);
  for (const v of vectors.responses) {
    const got = wire.decodeResponseFrame(Buffer.from(v.frame, 'hex'));
    const want = v.response;
    assert.equal(got.id, BigInt(want.id), v.name);
    assert.equal(got.status, want.status, v.name);
    assert.equal(got.statusCode, want.status_code, v.name);
    assert.equal(got.message, want.message, v.name);
    assert.equal(got.records, want.records, v.name);
    if (v.canonical) {
      const again = wire.encodeResponse({ id: got.id, statusCode: got.statusCode, message: got.message, records: got.records });
      assert.equal(again.toString('hex'), v.frame, `${v.name} (encoded back)`);
    }
  }
});

test('shared vectors: every bad frame is refused with its kind', () => {
  assert.ok(vectors.bad_frames.length > 0);
  for (const v of vectors.bad_frames) {
    const reader = new wire.ResponseReader();
    reader.push(Buffer.from(v.frame, 'hex'));
    assert.throws(() => reader.next(), (e) => {
      assert.ok(e instanceof wire.FrameError, v.name);
      assert.equal(e.kind, v.error, v.name);
      assert.equal(e.fatal, v.fatal, v.name);
      return true;
    }, v.name);
  }
});

test('shared vectors: invalid records are refused with their status, valid ones accepted', () => {
  for (const v of vectors.invalid_records) {
    const r = v.record;
    const opts = { partitionKey: r.partition_key, explicitHashKey: r.explicit_hash_key, recordId: r.record_id, stream: r.stream };
    const Want = v.status === 'RECORD_TOO_LARGE' ? RecordTooLargeError : InvalidRecordError;
    assert.throws(() => makeRecord(vectorData(r), opts, null), Want, v.name);
  }
  for (const v of vectors.valid_records) {
    const r = v.record;
    const opts = { partitionKey: r.partition_key, explicitHashKey: r.explicit_hash_key, recordId: r.record_id, stream: r.stream };
    assert.doesNotThrow(() => makeRecord(vectorData(r), opts, null), v.name);
  }
});

test('a bad frame that is not fatal leaves the reader at the next one', () => {
  const reader = new wire.ResponseReader();
  reader.push(Buffer.concat([
    Buffer.from('00000003020801', 'hex'), // version 2
    Buffer.from('00000000', 'hex'), // empty
    Buffer.from('000000030108ff', 'hex'), // truncated varint
    wire.encodeResponse({ id: 9n, records: 1 }),
  ]));
  assert.throws(() => reader.next(), { kind: 'version' });
  assert.throws(() => reader.next(), { kind: 'empty' });
  assert.throws(() => reader.next(), { kind: 'protobuf' });
  assert.equal(reader.next().id, 9n);
  assert.equal(reader.next(), null);
  assert.equal(reader.pending, 0);
});

test('answers split anywhere across chunks decode the same', () => {
  const frames = [];
  for (let i = 1; i <= 40; i++) {
    frames.push(wire.encodeResponse({ id: BigInt(i), statusCode: i % 7, message: 'm'.repeat(i * 7), records: i }));
  }
  frames.push(wire.encodeResponse({ id: 41n, message: 'x'.repeat(70000) }));
  const all = Buffer.concat(frames);
  for (const size of [1, 2, 3, 5, 7, 64, 1000, all.length]) {
    const reader = new wire.ResponseReader();
    const got = [];
    for (let off = 0; off < all.length; off += size) {
      reader.push(all.subarray(off, off + size));
      for (let r = reader.next(); r !== null; r = reader.next()) got.push(r);
    }
    assert.equal(got.length, 41, `chunks of ${size}`);
    got.forEach((r, i) => assert.equal(r.id, BigInt(i + 1)));
    assert.equal(got[40].message.length, 70000);
    assert.equal(reader.pending, 0);
  }
});

test('a length prefix split across chunks is read whole', () => {
  const reader = new wire.ResponseReader();
  reader.push(Buffer.from([0x01]));
  assert.equal(reader.next(), null);
  reader.push(Buffer.from([0x00, 0x00]));
  assert.equal(reader.next(), null);
  reader.push(Buffer.from([0x01]));
  assert.throws(() => reader.next(), { kind: 'too_large', fatal: true });
});

test('malformed answers are refused as protobuf faults', () => {
  const cases = {
    'field 3 with a varint wire type': '00000003011801',
    'a message that is not UTF-8': '00000004011a01ff',
    'an end-group tag alone': '000000020114',
    'a varint of 11 bytes': '0000000c0108ffffffffffffffffffff01',
    'a 10-byte varint over 64 bits': '0000000b0108ffffffffffffffffff02',
    'a fixed64 cut short': '0000000401890100',
  };
  for (const [name, hex] of Object.entries(cases)) {
    assert.throws(() => wire.decodeResponseFrame(Buffer.from(hex, 'hex')), { kind: 'protobuf' }, name);
  }
});

test('groups of unknown fields are skipped', () => {
  // field 15 start group, inside field 1 varint, field 15 end group; then id 3.
  const body = Buffer.from('7b08017c0803', 'hex');
  const frame = Buffer.concat([Buffer.from([0, 0, 0, body.length + 1, 1]), body]);
  assert.equal(wire.decodeResponseFrame(frame).id, 3n);
});

test('request frames take records with random keys and strings as data', () => {
  const rec = makeRecord('héllo', undefined, null);
  assert.equal(rec.pk, null);
  const frame = wire.encodeFrame(1, true, null, [rec], 0, 1);
  // length, version, id, record (key of 16 hex digits, data), ack
  const m = /^0801121a0a10([0-9a-f]{32})1a0668c3a96c6c6f1801$/.exec(frame.subarray(5).toString('hex'));
  assert.ok(m, frame.toString('hex'));
  assert.match(Buffer.from(m[1], 'hex').toString('latin1'), /^[0-9a-f]{16}$/);
  assert.equal(frame.readUInt32BE(0), frame.length - 4);
});
