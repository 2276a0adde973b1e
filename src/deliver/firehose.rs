//! Amazon Data Firehose as a destination: its names inside the agent, its limits,
//! how lines are packed into its records, and its client on `aws-sdk-firehose`.
//!
//! A Firehose stream is delivered by the same dispatcher as a Kinesis data
//! stream, seen as a stream of one shard that holds every hash key: there is no
//! ListShards, records are not KPL-aggregated but packed as lines
//! ([`Format::Lines`](crate::aggregate::Format)), no per-shard rate limit
//! applies, and a throttle (`ServiceUnavailableException`) backs off that one
//! shard, which is the whole delivery stream. The spool, the ledger, the retry
//! policy and the dead-letter file are the ones every stream has.
//!
//! Inside the agent (spool, metrics, status, dead-letter file) a Firehose stream
//! `NAME` is called `firehose:NAME`, which no Kinesis stream name can be.

use std::time::Duration;

use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;

use super::aws;
use super::destination::Destination;
use super::kinesis::{
    sdk_error, BoxFuture, ClientOptions, EntryResult, ErrorClass, ErrorCode, Kinesis, KinesisError,
};
use super::DeliveryOptions;
use crate::aggregate::{Encoded, Format, Limits};
use crate::shard_map::Shard;

/// What a Firehose stream's name starts with inside the agent.
pub(crate) const PREFIX: &str = "firehose:";
/// Largest Firehose record, in bytes (1,000 KiB).
pub(crate) const MAX_RECORD_BYTES: usize = 1_024_000;
/// Largest line (record data) sent to Firehose: a record holds it and its newline.
pub(crate) const MAX_LINE_BYTES: usize = MAX_RECORD_BYTES - 1;
/// Most bytes in one PutRecordBatch request.
pub(crate) const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// The one shard a Firehose stream is seen as.
const SHARD_ID: &str = "firehose";

/// The name inside the agent of Firehose stream `name`.
pub(crate) fn route(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The Firehose stream a name inside the agent stands for; `None` for a Kinesis
/// stream.
pub(crate) fn stream_name(route: &str) -> Option<&str> {
    route.strip_prefix(PREFIX)
}

/// How lines are packed into the records of one Firehose stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    /// Several lines per record; `false`: one line per record.
    pub enabled: bool,
    /// Largest record, in bytes (at most 1,024,000, Firehose's 1,000 KiB).
    pub max_bytes: usize,
    /// Longest a line waits for its record to fill.
    pub linger: Duration,
}

impl Default for Packing {
    fn default() -> Packing {
        Packing {
            enabled: true,
            max_bytes: MAX_RECORD_BYTES,
            linger: Duration::from_secs(1),
        }
    }
}

/// The delivery options of Firehose stream `route`: those of every stream, with
/// the packing, the request limits of PutRecordBatch and no shard rate limit.
pub(super) fn options(route: &str, base: &DeliveryOptions) -> DeliveryOptions {
    let packing = base
        .packing
        .iter()
        .find(|(r, _)| r == route)
        .map_or_else(Packing::default, |(_, p)| *p);
    DeliveryOptions {
        linger: packing.linger,
        aggregation: Limits {
            max_bytes: packing.max_bytes.min(MAX_RECORD_BYTES),
            max_records: if packing.enabled { usize::MAX } else { 1 },
            format: Format::Lines,
            packs: None,
        },
        // PutRecordBatch's own limit: one packed record alone is nearly 1 MiB,
        // the default request size of Kinesis.
        batch_max_bytes: MAX_BATCH_BYTES,
        shard_rate_factor: 0.0,
        ..base.clone()
    }
}

/// The one shard a Firehose stream is seen as: every hash key.
pub(super) fn shard() -> Shard {
    Shard {
        id: SHARD_ID.into(),
        start: 0,
        end: u128::MAX,
    }
}

/// Firehose through `aws-sdk-firehose`, configured as the Kinesis client is.
#[derive(Clone)]
pub(crate) struct SdkFirehose {
    client: aws_sdk_firehose::Client,
}

impl SdkFirehose {
    /// A client of `destination`, with the timeout and proxy of `options`.
    pub(crate) async fn to(destination: &Destination, options: &ClientOptions) -> SdkFirehose {
        let c = aws::connect(destination, options, "Firehose").await;
        let mut config = aws_sdk_firehose::config::Builder::from(&c.shared);
        if let Some(credentials) = c.credentials {
            config = config.credentials_provider(credentials);
        }
        if let Some(endpoint) = &destination.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let config = config
            // Delivery retries by itself, as for Kinesis.
            .retry_config(aws_sdk_firehose::config::retry::RetryConfig::disabled())
            .timeout_config(c.timeouts)
            .build();
        SdkFirehose {
            client: aws_sdk_firehose::Client::from_conf(config),
        }
    }
}

impl Kinesis for SdkFirehose {
    /// A Firehose stream has no shards: one that holds every hash key.
    fn list_shards<'a>(
        &'a self,
        _stream: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        Box::pin(async { Ok(vec![shard()]) })
    }

    /// One PutRecordBatch request; a Firehose record holds no partition key.
    fn put_records<'a>(
        &'a self,
        stream: &'a str,
        entries: Vec<Encoded>,
    ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>> {
        Box::pin(async move {
            let name = stream_name(stream).unwrap_or(stream);
            let count = entries.len();
            let records = entries
                .into_iter()
                .map(|e| {
                    Record::builder()
                        .data(Blob::new(Vec::from(e.data)))
                        .build()
                        .expect("data is always set")
                })
                .collect();
            let out = self
                .client
                .put_record_batch()
                .delivery_stream_name(name)
                .set_records(Some(records))
                .send()
                .await
                .map_err(|e| source_refused(sdk_error("PutRecordBatch", e)))?;
            let answers = out.request_responses();
            if answers.len() != count {
                return Err(KinesisError {
                    operation: "PutRecordBatch",
                    code: ErrorCode::InvalidResponse,
                    message: format!("{} results for {} records", answers.len(), count),
                });
            }
            Ok(answers
                .iter()
                .map(|r| match r.error_code() {
                    None => EntryResult::Accepted {
                        shard_id: String::new(),
                    },
                    Some(code) => EntryResult::Failed {
                        code: ErrorCode::kinesis(code),
                        message: r.error_message().unwrap_or_default().to_owned(),
                    },
                })
                .collect())
        })
    }
}

/// A stream whose source is a Kinesis data stream refuses Direct PUT with
/// `InvalidArgumentException`: no record is at fault, so the records stay
/// spooled (an operator changes the stream or the config) instead of going to
/// the dead-letter file.
fn source_refused(mut e: KinesisError) -> KinesisError {
    if e.code == "InvalidArgumentException" && e.message.contains("KinesisStreamAsSource") {
        e.code = ErrorCode::Kinesis {
            class: ErrorClass::Environment,
            code: "InvalidArgumentException".into(),
        };
    }
    e
}

#[cfg(test)]
mod tests;
