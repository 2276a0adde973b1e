//! What delivery needs from Kinesis (ListShards, DescribeStreamSummary's maximum
//! record size, PutRecords), behind a small trait,
//! and its implementation on `aws-sdk-kinesis`.
//!
//! The trait exists so the producer benchmark can measure the pipeline alone with a
//! client that accepts everything; the agent always uses [`SdkKinesis`], which talks
//! to AWS, or to an emulator through an endpoint override, the same way.
//!
//! [`ErrorCode`] is the one place that decides how a Kinesis error is handled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use super::aws;
pub use super::aws::ClientOptions;
use super::destination::Destination;
use crate::aggregate::Encoded;
use crate::metrics::Trouble;
use crate::shard_map::Shard;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of one PutRecords entry.
#[derive(Debug, Clone)]
pub enum EntryResult {
    /// Accepted, into this shard.
    Accepted { shard_id: String },
    /// Refused, with Kinesis's error code and message.
    Failed { code: ErrorCode, message: String },
}

/// An error of a whole request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed: {code}: {message}")]
pub struct KinesisError {
    pub operation: &'static str,
    pub code: ErrorCode,
    pub message: String,
}

/// Why Kinesis, or the way to it, refused records: classified once, where the
/// answer is read. [`as_str`](Self::as_str) is the one place that spells a code
/// (for logs, the status endpoint, the dead-letter file and metric labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// A code Kinesis (or AWS in front of it) answered with, as it spelled it.
    Kinesis { class: ErrorClass, code: Box<str> },
    /// The request got no answer: the connection failed or was cut.
    Transport,
    /// The request got no answer in time.
    Timeout,
    /// The request could not be signed (no credentials).
    Credentials,
    /// Kinesis answered something delivery cannot use.
    InvalidResponse,
    /// ListShards answered shards that do not make a map.
    InvalidShardMap,
    /// A record was not delivered within `max_record_age_secs`.
    Expired,
    /// A record is larger than its stream's maximum record size.
    TooLarge,
    /// An aggregate landed in a shard whose range does not hold all its records.
    WrongShard,
}

impl ErrorCode {
    /// A code Kinesis answered with.
    pub fn kinesis(code: &str) -> ErrorCode {
        ErrorCode::Kinesis {
            class: ErrorClass::of(code),
            code: code.into(),
        }
    }

    /// How delivery treats it.
    pub fn class(&self) -> ErrorClass {
        match self {
            ErrorCode::Kinesis { class, .. } => *class,
            ErrorCode::Credentials => ErrorClass::Environment,
            ErrorCode::Expired | ErrorCode::TooLarge => ErrorClass::Permanent,
            ErrorCode::Transport
            | ErrorCode::Timeout
            | ErrorCode::InvalidResponse
            | ErrorCode::InvalidShardMap
            | ErrorCode::WrongShard => ErrorClass::Transient,
        }
    }

    /// What it says about the destination (for `shardline status`).
    pub fn trouble(&self) -> Trouble {
        match self {
            ErrorCode::Credentials => Trouble::Credentials,
            ErrorCode::Kinesis { code, .. } if code.as_ref() == "ResourceNotFoundException" => {
                Trouble::StreamMissing
            }
            ErrorCode::Kinesis { code, .. } if is_credentials_code(code) => Trouble::Credentials,
            _ if self.class() == ErrorClass::Throttled => Trouble::Throttled,
            _ => Trouble::Failing,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Kinesis { code, .. } => code,
            ErrorCode::Transport => "Transport",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::Credentials => "Credentials",
            ErrorCode::InvalidResponse => "InvalidResponse",
            ErrorCode::InvalidShardMap => "InvalidShardMap",
            ErrorCode::Expired => "Expired",
            ErrorCode::TooLarge => "RecordTooLarge",
            ErrorCode::WrongShard => "WrongShard",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Whether Kinesis (or AWS in front of it) refused the request's signature or
/// credentials.
fn is_credentials_code(code: &str) -> bool {
    matches!(
        code,
        "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
    )
}

/// How delivery treats an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The shard is over its limits: back off that shard.
    Throttled,
    /// Worth retrying soon (server error, transport failure, timeout).
    Transient,
    /// Needs an operator or a changed environment (credentials, a missing stream):
    /// records stay spooled and are retried slowly.
    Environment,
    /// This record will never be accepted as it is.
    Permanent,
}

impl ErrorClass {
    /// Classifies an error code of Kinesis.
    fn of(code: &str) -> ErrorClass {
        match code {
            "ProvisionedThroughputExceededException"
            | "KMSThrottlingException"
            | "LimitExceededException"
            | "ThrottlingException"
            // Firehose's throttle, per record and per request.
            | "ServiceUnavailableException" => ErrorClass::Throttled,
            "ResourceNotFoundException"
            | "AccessDeniedException"
            | "AccessDeniedExceptionReason"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "KMSAccessDeniedException"
            | "KMSDisabledException"
            | "KMSInvalidStateException"
            | "KMSNotFoundException"
            | "KMSOptInRequired"
            | "ResourceInUseException"
            // Firehose: its KMS key, or a stream that takes no Direct PUT.
            | "InvalidKMSResourceException"
            | "InvalidSourceException" => ErrorClass::Environment,
            // A request Kinesis considers malformed: with validated records, this
            // means one of them is refused for good (for example larger than the
            // stream allows).
            "ValidationException" | "InvalidArgumentException" => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }
}

/// The Kinesis operations delivery uses.
pub trait Kinesis: Send + Sync + 'static {
    /// The open shards of a stream, all pages.
    fn list_shards<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>>;

    /// The stream's maximum record size in bytes (DescribeStreamSummary's
    /// `MaxRecordSizeInKiB`); `None` when the answer does not say.
    fn max_record_bytes<'a>(
        &'a self,
        _stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<usize>, KinesisError>> {
        Box::pin(async { Ok(None) })
    }

    /// Sends one PutRecords request; on success, one result per entry, in order.
    ///
    /// The entries are given, not lent: a client that must copy them into a
    /// request of its own can take their bytes instead while the request is
    /// in flight (the caller encodes them again for a retry).
    fn put_records<'a>(
        &'a self,
        stream: &'a str,
        entries: Vec<Encoded>,
    ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>>;
}

/// Kinesis through `aws-sdk-kinesis`, with credentials and region from the
/// standard `aws-config` chain, a profile, or an assumed role.
#[derive(Clone)]
pub struct SdkKinesis {
    client: aws_sdk_kinesis::Client,
    /// The role the credentials come from, named in credential errors.
    role: Option<String>,
    /// Streams named by ARN: (name inside the agent, ARN).
    arns: Arc<[(String, String)]>,
}

impl SdkKinesis {
    /// A client of the default destination.
    pub async fn new(options: &ClientOptions) -> SdkKinesis {
        Self::to(&options.destination, options).await
    }

    /// A client of `destination`, with the timeout and proxy of `options`.
    pub async fn to(destination: &Destination, options: &ClientOptions) -> SdkKinesis {
        let c = aws::connect(destination, options, "Kinesis").await;
        let mut config = aws_sdk_kinesis::config::Builder::from(&c.shared);
        if let Some(credentials) = c.credentials {
            config = config.credentials_provider(credentials);
        }
        if let Some(endpoint) = &destination.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let config = config
            // Delivery retries by itself, so a request that must wait never holds
            // a connection slot.
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .timeout_config(c.timeouts)
            .build();
        SdkKinesis {
            client: aws_sdk_kinesis::Client::from_conf(config),
            role: destination.role.as_ref().map(|r| r.role_arn.clone()),
            arns: options.stream_arns.clone().into(),
        }
    }

    /// How requests name `stream`: by its ARN when it has one (`StreamARN`),
    /// else by its name.
    fn stream_arn(&self, stream: &str) -> Option<&str> {
        self.arns
            .iter()
            .find(|(name, _)| name == stream)
            .map(|(_, arn)| arn.as_str())
    }

    /// The underlying client (tests and tools use it to read streams back).
    pub fn client(&self) -> &aws_sdk_kinesis::Client {
        &self.client
    }

    /// Names the role in a credentials error: that is where they come from.
    fn error<E, R>(&self, operation: &'static str, err: SdkError<E, R>) -> KinesisError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let mut e = sdk_error(operation, err);
        if let (ErrorCode::Credentials, Some(role)) = (&e.code, &self.role) {
            e.message = format!("assuming role {role}: {}", e.message);
        }
        e
    }
}

pub(super) fn sdk_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> KinesisError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message) = match &err {
        SdkError::ServiceError(e) => (
            ErrorCode::kinesis(e.err().code().unwrap_or("Unknown")),
            e.err().message().unwrap_or_default().to_owned(),
        ),
        SdkError::TimeoutError(_) => (ErrorCode::Timeout, "request timed out".to_owned()),
        SdkError::DispatchFailure(d) => {
            // An error the connector classified (a connection closed under the
            // request is a transient "other" error, not an I/O one) is the
            // transport's; an unclassified one arose before the request was sent
            // (resolving credentials, signing).
            let code = if d.is_timeout() {
                ErrorCode::Timeout
            } else if d.is_io() || d.as_other().is_some() {
                ErrorCode::Transport
            } else {
                ErrorCode::Credentials
            };
            (code, error_chain(&err))
        }
        _ => (ErrorCode::Transport, error_chain(&err)),
    };
    KinesisError {
        operation,
        code,
        // The SDK's messages may quote the endpoint or the proxy, credentials
        // and all; this message goes to the log and to `shardline status`.
        message: super::redact::text(&message).into_owned(),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// ListShards' filter for the shards open now.
fn open_shards() -> aws_sdk_kinesis::types::ShardFilter {
    aws_sdk_kinesis::types::ShardFilter::builder()
        .r#type(aws_sdk_kinesis::types::ShardFilterType::AtLatest)
        .build()
        .expect("a filter with its type is complete")
}

fn parse_hash_key(shard: &str, value: &str) -> Result<u128, KinesisError> {
    value.parse::<u128>().map_err(|_| KinesisError {
        operation: "ListShards",
        code: ErrorCode::InvalidResponse,
        message: format!("shard {shard:?} has hash key {value:?}, not a decimal in 0..2^128"),
    })
}

impl Kinesis for SdkKinesis {
    fn list_shards<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        Box::pin(async move {
            let mut shards = Vec::new();
            let mut next_token: Option<String> = None;
            loop {
                // With a token, the stream name must not be sent again.
                let request = match &next_token {
                    Some(token) => self.client.list_shards().next_token(token),
                    None => match self.stream_arn(stream) {
                        Some(arn) => self.client.list_shards().stream_arn(arn),
                        None => self.client.list_shards().stream_name(stream),
                    }
                    // Open shards only, all in one page where Kinesis allows:
                    // every call counts against the stream's ListShards limit,
                    // which a fleet of agents shares.
                    .shard_filter(open_shards())
                    .max_results(10_000),
                };
                let page = request
                    .send()
                    .await
                    .map_err(|e| self.error("ListShards", e))?;
                for s in page.shards() {
                    let open = s
                        .sequence_number_range()
                        .is_none_or(|r| r.ending_sequence_number().is_none());
                    let Some(range) = s.hash_key_range() else {
                        continue;
                    };
                    if open {
                        shards.push(Shard {
                            id: s.shard_id().into(),
                            start: parse_hash_key(s.shard_id(), range.starting_hash_key())?,
                            end: parse_hash_key(s.shard_id(), range.ending_hash_key())?,
                        });
                    }
                }
                match page.next_token() {
                    Some(t) if !t.is_empty() && !page.shards().is_empty() => {
                        next_token = Some(t.to_owned())
                    }
                    _ => break,
                }
            }
            Ok(shards)
        })
    }

    fn max_record_bytes<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<usize>, KinesisError>> {
        Box::pin(async move {
            let request = match self.stream_arn(stream) {
                Some(arn) => self.client.describe_stream_summary().stream_arn(arn),
                None => self.client.describe_stream_summary().stream_name(stream),
            };
            let out = request
                .send()
                .await
                .map_err(|e| self.error("DescribeStreamSummary", e))?;
            let kib = out
                .stream_description_summary()
                .and_then(|s| s.max_record_size_in_kib());
            Ok(kib.and_then(|k| usize::try_from(k).ok()).map(|k| k * 1024))
        })
    }

    fn put_records<'a>(
        &'a self,
        stream: &'a str,
        entries: Vec<Encoded>,
    ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>> {
        Box::pin(async move {
            let count = entries.len();
            let records = entries
                .into_iter()
                .map(|e| {
                    PutRecordsRequestEntry::builder()
                        // The aggregate's own buffer when nothing else holds it
                        // (`Vec::from` copies only a shared one).
                        .data(Blob::new(Vec::from(e.data)))
                        .partition_key(e.partition_key)
                        .set_explicit_hash_key(e.explicit_hash_key)
                        .build()
                        .expect("data and partition key are always set")
                })
                .collect();
            let request = match self.stream_arn(stream) {
                Some(arn) => self.client.put_records().stream_arn(arn),
                None => self.client.put_records().stream_name(stream),
            };
            let out = request
                .set_records(Some(records))
                .send()
                .await
                .map_err(|e| self.error("PutRecords", e))?;
            if out.records().len() != count {
                return Err(KinesisError {
                    operation: "PutRecords",
                    code: ErrorCode::InvalidResponse,
                    message: format!("{} results for {} entries", out.records().len(), count),
                });
            }
            Ok(out
                .records()
                .iter()
                .map(|r| match (r.error_code(), r.shard_id()) {
                    (None, Some(shard)) => EntryResult::Accepted {
                        shard_id: shard.to_owned(),
                    },
                    (None, None) => EntryResult::Accepted {
                        shard_id: String::new(),
                    },
                    (Some(code), _) => EntryResult::Failed {
                        code: ErrorCode::kinesis(code),
                        message: r.error_message().unwrap_or_default().to_owned(),
                    },
                })
                .collect())
        })
    }
}

/// A shared Kinesis client.
pub type SharedKinesis = Arc<dyn Kinesis>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            ErrorClass::of("ProvisionedThroughputExceededException"),
            ErrorClass::Throttled
        );
        assert_eq!(ErrorClass::of("InternalFailure"), ErrorClass::Transient);
        assert_eq!(ErrorCode::Transport.class(), ErrorClass::Transient);
        assert_eq!(ErrorCode::Credentials.class(), ErrorClass::Environment);
        assert_eq!(
            ErrorCode::kinesis("ResourceNotFoundException").class(),
            ErrorClass::Environment
        );
        assert_eq!(
            ErrorCode::kinesis("ValidationException").class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            ErrorCode::kinesis("ResourceNotFoundException").trouble(),
            Trouble::StreamMissing
        );
        assert_eq!(
            ErrorCode::kinesis("ExpiredTokenException").trouble(),
            Trouble::Credentials
        );
        assert_eq!(ErrorCode::Credentials.trouble(), Trouble::Credentials);
        assert_eq!(
            ErrorCode::kinesis("ProvisionedThroughputExceededException").trouble(),
            Trouble::Throttled
        );
        assert_eq!(ErrorCode::Timeout.trouble(), Trouble::Failing);
        // The code is kept as Kinesis spelled it.
        assert_eq!(
            ErrorCode::kinesis("InternalFailure").as_str(),
            "InternalFailure"
        );
    }

    fn dispatch_code(e: aws_sdk_kinesis::error::ConnectorError) -> ErrorCode {
        let err: SdkError<aws_sdk_kinesis::operation::put_records::PutRecordsError, ()> =
            SdkError::dispatch_failure(e);
        sdk_error("PutRecords", err).code
    }

    #[test]
    fn a_connection_closed_under_a_request_is_a_transport_error() {
        use aws_sdk_kinesis::error::ConnectorError;
        use aws_smithy_types::retry::ErrorKind;
        let closed = || "connection closed before message completed".into();
        assert_eq!(
            dispatch_code(ConnectorError::other(
                closed(),
                Some(ErrorKind::TransientError)
            )),
            ErrorCode::Transport
        );
        assert_eq!(
            dispatch_code(ConnectorError::io(closed())),
            ErrorCode::Transport
        );
        assert_eq!(
            dispatch_code(ConnectorError::timeout(closed())),
            ErrorCode::Timeout
        );
        // Failed before sending: no credentials, say.
        assert_eq!(
            dispatch_code(ConnectorError::other("no credentials".into(), None)),
            ErrorCode::Credentials
        );
    }

    /// Regression (issue 22, N4): an SDK error that quotes the endpoint or the
    /// proxy showed its `user:password@` in the log and in `shardline status`.
    #[test]
    fn an_sdk_error_quoting_a_url_hides_its_credentials() {
        use aws_sdk_kinesis::error::ConnectorError;
        let err: SdkError<aws_sdk_kinesis::operation::put_records::PutRecordsError, ()> =
            SdkError::dispatch_failure(ConnectorError::io(
                "error sending request for url (https://alice:s3cret@kinesis.example/): refused"
                    .into(),
            ));
        let e = sdk_error("PutRecords", err);
        assert!(!e.message.contains("s3cret"), "{e}");
        assert!(!e.message.contains("alice"), "{e}");
        assert!(e.message.contains("https://***@kinesis.example/"), "{e}");
    }
}
