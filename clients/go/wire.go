// The framed protocol's wire format, version 1, written by hand: request frames
// byte-identical with the agent's own (prost) encoding, and a response decoder that
// skips unknown fields and refuses what the agent refuses.

package shardline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

const (
	// Version is the protocol version byte this client speaks.
	Version = 1
	// MaxFrameBytes is the longest frame either side accepts (16 MiB).
	MaxFrameBytes = 16 * 1024 * 1024
	headerBytes   = 4
	// Longest frame header this client writes: length, version, id's key and varint.
	maxHeaderBytes = headerBytes + 1 + 1 + binary.MaxVarintLen64
)

// Protobuf keys (field number << 3 | wire type) used by the encoder.
const (
	keyRequestID      = 1<<3 | 0
	keyRequestRecord  = 2<<3 | 2
	keyRequestAck     = 3<<3 | 0
	keyRequestStream  = 4<<3 | 2
	keyRecordKey      = 1<<3 | 2
	keyRecordHashKey  = 2<<3 | 2
	keyRecordData     = 3<<3 | 2
	keyRecordRecordID = 4<<3 | 2
)

// FrameErrorKind says why a frame could not be read.
type FrameErrorKind int

const (
	// FrameTooLarge: the length exceeds MaxFrameBytes; the stream cannot be read
	// past it (fatal).
	FrameTooLarge FrameErrorKind = iota + 1
	// FrameEmpty: a length of 0.
	FrameEmpty
	// FrameVersion: a version byte other than 1.
	FrameVersion
	// FrameProtobuf: the message is not valid protobuf.
	FrameProtobuf
)

// String is the kind's name as the shared protocol vectors spell it.
func (k FrameErrorKind) String() string {
	switch k {
	case FrameTooLarge:
		return "too_large"
	case FrameEmpty:
		return "empty"
	case FrameVersion:
		return "version"
	case FrameProtobuf:
		return "protobuf"
	}
	return fmt.Sprintf("FrameErrorKind(%d)", int(k))
}

// FrameError is a frame that could not be read.
type FrameError struct {
	Kind    FrameErrorKind
	Message string
}

func (e *FrameError) Error() string { return "shardline: bad frame: " + e.Message }

// Fatal reports whether the stream cannot be read past the frame.
func (e *FrameError) Fatal() bool { return e.Kind == FrameTooLarge }

func protobufError(format string, args ...interface{}) *FrameError {
	return &FrameError{Kind: FrameProtobuf, Message: fmt.Sprintf(format, args...)}
}

func varintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func appendVarint(dst []byte, v uint64) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// recordBody is the size of a Record message (without its key and length in the
// Request). Absent optional fields are nil.
func recordBody(keyLen int, hashKey *string, dataLen int, recordID *string) int {
	n := 0
	if keyLen > 0 {
		n += 1 + varintLen(uint64(keyLen)) + keyLen
	}
	if hashKey != nil {
		n += 1 + varintLen(uint64(len(*hashKey))) + len(*hashKey)
	}
	if dataLen > 0 {
		n += 1 + varintLen(uint64(dataLen)) + dataLen
	}
	if recordID != nil {
		n += 1 + varintLen(uint64(len(*recordID))) + len(*recordID)
	}
	return n
}

// encodedRecordLen is how many bytes appendRecord adds for such a record.
func encodedRecordLen(keyLen int, hashKey *string, dataLen int, recordID *string) int {
	body := recordBody(keyLen, hashKey, dataLen, recordID)
	return 1 + varintLen(uint64(body)) + body
}

// appendRecord appends one Request.records entry (field 2) holding the record.
// The partition key is given as bytes or as a string (one of them is empty).
func appendRecord(dst []byte, keyBytes []byte, key string, hashKey *string, data []byte, recordID *string) []byte {
	keyLen := len(keyBytes) + len(key)
	dst = append(dst, keyRequestRecord)
	dst = appendVarint(dst, uint64(recordBody(keyLen, hashKey, len(data), recordID)))
	if keyLen > 0 {
		dst = append(dst, keyRecordKey)
		dst = appendVarint(dst, uint64(keyLen))
		dst = append(dst, keyBytes...)
		dst = append(dst, key...)
	}
	if hashKey != nil {
		dst = append(dst, keyRecordHashKey)
		dst = appendVarint(dst, uint64(len(*hashKey)))
		dst = append(dst, *hashKey...)
	}
	if len(data) > 0 {
		dst = append(dst, keyRecordData)
		dst = appendVarint(dst, uint64(len(data)))
		dst = append(dst, data...)
	}
	if recordID != nil {
		dst = append(dst, keyRecordRecordID)
		dst = appendVarint(dst, uint64(len(*recordID)))
		dst = append(dst, *recordID...)
	}
	return dst
}

// appendTrailer appends the Request's fields that follow its records: ack (3) and
// stream (4), nil when absent.
func appendTrailer(dst []byte, ack bool, stream *string) []byte {
	if ack {
		dst = append(dst, keyRequestAck, 1)
	}
	if stream != nil {
		dst = append(dst, keyRequestStream)
		dst = appendVarint(dst, uint64(len(*stream)))
		dst = append(dst, *stream...)
	}
	return dst
}

// frameLen is the length a frame's header announces: version byte and message.
func frameLen(id uint64, bodyLen, trailerLen int) int {
	n := 1 + bodyLen + trailerLen
	if id != 0 {
		n += 1 + varintLen(id)
	}
	return n
}

// appendHeader appends a frame's length, version and the Request's id (field 1,
// which comes before the records).
func appendHeader(dst []byte, id uint64, bodyLen, trailerLen int) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(frameLen(id, bodyLen, trailerLen)))
	dst = append(dst, Version)
	if id != 0 {
		dst = append(dst, keyRequestID)
		dst = appendVarint(dst, id)
	}
	return dst
}

// Record is one record of a request, as it travels: the form the encoder takes in
// tests and the one failure reports give back. Absent optional fields are nil.
type Record struct {
	PartitionKey    string
	ExplicitHashKey *string
	Data            []byte
	RecordID        *string
}

// EncodeRequest returns the whole frame of a Request. The producer builds the same
// bytes piecewise (records as they are put, the header when the frame is written).
func EncodeRequest(id uint64, ack bool, stream *string, records []Record) []byte {
	var body []byte
	for i := range records {
		r := &records[i]
		body = appendRecord(body, nil, r.PartitionKey, r.ExplicitHashKey, r.Data, r.RecordID)
	}
	trailer := appendTrailer(nil, ack, stream)
	frame := appendHeader(make([]byte, 0, maxHeaderBytes+len(body)+len(trailer)), id, len(body), len(trailer))
	frame = append(frame, body...)
	return append(frame, trailer...)
}

// Response is the agent's answer to a request.
type Response struct {
	ID uint64
	// Status is the code as sent; see Status for the names of the known ones.
	Status  Status
	Message string
	Records uint32
}

// readVarint reads a varint of at most 10 bytes from the front of b.
func readVarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < binary.MaxVarintLen64; i++ {
		c := b[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			return 0, 0, protobufError("varint overflows 64 bits")
		}
		v |= uint64(c&0x7f) << (7 * uint(i))
		if c < 0x80 {
			return v, i + 1, nil
		}
	}
	if len(b) < binary.MaxVarintLen64 {
		return 0, 0, protobufError("truncated varint")
	}
	return 0, 0, protobufError("varint longer than 10 bytes")
}

// skipField returns how many bytes after its key a field of wire type wt takes.
func skipField(wt uint64, b []byte) (int, error) {
	switch wt {
	case 0:
		_, n, err := readVarint(b)
		return n, err
	case 1:
		if len(b) < 8 {
			return 0, protobufError("truncated 64-bit field")
		}
		return 8, nil
	case 2:
		l, n, err := readVarint(b)
		if err != nil {
			return 0, err
		}
		if l > uint64(len(b)-n) {
			return 0, protobufError("length-delimited field of %d bytes exceeds the %d left", l, len(b)-n)
		}
		return n + int(l), nil
	case 5:
		if len(b) < 4 {
			return 0, protobufError("truncated 32-bit field")
		}
		return 4, nil
	}
	return 0, protobufError("unsupported wire type %d", wt)
}

// skipGroup returns how many bytes a group of field number field takes after its
// start key, up to and including its end key (as prost skips groups).
func skipGroup(field uint64, b []byte, depth int) (int, error) {
	if depth > 100 {
		return 0, protobufError("groups nested too deep")
	}
	off := 0
	for {
		key, n, err := readVarint(b[off:])
		if err != nil {
			return 0, err
		}
		off += n
		f, wt := key>>3, key&7
		if f == 0 {
			return 0, protobufError("invalid field number 0")
		}
		switch wt {
		case 3:
			n, err = skipGroup(f, b[off:], depth+1)
		case 4:
			if f != field {
				return 0, protobufError("group of field %d ended by field %d", field, f)
			}
			return off, nil
		default:
			n, err = skipField(wt, b[off:])
		}
		if err != nil {
			return 0, err
		}
		off += n
	}
}

// DecodeResponse decodes a Response message (a frame's body after its version
// byte). Fields may come in any order; unknown fields are skipped; a field known
// by number but of the wrong wire type is refused (as prost refuses it).
func DecodeResponse(msg []byte) (Response, error) {
	var r Response
	for len(msg) > 0 {
		key, n, err := readVarint(msg)
		if err != nil {
			return Response{}, err
		}
		msg = msg[n:]
		field, wt := key>>3, key&7
		if field == 0 || field > 1<<29-1 {
			return Response{}, protobufError("invalid field number %d", field)
		}
		want := uint64(0)
		switch field {
		case 1, 2, 4:
		case 3:
			want = 2
		default:
			var n int
			var err error
			if wt == 3 {
				n, err = skipGroup(field, msg, 1)
			} else {
				n, err = skipField(wt, msg)
			}
			if err != nil {
				return Response{}, err
			}
			msg = msg[n:]
			continue
		}
		if wt != want {
			return Response{}, protobufError("field %d has wire type %d, not %d", field, wt, want)
		}
		if want == 2 {
			n, err := skipField(2, msg)
			if err != nil {
				return Response{}, err
			}
			_, m, _ := readVarint(msg)
			s := msg[m:n]
			if !utf8.Valid(s) {
				return Response{}, protobufError("message is not valid UTF-8")
			}
			r.Message = string(s)
			msg = msg[n:]
			continue
		}
		v, n, err := readVarint(msg)
		if err != nil {
			return Response{}, err
		}
		msg = msg[n:]
		switch field {
		case 1:
			r.ID = v
		case 2:
			r.Status = Status(int32(v))
		case 4:
			r.Records = uint32(v)
		}
	}
	return r, nil
}

// ParseFrame takes the frame at the front of buf: its message (version byte
// removed), the number of bytes it took, or n == 0 when more bytes are needed. A
// FrameError of kind other than FrameTooLarge still says how many bytes to skip.
func ParseFrame(buf []byte) (msg []byte, n int, err error) {
	if len(buf) < headerBytes {
		return nil, 0, nil
	}
	l := binary.BigEndian.Uint32(buf)
	if l > MaxFrameBytes {
		return nil, 0, &FrameError{Kind: FrameTooLarge, Message: fmt.Sprintf("frame of %d bytes exceeds the %d-byte frame limit", l, MaxFrameBytes)}
	}
	total := headerBytes + int(l)
	if len(buf) < total {
		return nil, 0, nil
	}
	if l == 0 {
		return nil, total, &FrameError{Kind: FrameEmpty, Message: "empty frame"}
	}
	if v := buf[headerBytes]; v != Version {
		return nil, total, &FrameError{Kind: FrameVersion, Message: fmt.Sprintf("unsupported protocol version %d (this client speaks %d)", v, Version)}
	}
	return buf[headerBytes+1 : total], total, nil
}

// DecodeResponseFrame decodes one whole response frame (header included); bytes
// after it are an error.
func DecodeResponseFrame(frame []byte) (Response, error) {
	msg, n, err := ParseFrame(frame)
	if err != nil {
		return Response{}, err
	}
	if n == 0 {
		return Response{}, protobufError("truncated frame")
	}
	if n != len(frame) {
		return Response{}, protobufError("%d bytes after the frame", len(frame)-n)
	}
	return DecodeResponse(msg)
}

// frameReader reads response frames from a connection into one reused buffer.
type frameReader struct {
	r   io.Reader
	buf []byte
	off int // start of unread bytes
	end int // end of read bytes
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: r, buf: make([]byte, 64*1024)}
}

// next returns the next response; io.EOF at a clean end (nothing pending),
// io.ErrUnexpectedEOF inside a frame.
func (f *frameReader) next() (Response, error) {
	for {
		msg, n, err := ParseFrame(f.buf[f.off:f.end])
		if err != nil {
			return Response{}, err
		}
		if n > 0 {
			f.off += n
			return DecodeResponse(msg)
		}
		// Make room for the whole frame once its header is known.
		need := headerBytes
		if f.end-f.off >= headerBytes {
			need = headerBytes + int(binary.BigEndian.Uint32(f.buf[f.off:]))
		}
		if f.off > 0 && (f.off == f.end || len(f.buf)-f.off < need) {
			copy(f.buf, f.buf[f.off:f.end])
			f.end -= f.off
			f.off = 0
		}
		if need > len(f.buf) {
			grown := make([]byte, need)
			copy(grown, f.buf[:f.end])
			f.buf = grown
		}
		m, err := f.r.Read(f.buf[f.end:])
		f.end += m
		if m > 0 {
			continue
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) && f.off != f.end {
			return Response{}, io.ErrUnexpectedEOF
		}
		return Response{}, err
	}
}

// decodeRecords decodes a run of Request.records entries (a frame body as the
// producer builds it); other fields are skipped.
func decodeRecords(body []byte) ([]Record, error) {
	var out []Record
	for len(body) > 0 {
		key, n, err := readVarint(body)
		if err != nil {
			return nil, err
		}
		body = body[n:]
		n, err = skipField(key&7, body)
		if err != nil {
			return nil, err
		}
		if key == keyRequestRecord {
			_, m, _ := readVarint(body)
			r, err := decodeRecord(body[m:n])
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		body = body[n:]
	}
	return out, nil
}

func decodeRecord(msg []byte) (Record, error) {
	var r Record
	for len(msg) > 0 {
		key, n, err := readVarint(msg)
		if err != nil {
			return Record{}, err
		}
		msg = msg[n:]
		n, err = skipField(key&7, msg)
		if err != nil {
			return Record{}, err
		}
		if key&7 == 2 {
			_, m, _ := readVarint(msg)
			v := msg[m:n]
			switch key >> 3 {
			case 1:
				r.PartitionKey = string(v)
			case 2:
				s := string(v)
				r.ExplicitHashKey = &s
			case 3:
				r.Data = append([]byte{}, v...)
			case 4:
				s := string(v)
				r.RecordID = &s
			}
		}
		msg = msg[n:]
	}
	return r, nil
}

// request is a decoded Request (tests' stand-in agent reads them).
type request struct {
	id      uint64
	ack     bool
	stream  *string
	records []Record
}

func decodeRequest(msg []byte) (request, error) {
	var q request
	for len(msg) > 0 {
		key, n, err := readVarint(msg)
		if err != nil {
			return request{}, err
		}
		msg = msg[n:]
		switch key {
		case keyRequestID, keyRequestAck:
			v, n, err := readVarint(msg)
			if err != nil {
				return request{}, err
			}
			msg = msg[n:]
			if key == keyRequestID {
				q.id = v
			} else {
				q.ack = v != 0
			}
			continue
		}
		n, err = skipField(key&7, msg)
		if err != nil {
			return request{}, err
		}
		_, m, _ := readVarint(msg)
		switch key {
		case keyRequestRecord:
			r, err := decodeRecord(msg[m:n])
			if err != nil {
				return request{}, err
			}
			q.records = append(q.records, r)
		case keyRequestStream:
			s := string(msg[m:n])
			q.stream = &s
		}
		msg = msg[n:]
	}
	return q, nil
}
