//! agent.json's agent-wide keys: credentials and the role, timeouts, and the
//! agent's own machinery (CloudWatch metrics, its checkpoint file, its log,
//! its thread pool), which shardline replaces with its metrics endpoint, the
//! spool and `shardline status`. Secrets are never copied.

use super::out::{self, Section};
use super::read::{self, boolean, integer, text, Object};
use super::Log;

/// The session name the agent assumes its role with (`AgentConfiguration`).
const AGENT_SESSION_NAME: &str = "AWSKinesisAgent";

/// The AWS SDK for Java's default connection and socket timeouts, which the
/// agent keeps unless told otherwise.
const SDK_TIMEOUTS_MS: (i64, i64) = (10_000, 50_000);

/// A key for `[kinesis]` (and each `[[destination]]` that needs it): name,
/// TOML value, note.
pub(super) type KeyLine = (&'static str, String, String);

/// What the agent-wide keys become.
pub(super) struct General {
    /// The role keys, repeated in every `[[destination]]` (a block does not
    /// inherit `[kinesis]`'s role).
    pub role: Vec<KeyLine>,
    /// `request_timeout_ms`, when the agent's timeouts were set.
    pub request_timeout: Option<KeyLine>,
}

/// Reads the agent-wide keys: notes and top-level keys go to `top`.
pub(super) fn read(root: &Object, top: &mut Section, log: &mut Log) -> General {
    credentials(root, top, log);
    let role = role(root, top, log);
    machinery(root, top, log);
    if let Some(ms) = integer(root, "shutdownTimeoutMillis") {
        let secs = ((ms + 999) / 1000).max(1);
        top.key_noted(
            "shutdown_timeout_secs",
            secs.to_string(),
            &format!("shutdownTimeoutMillis {ms}"),
        );
    }
    let request_timeout = timeouts(root);
    for key in read::unknown(root, &[read::GENERAL_KEYS]) {
        log.lost(
            top,
            "agent.json",
            &format!("key {key:?} is not one the agent reads: ignored"),
        );
    }
    General {
        role,
        request_timeout,
    }
}

/// Access keys and credential provider classes: pointed elsewhere, not copied.
fn credentials(root: &Object, top: &mut Section, log: &mut Log) {
    let keys: Vec<&str> = ["awsAccessKeyId", "awsSecretAccessKey"]
        .into_iter()
        .filter(|k| root.contains_key(*k))
        .collect();
    if !keys.is_empty() {
        log.lost(
            top,
            "agent.json",
            &format!("{} not copied: keys do not belong in this file. Give shardline its credentials in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in a drop-in of the unit: `systemctl edit shardline`), through a profile (kinesis.profile), or better an instance role", keys.join(" and ")),
        );
    }
    if let Some(class) = text(root, "userDefinedCredentialsProvider.classname") {
        log.lost(top, "agent.json", &format!("userDefinedCredentialsProvider {class}: no equivalent: shardline takes the standard chain (environment, profile, web identity, ECS, instance role), kinesis.profile and kinesis.role_arn"));
    }
}

/// `assumeRoleARN` and what goes with it.
fn role(root: &Object, top: &mut Section, log: &mut Log) -> Vec<KeyLine> {
    let arn = text(root, "assumeRoleARN");
    let external = text(root, "assumeRoleExternalId");
    let sts = text(root, "sts.endpoint");
    let Some(arn) = arn else {
        for (key, set) in [
            ("assumeRoleExternalId", external.is_some()),
            ("sts.endpoint", sts.is_some()),
        ] {
            if set {
                log.lost(
                    top,
                    "agent.json",
                    &format!("{key} without assumeRoleARN: unused by the agent, left out"),
                );
            }
        }
        return Vec::new();
    };
    let mut out = vec![("role_arn", out::string(&arn), "assumeRoleARN".to_owned())];
    if let Some(id) = external {
        out.push((
            "external_id",
            out::string(&id),
            "assumeRoleExternalId".to_owned(),
        ));
    }
    out.push((
        "session_name",
        out::string(AGENT_SESSION_NAME),
        "the agent's session name, as CloudTrail showed it".to_owned(),
    ));
    if let Some(url) = sts {
        out.push(("sts_endpoint", out::string(&url), "sts.endpoint".to_owned()));
    }
    out
}

/// The agent's metrics, checkpoints, log and threads.
fn machinery(root: &Object, top: &mut Section, log: &mut Log) {
    let present = |prefix: &str| -> Vec<&str> {
        read::GENERAL_KEYS
            .iter()
            .copied()
            .filter(|k| k.starts_with(prefix) && root.contains_key(*k))
            .collect()
    };
    if boolean(root, "cloudwatch.emitMetrics") != Some(false) {
        let mut keys = present("cloudwatch.");
        if keys.is_empty() {
            keys.push("cloudwatch.emitMetrics (on by default)");
        }
        log.lost(top, "agent.json", &format!("{}: the agent sent its metrics to CloudWatch; no equivalent: shardline serves Prometheus metrics on metrics.listen (127.0.0.1:9717/metrics)", keys.join(", ")));
    } else if present("cloudwatch.").len() > 1 {
        top.comment("cloudwatch.*: the agent's CloudWatch metrics were off; shardline serves Prometheus metrics on metrics.listen.");
    }
    let checkpoints: Vec<&str> = ["checkpointFile", "checkpointTimeToLiveDays"]
        .into_iter()
        .chain(present("checkpoints."))
        .filter(|k| root.contains_key(*k))
        .collect();
    if !checkpoints.is_empty() {
        log.lost(top, "agent.json", &format!("{}: no equivalent: shardline keeps its checkpoints in the spool (spool.dir), written with the lines read; it does not read the agent's", checkpoints.join(", ")));
    }
    let logs = present("log.");
    if !logs.is_empty() {
        log.lost(top, "agent.json", &format!("{}: no equivalent: `shardline status` and the metrics endpoint report progress; shardline logs to the journal (RUST_LOG, --log-format)", logs.join(", ")));
    }
    let unused: Vec<&str> = [
        "maxSendingThreadsPerCore",
        "sendingThreadsKeepAliveMillis",
        "sendingThreadsMaxQueueSize",
        "connectionTTLMillis",
        "useTcpKeepAlive",
        "useHttpGzip",
        "userAgent",
        "userAgentOverride",
    ]
    .into_iter()
    .filter(|k| root.contains_key(*k))
    .collect();
    if !unused.is_empty() {
        log.lost(
            top,
            "agent.json",
            &format!(
                "{}: no equivalent: shardline's requests in flight are delivery.max_connections",
                unused.join(", ")
            ),
        );
    }
}

/// `request_timeout_ms`: the agent's connection and socket timeouts together.
fn timeouts(root: &Object) -> Option<KeyLine> {
    let connect = integer(root, "connectionTimeoutMillis");
    let socket = integer(root, "socketTimeoutMillis");
    if connect.is_none() && socket.is_none() {
        return None;
    }
    let ms = connect.unwrap_or(SDK_TIMEOUTS_MS.0) + socket.unwrap_or(SDK_TIMEOUTS_MS.1);
    Some((
        "request_timeout_ms",
        ms.max(1).to_string(),
        "connectionTimeoutMillis + socketTimeoutMillis".to_owned(),
    ))
}
