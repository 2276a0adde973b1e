// Client-side record validation (the agent's own rules, checked before anything is queued)
// and the making of the internal record a frame is encoded from.
'use strict';

const { InvalidRecordError, RecordTooLargeError } = require('./errors');
const { sizeRecord, recordFrameBytes, randomPartitionKey } = require('./wire');

/** Data plus partition key (UTF-8 bytes) may be at most this long. */
const MAX_RECORD_BYTES = 10 * 1024 * 1024;
const MAX_PARTITION_KEY_CHARS = 256;
const MAX_RECORD_ID_CHARS = 64;
const MAX_HASH_KEY = '340282366920938463463374607431768211455'; // 2^128 - 1
const DIGITS = /^[0-9]+$/;
const RECORD_ID = /^[A-Za-z0-9._:-]{1,64}$/;

function invalid(message) {
  return new InvalidRecordError(message);
}

/** Quotes at most 64 characters of a value the caller gave, for a message. */
function excerpt(value) {
  const s = String(value);
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}…` : s);
}

/** Number of Unicode code points of a well-formed string. */
function codePoints(s) {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) n--; // a pair's first half: the pair counts once
  }
  return n;
}

function checkPartitionKey(pk) {
  if (typeof pk !== 'string') throw invalid(`partition key must be a string, not ${typeof pk}`);
  if (pk.length === 0) throw invalid('partition key is empty');
  if (!pk.isWellFormed()) throw invalid('partition key is not valid Unicode (lone surrogate)');
  if (pk.length > MAX_PARTITION_KEY_CHARS) {
    const chars = codePoints(pk);
    if (chars > MAX_PARTITION_KEY_CHARS) {
      throw invalid(`partition key of ${chars} characters exceeds the ${MAX_PARTITION_KEY_CHARS}-character Kinesis limit`);
    }
  }
}

/** The explicit hash key as the decimal string sent, or throws. Takes a string or a BigInt. */
function checkExplicitHashKey(ehk) {
  if (typeof ehk === 'bigint') {
    if (ehk < 0n || ehk > 2n ** 128n - 1n) throw invalid(`explicit hash key ${ehk} is not a decimal integer in 0..2^128`);
    return ehk.toString();
  }
  if (typeof ehk !== 'string') throw invalid(`explicit hash key must be a string of digits or a BigInt, not ${typeof ehk}`);
  if (!DIGITS.test(ehk)) throw invalid(`explicit hash key ${excerpt(ehk)} is not a decimal integer in 0..2^128`);
  let i = 0;
  while (i < ehk.length - 1 && ehk.charCodeAt(i) === 48) i++;
  const digits = ehk.length - i;
  if (digits > MAX_HASH_KEY.length || (digits === MAX_HASH_KEY.length && ehk.slice(i) > MAX_HASH_KEY)) {
    throw invalid(`explicit hash key ${excerpt(ehk)} is not a decimal integer in 0..2^128`);
  }
  return ehk;
}

function checkRecordId(rid) {
  if (typeof rid !== 'string') throw invalid(`record id must be a string, not ${typeof rid}`);
  if (!RECORD_ID.test(rid)) {
    throw invalid(`record id ${excerpt(rid)} is not 1 to ${MAX_RECORD_ID_CHARS} ASCII letters, digits and -._:`);
  }
}

function checkStream(stream) {
  if (typeof stream !== 'string') throw invalid(`stream must be a string, not ${typeof stream}`);
  if (stream.length === 0) throw invalid('stream is empty');
  if (!stream.isWellFormed()) throw invalid('stream is not valid Unicode (lone surrogate)');
}

/**
 * The internal record for put(data, opts), or throws InvalidRecordError / RecordTooLargeError.
 * data: Buffer, Uint8Array (or another ArrayBuffer view) or string (sent as UTF-8).
 * The internal record keeps a reference to data (copied only into the frame).
 */
function makeRecord(data, opts, defaultStream) {
  let dataLen;
  if (typeof data === 'string') {
    dataLen = Buffer.byteLength(data, 'utf8');
  } else if (data instanceof Uint8Array) {
    dataLen = data.length;
  } else if (ArrayBuffer.isView(data)) {
    data = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    dataLen = data.length;
  } else {
    throw invalid(`data must be a Buffer, Uint8Array or string, not ${data === null ? 'null' : typeof data}`);
  }
  let pk;
  let pkLen;
  let ehk = null;
  let rid = null;
  let stream = defaultStream;
  if (opts === undefined || opts === null) {
    pk = null; // random, made when the frame is written
    pkLen = 16;
  } else {
    if (typeof opts !== 'object') throw invalid('options must be an object');
    const k = opts.partitionKey;
    if (k === undefined || k === null) {
      pk = null;
      pkLen = 16;
    } else {
      checkPartitionKey(k);
      pk = k;
      pkLen = Buffer.byteLength(k, 'utf8');
    }
    if (opts.explicitHashKey !== undefined && opts.explicitHashKey !== null) ehk = checkExplicitHashKey(opts.explicitHashKey);
    if (opts.recordId !== undefined && opts.recordId !== null) { checkRecordId(opts.recordId); rid = opts.recordId; }
    if (opts.stream !== undefined && opts.stream !== null) { checkStream(opts.stream); stream = opts.stream; }
  }
  if (dataLen + pkLen > MAX_RECORD_BYTES) {
    throw new RecordTooLargeError(`record of ${dataLen + pkLen} bytes exceeds the ${MAX_RECORD_BYTES}-byte Kinesis limit`);
  }
  const rec = new Rec(data, dataLen, pk, pkLen, ehk, rid, stream);
  sizeRecord(rec);
  rec.fb = recordFrameBytes(rec);
  return rec;
}

/** A queued record: what its frame is encoded from, and its promise's settlers. */
class Rec {
  constructor(data, dataLen, pk, pkLen, ehk, rid, stream) {
    this.data = data;
    this.dataLen = dataLen;
    this.pk = pk;
    this.pkLen = pkLen;
    this.ehk = ehk;
    this.rid = rid;
    this.stream = stream;
    this.size = 0; // bytes of its Record message
    this.fb = 0; // bytes it adds to a request frame
    this.seq = 0; // put order
    this.resolve = null;
    this.reject = null;
  }
}

module.exports = {
  MAX_RECORD_BYTES,
  MAX_PARTITION_KEY_CHARS,
  makeRecord,
  randomPartitionKey,
  checkPartitionKey,
  checkExplicitHashKey,
  checkRecordId,
  checkStream,
  codePoints,
};
