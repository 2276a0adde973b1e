//! What a destination (`[[destination]]`, or `[kinesis]` for the default
//! stream) sets for itself instead of `[delivery]`'s, and the default
//! destination written as a `[[destination]]` with `default = true`.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawDestination, RawKinesis};
use crate::deliver::StreamDelivery;

/// The delivery keys a destination block may set, as written.
pub(super) struct RawOverrides {
    pub(super) max_buffered_time_ms: Option<u64>,
    pub(super) rate_limit_percent: Option<f64>,
    pub(super) max_record_age_secs: Option<u64>,
    pub(super) dead_letter_path: Option<PathBuf>,
    pub(super) max_inflight_bytes: Option<u64>,
}

/// Block `field`'s own delivery settings; a Firehose stream packs by its
/// `packing_*` keys and has no shard limits, so the two Kinesis keys are
/// refused there.
pub(super) fn validate(
    field: &str,
    is_firehose: bool,
    raw: RawOverrides,
    problems: &mut Vec<String>,
) -> StreamDelivery {
    if is_firehose {
        for (key, set, instead) in [
            (
                "max_buffered_time_ms",
                raw.max_buffered_time_ms.is_some(),
                "packing_linger_ms",
            ),
            (
                "rate_limit_percent",
                raw.rate_limit_percent.is_some(),
                "nothing: a Firehose stream has no shard limits",
            ),
        ] {
            if set {
                problems.push(format!(
                    "{field}.{key} is for Kinesis streams; a Firehose stream takes {instead}"
                ));
            }
        }
    }
    if let Some(p) = raw
        .rate_limit_percent
        .filter(|p| !(0.0..=100.0).contains(p))
    {
        problems.push(format!("{field}.rate_limit_percent {p} is outside 0..=100"));
    }
    if let Some(p) = &raw.dead_letter_path {
        super::checks::check_absolute(p, &format!("{field}.dead_letter_path"), problems);
    }
    let one_record = crate::record::MAX_RECORD_BYTES as u64;
    if let Some(b) = raw.max_inflight_bytes.filter(|b| *b < one_record) {
        problems.push(format!(
            "{field}.max_inflight_bytes {b} is below one record ({one_record})"
        ));
    }
    StreamDelivery {
        linger: raw.max_buffered_time_ms.map(Duration::from_millis),
        shard_rate_factor: raw.rate_limit_percent.map(|p| p / 100.0),
        // 0: never give up, even when [delivery] sets an age.
        max_record_age: raw
            .max_record_age_secs
            .map(|s| (s > 0).then(|| Duration::from_secs(s))),
        max_inflight_bytes: raw.max_inflight_bytes,
        dead_letter_path: raw.dead_letter_path,
    }
}

/// What `[kinesis]` sets for the default stream's delivery.
pub(super) fn of_kinesis(k: &RawKinesis, problems: &mut Vec<String>) -> StreamDelivery {
    validate(
        "kinesis",
        k.delivery_stream.is_some(),
        RawOverrides {
            max_buffered_time_ms: k.max_buffered_time_ms,
            rate_limit_percent: k.rate_limit_percent,
            max_record_age_secs: k.max_record_age_secs,
            dead_letter_path: k.dead_letter_path.clone(),
            max_inflight_bytes: k.max_inflight_bytes,
        },
        problems,
    )
}

/// The `[[destination]]` with `default = true`, if any, taken out of `blocks`
/// and written as `[kinesis]`: one place for the default stream.
pub(super) fn promote_default(
    kinesis: &mut Option<RawKinesis>,
    blocks: &mut Vec<RawDestination>,
    problems: &mut Vec<String>,
) {
    let defaults: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i].default).collect();
    let Some(&first) = defaults.first() else {
        return;
    };
    if defaults.len() > 1 {
        problems.push(format!(
            "destination[{first}] and destination[{}] both say default = true: one destination is the default",
            defaults[1]
        ));
        return;
    }
    if kinesis.is_some() {
        problems.push(format!(
            "destination[{first}] says default = true and [kinesis] is set too: write the default destination in one of them"
        ));
        return;
    }
    let d = blocks.remove(first);
    if d.drain {
        problems.push(format!(
            "destination[{first}] says default = true and drain = true: the default destination is written by sources"
        ));
    }
    *kinesis = Some(RawKinesis {
        stream: d.stream,
        delivery_stream: d.delivery_stream,
        aggregate: d.aggregate,
        compression: d.compression,
        compression_level: d.compression_level,
        compression_pack_bytes: d.compression_pack_bytes,
        packing: d.packing,
        packing_max_bytes: d.packing_max_bytes,
        packing_linger_ms: d.packing_linger_ms,
        region: d.region,
        endpoint: d.endpoint,
        profile: d.profile,
        role_arn: d.role_arn,
        external_id: d.external_id,
        session_name: d.session_name,
        sts_endpoint: d.sts_endpoint,
        request_timeout_ms: super::raw::default_request_timeout_ms(),
        proxy: None,
        no_proxy: None,
        max_buffered_time_ms: d.max_buffered_time_ms,
        rate_limit_percent: d.rate_limit_percent,
        max_record_age_secs: d.max_record_age_secs,
        dead_letter_path: d.dead_letter_path,
        max_inflight_bytes: d.max_inflight_bytes,
    });
}

#[cfg(test)]
mod tests;
