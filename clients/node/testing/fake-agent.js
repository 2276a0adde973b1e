// A scripted stand-in for the agent's framed socket, for unit tests: decodes request frames
// and answers each as the test's handler says (OK by default), so tests can produce answers
// the real agent seldom gives (SHUTTING_DOWN on demand, unknown statuses, bad frames).
// Run as a program (node fake-agent.js PATH) it acks everything, for quick measurements.
'use strict';

const net = require('node:net');
const fs = require('node:fs');
const { encodeResponse, Status } = require('../lib/wire');

function varint(buf, pos) {
  let v = 0;
  let m = 1;
  for (;;) {
    const b = buf[pos.off++];
    if (b === undefined) throw new Error('truncated varint');
    v += (b & 127) * m;
    m *= 128;
    if (b < 128) return v;
  }
}

/** Decodes a request message (buf without length prefix and version byte). */
function decodeRequest(buf) {
  const pos = { off: 0 };
  const req = { id: 0, ack: false, stream: null, records: [] };
  while (pos.off < buf.length) {
    const key = varint(buf, pos);
    const fn = Math.floor(key / 8);
    const wt = key & 7;
    if (wt === 0) {
      const v = varint(buf, pos);
      if (fn === 1) req.id = v;
      else if (fn === 3) req.ack = v !== 0;
      continue;
    }
    if (wt !== 2) throw new Error(`unexpected wire type ${wt}`);
    const len = varint(buf, pos);
    const body = buf.subarray(pos.off, pos.off + len);
    pos.off += len;
    if (fn === 2) req.records.push(decodeRecord(body));
    else if (fn === 4) req.stream = body.toString('utf8');
  }
  return req;
}

function decodeRecord(buf) {
  const pos = { off: 0 };
  const rec = { partitionKey: '', explicitHashKey: null, data: Buffer.alloc(0), recordId: null };
  while (pos.off < buf.length) {
    const key = varint(buf, pos);
    const len = varint(buf, pos);
    const body = buf.subarray(pos.off, pos.off + len);
    pos.off += len;
    switch (key >> 3) {
      case 1: rec.partitionKey = body.toString('utf8'); break;
      case 2: rec.explicitHashKey = body.toString('utf8'); break;
      case 3: rec.data = Buffer.from(body); break;
      case 4: rec.recordId = body.toString('utf8'); break;
      default: break;
    }
  }
  return rec;
}

/**
 * Starts a fake agent on `path`. handler(req, conn) returns what to do with a request:
 * undefined/'ok' (answer OK), a response object for encodeResponse ({statusCode, message}; id
 * filled in), 'hold' (answer nothing now; conn.answer(req, resp) later), 'close' (close the
 * connection without answering), or a Buffer (written as is). onConnection(conn, index) is
 * called for each new connection (e.g. to pause reading). Resolves to
 * {server, requests, connections, close()}.
 */
function startFakeAgent(path, handler = () => undefined, { onConnection = null } = {}) {
  try { fs.unlinkSync(path); } catch { /* none */ }
  const state = { requests: [], connections: [], server: null };
  const server = net.createServer((sock) => {
    const conn = {
      sock,
      answer(req, resp = {}) {
        sock.write(encodeResponse({ id: BigInt(req.id), records: req.records.length, ...resp }));
      },
    };
    state.connections.push(conn);
    if (onConnection) onConnection(conn, state.connections.length - 1);
    let parts = [];
    let held = 0;
    sock.on('error', () => {});
    sock.on('data', (chunk) => {
      parts.push(chunk);
      held += chunk.length;
      let buf = parts.length === 1 ? parts[0] : Buffer.concat(parts, held);
      let off = 0;
      const out = [];
      while (buf.length - off >= 4) {
        const len = buf.readUInt32BE(off);
        if (buf.length - off < 4 + len) break;
        const req = decodeRequest(buf.subarray(off + 5, off + 4 + len));
        off += 4 + len;
        state.requests.push(req);
        const what = handler(req, conn);
        if (what === undefined || what === 'ok') out.push(encodeResponse({ id: BigInt(req.id), records: req.records.length }));
        else if (what === 'hold') continue;
        else if (what === 'close') { if (out.length) sock.write(Buffer.concat(out)); sock.destroy(); return; }
        else if (Buffer.isBuffer(what)) out.push(what);
        else out.push(encodeResponse({ id: BigInt(req.id), ...what }));
      }
      buf = buf.subarray(off);
      parts = buf.length ? [buf] : [];
      held = buf.length;
      if (out.length) sock.write(out.length === 1 ? out[0] : Buffer.concat(out));
    });
  });
  state.server = server;
  state.close = () => new Promise((resolve) => {
    for (const c of state.connections) c.sock.destroy();
    server.close(() => resolve());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve(state));
  });
}

module.exports = { startFakeAgent, decodeRequest, Status };

if (require.main === module) {
  startFakeAgent(process.argv[2]).then(() => process.stdout.write('ready\n'));
}
