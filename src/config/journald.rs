//! The `[[journald]]` block: as written (`RawJournald`) and validated
//! ([`JournaldConfig`]), every problem listed with the others of the file.

use std::path::PathBuf;

use serde::Deserialize;

use super::quote::written_value;
use super::{Oversized, RecordFormat, MAX_LARGE_FILE_RECORD_BYTES};

/// A `[[journald]]` block as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJournald {
    /// Name of this block's read position (its checkpoint, the journal cursor) in
    /// the spool. Blocks that send to one stream need different names; a renamed
    /// block starts again from `since`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Journal directory to read (`journalctl --directory`), for example a
    /// container's or a copied journal. None: the system journal.
    pub directory: Option<PathBuf>,
    /// The `journalctl` program that reads the journal.
    #[serde(default = "default_journalctl")]
    pub journalctl: PathBuf,
    /// Units whose entries are sent (`_SYSTEMD_UNIT`; a name without a dot gets
    /// `.service`). Entries of these units or of `identifiers` are sent; when both
    /// are empty, every entry is.
    #[serde(default)]
    pub units: Vec<String>,
    /// Units whose entries are never sent.
    #[serde(default)]
    pub exclude_units: Vec<String>,
    /// Syslog identifiers whose entries are sent (`SYSLOG_IDENTIFIER`, what
    /// `journalctl -t` matches).
    #[serde(default)]
    pub identifiers: Vec<String>,
    /// Syslog identifiers whose entries are never sent.
    #[serde(default)]
    pub exclude_identifiers: Vec<String>,
    /// Least urgent priority sent: a name (`"emerg"`, `"alert"`, `"crit"`, `"err"`,
    /// `"warning"`, `"notice"`, `"info"`, `"debug"`) or its number 0..=7. Entries
    /// without a priority are sent. None: every priority.
    pub priority: Option<RawPriority>,
    /// Where a block without a checkpoint starts: `"boot"` (every entry of the
    /// current boot), `"now"` (only entries written from now on) or
    /// `"beginning"` (the whole journal). Once a checkpoint exists, the block
    /// always goes on from it, across restarts and reboots.
    #[serde(default)]
    pub since: Since,
    /// Destination Kinesis data stream (default: `[kinesis]`'s destination).
    pub stream: Option<String>,
    /// Destination Firehose stream, instead of a Kinesis `stream`.
    pub delivery_stream: Option<String>,
    /// Record data: `"raw"` (the `MESSAGE` field's bytes; formerly `"message"`)
    /// or `"json"` (a JSON object of the journal fields named in
    /// `journal_fields`, as `journalctl -o json` writes them).
    #[serde(default)]
    pub format: Format,
    /// The journal fields a `"json"` record holds (those an entry has); `["*"]`:
    /// every field. Default: `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER`,
    /// `_SYSTEMD_UNIT`, `_PID`, `_HOSTNAME`, `__REALTIME_TIMESTAMP`.
    pub journal_fields: Option<Vec<String>>,
    /// With `"json"`: static keys added to every record (`{ env = "prod" }`),
    /// as in the other blocks. (A list here is the former spelling of
    /// `journal_fields`.)
    pub fields: Option<RawJournalFields>,
    /// Partition key of each record: `"random"` (16 hex digits) or
    /// `{ field = "_SYSTEMD_UNIT" }` (the value of a journal field; random when an
    /// entry does not have it).
    #[serde(default)]
    pub partition_key: RawJournalKey,
    /// Largest record, in bytes. Default 1048320: the 1 MiB record limit less the
    /// longest partition key (256 bytes); at most 10485504, for a stream raised
    /// to 10 MiB records.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// What happens to a longer message: `"split"` (into records of
    /// `max_record_bytes`; a `"json"` record is sent whole once per part of its
    /// `MESSAGE`) or `"truncate"` (a `"json"` record's `MESSAGE` is cut so the
    /// object stays valid). A `MESSAGE` that is not UTF-8 in a `"json"` record is
    /// always cut. Either way it is counted.
    #[serde(default)]
    pub oversized: Oversized,
    /// Reads each entry's `MESSAGE` into the keys of a json record (the keys a
    /// file's parsed line gets; `source` is the block's `name`), instead of
    /// `format`; see docs/parsing.md.
    pub parse: Option<super::parse::RawParse>,
    /// With `parse`: new names for top-level keys of the record (`""`: left out).
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// With `parse`: how `timestamp` is written (`rfc3339`, `epoch_s`,
    /// `epoch_ms`, `epoch_us` or a strftime format). None: `rfc3339`.
    pub timestamp_format: Option<String>,
    /// An id per record, from the entry's place in the journal: under
    /// `record_id_key` in json records, before `MESSAGE` and a space otherwise.
    #[serde(default)]
    pub record_id: bool,
    /// The key of the record id in json records.
    #[serde(default = "super::default_record_id_key")]
    pub record_id_key: String,
}

fn default_name() -> String {
    "journald".into()
}

fn default_journalctl() -> PathBuf {
    "journalctl".into()
}

fn default_fields() -> Vec<String> {
    [
        "MESSAGE",
        "PRIORITY",
        "SYSLOG_IDENTIFIER",
        "_SYSTEMD_UNIT",
        "_PID",
        "_HOSTNAME",
        "__REALTIME_TIMESTAMP",
    ]
    .map(String::from)
    .to_vec()
}

fn default_max_record_bytes() -> usize {
    256 * 1024
}

/// `priority` as written: a name or a number. Anything else is kept as written,
/// so that `validate` can name it among the other problems.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPriority {
    Number(i64),
    Name(Priority),
    Unknown(toml::Value),
}

/// Syslog priority names, most urgent first: the discriminant is the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Priority {
    Emerg = 0,
    Alert = 1,
    Crit = 2,
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

/// Where a block without a checkpoint starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Since {
    #[default]
    Boot,
    Now,
    Beginning,
}

/// What a record's data is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The `MESSAGE` field's bytes: written `"raw"` (formerly `"message"`).
    #[default]
    #[serde(rename = "raw", alias = "message")]
    Message,
    Json,
}

/// `fields` as written: static keys (a table), or the former spelling of
/// `journal_fields` (a list).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawJournalFields {
    Keys(std::collections::BTreeMap<String, String>),
    List(Vec<String>),
}

/// `partition_key` as written: a name, or `{ field = "..." }`. Anything else is
/// kept as written, so that `validate` can name it among the other problems.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawJournalKey {
    Named(JournalKeyName),
    Field(RawKeyField),
    Unknown(toml::Value),
}

impl Default for RawJournalKey {
    fn default() -> Self {
        RawJournalKey::Named(JournalKeyName::Random)
    }
}

/// The partition keys a journald block can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JournalKeyName {
    /// 16 random hex digits per record.
    Random,
    /// The same, as other blocks write it.
    RandomPerRecord,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeyField {
    /// The journal field whose value is the partition key.
    pub field: String,
}

/// How a journal record's partition key is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalKey {
    Random,
    Field(String),
}

/// Which entries a block sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub units: Vec<String>,
    pub exclude_units: Vec<String>,
    pub identifiers: Vec<String>,
    pub exclude_identifiers: Vec<String>,
    /// Least urgent priority sent (0..=7).
    pub max_priority: Option<u8>,
}

/// The fields a JSON record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fields {
    All,
    Named(Vec<String>),
}

/// A validated `[[journald]]` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournaldConfig {
    /// The block's name in parse metrics (`journald[0]`).
    pub block: String,
    pub name: String,
    pub directory: Option<PathBuf>,
    pub journalctl: PathBuf,
    pub select: Selection,
    pub since: Since,
    pub stream: String,
    pub format: Format,
    pub fields: Fields,
    /// Static keys added to every json record (`fields`).
    pub added: std::collections::BTreeMap<String, String>,
    pub partition_key: JournalKey,
    pub max_record_bytes: usize,
    pub oversized: Oversized,
    /// With a `parse` table: the json format its `MESSAGE` is parsed into
    /// (raw otherwise).
    pub parse_format: RecordFormat,
    /// The record id's key (`Some`: every record gets an id).
    pub record_id: Option<String>,
}

/// A unit name as `_SYSTEMD_UNIT` holds it (`journalctl -u` adds `.service` the
/// same way).
fn unit_name(name: &str) -> String {
    if name.contains('.') {
        name.to_owned()
    } else {
        format!("{name}.service")
    }
}

/// Validates block `i`; problems go to `problems` (the caller checks the stream
/// name, shared with the other sources).
pub(crate) fn validate(
    i: usize,
    j: RawJournald,
    default_stream: Option<&String>,
    problems: &mut Vec<String>,
) -> Option<JournaldConfig> {
    let field = format!("journald[{i}]");
    let before = problems.len();
    if j.name.is_empty() || j.name.len() > 64 || j.name.chars().any(|c| c.is_control()) {
        problems.push(format!(
            "{field}.name {:?} must be 1 to 64 bytes without control characters",
            j.name
        ));
    }
    if let Some(d) = j.directory.as_ref().filter(|d| !d.is_absolute()) {
        problems.push(format!("{field}.directory {d:?} is not an absolute path"));
    }
    if j.journalctl.as_os_str().is_empty() {
        problems.push(format!("{field}.journalctl is empty"));
    }
    for (key, list) in [
        ("units", &j.units),
        ("exclude_units", &j.exclude_units),
        ("identifiers", &j.identifiers),
        ("exclude_identifiers", &j.exclude_identifiers),
    ] {
        if let Some(bad) = list.iter().find(|n| n.is_empty() || n.contains('=')) {
            problems.push(format!("{field}.{key} holds {bad:?}, not a name"));
        }
    }
    let max_priority = validate_priority(&field, j.priority.as_ref(), problems);
    let (names, added) = journal_fields(&field, j.journal_fields, j.fields, j.format, problems);
    let fields = validate_fields(&field, &names, problems);
    let partition_key = validate_key(&field, j.partition_key, problems);
    let (stream, max_record_bytes) = super::streams::target(
        &field,
        [j.stream.as_ref(), j.delivery_stream.as_ref()],
        default_stream,
        (
            "max_record_bytes",
            j.max_record_bytes,
            default_max_record_bytes(),
        ),
        problems,
    );
    if j.max_record_bytes == 0 || j.max_record_bytes > MAX_LARGE_FILE_RECORD_BYTES {
        problems.push(format!(
            "{field}.max_record_bytes {} is outside 1..={MAX_LARGE_FILE_RECORD_BYTES} (the largest Kinesis record, 10 MiB, less a 256-byte partition key)",
            j.max_record_bytes
        ));
    }
    if problems.len() > before {
        return None;
    }
    Some(JournaldConfig {
        block: field,
        // Set by the caller, which reads the parse table.
        parse_format: RecordFormat::Raw,
        name: j.name,
        directory: j.directory,
        journalctl: j.journalctl,
        select: Selection {
            units: j.units.iter().map(|u| unit_name(u)).collect(),
            exclude_units: j.exclude_units.iter().map(|u| unit_name(u)).collect(),
            identifiers: j.identifiers,
            exclude_identifiers: j.exclude_identifiers,
            max_priority,
        },
        since: j.since,
        stream: stream?,
        format: j.format,
        fields,
        added,
        partition_key: partition_key?,
        max_record_bytes,
        oversized: j.oversized,
        record_id: j.record_id.then_some(j.record_id_key),
    })
}

/// `priority`: a name or a number, the most severe kept.
fn validate_priority(
    field: &str,
    p: Option<&RawPriority>,
    problems: &mut Vec<String>,
) -> Option<u8> {
    match p {
        None => None,
        Some(RawPriority::Number(n)) if (0..=7).contains(n) => Some(*n as u8),
        Some(RawPriority::Name(name)) => Some(*name as u8),
        Some(p) => {
            let written = match p {
                RawPriority::Number(n) => n.to_string(),
                RawPriority::Unknown(v) => written_value(v),
                RawPriority::Name(_) => unreachable!("every name is a priority"),
            };
            problems.push(format!(
                "{field}.priority {written} is not a priority name (\"emerg\" … \"debug\") or a number 0..=7"
            ));
            None
        }
    }
}

/// `fields`: `["*"]` or names.
fn validate_fields(field: &str, names: &[String], problems: &mut Vec<String>) -> Fields {
    if names == ["*"] {
        Fields::All
    } else {
        if names.is_empty() {
            problems.push(format!(
                "{field}.fields is empty (use [\"*\"] for every field)"
            ));
        }
        if let Some(bad) = names
            .iter()
            .find(|f| f.is_empty() || f.contains('=') || f.as_str() == "*")
        {
            problems.push(format!("{field}.fields holds {bad:?}, not a field name"));
        }
        Fields::Named(names.to_vec())
    }
}

/// The journal fields of a json record (`journal_fields`, or `fields` as a
/// list, its former spelling) and the static keys (`fields` as a table).
fn journal_fields(
    field: &str,
    names: Option<Vec<String>>,
    fields: Option<RawJournalFields>,
    format: Format,
    problems: &mut Vec<String>,
) -> (Vec<String>, std::collections::BTreeMap<String, String>) {
    let (listed, added) = match fields {
        Some(RawJournalFields::List(l)) => (Some(l), Default::default()),
        Some(RawJournalFields::Keys(k)) => (None, k),
        None => (None, Default::default()),
    };
    if listed.is_some() && names.is_some() {
        problems.push(format!(
            "{field}.fields (a list) is the former spelling of journal_fields: set only journal_fields"
        ));
    }
    if !added.is_empty() && format != Format::Json {
        problems.push(format!(
            "{field}.fields adds keys to json records: set format = \"json\" or leave it out"
        ));
    }
    if let Some(k) = added.keys().find(|k| k.is_empty()) {
        problems.push(format!("{field}.fields has an empty key {k:?}"));
    }
    (names.or(listed).unwrap_or_else(default_fields), added)
}

/// `partition_key`: `"random"` or `{ field = "..." }`.
fn validate_key(field: &str, key: RawJournalKey, problems: &mut Vec<String>) -> Option<JournalKey> {
    match key {
        RawJournalKey::Named(JournalKeyName::Random | JournalKeyName::RandomPerRecord) => {
            Some(JournalKey::Random)
        }
        RawJournalKey::Unknown(written) => {
            problems.push(format!(
                "{field}.partition_key {} is not \"random\", \"random_per_record\" or {{ field = \"...\" }} (a journal entry is one record: no batches, lines or paths)",
                written_value(&written)
            ));
            None
        }
        RawJournalKey::Field(RawKeyField { field: f }) => {
            if f.is_empty() {
                problems.push(format!("{field}.partition_key.field is empty"));
            }
            Some(JournalKey::Field(f))
        }
    }
}

/// Checks that no two blocks keep their checkpoint under one name in one stream.
pub(crate) fn check_names(blocks: &[JournaldConfig], problems: &mut Vec<String>) {
    for (i, a) in blocks.iter().enumerate() {
        if blocks[..i]
            .iter()
            .any(|b| b.name == a.name && b.stream == a.stream)
        {
            problems.push(format!(
                "journald blocks share the name {:?} in stream {:?}; give each its own `name`",
                a.name, a.stream
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JournaldConfig, Vec<String>> {
        let raw: RawJournald = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let stream = "logs".to_owned();
        let c = validate(0, raw, Some(&stream), &mut problems);
        if problems.is_empty() {
            Ok(c.expect("no problems"))
        } else {
            Err(problems)
        }
    }

    #[test]
    fn defaults_send_every_message_of_the_boot() {
        let c = parse("").unwrap();
        assert_eq!(c.name, "journald");
        assert_eq!(c.since, Since::Boot);
        assert_eq!(c.format, Format::Message);
        assert_eq!(c.partition_key, JournalKey::Random);
        assert_eq!(c.select, Selection::default());
        assert_eq!(c.stream, "logs");
    }

    #[test]
    fn units_get_their_suffix_and_priorities_their_number() {
        let c = parse(
            r#"units = ["nginx", "cron.timer"]
priority = "warning"
partition_key = { field = "_SYSTEMD_UNIT" }
fields = ["*"]
format = "json""#,
        )
        .unwrap();
        assert_eq!(c.select.units, ["nginx.service", "cron.timer"]);
        assert_eq!(c.select.max_priority, Some(4));
        assert_eq!(c.partition_key, JournalKey::Field("_SYSTEMD_UNIT".into()));
        assert_eq!(c.fields, Fields::All);
        assert_eq!(parse("priority = 3").unwrap().select.max_priority, Some(3));
    }

    #[test]
    fn every_problem_is_listed() {
        let problems = parse(
            r#"priority = "loud"
directory = "relative"
partition_key = "unit"
max_record_bytes = 0
fields = []
units = [""]"#,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(
            problems[0].contains("directory \"relative\""),
            "{problems:#?}"
        );
        for written in ["priority \"loud\" is not", "partition_key \"unit\" is not"] {
            assert!(
                problems.iter().any(|p| p.contains(written)),
                "{written}: {problems:#?}"
            );
        }
        assert!(parse("priority = 8").is_err());
        assert!(parse("priority = [3]").is_err());
        assert_eq!(
            parse("priority = \"debug\"").unwrap().select.max_priority,
            Some(7)
        );
        assert!(parse("since = \"yesterday\"").is_err());
    }

    #[test]
    fn two_blocks_cannot_share_a_checkpoint() {
        let a = parse("").unwrap();
        let mut problems = Vec::new();
        check_names(&[a.clone(), a], &mut problems);
        assert_eq!(problems.len(), 1);
    }
}
