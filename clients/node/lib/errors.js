// Error classes of shardline-client: one per way a record can fail, each telling the
// agent's status (when the agent answered), the message and whether the record is in
// doubt (it may or may not be in the agent's spool).
'use strict';

/** Base class of every error this library reports. */
class ShardlineError extends Error {
  /**
   * @param {string} message
   * @param {{status?: string|null, statusCode?: number|null, inDoubt?: boolean}} [info]
   */
  constructor(message, info = {}) {
    super(message);
    this.name = new.target.name;
    /** The agent's status name (e.g. "SPOOL_FULL"), or null when the client decided. */
    this.status = info.status ?? null;
    /** The agent's numeric status code, or null. */
    this.statusCode = info.statusCode ?? null;
    /** True when the record may or may not have been spooled. */
    this.inDoubt = info.inDoubt ?? false;
  }
}

/** The record breaks a rule (partition key, explicit hash key, record id, stream, data type). */
class InvalidRecordError extends ShardlineError {}
InvalidRecordError.prototype.code = 'ERR_SHARDLINE_INVALID_RECORD';

/** Data plus partition key over 10 MiB. */
class RecordTooLargeError extends ShardlineError {}
RecordTooLargeError.prototype.code = 'ERR_SHARDLINE_RECORD_TOO_LARGE';

/** The agent's spool is full: the record was not spooled; safe to retry later. */
class SpoolFullError extends ShardlineError {}
SpoolFullError.prototype.code = 'ERR_SHARDLINE_SPOOL_FULL';

/** The record was written but the connection ended before its answer: in doubt. */
class ConnectionLostError extends ShardlineError {}
ConnectionLostError.prototype.code = 'ERR_SHARDLINE_CONNECTION_LOST';

/** The agent answered BAD_FRAME, INTERNAL (in doubt) or a status this client does not know (in doubt). */
class AgentError extends ShardlineError {}
AgentError.prototype.code = 'ERR_SHARDLINE_AGENT';

/** put after close, or close's timeout passed before the record was written: not sent. */
class ClosedError extends ShardlineError {}
ClosedError.prototype.code = 'ERR_SHARDLINE_CLOSED';

/** The queue is full and the producer was made with whenFull: 'error': not queued. */
class QueueFullError extends ShardlineError {}
QueueFullError.prototype.code = 'ERR_SHARDLINE_QUEUE_FULL';

module.exports = {
  ShardlineError,
  InvalidRecordError,
  RecordTooLargeError,
  SpoolFullError,
  ConnectionLostError,
  AgentError,
  ClosedError,
  QueueFullError,
};
