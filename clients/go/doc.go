// Package shardline is the Go client of shardline's framed socket protocol: it
// sends records to a running agent over its Unix socket (a [[socket]] with
// framing = "frames") and learns, per record, when the agent has made it durable
// in its spool.
//
//	p, err := shardline.New("/run/shardline/app.sock")
//	if err != nil { ... }
//	res, err := p.Put([]byte("hello"), shardline.PartitionKey("user-42"))
//	if err != nil { ... } // invalid record, or closed
//	err = res.Wait(ctx)   // nil: durable in the agent's spool
//	p.Close(ctx)
//
// Records are encoded as they are put, gathered into frames of one stream each
// (up to 500 records or 1 MiB, or what is there after 10 ms), and up to 16 frames
// are written before their answers come. A frame is spooled whole or not at all,
// so the records of one frame share one Result.
//
// Errors: *RecordError (refused by Put itself), *AgentError (the agent's answer:
// ErrSpoolFull, ErrInvalidRecord, ... through errors.Is), *ConnectionLostError
// (written, never answered: in doubt), ErrClosed, ErrQueueFull. InDoubt(err)
// tells whether the records may be in the spool all the same.
package shardline
