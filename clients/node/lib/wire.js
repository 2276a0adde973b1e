// The framed protocol, version 1, by hand: request frames encoded byte-for-byte as prost
// writes them, and answer frames decoded from a growing buffer (unknown fields skipped,
// malformed input refused with the kind of fault).
'use strict';

const { randomFillSync } = require('node:crypto');

const VERSION = 1;
/** Longest frame either side accepts (what follows the length prefix). */
const MAX_FRAME_BYTES = 16 * 1024 * 1024;
const STATUS_NAMES = ['OK', 'INVALID_RECORD', 'RECORD_TOO_LARGE', 'SPOOL_FULL', 'SHUTTING_DOWN', 'BAD_FRAME', 'INTERNAL'];
const Status = Object.freeze(Object.fromEntries(STATUS_NAMES.map((n, i) => [n, i])));

/** A frame the decoder refuses; kind: 'too_large' | 'empty' | 'version' | 'protobuf'. */
class FrameError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'FrameError';
    this.kind = kind;
    /** Fatal: the frame's end is unknown, the connection cannot go on. */
    this.fatal = kind === 'too_large';
  }
}

/** Bytes of `v` (a non-negative Number up to 2^53, or a BigInt) as a varint. */
function varintLen(v) {
  if (typeof v === 'bigint') {
    let n = 1;
    while (v >= 128n) { v >>= 7n; n++; }
    return n;
  }
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  let n = 4;
  v = Math.floor(v / 0x10000000);
  while (v >= 1) { v = Math.floor(v / 128); n++; }
  return n;
}

function writeVarint(buf, off, v) {
  if (typeof v === 'bigint') {
    while (v >= 128n) { buf[off++] = Number(v & 127n) | 128; v >>= 7n; }
    buf[off++] = Number(v);
    return off;
  }
  while (v >= 0x80000000) { buf[off++] = (v % 128) | 128; v = Math.floor(v / 128); }
  while (v >= 128) { buf[off++] = (v & 127) | 128; v >>>= 7; }
  buf[off++] = v;
  return off;
}

/** Length of a length-delimited field of `n` bytes, key included. */
function fieldLen(n) {
  return 1 + varintLen(n) + n;
}

/**
 * Sets rec.size: the bytes of the Record message of an internal record
 * {pk, pkLen, ehk, rid, data, dataLen} (pk null: a random key of 16 hex digits, made when
 * the frame is written; ehk and rid are ASCII: their length is their bytes).
 */
function sizeRecord(rec) {
  let n = 0;
  if (rec.pkLen > 0) n += fieldLen(rec.pkLen);
  if (rec.ehk !== null) n += fieldLen(rec.ehk.length);
  if (rec.dataLen > 0) n += fieldLen(rec.dataLen);
  if (rec.rid !== null) n += fieldLen(rec.rid.length);
  rec.size = n;
  return n;
}

/** Frame bytes (length prefix included) of a request with no records. */
function frameOverhead(id, ack, streamBytes) {
  let n = 4 + 1;
  if (id !== 0 && id !== 0n) n += 1 + varintLen(id);
  if (ack) n += 2;
  if (streamBytes >= 0) n += fieldLen(streamBytes);
  return n;
}

/** Frame bytes a record adds to its request. */
function recordFrameBytes(rec) {
  return 1 + varintLen(rec.size) + rec.size;
}

// Random partition keys (a record's pk is null): 16 hex digits written straight into the
// frame from a pool of random bytes, as the agent makes them (a random u64, %016x).
const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');
const randomPool = Buffer.alloc(65536);
let randomOff = randomPool.length;

function writeRandomKey(buf, off) {
  if (randomOff === randomPool.length) { randomFillSync(randomPool); randomOff = 0; }
  const p = randomPool;
  buf[off++] = 0x0a;
  buf[off++] = 16;
  for (let i = randomOff, end = randomOff + 8; i < end; i++) {
    const b = p[i];
    buf[off++] = HEX_DIGITS[b >> 4];
    buf[off++] = HEX_DIGITS[b & 15];
  }
  randomOff += 8;
  return off;
}

/** A random partition key of 16 hex digits, as a string. */
function randomPartitionKey() {
  const b = Buffer.allocUnsafe(18);
  writeRandomKey(b, 0);
  return b.toString('latin1', 2);
}

function writeString(buf, off, key, str, len) {
  buf[off++] = key;
  off = writeVarint(buf, off, len);
  if (len > 0) buf.write(str, off, len, 'utf8');
  return off + len;
}

/**
 * One request frame holding records[start..end) (internal records, sized).
 * `frameBytes` may be given when the caller already summed it.
 */
function encodeFrame(id, ack, stream, records, start, end, frameBytes) {
  const streamBytes = stream === null ? -1 : Buffer.byteLength(stream, 'utf8');
  let total = frameBytes;
  if (total === undefined) {
    total = frameOverhead(id, ack, streamBytes);
    for (let i = start; i < end; i++) total += recordFrameBytes(records[i]);
  }
  const buf = Buffer.allocUnsafe(total);
  buf.writeUInt32BE(total - 4, 0);
  buf[4] = VERSION;
  let off = 5;
  if (id !== 0 && id !== 0n) { buf[off++] = 0x08; off = writeVarint(buf, off, id); }
  for (let i = start; i < end; i++) {
    const r = records[i];
    buf[off++] = 0x12;
    off = writeVarint(buf, off, r.size);
    if (r.pk === null) off = writeRandomKey(buf, off);
    else if (r.pkLen > 0) off = writeString(buf, off, 0x0a, r.pk, r.pkLen);
    if (r.ehk !== null) off = writeString(buf, off, 0x12, r.ehk, r.ehk.length);
    if (r.dataLen > 0) {
      buf[off++] = 0x1a;
      off = writeVarint(buf, off, r.dataLen);
      if (typeof r.data === 'string') buf.write(r.data, off, r.dataLen, 'utf8');
      else buf.set(r.data, off);
      off += r.dataLen;
    }
    if (r.rid !== null) off = writeString(buf, off, 0x22, r.rid, r.rid.length);
  }
  if (ack) { buf[off++] = 0x18; buf[off++] = 1; }
  if (stream !== null) off = writeString(buf, off, 0x22, stream, streamBytes);
  if (off !== total) throw new Error(`frame size mismatch: wrote ${off} of ${total} bytes`);
  return buf;
}

/** An internal record from wire fields, unchecked (for encoding given requests as they are). */
function rawRecord(partitionKey, explicitHashKey, data, recordId) {
  const pk = partitionKey ?? '';
  const rec = {
    pk,
    pkLen: Buffer.byteLength(pk, 'utf8'),
    ehk: explicitHashKey ?? null,
    rid: recordId ?? null,
    data,
    dataLen: typeof data === 'string' ? Buffer.byteLength(data, 'utf8') : data.length,
    size: 0,
  };
  if (rec.ehk !== null && Buffer.byteLength(rec.ehk) !== rec.ehk.length) throw new Error('explicit_hash_key must be ASCII');
  if (rec.rid !== null && Buffer.byteLength(rec.rid) !== rec.rid.length) throw new Error('record_id must be ASCII');
  sizeRecord(rec);
  return rec;
}

/**
 * Encodes a request given as {id, ack, stream?, records: [{partition_key, explicit_hash_key?,
 * data: Uint8Array|string, record_id?}]} (id: Number, BigInt or decimal string) as one frame.
 */
function encodeRequest(req) {
  let id = req.id ?? 0;
  if (typeof id === 'string') id = BigInt(id);
  const records = (req.records ?? []).map((r) =>
    rawRecord(r.partition_key, r.explicit_hash_key, r.data ?? Buffer.alloc(0), r.record_id));
  return encodeFrame(id, !!req.ack, req.stream ?? null, records, 0, records.length);
}

// ---- decoding ----

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Reads a varint at pos.off of buf (up to end) as a BigInt; refuses truncated or over-long ones. */
function readVarint(buf, pos, end) {
  let lo = 0;
  let shift = 0;
  let off = pos.off;
  // Up to 4 bytes fit a small number exactly (the usual case).
  while (off < end && shift < 28) {
    const b = buf[off++];
    lo |= (b & 127) << shift;
    shift += 7;
    if (b < 128) { pos.off = off; return BigInt(lo >>> 0); }
  }
  let v = BigInt(lo >>> 0);
  let count = 4;
  while (off < end) {
    const b = buf[off++];
    if (count === 9 && b > 1) throw new FrameError('protobuf', 'invalid varint');
    v |= BigInt(b & 127) << BigInt(shift);
    shift += 7;
    count++;
    if (b < 128) { pos.off = off; return v; }
  }
  throw new FrameError('protobuf', 'truncated varint');
}

function skipField(buf, pos, end, wireType, fieldNumber, depth) {
  switch (wireType) {
    case 0: readVarint(buf, pos, end); return;
    case 1: advance(pos, end, 8); return;
    case 5: advance(pos, end, 4); return;
    case 2: advance(pos, end, lengthOf(buf, pos, end)); return;
    case 3: {
      if (depth > 100) throw new FrameError('protobuf', 'recursion limit reached');
      for (;;) {
        const [wt, fn] = readKey(buf, pos, end);
        if (wt === 4) {
          if (fn !== fieldNumber) throw new FrameError('protobuf', 'unexpected end group tag');
          return;
        }
        skipField(buf, pos, end, wt, fn, depth + 1);
      }
    }
    case 4: throw new FrameError('protobuf', 'unexpected end group tag');
    default: throw new FrameError('protobuf', `invalid wire type value: ${wireType}`);
  }
}

function advance(pos, end, n) {
  if (n > end - pos.off) throw new FrameError('protobuf', 'buffer underflow');
  pos.off += n;
}

function lengthOf(buf, pos, end) {
  const n = readVarint(buf, pos, end);
  if (n > BigInt(end - pos.off)) throw new FrameError('protobuf', 'buffer underflow');
  return Number(n);
}

function readKey(buf, pos, end) {
  const key = readVarint(buf, pos, end);
  if (key > 0xffffffffn) throw new FrameError('protobuf', `invalid key value: ${key}`);
  const k = Number(key);
  const wireType = k & 7;
  if (wireType > 5) throw new FrameError('protobuf', `invalid wire type value: ${wireType}`);
  const fieldNumber = Math.floor(k / 8);
  if (fieldNumber < 1) throw new FrameError('protobuf', 'invalid tag value: 0');
  return [wireType, fieldNumber];
}

function expectWireType(got, want, field) {
  if (got !== want) throw new FrameError('protobuf', `Response.${field}: invalid wire type: ${got} (expected ${want})`);
}

/**
 * Decodes a Response message from buf[start..end): {id: BigInt, statusCode, status (name or
 * null when unknown), message, records}.
 */
function decodeResponseBody(buf, start, end) {
  const pos = { off: start };
  let id = 0n;
  let statusCode = 0;
  let message = '';
  let records = 0;
  while (pos.off < end) {
    const [wt, fn] = readKey(buf, pos, end);
    switch (fn) {
      case 1: expectWireType(wt, 0, 'id'); id = BigInt.asUintN(64, readVarint(buf, pos, end)); break;
      case 2: expectWireType(wt, 0, 'status'); statusCode = Number(BigInt.asIntN(32, readVarint(buf, pos, end))); break;
      case 3: {
        expectWireType(wt, 2, 'message');
        const n = lengthOf(buf, pos, end);
        try {
          message = utf8.decode(buf.subarray(pos.off, pos.off + n));
        } catch {
          throw new FrameError('protobuf', 'Response.message: invalid string value: data is not UTF-8 encoded');
        }
        pos.off += n;
        break;
      }
      case 4: expectWireType(wt, 0, 'records'); records = Number(BigInt.asUintN(32, readVarint(buf, pos, end))); break;
      default: skipField(buf, pos, end, wt, fn, 0);
    }
  }
  const status = statusCode >= 0 && statusCode < STATUS_NAMES.length ? STATUS_NAMES[statusCode] : null;
  return { id, statusCode, status, message, records };
}

/**
 * Takes answer frames off a stream of chunks. push() a chunk, then call next() until it
 * returns null (more bytes needed). next() throws a FrameError for a bad frame: after a
 * non-fatal one the reader is past it and can go on; after a fatal one it must be dropped.
 * A frame is decoded in place in the chunk it arrived in; only a frame split across chunks
 * is joined (once, when all of it came).
 */
class ResponseReader {
  constructor(maxFrameBytes = MAX_FRAME_BYTES) {
    this.maxFrameBytes = maxFrameBytes;
    this.parts = []; // chunks held; the first from this.off
    this.off = 0;
    this.held = 0; // bytes held and not yet decoded
  }

  /** Bytes held and not yet decoded. */
  get pending() {
    return this.held;
  }

  push(chunk) {
    if (chunk.length === 0) return;
    this.parts.push(chunk);
    this.held += chunk.length;
  }

  /** The length prefix of the frame at the front when it spans chunks. */
  headerAcross() {
    let v = 0;
    let n = 0;
    for (let i = 0, off = this.off; n < 4; i++, off = 0) {
      const p = this.parts[i];
      for (; off < p.length && n < 4; off++, n++) v = v * 256 + p[off];
    }
    return v;
  }

  /** The next answer, or null when more bytes are needed. */
  next() {
    if (this.held < 4) return null;
    let buf = this.parts[0];
    let off = this.off;
    const len = buf.length - off >= 4 ? buf.readUInt32BE(off) : this.headerAcross();
    if (len > this.maxFrameBytes) {
      throw new FrameError('too_large', `frame of ${len} bytes exceeds the ${this.maxFrameBytes}-byte frame limit`);
    }
    if (this.held < 4 + len) return null;
    if (buf.length - off < 4 + len) {
      this.parts[0] = buf.subarray(off);
      buf = Buffer.concat(this.parts, this.held);
      this.parts = [buf];
      this.off = off = 0;
    }
    const start = off + 4;
    const end = start + len;
    this.held -= 4 + len;
    if (end === buf.length) { this.parts.shift(); this.off = 0; } else this.off = end;
    if (len === 0) throw new FrameError('empty', 'empty frame');
    const version = buf[start];
    if (version !== VERSION) throw new FrameError('version', `unsupported protocol version ${version} (this client speaks ${VERSION})`);
    return decodeResponseBody(buf, start + 1, end);
  }
}

/** Decodes one whole answer frame (length prefix included); throws FrameError. */
function decodeResponseFrame(frame) {
  const r = new ResponseReader();
  r.push(Buffer.from(frame));
  const resp = r.next();
  if (resp === null) throw new FrameError('protobuf', 'truncated frame');
  if (r.pending !== 0) throw new FrameError('protobuf', 'bytes after the frame');
  return resp;
}

/** Encodes a Response as one frame, canonically (for tests and fake agents). */
function encodeResponse({ id = 0n, statusCode = 0, message = '', records = 0 }) {
  const idB = BigInt(id);
  const msgLen = Buffer.byteLength(message, 'utf8');
  const code = BigInt.asUintN(64, BigInt(statusCode));
  let body = 0;
  if (idB !== 0n) body += 1 + varintLen(idB);
  if (code !== 0n) body += 1 + varintLen(code);
  if (msgLen > 0) body += fieldLen(msgLen);
  if (records !== 0) body += 1 + varintLen(records);
  const buf = Buffer.allocUnsafe(5 + body);
  buf.writeUInt32BE(1 + body, 0);
  buf[4] = VERSION;
  let off = 5;
  if (idB !== 0n) { buf[off++] = 0x08; off = writeVarint(buf, off, idB); }
  if (code !== 0n) { buf[off++] = 0x10; off = writeVarint(buf, off, code); }
  if (msgLen > 0) off = writeString(buf, off, 0x1a, message, msgLen);
  if (records !== 0) { buf[off++] = 0x20; off = writeVarint(buf, off, records); }
  return buf;
}

module.exports = {
  VERSION,
  MAX_FRAME_BYTES,
  STATUS_NAMES,
  Status,
  FrameError,
  varintLen,
  sizeRecord,
  frameOverhead,
  recordFrameBytes,
  encodeFrame,
  encodeRequest,
  rawRecord,
  randomPartitionKey,
  decodeResponseBody,
  decodeResponseFrame,
  encodeResponse,
  ResponseReader,
};
