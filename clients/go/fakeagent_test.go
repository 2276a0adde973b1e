// A stand-in agent for the producer's unit tests: a Unix socket server that
// decodes request frames and answers as each test tells it, to reach cases the
// real agent makes hard to time (answers held back, unknown statuses, id 0).

package shardline

import (
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
)

type fakeAgent struct {
	path    string
	ln      *net.UnixListener
	handler func(c *fakeConn, q request)
	// holdProbes hands empty requests to the handler too.
	holdProbes bool
	// lite answers OK to every frame without decoding it.
	lite bool

	mu       sync.Mutex
	requests []request
	reqConn  []int // the connection of each request
	conns    []*fakeConn
}

// fakeConn is one client connection of the stand-in agent.
type fakeConn struct {
	agent *fakeAgent
	conn  *net.UnixConn
	index int // 0 for the first connection
	wmu   sync.Mutex
}

func (c *fakeConn) reply(r Response) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.Write(encodeResponse(r))
}

func (c *fakeConn) ok(q request) {
	c.reply(Response{ID: q.id, Records: uint32(len(q.records))})
}

func okHandler(c *fakeConn, q request) { c.ok(q) }

func startFakeAgent(t testing.TB, handler func(c *fakeConn, q request)) *fakeAgent {
	return startFakeAgentAt(t, filepath.Join(t.TempDir(), "agent.sock"), handler)
}

func startFakeAgentAt(t testing.TB, path string, handler func(c *fakeConn, q request)) *fakeAgent {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	a := &fakeAgent{path: path, ln: ln, handler: handler, lite: handler == nil}
	go a.accept()
	t.Cleanup(a.stop)
	return a
}

func (a *fakeAgent) stop() {
	a.ln.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		c.conn.Close()
	}
}

func (a *fakeAgent) accept() {
	for {
		conn, err := a.ln.AcceptUnix()
		if err != nil {
			return
		}
		a.mu.Lock()
		c := &fakeConn{agent: a, conn: conn, index: len(a.conns)}
		a.conns = append(a.conns, c)
		a.mu.Unlock()
		go c.serve()
	}
}

func (c *fakeConn) serve() {
	defer c.conn.Close()
	var header [4]byte
	for {
		if _, err := io.ReadFull(c.conn, header[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(header[:]))
		if _, err := io.ReadFull(c.conn, body); err != nil {
			return
		}
		if len(body) == 0 || body[0] != Version {
			c.reply(Response{Status: StatusBadFrame, Message: "bad frame"})
			continue
		}
		if c.agent.lite {
			// Only the id is read (benchmarks: the agent's cost kept out).
			id, _, _ := readVarint(body[2:])
			c.reply(Response{ID: id})
			continue
		}
		q, err := decodeRequest(body[1:])
		if err != nil {
			c.reply(Response{Status: StatusBadFrame, Message: err.Error()})
			continue
		}
		if len(q.records) == 0 && !c.agent.holdProbes {
			// The producer's probe: answered at once, not shown to the test.
			c.ok(q)
			continue
		}
		c.agent.mu.Lock()
		c.agent.requests = append(c.agent.requests, q)
		c.agent.reqConn = append(c.agent.reqConn, c.index)
		c.agent.mu.Unlock()
		c.agent.handler(c, q)
	}
}

// received returns the requests read so far.
func (a *fakeAgent) received() []request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]request(nil), a.requests...)
}

// receivedOn returns the requests read on connection index.
func (a *fakeAgent) receivedOn(index int) []request {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []request
	for i, q := range a.requests {
		if a.reqConn[i] == index {
			out = append(out, q)
		}
	}
	return out
}

func (a *fakeAgent) connections() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.conns)
}
