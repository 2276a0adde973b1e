#!/usr/bin/env node
// Benchmark: puts N records of SIZE bytes through one Producer as fast as it can and waits
// for every ack; prints one JSON line per round:
//   {"client":"node","records":N,"seconds":S,"records_per_sec":R}
// Usage: node bench.js --socket PATH [--records 200000] [--size 256] [--rounds 1]
'use strict';

const { Producer } = require('.');

function parseArgs(argv) {
  const args = { socket: null, records: 200000, size: 256, rounds: 1 };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split('=', 2);
    const value = inline ?? argv[++i];
    switch (flag) {
      case '--socket': args.socket = value; break;
      case '--records': args.records = Number(value); break;
      case '--size': args.size = Number(value); break;
      case '--rounds': args.rounds = Number(value); break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!args.socket) throw new Error('--socket PATH is required');
  for (const k of ['records', 'size', 'rounds']) {
    if (!Number.isInteger(args[k]) || args[k] < 1) throw new Error(`--${k} must be a positive integer`);
  }
  return args;
}

/** Distinct payloads of `size` bytes, reused in turn (put copies them into its frames). */
function payloads(size, count = 1024) {
  const out = [];
  for (let i = 0; i < count; i++) {
    const b = Buffer.alloc(size, 0x61 + (i % 26));
    b.write(`${i}`, 0, 'latin1');
    out.push(b);
  }
  return out;
}

async function round(socket, records, data) {
  const producer = new Producer(socket);
  let acked = 0;
  let failed = 0;
  let firstError = null;
  const ok = () => { acked++; };
  const fail = (e) => { failed++; if (firstError === null) firstError = e; };
  const mask = data.length - 1;
  const start = process.hrtime.bigint();
  for (let i = 0; i < records; i++) {
    if (producer.full) await producer.ready();
    producer.put(data[i & mask]).then(ok, fail);
  }
  await producer.flush();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await producer.close();
  // Let the last reactions run before counting.
  await new Promise((r) => setImmediate(r));
  if (failed > 0 || acked !== records) {
    throw new Error(`${failed} of ${records} records failed (acked ${acked}): ${firstError}`);
  }
  return seconds;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const data = payloads(args.size);
  for (let r = 0; r < args.rounds; r++) {
    const seconds = await round(args.socket, args.records, data);
    process.stdout.write(`${JSON.stringify({
      client: 'node',
      records: args.records,
      seconds: Math.round(seconds * 1000) / 1000,
      records_per_sec: Math.round(args.records / seconds),
    })}\n`);
  }
}

main().catch((e) => {
  process.stderr.write(`bench: ${e.message}\n`);
  process.exit(1);
});
