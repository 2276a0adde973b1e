//! The `[[file]]` blocks: patterns, partition keys, multiline starts and the
//! spool's own files kept out of reach.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::checks::{record_format, JsonKeys, MIN_JSON_RECORD_BYTES};
use super::quote::written_value;
use super::raw::{KeyName, PartitionKey, RawFile, RawJsonField, RawPartitionKey, RecordFormat};
use super::{glob_base, is_pseudo_fs, FileConfig, MAX_LARGE_FILE_RECORD_BYTES};
use crate::record::RECORD_ID_ROOM;

/// Compiles glob patterns as the file source matches them: `*` stays within one
/// path component.
pub(super) fn glob_set(
    patterns: &[String],
    field: &str,
    problems: &mut Vec<String>,
) -> Option<globset::GlobSet> {
    let mut builder = globset::GlobSetBuilder::new();
    let mut ok = true;
    for p in patterns {
        if !p.starts_with('/') {
            problems.push(format!("{field} pattern {p:?} is not an absolute path"));
            ok = false;
            continue;
        }
        match globset::GlobBuilder::new(p).literal_separator(true).build() {
            Ok(g) => {
                builder.add(g);
            }
            Err(e) => {
                problems.push(format!(
                    "{field} pattern {p:?} is not a valid glob: {}",
                    e.kind()
                ));
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    match builder.build() {
        Ok(set) => Some(set),
        Err(e) => {
            problems.push(format!("{field} patterns cannot be compiled: {e}"));
            None
        }
    }
}

/// Refuses `[[file]]` patterns that match the spool's own files or the
/// dead-letter file: tailing them sends the spool to itself, without end.
pub(super) fn check_files_miss_own(
    files: &[FileConfig],
    spool: &Path,
    dead_letters: &[&Path],
    problems: &mut Vec<String>,
) {
    // A name of each kind the spool writes (see the spool's layout).
    let own: Vec<PathBuf> = [
        "streams/6c6f6773/0000000000000001.seg",
        "streams/6c6f6773/0000000000000001.ack",
        "streams/6c6f6773/checkpoints",
        "streams/6c6f6773/manifest",
        "damaged/report",
        "lock",
        "spool.format",
        "index/db",
    ]
    .iter()
    .map(|n| spool.join(n))
    .collect();
    for (i, f) in files.iter().enumerate() {
        let matches = |p: &Path| f.include_set.is_match(p) && !f.exclude_set.is_match(p);
        if let Some(p) = own.iter().find(|p| matches(p)) {
            problems.push(format!(
                "file[{i}].include matches the spool's own files (such as {}): tailing them would send the spool to itself; narrow the pattern or add an exclude",
                p.display()
            ));
        }
        if let Some(d) = dead_letters.iter().find(|d| matches(d)) {
            problems.push(format!(
                "file[{i}].include matches the dead-letter file {}: its records would be sent again without end; narrow the pattern or add an exclude",
                d.display()
            ));
        }
    }
}

/// Checks one `[[file]]` block.
pub(super) fn validate_file(
    i: usize,
    f: RawFile,
    default_stream: Option<&String>,
    problems: &mut Vec<String>,
) -> Option<FileConfig> {
    let field = format!("file[{i}]");
    let before = problems.len();
    if f.include.is_empty() {
        problems.push(format!(
            "{field}.include is missing (a list of glob patterns)"
        ));
    }
    let include_set = glob_set(&f.include, &format!("{field}.include"), problems);
    for p in f.include.iter().filter(|p| p.starts_with('/')) {
        check_include_base(p, &format!("{field}.include"), problems);
    }
    let exclude_set = glob_set(&f.exclude, &format!("{field}.exclude"), problems);
    let (stream, max_record_bytes) = super::streams::target(
        &field,
        [f.stream.as_ref(), f.delivery_stream.as_ref()],
        default_stream,
        (
            "max_record_bytes",
            f.max_record_bytes,
            super::raw::default_max_record_bytes(),
        ),
        problems,
    );
    if f.delete_after_delivered {
        check_delete_after_delivered(&field, &f, problems);
    }
    let format = file_format(&field, &f, problems);
    let partition_key = file_partition_key(&field, f.partition_key, problems);
    let multiline_start = multiline_start(&field, f.multiline_start.as_deref(), problems);
    if f.multiline_timeout_ms == 0 {
        problems.push(format!("{field}.multiline_timeout_ms must be at least 1"));
    }
    if f.max_record_bytes == 0 || f.max_record_bytes > MAX_LARGE_FILE_RECORD_BYTES {
        problems.push(format!(
            "{field}.max_record_bytes {} is outside 1..={MAX_LARGE_FILE_RECORD_BYTES} (the largest Kinesis record, 10 MiB, less a 256-byte partition key)",
            f.max_record_bytes
        ));
    }
    if f.rescan_interval_ms == 0 {
        problems.push(format!("{field}.rescan_interval_ms must be at least 1"));
    }
    if problems.len() > before {
        return None;
    }
    Some(FileConfig {
        block: field,
        include: f.include,
        exclude: f.exclude,
        include_set: include_set?,
        exclude_set: exclude_set?,
        stream: stream?,
        read_from: f.read_from,
        partition_key: partition_key?,
        multiline_start,
        multiline_timeout: Duration::from_millis(f.multiline_timeout_ms),
        max_record_bytes: match (&format, f.record_id) {
            (RecordFormat::Raw, true) => max_record_bytes.saturating_sub(RECORD_ID_ROOM).max(1),
            _ => max_record_bytes,
        },
        record_id: f.record_id,
        oversized: f.oversized,
        invalid_utf8: f.invalid_utf8,
        ignore_older: f.ignore_older_secs.map(Duration::from_secs),
        rescan_interval: Duration::from_millis(f.rescan_interval_ms),
        rotate_wait: Duration::from_millis(f.rotate_wait_ms),
        follow_symlinks: f.follow_symlinks,
        delete_after_delivered: f.delete_after_delivered,
        format,
    })
}

/// `delete_after_delivered` is for one-shot files: refused where it would
/// delete lines never read, or the file a program keeps writing.
fn check_delete_after_delivered(field: &str, f: &RawFile, problems: &mut Vec<String>) {
    if f.read_from == super::ReadFrom::End {
        problems.push(format!(
            "{field}.delete_after_delivered with read_from = \"end\" would delete the lines before the end, which are never read"
        ));
    }
    for p in &f.include {
        let name = Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if !name.contains(['*', '?', '[', '{']) {
            problems.push(format!(
                "{field}.delete_after_delivered: include pattern {p:?} names one file, which a program keeps writing (or logrotate rotates); deletion is for one-shot files matched by a wildcard, such as \"/var/spool/app/*.json\""
            ));
        }
    }
    if f.rotate_wait_ms == 0 {
        problems.push(format!(
            "{field}.delete_after_delivered needs rotate_wait_ms of at least 1: a file is deleted only once it was not written for that long"
        ));
    }
}

/// A file block's record format, checked against its line options.
fn file_format(field: &str, f: &RawFile, problems: &mut Vec<String>) -> RecordFormat {
    let format = record_format(
        field,
        JsonKeys {
            format: f.format,
            fields: &f.fields,
            merge: f.json_merge,
            ec2_identity: f.ec2_identity,
            rename: &f.rename,
            timestamp_format: f.timestamp_format.as_deref(),
            parse: f.parse.as_ref(),
            file: true,
            record_id: f.record_id,
            record_id_key: &f.record_id_key,
        },
        problems,
    );
    if let (RecordFormat::Json(j), Some(_)) = (&format, &f.multiline_start) {
        if j.parse.as_ref().is_some_and(|p| p.joins_lines()) {
            problems.push(format!(
                "{field}.multiline_start and a parse preset that joins lines (cri, docker, csv with quotes) exclude each other"
            ));
        }
    }
    if format != RecordFormat::Raw && f.max_record_bytes < MIN_JSON_RECORD_BYTES {
        problems.push(format!(
            "{field}.max_record_bytes {} is below {MIN_JSON_RECORD_BYTES}, too small for format = \"json\" (the added keys need room)",
            f.max_record_bytes
        ));
    }
    format
}

/// A file block's `partition_key`.
fn file_partition_key(
    field: &str,
    key: RawPartitionKey,
    problems: &mut Vec<String>,
) -> Option<PartitionKey> {
    match key {
        RawPartitionKey::Named(KeyName::Random | KeyName::RandomPerBatch) => {
            Some(PartitionKey::Random)
        }
        RawPartitionKey::Named(KeyName::RandomPerRecord) => Some(PartitionKey::RandomPerRecord),
        RawPartitionKey::Named(KeyName::LineHash) => Some(PartitionKey::LineHash),
        RawPartitionKey::Named(KeyName::FilePath) => Some(PartitionKey::FilePath),
        RawPartitionKey::Unknown(written) => {
            let names: Vec<String> = KeyName::ALL.iter().map(|(n, _)| format!("{n:?}")).collect();
            problems.push(format!(
                "{field}.partition_key {} is not one of {} or {{ field = \"...\" }}",
                written_value(&written),
                names.join(", ")
            ));
            None
        }
        RawPartitionKey::Field(RawJsonField { field: name }) => {
            if name.is_empty() {
                problems.push(format!("{field}.partition_key.field is empty"));
            }
            Some(PartitionKey::JsonField(name))
        }
    }
}

/// A file block's `multiline_start` pattern.
fn multiline_start(
    field: &str,
    pattern: Option<&str>,
    problems: &mut Vec<String>,
) -> Option<regex::bytes::Regex> {
    match pattern.map(regex::bytes::Regex::new) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            problems.push(format!(
                "{field}.multiline_start {:?} is not a valid regular expression: {}",
                pattern.unwrap_or_default(),
                e.to_string().lines().last().unwrap_or_default().trim()
            ));
            None
        }
    }
}

/// Include patterns must name a directory before their first wildcard, outside the
/// kernel's pseudo-filesystems: `/**` or `/*` would walk (and tail) everything.
pub(super) fn check_include_base(pattern: &str, field: &str, problems: &mut Vec<String>) {
    let (base, _) = glob_base(pattern);
    if base == Path::new("/") {
        problems.push(format!(
            "{field} pattern {pattern:?} has no directory before its first wildcard: it would walk the whole filesystem"
        ));
    } else if is_pseudo_fs(&base) {
        problems.push(format!(
            "{field} pattern {pattern:?} is under /proc, /sys or /dev, which are never tailed"
        ));
    }
}
