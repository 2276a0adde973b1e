// The Producer: queues records, batches them into frames per stream, pipelines frames over
// one Unix-socket connection to the agent, matches its answers in order and settles each
// record's promise; reconnects with backoff and sends again what the agent did not take.
'use strict';

const net = require('node:net');
const { EventEmitter } = require('node:events');
const errors = require('./errors');
const { makeRecord } = require('./validate');
const { encodeFrame, frameOverhead, ResponseReader, MAX_FRAME_BYTES, Status } = require('./wire');

const { ClosedError, QueueFullError, ConnectionLostError, AgentError, InvalidRecordError,
  RecordTooLargeError, SpoolFullError } = errors;

/** Small frames due together share one write up to this many bytes. */
const CORK_BYTES = 64 * 1024;

const DEFAULTS = Object.freeze({
  lingerMs: 10,
  maxRecordsPerFrame: 500,
  maxFrameBytes: 1024 * 1024,
  maxInFlight: 16,
  maxQueuedRecords: 100000,
  maxQueuedBytes: 64 * 1024 * 1024,
  whenFull: 'block',
  reconnectMinMs: 100,
  reconnectMaxMs: 5000,
  stream: null,
  closeTimeoutMs: 30000,
});

function positiveInt(name, v, max = Number.MAX_SAFE_INTEGER) {
  if (!Number.isInteger(v) || v < 1 || v > max) throw new RangeError(`option ${name} must be an integer in 1..${max}, got ${v}`);
  return v;
}

function nonNegative(name, v) {
  if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) throw new RangeError(`option ${name} must be a finite number >= 0, got ${v}`);
  return v;
}

/** The records of one stream waiting to be written, oldest first. */
class StreamQueue {
  constructor(stream) {
    this.stream = stream; // null: the socket's own stream
    this.streamBytes = stream === null ? -1 : Buffer.byteLength(stream, 'utf8');
    this.recs = [];
    this.head = 0;
    this.bytes = 0; // frame bytes of the records waiting
  }

  get count() {
    return this.recs.length - this.head;
  }

  push(rec) {
    this.recs.push(rec);
    this.bytes += rec.fb;
  }

  /** Puts records back before the ones waiting, in their order. */
  unshift(recs) {
    this.recs = recs.concat(this.head === 0 ? this.recs : this.recs.slice(this.head));
    this.head = 0;
    for (const r of recs) this.bytes += r.fb;
  }

  /** Takes the oldest n records. */
  take(n, bytes) {
    const recs = this.recs;
    const out = recs.slice(this.head, this.head + n);
    // The queue lets go of them (the array is compacted only now and then).
    recs.fill(undefined, this.head, this.head + n);
    this.head += n;
    this.bytes -= bytes;
    if (this.head === this.recs.length) {
      this.recs = [];
      this.head = 0;
    } else if (this.head >= 4096 && this.head * 2 >= this.recs.length) {
      this.recs = this.recs.slice(this.head);
      this.head = 0;
    }
    return out;
  }
}

// One executor for every record's promise (no closure made per record).
const captured = { resolve: null, reject: null };
function capture(resolve, reject) {
  captured.resolve = resolve;
  captured.reject = reject;
}

/** The error a record gets for an agent answer other than OK and SHUTTING_DOWN. */
function answerError(resp, what) {
  const info = { status: resp.status, statusCode: resp.statusCode, inDoubt: false };
  const msg = resp.message || what;
  switch (resp.statusCode) {
    case Status.INVALID_RECORD: return new InvalidRecordError(msg, info);
    case Status.RECORD_TOO_LARGE: return new RecordTooLargeError(msg, info);
    case Status.SPOOL_FULL: return new SpoolFullError(msg, info);
    case Status.BAD_FRAME: return new AgentError(msg, info);
    case Status.INTERNAL: info.inDoubt = true; return new AgentError(msg, info);
    default:
      info.inDoubt = true;
      return new AgentError(`unknown status ${resp.statusCode}${resp.message ? `: ${resp.message}` : ''}`, info);
  }
}

/**
 * Sends records to a shardline agent's framed Unix socket.
 * Events: 'connect' (a connection is open), 'disconnect' (err: why it ended, or null), 'drain'
 * (the queue has room again after being full).
 */
class Producer extends EventEmitter {
  /**
   * @param {string} socketPath the agent's [[socket]] path (framing = "frames")
   * @param {object} [options] see README.md (lingerMs, maxRecordsPerFrame, maxFrameBytes,
   *   maxInFlight, maxQueuedRecords, maxQueuedBytes, whenFull, reconnectMinMs, reconnectMaxMs,
   *   stream, closeTimeoutMs)
   */
  constructor(socketPath, options = {}) {
    super();
    if (typeof socketPath !== 'string' || socketPath.length === 0) throw new TypeError('socketPath must be a non-empty string');
    const o = { ...DEFAULTS, ...options };
    for (const k of Object.keys(options)) {
      if (!(k in DEFAULTS)) throw new TypeError(`unknown option ${k}`);
    }
    this.socketPath = socketPath;
    this._lingerMs = nonNegative('lingerMs', o.lingerMs);
    this._maxRecords = positiveInt('maxRecordsPerFrame', o.maxRecordsPerFrame);
    this._maxFrameBytes = positiveInt('maxFrameBytes', o.maxFrameBytes, MAX_FRAME_BYTES + 4);
    this._maxInFlight = positiveInt('maxInFlight', o.maxInFlight);
    this._maxQueuedRecords = positiveInt('maxQueuedRecords', o.maxQueuedRecords);
    this._maxQueuedBytes = positiveInt('maxQueuedBytes', o.maxQueuedBytes);
    if (o.whenFull !== 'block' && o.whenFull !== 'error') throw new TypeError(`option whenFull must be 'block' or 'error', got ${o.whenFull}`);
    this._failWhenFull = o.whenFull === 'error';
    this._backoffMin = nonNegative('reconnectMinMs', o.reconnectMinMs);
    this._backoffMax = Math.max(this._backoffMin, nonNegative('reconnectMaxMs', o.reconnectMaxMs));
    if (o.stream !== null && o.stream !== undefined && (typeof o.stream !== 'string' || o.stream.length === 0)) {
      throw new TypeError('option stream must be a non-empty string');
    }
    this._defaultStream = o.stream ?? null;
    this._closeTimeoutMs = nonNegative('closeTimeoutMs', o.closeTimeoutMs);

    this._queues = new Map(); // stream (or '' for the socket's own) -> StreamQueue
    this._queued = 0; // records in the queues
    this._admitted = 0; // records queued or in flight (what the bound counts)
    this._admittedBytes = 0;
    this._parked = []; // block mode: records waiting for room, in put order
    this._parkedHead = 0;
    this._outstanding = 0;
    this._seq = 0;
    this._inflight = []; // frames written and unanswered, oldest first: {id, recs, stream}
    this._requeue = []; // frames answered SHUTTING_DOWN on the current connection
    this._writing = false; // a write is in progress on the current connection
    this._sock = null;
    this._state = 'idle'; // idle | wait | connecting | open | draining | closed
    this._nextId = 1;
    this._reader = null;
    this._failures = 0; // connections lost or refused since the last OK
    this._retryTimer = null;
    this._lingerTimer = null;
    this._lingerDue = false;
    this._flushWaiters = []; // {seq, remaining, resolve}
    this._readyWaiters = [];
    this._wasFull = false;
    this._closing = false;
    this._closePromise = null;
    this._lastError = null;
    this._counters = { acked: 0, failed: 0, inDoubt: 0, requeued: 0 };
    this._onLinger = () => { this._lingerTimer = null; this._lingerDue = true; this._pump(); };
  }

  /** Records put and not yet settled (queued, waiting for room, or written and unanswered). */
  get outstanding() {
    return this._outstanding;
  }

  /** True when a put would wait (block) or be refused (error mode). */
  get full() {
    return this._parked.length > this._parkedHead || !this._hasRoom(1);
  }

  /** Counters: outstanding, queued, inFlight (records), acked, failed, inDoubt (totals). */
  get stats() {
    let inFlight = 0;
    for (const f of this._inflight) inFlight += f.recs.length;
    return {
      outstanding: this._outstanding,
      queued: this._queued,
      waiting: this._parked.length - this._parkedHead,
      inFlight,
      acked: this._counters.acked,
      failed: this._counters.failed,
      inDoubt: this._counters.inDoubt,
      resent: this._counters.requeued,
      connected: this._state === 'open',
    };
  }

  /**
   * Queues one record. Returns a Promise that resolves (to undefined) once the agent's OK
   * covers the record (durable in its spool), or rejects with one of the errors in errors.js.
   * Never throws: bad input, a closed producer and a full queue in error mode give an
   * already-rejected promise, and nothing is queued.
   * @param {Buffer|Uint8Array|string} data
   * @param {{partitionKey?: string, explicitHashKey?: string|bigint, stream?: string, recordId?: string}} [opts]
   */
  put(data, opts) {
    let rec;
    try {
      rec = makeRecord(data, opts, this._defaultStream);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this._closing) return Promise.reject(new ClosedError('the producer is closed'));
    const waiting = this._parked.length > this._parkedHead;
    const room = !waiting && this._hasRoom(rec.fb);
    if (!room && this._failWhenFull) {
      this._wasFull = true;
      return Promise.reject(new QueueFullError(
        `the queue is full (${this._admitted} records, ${this._admittedBytes} bytes; bounds ${this._maxQueuedRecords}, ${this._maxQueuedBytes})`));
    }
    const p = new Promise(capture);
    rec.resolve = captured.resolve;
    rec.reject = captured.reject;
    rec.seq = ++this._seq;
    if (this._outstanding++ === 0 && this._sock !== null) this._sock.ref();
    if (room) this._admit(rec);
    else { this._parked.push(rec); this._wasFull = true; }
    return p;
  }

  /**
   * Resolves when the queue has room (at once if it has): in block mode, `await
   * producer.ready()` before put keeps memory within the bounds.
   */
  ready() {
    if (!this.full || this._closing) return Promise.resolve();
    this._wasFull = true;
    return new Promise((resolve) => this._readyWaiters.push(resolve));
  }

  /** Resolves once every record put before this call is settled (acked or failed). Never rejects. */
  flush() {
    if (this._outstanding === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this._flushWaiters.push({ seq: this._seq, remaining: this._outstanding, resolve });
      this._pump();
    });
  }

  /**
   * Stops new puts, sends what is queued and waits for the answers, then closes the
   * connection. Records still unanswered after timeoutMs fail: ClosedError if never written,
   * ConnectionLostError (in doubt) if written. Resolves when everything is settled.
   * @param {{timeout?: number}} [opts] milliseconds (default closeTimeoutMs, 30 s)
   */
  close({ timeout } = {}) {
    if (this._closePromise !== null) return this._closePromise;
    this._closing = true;
    const ms = timeout === undefined ? this._closeTimeoutMs : nonNegative('timeout', timeout);
    this._wakeReady();
    this._closePromise = new Promise((resolve) => {
      let timer = null;
      const finish = () => {
        if (timer !== null) clearTimeout(timer);
        this._shutdown('the producer is closed');
        resolve();
      };
      if (this._outstanding === 0) { finish(); return; }
      this._flushWaiters.push({ seq: this._seq, remaining: this._outstanding, resolve: finish });
      if (Number.isFinite(ms)) timer = setTimeout(finish, ms);
      if (this._state === 'idle') this._connect();
      this._pump();
    });
    return this._closePromise;
  }

  // ---- queue ----

  _hasRoom(bytes) {
    if (this._admitted === 0) return true; // a record larger than the byte bound still goes, alone
    return this._admitted < this._maxQueuedRecords && this._admittedBytes + bytes <= this._maxQueuedBytes;
  }

  _admit(rec) {
    this._admitted++;
    this._admittedBytes += rec.fb;
    this._queued++;
    const key = rec.stream === null ? '' : rec.stream;
    let q = this._queues.get(key);
    if (q === undefined) { q = new StreamQueue(rec.stream); this._queues.set(key, q); }
    q.push(rec);
    if (this._state !== 'open') {
      if (this._state === 'idle') this._connect();
      return;
    }
    if (q.count >= this._maxRecords || q.bytes >= this._maxFrameBytes) this._pump();
    else if (this._lingerTimer === null && !this._lingerDue) this._lingerTimer = setTimeout(this._onLinger, this._lingerMs);
  }

  /** Settles bookkeeping after records settled: bounds, parked records, flush and ready waiters. */
  _released(recs, admitted) {
    const n = recs.length;
    this._outstanding -= n;
    if (admitted) {
      this._admitted -= n;
      for (let i = 0; i < n; i++) this._admittedBytes -= recs[i].fb;
    }
    if (this._flushWaiters.length > 0) {
      const done = [];
      for (const w of this._flushWaiters) {
        for (let i = 0; i < n; i++) if (recs[i].seq <= w.seq) w.remaining--;
        if (w.remaining <= 0) done.push(w);
      }
      if (done.length > 0) {
        this._flushWaiters = this._flushWaiters.filter((w) => w.remaining > 0);
        for (const w of done) w.resolve();
      }
    }
    // Parked records enter the queue in order as room appears.
    while (this._parked.length > this._parkedHead && this._hasRoom(this._parked[this._parkedHead].fb)) {
      const rec = this._parked[this._parkedHead];
      this._parked[this._parkedHead++] = undefined;
      this._admit(rec);
    }
    if (this._parkedHead > 0 && this._parkedHead === this._parked.length) { this._parked = []; this._parkedHead = 0; }
    if (this._wasFull && !this.full) {
      this._wasFull = false;
      this._wakeReady();
      this.emit('drain');
    }
    if (this._outstanding === 0 && this._sock !== null) this._sock.unref();
  }

  _wakeReady() {
    const waiters = this._readyWaiters;
    this._readyWaiters = [];
    for (const w of waiters) w();
  }

  _resolveAll(recs) {
    this._counters.acked += recs.length;
    for (let i = 0; i < recs.length; i++) recs[i].resolve();
    this._released(recs, true);
  }

  /** Fails records; `makeError` gives each its own error. */
  _rejectAll(recs, makeError, admitted = true) {
    if (recs.length === 0) return;
    for (let i = 0; i < recs.length; i++) {
      const e = makeError();
      this._counters.failed++;
      if (e.inDoubt) this._counters.inDoubt++;
      recs[i].reject(e);
    }
    this._released(recs, admitted);
  }

  // ---- writing ----

  /**
   * Writes the frames that are due, up to maxInFlight. One write is in progress at a time:
   * frames are made only when the socket has taken the previous write (records wait in the
   * queue meanwhile and fill fuller frames), so that when a connection is lost, only the
   * frames of writes handed to the socket are in doubt; the rest were never sent. Small
   * frames due together are corked into one write, up to CORK_BYTES.
   */
  _pump() {
    if (this._state !== 'open' || this._writing || !this._sock.writable) return;
    const partial = this._lingerDue || this._closing || this._flushWaiters.length > 0;
    let frames = null;
    let bytes = 0;
    while (this._inflight.length < this._maxInFlight && this._queued > 0 && bytes < CORK_BYTES) {
      let made = false;
      for (const [key, q] of this._queues) {
        if (this._inflight.length >= this._maxInFlight || bytes >= CORK_BYTES) break;
        const n = q.count;
        if (n === 0) { this._queues.delete(key); continue; }
        if (!partial && n < this._maxRecords && q.bytes < this._maxFrameBytes) continue;
        const frame = this._makeFrame(q);
        bytes += frame.length;
        if (frames === null) frames = [frame];
        else frames.push(frame);
        made = true;
      }
      if (!made) break;
    }
    if (frames !== null) this._write(frames);
    if (this._queued === 0) {
      this._lingerDue = false;
      if (this._lingerTimer !== null) { clearTimeout(this._lingerTimer); this._lingerTimer = null; }
    } else if (this._lingerTimer === null && !this._lingerDue) {
      this._lingerTimer = setTimeout(this._onLinger, this._lingerMs);
    }
  }

  /** Hands frames to the socket as one write; the next write waits for it. */
  _write(frames) {
    const sock = this._sock;
    this._writing = true;
    const done = (err) => {
      // A broken socket writes nothing more (Node reports a write cut short by the
      // socket's end as done: the frames handed over stay in doubt).
      if (this._sock !== sock || err || !sock.writable) return;
      this._writing = false;
      this._pump();
    };
    if (frames.length === 1) {
      sock.write(frames[0], done);
      return;
    }
    sock.cork();
    const last = frames.length - 1;
    for (let i = 0; i < last; i++) sock.write(frames[i]);
    sock.write(frames[last], done);
    sock.uncork();
  }

  /** Takes one frame's worth of q's oldest records: the frame, now in flight. */
  _makeFrame(q) {
    const id = this._nextId++;
    const recs = q.recs;
    const max = Math.min(q.count, this._maxRecords);
    let bytes = frameOverhead(id, true, q.streamBytes);
    let payload = 0;
    let n = 0;
    for (let i = q.head; n < max; i++, n++) {
      const fb = recs[i].fb;
      if (n > 0 && bytes + fb > this._maxFrameBytes) break;
      bytes += fb;
      payload += fb;
    }
    const taken = q.take(n, payload);
    this._queued -= n;
    this._inflight.push({ id, recs: taken, stream: q.stream });
    return encodeFrame(id, true, q.stream, taken, 0, n, bytes);
  }

  // ---- the connection ----

  _connect() {
    if (this._state !== 'idle') return;
    this._state = 'connecting';
    const sock = net.createConnection(this.socketPath);
    this._sock = sock;
    this._lastError = null;
    if (this._outstanding === 0) sock.unref();
    sock.on('connect', () => {
      if (this._sock !== sock) return;
      this._state = 'open';
      this._nextId = 1;
      this._writing = false;
      this._reader = new ResponseReader();
      this.emit('connect');
      this._pump();
    });
    sock.on('data', (chunk) => this._onData(sock, chunk));
    sock.on('error', (e) => { if (this._sock === sock) this._lastError = e; });
    sock.on('close', () => this._onClose(sock));
  }

  _onData(sock, chunk) {
    if (this._sock !== sock) return;
    const reader = this._reader;
    reader.push(chunk);
    for (;;) {
      let resp;
      try {
        resp = reader.next();
      } catch (e) {
        if (e.fatal) { this._drop(sock, new Error(`unreadable answer from the agent: ${e.message}`)); return; }
        // Its end was known: the answer it was (for the oldest frame) is unknown.
        const f = this._inflight.shift();
        if (f !== undefined) {
          const info = { status: null, statusCode: null, inDoubt: true };
          this._rejectAll(f.recs, () => new AgentError(`unreadable answer from the agent (${e.kind}): ${e.message}`, info));
        }
        continue;
      }
      if (resp === null) break;
      const f = this._inflight[0];
      // An answer with id 0 (an unreadable frame) is the oldest frame's.
      // eslint-disable-next-line eqeqeq
      if (f === undefined || (resp.id !== 0n && resp.id != f.id)) {
        this._drop(sock, new Error(`answer ${resp.id} does not match the oldest request in flight (${f === undefined ? 'none' : f.id})`));
        return;
      }
      this._inflight.shift();
      this._onAnswer(sock, f, resp);
    }
    this._pump();
  }

  _onAnswer(sock, f, resp) {
    if (resp.statusCode === Status.OK) {
      this._failures = 0;
      this._resolveAll(f.recs);
    } else if (resp.statusCode === Status.SHUTTING_DOWN) {
      // Not spooled: sent again after reconnecting. Nothing more is written here; the
      // answers still owed are read until the agent closes.
      this._requeue.push(f);
      if (this._state === 'open') {
        this._state = 'draining';
        sock.end();
      }
    } else {
      this._rejectAll(f.recs, () => answerError(resp, 'the agent refused the request'));
    }
  }

  /** Ends a connection that cannot go on. */
  _drop(sock, err) {
    this._lastError = err;
    sock.destroy();
  }

  _onClose(sock) {
    if (this._sock !== sock) return;
    const wasOpen = this._state === 'open' || this._state === 'draining';
    const reason = this._lastError;
    this._sock = null;
    this._reader = null;
    // Not idle yet: records freed below must not start a connection before the backoff.
    this._state = 'wait';
    // Written and unanswered: in doubt.
    const lost = this._inflight;
    this._inflight = [];
    const why = reason ? reason.message : 'the agent closed the connection';
    for (const f of lost) {
      this._rejectAll(f.recs, () => new ConnectionLostError(
        `the connection ended before the agent answered (${why}): the record may or may not be spooled`,
        { inDoubt: true }));
    }
    // Answered SHUTTING_DOWN: not spooled, back to the front of their queues in order.
    const again = this._requeue;
    this._requeue = [];
    this._putBack(again);
    if (wasOpen) this.emit('disconnect', reason);
    this._failures++;
    if (this._queued > 0 || (this._closing && this._outstanding > 0)) this._scheduleConnect();
    else this._state = 'idle';
  }

  _putBack(frames) {
    if (frames.length === 0) return;
    const byStream = new Map();
    for (const f of frames) {
      const key = f.stream === null ? '' : f.stream;
      const list = byStream.get(key);
      if (list === undefined) byStream.set(key, f.recs.slice());
      else for (const r of f.recs) list.push(r);
      this._queued += f.recs.length;
      this._counters.requeued += f.recs.length;
    }
    for (const [key, recs] of byStream) {
      let q = this._queues.get(key);
      if (q === undefined) { q = new StreamQueue(recs[0].stream); this._queues.set(key, q); }
      q.unshift(recs);
    }
  }

  _scheduleConnect() {
    if (this._retryTimer !== null) return;
    const base = Math.min(this._backoffMax, this._backoffMin * 2 ** Math.min(this._failures - 1, 30));
    const delay = base * (0.75 + Math.random() * 0.5);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this._state !== 'wait') return;
      this._state = 'idle';
      this._connect();
    }, delay);
  }

  /** close's end: fails what is left, stops reconnecting, closes the connection. */
  _shutdown(why) {
    if (this._state === 'closed') return;
    if (this._retryTimer !== null) { clearTimeout(this._retryTimer); this._retryTimer = null; }
    if (this._lingerTimer !== null) { clearTimeout(this._lingerTimer); this._lingerTimer = null; }
    this._state = 'closed';
    const notSent = () => new ClosedError(`${why} before the record was sent`, { inDoubt: false });
    for (const f of this._requeue) this._rejectAll(f.recs, notSent);
    this._requeue = [];
    const lost = this._inflight;
    this._inflight = [];
    for (const f of lost) {
      this._rejectAll(f.recs, () => new ConnectionLostError(
        `${why} before the agent answered: the record may or may not be spooled`, { inDoubt: true }));
    }
    for (const q of this._queues.values()) {
      const recs = q.take(q.count, q.bytes);
      this._queued -= recs.length;
      this._rejectAll(recs, notSent);
    }
    this._queues.clear();
    const parked = this._parked.slice(this._parkedHead);
    this._parked = [];
    this._parkedHead = 0;
    this._rejectAll(parked, notSent, false);
    const sock = this._sock;
    this._sock = null;
    if (sock !== null) {
      if (lost.length > 0) sock.destroy();
      else sock.end();
    }
  }
}

module.exports = { Producer, DEFAULTS };
