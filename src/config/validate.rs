//! Validation: the raw file checked section by section into the types the agent
//! uses, every problem listed at once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::checks::{check_absolute, journald_parse_format};
use super::files::{check_files_miss_own, validate_file};
use super::journald;
use super::raw::{
    RawConfig, RawDelivery, RawIngest, RawKinesis, RawMetrics, RawSpool, MIN_INGEST_MEMORY_BYTES,
};
use super::socket::validate_socket;
use super::{Config, IngestConfig, KinesisConfig, MetricsConfig};
use crate::aggregate::{Format, Limits};
use crate::deliver::{DeliveryOptions, MAX_BATCH_BYTES, MAX_BATCH_RECORDS};
use crate::record::MAX_RECORD_BYTES;
use crate::spool::SpoolOptions;

/// Directories that belong to the system, never a spool's own.
const SYSTEM_DIRS: [&str; 22] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
    "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/log", "/var/tmp",
    "/mnt",
];

/// Most descriptors a Linux process can have by default (`fs.nr_open`): a
/// configuration that needs more can never start.
const MAX_DESCRIPTORS: u64 = 1 << 20;

impl RawConfig {
    /// Checks everything and lists every problem.
    pub(crate) fn validate(self) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let (mut kinesis, mut blocks) = kinesis_and(self.kinesis, self.destination, &mut problems);
        let (mut delivery, dead_letter_path) = validate_delivery(self.delivery, &mut problems);
        let spool = validate_spool(self.spool, &mut problems);
        let dead_letter_path = dead_letter_beside(dead_letter_path, spool.as_ref());
        let metrics = validate_metrics(&self.metrics, &mut problems);
        if self.socket.is_empty() && self.file.is_empty() && self.journald.is_empty() {
            problems
                .push("no sources: add at least one [[socket]], [[file]] or [[journald]]".into());
        }
        let default_stream = kinesis.as_ref().map(|k| k.stream.clone());
        let mut paths = HashSet::new();
        let mut sockets = Vec::new();
        for (i, s) in self.socket.iter().enumerate() {
            let socket = validate_socket(i, s, default_stream.as_ref(), &mut paths, &mut problems);
            sockets.extend(socket);
        }
        let ingest = validate_ingest(&self.ingest, &sockets, &mut problems);
        let mut files = Vec::new();
        for (i, f) in self.file.into_iter().enumerate() {
            files.extend(validate_file(i, f, default_stream.as_ref(), &mut problems));
        }
        let mut journald_blocks =
            journald_blocks(self.journald, default_stream.as_ref(), &mut problems);
        journald::check_names(&journald_blocks, &mut problems);
        let dead = dead_files(&dead_letter_path, &kinesis, &blocks, &mut problems);
        if let Some(dir) = spool.as_ref().and_then(|s| s.dir.as_ref()) {
            check_files_miss_own(&files, dir, &dead, &mut problems);
        }
        let mut arns = super::arn::StreamArns::default();
        let written_regions = stream_keys(
            &mut arns,
            &mut kinesis,
            (&mut sockets, &mut files, &mut journald_blocks),
            &mut blocks,
            &mut problems,
        );
        let written = written_streams((&sockets, &files, &journald_blocks));
        let (mut destinations, per_stream) =
            super::destination::destinations(blocks, kinesis.as_ref(), &written, &mut problems);
        if let Some(k) = kinesis.as_mut() {
            settle_regions(&arns, k, &written_regions, &mut destinations, &mut problems);
        }
        per_stream.set_in(&mut delivery);
        if self
            .include_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            problems.push("include_dir is empty (leave it out for conf.d)".into());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let config = Config {
            dead_letter_path: dead_letter_path.expect("checked above"),
            kinesis: kinesis.expect("checked above"),
            destinations,
            stream_arns: arns.into_pairs(),
            delivery,
            spool: spool.expect("checked above"),
            sockets,
            files,
            journald: journald_blocks,
            metrics: metrics.expect("checked above"),
            ingest,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            deprecated: Vec::new(),
        };
        // What `run` would refuse at start-up, whatever the process's limit.
        let (sockets, others) = crate::descriptors::needed(&config);
        if sockets + others > MAX_DESCRIPTORS {
            return Err(vec![format!(
                "the configuration needs {} file descriptors, more than Linux allows a process ({MAX_DESCRIPTORS}, fs.nr_open); lower the sockets' or delivery's max_connections",
                sockets + others
            )]);
        }
        Ok(config)
    }
}

/// Where a region was written for a stream: (`kinesis` or `destination[i]`, the
/// block's stream key (`None`: `[kinesis]`'s), the region as written).
type WrittenRegions = Vec<(String, Option<String>, Option<String>)>;

/// The sources, as validated.
type Sources<'a> = (
    &'a mut Vec<super::SocketConfig>,
    &'a mut Vec<super::FileConfig>,
    &'a mut Vec<super::JournaldConfig>,
);

/// Turns every Kinesis stream written as an ARN into its key (an ARN's region
/// becoming `[kinesis]`'s when it sets none, so that blocks inherit it), and
/// notes where each Kinesis stream's region is written.
fn stream_keys(
    arns: &mut super::arn::StreamArns,
    kinesis: &mut Option<KinesisConfig>,
    (sockets, files, journald): Sources<'_>,
    blocks: &mut [super::raw::RawDestination],
    problems: &mut Vec<String>,
) -> WrittenRegions {
    let mut written = Vec::new();
    if let Some(k) = kinesis.as_mut() {
        written.push(("kinesis".to_owned(), None, k.destination.region.clone()));
        k.stream = arns.key("kinesis.stream", &k.stream, problems);
        if k.destination.region.is_none() {
            k.destination.region = arns.region(&k.stream);
        }
    }
    for s in sockets.iter_mut() {
        s.stream = arns.key(&format!("{}.stream", s.block), &s.stream, problems);
        for (i, (_, key)) in s.streams.iter_mut().enumerate() {
            *key = arns.key(&format!("{}.streams[{i}]", s.block), key, problems);
        }
    }
    for f in files.iter_mut() {
        f.stream = arns.key(&format!("{}.stream", f.block), &f.stream, problems);
    }
    for j in journald.iter_mut() {
        j.stream = arns.key(&format!("{}.stream", j.block), &j.stream, problems);
    }
    for (i, d) in blocks.iter_mut().enumerate() {
        if let Some(s) = &mut d.stream {
            let field = format!("destination[{i}]");
            *s = arns.key(&format!("{field}.stream"), s, problems);
            written.push((field, Some(s.clone()), d.region.clone()));
        }
    }
    for s in sockets.iter_mut() {
        allow_own_stream(s, arns);
    }
    written
}

/// Every stream a source writes to (a socket's own and those its clients may
/// name).
fn written_streams<'a>(
    (sockets, files, journald): (
        &'a [super::SocketConfig],
        &'a [super::FileConfig],
        &'a [super::JournaldConfig],
    ),
) -> HashSet<&'a str> {
    let allowed = sockets
        .iter()
        .flat_map(|s| s.streams.iter().map(|(_, k)| k.as_str()));
    (sockets.iter().map(|s| s.stream.as_str()))
        .chain(allowed)
        .chain(files.iter().map(|f| f.stream.as_str()))
        .chain(journald.iter().map(|j| j.stream.as_str()))
        .collect()
}

/// Completes what a framed client of `socket` may name: its own stream too, and
/// each allowed stream both by name and, when it was written as one, by ARN.
fn allow_own_stream(socket: &mut super::SocketConfig, arns: &super::arn::StreamArns) {
    let mut keys: Vec<String> = vec![socket.stream.clone()];
    for (_, key) in &socket.streams {
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    let mut names = Vec::new();
    for key in keys {
        if let Some(arn) = arns.arn(&key) {
            names.push((arn.to_owned(), key.clone()));
        }
        names.push((key.clone(), key));
    }
    socket.streams = names;
}

/// [`super::arn::StreamArns::settle_regions`] with the regions as written.
fn settle_regions(
    arns: &super::arn::StreamArns,
    k: &mut KinesisConfig,
    written: &WrittenRegions,
    destinations: &mut Vec<(String, crate::deliver::destination::Destination)>,
    problems: &mut Vec<String>,
) {
    let written: Vec<_> = written
        .iter()
        .map(|(field, key, region)| super::arn::WrittenRegion {
            field: field.clone(),
            key: key.as_deref().unwrap_or(&k.stream),
            region: region.as_deref(),
        })
        .collect();
    arns.settle_regions(&written, &mut k.destination, destinations, problems);
}

/// `[kinesis]` (or the `[[destination]]` that says `default = true`) and the
/// other destination blocks.
fn kinesis_and(
    mut kinesis: Option<RawKinesis>,
    mut blocks: Vec<super::raw::RawDestination>,
    problems: &mut Vec<String>,
) -> (Option<KinesisConfig>, Vec<super::raw::RawDestination>) {
    super::overrides::promote_default(&mut kinesis, &mut blocks, problems);
    (validate_kinesis(kinesis, problems), blocks)
}

/// Checks `[kinesis]`; `None` if it is missing or unusable.
fn validate_kinesis(k: Option<RawKinesis>, problems: &mut Vec<String>) -> Option<KinesisConfig> {
    let Some(k) = k else {
        problems.push("[kinesis] section is missing (it names the stream)".into());
        return None;
    };
    let stream = super::streams::destination_of(
        "kinesis",
        k.stream.as_ref(),
        k.delivery_stream.as_ref(),
        None,
        problems,
    );
    if k.stream.is_none() && k.delivery_stream.is_none() {
        problems.push(
            "kinesis.stream is missing (the default destination: a Kinesis data stream, or a Firehose stream as kinesis.delivery_stream)".into(),
        );
    }
    let packing = super::streams::packing(
        "kinesis",
        k.delivery_stream.is_some(),
        super::streams::RawPacking {
            packing: k.packing,
            max_bytes: k.packing_max_bytes,
            linger_ms: k.packing_linger_ms,
        },
        problems,
    );
    let aggregate = super::streams::aggregate(
        "kinesis",
        k.delivery_stream.is_some(),
        k.aggregate,
        problems,
    );
    let compression = super::streams::compression(
        "kinesis",
        k.delivery_stream.is_some(),
        super::streams::RawCompression {
            name: k.compression.as_deref(),
            level: k.compression_level,
            pack_bytes: k.compression_pack_bytes,
        },
        problems,
    );
    let overrides = super::overrides::of_kinesis(&k, problems);
    let destination = super::destination::destination(
        super::destination::RawTarget {
            field: "kinesis",
            region: k.region,
            endpoint: k.endpoint,
            profile: k.profile,
            role_arn: k.role_arn,
            external_id: k.external_id,
            session_name: k.session_name,
            sts_endpoint: k.sts_endpoint,
        },
        problems,
    );
    if k.request_timeout_ms == 0 {
        problems.push("kinesis.request_timeout_ms must be above 0".into());
    }
    let proxy = crate::deliver::proxy::ProxySetting::parse(k.proxy.as_deref())
        .map_err(|e| problems.push(format!("kinesis.proxy: {e}")))
        .ok()?;
    Some(KinesisConfig {
        stream: stream?,
        packing,
        aggregate,
        compression,
        destination,
        overrides,
        request_timeout: Duration::from_millis(k.request_timeout_ms),
        proxy,
        no_proxy: k.no_proxy,
    })
}

/// Checks `[delivery]`; returns the options and the dead-letter path if set.
fn validate_delivery(
    d: RawDelivery,
    problems: &mut Vec<String>,
) -> (DeliveryOptions, Option<PathBuf>) {
    if d.max_connections == 0 {
        problems.push("delivery.max_connections must be at least 1".into());
    }
    if d.aggregation_max_bytes == 0 || d.aggregation_max_bytes > MAX_RECORD_BYTES {
        problems.push(format!(
            "delivery.aggregation_max_bytes {} is outside 1..={MAX_RECORD_BYTES}",
            d.aggregation_max_bytes
        ));
    }
    if d.aggregation_max_records == 0 {
        problems.push("delivery.aggregation_max_records must be at least 1".into());
    }
    if d.batch_max_records == 0 || d.batch_max_records > MAX_BATCH_RECORDS {
        problems.push(format!(
            "delivery.batch_max_records {} is outside 1..={MAX_BATCH_RECORDS}",
            d.batch_max_records
        ));
    }
    if d.batch_max_bytes < MAX_RECORD_BYTES || d.batch_max_bytes > MAX_BATCH_BYTES {
        problems.push(format!(
            "delivery.batch_max_bytes {} is outside {MAX_RECORD_BYTES}..={MAX_BATCH_BYTES}",
            d.batch_max_bytes
        ));
    }
    if d.shard_refresh_interval_secs == 0 {
        problems.push("delivery.shard_refresh_interval_secs must be at least 1".into());
    }
    let rate = rate_limit(
        "delivery",
        d.rate_limit_percent,
        d.shard_rate_factor,
        problems,
    )
    .unwrap_or(super::raw::DEFAULT_RATE_LIMIT_PERCENT);
    if d.max_record_age_secs == Some(0) {
        problems.push("delivery.max_record_age_secs must be at least 1 (or left out)".into());
    }
    if let Some(p) = &d.dead_letter_path {
        check_absolute(p, "delivery.dead_letter_path", problems);
    }
    if d.max_inflight_bytes < MAX_RECORD_BYTES as u64 {
        problems.push(format!(
            "delivery.max_inflight_bytes {} is below one record ({MAX_RECORD_BYTES})",
            d.max_inflight_bytes
        ));
    }
    let options = DeliveryOptions {
        max_connections: d.max_connections,
        linger: Duration::from_millis(d.max_buffered_time_ms),
        aggregation: Limits {
            max_bytes: d.aggregation_max_bytes,
            max_records: d.aggregation_max_records,
            format: Format::Kpl,
            packs: None,
        },
        aggregate: d.aggregate,
        aggregate_streams: Vec::new(),
        compression: super::streams::compression(
            "delivery",
            false,
            delivery_compression(&d),
            problems,
        )
        .flatten(),
        compression_streams: Vec::new(),
        overrides: Vec::new(),
        batch_max_records: d.batch_max_records,
        batch_max_bytes: d.batch_max_bytes,
        shard_refresh_interval: Duration::from_secs(d.shard_refresh_interval_secs),
        max_inflight_bytes: d.max_inflight_bytes,
        shard_rate_factor: rate / 100.0,
        max_record_age: d.max_record_age_secs.map(Duration::from_secs),
        packing: Vec::new(),
    };
    (options, d.dead_letter_path)
}

/// Checks `[spool]`; `None` if it is missing or has no directory.
fn validate_spool(s: Option<RawSpool>, problems: &mut Vec<String>) -> Option<SpoolOptions> {
    let Some(s) = s else {
        problems.push("[spool] section is missing (it names the spool directory)".into());
        return None;
    };
    match &s.dir {
        None => problems.push("spool.dir is missing".into()),
        Some(d) => {
            check_absolute(d, "spool.dir", problems);
            // The spool creates, moves and removes files in its directory: the
            // root or a system directory is never its own (a mount point of its
            // own, `/spool`, is fine).
            if SYSTEM_DIRS.iter().any(|s| d == Path::new(s)) {
                problems.push(format!(
                    "spool.dir {d:?} is the filesystem root or a system directory; give the spool a directory of its own (for example /var/lib/shardline)"
                ));
            }
        }
    }
    if s.max_bytes < 2 * MAX_RECORD_BYTES as u64 {
        problems.push(format!(
            "spool.max_bytes {} is below two maximum-size records ({})",
            s.max_bytes,
            2 * MAX_RECORD_BYTES
        ));
    }
    if s.flush_interval_ms == 0 {
        problems.push("spool.flush_interval_ms must be at least 1".into());
    }
    if s.segment_bytes < 1 << 20 {
        problems.push(format!(
            "spool.segment_bytes {} is below 1 MiB (1048576)",
            s.segment_bytes
        ));
    }
    Some(SpoolOptions {
        dir: Some(s.dir?),
        max_bytes: s.max_bytes,
        flush_interval_ms: s.flush_interval_ms,
        cache_capacity_bytes: s.cache_capacity_bytes,
        segment_bytes: s.segment_bytes,
        min_free_bytes: s.min_free_bytes,
    })
}

/// Checks `[metrics]`: a loopback address unless remote access is allowed.
fn validate_metrics(m: &RawMetrics, problems: &mut Vec<String>) -> Option<MetricsConfig> {
    match m.listen.parse::<SocketAddr>() {
        Ok(a) if !a.ip().is_loopback() && !m.allow_remote => {
            problems.push(format!(
                "metrics.listen {:?} is not a loopback address; the endpoint has no authentication (set metrics.allow_remote = true to serve it beyond this host)",
                m.listen
            ));
            None
        }
        Ok(listen) => Some(MetricsConfig { listen }),
        Err(_) => {
            problems.push(format!(
                "metrics.listen {:?} is not an IP address and port (like \"127.0.0.1:9717\")",
                m.listen
            ));
            None
        }
    }
}

/// Checks `[ingest]`.
fn validate_ingest(
    i: &RawIngest,
    sockets: &[super::SocketConfig],
    problems: &mut Vec<String>,
) -> IngestConfig {
    if i.max_memory_bytes < MIN_INGEST_MEMORY_BYTES {
        problems.push(format!(
            "ingest.max_memory_bytes {} is below {MIN_INGEST_MEMORY_BYTES} (a maximum-size line with its read and batch)",
            i.max_memory_bytes
        ));
    }
    // As the smallest budget is for a 1 MiB line: a line raised towards 10 MiB
    // needs its read, its record and the spool's copy at once.
    let ratio = MIN_INGEST_MEMORY_BYTES / (1 << 20);
    let widest = sockets.iter().max_by_key(|s| s.max_line_bytes);
    if let Some(s) = widest.filter(|s| i.max_memory_bytes < ratio * s.max_line_bytes as u64) {
        problems.push(format!(
            "ingest.max_memory_bytes {} is below {ratio} times {}.max_record_bytes ({}): raise it to at least {} for lines that long",
            i.max_memory_bytes,
            s.block,
            s.max_line_bytes,
            ratio * s.max_line_bytes as u64
        ));
    }
    IngestConfig {
        max_memory_bytes: usize::try_from(i.max_memory_bytes).unwrap_or(usize::MAX),
    }
}

/// The `[[journald]]` blocks, each with the json format of its parse table.
fn journald_blocks(
    raw: Vec<journald::RawJournald>,
    default_stream: Option<&String>,
    problems: &mut Vec<String>,
) -> Vec<journald::JournaldConfig> {
    let mut blocks = Vec::new();
    for (i, j) in raw.into_iter().enumerate() {
        let (field, none) = (format!("journald[{i}]"), Default::default());
        super::check_record_id(&field, j.record_id, &j.record_id_key, &none, problems);
        let mut parse_format = journald_parse_format(
            &format!("journald[{i}]"),
            j.format == journald::Format::Json,
            j.parse.as_ref(),
            &j.rename,
            j.timestamp_format.as_deref(),
            problems,
        );
        let block = journald::validate(i, j, default_stream, problems);
        blocks.extend(block.map(|b| {
            if let super::RecordFormat::Json(j) = &mut parse_format {
                j.id_key = b.record_id.clone();
            }
            journald::JournaldConfig { parse_format, ..b }
        }));
    }
    blocks
}

/// `[delivery]`'s compression keys.
fn delivery_compression(d: &RawDelivery) -> super::streams::RawCompression<'_> {
    let pack_bytes = Some(d.compression_pack_bytes);
    super::streams::RawCompression::new(Some(&d.compression), d.compression_level, pack_bytes)
}

/// Every dead-letter file: `[delivery]`'s and the destinations' own. Each is
/// one stream's alone (its writes are serialised per file), so a file named
/// twice is a problem.
fn dead_files<'a>(
    global: &'a Option<PathBuf>,
    kinesis: &'a Option<KinesisConfig>,
    blocks: &'a [super::raw::RawDestination],
    problems: &mut Vec<String>,
) -> Vec<&'a Path> {
    let own = kinesis
        .as_ref()
        .and_then(|k| k.overrides.dead_letter_path.as_deref());
    let blocks = blocks.iter().filter_map(|b| b.dead_letter_path.as_deref());
    let all: Vec<&Path> = global
        .as_deref()
        .into_iter()
        .chain(own)
        .chain(blocks)
        .collect();
    for (i, p) in all.iter().enumerate() {
        if all[..i].contains(p) {
            problems.push(format!(
                "dead_letter_path {} is named twice (by [delivery] or another destination): give each destination its own file, or leave it out for [delivery]'s",
                p.display()
            ));
        }
    }
    all
}

/// The dead-letter file: as set, or beside the spool.
fn dead_letter_beside(
    set: Option<std::path::PathBuf>,
    spool: Option<&SpoolOptions>,
) -> Option<std::path::PathBuf> {
    set.or_else(|| Some(spool?.dir.as_ref()?.join("dead-letter.ndjson")))
}

/// `rate_limit_percent` (or its former spelling `shard_rate_factor`, a
/// fraction) of `section`, as a percent in 0..=100; `None` when neither is set.
pub(super) fn rate_limit(
    section: &str,
    percent: Option<f64>,
    factor: Option<f64>,
    problems: &mut Vec<String>,
) -> Option<f64> {
    if percent.is_some() && factor.is_some() {
        problems.push(format!(
            "{section}.shard_rate_factor is the former spelling of rate_limit_percent: set only rate_limit_percent"
        ));
    }
    let p = percent.or(factor.map(|f| f * 100.0))?;
    if !(0.0..=100.0).contains(&p) {
        problems.push(match percent {
            Some(p) => format!("{section}.rate_limit_percent {p} is outside 0..=100"),
            None => format!(
                "{section}.shard_rate_factor {} is outside 0..=1",
                factor.unwrap_or_default()
            ),
        });
    }
    Some(p)
}
