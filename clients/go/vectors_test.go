// The shared protocol vectors (clients/vectors/protocol.json): every request
// encodes to its frame byte for byte, every response decodes (and a canonical one
// encodes back), bad frames are refused with their kind, records are validated
// as the agent does.

package shardline

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"testing/iotest"
)

type vectorRecord struct {
	PartitionKey    string  `json:"partition_key"`
	ExplicitHashKey *string `json:"explicit_hash_key"`
	Data            *string `json:"data"`
	DataLen         *int    `json:"data_len"`
	RecordID        *string `json:"record_id"`
}

type vectors struct {
	Requests []struct {
		Name    string
		Request struct {
			ID      string
			Ack     bool
			Stream  *string
			Records []vectorRecord
		}
		Frame string
	}
	Responses []struct {
		Name     string
		Frame    string
		Response struct {
			ID         string
			Status     *string
			StatusCode int32 `json:"status_code"`
			Message    string
			Records    uint32
		}
		Canonical bool
	}
	BadFrames []struct {
		Name  string
		Frame string
		Error string
		Fatal bool
	} `json:"bad_frames"`
	InvalidRecords []struct {
		Name   string
		Record vectorRecord
		Status string
	} `json:"invalid_records"`
	ValidRecords []struct {
		Name   string
		Record vectorRecord
	} `json:"valid_records"`
}

func loadVectors(t *testing.T) *vectors {
	path := os.Getenv("SHARDLINE_VECTORS")
	if path == "" {
		path = filepath.Join("..", "vectors", "protocol.json")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("protocol vectors: %v", err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Requests) == 0 || len(v.Responses) == 0 || len(v.BadFrames) == 0 {
		t.Fatal("the vectors file holds no vectors")
	}
	return &v
}

func unhex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectorsRequests(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.Requests {
		id, err := strconv.ParseUint(c.Request.ID, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		var records []Record
		for _, r := range c.Request.Records {
			records = append(records, Record{PartitionKey: r.PartitionKey, ExplicitHashKey: r.ExplicitHashKey,
				Data: unhex(t, *r.Data), RecordID: r.RecordID})
		}
		want := unhex(t, c.Frame)
		if got := EncodeRequest(id, c.Request.Ack, c.Request.Stream, records); !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %x\nwant %x", c.Name, got, want)
		}
		// The stand-in agent's decoder reads it back.
		q, err := decodeRequest(want[5:])
		if err != nil || q.id != id || q.ack != c.Request.Ack || len(q.records) != len(records) {
			t.Errorf("%s: decoded %+v, %v", c.Name, q, err)
		}
	}
}

func TestVectorsResponses(t *testing.T) {
	v := loadVectors(t)
	var stream []byte
	var want []Response
	for _, c := range v.Responses {
		frame := unhex(t, c.Frame)
		got, err := DecodeResponseFrame(frame)
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		w := c.Response
		if strconv.FormatUint(got.ID, 10) != w.ID || int32(got.Status) != w.StatusCode ||
			got.Message != w.Message || got.Records != w.Records {
			t.Errorf("%s: got %+v, want %+v", c.Name, got, w)
		}
		if w.Status == nil {
			if got.Status.Known() {
				t.Errorf("%s: status %v should be unknown", c.Name, got.Status)
			}
			if err := agentError(got); !err.InDoubt || !errors.Is(err, ErrInternal) {
				t.Errorf("%s: an unknown status is not treated like INTERNAL: %+v", c.Name, err)
			}
		} else if got.Status.String() != *w.Status {
			t.Errorf("%s: status %v, want %s", c.Name, got.Status, *w.Status)
		}
		if c.Canonical && !bytes.Equal(encodeResponse(got), frame) {
			t.Errorf("%s: encodes to %x", c.Name, encodeResponse(got))
		}
		stream = append(stream, frame...)
		want = append(want, got)
	}
	// The connection's reader gets the same answers from one byte at a time.
	fr := newFrameReader(iotest.OneByteReader(bytes.NewReader(stream)))
	for i, w := range want {
		got, err := fr.next()
		if err != nil || got != w {
			t.Fatalf("answer %d read as %+v, %v", i, got, err)
		}
	}
}

func TestVectorsBadFrames(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.BadFrames {
		frame := unhex(t, c.Frame)
		_, err := DecodeResponseFrame(frame)
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Kind.String() != c.Error || fe.Fatal() != c.Fatal {
			t.Errorf("%s: %v (want %s, fatal %v)", c.Name, err, c.Error, c.Fatal)
		}
		// The connection's reader refuses it too.
		_, err = newFrameReader(bytes.NewReader(frame)).next()
		if !errors.As(err, &fe) || fe.Kind.String() != c.Error {
			t.Errorf("%s: reader: %v", c.Name, err)
		}
	}
}

func vectorDataLen(t *testing.T, r vectorRecord) int {
	if r.DataLen != nil {
		return *r.DataLen
	}
	return len(unhex(t, *r.Data))
}

func TestVectorsRecords(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.InvalidRecords {
		r := c.Record
		err := validate(&r.PartitionKey, r.ExplicitHashKey, vectorDataLen(t, r), r.RecordID, nil)
		if err == nil || err.Status.String() != c.Status {
			t.Errorf("%s: %v, want %s", c.Name, err, c.Status)
		}
	}
	for _, c := range v.ValidRecords {
		r := c.Record
		if err := validate(&r.PartitionKey, r.ExplicitHashKey, vectorDataLen(t, r), r.RecordID, nil); err != nil {
			t.Errorf("%s: %v", c.Name, err)
		}
	}
	// And through Put itself, which refuses before queueing anything.
	p, err := New(filepath.Join(t.TempDir(), "none.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(nil)
	for _, c := range v.InvalidRecords {
		r := c.Record
		opts := []PutOption{PartitionKey(r.PartitionKey)}
		if r.ExplicitHashKey != nil {
			opts = append(opts, ExplicitHashKey(*r.ExplicitHashKey))
		}
		if r.RecordID != nil {
			opts = append(opts, RecordID(*r.RecordID))
		}
		_, err := p.Put(make([]byte, vectorDataLen(t, r)), opts...)
		if st, ok := StatusOf(err); !ok || st.String() != c.Status {
			t.Errorf("%s: put: %v", c.Name, err)
		}
	}
	if p.Outstanding() != 0 {
		t.Fatal("an invalid record was queued")
	}
}
