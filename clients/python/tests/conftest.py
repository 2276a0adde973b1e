# Test fixtures: the shared protocol vectors, a scripted fake agent, and the real parts
# (the shardline binary and the Kinesis emulator) started on temp dirs.
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package itself, installed or not
sys.path.insert(0, str(HERE))

from fakeagent import FakeAgent  # noqa: E402

REPO = HERE.parents[2]
REQUIRED = os.environ.get("SHARDLINE_CLIENT_TESTS_REQUIRED") == "1"


def _find(env, relative):
    if os.environ.get(env):
        return Path(os.environ[env])
    p = REPO / relative
    return p if p.exists() else None


SHARDLINE_BIN = _find("SHARDLINE_BIN", "target/dist-unpacked/shardline-0.2.0-x86_64-linux/shardline")
SHARDLINE_EMULATOR = _find("SHARDLINE_EMULATOR", "target/debug/examples/emulator")
VECTORS = _find("SHARDLINE_VECTORS", "clients/vectors/protocol.json")


def _missing(what, path, env):
    msg = "%s not found (set %s)" % (what, env)
    if path is not None and not path.exists():
        msg = "%s %s does not exist" % (what, path)
    if REQUIRED:
        pytest.fail(msg + " and SHARDLINE_CLIENT_TESTS_REQUIRED=1", pytrace=False)
    pytest.skip(msg)


def wait_until(cond, timeout=60.0, what="condition", interval=0.01):
    """Polls cond() until true; fails the test after a generous timeout (a guard against
    hangs, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


@pytest.fixture(scope="session")
def vectors():
    if VECTORS is None or not VECTORS.exists():
        _missing("protocol vectors", VECTORS, "SHARDLINE_VECTORS")
    with open(VECTORS, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture
def fake(tmp_path):
    agents = []

    def start(answer=None):
        a = FakeAgent(str(tmp_path / ("fake%d.sock" % len(agents))), answer)
        agents.append(a)
        return a

    yield start
    for a in agents:
        a.close()


class Emulator:
    """The Kinesis emulator example: serves streams on loopback, reads them back."""

    def __init__(self, path, workdir, streams):
        args = [str(path)]
        for s in streams:
            args += ["--stream", s]
        self.workdir = workdir
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(workdir / "emulator.log", "wb"),
            text=True,
        )
        first = json.loads(self.proc.stdout.readline())
        self.endpoint = first["endpoint"]
        self.reads = 0

    def read(self, stream="logs"):
        """Every user record in the stream: [(partition_key, data bytes)]."""
        self.reads += 1
        out = self.workdir / ("read-%d.ndjson" % self.reads)
        self.proc.stdin.write("read %s %s\n" % (stream, out))
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        assert "records" in reply, reply
        with open(out, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        out.unlink()
        assert len(rows) == reply["records"]
        return [(r["partition_key"], base64.b64decode(r["data"])) for r in rows]

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    if SHARDLINE_EMULATOR is None or not SHARDLINE_EMULATOR.exists():
        _missing("the Kinesis emulator", SHARDLINE_EMULATOR, "SHARDLINE_EMULATOR")
    if SHARDLINE_BIN is None or not SHARDLINE_BIN.exists():
        _missing("the shardline binary", SHARDLINE_BIN, "SHARDLINE_BIN")
    e = Emulator(SHARDLINE_EMULATOR, tmp_path_factory.mktemp("emulator"), ["logs:4", "audit:1"])
    yield e
    e.close()


class Agent:
    """The real agent on a temp dir: start, signal, restart on the same spool."""

    def __init__(self, workdir, endpoint, spool_full=False, streams=None):
        self.dir = workdir
        self.socket = str(workdir / "agent.sock")
        self.config = workdir / "agent.toml"
        self.log = workdir / "agent.log"
        self.proc = None
        self.starts = 0
        spool = ""
        socket_extra = ""
        if spool_full:
            endpoint = "http://127.0.0.1:9"
            spool = "max_bytes = 2097152\nmin_free_bytes = 0\n"
            socket_extra += 'on_full = "refuse"\n'
        if streams:
            socket_extra += "streams = [%s]\n" % ", ".join('"%s"' % s for s in streams)
        self.config.write_text(
            'shutdown_timeout_secs = 5\n'
            '[kinesis]\nstream = "logs"\nregion = "us-east-1"\nendpoint = "%s"\n'
            "[delivery]\nmax_buffered_time_ms = 20\n"
            '[metrics]\nlisten = "127.0.0.1:0"\n'
            '[spool]\ndir = "%s"\n%s'
            '[[socket]]\npath = "%s"\nframing = "frames"\n%s'
            % (endpoint, workdir / "spool", spool, self.socket, socket_extra)
        )

    def start(self, wait=True):
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_EC2_METADATA_DISABLED="true",
            RUST_LOG="info",
        )
        self.starts += 1
        if os.path.exists(self.socket):
            os.unlink(self.socket)  # left by a killed agent: wait for the new one's
        with open(self.log, "ab") as log:
            log.write(b"--- start %d\n" % self.starts)
            log.flush()
            self.proc = subprocess.Popen(
                [str(SHARDLINE_BIN), "run", "--config", str(self.config)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        if wait:
            wait_until(
                lambda: os.path.exists(self.socket) or self.proc.poll() is not None,
                what="the agent's socket",
            )
            if self.proc.poll() is not None:
                raise AssertionError("the agent exited: " + self.log.read_text()[-3000:])
        return self

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        """SIGKILL, and wait until it is gone."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self):
        """SIGTERM: a clean stop; waits until it exited."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def agent(emulator, tmp_path):
    """A factory: agent(**options) starts the real agent on its own temp dir."""
    agents = []

    def start(**options):
        d = tmp_path / ("agent%d" % len(agents))
        d.mkdir()
        a = Agent(d, emulator.endpoint, **options)
        agents.append(a)
        return a.start()

    yield start
    for a in agents:
        a.stop()


def read_back(emulator, tag, expected, stream="logs", timeout=120.0):
    """The records in `stream` whose data starts with `tag`, once at least `expected`
    of them arrived."""
    rows = []

    def enough():
        rows[:] = [r for r in emulator.read(stream) if r[1].startswith(tag)]
        return len(rows) >= expected

    wait_until(enough, timeout, "%d records tagged %r in %s" % (expected, tag, stream), interval=0.2)
    return rows
