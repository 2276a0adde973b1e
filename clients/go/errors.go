// Status codes and the typed errors a record can fail with, usable with errors.Is
// and errors.As, plus helpers that tell any of them's status and whether it is in
// doubt.

package shardline

import (
	"errors"
	"fmt"
)

// Status is a response status code.
type Status int32

// The agent's status codes.
const (
	StatusOK             Status = 0
	StatusInvalidRecord  Status = 1
	StatusRecordTooLarge Status = 2
	StatusSpoolFull      Status = 3
	StatusShuttingDown   Status = 4
	StatusBadFrame       Status = 5
	StatusInternal       Status = 6
)

var statusNames = [...]string{"OK", "INVALID_RECORD", "RECORD_TOO_LARGE", "SPOOL_FULL", "SHUTTING_DOWN", "BAD_FRAME", "INTERNAL"}

// Known reports whether s is one of the codes this client knows.
func (s Status) Known() bool { return s >= 0 && int(s) < len(statusNames) }

// String is the code's name as the protocol spells it, or UNKNOWN(n).
func (s Status) String() string {
	if s.Known() {
		return statusNames[s]
	}
	return fmt.Sprintf("UNKNOWN(%d)", int32(s))
}

// Sentinels for errors.Is. Each typed error below matches the ones that describe it.
var (
	// ErrClosed: the producer was closed before the record was put, or before it
	// was written (not sent, not in doubt).
	ErrClosed = errors.New("shardline: producer closed")
	// ErrQueueFull: the queue is full and the producer was set to fail rather than
	// wait (WithQueueFullFails). Nothing was queued.
	ErrQueueFull = errors.New("shardline: queue full")
	// ErrInvalidRecord matches a *RecordError or *AgentError with status INVALID_RECORD.
	ErrInvalidRecord = errors.New("shardline: invalid record")
	// ErrRecordTooLarge matches a *RecordError or *AgentError with status RECORD_TOO_LARGE.
	ErrRecordTooLarge = errors.New("shardline: record too large")
	// ErrSpoolFull matches an *AgentError with status SPOOL_FULL: the agent did not
	// spool the records; sending them again is safe.
	ErrSpoolFull = errors.New("shardline: agent spool full")
	// ErrBadFrame matches an *AgentError with status BAD_FRAME.
	ErrBadFrame = errors.New("shardline: agent could not read the frame")
	// ErrInternal matches an *AgentError with status INTERNAL or an unknown status.
	ErrInternal = errors.New("shardline: agent internal error")
	// ErrConnectionLost matches a *ConnectionLostError.
	ErrConnectionLost = errors.New("shardline: connection lost")
)

// RecordError is a record refused by the client's own validation, before anything
// was queued or sent. Status is StatusInvalidRecord or StatusRecordTooLarge.
type RecordError struct {
	Status  Status
	Field   string // partition_key, explicit_hash_key, data, record_id or stream
	Message string
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("shardline: %s: %s", e.Status, e.Message)
}

// Is matches ErrInvalidRecord or ErrRecordTooLarge after the status.
func (e *RecordError) Is(target error) bool {
	return target == statusSentinel(e.Status)
}

// AgentError is an answer of the agent other than OK (and SHUTTING_DOWN, which
// the producer handles by sending the records again).
type AgentError struct {
	Status  Status
	Message string
	// InDoubt: the records may or may not have been spooled (INTERNAL, unknown
	// status). False for the other statuses: nothing was spooled.
	InDoubt bool
}

func (e *AgentError) Error() string {
	s := fmt.Sprintf("shardline: agent answered %s", e.Status)
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.InDoubt {
		s += " (in doubt)"
	}
	return s
}

// Is matches the sentinel of the status (ErrSpoolFull for SPOOL_FULL, ...).
func (e *AgentError) Is(target error) bool {
	return target == statusSentinel(e.Status)
}

func statusSentinel(s Status) error {
	switch s {
	case StatusInvalidRecord:
		return ErrInvalidRecord
	case StatusRecordTooLarge:
		return ErrRecordTooLarge
	case StatusSpoolFull:
		return ErrSpoolFull
	case StatusBadFrame:
		return ErrBadFrame
	case StatusShuttingDown:
		return nil
	}
	return ErrInternal
}

// agentError turns a non-OK answer into its error.
func agentError(r Response) *AgentError {
	msg := r.Message
	if !r.Status.Known() {
		msg = fmt.Sprintf("unknown status %d: %s", int32(r.Status), r.Message)
	}
	inDoubt := r.Status == StatusInternal || !r.Status.Known()
	return &AgentError{Status: r.Status, Message: msg, InDoubt: inDoubt}
}

// ConnectionLostError: the records' frame was written but no answer came (the
// connection ended, or Close's deadline passed first). Always in doubt: the agent
// may or may not have spooled them.
type ConnectionLostError struct {
	Message string
	Cause   error // what ended the connection, if known
}

func (e *ConnectionLostError) Error() string {
	s := "shardline: connection lost before the agent answered (in doubt)"
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// Is matches ErrConnectionLost.
func (e *ConnectionLostError) Is(target error) bool { return target == ErrConnectionLost }

// Unwrap gives the cause.
func (e *ConnectionLostError) Unwrap() error { return e.Cause }

// InDoubt reports whether err says the records may or may not be in the spool:
// a *ConnectionLostError, or an *AgentError with InDoubt. Records in doubt that
// are sent again may arrive twice (give them a record id to tell copies apart).
func InDoubt(err error) bool {
	var lost *ConnectionLostError
	if errors.As(err, &lost) {
		return true
	}
	var agent *AgentError
	return errors.As(err, &agent) && agent.InDoubt
}

// StatusOf gives the status of an error from the agent's answer or from the
// client's validation (which uses the agent's codes); ok is false for the others.
func StatusOf(err error) (status Status, ok bool) {
	var agent *AgentError
	if errors.As(err, &agent) {
		return agent.Status, true
	}
	var rec *RecordError
	if errors.As(err, &rec) {
		return rec.Status, true
	}
	return 0, false
}
