//! The keys that name a destination stream (`stream` for Kinesis,
//! `delivery_stream` for Firehose) and pack a Firehose stream's lines
//! (`packing*`), checked for every section that has them. The sections call
//! [`destination_of`] and [`line_limit`]; `destination.rs` calls [`packing`] for
//! `[kinesis]` and each `[[destination]]`.

use std::time::Duration;

use crate::aggregate::{Codec, Packs};
use crate::deliver::firehose::{self, Packing};
use crate::record::MAX_RECORD_BYTES;

/// Firehose stream names: 1–64 characters of `a-zA-Z0-9_.-`.
pub(super) fn check_delivery_stream_name(name: &str, field: &str, problems: &mut Vec<String>) {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        problems.push(format!(
            "{field} {name:?} is not a valid Firehose stream name (1-64 characters of a-z, A-Z, 0-9, '_', '.', '-')"
        ));
    }
}

/// The destination a section names: its Kinesis `stream` (a name or an ARN,
/// turned into its key by [`super::arn::StreamArns`] once every section is
/// read), its Firehose `delivery_stream` (`firehose:NAME`), else `default`.
pub(super) fn destination_of(
    field: &str,
    stream: Option<&String>,
    delivery_stream: Option<&String>,
    default: Option<&String>,
    problems: &mut Vec<String>,
) -> Option<String> {
    match (stream, delivery_stream) {
        (Some(s), Some(d)) => {
            problems.push(format!(
                "{field} sets both stream {s:?} (a Kinesis data stream) and delivery_stream {d:?} (a Firehose stream): a block writes to one of them"
            ));
            None
        }
        (Some(s), None) => {
            super::arn::check(s, &format!("{field}.stream"), problems);
            Some(s.clone())
        }
        (None, Some(d)) => {
            check_delivery_stream_name(d, &format!("{field}.delivery_stream"), problems);
            Some(firehose::route(d))
        }
        (None, None) => default.cloned(),
    }
}

/// A section's record limit: its key, its value, its default.
pub(super) type RecordLimit<'a> = (&'a str, usize, usize);

/// [`destination_of`], and the section's record limit through [`line_limit`]
/// for it.
pub(super) fn target(
    field: &str,
    [stream, delivery_stream]: [Option<&String>; 2],
    default: Option<&String>,
    (key, value, default_limit): RecordLimit<'_>,
    problems: &mut Vec<String>,
) -> (Option<String>, usize) {
    let route = destination_of(field, stream, delivery_stream, default, problems);
    let limit = line_limit(field, key, value, default_limit, route.as_deref(), problems);
    (route, limit)
}

/// A section's record limit (`key`, set to `value`, `default` when not
/// written) for its destination `route`: a Firehose record holds at most
/// 1,023,999 bytes and its newline, so a limit left at a larger default is
/// lowered to that, and a larger one written is refused.
pub(super) fn line_limit(
    field: &str,
    key: &str,
    value: usize,
    default: usize,
    route: Option<&str>,
    problems: &mut Vec<String>,
) -> usize {
    let max = firehose::MAX_LINE_BYTES;
    if route.and_then(firehose::stream_name).is_none() || value <= max {
        return value;
    }
    if value != default {
        problems.push(format!(
            "{field}.{key} {value} is above {max}, the most a Firehose record holds with its newline (1,000 KiB); lower it (longer lines are split or refused as `oversized` says)"
        ));
    }
    max
}

/// The packing keys of a section as written.
pub(super) struct RawPacking {
    pub(super) packing: Option<bool>,
    pub(super) max_bytes: Option<usize>,
    pub(super) linger_ms: Option<u64>,
}

/// The compression keys of a section as written.
pub(super) struct RawCompression<'a> {
    pub(super) name: Option<&'a str>,
    pub(super) level: Option<i32>,
    pub(super) pack_bytes: Option<usize>,
}

impl<'a> RawCompression<'a> {
    pub(super) fn new(
        name: Option<&'a str>,
        level: Option<i32>,
        pack_bytes: Option<usize>,
    ) -> Self {
        RawCompression {
            name,
            level,
            pack_bytes,
        }
    }
}

/// Checks a section's compression keys: `None` when it sets none (its stream
/// takes `[delivery]`'s), else its stream's packs (`Some(None)`: none).
pub(super) fn compression(
    field: &str,
    firehose_stream: bool,
    c: RawCompression<'_>,
    problems: &mut Vec<String>,
) -> Option<Option<Packs>> {
    let Some(name) = c.name else {
        for (key, set) in [
            ("compression_level", c.level.is_some()),
            ("compression_pack_bytes", c.pack_bytes.is_some()),
        ] {
            if set {
                problems.push(format!(
                    "{field}.{key} needs compression in the same section"
                ));
            }
        }
        return None;
    };
    if firehose_stream {
        problems.push(format!(
            "{field}.compression is for a Kinesis stream (stream); a Firehose stream compresses on its own side (its CompressionFormat)"
        ));
        return None;
    }
    let (codec, levels) = match name {
        "none" => (Codec::None, None),
        "gzip" => (Codec::Gzip(c.level.unwrap_or(6) as u32), Some(0..=9)),
        "zstd" => (Codec::Zstd(c.level.unwrap_or(3)), Some(1..=22)),
        other => {
            problems.push(format!(
                "{field}.compression {other:?} is not \"none\", \"gzip\" or \"zstd\""
            ));
            return None;
        }
    };
    match (levels, c.level) {
        (Some(range), Some(l)) if !range.contains(&l) => problems.push(format!(
            "{field}.compression_level {l} is outside {}..={} for {name}",
            range.start(),
            range.end()
        )),
        (None, Some(_)) => problems.push(format!(
            "{field}.compression_level needs compression = \"gzip\" or \"zstd\""
        )),
        _ => {}
    }
    let max_bytes = c.pack_bytes.unwrap_or(0);
    if max_bytes > MAX_RECORD_BYTES {
        problems.push(format!(
            "{field}.compression_pack_bytes {max_bytes} is above {MAX_RECORD_BYTES} (a Kinesis record)"
        ));
    }
    if codec == Codec::None && max_bytes == 0 {
        return Some(None);
    }
    Some(Some(Packs { codec, max_bytes }))
}

/// Checks a section's `aggregate` key: only a Kinesis stream's records are
/// aggregated.
pub(super) fn aggregate(
    field: &str,
    firehose_stream: bool,
    aggregate: Option<bool>,
    problems: &mut Vec<String>,
) -> Option<bool> {
    if firehose_stream && aggregate.is_some() {
        problems.push(format!(
            "{field}.aggregate is for a Kinesis stream (stream); a Firehose stream's lines are packed instead (packing)"
        ));
        return None;
    }
    aggregate
}

/// Checks a section's packing keys: `None` when it names a Kinesis stream (and
/// then they must not be set), else the packing of its Firehose stream.
pub(super) fn packing(
    field: &str,
    firehose_stream: bool,
    p: RawPacking,
    problems: &mut Vec<String>,
) -> Option<Packing> {
    let set: Vec<&str> = [
        ("packing", p.packing.is_some()),
        ("packing_max_bytes", p.max_bytes.is_some()),
        ("packing_linger_ms", p.linger_ms.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if !firehose_stream {
        for key in set {
            problems.push(format!(
                "{field}.{key} is for a Firehose stream (delivery_stream); a Kinesis stream's records are KPL-aggregated instead ([delivery] aggregation_max_bytes, aggregation_max_records)"
            ));
        }
        return None;
    }
    let mut out = Packing::default();
    out.enabled = p.packing.unwrap_or(out.enabled);
    if let Some(bytes) = p.max_bytes {
        if bytes == 0 || bytes > firehose::MAX_RECORD_BYTES {
            problems.push(format!(
                "{field}.packing_max_bytes {bytes} is outside 1..={} (Firehose's record limit, 1,000 KiB)",
                firehose::MAX_RECORD_BYTES
            ));
        }
        if !out.enabled {
            problems.push(format!(
                "{field}.packing_max_bytes is set but packing = false sends one line per record; remove one of them"
            ));
        }
        out.max_bytes = bytes;
    }
    if let Some(ms) = p.linger_ms {
        if !out.enabled {
            problems.push(format!(
                "{field}.packing_linger_ms is set but packing = false sends one line per record; remove one of them"
            ));
        }
        out.linger = Duration::from_millis(ms);
    }
    Some(out)
}

#[cfg(test)]
mod compression_tests;
#[cfg(test)]
mod socket_streams_tests;
#[cfg(test)]
pub(super) mod tests;
