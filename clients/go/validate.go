// Record validation done by Put before anything is queued: the agent's own rules,
// so that a bad record is refused at once with a typed error.

package shardline

import (
	"fmt"
	"unicode/utf8"
)

const (
	// MaxPartitionKeyChars is the longest partition key, in Unicode characters.
	MaxPartitionKeyChars = 256
	// MaxRecordBytes is the largest record: data plus the partition key's UTF-8 bytes.
	MaxRecordBytes = 10 * 1024 * 1024
	// MaxRecordIDBytes is the longest record id.
	MaxRecordIDBytes = 64
	// The largest explicit hash key, 2^128-1, in decimal.
	maxHashKey = "340282366920938463463374607431768211455"
)

func invalid(field, format string, args ...interface{}) *RecordError {
	return &RecordError{Status: StatusInvalidRecord, Field: field, Message: fmt.Sprintf(format, args...)}
}

// excerpt quotes at most the first 64 bytes of a value.
func excerpt(s string) string {
	if len(s) <= 64 {
		return fmt.Sprintf("%q", s)
	}
	cut := 64
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q…", s[:cut])
}

func validatePartitionKey(key string) *RecordError {
	if key == "" {
		return invalid("partition_key", "partition key is empty")
	}
	if !utf8.ValidString(key) {
		return invalid("partition_key", "partition key is not valid UTF-8")
	}
	if len(key) > MaxPartitionKeyChars {
		if n := utf8.RuneCountInString(key); n > MaxPartitionKeyChars {
			return invalid("partition_key", "partition key of %d characters exceeds the %d-character limit", n, MaxPartitionKeyChars)
		}
	}
	return nil
}

func validateHashKey(key string) *RecordError {
	bad := func() *RecordError {
		return invalid("explicit_hash_key", "explicit hash key %s is not a decimal integer in 0..2^128-1", excerpt(key))
	}
	if key == "" {
		return bad()
	}
	for i := 0; i < len(key); i++ {
		if key[i] < '0' || key[i] > '9' {
			return bad()
		}
	}
	digits := key
	for len(digits) > 1 && digits[0] == '0' {
		digits = digits[1:]
	}
	if len(digits) > len(maxHashKey) || (len(digits) == len(maxHashKey) && digits > maxHashKey) {
		return bad()
	}
	return nil
}

func validateRecordID(id string) *RecordError {
	if id == "" || len(id) > MaxRecordIDBytes {
		return invalid("record_id", "record id of %d bytes is not 1 to %d bytes", len(id), MaxRecordIDBytes)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == ':'
		if !ok {
			return invalid("record_id", "record id %s holds %q; ids are ASCII letters, digits and -._:", excerpt(id), c)
		}
	}
	return nil
}

func validateStream(stream string) *RecordError {
	if stream == "" {
		return invalid("stream", "stream name is empty")
	}
	if !utf8.ValidString(stream) {
		return invalid("stream", "stream name is not valid UTF-8")
	}
	return nil
}

// validate checks a record the way the agent does, in the agent's order (record
// id, explicit hash key, partition key, size). key == nil: the producer draws a
// random 16-digit key.
func validate(key *string, hashKey *string, dataLen int, recordID *string, stream *string) *RecordError {
	if recordID != nil {
		if e := validateRecordID(*recordID); e != nil {
			return e
		}
	}
	if hashKey != nil {
		if e := validateHashKey(*hashKey); e != nil {
			return e
		}
	}
	keyLen := randomKeyLen
	if key != nil {
		if e := validatePartitionKey(*key); e != nil {
			return e
		}
		keyLen = len(*key)
	}
	if size := dataLen + keyLen; size > MaxRecordBytes {
		return &RecordError{Status: StatusRecordTooLarge, Field: "data",
			Message: fmt.Sprintf("record of %d bytes exceeds the %d-byte limit", size, MaxRecordBytes)}
	}
	if stream != nil {
		if e := validateStream(*stream); e != nil {
			return e
		}
	}
	return nil
}

// Validate checks a record as Put would, without sending it: nil, or a
// *RecordError. A nil key stands for the random key Put would draw.
func Validate(data []byte, key, hashKey, recordID, stream *string) error {
	if e := validate(key, hashKey, len(data), recordID, stream); e != nil {
		return e
	}
	return nil
}
