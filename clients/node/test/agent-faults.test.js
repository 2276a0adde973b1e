// Tests against the real agent when it fails: SIGKILL mid-stream, SIGSTOP (acks stop: the
// queue fills, in error and in block mode), and a clean SIGTERM restart while putting.
'use strict';

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { realParts, tempDir, waitFor, sleep, Emulator, Agent, agentConfig } = require('../testing/harness');
const { newTag, byIndex, putAll, tagged } = require('../testing/records');
const { Producer, ConnectionLostError, ClosedError, QueueFullError } = require('..');

const parts = realParts();
/** Only against hangs: nothing here is timed. */
const T = { timeout: 600000 };
const FAST_RECONNECT = { reconnectMinMs: 20, reconnectMaxMs: 200 };

describe('when the real agent fails', { skip: parts.skip }, () => {
  let emulator;
  const dirs = [];
  const agents = [];

  before(async () => {
    emulator = await Emulator.start(parts.emulator, ['logs:4']);
  });
  after(async () => {
    for (const a of agents) await a.kill();
    if (emulator) await emulator.stop();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  async function startAgent() {
    const dir = tempDir();
    dirs.push(dir);
    const agent = new Agent(parts.bin, dir, agentConfig(dir, { endpoint: emulator.endpoint }));
    agents.push(agent);
    await agent.start();
    return agent;
  }

  async function readBack(tag, want, dir) {
    let found;
    await waitFor(async () => {
      found = byIndex(tag, await emulator.read('logs', dir));
      return want.every((i) => found.has(i));
    }, `${want.length} records of ${tag}`, 300000, 1000);
    return found;
  }

  const count = (outcomes, pred) => outcomes.reduce((n, o) => n + (pred(o) ? 1 : 0), 0);

  test('SIGKILL mid-stream: acked records arrive, unacked ones are reported, the rest goes after a restart', T, async (t) => {
    const agent = await startAgent();
    const producer = new Producer(agent.socket, FAST_RECONNECT);
    const tag = newTag('kill');
    const N = 100000;
    let killedAt = -1;
    // Killed from a timer while frames are in flight (the puts below do not wait).
    const killed = waitFor(() => producer.stats.acked >= 10000, 'some acks before the kill', 120000, 1)
      .then(() => { killedAt = producer.stats.acked; return agent.kill(); });
    const { outcomes, settled } = await putAll(producer, tag, N);
    await killed;
    // The agent is dead: what was written and unanswered is failed in doubt; the rest waits.
    await waitFor(() => producer.stats.inFlight === 0 && !producer.stats.connected, 'the lost connection');
    const waiting = producer.outstanding;
    t.diagnostic(`killed after ${killedAt} acks; in doubt ${producer.stats.inDoubt}; waiting ${waiting}`);
    assert.ok(waiting > 0, 'records put after the kill wait for the agent');
    await agent.start();
    await settled;
    await producer.close();
    assert.equal(producer.outstanding, 0);
    const acked = [];
    outcomes.forEach((o, i) => {
      if (o === 'acked') { acked.push(i); return; }
      assert.ok(o instanceof ConnectionLostError && o.inDoubt === true, `record ${i}: ${o}`);
    });
    assert.equal(acked.length + producer.stats.inDoubt, N);
    assert.ok(acked.length >= killedAt + waiting, 'everything that waited went through after the restart');
    t.diagnostic(`acked ${acked.length}, in doubt ${N - acked.length}`);
    const found = await readBack(tag, acked, agent.dir);
    for (const i of acked) assert.ok(found.get(i)[0].data.equals(tagged(tag, i)));
    const doubtful = outcomes.map((o, i) => (o === 'acked' ? -1 : i)).filter((i) => i >= 0);
    t.diagnostic(`of ${doubtful.length} in doubt, ${doubtful.filter((i) => found.has(i)).length} were spooled after all`);
  });

  test('agent down at close: nothing left pending, never-written records fail with ClosedError', T, async () => {
    const agent = await startAgent();
    const producer = new Producer(agent.socket, FAST_RECONNECT);
    await producer.put(Buffer.from('warm-up'));
    await agent.kill();
    await waitFor(() => !producer.stats.connected, 'the lost connection');
    const acks = [];
    for (let i = 0; i < 100; i++) acks.push(producer.put(Buffer.from(`never-${i}`)));
    await producer.close({ timeout: 300 });
    assert.equal(producer.outstanding, 0);
    const results = await Promise.allSettled(acks);
    assert.ok(results.every((r) => r.status === 'rejected' && r.reason instanceof ClosedError && !r.reason.inDoubt));
  });

  test('SIGSTOP in error mode: the queue fills and put fails with QueueFullError; SIGCONT and all are acked', T, async (t) => {
    const agent = await startAgent();
    t.after(() => agent.signal('SIGCONT'));
    const producer = new Producer(agent.socket, { whenFull: 'error', maxQueuedRecords: 2000 });
    await producer.put(Buffer.from('warm-up'));
    agent.signal('SIGSTOP');
    const tag = newTag('stop-error');
    const acks = [];
    for (let i = 0; i < 2000; i++) acks.push(producer.put(tagged(tag, i)));
    assert.equal(producer.full, true);
    await assert.rejects(producer.put(tagged(tag, 2000)), (e) => e instanceof QueueFullError && !e.inDoubt && e.status === null);
    assert.equal(producer.outstanding, 2000);
    agent.signal('SIGCONT');
    await Promise.all(acks);
    await producer.put(tagged(tag, 2001));
    await producer.close();
    await readBack(tag, [0, 999, 1999, 2001], agent.dir);
  });

  test('SIGSTOP in block mode: ready() waits while the queue is full; SIGCONT and everything goes', T, async (t) => {
    const agent = await startAgent();
    t.after(() => agent.signal('SIGCONT'));
    const producer = new Producer(agent.socket, { maxQueuedRecords: 2000 });
    await producer.put(Buffer.from('warm-up'));
    agent.signal('SIGSTOP');
    const tag = newTag('stop-block');
    const acks = [];
    for (let i = 0; i < 2000; i++) acks.push(producer.put(tagged(tag, i)));
    assert.equal(producer.full, true);
    let ready = false;
    const whenReady = producer.ready().then(() => { ready = true; });
    const drained = new Promise((r) => producer.once('drain', r));
    // Puts beyond the bound wait in order, like blocked callers.
    for (let i = 2000; i < 2100; i++) acks.push(producer.put(tagged(tag, i)));
    assert.equal(producer.stats.waiting, 100);
    await sleep(500);
    assert.equal(ready, false, 'no room while the agent is stopped');
    assert.equal(producer.stats.acked, 1);
    agent.signal('SIGCONT');
    await whenReady;
    await drained;
    await Promise.all(acks);
    assert.equal(producer.stats.acked, 2101);
    await producer.close();
    await readBack(tag, Array.from({ length: 2100 }, (_, i) => i), agent.dir);
  });

  test('a clean SIGTERM restart while putting loses nothing; only unanswered frames are in doubt', T, async (t) => {
    const agent = await startAgent();
    const producer = new Producer(agent.socket, FAST_RECONNECT);
    const tag = newTag('restart');
    const N = 60000;
    let restarted = null;
    const { outcomes, settled } = await putAll(producer, tag, N, {
      during: async (i) => {
        if (i !== 20000) return;
        await waitFor(() => producer.stats.acked >= 5000, 'some acks before the restart');
        restarted = agent.stop().then(() => agent.start());
      },
    });
    await restarted;
    await settled;
    await producer.close();
    const acked = [];
    outcomes.forEach((o, i) => {
      if (o === 'acked') acked.push(i);
      else assert.ok(o instanceof ConnectionLostError && o.inDoubt, `record ${i} failed other than in doubt: ${o}`);
    });
    const inDoubt = count(outcomes, (o) => o !== 'acked');
    t.diagnostic(`acked ${acked.length}, in doubt ${inDoubt}, sent again after SHUTTING_DOWN ${producer.stats.resent}`);
    assert.equal(acked.length + inDoubt, N);
    assert.equal(producer.stats.inDoubt, inDoubt);
    // A stopping agent answers every frame (OK, or SHUTTING_DOWN: sent again) until the
    // producer closes its side: nothing is in doubt, but for one frame of margin for a
    // producer stalled past the agent's second of quiet.
    assert.ok(inDoubt <= 500, `${inDoubt} records in doubt after a clean restart`);
    const found = await readBack(tag, acked, agent.dir);
    for (const i of acked) assert.ok(found.get(i)[0].data.equals(tagged(tag, i)));
    const doubtful = outcomes.map((o, i) => (o === 'acked' ? -1 : i)).filter((i) => i >= 0);
    t.diagnostic(`of ${doubtful.length} in doubt, ${doubtful.filter((i) => found.has(i)).length} were spooled after all`);
  });
});
