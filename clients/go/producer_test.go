// Unit tests of the producer against the stand-in agent: batching and ids,
// streams, the outcome of every kind of answer, SHUTTING_DOWN and lost
// connections, queue bounds, Flush, Close and NotifyFailures.

package shardline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// patience bounds every wait of these tests (only to avoid hanging).
const patience = 60 * time.Second

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

func newProducer(t testing.TB, path string, opts ...Option) *Producer {
	p, err := New(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(ctxT(t)) })
	return p
}

func mustPut(t testing.TB, p *Producer, data []byte, opts ...PutOption) *Result {
	r, err := p.Put(data, opts...)
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	return r
}

func TestRecordsAreBatchedInOrderWithIds(t *testing.T) {
	agent := startFakeAgent(t, okHandler)
	p := newProducer(t, agent.path, WithLinger(time.Hour))
	var results []*Result
	for i := 0; i < 1234; i++ {
		results = append(results, mustPut(t, p, []byte(fmt.Sprint(i))))
	}
	if err := p.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
	}
	reqs := agent.received()
	if len(reqs) != 3 || len(reqs[0].records) != 500 || len(reqs[2].records) != 234 {
		t.Fatalf("%d frames", len(reqs))
	}
	n := 0
	for i, q := range reqs {
		if q.id != uint64(i+2) || !q.ack || q.stream != nil { // 1 is the probe
			t.Fatalf("frame %d: id %d ack %v", i, q.id, q.ack)
		}
		for _, r := range q.records {
			if string(r.Data) != fmt.Sprint(n) || len(r.PartitionKey) != 16 || strings.Trim(r.PartitionKey, "0123456789abcdef") != "" {
				t.Fatalf("record %d: %+v", n, r)
			}
			n++
		}
	}
	if results[0] != results[499] || results[0] == results[500] {
		t.Fatal("records of one frame share one Result, and only they")
	}
	if s := p.Stats(); s.Acked != 1234 || s.Outstanding != 0 || s.Failed != 0 {
		t.Fatalf("%+v", s)
	}
}

func TestFrameBytesBound(t *testing.T) {
	agent := startFakeAgent(t, okHandler)
	p := newProducer(t, agent.path, WithMaxFrameBytes(4096), WithLinger(time.Hour))
	for i := 0; i < 40; i++ {
		mustPut(t, p, bytes.Repeat([]byte{'a'}, 300))
	}
	big := mustPut(t, p, bytes.Repeat([]byte{'b'}, 10000))
	mustPut(t, p, []byte("after"))
	p.Flush(ctxT(t))
	if err := big.Err(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, q := range agent.received() {
		frame := EncodeRequest(q.id, true, nil, q.records)
		if len(q.records) > 1 && len(frame) > 4096 {
			t.Fatalf("frame of %d bytes", len(frame))
		}
		if len(q.records[0].Data) == 10000 && len(q.records) != 1 {
			t.Fatal("the large record did not go alone")
		}
		total += len(q.records)
	}
	if total != 42 {
		t.Fatalf("%d records", total)
	}
}

func TestStreamsNeverShareAFrame(t *testing.T) {
	agent := startFakeAgent(t, okHandler)
	p := newProducer(t, agent.path, WithStream("main"), WithLinger(time.Hour))
	for i := 0; i < 30; i++ {
		var opts []PutOption
		switch i % 3 {
		case 1:
			opts = append(opts, ToStream("audit"))
		case 2:
			opts = append(opts, ToStream("main"))
		}
		mustPut(t, p, []byte(fmt.Sprint(i)), opts...)
	}
	p.Flush(ctxT(t))
	count := map[string]int{}
	for _, q := range agent.received() {
		if q.stream == nil {
			t.Fatal("the default stream is sent")
		}
		for _, r := range q.records {
			var i int
			fmt.Sscan(string(r.Data), &i)
			if (i%3 == 1) != (*q.stream == "audit") {
				t.Fatalf("record %d in a frame of %s", i, *q.stream)
			}
		}
		count[*q.stream] += len(q.records)
	}
	if count["main"] != 20 || count["audit"] != 10 {
		t.Fatalf("%v", count)
	}
}

func TestPutRefusesBadInputBeforeSending(t *testing.T) {
	agent := startFakeAgent(t, okHandler)
	p := newProducer(t, agent.path)
	cases := []struct {
		opts   []PutOption
		size   int
		status Status
		field  string
	}{
		{[]PutOption{PartitionKey("")}, 1, StatusInvalidRecord, "partition_key"},
		{[]PutOption{PartitionKey(strings.Repeat("é", 257))}, 1, StatusInvalidRecord, "partition_key"},
		{[]PutOption{PartitionKey("\xff")}, 1, StatusInvalidRecord, "partition_key"},
		{[]PutOption{ExplicitHashKey("-1")}, 1, StatusInvalidRecord, "explicit_hash_key"},
		{[]PutOption{ExplicitHashKey("340282366920938463463374607431768211456")}, 1, StatusInvalidRecord, "explicit_hash_key"},
		{[]PutOption{ExplicitHashKey("")}, 1, StatusInvalidRecord, "explicit_hash_key"},
		{[]PutOption{ExplicitHashKey(" 1")}, 1, StatusInvalidRecord, "explicit_hash_key"},
		{[]PutOption{RecordID("")}, 1, StatusInvalidRecord, "record_id"},
		{[]PutOption{RecordID("a b")}, 1, StatusInvalidRecord, "record_id"},
		{[]PutOption{RecordID(strings.Repeat("a", 65))}, 1, StatusInvalidRecord, "record_id"},
		{[]PutOption{ToStream("")}, 1, StatusInvalidRecord, "stream"},
		{[]PutOption{PartitionKey("ab")}, MaxRecordBytes - 1, StatusRecordTooLarge, "data"},
		{nil, MaxRecordBytes - 15, StatusRecordTooLarge, "data"},
	}
	for i, c := range cases {
		_, err := p.Put(make([]byte, c.size), c.opts...)
		var re *RecordError
		if !errors.As(err, &re) || re.Status != c.status || re.Field != c.field {
			t.Errorf("case %d: %v", i, err)
			continue
		}
		want := ErrInvalidRecord
		if c.status == StatusRecordTooLarge {
			want = ErrRecordTooLarge
		}
		if !errors.Is(err, want) || InDoubt(err) {
			t.Errorf("case %d: %v is not %v", i, err, want)
		}
		if s, ok := StatusOf(err); !ok || s != c.status {
			t.Errorf("case %d: status %v", i, s)
		}
	}
	ok := [][]PutOption{
		{PartitionKey(strings.Repeat("🙂", 256))},
		{ExplicitHashKey("340282366920938463463374607431768211455")},
		{ExplicitHashKey("000340282366920938463463374607431768211455")},
		{ExplicitHashKey("0")},
		{RecordID(strings.Repeat("aZ9-._:", 10)[:64])},
	}
	for i, opts := range ok {
		if _, err := p.Put([]byte("x"), opts...); err != nil {
			t.Errorf("valid case %d: %v", i, err)
		}
	}
	if _, err := p.Put(make([]byte, MaxRecordBytes-2), PartitionKey("ab")); err != nil {
		t.Fatalf("largest record: %v", err)
	}
	// A hash key of millions of leading zeros is a valid number, but no frame
	// could hold the record.
	zeros := strings.Repeat("0", 7<<20)
	if _, err := p.Put(make([]byte, MaxRecordBytes-2), PartitionKey("ab"), ExplicitHashKey(zeros)); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("record over a frame: %v", err)
	}
	p.Flush(ctxT(t))
	n := 0
	for _, q := range agent.received() {
		n += len(q.records)
	}
	if n != len(ok)+1 {
		t.Fatalf("%d records reached the agent", n)
	}
}

func TestAgentErrorsAreTyped(t *testing.T) {
	answers := map[string]Response{
		"spool":    {Status: StatusSpoolFull, Message: "spool is full"},
		"invalid":  {Status: StatusInvalidRecord, Message: "record 0: bad"},
		"large":    {Status: StatusRecordTooLarge, Message: "record 0: large"},
		"internal": {Status: StatusInternal, Message: "fsync failed"},
		"unknown":  {Status: 42, Message: "new"},
		"badframe": {Status: StatusBadFrame, Message: "unreadable"},
	}
	agent := startFakeAgent(t, func(c *fakeConn, q request) {
		r := answers[string(q.records[0].Data)]
		if r.Status != StatusBadFrame {
			r.ID = q.id // BAD_FRAME comes with id 0
		}
		c.reply(r)
	})
	p := newProducer(t, agent.path, WithLinger(0))
	check := func(kind string, sentinel error, inDoubt bool) {
		t.Helper()
		err := mustPut(t, p, []byte(kind)).Wait(ctxT(t))
		var ae *AgentError
		if !errors.As(err, &ae) || ae.Status != answers[kind].Status || !errors.Is(err, sentinel) ||
			ae.InDoubt != inDoubt || InDoubt(err) != inDoubt || !strings.Contains(ae.Message, answers[kind].Message) {
			t.Errorf("%s: %v", kind, err)
		}
	}
	check("spool", ErrSpoolFull, false)
	check("invalid", ErrInvalidRecord, false)
	check("large", ErrRecordTooLarge, false)
	check("internal", ErrInternal, true)
	check("unknown", ErrInternal, true)
	check("badframe", ErrBadFrame, false)
	if err := mustPut(t, p, []byte("unknown")).Wait(ctxT(t)); !strings.Contains(err.Error(), "42") {
		t.Errorf("unknown status without its number: %v", err)
	}
	if s := p.Stats(); s.Failed != 7 || s.InDoubt != 3 || s.Acked != 0 || agent.connections() != 1 {
		t.Fatalf("%+v, %d connections", s, agent.connections())
	}
}

// The agent answers SHUTTING_DOWN and closes: those records go again, first and
// in order, on the next connection; nothing is in doubt.
func TestShuttingDownSendsAgain(t *testing.T) {
	agent := startFakeAgent(t, func(c *fakeConn, q request) {
		if c.index == 0 {
			if q.id == 2 {
				c.ok(q)
				return
			}
			c.reply(Response{ID: q.id, Status: StatusShuttingDown, Message: "stopping"})
			return
		}
		c.ok(q)
	})
	p := newProducer(t, agent.path, WithMaxFrameRecords(10), WithLinger(time.Hour), WithBackoff(time.Millisecond, 10*time.Millisecond))
	var results []*Result
	for i := 0; i < 100; i++ {
		results = append(results, mustPut(t, p, []byte(fmt.Sprint(i))))
	}
	p.Flush(ctxT(t))
	for i, r := range results {
		if err := r.Err(); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	if agent.connections() != 2 || p.Stats().InDoubt != 0 || p.Stats().Acked != 100 {
		t.Fatalf("%d connections, %+v", agent.connections(), p.Stats())
	}
	// Connection 2 gets records 10..99, in order, in frames numbered from 2.
	var second []string
	for i, q := range agent.receivedOn(1) {
		if q.id != uint64(i+2) {
			t.Fatalf("frame %d has id %d", i, q.id)
		}
		for _, r := range q.records {
			second = append(second, string(r.Data))
		}
	}
	if len(second) != 90 {
		t.Fatalf("%d records sent again", len(second))
	}
	for i, s := range second {
		if s != fmt.Sprint(10+i) {
			t.Fatalf("after reconnecting: %v", second)
		}
	}
}

// A connection that ends with frames unanswered: those fail in doubt; records
// never written go through on the next connection.
func TestLostConnectionLeavesWrittenFramesInDoubt(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	agent := startFakeAgent(t, func(c *fakeConn, q request) {
		if c.index == 0 {
			if q.id == 2 {
				c.ok(q)
				return
			}
			// The second frame is read but never answered: the agent dies.
			once.Do(func() { close(release) })
			c.conn.Close()
			return
		}
		c.ok(q)
	})
	p := newProducer(t, agent.path, WithMaxFrameRecords(10), WithMaxInFlight(2), WithLinger(time.Hour),
		WithBackoff(time.Millisecond, 10*time.Millisecond))
	first := mustPut(t, p, []byte("a"))
	p.Flush(ctxT(t))
	second := mustPut(t, p, []byte("b"))
	go p.Flush(ctxT(t))
	<-release
	err := second.Wait(ctxT(t))
	var lost *ConnectionLostError
	if first.Err() != nil || !errors.As(err, &lost) || !InDoubt(err) || !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("first %v, second %v", first.Err(), err)
	}
	third := mustPut(t, p, []byte("c"))
	p.Flush(ctxT(t))
	if err := third.Err(); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.InDoubt != 1 || s.Acked != 2 || s.Connects != 2 {
		t.Fatalf("%+v", s)
	}
}

// An answer the producer cannot match ends the connection.
func TestUnexpectedAnswerIdEndsTheConnection(t *testing.T) {
	agent := startFakeAgent(t, func(c *fakeConn, q request) {
		if c.index == 0 {
			c.reply(Response{ID: q.id + 5})
			return
		}
		c.ok(q)
	})
	p := newProducer(t, agent.path, WithLinger(0), WithBackoff(time.Millisecond, 10*time.Millisecond))
	err := mustPut(t, p, []byte("x")).Wait(ctxT(t))
	if !InDoubt(err) || !strings.Contains(err.Error(), "expected") {
		t.Fatalf("%v", err)
	}
	if err := mustPut(t, p, []byte("y")).Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestQueueFull(t *testing.T) {
	hold := make(chan struct{})
	agent := startFakeAgent(t, func(c *fakeConn, q request) {
		<-hold
		c.ok(q)
	})
	defer func() {
		select {
		case <-hold:
		default:
			close(hold)
		}
	}()
	p := newProducer(t, agent.path, WithMaxQueueRecords(10), WithQueueFullFails(), WithLinger(0))
	for i := 0; i < 10; i++ {
		mustPut(t, p, []byte("x"))
	}
	if _, err := p.Put([]byte("x")); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("%v", err)
	}
	if p.Outstanding() != 10 {
		t.Fatalf("outstanding %d", p.Outstanding())
	}
	// Blocking mode: the put waits for room, or its context.
	b := newProducer(t, agent.path, WithMaxQueueBytes(1000), WithLinger(0))
	mustPut(t, b, make([]byte, 600))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.PutContext(ctx, make([]byte, 600)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v", err)
	}
	done := make(chan error, 1)
	go func() {
		r, err := b.Put(make([]byte, 600))
		if err == nil {
			err = r.Wait(ctxT(t))
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("put did not wait: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A record larger than the byte bound goes when the queue is empty.
	b.Flush(ctxT(t))
	if err := mustPut(t, b, make([]byte, 5000)).Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestFlushDoesNotWaitForLinger(t *testing.T) {
	agent := startFakeAgent(t, okHandler)
	p := newProducer(t, agent.path, WithLinger(time.Hour))
	r := mustPut(t, p, []byte("x"))
	if err := p.Flush(ctxT(t)); err != nil || r.Err() != nil {
		t.Fatalf("%v %v", err, r.Err())
	}
	// And linger alone sends it too.
	q := newProducer(t, agent.path, WithLinger(5*time.Millisecond))
	if err := mustPut(t, q, []byte("y")).Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestCloseTimeoutFailsWhatIsLeft(t *testing.T) {
	got := make(chan struct{}, 100)
	agent := startFakeAgent(t, func(c *fakeConn, q request) { got <- struct{}{} }) // never answers
	p := newProducer(t, agent.path, WithMaxFrameRecords(1), WithMaxInFlight(1), WithLinger(0))
	failures := p.NotifyFailures()
	written := mustPut(t, p, []byte("w"), PartitionKey("k1"))
	<-got
	queued := mustPut(t, p, []byte("q"), PartitionKey("k2"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := p.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("close: %v", err)
	}
	if err := written.Err(); !InDoubt(err) || !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("written: %v", err)
	}
	if err := queued.Err(); !errors.Is(err, ErrClosed) || InDoubt(err) {
		t.Fatalf("queued: %v", err)
	}
	if _, err := p.Put([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("put after close: %v", err)
	}
	if p.Outstanding() != 0 {
		t.Fatal("records left pending")
	}
	var keys []string
	for f := range failures {
		rs, err := f.Records()
		if err != nil || len(rs) != f.Count {
			t.Fatal(err)
		}
		for _, r := range rs {
			keys = append(keys, r.PartitionKey+"="+string(r.Data))
		}
	}
	if strings.Join(keys, ",") != "k1=w,k2=q" {
		t.Fatalf("failures: %v", keys)
	}
}

func TestCloseWaitsForAnswers(t *testing.T) {
	agent := startFakeAgent(t, func(c *fakeConn, q request) {
		time.Sleep(20 * time.Millisecond)
		c.ok(q)
	})
	p := newProducer(t, agent.path, WithLinger(time.Hour), WithMaxFrameRecords(7))
	var results []*Result
	for i := 0; i < 100; i++ {
		results = append(results, mustPut(t, p, []byte("x")))
	}
	if err := p.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		select {
		case <-r.Done():
		default:
			t.Fatal("close returned before an answer")
		}
		if r.Err() != nil {
			t.Fatal(r.Err())
		}
	}
	if err := p.Close(ctxT(t)); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestConnectsWhenTheAgentComesUp(t *testing.T) {
	agent := startFakeAgent(t, okHandler)
	path := agent.path + ".later"
	p := newProducer(t, path, WithBackoff(time.Millisecond, 20*time.Millisecond), WithLinger(0))
	r := mustPut(t, p, []byte("x"))
	time.Sleep(50 * time.Millisecond)
	if p.Stats().LastError == nil {
		t.Fatal("no connection error seen")
	}
	later := startFakeAgentAt(t, path, okHandler)
	if err := r.Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if len(later.received()) != 1 {
		t.Fatal("not received")
	}
}

func TestOptionsAreChecked(t *testing.T) {
	bad := []Option{WithLinger(-1), WithMaxFrameRecords(0), WithMaxFrameBytes(MaxFrameBytes + 1),
		WithMaxInFlight(0), WithMaxQueueRecords(0), WithMaxQueueBytes(0), WithBackoff(0, 1), WithStream("")}
	for i, o := range bad {
		if _, err := New("/nonexistent", o); err == nil {
			t.Errorf("option %d accepted", i)
		}
	}
}

func TestConcurrentPuts(t *testing.T) {
	agent := startFakeAgent(t, okHandler)
	p := newProducer(t, agent.path, WithMaxQueueRecords(1000))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				if _, err := p.Put([]byte(fmt.Sprintf("%d-%d", g, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if err := p.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	last := map[string]int{}
	for _, q := range agent.received() {
		for _, r := range q.records {
			seen[string(r.Data)] = true
			var g, i int
			fmt.Sscanf(string(r.Data), "%d-%d", &g, &i)
			key := fmt.Sprint(g)
			if prev, ok := last[key]; ok && i != prev+1 {
				t.Fatalf("goroutine %d: %d after %d", g, i, prev)
			}
			last[key] = i
		}
	}
	if len(seen) != 40000 || p.Stats().Acked != 40000 {
		t.Fatalf("%d records", len(seen))
	}
}

// Records are written only once the agent has answered the connection's empty
// first request: a connection the agent drops unanswered, or answers
// SHUTTING_DOWN, leaves nothing in doubt.
func TestProbeKeepsRecordsOffUnservedConnections(t *testing.T) {
	agent := startFakeAgent(t, func(c *fakeConn, q request) {
		switch {
		case c.index == 0:
			c.conn.Close() // the probe is never answered
		case c.index == 1 && len(q.records) == 0:
			c.reply(Response{ID: q.id, Status: StatusShuttingDown})
		default:
			c.ok(q)
		}
	})
	agent.holdProbes = true
	p := newProducer(t, agent.path, WithLinger(0), WithBackoff(time.Millisecond, 10*time.Millisecond))
	r := mustPut(t, p, []byte("x"))
	if err := r.Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1} {
		for _, q := range agent.receivedOn(i) {
			if len(q.records) > 0 || q.id != 1 {
				t.Fatalf("connection %d got frame %d with %d records", i, q.id, len(q.records))
			}
		}
	}
	if got := agent.receivedOn(2); len(got) != 2 || got[1].id != 2 || string(got[1].records[0].Data) != "x" {
		t.Fatalf("third connection: %+v", got)
	}
	if s := p.Stats(); s.InDoubt != 0 || s.Connects != 3 {
		t.Fatalf("%+v", s)
	}
}
