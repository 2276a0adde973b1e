// Integration tests against the real agent and the Kinesis emulator: records
// acked and read back, SIGKILL and SIGTERM of the agent mid-stream, SPOOL_FULL,
// queue bounds with the agent paused, streams and record ids.

package shardline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// payload is record i of a test: unique, size bytes.
func payload(tag string, i, size int) []byte {
	b := []byte(fmt.Sprintf("%s-%08d-", tag, i))
	if len(b) < size {
		b = append(b, bytes.Repeat([]byte{'x'}, size-len(b))...)
	}
	return b
}

// outcome sorts records by how they ended.
type outcome struct {
	acked, inDoubt, failed map[string]bool // failed: not in doubt
	errs                   map[string]error
}

func settle(t *testing.T, data [][]byte, results []*Result) outcome {
	t.Helper()
	o := outcome{map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]error{}}
	for i, r := range results {
		select {
		case <-r.Done():
		default:
			t.Fatalf("record %d is still pending", i)
		}
		k := string(data[i])
		switch err := r.Err(); {
		case err == nil:
			o.acked[k] = true
		case InDoubt(err):
			o.inDoubt[k] = true
			o.errs[k] = err
		default:
			o.failed[k] = true
			o.errs[k] = err
		}
	}
	return o
}

func TestAgentAcksAndDelivers100k(t *testing.T) {
	emu := startEmulator(t)
	ag := startAgent(t, agentConfig{endpoint: emu.endpoint})
	p := newProducer(t, ag.socket)
	const n = 100000
	want := make(map[string]bool, n)
	var results []*Result
	for i := 0; i < n; i++ {
		d := payload("bulk", i, 256)
		want[string(d)] = true
		var opts []PutOption
		if i%1000 == 0 {
			opts = append(opts, PartitionKey(fmt.Sprintf("key-%d", i)))
		}
		results = append(results, mustPut(t, p, d, opts...))
	}
	if err := p.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if err := r.Err(); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if s := p.Stats(); s.Acked != n || s.Failed != 0 || s.Outstanding != 0 {
		t.Fatalf("%+v", s)
	}
	got := emu.waitFor("logs", want)
	if len(got) != n {
		t.Fatalf("%d distinct records delivered, %d put", len(got), n)
	}
	keys := map[string]string{}
	for _, d := range emu.read("logs") {
		keys[string(d.Data)] = d.PartitionKey
	}
	for i := 0; i < n; i += 1000 {
		if k := keys[string(payload("bulk", i, 256))]; k != fmt.Sprintf("key-%d", i) {
			t.Fatalf("record %d arrived with key %q", i, k)
		}
	}
	if k := keys[string(payload("bulk", 1, 256))]; len(k) != 16 {
		t.Fatalf("random key %q", k)
	}
}

// putAll puts records from a goroutine, as fast as the producer takes them.
func putAll(t *testing.T, p *Producer, tag string, n int) (data [][]byte, results []*Result, done chan struct{}) {
	data = make([][]byte, n)
	results = make([]*Result, n)
	done = make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			data[i] = payload(tag, i, 256)
			r, err := p.Put(data[i])
			if err != nil {
				t.Errorf("put %d: %v", i, err)
				return
			}
			results[i] = r
		}
	}()
	return data, results, done
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAgentKilledMidStream(t *testing.T) {
	emu := startEmulator(t)
	ag := startAgent(t, agentConfig{endpoint: emu.endpoint})
	p := newProducer(t, ag.socket, WithBackoff(20*time.Millisecond, 200*time.Millisecond), WithMaxQueueRecords(20000))
	const n = 60000
	data, results, done := putAll(t, p, "kill", n)
	waitUntil(t, "10,000 acks", func() bool { return p.Stats().Acked >= 10000 })
	ag.kill()
	killedAt := p.Stats()
	// With the agent gone, what was written and unanswered fails in doubt; the
	// rest waits in the queue.
	waitUntil(t, "the in-flight frames to fail", func() bool { return p.Stats().InFlight == 0 })
	ag.start()
	<-done
	if err := p.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	o := settle(t, data, results)
	s := p.Stats()
	t.Logf("acked %d before the kill; in the end acked %d, in doubt %d, failed %d", killedAt.Acked, len(o.acked), len(o.inDoubt), len(o.failed))
	if len(o.failed) != 0 {
		for _, err := range o.errs {
			t.Fatalf("%d records failed not in doubt: %v", len(o.failed), err)
		}
	}
	if len(o.acked)+len(o.inDoubt) != n || s.Outstanding != 0 || p.Outstanding() != 0 {
		t.Fatalf("acked %d + in doubt %d != %d; %+v", len(o.acked), len(o.inDoubt), n, s)
	}
	if uint64(len(o.acked)) <= killedAt.Acked {
		t.Fatal("nothing went through after the restart")
	}
	for k, err := range o.errs {
		if !errors.Is(err, ErrConnectionLost) {
			t.Fatalf("%s: %v", k[:14], err)
		}
	}
	got := emu.waitFor("logs", o.acked)
	arrived := 0
	for k := range o.inDoubt {
		if got[k] > 0 {
			arrived++
		}
	}
	t.Logf("%d of %d records in doubt arrived all the same", arrived, len(o.inDoubt))
}

func TestAgentCleanRestartLosesNothing(t *testing.T) {
	emu := startEmulator(t)
	ag := startAgent(t, agentConfig{endpoint: emu.endpoint})
	p := newProducer(t, ag.socket, WithMaxQueueRecords(20000))
	// SHARDLINE_TEST_TRACE=1 logs the producer's connection events.
	if os.Getenv("SHARDLINE_TEST_TRACE") != "" {
		p.mu.Lock()
		p.trace = func(f string, args ...interface{}) { t.Logf(time.Now().Format("15:04:05.000 ")+f, args...) }
		p.mu.Unlock()
	}
	const n = 60000
	data, results, done := putAll(t, p, "term", n)
	waitUntil(t, "10,000 acks", func() bool { return p.Stats().Acked >= 10000 })
	ag.stop() // SIGTERM, and wait for the agent to exit
	ag.start()
	<-done
	if err := p.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	o := settle(t, data, results)
	t.Logf("acked %d, in doubt %d, failed %d, connections %d", len(o.acked), len(o.inDoubt), len(o.failed), p.Stats().Connects)
	if len(o.failed) != 0 || len(o.acked)+len(o.inDoubt) != n {
		t.Fatalf("acked %d, in doubt %d, failed %d", len(o.acked), len(o.inDoubt), len(o.failed))
	}
	// A stopping agent answers every frame (OK, or SHUTTING_DOWN: sent again, not
	// reported) until the producer closes its side: nothing is in doubt, but for one
	// frame of margin for a producer stalled past the agent's second of quiet.
	if len(o.inDoubt) > 500 {
		t.Fatalf("%d records in doubt after a clean restart", len(o.inDoubt))
	}
	for k, err := range o.errs {
		var lost *ConnectionLostError
		if !errors.As(err, &lost) {
			t.Fatalf("%s: %v", k[:14], err)
		}
	}
	if p.Stats().Connects < 2 {
		t.Fatal("the producer never reconnected")
	}
	got := emu.waitFor("logs", o.acked)
	arrived := 0
	for k := range o.inDoubt {
		if got[k] > 0 {
			arrived++
		}
	}
	t.Logf("%d of %d records in doubt arrived all the same", arrived, len(o.inDoubt))
}

func TestAgentSpoolFull(t *testing.T) {
	ag := startAgent(t, agentConfig{
		endpoint: "http://127.0.0.1:9",
		spool:    "max_bytes = 2097152\nmin_free_bytes = 0\n",
		socket:   "on_full = \"refuse\"\n",
	})
	p := newProducer(t, ag.socket)
	data := bytes.Repeat([]byte{'s'}, 1024)
	for round := 0; round < 100; round++ {
		var results []*Result
		for i := 0; i < 1000; i++ {
			results = append(results, mustPut(t, p, data))
		}
		p.Flush(ctxT(t))
		for _, r := range results {
			err := r.Err()
			if err == nil {
				continue
			}
			var ae *AgentError
			if !errors.As(err, &ae) || ae.Status != StatusSpoolFull || !errors.Is(err, ErrSpoolFull) || InDoubt(err) {
				t.Fatalf("%v", err)
			}
			if st, ok := StatusOf(err); !ok || st.String() != "SPOOL_FULL" {
				t.Fatalf("status %v", st)
			}
			t.Logf("SPOOL_FULL after %d records: %v", p.Stats().Acked, err)
			return
		}
	}
	t.Fatal("the agent never answered SPOOL_FULL")
}

func TestAgentBadInputIsRefusedBeforeSending(t *testing.T) {
	emu := startEmulator(t)
	ag := startAgent(t, agentConfig{endpoint: emu.endpoint})
	p := newProducer(t, ag.socket)
	bad := [][]PutOption{{PartitionKey("")}, {ExplicitHashKey("12a")}, {RecordID("no spaces")}, {PartitionKey(strings.Repeat("k", 257))}}
	for _, opts := range bad {
		if _, err := p.Put([]byte("bad"), opts...); !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("%v", err)
		}
	}
	if _, err := p.Put(make([]byte, MaxRecordBytes)); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("%v", err)
	}
	if s := p.Stats(); s.Connects != 0 || s.Outstanding != 0 {
		t.Fatalf("something was sent: %+v", s)
	}
	if err := mustPut(t, p, []byte("good"), PartitionKey("k"), ExplicitHashKey("0")).Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	emu.waitFor("logs", map[string]bool{"good": true})
	for _, d := range emu.read("logs") {
		if string(d.Data) != "good" {
			t.Fatalf("unexpected record %q", d.Data)
		}
	}
}

func TestAgentPausedQueueFull(t *testing.T) {
	emu := startEmulator(t)
	ag := startAgent(t, agentConfig{endpoint: emu.endpoint})
	// Connected first, so the connection is up when the agent stops.
	failing := newProducer(t, ag.socket, WithMaxQueueRecords(2000), WithQueueFullFails())
	blocking := newProducer(t, ag.socket, WithMaxQueueRecords(2000))
	for _, p := range []*Producer{failing, blocking} {
		if err := mustPut(t, p, []byte("warm-up")).Wait(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	ag.signal(syscall.SIGSTOP)
	defer ag.signal(syscall.SIGCONT)
	var failResults []*Result
	var refused error
	for i := 0; i < 3000 && refused == nil; i++ {
		r, err := failing.Put(payload("fail", i, 256))
		if err != nil {
			refused = err
			break
		}
		failResults = append(failResults, r)
	}
	if !errors.Is(refused, ErrQueueFull) || len(failResults) != 2000 {
		t.Fatalf("after %d puts: %v", len(failResults), refused)
	}
	var blockResults []*Result
	for i := 0; i < 2000; i++ {
		blockResults = append(blockResults, mustPut(t, blocking, payload("block", i, 256)))
	}
	var wg sync.WaitGroup
	var blockedErr error
	var blockedRes *Result
	returned := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		blockedRes, blockedErr = blocking.Put(payload("block", 2000, 256))
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatalf("put returned while the queue was full: %v", blockedErr)
	case <-time.After(300 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := blocking.PutContext(ctx, []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v", err)
	}
	ag.signal(syscall.SIGCONT)
	wg.Wait()
	if blockedErr != nil {
		t.Fatal(blockedErr)
	}
	blockResults = append(blockResults, blockedRes)
	for _, p := range []*Producer{failing, blocking} {
		if err := p.Close(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{}
	for i, r := range append(failResults, blockResults...) {
		if err := r.Err(); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	for i := 0; i < 2000; i++ {
		want[string(payload("fail", i, 256))] = true
		want[string(payload("block", i, 256))] = true
	}
	want[string(payload("block", 2000, 256))] = true
	emu.waitFor("logs", want)
}

func TestAgentStreamsAndRecordIDs(t *testing.T) {
	emu := startEmulator(t, "logs:4", "audit:1")
	ag := startAgent(t, agentConfig{endpoint: emu.endpoint, streams: []string{"audit"}, socket: "record_id = true\n"})
	p := newProducer(t, ag.socket, WithLinger(time.Millisecond))
	var results []*Result
	for i := 0; i < 100; i++ {
		var opts []PutOption
		if i%2 == 1 {
			opts = append(opts, ToStream("audit"))
		}
		opts = append(opts, RecordID(fmt.Sprintf("rec-%d", i)))
		results = append(results, mustPut(t, p, []byte(fmt.Sprintf("d%d", i)), opts...))
	}
	refused := mustPut(t, p, []byte("nowhere"), ToStream("nowhere"))
	p.Flush(ctxT(t))
	for i, r := range results {
		if err := r.Err(); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if err := refused.Err(); !errors.Is(err, ErrInvalidRecord) || InDoubt(err) {
		t.Fatalf("unknown stream: %v", err)
	}
	logs, audit := map[string]bool{}, map[string]bool{}
	for i := 0; i < 100; i++ {
		d := fmt.Sprintf("rec-%d d%d", i, i)
		if i%2 == 1 {
			audit[d] = true
		} else {
			logs[d] = true
		}
	}
	if got := emu.waitFor("logs", logs); len(got) != 50 {
		t.Fatalf("logs holds %d records", len(got))
	}
	if got := emu.waitFor("audit", audit); len(got) != 50 {
		t.Fatalf("audit holds %d records", len(got))
	}
}
