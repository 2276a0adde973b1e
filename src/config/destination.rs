//! `[kinesis]`'s destination settings and the `[[destination]]` blocks.

use std::collections::HashSet;

use super::raw::RawDestination;
use super::streams::RawCompression;
use super::KinesisConfig;
use crate::deliver::destination::{
    check_external_id, check_role_arn, check_session_name, AssumeRole, Destination,
    DEFAULT_SESSION_NAME,
};
use crate::deliver::firehose::{self, Packing};
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

/// What the `[kinesis]` and `[[destination]]` blocks set for their own stream,
/// by its name inside the agent.
pub(super) struct PerStream {
    /// The packing of each Firehose stream that sets one.
    pub(super) packing: Vec<(String, Packing)>,
    /// Whether each Kinesis stream that says so is aggregated.
    pub(super) aggregate: Vec<(String, bool)>,
    /// The compression of each Kinesis stream that sets its own.
    pub(super) compression: Vec<(String, Option<crate::aggregate::Packs>)>,
    /// The delivery settings of each stream that sets its own.
    pub(super) overrides: Vec<(String, crate::deliver::StreamDelivery)>,
}

impl PerStream {
    /// What `[kinesis]` sets for the default stream.
    fn of_default(kinesis: Option<&KinesisConfig>) -> PerStream {
        PerStream {
            packing: kinesis
                .and_then(|k| Some((k.stream.clone(), k.packing?)))
                .into_iter()
                .collect(),
            aggregate: kinesis
                .and_then(|k| Some((k.stream.clone(), k.aggregate?)))
                .into_iter()
                .collect(),
            compression: kinesis
                .and_then(|k| Some((k.stream.clone(), k.compression?)))
                .into_iter()
                .collect(),
            overrides: kinesis
                .filter(|k| !k.overrides.is_empty())
                .map(|k| (k.stream.clone(), k.overrides.clone()))
                .into_iter()
                .collect(),
        }
    }
}

impl PerStream {
    /// Hands each stream's own settings to delivery.
    pub(super) fn set_in(self, delivery: &mut crate::deliver::DeliveryOptions) {
        delivery.packing = self.packing;
        delivery.aggregate_streams = self.aggregate;
        delivery.compression_streams = self.compression;
        delivery.overrides = self.overrides;
    }

    /// What block `field` (`d`, for stream `route`) sets for its own stream.
    fn add(&mut self, field: &str, route: &str, d: &RawDestination, problems: &mut Vec<String>) {
        let is_firehose = d.delivery_stream.is_some();
        let packing = super::streams::packing(
            field,
            is_firehose,
            super::streams::RawPacking {
                packing: d.packing,
                max_bytes: d.packing_max_bytes,
                linger_ms: d.packing_linger_ms,
            },
            problems,
        );
        if let Some(p) = packing {
            self.packing.push((route.to_owned(), p));
        }
        if let Some(a) = super::streams::aggregate(field, is_firehose, d.aggregate, problems) {
            self.aggregate.push((route.to_owned(), a));
        }
        let compression = RawCompression::new(
            d.compression.as_deref(),
            d.compression_level,
            d.compression_pack_bytes,
        );
        if let Some(c) = super::streams::compression(field, is_firehose, compression, problems) {
            self.compression.push((route.to_owned(), c));
        }
        let own = super::overrides::validate(
            field,
            is_firehose,
            super::overrides::RawOverrides {
                max_buffered_time_ms: d.max_buffered_time_ms,
                rate_limit_percent: d.rate_limit_percent,
                max_record_age_secs: d.max_record_age_secs,
                dead_letter_path: d.dead_letter_path.clone(),
                max_inflight_bytes: d.max_inflight_bytes,
            },
            problems,
        );
        if !own.is_empty() {
            self.overrides.push((route.to_owned(), own));
        }
    }
}

/// Checks the `[[destination]]` blocks against `[kinesis]` and the streams the
/// sources write; fills in what a block leaves to `[kinesis]`. Returns the
/// destinations, and what each block sets for its own stream.
pub(super) fn destinations(
    blocks: Vec<RawDestination>,
    kinesis: Option<&KinesisConfig>,
    written: &HashSet<&str>,
    problems: &mut Vec<String>,
) -> (Vec<(String, Destination)>, PerStream) {
    let mut out: Vec<(String, Destination)> = Vec::new();
    let mut per_stream = PerStream::of_default(kinesis);
    let default_is_firehose = kinesis.is_some_and(|k| firehose::stream_name(&k.stream).is_some());
    for (i, d) in blocks.into_iter().enumerate() {
        let field = format!("destination[{i}]");
        let is_firehose = d.delivery_stream.is_some();
        let Some(route) = block_route(&field, &d, kinesis, problems) else {
            continue;
        };
        if out.iter().any(|(s, _)| *s == route) {
            problems.push(format!(
                "{field} names {} again: it has another [[destination]] block",
                shown(&route)
            ));
        } else if !written.contains(route.as_str()) && !d.drain {
            problems.push(format!(
                "{field} names {}, which no source writes (set drain = true to deliver what the spool still holds for it)",
                shown(&route)
            ));
        }
        per_stream.add(&field, &route, &d, problems);
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
            // `[kinesis]`'s endpoint serves the kind of its own stream only.
            if !own_region && is_firehose == default_is_firehose {
                dest.endpoint = base.endpoint.clone();
            }
            if dest.profile.is_none() {
                dest.profile = base.profile.clone();
            }
        }
        out.push((route, dest));
    }
    if let Some(k) = kinesis {
        check_other_kind(k, &out, written, problems);
    }
    (out, per_stream)
}

/// A stream name as the config writes it: `delivery_stream "x"` or `stream "x"`.
fn shown(route: &str) -> String {
    match firehose::stream_name(route) {
        Some(name) => format!("delivery_stream {name:?}"),
        None => format!("stream {route:?}"),
    }
}

/// The stream a `[[destination]]` block names (by its name inside the agent), or
/// `None` with the problem.
fn block_route(
    field: &str,
    d: &RawDestination,
    kinesis: Option<&KinesisConfig>,
    problems: &mut Vec<String>,
) -> Option<String> {
    if d.stream.is_none() && d.delivery_stream.is_none() {
        problems.push(format!(
            "{field} names no stream: set stream (a Kinesis data stream) or delivery_stream (a Firehose stream)"
        ));
        return None;
    }
    let route = super::streams::destination_of(
        field,
        d.stream.as_ref(),
        d.delivery_stream.as_ref(),
        None,
        problems,
    )?;
    if kinesis.is_some_and(|k| k.stream == route) {
        let key = if d.stream.is_some() {
            "stream"
        } else {
            "delivery_stream"
        };
        problems.push(format!(
            "{field}.{key} {:?} is kinesis.{key}: the default destination's settings are in [kinesis]",
            d.stream.as_ref().or(d.delivery_stream.as_ref()).expect("one is set")
        ));
        return None;
    }
    Some(route)
}

/// A stream of the other kind than `[kinesis]`'s own, written by a source
/// without a `[[destination]]` block, would be sent to `[kinesis]`'s endpoint,
/// which serves the other service: refused, with what to add.
fn check_other_kind(
    k: &KinesisConfig,
    blocks: &[(String, Destination)],
    written: &HashSet<&str>,
    problems: &mut Vec<String>,
) {
    let Some(endpoint) = &k.destination.endpoint else {
        return;
    };
    let default_is_firehose = firehose::stream_name(&k.stream).is_some();
    let mut orphans: Vec<&&str> = written
        .iter()
        .filter(|s| firehose::stream_name(s).is_some() != default_is_firehose)
        .filter(|s| !blocks.iter().any(|(b, _)| b == **s))
        .collect();
    orphans.sort();
    for s in orphans {
        let (service, key) = match firehose::stream_name(s) {
            Some(_) => ("Kinesis", "delivery_stream"),
            None => ("Firehose", "stream"),
        };
        let name = firehose::stream_name(s).unwrap_or(s);
        problems.push(format!(
            "{} has no [[destination]] block, and kinesis.endpoint {:?} is the {service} endpoint of kinesis.{}: add a [[destination]] with {key} = {name:?} and its own endpoint or region",
            shown(s),
            redact::url(endpoint),
            if default_is_firehose { "delivery_stream" } else { "stream" },
        ));
    }
}
