// The producer's connection to the agent: one goroutine connects (with jittered
// backoff) and writes frames, pipelined up to the in-flight bound; another reads
// the answers and matches them in order. SHUTTING_DOWN answers put frames back at
// the front of the queue; frames written and never answered fail in doubt.

package shardline

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"time"
)

// answerGrace bounds the wait for the agent's last answers once a connection
// stops writing.
const answerGrace = 5 * time.Second

// How a connection's write loop ended.
type loopEnd int

const (
	endBroken loopEnd = iota // the connection failed
	endDrain                 // the agent is stopping: collect its last answers
	endDone                  // closed and everything answered
	endAbort                 // Close gave up, or was done
)

// run connects whenever there is something to send, until Close is done.
func (p *Producer) run() {
	defer close(p.runDone)
	jitter := rand.New(rand.NewSource(p.jitterSeed))
	backoff := p.cfg.backoffMin
	wait := false // sleep the backoff before the next attempt
	for {
		if wait {
			d := backoff/2 + time.Duration(jitter.Int63n(int64(backoff/2)+1))
			backoff *= 2
			if backoff > p.cfg.backoffMax {
				backoff = p.cfg.backoffMax
			}
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-p.stop:
				t.Stop()
				return
			}
		}
		p.mu.Lock()
		for len(p.queue) == 0 && !p.aborted && !(p.closed && p.outRecords == 0) {
			p.mu.Unlock()
			select {
			case <-p.wake:
			case <-p.stop:
				return
			}
			p.mu.Lock()
		}
		if p.aborted || p.closed && p.outRecords == 0 {
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		conn, err := net.DialTimeout("unix", p.path, p.cfg.dialTimeout)
		if err != nil {
			p.mu.Lock()
			p.stats.LastError = err
			p.mu.Unlock()
			wait = true
			continue
		}
		if p.serve(conn) {
			backoff = p.cfg.backoffMin
			wait = false
		} else {
			wait = true
		}
	}
}

// serve runs one connection to its end; true if it went well (the next attempt
// may come at once).
func (p *Producer) serve(conn net.Conn) bool {
	p.mu.Lock()
	if p.aborted {
		p.mu.Unlock()
		conn.Close()
		return false
	}
	p.conn, p.broken, p.draining, p.sawOK, p.probed, p.connErr = conn, false, false, false, false, nil
	p.window = 1
	p.stats.Connects++
	p.tracef("connected")
	// The first request is empty: records are written only once the agent has
	// answered on this connection. A connection the agent never serves (one
	// queued on the socket of an agent that is stopping) leaves no record in doubt.
	probe := &batch{st: p.defaultSt, probe: true, sealed: true, state: complete, id: 1}
	p.nextID = 1
	p.inflight = append(p.inflight[:0], probe)
	p.mu.Unlock()
	readerDone := make(chan struct{})
	go p.readLoop(conn, readerDone)
	end := endBroken
	frame := appendHeader(nil, probe.id, 0, len(probe.st.trailer))
	if _, err := conn.Write(append(frame, probe.st.trailer...)); err != nil {
		p.mu.Lock()
		if !p.broken {
			p.broken, p.connErr, p.stats.LastError = true, err, err
		}
		p.mu.Unlock()
	} else {
		end = p.writeLoop(conn)
	}
	switch end {
	case endDrain, endBroken:
		// The agent may still answer what it read (a failed write only says it
		// reads no more): its answers are read until it closes, for a while.
		// The write deadline that may have stopped the writer has no hold on
		// CloseWrite.
		conn.SetReadDeadline(time.Now().Add(answerGrace))
		if uc, ok := conn.(*net.UnixConn); !ok || uc.CloseWrite() != nil {
			conn.Close()
		}
	default:
		conn.Close()
	}
	<-readerDone
	conn.Close()
	return p.teardown()
}

// teardown ends the connection's frames (p.conn's): those answered SHUTTING_DOWN
// and those not wholly written go back to the front of the queue, in order; those
// written and unanswered fail in doubt.
func (p *Producer) teardown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	cause := p.connErr
	back := p.requeue
	lost := 0
	for _, b := range p.inflight {
		if b.probe {
			continue
		}
		if b.state == complete {
			lost++
			p.resolve(b, &ConnectionLostError{Message: "the connection ended before the agent answered", Cause: cause})
		} else {
			back = append(back, b)
		}
	}
	for _, b := range back {
		b.state = queued
	}
	if len(back) > 0 {
		p.queue = append(back, p.queue...)
	}
	p.tracef("connection ended (%v): %d frames sent again, %d in doubt", cause, len(back), lost)
	p.inflight, p.requeue, p.conn = nil, nil, nil
	// An agent that is stopping (it answered SHUTTING_DOWN, or closed the
	// connection with frames unanswered) is given time to go before the next
	// attempt: while it stops it still takes connections that come quickly.
	return p.sawOK && !p.draining && lost == 0
}

// writeLoop writes frames as they become ready, while the in-flight bound allows.
func (p *Producer) writeLoop(conn net.Conn) loopEnd {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var bufs net.Buffers
	var headers []byte
	var ends []int64
	var out []*batch
	for {
		p.mu.Lock()
		for {
			switch {
			case p.aborted:
				p.mu.Unlock()
				return endAbort
			case p.broken:
				p.mu.Unlock()
				return endBroken
			case p.draining:
				p.mu.Unlock()
				return endDrain
			case p.closed && p.outRecords == 0:
				p.mu.Unlock()
				return endDone
			}
			now := time.Now()
			out = p.take(out[:0], now)
			if len(out) > 0 {
				break
			}
			linger := time.Duration(-1)
			if p.probed && len(p.queue) > 0 && len(p.inflight) < p.window {
				linger = p.queue[0].created.Add(p.cfg.linger).Sub(now)
			}
			p.mu.Unlock()
			if linger >= 0 {
				timer.Reset(linger)
				select {
				case <-p.wake:
				case <-timer.C:
				case <-p.stop:
				}
				if !timer.Stop() {
					select {
					case <-timer.C:
					default:
					}
				}
			} else {
				select {
				case <-p.wake:
				case <-p.stop:
				}
			}
			p.mu.Lock()
		}
		p.mu.Unlock()

		// Headers are built now: ids belong to the connection. Room for all of
		// them is made first, so that the slices taken stay valid.
		if need := maxHeaderBytes * len(out); cap(headers) < need {
			headers = make([]byte, 0, need)
		}
		headers, bufs, ends = headers[:0], bufs[:0], ends[:0]
		var off int64
		for _, b := range out {
			start := len(headers)
			headers = appendHeader(headers, b.id, len(b.body), len(b.st.trailer))
			bufs = append(bufs, headers[start:len(headers):len(headers)], b.body, b.st.trailer)
			off += int64(len(headers) - start + len(b.body) + len(b.st.trailer))
			ends = append(ends, off)
		}
		w := bufs
		n, err := w.WriteTo(conn)
		p.tracef("wrote %d frames from id %d: %d of %d bytes, %v", len(out), out[0].id, n, off, err)
		p.mu.Lock()
		for i, b := range out {
			if ends[i] <= n {
				b.state = complete
			} else if b.state == writing {
				b.state = queued // not wholly written: the agent cannot have it
			}
			p.recycle(b)
		}
		draining := p.draining
		if err != nil && !p.broken && !draining {
			p.broken = true
			p.connErr = err
			p.stats.LastError = err
		}
		p.mu.Unlock()
		if err != nil {
			if draining {
				return endDrain // stopped by the write deadline
			}
			return endBroken
		}
	}
}

// take hands the writer the frames ready at the front of the queue (p.mu held).
func (p *Producer) take(out []*batch, now time.Time) []*batch {
	for p.probed && len(p.queue) > 0 && len(p.inflight) < p.window {
		b := p.queue[0]
		ready := b.sealed || len(p.queue) > 1 || b.seq <= p.flushSeq || p.closed ||
			now.Sub(b.created) >= p.cfg.linger
		if !ready {
			break
		}
		p.queue[0] = nil
		p.queue = p.queue[1:]
		if len(p.queue) == 0 {
			p.queue = p.queue[:0:0]
		}
		if !b.sealed {
			p.seal(b)
		}
		p.nextID++
		b.id = p.nextID
		b.state = writing
		p.inflight = append(p.inflight, b)
		out = append(out, b)
	}
	return out
}

// readLoop reads the agent's answers until the connection ends.
func (p *Producer) readLoop(conn net.Conn, done chan struct{}) {
	defer close(done)
	fr := newFrameReader(conn)
	for {
		resp, err := fr.next()
		if err == nil {
			err = p.answer(resp)
		}
		if err != nil {
			p.mu.Lock()
			if !p.broken {
				p.broken = true
				if errors.Is(err, io.EOF) {
					err = errors.New("the agent closed the connection")
				}
				p.connErr = err
				p.stats.LastError = err
			}
			p.signal()
			p.mu.Unlock()
			conn.Close()
			return
		}
	}
}

// answer matches one answer with the oldest frame in flight.
func (p *Producer) answer(r Response) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.inflight) == 0 {
		if p.aborted {
			return nil
		}
		return fmt.Errorf("shardline: answer with id %d (%s) while no frame is in flight", r.ID, r.Status)
	}
	b := p.inflight[0]
	if r.ID != b.id && r.ID != 0 {
		return fmt.Errorf("shardline: answer with id %d where %d was expected", r.ID, b.id)
	}
	p.inflight[0] = nil
	p.inflight = p.inflight[1:]
	p.tracef("answer %d %s to frame %d of %d records", r.ID, r.Status, b.id, b.records)
	if b.probe {
		switch r.Status {
		case StatusOK:
			p.sawOK = true
		case StatusShuttingDown:
			p.stopWriting()
		}
		p.probed = true
		p.signal()
		return nil
	}
	switch r.Status {
	case StatusOK:
		p.sawOK = true
		// The window opens as the agent answers (slow start): a connection to
		// an agent that stops right away has little written on it.
		if p.window < p.cfg.maxInFlight {
			p.window *= 2
			if p.window > p.cfg.maxInFlight {
				p.window = p.cfg.maxInFlight
			}
		}
		p.resolve(b, nil)
	case StatusShuttingDown:
		p.requeue = append(p.requeue, b)
		p.stopWriting()
	default:
		p.resolve(b, agentError(r))
	}
	p.signal()
	return nil
}

// stopWriting: the agent is stopping. The write in progress ends at once (a frame
// cut short cannot be spooled: it goes again), so that what was written fits in
// what the agent still reads and answers SHUTTING_DOWN (p.mu held).
func (p *Producer) stopWriting() {
	if p.draining {
		return
	}
	p.draining = true
	if p.conn != nil {
		p.conn.SetWriteDeadline(time.Now())
	}
}
