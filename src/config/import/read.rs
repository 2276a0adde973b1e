//! agent.json read as the Amazon Kinesis Agent reads it: every scalar may be
//! written as a JSON string (`"5000"`, `"true"`), an empty string counts as
//! absent, and the keys its configuration classes read are listed here, so
//! that any other key is reported rather than silently dropped.

use serde_json::{Map, Value};

use super::ImportError;

/// A JSON object of agent.json.
pub(super) type Object = Map<String, Value>;

/// Agent-wide keys the agent reads (`AgentConfiguration`, `AgentContext`,
/// `UserDefinedCredentialsProvider`, the checkpoint store).
pub(super) const GENERAL_KEYS: &[&str] = &[
    "flows",
    "awsAccessKeyId",
    "awsSecretAccessKey",
    "userDefinedCredentialsProvider.classname",
    "userDefinedCredentialsProvider.location",
    "assumeRoleARN",
    "assumeRoleExternalId",
    "sts.endpoint",
    "kinesis.endpoint",
    "kinesis.region",
    "firehose.endpoint",
    "cloudwatch.endpoint",
    "cloudwatch.emitMetrics",
    "cloudwatch.tagInstance",
    "cloudwatch.metricsBufferTimeMillis",
    "cloudwatch.namespace",
    "cloudwatch.metricsQueueSize",
    "log.emitMetrics",
    "log.emitInternalMetrics",
    "log.statusReportingPeriodSeconds",
    "checkpointFile",
    "checkpointTimeToLiveDays",
    "checkpoints.queryTimeoutSeconds",
    "checkpoints.connectionTimeoutSeconds",
    "maxSendingThreads",
    "maxSendingThreadsPerCore",
    "sendingThreadsKeepAliveMillis",
    "sendingThreadsMaxQueueSize",
    "maxConnections",
    "connectionTimeoutMillis",
    "socketTimeoutMillis",
    "connectionTTLMillis",
    "useTcpKeepAlive",
    "useHttpGzip",
    "userAgent",
    "userAgentOverride",
    "shutdownTimeoutMillis",
];

/// Keys of every flow (`FileFlow`).
pub(super) const FLOW_KEYS: &[&str] = &[
    "filePattern",
    "initialPosition",
    "maxBufferAgeMillis",
    "maxBufferSizeBytes",
    "maxBufferSizeRecords",
    "waitOnFullPublishQueueMillis",
    "waitOnEmptyPublishQueueMillis",
    "waitOnFullRetryQueueMillis",
    "retryInitialBackoffMillis",
    "retryMaxBackoffMillis",
    "publishQueueCapacity",
    "skipHeaderLines",
    "multiLineStartPattern",
    "fileFooterPattern",
    "truncatedRecordTerminator",
    "dataProcessingOptions",
    "minTimeBetweenFilePollsMillis",
    "maxTimeBetweenFileTrackerRefreshMillis",
    "log.emitInternalMetrics",
];

/// Keys of a Kinesis flow only (`KinesisFileFlow`).
pub(super) const KINESIS_FLOW_KEYS: &[&str] = &["kinesisStream", "partitionKeyOption"];

/// Keys of a Firehose flow only (`FirehoseFileFlow`).
pub(super) const FIREHOSE_FLOW_KEYS: &[&str] = &["deliveryStream", "aggregatedRecordSizeBytes"];

/// Where a flow's records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A Kinesis data stream (`kinesisStream`).
    Kinesis(String),
    /// A Firehose stream (`deliveryStream`).
    Firehose(String),
}

impl Target {
    /// The stream's name.
    pub(super) fn name(&self) -> &str {
        match self {
            Target::Kinesis(n) | Target::Firehose(n) => n,
        }
    }

    pub(super) fn is_firehose(&self) -> bool {
        matches!(self, Target::Firehose(_))
    }
}

/// One entry of `flows`.
pub(super) struct Flow<'a> {
    /// Its position in `flows`.
    pub index: usize,
    pub map: &'a Object,
    /// `filePattern`.
    pub pattern: String,
    pub target: Target,
}

impl Flow<'_> {
    /// How warnings name the flow: `flows[0] (/var/log/app.log*)`.
    pub(super) fn place(&self) -> String {
        format!("flows[{}] ({})", self.index, self.pattern)
    }
}

/// The top level, which must be an object.
pub(super) fn root(json: &str, from: &str) -> Result<Object, ImportError> {
    let value: Value = serde_json::from_str(json).map_err(|e| ImportError::NotJson {
        from: from.to_owned(),
        message: e.to_string(),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ImportError::NotAnObject {
            from: from.to_owned(),
            found: kind(&other),
        }),
    }
}

/// The flows, each with its file pattern and stream. The agent makes a flow
/// with `deliveryStream` a Firehose flow even when it also names a
/// `kinesisStream`, and so does this.
pub(super) fn flows<'a>(root: &'a Object, from: &str) -> Result<Vec<Flow<'a>>, ImportError> {
    let list = match root.get("flows") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => {
            return Err(ImportError::NoFlows {
                from: from.to_owned(),
            })
        }
    };
    let mut out = Vec::new();
    for (index, flow) in list.iter().enumerate() {
        let Value::Object(map) = flow else {
            return Err(ImportError::FlowNotAnObject {
                index,
                found: kind(flow),
            });
        };
        let Some(pattern) = text(map, "filePattern") else {
            return Err(ImportError::NoFilePattern { index });
        };
        let target = match (text(map, "deliveryStream"), text(map, "kinesisStream")) {
            (Some(d), _) => Target::Firehose(d),
            (None, Some(k)) => Target::Kinesis(k),
            (None, None) => return Err(ImportError::NoStream { index, pattern }),
        };
        out.push(Flow {
            index,
            map,
            pattern,
            target,
        });
    }
    Ok(out)
}

/// What a JSON value is, for messages.
fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A scalar as text, as the agent's `readString` takes it; an empty string
/// (or blanks) counts as absent, as `Strings.isNullOrEmpty` does.
pub(super) fn text(map: &Object, key: &str) -> Option<String> {
    let s = match map.get(key)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    (!s.trim().is_empty()).then_some(s)
}

/// A whole number, written as a number or a string.
pub(super) fn integer(map: &Object, key: &str) -> Option<i64> {
    match map.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean, written as one or as `"true"` / `"false"`.
pub(super) fn boolean(map: &Object, key: &str) -> Option<bool> {
    match map.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s.trim().eq_ignore_ascii_case("true")),
        _ => None,
    }
}

/// A list of strings.
pub(super) fn strings(map: &Object, key: &str) -> Option<Vec<String>> {
    match map.get(key)? {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

/// The keys of `map` that are not in any of `known`, in key order.
pub(super) fn unknown<'a>(map: &'a Object, known: &[&[&str]]) -> Vec<&'a str> {
    map.keys()
        .map(String::as_str)
        .filter(|k| !known.iter().any(|list| list.contains(k)))
        .collect()
}
