// NotifyFailures: a channel of failed frames with their records, for programs
// written against a8m/kinesis-producer's NotifyFailures rather than per-record
// Results.

package shardline

import "sync"

// Failure is a frame's worth of records that failed with the same error.
type Failure struct {
	Err error
	// Stream the records were put to (nil: the socket's own stream).
	Stream *string
	// Count of records.
	Count int
	body  []byte
}

// Records decodes the failed records (partition keys as sent, random ones
// included), to send them again or log them.
func (f *Failure) Records() ([]Record, error) {
	return decodeRecords(f.body)
}

// failureQueue hands failures to the channel without ever blocking the producer:
// the queue is unbounded, a goroutine feeds the channel.
type failureQueue struct {
	mu     sync.Mutex
	items  []*Failure
	closed bool
	more   chan struct{} // capacity 1
	ch     chan *Failure
}

func newFailureQueue() *failureQueue {
	q := &failureQueue{more: make(chan struct{}, 1), ch: make(chan *Failure, defaultFailureChanDepth)}
	go q.pump()
	return q
}

func (q *failureQueue) push(f *Failure) {
	q.mu.Lock()
	q.items = append(q.items, f)
	q.mu.Unlock()
	select {
	case q.more <- struct{}{}:
	default:
	}
}

// close ends the channel once every failure queued so far is delivered.
func (q *failureQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.more <- struct{}{}:
	default:
	}
}

func (q *failureQueue) pump() {
	for {
		q.mu.Lock()
		items, closed := q.items, q.closed
		q.items = nil
		q.mu.Unlock()
		for _, f := range items {
			q.ch <- f
		}
		if len(items) == 0 {
			if closed {
				close(q.ch)
				return
			}
			<-q.more
		}
	}
}

// NotifyFailures returns a channel that receives every frame of records that fails
// from now on (whatever each record's Result also says), and is closed by Close.
// Failures are queued without bound until read: drain the channel.
func (p *Producer) NotifyFailures() <-chan *Failure {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failures == nil {
		p.failures = newFailureQueue()
		if p.closed && p.stopped() {
			p.failures.close()
		}
	}
	return p.failures.ch
}

// stopped reports whether Close has finished with the connection.
func (p *Producer) stopped() bool {
	select {
	case <-p.runDone:
		return true
	default:
		return false
	}
}
