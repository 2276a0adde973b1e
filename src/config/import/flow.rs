//! One flow of agent.json as a `[[file]]` block: the files, the stream, where
//! to start, partition keys, multiline records, long lines and the records'
//! shape (`processing.rs`). The buffering keys are shardline's delivery
//! settings, shared by every block, and are read in `delivery.rs`.

use super::java_regex;
use super::out::{self, Section};
use super::processing::{self, Record};
use super::read::{self, integer, text, Flow, Target};
use super::Log;

/// The agent skips files with these extensions (`SourceFile.validateFile`).
const COMPRESSED: [&str; 3] = ["gz", "bz2", "zip"];

/// A `[[file]]` block and its `[file.parse]` table.
pub(super) struct FileBlock {
    pub file: Section,
    pub parse: Option<Section>,
}

/// The block for `flow`; `earlier` are the flows before it.
pub(super) fn file_block(flow: &Flow, earlier: &[Flow], log: &mut Log) -> FileBlock {
    let place = flow.place();
    let mut s = Section::new("[[file]]");
    s.comment(&format!("flows[{}]", flow.index));
    files(flow, earlier, &mut s, log);
    match &flow.target {
        Target::Kinesis(name) => s.key_noted("stream", out::string(name), "kinesisStream"),
        Target::Firehose(name) => {
            s.key_noted("delivery_stream", out::string(name), "deliveryStream")
        }
    }
    start(flow, &mut s, log);
    if !flow.target.is_firehose() {
        partition_key(flow, &mut s, log);
    }
    multiline(flow, &mut s, log);
    long_lines(flow, &mut s, log);
    other_keys(flow, &mut s, log);
    let rec = processing::plan(flow.map, &place, &mut s, log);
    record_keys(&rec, &mut s);
    for key in read::unknown(flow.map, &[read::FLOW_KEYS, own_keys(&flow.target)]) {
        log.lost(
            &mut s,
            &place,
            &format!("key {key:?} is not one the agent reads for this flow: ignored"),
        );
    }
    FileBlock {
        file: s,
        parse: rec.parse,
    }
}

fn own_keys(target: &Target) -> &'static [&'static str] {
    match target {
        Target::Kinesis(_) => read::KINESIS_FLOW_KEYS,
        Target::Firehose(_) => read::FIREHOSE_FLOW_KEYS,
    }
}

/// `include` and `exclude` from `filePattern`: a glob on the file name in a
/// literal directory.
fn files(flow: &Flow, earlier: &[Flow], s: &mut Section, log: &mut Log) {
    let pattern = &flow.pattern;
    let place = flow.place();
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    s.key_noted("include", out::strings(&[pattern]), "filePattern");
    if !pattern.starts_with('/') {
        log.lost(s, &place, "filePattern is relative (to the agent's working directory): shardline needs an absolute path; correct `include`");
    }
    if dir.contains(['*', '?', '[', '{']) {
        log.lost(s, &place, "filePattern has a wildcard in its directory, which the agent took literally and shardline expands: check which files `include` names");
    }
    if name.ends_with(['*', '?', ']', '}']) {
        // The name's end is open: it may match a compressed copy.
        let excludes: Vec<String> = COMPRESSED.iter().map(|e| format!("{dir}/*.{e}")).collect();
        s.key_noted(
            "exclude",
            out::strings(&excludes),
            "the agent skips compressed files",
        );
    }
    if name.ends_with('*') {
        s.comment("The agent's pattern names rotated copies too, which it read to follow rotation. shardline follows a renamed file by its identity, so naming the live file alone is enough, and with copytruncate rotation it is needed (the copies would be tailed as files of their own).");
    }
    if earlier.iter().any(|e| e.pattern == flow.pattern) {
        log.lost(s, &place, "another flow above tails the same files: shardline tails a file in the first block that matches it only, so this block gets none of them");
    }
}

/// `read_from` from `initialPosition` (the agent's default: END_OF_FILE).
fn start(flow: &Flow, s: &mut Section, log: &mut Log) {
    match text(flow.map, "initialPosition").as_deref() {
        None => s.key_noted(
            "read_from",
            out::string("end"),
            "the agent's default, END_OF_FILE",
        ),
        Some("END_OF_FILE") => s.key_noted("read_from", out::string("end"), "END_OF_FILE"),
        Some("START_OF_FILE") => {
            s.key_noted("read_from", out::string("beginning"), "START_OF_FILE")
        }
        Some(other) => {
            log.lost(s, &flow.place(), &format!("initialPosition {other:?} is not START_OF_FILE or END_OF_FILE (the agent refuses it): shardline's default, \"beginning\""));
        }
    }
}

/// `partition_key` from `partitionKeyOption` (the agent's default: RANDOM).
fn partition_key(flow: &Flow, s: &mut Section, log: &mut Log) {
    match text(flow.map, "partitionKeyOption").as_deref() {
        None | Some("RANDOM") => s.key_noted("partition_key", out::string("random_per_record"), "RANDOM, the agent's default: a random key per record"),
        Some("DETERMINISTIC") => s.key_noted(
            "partition_key",
            out::string("line_hash"),
            "DETERMINISTIC: equal records go to one shard",
        ),
        Some(other) => log.lost(s, &flow.place(), &format!("partitionKeyOption {other:?} is not RANDOM or DETERMINISTIC (the agent refuses it): random keys")),
    }
}

/// `multiline_start` from `multiLineStartPattern`, which the agent matched at
/// the start of a line (`lookingAt`) while shardline searches the line.
fn multiline(flow: &Flow, s: &mut Section, log: &mut Log) {
    let Some(pattern) = text(flow.map, "multiLineStartPattern") else {
        return;
    };
    if let Some(why) = java_regex::unsupported(&pattern) {
        log.lost(s, &flow.place(), &format!("multiLineStartPattern {pattern:?}: {why}; write `multiline_start` by hand: every line is a record until then"));
        return;
    }
    let anchored = if pattern.starts_with('^') && !pattern.contains('|') {
        pattern
    } else {
        format!("^(?:{pattern})")
    };
    s.key_noted(
        "multiline_start",
        out::string(&anchored),
        "multiLineStartPattern, anchored at the line's start as in the agent",
    );
}

/// The agent truncates a record longer than the stream's limit and ends it with
/// `truncatedRecordTerminator`; it never splits one.
fn long_lines(flow: &Flow, s: &mut Section, log: &mut Log) {
    s.key_noted(
        "oversized",
        out::string("truncate"),
        "the agent truncates long records",
    );
    if let Some(t) = text(flow.map, "truncatedRecordTerminator").filter(|t| t != "\n") {
        log.lost(s, &flow.place(), &format!("truncatedRecordTerminator {t:?}: no equivalent: a truncated record ends where it was cut (a Firehose line still ends in a newline)"));
    }
    if let Some(n) = integer(flow.map, "skipHeaderLines").filter(|n| *n > 0) {
        log.lost(s, &flow.place(), &format!("skipHeaderLines {n}: no equivalent: the first lines of each file are sent as records"));
    }
    if let Some(p) = text(flow.map, "fileFooterPattern") {
        log.lost(s, &flow.place(), &format!("fileFooterPattern {p:?}: no equivalent: a file is read to its end, footer lines included"));
    }
}

/// The tailer's timings and the agent's queues.
fn other_keys(flow: &Flow, s: &mut Section, log: &mut Log) {
    let map = flow.map;
    if let Some(ms) = integer(map, "maxTimeBetweenFileTrackerRefreshMillis").filter(|ms| *ms > 0) {
        s.key_noted(
            "rescan_interval_ms",
            ms.to_string(),
            "maxTimeBetweenFileTrackerRefreshMillis",
        );
    }
    if let Some(ms) = integer(map, "minTimeBetweenFilePollsMillis") {
        log.lost(s, &flow.place(), &format!("minTimeBetweenFilePollsMillis {ms}: no equivalent: inotify wakes the tailer as a file grows, rescan_interval_ms is the fallback"));
    }
    let queues: Vec<&str> = [
        "retryInitialBackoffMillis",
        "retryMaxBackoffMillis",
        "publishQueueCapacity",
        "waitOnFullPublishQueueMillis",
        "waitOnEmptyPublishQueueMillis",
        "waitOnFullRetryQueueMillis",
    ]
    .into_iter()
    .filter(|k| map.contains_key(*k))
    .collect();
    if !queues.is_empty() {
        log.lost(s, &flow.place(), &format!("{}: no equivalent: records wait in the spool until delivered, with a built-in backoff", queues.join(", ")));
    }
    if map.contains_key("log.emitInternalMetrics") {
        log.lost(
            s,
            &flow.place(),
            "log.emitInternalMetrics: no equivalent: every metric is on the metrics endpoint",
        );
    }
}

/// The record keys of the block.
fn record_keys(rec: &Record, s: &mut Section) {
    if rec.json {
        s.key("format", out::string("json"));
    }
    if rec.json_merge {
        s.key("json_merge", "true".into());
    }
    if rec.ec2_identity {
        s.key_noted("ec2_identity", "true".into(), "ADDEC2METADATA");
    }
    if !rec.fields.is_empty() {
        s.key_noted(
            "fields",
            out::inline_table(&rec.fields),
            "ADDMETADATA metadata",
        );
    }
    if !rec.rename.is_empty() {
        s.comment("The agent's records held only these keys: the keys shardline adds are renamed to the agent's names or left out (\"\").");
        s.key("rename", out::inline_table(&rec.rename));
    }
}
