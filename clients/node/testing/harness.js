// The real parts for the tests that need them: the shardline agent binary and the Kinesis
// emulator example, started in a temp dir, stopped, killed, paused and read back.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { spawn } = require('node:child_process');

const REPO = path.resolve(__dirname, '..', '..', '..');
const FALLBACK_BIN = path.join(REPO, 'target/dist-unpacked/shardline-0.2.0-x86_64-linux/shardline');
const FALLBACK_EMULATOR = path.join(REPO, 'target/debug/examples/emulator');

function firstExisting(...paths) {
  return paths.find((p) => p && fs.existsSync(p)) ?? null;
}

/**
 * The agent binary and the emulator, or a reason to skip. With
 * SHARDLINE_CLIENT_TESTS_REQUIRED=1 a missing one is an error, not a skip.
 */
function realParts() {
  const bin = process.env.SHARDLINE_BIN
    || firstExisting(FALLBACK_BIN);
  const emulator = process.env.SHARDLINE_EMULATOR
    || firstExisting(FALLBACK_EMULATOR);
  const missing = [];
  if (!bin || !fs.existsSync(bin)) missing.push(`agent binary (SHARDLINE_BIN=${process.env.SHARDLINE_BIN ?? ''})`);
  if (!emulator || !fs.existsSync(emulator)) missing.push(`emulator (SHARDLINE_EMULATOR=${process.env.SHARDLINE_EMULATOR ?? ''})`);
  if (missing.length > 0) {
    const why = `missing ${missing.join(' and ')}`;
    if (process.env.SHARDLINE_CLIENT_TESTS_REQUIRED === '1') throw new Error(`${why}, and SHARDLINE_CLIENT_TESTS_REQUIRED=1`);
    return { skip: why };
  }
  return { bin, emulator, skip: false };
}

/** A fresh temp dir, removed by the returned cleanup. */
function tempDir(prefix = 'shardline-node-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until cond() is truthy (polling), or throws after timeoutMs (only to avoid hangs). */
async function waitFor(cond, what, timeoutMs = 120000, everyMs = 50) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** The Kinesis emulator: `--stream NAME:SHARDS` per stream, commands on stdin. */
class Emulator {
  static async start(bin, streams = ['logs:4']) {
    const e = new Emulator();
    const args = streams.flatMap((s) => ['--stream', s]);
    e.proc = spawn(bin, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    e.lines = readline.createInterface({ input: e.proc.stdout });
    e.waiting = [];
    e.lines.on('line', (line) => { const w = e.waiting.shift(); if (w) w(line); });
    const exited = new Promise((_, reject) => e.proc.once('exit', (code) => reject(new Error(`emulator exited (${code})`))));
    exited.catch(() => {});
    const first = await Promise.race([e.nextLine(), exited]);
    const hello = JSON.parse(first);
    e.endpoint = hello.endpoint;
    e.region = hello.region;
    return e;
  }

  nextLine() {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Every user record of `stream`: [{shard, partitionKey, data: Buffer}]. */
  async read(stream, dir) {
    const file = path.join(dir, `read-${stream}-${process.hrtime.bigint()}.ndjson`);
    const answer = this.nextLine();
    this.proc.stdin.write(`read ${stream} ${file}\n`);
    const reply = JSON.parse(await answer);
    if (reply.error) throw new Error(`emulator: ${reply.error}`);
    const text = fs.readFileSync(file, 'utf8');
    fs.unlinkSync(file);
    const out = [];
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const r = JSON.parse(line);
      out.push({ shard: r.shard, partitionKey: r.partition_key, data: Buffer.from(r.data, 'base64') });
    }
    return out;
  }

  async stop() {
    if (this.proc.exitCode !== null) return;
    const done = new Promise((r) => this.proc.once('exit', r));
    this.proc.stdin.end();
    await Promise.race([done, sleep(10000)]);
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

/** The agent's config for a test in dir (the spec's; spoolFull: the SPOOL_FULL variant). */
function agentConfig(dir, { endpoint, spoolFull = false, streams = null }) {
  const lines = [
    'shutdown_timeout_secs = 5',
    '[kinesis]',
    'stream = "logs"',
    'region = "us-east-1"',
    `endpoint = "${spoolFull ? 'http://127.0.0.1:9' : endpoint}"`,
    '[delivery]',
    'max_buffered_time_ms = 20',
    '[metrics]',
    'listen = "127.0.0.1:0"',
    '[spool]',
    `dir = "${dir}/spool"`,
  ];
  if (spoolFull) lines.push('max_bytes = 2097152', 'min_free_bytes = 0');
  lines.push('[[socket]]', `path = "${dir}/agent.sock"`, 'framing = "frames"');
  if (spoolFull) lines.push('on_full = "refuse"');
  if (streams) lines.push(`streams = [${streams.map((s) => JSON.stringify(s)).join(', ')}]`);
  return `${lines.join('\n')}\n`;
}

/** One agent process (restartable on the same spool). */
class Agent {
  constructor(bin, dir, config) {
    this.bin = bin;
    this.dir = dir;
    this.socket = path.join(dir, 'agent.sock');
    this.configPath = path.join(dir, 'agent.toml');
    fs.writeFileSync(this.configPath, config);
    this.proc = null;
    this.starts = 0;
  }

  async start() {
    try { fs.unlinkSync(this.socket); } catch { /* none */ }
    const log = fs.openSync(path.join(this.dir, `agent-${++this.starts}.log`), 'w');
    const env = {
      ...process.env,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_EC2_METADATA_DISABLED: 'true',
      RUST_LOG: 'info',
    };
    this.proc = spawn(this.bin, ['run', '--config', this.configPath], { env, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    const proc = this.proc;
    this.exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
    await waitFor(() => fs.existsSync(this.socket) || proc.exitCode !== null, 'the agent socket', 60000, 20);
    if (proc.exitCode !== null) throw new Error(`the agent exited (${proc.exitCode}): ${this.log()}`);
    return this;
  }

  log() {
    return fs.readdirSync(this.dir).filter((f) => f.startsWith('agent-') && f.endsWith('.log'))
      .map((f) => fs.readFileSync(path.join(this.dir, f), 'utf8')).join('\n').slice(-4000);
  }

  signal(sig) {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(sig);
  }

  /** SIGKILL, and wait for the exit. */
  async kill() {
    this.signal('SIGCONT');
    this.signal('SIGKILL');
    if (this.proc) await this.exited;
  }

  /** SIGTERM (a clean stop), and wait for the exit. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.signal('SIGCONT');
    this.signal('SIGTERM');
    const r = await Promise.race([this.exited, sleep(30000).then(() => null)]);
    if (r === null) await this.kill();
  }
}

module.exports = { realParts, tempDir, sleep, waitFor, Emulator, Agent, agentConfig, REPO };
