// The integration tests' harness: runs the real agent (SHARDLINE_BIN) against the
// Kinesis emulator (SHARDLINE_EMULATOR), stops, kills, pauses and restarts it, and
// reads back what reached each stream.

package shardline

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Local fallbacks when the environment does not name the binaries.
var (
	fallbackAgent    = []string{"../../target/dist-unpacked/shardline-0.2.0-x86_64-linux/shardline"}
	fallbackEmulator = []string{"../../target/debug/examples/emulator"}
)

// findBinary finds a binary from env or the fallbacks; skips the test when there is
// none (fails instead when SHARDLINE_CLIENT_TESTS_REQUIRED=1).
func findBinary(t testing.TB, env string, fallbacks []string) string {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		return p
	}
	for _, p := range fallbacks {
		if _, err := os.Stat(p); err == nil {
			abs, _ := filepath.Abs(p)
			return abs
		}
	}
	if os.Getenv("SHARDLINE_CLIENT_TESTS_REQUIRED") == "1" {
		t.Fatalf("%s is not set and no local binary exists (%v)", env, fallbacks)
	}
	t.Skipf("%s is not set and no local binary exists", env)
	return ""
}

// emulator is a running Kinesis emulator.
type emulator struct {
	t        testing.TB
	cmd      *exec.Cmd
	in       io.WriteCloser
	out      *bufio.Reader
	endpoint string
	dir      string
}

func startEmulator(t testing.TB, streams ...string) *emulator {
	bin := findBinary(t, "SHARDLINE_EMULATOR", fallbackEmulator)
	if len(streams) == 0 {
		streams = []string{"logs:4"}
	}
	var args []string
	for _, s := range streams {
		args = append(args, "--stream", s)
	}
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "emulator.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e := &emulator{t: t, cmd: cmd, out: bufio.NewReader(stdout), dir: dir}
	e.in = stdin
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	var hello struct{ Endpoint string }
	if err := e.answer(&hello); err != nil || hello.Endpoint == "" {
		t.Fatalf("emulator did not start: %v (log in %s)", err, logf.Name())
	}
	e.endpoint = hello.Endpoint
	return e
}

func (e *emulator) answer(v interface{}) error {
	line, err := e.out.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

// delivered is one user record read back from a stream.
type delivered struct {
	Shard        string `json:"shard"`
	PartitionKey string `json:"partition_key"`
	Data         []byte `json:"data"` // base64 in the file
}

// read returns every record that reached stream.
func (e *emulator) read(stream string) []delivered {
	e.t.Helper()
	path := filepath.Join(e.dir, "read-"+stream+".ndjson")
	if _, err := fmt.Fprintf(e.in, "read %s %s\n", stream, path); err != nil {
		e.t.Fatal(err)
	}
	var reply struct {
		Records *int
		Error   string
	}
	if err := e.answer(&reply); err != nil || reply.Records == nil {
		e.t.Fatalf("read %s: %v %s", stream, err, reply.Error)
	}
	f, err := os.Open(path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	var out []delivered
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var d struct {
			Shard        string `json:"shard"`
			PartitionKey string `json:"partition_key"`
			Data         string `json:"data"`
		}
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			e.t.Fatal(err)
		}
		data, err := base64.StdEncoding.DecodeString(d.Data)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, delivered{d.Shard, d.PartitionKey, data})
	}
	if len(out) != *reply.Records {
		e.t.Fatalf("read %d records of %d", len(out), *reply.Records)
	}
	return out
}

// waitFor reads stream until every wanted record (by data) is there, or the
// patience runs out; returns what was read, by data.
func (e *emulator) waitFor(stream string, want map[string]bool) map[string]int {
	e.t.Helper()
	deadline := time.Now().Add(3 * patience)
	for {
		got := map[string]int{}
		for _, d := range e.read(stream) {
			got[string(d.Data)]++
		}
		missing := 0
		for k := range want {
			if got[k] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d of %d records never reached %s", missing, len(want), stream)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// agent is the real shardline agent, run with a config of the spec's shape.
type agent struct {
	t      testing.TB
	bin    string
	dir    string
	config string
	socket string
	logf   string
	cmd    *exec.Cmd
	done   chan struct{}
	starts int
}

// agentConfig are the settings a test changes.
type agentConfig struct {
	endpoint string
	spool    string   // extra lines for [spool]
	socket   string   // extra lines for [[socket]]
	streams  []string // further streams the socket allows
}

func startAgent(t testing.TB, c agentConfig) *agent {
	bin := findBinary(t, "SHARDLINE_BIN", fallbackAgent)
	dir := t.TempDir()
	a := &agent{t: t, bin: bin, dir: dir, socket: filepath.Join(dir, "agent.sock"),
		config: filepath.Join(dir, "shardline.toml"), logf: filepath.Join(dir, "agent.log")}
	var socket strings.Builder
	socket.WriteString(c.socket)
	if len(c.streams) > 0 {
		q := make([]string, len(c.streams))
		for i, s := range c.streams {
			q[i] = fmt.Sprintf("%q", s)
		}
		fmt.Fprintf(&socket, "streams = [%s]\n", strings.Join(q, ", "))
	}
	config := fmt.Sprintf(`shutdown_timeout_secs = 5
[kinesis]
stream = "logs"
region = "us-east-1"
endpoint = %q
[delivery]
max_buffered_time_ms = 20
[metrics]
listen = "127.0.0.1:0"
[spool]
dir = %q
%s
[[socket]]
path = %q
framing = "frames"
%s`, c.endpoint, filepath.Join(dir, "spool"), c.spool, a.socket, socket.String())
	if err := os.WriteFile(a.config, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			if log, err := os.ReadFile(a.logf); err == nil {
				if len(log) > 8000 {
					log = log[len(log)-8000:]
				}
				t.Logf("agent log (end):\n%s", log)
			}
		}
	})
	a.start()
	return a
}

// start runs the agent and waits for its socket.
func (a *agent) start() {
	a.t.Helper()
	os.Remove(a.socket)
	logf, err := os.OpenFile(a.logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		a.t.Fatal(err)
	}
	cmd := exec.Command(a.bin, "run", "--config", a.config)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test",
		"AWS_EC2_METADATA_DISABLED=true", "RUST_LOG=info")
	cmd.Stderr = logf
	cmd.Stdout = logf
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.starts++
	a.cmd, a.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); logf.Close(); close(done) }(a.done)
	deadline := time.Now().Add(patience)
	for {
		if _, err := os.Stat(a.socket); err == nil {
			return
		}
		select {
		case <-a.done:
			a.t.Fatalf("the agent exited at start (log: %s)", a.logf)
		default:
		}
		if time.Now().After(deadline) {
			a.t.Fatal("the agent's socket never appeared")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *agent) signal(sig syscall.Signal) {
	if a.cmd != nil {
		a.cmd.Process.Signal(sig)
	}
}

// wait waits for the agent to exit (killing it if it takes too long).
func (a *agent) wait() {
	if a.cmd == nil {
		return
	}
	select {
	case <-a.done:
	case <-time.After(patience):
		a.cmd.Process.Kill()
		<-a.done
	}
	a.cmd = nil
}

// stop ends the agent cleanly (SIGTERM).
func (a *agent) stop() {
	a.signal(syscall.SIGCONT)
	a.signal(syscall.SIGTERM)
	a.wait()
}

// kill ends the agent at once (SIGKILL).
func (a *agent) kill() {
	a.signal(syscall.SIGKILL)
	a.wait()
}
