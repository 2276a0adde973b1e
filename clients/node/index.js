// shardline-client: the Node.js client of shardline's acknowledged framed Unix-socket protocol.
'use strict';

const errors = require('./lib/errors');
const { Producer, DEFAULTS } = require('./lib/producer');
const wire = require('./lib/wire');
const { randomPartitionKey } = wire;

module.exports = {
  Producer,
  DEFAULTS,
  ...errors,
  Status: wire.Status,
  FrameError: wire.FrameError,
  encodeRequest: wire.encodeRequest,
  decodeResponseFrame: wire.decodeResponseFrame,
  ResponseReader: wire.ResponseReader,
  randomPartitionKey,
};
