//! `[kinesis]`'s destination settings and the `[[destination]]` blocks.

use super::checks::check_stream_name;
use std::collections::HashSet;

use super::raw::RawDestination;
use super::KinesisConfig;
use crate::deliver::destination::{
    check_external_id, check_role_arn, check_session_name, AssumeRole, Destination,
    DEFAULT_SESSION_NAME,
};
use crate::deliver::redact;

/// The destination settings of a section, as written.
pub(super) struct RawTarget<'a> {
    /// `kinesis` or `destination[i]`, for messages.
    pub field: &'a str,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub session_name: Option<String>,
    pub sts_endpoint: Option<String>,
}

/// Checks an AWS endpoint URL. Its message quotes the URL with any userinfo
/// hidden: the problems are printed and logged.
fn check_url(field: &str, url: &str, problems: &mut Vec<String>) {
    let shown = redact::url(url);
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        problems.push(format!(
            "{field} {shown:?} is not an http:// or https:// URL"
        ));
        return;
    };
    if redact::has_userinfo(url) {
        problems.push(format!(
            "{field} {shown:?} carries credentials (user:password@): AWS endpoints take none (requests are signed with the AWS credentials), and a URL is shown in the log and in `shardline status`; remove them"
        ));
    }
    // After the userinfo as `redact` sees it (the last `@`), up to the path.
    let after_userinfo = rest.rsplit('@').next().unwrap_or_default();
    let host_port = after_userinfo
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        // An IPv6 literal: up to its bracket.
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        problems.push(format!("{field} {shown:?} names no host"));
    }
}

/// Checks a section's destination settings.
pub(super) fn destination(t: RawTarget<'_>, problems: &mut Vec<String>) -> Destination {
    let field = t.field;
    if let Some(e) = &t.endpoint {
        check_url(&format!("{field}.endpoint"), e, problems);
    }
    if t.profile.as_deref().is_some_and(|p| p.trim().is_empty()) {
        problems.push(format!("{field}.profile is empty"));
    }
    let role = match t.role_arn {
        None => {
            let stray = [
                ("external_id", t.external_id.is_some()),
                ("session_name", t.session_name.is_some()),
                ("sts_endpoint", t.sts_endpoint.is_some()),
            ];
            for (key, _) in stray.iter().filter(|(_, set)| *set) {
                problems.push(format!("{field}.{key} is set without {field}.role_arn"));
            }
            None
        }
        Some(arn) => {
            if let Err(e) = check_role_arn(&arn) {
                problems.push(format!("{field}.role_arn: {e}"));
            }
            if let Some(Err(e)) = t.external_id.as_deref().map(check_external_id) {
                problems.push(format!("{field}.external_id: {e}"));
            }
            if let Some(Err(e)) = t.session_name.as_deref().map(check_session_name) {
                problems.push(format!("{field}.session_name: {e}"));
            }
            if let Some(e) = &t.sts_endpoint {
                check_url(&format!("{field}.sts_endpoint"), e, problems);
            }
            Some(AssumeRole {
                role_arn: arn,
                external_id: t.external_id,
                session_name: t
                    .session_name
                    .unwrap_or_else(|| DEFAULT_SESSION_NAME.to_owned()),
                sts_endpoint: t.sts_endpoint,
            })
        }
    };
    Destination {
        region: t.region,
        endpoint: t.endpoint,
        profile: t.profile,
        role,
    }
}

/// Checks the `[[destination]]` blocks against `[kinesis]` and the streams the
/// sources write; fills in what a block leaves to `[kinesis]`.
pub(super) fn destinations(
    blocks: Vec<RawDestination>,
    kinesis: Option<&KinesisConfig>,
    written: &HashSet<&str>,
    problems: &mut Vec<String>,
) -> Vec<(String, Destination)> {
    let mut out: Vec<(String, Destination)> = Vec::new();
    for (i, d) in blocks.into_iter().enumerate() {
        let field = format!("destination[{i}]");
        check_stream_name(&d.stream, &format!("{field}.stream"), problems);
        if kinesis.is_some_and(|k| k.stream == d.stream) {
            problems.push(format!(
                "{field}.stream {:?} is kinesis.stream: the default stream's destination is [kinesis]",
                d.stream
            ));
        } else if out.iter().any(|(s, _)| *s == d.stream) {
            problems.push(format!(
                "{field}.stream {:?} has another [[destination]] block",
                d.stream
            ));
        } else if !written.contains(d.stream.as_str()) && !d.drain {
            problems.push(format!(
                "{field}.stream {:?} is not the stream of any source (set drain = true to deliver what the spool still holds for it)",
                d.stream
            ));
        }
        let own_region = d.region.is_some() || d.endpoint.is_some();
        let mut dest = destination(
            RawTarget {
                field: &field,
                region: d.region,
                endpoint: d.endpoint,
                profile: d.profile,
                role_arn: d.role_arn,
                external_id: d.external_id,
                session_name: d.session_name,
                sts_endpoint: d.sts_endpoint,
            },
            problems,
        );
        if let Some(base) = kinesis.map(|k| &k.destination) {
            if dest.region.is_none() {
                dest.region = base.region.clone();
            }
            if !own_region {
                dest.endpoint = base.endpoint.clone();
            }
            if dest.profile.is_none() {
                dest.profile = base.profile.clone();
            }
        }
        out.push((d.stream, dest));
    }
    out
}
