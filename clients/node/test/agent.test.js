// Tests against the real agent and the Kinesis emulator: 100,000 records acked and read back
// by content, streams named per request, bad input refused before sending, SPOOL_FULL.
'use strict';

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { realParts, tempDir, waitFor, Emulator, Agent, agentConfig } = require('../testing/harness');
const { newTag, byIndex, putAll, tagged } = require('../testing/records');
const { Producer, InvalidRecordError, RecordTooLargeError, SpoolFullError } = require('..');

const parts = realParts();
/** Only against hangs: nothing here is timed. */
const T = { timeout: 600000 };

describe('with the real agent', { skip: parts.skip }, () => {
  let emulator;
  const dirs = [];
  const agents = [];

  before(async () => {
    emulator = await Emulator.start(parts.emulator, ['logs:4', 'audit:1']);
  });
  after(async () => {
    for (const a of agents) await a.kill();
    if (emulator) await emulator.stop();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  async function startAgent(opts = {}) {
    const dir = tempDir();
    dirs.push(dir);
    const agent = new Agent(parts.bin, dir, agentConfig(dir, { endpoint: emulator.endpoint, ...opts }));
    agents.push(agent);
    await agent.start();
    return agent;
  }

  /** Reads `stream` until every index in `want` of `tag` is there; returns index -> copies. */
  async function readBack(stream, tag, want, dir) {
    let found;
    await waitFor(async () => {
      found = byIndex(tag, await emulator.read(stream, dir));
      return want.every((i) => found.has(i));
    }, `${want.length} records of ${tag} in ${stream}`, 300000, 1000);
    return found;
  }

  test('100,000 records of 256 bytes: every one acked, then read back from the stream by content', T, async () => {
    const agent = await startAgent();
    const producer = new Producer(agent.socket);
    const tag = newTag('bulk');
    const N = 100000;
    const last = '340282366920938463463374607431768211455';
    const opts = (i) => {
      if (i === 1) return { partitionKey: 'first-shard', explicitHashKey: '0' };
      if (i === 2) return { partitionKey: 'last-shard', explicitHashKey: last };
      if (i % 1000 === 0) return { partitionKey: `user-${i}` };
      return undefined;
    };
    const { outcomes, settled } = await putAll(producer, tag, N, { opts });
    await settled;
    const failed = outcomes.filter((o) => o !== 'acked');
    assert.equal(failed.length, 0, `failures: ${failed.slice(0, 3).join('; ')}`);
    await producer.close();
    assert.equal(producer.stats.acked, N);

    const all = Array.from({ length: N }, (_, i) => i);
    const found = await readBack('logs', tag, all, agent.dir);
    assert.equal(found.size, N);
    for (const [i, copies] of found) {
      const r = copies[0];
      assert.ok(r.data.equals(tagged(tag, i)), `record ${i} arrived with other content`);
      if (i === 1) assert.equal(r.shard, 'shardId-000000000000');
      else if (i === 2) assert.equal(r.shard, 'shardId-000000000003');
      else if (i % 1000 === 0) assert.equal(r.partitionKey, `user-${i}`);
      else assert.match(r.partitionKey, /^[0-9a-f]{16}$/);
    }
  });

  test('bad input is refused by put before anything is sent', T, async () => {
    const agent = await startAgent();
    const producer = new Producer(agent.socket);
    const tag = newTag('bad');
    const refused = await Promise.allSettled([
      producer.put(tagged(tag, 0), { partitionKey: '' }),
      producer.put(tagged(tag, 1), { partitionKey: 'k'.repeat(257) }),
      producer.put(tagged(tag, 2), { explicitHashKey: '340282366920938463463374607431768211456' }),
      producer.put(tagged(tag, 3), { recordId: 'no spaces' }),
      producer.put(Buffer.concat([tagged(tag, 4), Buffer.alloc(10 * 1024 * 1024)])),
    ]);
    assert.equal(producer.outstanding, 0);
    assert.equal(producer.stats.connected, false, 'nothing was even connected for');
    const errs = refused.map((r) => r.reason);
    assert.ok(errs.slice(0, 4).every((e) => e instanceof InvalidRecordError && e.status === null && !e.inDoubt));
    assert.ok(errs[4] instanceof RecordTooLargeError);
    await producer.put(tagged(tag, 5));
    await producer.close();
    const found = await readBack('logs', tag, [5], agent.dir);
    assert.deepEqual([...found.keys()], [5], 'only the valid record arrived');
  });

  test('SPOOL_FULL comes back as SpoolFullError: not spooled, not in doubt', T, async () => {
    const agent = await startAgent({ spoolFull: true });
    const producer = new Producer(agent.socket);
    const tag = newTag('full');
    let full = null;
    let acked = 0;
    for (let batch = 0; batch < 2000 && full === null; batch++) {
      const puts = [];
      for (let i = 0; i < 20; i++) puts.push(producer.put(tagged(tag, batch * 20 + i, 16384)));
      for (const r of await Promise.allSettled(puts)) {
        if (r.status === 'fulfilled') acked++;
        else if (full === null) full = r.reason;
      }
    }
    assert.ok(full !== null, 'the agent never answered SPOOL_FULL');
    assert.ok(full instanceof SpoolFullError, String(full));
    assert.equal(full.status, 'SPOOL_FULL');
    assert.equal(full.statusCode, 3);
    assert.equal(full.inDoubt, false);
    assert.equal(full.code, 'ERR_SHARDLINE_SPOOL_FULL');
    assert.ok(acked > 0, 'some records were spooled before the spool filled');
    await producer.close({ timeout: 10000 });
  });

  test('a request names its stream: allowed ones are delivered there, others refused', T, async (t) => {
    const dir = tempDir();
    dirs.push(dir);
    const config = agentConfig(dir, { endpoint: emulator.endpoint, streams: ['audit'] });
    const agent = new Agent(parts.bin, dir, config);
    agents.push(agent);
    await agent.start();
    const tag = newTag('streams');
    const producer = new Producer(agent.socket);
    const toAudit = new Producer(agent.socket, { stream: 'audit' });
    const puts = [];
    for (let i = 0; i < 20; i++) puts.push(producer.put(tagged(tag, i), i < 10 ? { stream: 'audit' } : undefined));
    for (let i = 20; i < 25; i++) puts.push(toAudit.put(tagged(tag, i)));
    await Promise.all(puts);
    await assert.rejects(producer.put(tagged(tag, 99), { stream: 'elsewhere' }),
      (e) => e instanceof InvalidRecordError && e.status === 'INVALID_RECORD' && !e.inDoubt && /elsewhere/.test(e.message));
    await producer.close();
    await toAudit.close();
    const audit = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21, 22, 23, 24];
    const inAudit = await readBack('audit', tag, audit, dir);
    assert.deepEqual([...inAudit.keys()].sort((a, b) => a - b), audit);
    const inLogs = await readBack('logs', tag, [10, 11, 12, 13, 14, 15, 16, 17, 18, 19], dir);
    assert.equal(inLogs.size, 10);
  });
});
