// The producer's options (functional options for New) and the per-record options
// of Put, with their defaults and limits.

package shardline

import (
	"fmt"
	"time"
)

// Defaults of the producer's options.
const (
	DefaultLinger           = 10 * time.Millisecond
	DefaultMaxFrameRecords  = 500
	DefaultMaxFrameBytes    = 1024 * 1024
	DefaultMaxInFlight      = 16
	DefaultMaxQueueRecords  = 100000
	DefaultMaxQueueBytes    = 64 * 1024 * 1024
	DefaultBackoffMin       = 100 * time.Millisecond
	DefaultBackoffMax       = 5 * time.Second
	defaultDialTimeout      = 5 * time.Second
	defaultFailureChanDepth = 64
)

// config holds the producer's settings.
type config struct {
	linger          time.Duration
	maxFrameRecords int
	maxFrameBytes   int
	maxInFlight     int
	maxQueueRecords int
	maxQueueBytes   int
	failWhenFull    bool
	backoffMin      time.Duration
	backoffMax      time.Duration
	stream          *string
	dialTimeout     time.Duration
}

func defaultConfig() config {
	return config{
		linger:          DefaultLinger,
		maxFrameRecords: DefaultMaxFrameRecords,
		maxFrameBytes:   DefaultMaxFrameBytes,
		maxInFlight:     DefaultMaxInFlight,
		maxQueueRecords: DefaultMaxQueueRecords,
		maxQueueBytes:   DefaultMaxQueueBytes,
		backoffMin:      DefaultBackoffMin,
		backoffMax:      DefaultBackoffMax,
		dialTimeout:     defaultDialTimeout,
	}
}

func (c *config) check() error {
	switch {
	case c.linger < 0:
		return fmt.Errorf("shardline: linger %v is negative", c.linger)
	case c.maxFrameRecords < 1:
		return fmt.Errorf("shardline: max frame records %d is below 1", c.maxFrameRecords)
	case c.maxFrameBytes < 1 || c.maxFrameBytes > MaxFrameBytes:
		return fmt.Errorf("shardline: max frame bytes %d is not 1..%d", c.maxFrameBytes, MaxFrameBytes)
	case c.maxInFlight < 1:
		return fmt.Errorf("shardline: max frames in flight %d is below 1", c.maxInFlight)
	case c.maxQueueRecords < 1:
		return fmt.Errorf("shardline: queue bound of %d records is below 1", c.maxQueueRecords)
	case c.maxQueueBytes < 1:
		return fmt.Errorf("shardline: queue bound of %d bytes is below 1", c.maxQueueBytes)
	case c.backoffMin <= 0 || c.backoffMax < c.backoffMin:
		return fmt.Errorf("shardline: reconnect backoff %v..%v is not a positive range", c.backoffMin, c.backoffMax)
	case c.dialTimeout <= 0:
		return fmt.Errorf("shardline: dial timeout %v is not positive", c.dialTimeout)
	}
	if c.stream != nil {
		if e := validateStream(*c.stream); e != nil {
			return e
		}
	}
	return nil
}

// Option sets one of the producer's settings (New).
type Option func(*config)

// WithLinger sets how long a record may wait for its frame to fill before the
// frame is sent (default 10 ms; 0 sends at once).
func WithLinger(d time.Duration) Option { return func(c *config) { c.linger = d } }

// WithMaxFrameRecords sets the most records in one frame (default 500).
func WithMaxFrameRecords(n int) Option { return func(c *config) { c.maxFrameRecords = n } }

// WithMaxFrameBytes sets the largest frame (default 1 MiB, at most 16 MiB); a
// record larger than that goes alone in its frame.
func WithMaxFrameBytes(n int) Option { return func(c *config) { c.maxFrameBytes = n } }

// WithMaxInFlight sets the most frames written and not yet answered (default 16).
func WithMaxInFlight(n int) Option { return func(c *config) { c.maxInFlight = n } }

// WithMaxQueueRecords bounds the records put and not yet answered (default 100,000).
func WithMaxQueueRecords(n int) Option { return func(c *config) { c.maxQueueRecords = n } }

// WithMaxQueueBytes bounds the encoded bytes of the records put and not yet
// answered (default 64 MiB). A single record larger than the bound is taken when
// the queue is empty.
func WithMaxQueueBytes(n int) Option { return func(c *config) { c.maxQueueBytes = n } }

// WithQueueFullFails makes Put fail with ErrQueueFull when the queue is full,
// instead of waiting for room (the default).
func WithQueueFullFails() Option { return func(c *config) { c.failWhenFull = true } }

// WithBackoff sets the reconnect backoff: min doubling to max, jittered (default
// 100 ms to 5 s).
func WithBackoff(min, max time.Duration) Option {
	return func(c *config) { c.backoffMin, c.backoffMax = min, max }
}

// WithStream sets the default stream of records put without one (default: the
// socket's own stream). The agent takes only streams the socket allows.
func WithStream(stream string) Option { return func(c *config) { c.stream = &stream } }

// WithDialTimeout bounds one connection attempt (default 5 s).
func WithDialTimeout(d time.Duration) Option { return func(c *config) { c.dialTimeout = d } }

// putOptions are one record's settings (nil: absent).
type putOptions struct {
	key      *string
	hashKey  *string
	stream   *string
	recordID *string
}

// PutOption sets one of a record's fields (Put).
type PutOption func(*putOptions)

// PartitionKey sets the record's partition key (1 to 256 Unicode characters);
// without it the producer draws a random 16-hex-digit key.
func PartitionKey(key string) PutOption { return func(o *putOptions) { o.key = &key } }

// ExplicitHashKey sets the record's explicit hash key: decimal, 0..2^128-1.
func ExplicitHashKey(key string) PutOption { return func(o *putOptions) { o.hashKey = &key } }

// ToStream sends the record to this stream instead of the producer's default.
func ToStream(stream string) PutOption { return func(o *putOptions) { o.stream = &stream } }

// RecordID gives the record its own id (1 to 64 ASCII letters, digits and -._:),
// used by a socket with record_id = true: every copy of a record sent again
// carries the same id.
func RecordID(id string) PutOption { return func(o *putOptions) { o.recordID = &id } }
