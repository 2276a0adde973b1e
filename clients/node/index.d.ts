// Type declarations of shardline-client, for TypeScript users of the CommonJS module.
/// <reference types="node" />

import { EventEmitter } from 'node:events';

export interface ProducerOptions {
  /** Longest time a record waits for its frame to fill before it is written, ms (10). */
  lingerMs?: number;
  /** Most records in one frame (500). */
  maxRecordsPerFrame?: number;
  /** Largest frame in bytes (1 MiB, at most 16 MiB); a larger record goes alone. */
  maxFrameBytes?: number;
  /** Most frames written and not yet answered (16). */
  maxInFlight?: number;
  /** Queue bound: records put and not yet settled (100,000). */
  maxQueuedRecords?: number;
  /** Queue bound: their bytes as framed (64 MiB). */
  maxQueuedBytes?: number;
  /** When the queue is full: 'block' (wait for room, default) or 'error' (QueueFullError). */
  whenFull?: 'block' | 'error';
  /** First reconnect delay, ms (100); doubles up to reconnectMaxMs, jittered. */
  reconnectMinMs?: number;
  /** Longest reconnect delay, ms (5000). */
  reconnectMaxMs?: number;
  /** Default stream of records put without one (null: the socket's own). */
  stream?: string | null;
  /** close()'s timeout when none is given, ms (30000). */
  closeTimeoutMs?: number;
}

export interface PutOptions {
  /** 1..256 Unicode characters; none: a random 16-hex-digit key. */
  partitionKey?: string | null;
  /** Decimal string (digits only) or BigInt, 0..2^128-1. */
  explicitHashKey?: string | bigint | null;
  /** The stream (the socket's own, or one its `streams` allow). */
  stream?: string | null;
  /** 1..64 ASCII letters, digits and -._: (used by sockets with record_id = true). */
  recordId?: string | null;
}

export interface ProducerStats {
  outstanding: number;
  queued: number;
  waiting: number;
  inFlight: number;
  acked: number;
  failed: number;
  inDoubt: number;
  resent: number;
  connected: boolean;
}

export declare class Producer extends EventEmitter {
  constructor(socketPath: string, options?: ProducerOptions);
  readonly socketPath: string;
  /** Records put and not yet settled. */
  readonly outstanding: number;
  /** True when a put would wait (block mode) or be refused (error mode). */
  readonly full: boolean;
  readonly stats: ProducerStats;
  /**
   * Resolves once the agent's OK covers the record (durable in its spool); rejects with one of
   * the ShardlineError classes. Never throws: bad input is an already-rejected promise.
   */
  put(data: Uint8Array | ArrayBufferView | string, options?: PutOptions): Promise<void>;
  /** Resolves when the queue has room. */
  ready(): Promise<void>;
  /** Resolves once every record put before it is settled; never rejects. */
  flush(): Promise<void>;
  /** Stops puts, sends and waits for what is queued, then closes; fails what is left at the timeout. */
  close(options?: { timeout?: number }): Promise<void>;
  on(event: 'connect', listener: () => void): this;
  on(event: 'disconnect', listener: (err: Error | null) => void): this;
  on(event: 'drain', listener: () => void): this;
  once(event: 'connect', listener: () => void): this;
  once(event: 'disconnect', listener: (err: Error | null) => void): this;
  once(event: 'drain', listener: () => void): this;
}

export type StatusName = 'OK' | 'INVALID_RECORD' | 'RECORD_TOO_LARGE' | 'SPOOL_FULL' | 'SHUTTING_DOWN' | 'BAD_FRAME' | 'INTERNAL';

export declare class ShardlineError extends Error {
  /** The agent's status name, or null when the client decided (or the status is unknown). */
  readonly status: StatusName | null;
  /** The agent's numeric status, or null. */
  readonly statusCode: number | null;
  /** The record may or may not be in the agent's spool. */
  readonly inDoubt: boolean;
  readonly code: string;
}
export declare class InvalidRecordError extends ShardlineError {}
export declare class RecordTooLargeError extends ShardlineError {}
export declare class SpoolFullError extends ShardlineError {}
export declare class ConnectionLostError extends ShardlineError {}
export declare class AgentError extends ShardlineError {}
export declare class ClosedError extends ShardlineError {}
export declare class QueueFullError extends ShardlineError {}

export declare const Status: Readonly<Record<StatusName, number>>;
export declare const DEFAULTS: Readonly<Required<ProducerOptions>>;

export interface Response {
  id: bigint;
  statusCode: number;
  status: StatusName | null;
  message: string;
  records: number;
}

export declare class FrameError extends Error {
  readonly kind: 'too_large' | 'empty' | 'version' | 'protobuf';
  readonly fatal: boolean;
}

/** Encodes a request (wire field names) as one frame, length prefix included. */
export declare function encodeRequest(request: {
  id?: number | bigint | string;
  ack?: boolean;
  stream?: string | null;
  records?: Array<{ partition_key?: string; explicit_hash_key?: string; data?: Uint8Array | string; record_id?: string }>;
}): Buffer;
/** Decodes one whole answer frame; throws FrameError. */
export declare function decodeResponseFrame(frame: Uint8Array): Response;

/** Takes answer frames off a stream of chunks. */
export declare class ResponseReader {
  constructor(maxFrameBytes?: number);
  readonly pending: number;
  push(chunk: Buffer): void;
  /** The next answer, or null when more bytes are needed; throws FrameError. */
  next(): Response | null;
}

/** A random partition key of 16 hex digits. */
export declare function randomPartitionKey(): string;
