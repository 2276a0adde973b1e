// Test records that can be found again: each carries its test's tag and its index, so what
// the emulator holds can be matched to what was put, one by one, by content.
'use strict';

const SIZE = 256;

/** A 256-byte record: "<tag>-<index>-" then dots. */
function tagged(tag, i, size = SIZE) {
  const b = Buffer.alloc(size, 0x2e);
  b.write(`${tag}-${i}-`, 0, 'latin1');
  return b;
}

/** A tag no other test or run shares. */
function newTag(name) {
  return `${name}-${process.pid}-${Date.now().toString(36)}`;
}

/** Index of a record of `tag` (from its data), or -1 when it is another test's. */
function indexOf(tag, data) {
  const prefix = `${tag}-`;
  const s = data.toString('latin1', 0, Math.min(data.length, prefix.length + 24));
  if (!s.startsWith(prefix)) return -1;
  const end = s.indexOf('-', prefix.length);
  return Number(s.slice(prefix.length, end));
}

/** The records of `tag` among `records` read back: Map index -> [record, …] (copies counted). */
function byIndex(tag, records) {
  const found = new Map();
  for (const r of records) {
    const i = indexOf(tag, r.data);
    if (i < 0) continue;
    const list = found.get(i);
    if (list) list.push(r);
    else found.set(i, [r]);
  }
  return found;
}

/**
 * Puts `n` tagged records through `producer`, waiting for room when it is full, and
 * records each outcome: outcomes[i] = 'acked' or the error. `opts(i)` gives put options;
 * `during(i)` runs before put i (may return a promise, awaited).
 */
async function putAll(producer, tag, n, { opts = () => undefined, during = null, size = SIZE } = {}) {
  const outcomes = new Array(n);
  const acks = new Array(n);
  for (let i = 0; i < n; i++) {
    if (during) await during(i);
    if (producer.full) await producer.ready();
    acks[i] = producer.put(tagged(tag, i, size), opts(i)).then(
      () => { outcomes[i] = 'acked'; },
      (e) => { outcomes[i] = e; },
    );
  }
  return { outcomes, settled: Promise.all(acks) };
}

module.exports = { tagged, newTag, indexOf, byIndex, putAll, SIZE };
