// The Producer: Put queues records into per-stream frames (encoded as they are
// put), Flush and Close wait for the agent's answers, and counters say what is
// outstanding, acknowledged, failed and in doubt.

package shardline

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// randomKeyLen is the length of the partition key drawn for a record put without one.
const randomKeyLen = 16

// Result is the outcome of a put record. Records sent in the same frame share one
// Result (the agent spools a frame whole or not at all), which keeps a put cheap.
type Result struct {
	done chan struct{}
	err  error
}

// Done is closed once the record is answered (or failed).
func (r *Result) Done() <-chan struct{} { return r.done }

// Err is nil while the record is pending or once it is durable in the agent's
// spool; otherwise why it failed (see the package's error types). Read it after
// Done is closed.
func (r *Result) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Wait waits until the record is durable in the agent's spool (nil) or failed, or
// until ctx ends (ctx's error; the record goes on).
func (r *Result) Wait(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// batchState says how far a frame got on the current connection.
type batchState uint8

const (
	queued   batchState = iota // not handed to the writer
	writing                    // handed to the writer, write not finished
	complete                   // every byte written
)

// batch is one frame in the making: records of one stream, already encoded.
type batch struct {
	st      *streamState
	body    []byte // Request.records entries
	records int
	created time.Time
	seq     uint64
	res     *Result
	sealed  bool // takes no more records
	probe   bool // a connection's first request: empty, to learn the agent answers
	state   batchState
	id      uint64 // id on the connection it was last written to
}

// streamState is what the producer keeps per stream: the frame's trailer (ack and
// stream fields) and the frame taking its records.
type streamState struct {
	stream  *string
	trailer []byte
	open    *batch
}

// Stats are the producer's counters.
type Stats struct {
	// Outstanding records: put and not yet answered (queued or in flight).
	Outstanding int
	// InFlight frames: written (or being written) and not yet answered.
	InFlight int
	// Acked records: durable in the agent's spool.
	Acked uint64
	// Failed records, in doubt or not.
	Failed uint64
	// InDoubt records: failed with an error for which InDoubt is true.
	InDoubt uint64
	// Connects: connections made to the agent.
	Connects uint64
	// LastError: the last connection or protocol error, if any.
	LastError error
}

// Producer sends records to a shardline agent's framed socket. Its methods are
// safe for concurrent use.
type Producer struct {
	path    string
	cfg     config
	keyBase uint64 // random-key generator's state (atomic)
	// jitterSeed seeds the reconnect backoff's jitter.
	jitterSeed int64

	mu          sync.Mutex
	defaultSt   *streamState
	streams     map[string]*streamState
	queue       []*batch // not written yet, in order
	inflight    []*batch // written on the current connection, by id
	requeue     []*batch // answered SHUTTING_DOWN on the current connection
	seq         uint64   // of the last batch made
	flushSeq    uint64   // batches up to this one are sent without lingering
	outRecords  int
	outBytes    int
	spaceCh     chan struct{} // closed when room frees (made by a waiting put)
	closed      bool          // no more puts
	aborted     bool          // Close's deadline passed: everything failed
	conn        net.Conn
	nextID      uint64
	broken      bool                                     // the current connection failed
	connErr     error                                    // why
	draining    bool                                     // the agent is stopping: write nothing more on this connection
	sawOK       bool                                     // the current connection got an OK answer
	probed      bool                                     // the current connection's probe was answered
	window      int                                      // frames the current connection may have in flight
	trace       func(format string, args ...interface{}) // tests' trace of connection events
	stats       Stats
	failures    *failureQueue
	bodies      sync.Pool
	wake        chan struct{} // the run goroutine's wake-up (capacity 1)
	stop        chan struct{} // closed once Close is done with the connection
	stopOnce    sync.Once
	runDone     chan struct{}
	connectedCh chan struct{} // closed at the first connection
}

// New returns a producer for the agent's framed socket at socketPath. It connects
// in the background when there is something to send, and reconnects with backoff.
func New(socketPath string, opts ...Option) (*Producer, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	var seed [16]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("shardline: seeding partition keys: %w", err)
	}
	p := &Producer{
		path:        socketPath,
		cfg:         cfg,
		keyBase:     binary.LittleEndian.Uint64(seed[:8]),
		jitterSeed:  int64(binary.LittleEndian.Uint64(seed[8:])),
		streams:     make(map[string]*streamState),
		wake:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		runDone:     make(chan struct{}),
		connectedCh: make(chan struct{}),
	}
	p.defaultSt = &streamState{trailer: appendTrailer(nil, true, nil)}
	go p.run()
	return p, nil
}

// Put queues one record; see PutContext.
func (p *Producer) Put(data []byte, opts ...PutOption) (*Result, error) {
	return p.PutContext(context.Background(), data, opts...)
}

// PutContext validates and queues one record. An invalid record is refused at
// once (*RecordError); ErrClosed after Close; with a full queue it waits for room
// until ctx ends, or fails with ErrQueueFull when the producer was made with
// WithQueueFullFails. The data is copied: the caller may reuse it on return. The
// Result resolves when the agent's answer covers the record.
func (p *Producer) PutContext(ctx context.Context, data []byte, opts ...PutOption) (*Result, error) {
	var o putOptions
	for _, opt := range opts {
		opt(&o)
	}
	if e := validate(o.key, o.hashKey, len(data), o.recordID, o.stream); e != nil {
		return nil, e
	}
	var keyBuf [randomKeyLen]byte
	var keyBytes []byte
	var key string
	if o.key == nil {
		p.randomKey(&keyBuf)
		keyBytes = keyBuf[:]
	} else {
		key = *o.key
	}
	size := encodedRecordLen(len(keyBytes)+len(key), o.hashKey, len(data), o.recordID)
	stream := o.stream
	if stream == nil {
		stream = p.cfg.stream
	}
	// Long hash keys (leading zeros) or stream names could still overflow a frame.
	frame := maxHeaderBytes + size + 2
	if stream != nil {
		frame += 1 + varintLen(uint64(len(*stream))) + len(*stream)
	}
	if frame > MaxFrameBytes {
		return nil, &RecordError{Status: StatusRecordTooLarge, Field: "data",
			Message: fmt.Sprintf("a frame holding this record alone would be %d bytes, over the %d-byte frame limit", frame, MaxFrameBytes)}
	}
	p.mu.Lock()
	if err := p.reserve(ctx, size); err != nil {
		p.mu.Unlock()
		return nil, err
	}
	st := p.streamFor(stream)
	b := st.open
	if b != nil && maxHeaderBytes+len(b.body)+size+len(st.trailer) > p.cfg.maxFrameBytes {
		p.seal(b)
		b = nil
	}
	if b == nil {
		b = p.newBatch(st, size)
	}
	b.body = appendRecord(b.body, keyBytes, key, o.hashKey, data, o.recordID)
	b.records++
	p.outRecords++
	p.outBytes += size
	if b.records >= p.cfg.maxFrameRecords || maxHeaderBytes+len(b.body)+len(st.trailer) >= p.cfg.maxFrameBytes {
		p.seal(b)
	}
	res := b.res
	p.mu.Unlock()
	return res, nil
}

// reserve waits for room for a record of size bytes (p.mu held).
func (p *Producer) reserve(ctx context.Context, size int) error {
	for {
		if p.closed {
			return ErrClosed
		}
		if p.outRecords < p.cfg.maxQueueRecords && (p.outBytes+size <= p.cfg.maxQueueBytes || p.outRecords == 0) {
			return nil
		}
		if p.cfg.failWhenFull {
			return ErrQueueFull
		}
		if p.spaceCh == nil {
			p.spaceCh = make(chan struct{})
		}
		ch := p.spaceCh
		p.mu.Unlock()
		select {
		case <-ch:
			p.mu.Lock()
		case <-ctx.Done():
			p.mu.Lock()
			return ctx.Err()
		}
	}
}

func (p *Producer) streamFor(stream *string) *streamState {
	if stream == nil {
		return p.defaultSt
	}
	if st, ok := p.streams[*stream]; ok {
		return st
	}
	name := *stream
	st := &streamState{stream: &name, trailer: appendTrailer(nil, true, &name)}
	p.streams[name] = st
	return st
}

func (p *Producer) newBatch(st *streamState, size int) *batch {
	want := size * p.cfg.maxFrameRecords
	if want > p.cfg.maxFrameBytes {
		want = p.cfg.maxFrameBytes
	}
	if want < size {
		want = size
	}
	var body []byte
	if v, ok := p.bodies.Get().(*[]byte); ok && cap(*v) >= want {
		body = (*v)[:0]
	} else {
		body = make([]byte, 0, want)
	}
	p.seq++
	b := &batch{st: st, body: body, created: time.Now(), seq: p.seq, res: &Result{done: make(chan struct{})}}
	p.queue = append(p.queue, b)
	st.open = b
	p.signal()
	return b
}

func (p *Producer) seal(b *batch) {
	b.sealed = true
	if b.st.open == b {
		b.st.open = nil
	}
	p.signal()
}

func (p *Producer) tracef(format string, args ...interface{}) {
	if p.trace != nil {
		p.trace(format, args...)
	}
}

// signal wakes the run goroutine.
func (p *Producer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// randomKey draws a partition key of 16 lowercase hex digits (splitmix64).
func (p *Producer) randomKey(dst *[randomKeyLen]byte) {
	z := atomic.AddUint64(&p.keyBase, 0x9E3779B97F4A7C15)
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	z ^= z >> 31
	const hexDigits = "0123456789abcdef"
	for i := randomKeyLen - 1; i >= 0; i-- {
		dst[i] = hexDigits[z&15]
		z >>= 4
	}
}

// resolve gives a frame's records their outcome (p.mu held).
func (p *Producer) resolve(b *batch, err error) {
	if b.res == nil {
		return
	}
	res := b.res
	b.res = nil
	if b.st.open == b {
		b.st.open = nil
	}
	res.err = err
	close(res.done)
	p.outRecords -= b.records
	p.outBytes -= len(b.body)
	if err == nil {
		p.stats.Acked += uint64(b.records)
	} else {
		p.stats.Failed += uint64(b.records)
		if InDoubt(err) {
			p.stats.InDoubt += uint64(b.records)
		}
		if p.failures != nil {
			p.failures.push(&Failure{Err: err, Stream: b.st.stream, body: b.body, Count: b.records})
			b.body = nil
		}
	}
	p.recycle(b)
	if p.spaceCh != nil {
		close(p.spaceCh)
		p.spaceCh = nil
	}
}

// recycle gives an answered frame's buffer back for reuse, once no writer can
// still be reading it (p.mu held).
func (p *Producer) recycle(b *batch) {
	if b.res != nil || b.state == writing || b.body == nil {
		return
	}
	if cap(b.body) <= 2*p.cfg.maxFrameBytes {
		body := b.body[:0]
		p.bodies.Put(&body)
	}
	b.body = nil
}

// pending lists the Results of every record not yet answered (p.mu held).
func (p *Producer) pending() []*Result {
	out := make([]*Result, 0, len(p.queue)+len(p.inflight)+len(p.requeue))
	for _, list := range [][]*batch{p.requeue, p.inflight, p.queue} {
		for _, b := range list {
			if b.res != nil {
				out = append(out, b.res)
			}
		}
	}
	return out
}

func waitAll(ctx context.Context, results []*Result) error {
	for _, r := range results {
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Flush sends every queued record without waiting for its linger, and waits until
// every record put before the call is answered (durable or failed), or until ctx
// ends (its error).
func (p *Producer) Flush(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	p.mu.Lock()
	p.flushSeq = p.seq
	results := p.pending()
	p.signal()
	p.mu.Unlock()
	return waitAll(ctx, results)
}

// Close stops new puts (ErrClosed), sends what is queued and waits for every
// answer, then closes the connection. If ctx ends first, the records not yet
// answered fail: ErrClosed for those never written, a *ConnectionLostError (in
// doubt) for those written; Close then returns ctx's error. Close may be called
// more than once.
func (p *Producer) Close(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		if p.spaceCh != nil {
			close(p.spaceCh)
			p.spaceCh = nil
		}
	}
	p.flushSeq = p.seq
	results := p.pending()
	p.signal()
	p.mu.Unlock()
	err := waitAll(ctx, results)
	if err != nil {
		p.abort()
	}
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.runDone
	p.mu.Lock()
	if p.failures != nil {
		p.failures.close()
	}
	p.mu.Unlock()
	return err
}

// abort fails every record not yet answered and drops the connection.
func (p *Producer) abort() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.aborted = true
	for _, b := range p.inflight {
		if b.state == queued {
			p.resolve(b, ErrClosed)
		} else {
			p.resolve(b, &ConnectionLostError{Message: "the producer was closed before the agent answered"})
		}
	}
	for _, list := range [][]*batch{p.requeue, p.queue} {
		for _, b := range list {
			p.resolve(b, ErrClosed)
		}
	}
	p.inflight, p.requeue, p.queue = nil, nil, nil
	if p.conn != nil {
		p.conn.Close()
	}
}

// Outstanding is the number of records put and not yet answered.
func (p *Producer) Outstanding() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outRecords
}

// Stats returns the producer's counters.
func (p *Producer) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Outstanding = p.outRecords
	s.InFlight = len(p.inflight)
	return s
}
