// Tests of the wire format against frames worked out by hand, of the response
// decoder on odd input, and a benchmark of the record encoder.

package shardline

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func str(s string) *string { return &s }

func TestEncodeRequestByHand(t *testing.T) {
	records := []Record{
		{PartitionKey: "k", ExplicitHashKey: str("42"), Data: []byte("hello"), RecordID: str("order-1")},
		{PartitionKey: "ключ"},
	}
	var want []byte
	want = append(want, 0, 0, 0, 42, 1, 0x08, 7)
	want = append(want, 0x12, 23, 0x0A, 1, 'k', 0x12, 2, '4', '2', 0x1A, 5)
	want = append(want, "hello"...)
	want = append(want, 0x22, 7)
	want = append(want, "order-1"...)
	want = append(want, 0x12, 10, 0x0A, 8)
	want = append(want, "ключ"...)
	want = append(want, 0x18, 1)
	got := EncodeRequest(7, true, nil, records)
	if !bytes.Equal(got, want) {
		t.Fatalf("frame\n got %x\nwant %x", got, want)
	}
	// A stream comes last; id 0 and ack false are left out; optional fields are
	// written even when empty; an empty key and empty data are left out.
	got = EncodeRequest(0, false, str("audit"), []Record{{ExplicitHashKey: str(""), RecordID: str("")}})
	want = []byte{0, 0, 0, 14, 1, 0x12, 4, 0x12, 0, 0x22, 0, 0x22, 5, 'a', 'u', 'd', 'i', 't'}
	if !bytes.Equal(got, want) {
		t.Fatalf("frame\n got %x\nwant %x", got, want)
	}
	// Long ids and lengths take multi-byte varints.
	big := bytes.Repeat([]byte{7}, 300)
	got = EncodeRequest(1<<63, true, nil, []Record{{PartitionKey: "p", Data: big}})
	q, err := decodeRequest(got[5:])
	if err != nil || q.id != 1<<63 || !q.ack || q.stream != nil || len(q.records) != 1 ||
		!bytes.Equal(q.records[0].Data, big) || q.records[0].PartitionKey != "p" {
		t.Fatalf("round trip: %+v %v", q, err)
	}
	if int(uint32(got[0])<<24|uint32(got[1])<<16|uint32(got[2])<<8|uint32(got[3])) != len(got)-4 {
		t.Fatal("length prefix is not the frame's length")
	}
}

func TestDecodeResponse(t *testing.T) {
	// id 300, status SPOOL_FULL, message "full", records 0; then an unknown field of
	// each wire type, and the fields again in another order.
	frame, _ := hex.DecodeString("0000000c" + "01" + "08ac02" + "1003" + "1a0466756c6c")
	r, err := DecodeResponseFrame(frame)
	if err != nil || r != (Response{ID: 300, Status: StatusSpoolFull, Message: "full"}) {
		t.Fatalf("%+v %v", r, err)
	}
	msg, _ := hex.DecodeString("2005" + "2801" + "310102030405060708" + "3a03616263" + "3d01020304" + "4b" + "5001" + "4c" + "0807" + "1000")
	r, err = DecodeResponse(msg)
	if err != nil || r != (Response{ID: 7, Status: StatusOK, Records: 5}) {
		t.Fatalf("%+v %v", r, err)
	}
	// A status beyond the known ones, and a negative one (10-byte varint).
	r, err = DecodeResponse([]byte{0x10, 42})
	if err != nil || r.Status.Known() || r.Status.String() != "UNKNOWN(42)" {
		t.Fatalf("%+v %v", r, err)
	}
	r, err = DecodeResponse([]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	if err != nil || r.Status != -1 {
		t.Fatalf("%+v %v", r, err)
	}
	bad := map[string]string{
		"truncated varint":       "08ff",
		"truncated length":       "1a05616263",
		"wrong wire type":        "1803",
		"field zero":             "0001",
		"varint over 10 bytes":   "08ffffffffffffffffffff01",
		"bad utf-8 message":      "1a01ff",
		"truncated fixed64":      "31010203",
		"truncated fixed32":      "3d0102",
		"wire type 7":            "0f",
		"stray end group":        "4c",
		"unfinished group":       "4b0801",
		"group ended by another": "4b54",
	}
	for name, h := range bad {
		msg, _ := hex.DecodeString(h)
		_, err := DecodeResponse(msg)
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Kind != FrameProtobuf {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestParseFrameErrors(t *testing.T) {
	cases := []struct {
		frame string
		kind  FrameErrorKind
		n     int
	}{
		{"ffffffff", FrameTooLarge, 0},
		{"01000001", FrameTooLarge, 0},
		{"00000000", FrameEmpty, 4},
		{"000000020900", FrameVersion, 6},
	}
	for _, c := range cases {
		b, _ := hex.DecodeString(c.frame)
		_, n, err := ParseFrame(b)
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Kind != c.kind || n != c.n || fe.Fatal() != (c.kind == FrameTooLarge) {
			t.Errorf("%s: %v n=%d", c.frame, err, n)
		}
	}
	// Exactly 16 MiB is allowed: it only waits for more bytes.
	if _, n, err := ParseFrame([]byte{1, 0, 0, 0}); err != nil || n != 0 {
		t.Fatalf("16 MiB: %v", err)
	}
}

func TestFrameReaderAcrossPartialReads(t *testing.T) {
	var wire []byte
	want := []Response{{ID: 1}, {ID: 2, Status: StatusInternal, Message: strings.Repeat("x", 100000)}, {ID: 3, Records: 9}}
	for _, r := range want {
		wire = append(wire, encodeResponse(r)...)
	}
	fr := newFrameReader(iotest.OneByteReader(bytes.NewReader(wire)))
	for _, w := range want {
		got, err := fr.next()
		if err != nil || got != w {
			t.Fatalf("got %+v %v", got.ID, err)
		}
	}
	if _, err := fr.next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	fr = newFrameReader(bytes.NewReader(wire[:len(wire)-1]))
	fr.next()
	fr.next()
	if _, err := fr.next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated end: %v", err)
	}
}

func TestDecodeRecordsOfABody(t *testing.T) {
	var body []byte
	body = appendRecord(body, []byte("0123456789abcdef"), "", nil, []byte("a"), nil)
	body = appendRecord(body, nil, "key", str("1"), nil, str("id"))
	rs, err := decodeRecords(body)
	if err != nil || len(rs) != 2 || rs[0].PartitionKey != "0123456789abcdef" || string(rs[0].Data) != "a" ||
		rs[1].PartitionKey != "key" || *rs[1].ExplicitHashKey != "1" || *rs[1].RecordID != "id" || rs[1].Data != nil {
		t.Fatalf("%+v %v", rs, err)
	}
}

// encodeResponse writes a Response the way prost does (for the stand-in agent).
func encodeResponse(r Response) []byte {
	var msg []byte
	if r.ID != 0 {
		msg = appendVarint(append(msg, 0x08), r.ID)
	}
	if r.Status != 0 {
		msg = appendVarint(append(msg, 0x10), uint64(int64(r.Status)))
	}
	if r.Message != "" {
		msg = appendVarint(append(msg, 0x1a), uint64(len(r.Message)))
		msg = append(msg, r.Message...)
	}
	if r.Records != 0 {
		msg = appendVarint(append(msg, 0x20), uint64(r.Records))
	}
	n := len(msg) + 1
	return append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), 1}, msg...)
}

func BenchmarkAppendRecord256(b *testing.B) {
	data := bytes.Repeat([]byte{'x'}, 256)
	var key [16]byte
	copy(key[:], "0123456789abcdef")
	buf := make([]byte, 0, 1<<20)
	b.SetBytes(256)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if len(buf) > 1<<20-512 {
			buf = buf[:0]
		}
		buf = appendRecord(buf, key[:], "", nil, data, nil)
	}
}

func BenchmarkPutEncode256(b *testing.B) {
	// Put's own cost (validation, random key, encoding, queueing, writing), with
	// the frames answered by a stand-in agent that reads only their ids.
	agent := startFakeAgent(b, nil)
	p, err := New(agent.path)
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte{'x'}, 256)
	b.SetBytes(256)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := p.Put(data); err != nil {
			b.Fatal(err)
		}
	}
	p.Flush(nil)
	b.StopTimer()
	p.Close(nil)
}
