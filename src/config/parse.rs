//! A block's `parse` table (a line read into the keys of a json record) and its
//! json keys' `rename` and `timestamp_format`, as written and validated. What
//! each preset writes is in docs/parsing.md; the readers are the sources'.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

/// A preset by name: a format with fixed keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    ApacheCommon,
    ApacheCombined,
    ApacheError,
    NginxAccess,
    NginxError,
    SyslogRfc3164,
    SyslogRfc5424,
    Logfmt,
    Cri,
    Docker,
    /// The Kinesis Agent's `COMMONAPACHELOG`.
    AgentCommonApache,
    /// `COMBINEDAPACHELOG`.
    AgentCombinedApache,
    /// `APACHEERRORLOG`.
    AgentApacheError,
    /// `SYSLOG`.
    AgentSyslog,
    /// `RFC3339SYSLOG`.
    AgentRfc3339Syslog,
}

/// The keys of the Kinesis Agent's `COMMONAPACHELOG` (its
/// `ApacheLogParser.java`), `COMBINEDAPACHELOG`, `APACHEERRORLOG`, and of
/// `SYSLOG` and `RFC3339SYSLOG` (`SysLogParser.java`).
pub const AGENT_COMMON_KEYS: &[&str] = &[
    "host", "ident", "authuser", "datetime", "request", "response", "bytes",
];
pub const AGENT_COMBINED_KEYS: &[&str] = &[
    "host", "ident", "authuser", "datetime", "request", "response", "bytes", "referer", "agent",
];
pub const AGENT_ERROR_KEYS: &[&str] = &[
    "timestamp",
    "module",
    "severity",
    "processid",
    "threadid",
    "client",
    "message",
];
pub const AGENT_SYSLOG_KEYS: &[&str] =
    &["timestamp", "hostname", "program", "processid", "message"];

/// Every preset, in the order the docs list them.
pub const PRESETS: [Preset; 15] = [
    Preset::ApacheCommon,
    Preset::ApacheCombined,
    Preset::ApacheError,
    Preset::NginxAccess,
    Preset::NginxError,
    Preset::SyslogRfc3164,
    Preset::SyslogRfc5424,
    Preset::Logfmt,
    Preset::Cri,
    Preset::Docker,
    Preset::AgentCommonApache,
    Preset::AgentCombinedApache,
    Preset::AgentApacheError,
    Preset::AgentSyslog,
    Preset::AgentRfc3339Syslog,
];

impl Preset {
    /// The name written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Preset::ApacheCommon => "apache_common",
            Preset::ApacheCombined => "apache_combined",
            Preset::ApacheError => "apache_error",
            Preset::NginxAccess => "nginx_access",
            Preset::NginxError => "nginx_error",
            Preset::SyslogRfc3164 => "syslog_rfc3164",
            Preset::SyslogRfc5424 => "syslog_rfc5424",
            Preset::Logfmt => "logfmt",
            Preset::Cri => "cri",
            Preset::Docker => "docker",
            Preset::AgentCommonApache => "COMMONAPACHELOG",
            Preset::AgentCombinedApache => "COMBINEDAPACHELOG",
            Preset::AgentApacheError => "APACHEERRORLOG",
            Preset::AgentSyslog => "SYSLOG",
            Preset::AgentRfc3339Syslog => "RFC3339SYSLOG",
        }
    }

    /// The preset named `name`.
    pub fn from_name(name: &str) -> Option<Preset> {
        PRESETS.into_iter().find(|p| p.name() == name)
    }

    /// Whether this is one of the Kinesis Agent's formats.
    pub fn is_agent(self) -> bool {
        self.agent_key_count().is_some()
    }

    /// The keys a Kinesis Agent format writes, in its order (what
    /// `field_names` renames); `None` for shardline's own presets.
    pub fn agent_keys(self) -> Option<&'static [&'static str]> {
        match self {
            Preset::AgentCommonApache => Some(AGENT_COMMON_KEYS),
            Preset::AgentCombinedApache => Some(AGENT_COMBINED_KEYS),
            Preset::AgentApacheError => Some(AGENT_ERROR_KEYS),
            Preset::AgentSyslog | Preset::AgentRfc3339Syslog => Some(AGENT_SYSLOG_KEYS),
            _ => None,
        }
    }

    /// How many keys a Kinesis Agent format writes; `None` for shardline's own
    /// presets.
    pub fn agent_key_count(self) -> Option<usize> {
        self.agent_keys().map(<[_]>::len)
    }
}

/// How a time is written or read: `rfc3339`, `epoch_s`, `epoch_ms`,
/// `epoch_us`, or a strftime-style format (`%d/%b/%Y:%H:%M:%S %z`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// RFC 3339; written in UTC with milliseconds.
    #[default]
    Rfc3339,
    EpochS,
    EpochMs,
    EpochUs,
    Strftime(String),
}

impl TimeFormat {
    /// The format named or written `s`; `None` when a strftime format has an
    /// unknown directive.
    pub fn parse(s: &str) -> Option<TimeFormat> {
        Some(match s {
            "rfc3339" => TimeFormat::Rfc3339,
            "epoch_s" => TimeFormat::EpochS,
            "epoch_ms" => TimeFormat::EpochMs,
            "epoch_us" => TimeFormat::EpochUs,
            _ => {
                let items = chrono::format::StrftimeItems::new(s);
                let bad = items
                    .clone()
                    .any(|i| matches!(i, chrono::format::Item::Error));
                if bad || !s.contains('%') {
                    return None;
                }
                TimeFormat::Strftime(s.to_owned())
            }
        })
    }
}

/// A field's conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Int,
    Float,
    Bool,
    String,
}

/// What happens to a line its parser cannot read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Sent as the json format wraps any line, with a `parse_error` key.
    #[default]
    Wrap,
    /// Sent as it is.
    Raw,
    /// Not sent.
    Drop,
}

/// A block's `parse` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawParse {
    /// A preset (docs/parsing.md): `apache_common`, `apache_combined`,
    /// `apache_error`, `nginx_access`, `nginx_error`, `syslog_rfc3164`,
    /// `syslog_rfc5424`, `logfmt`, `cri`, `docker`, `csv`, or one of the Kinesis
    /// Agent's `COMMONAPACHELOG`, `COMBINEDAPACHELOG`, `APACHEERRORLOG`,
    /// `SYSLOG`, `RFC3339SYSLOG`, `CSVTOJSON`. One of `preset` or `pattern`.
    pub preset: Option<String>,
    /// A regular expression (Rust `regex` syntax) searched in the line; its named
    /// groups become keys (or all its groups, named by `field_names`).
    pub pattern: Option<String>,
    /// Key names by position: of every group of `pattern`, of a Kinesis Agent
    /// preset's keys (as many), or of `CSVTOJSON`'s columns (its
    /// `customFieldNames`).
    pub field_names: Option<Vec<String>>,
    /// `csv`: the column names (or `header = true`).
    pub columns: Option<Vec<String>>,
    /// `csv` in a `[[file]]` block: the first line of each file names the columns.
    #[serde(default)]
    pub header: bool,
    /// `csv`: the delimiter, one character (default `,`); `CSVTOJSON`: the
    /// Kinesis Agent's delimiter, a regular expression (default `,`).
    pub delimiter: Option<String>,
    /// `csv`: the quote character (default `"`); `""` for none.
    pub quote: Option<String>,
    /// Conversions of parsed fields: `{ status = "int", took = "float", ok =
    /// "bool" }` (or `"string"`). A value that does not convert stays a string
    /// and is counted.
    #[serde(default)]
    pub types: BTreeMap<String, FieldType>,
    /// The field holding the event's time, which becomes the record's
    /// `timestamp`; where it cannot be read, the read time is used and counted.
    pub time_key: Option<String>,
    /// How `time_key` is written: `rfc3339`, `epoch_s`, `epoch_ms`, `epoch_us`
    /// or a strftime format; a format without a zone is UTC, without a year the
    /// current one. Default: the preset's format for its time key.
    pub time_format: Option<String>,
    /// A line the parser cannot read: `"wrap"` (the json record of the line with
    /// a `parse_error` key), `"raw"` (the line as it is) or `"drop"`. Always
    /// counted and logged.
    #[serde(default)]
    pub on_error: OnError,
    /// Also put the whole line under `message`.
    #[serde(default)]
    pub keep_line: bool,
    /// Add the keys every json record gets (`timestamp`, `host`, `source`, the
    /// EC2 identity, `fields`) to a parsed record. Off: the record holds the
    /// parsed keys only (and `message` with `keep_line`), as the Kinesis
    /// Agent's LOGTOJSON records do.
    #[serde(default = "yes")]
    pub add_keys: bool,
}

fn yes() -> bool {
    true
}

/// How a parser reads a line.
#[derive(Debug, Clone)]
pub enum ParserKind {
    Preset {
        preset: Preset,
        /// Names replacing a Kinesis Agent preset's keys, by position.
        field_names: Option<Vec<String>>,
    },
    Pattern {
        regex: regex::Regex,
        /// Names of every group by position (`None`: the named groups).
        field_names: Option<Vec<String>>,
    },
    Csv {
        /// `None`: the first line of each file names them.
        columns: Option<Vec<String>>,
        delimiter: u8,
        quote: Option<u8>,
    },
    /// The Kinesis Agent's `CSVTOJSON`.
    AgentCsv {
        field_names: Vec<String>,
        delimiter: regex::Regex,
    },
}

/// A validated `parse` table.
#[derive(Debug, Clone)]
pub struct ParseConfig {
    pub kind: ParserKind,
    pub types: Vec<(String, FieldType)>,
    /// The time key and its format (`None`: the preset's).
    pub time: Option<(String, Option<TimeFormat>)>,
    pub on_error: OnError,
    pub keep_line: bool,
    /// Add the keys every json record gets to a parsed one.
    pub add_keys: bool,
}

impl ParseConfig {
    /// Whether the parser's records may span lines that a file's framer joins
    /// (container partial lines, a CSV quoted field holding a line break).
    pub fn joins_lines(&self) -> bool {
        matches!(
            self.kind,
            ParserKind::Preset {
                preset: Preset::Cri | Preset::Docker,
                ..
            } | ParserKind::Csv { quote: Some(_), .. }
        )
    }
}

/// Two tables are the same when they were written the same: patterns are
/// compared by their source text.
impl PartialEq for ParserKind {
    fn eq(&self, other: &ParserKind) -> bool {
        use ParserKind::*;
        match (self, other) {
            (
                Preset {
                    preset: a,
                    field_names: x,
                },
                Preset {
                    preset: b,
                    field_names: y,
                },
            ) => a == b && x == y,
            (
                Pattern {
                    regex: a,
                    field_names: x,
                },
                Pattern {
                    regex: b,
                    field_names: y,
                },
            ) => a.as_str() == b.as_str() && x == y,
            (
                Csv {
                    columns: a,
                    delimiter: d,
                    quote: q,
                },
                Csv {
                    columns: b,
                    delimiter: e,
                    quote: r,
                },
            ) => a == b && d == e && q == r,
            (
                AgentCsv {
                    field_names: a,
                    delimiter: d,
                },
                AgentCsv {
                    field_names: b,
                    delimiter: e,
                },
            ) => a == b && d.as_str() == e.as_str(),
            _ => false,
        }
    }
}

impl PartialEq for ParseConfig {
    fn eq(&self, other: &ParseConfig) -> bool {
        self.kind == other.kind
            && self.types == other.types
            && self.time == other.time
            && self.on_error == other.on_error
            && self.keep_line == other.keep_line
            && self.add_keys == other.add_keys
    }
}

impl Eq for ParseConfig {}

/// Validates a block's `parse` table; `file` says whether the block reads files
/// (the only source with a first line for `header`).
pub(super) fn parse_table(
    field: &str,
    raw: &RawParse,
    file: bool,
    problems: &mut Vec<String>,
) -> Option<Arc<ParseConfig>> {
    let field = format!("{field}.parse");
    let before = problems.len();
    let kind = parser_kind(&field, raw, file, problems);
    let time = raw.time_key.as_ref().map(|key| {
        let format = raw.time_format.as_deref().and_then(|f| {
            let parsed = TimeFormat::parse(f);
            if parsed.is_none() {
                problems.push(format!(
                    "{field}.time_format {f:?} is neither rfc3339, epoch_s, epoch_ms, epoch_us nor a strftime format"
                ));
            }
            parsed
        });
        (key.clone(), format)
    });
    if raw.time_key.is_none() && raw.time_format.is_some() {
        problems.push(format!("{field}.time_format needs time_key"));
    }
    let preset_time = matches!(&kind, Some(ParserKind::Preset { .. }));
    if let Some((key, None)) = &time {
        if !preset_time && raw.time_format.is_none() {
            problems.push(format!(
                "{field}.time_key {key:?} needs time_format (only a preset has a default)"
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Arc::new(ParseConfig {
        kind: kind?,
        types: raw.types.iter().map(|(k, t)| (k.clone(), *t)).collect(),
        time,
        on_error: raw.on_error,
        keep_line: raw.keep_line,
        add_keys: raw.add_keys,
    }))
}

/// The parser a table names, its keys checked against what it is.
fn parser_kind(
    field: &str,
    raw: &RawParse,
    file: bool,
    problems: &mut Vec<String>,
) -> Option<ParserKind> {
    let only = |keys: &[(&str, bool)], what: &str, problems: &mut Vec<String>| {
        for (key, set) in keys {
            if *set {
                problems.push(format!("{field}.{key} does not apply to {what}"));
            }
        }
    };
    let csv_keys = [
        ("columns", raw.columns.is_some()),
        ("header", raw.header),
        ("quote", raw.quote.is_some()),
    ];
    match (raw.preset.as_deref(), raw.pattern.as_deref()) {
        (Some(_), Some(_)) => {
            problems.push(format!("{field} sets both preset and pattern; choose one"));
            None
        }
        (None, None) => {
            problems.push(format!("{field} needs a preset or a pattern"));
            None
        }
        (None, Some(p)) => {
            only(&csv_keys, "a pattern", problems);
            only(
                &[("delimiter", raw.delimiter.is_some())],
                "a pattern",
                problems,
            );
            pattern(field, p, raw.field_names.clone(), problems)
        }
        (Some("csv"), None) => {
            only(
                &[("field_names", raw.field_names.is_some())],
                "csv (use columns)",
                problems,
            );
            csv(field, raw, file, problems)
        }
        (Some("CSVTOJSON"), None) => {
            only(
                &csv_keys,
                "CSVTOJSON (its columns are field_names)",
                problems,
            );
            agent_csv(field, raw, problems)
        }
        (Some(name), None) => {
            only(&csv_keys, "a preset", problems);
            only(
                &[("delimiter", raw.delimiter.is_some())],
                "a preset",
                problems,
            );
            preset_kind(field, name, raw.field_names.clone(), problems)
        }
    }
}

/// A named preset and its `field_names`.
fn preset_kind(
    field: &str,
    name: &str,
    field_names: Option<Vec<String>>,
    problems: &mut Vec<String>,
) -> Option<ParserKind> {
    let Some(preset) = Preset::from_name(name) else {
        let names: Vec<_> = PRESETS.iter().map(|p| p.name()).collect();
        problems.push(format!(
            "{field}.preset {name:?} is not one of {}, csv, CSVTOJSON",
            names.join(", ")
        ));
        return None;
    };
    match (preset.agent_key_count(), &field_names) {
        (Some(n), Some(names)) if names.len() != n => problems.push(format!(
            "{field}.field_names names {} keys; {name} writes {n}",
            names.len()
        )),
        (None, Some(_)) => problems.push(format!(
            "{field}.field_names applies to a pattern, CSVTOJSON and the Kinesis Agent presets; rename keys of {name} with the block's rename"
        )),
        _ => {}
    }
    names_ok(field, field_names.as_deref(), problems);
    Some(ParserKind::Preset {
        preset,
        field_names,
    })
}

/// A `pattern` and its names.
fn pattern(
    field: &str,
    p: &str,
    field_names: Option<Vec<String>>,
    problems: &mut Vec<String>,
) -> Option<ParserKind> {
    let regex = match regex::Regex::new(p) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!(
                "{field}.pattern {p:?} is not a regular expression: {e}"
            ));
            return None;
        }
    };
    let groups = regex.captures_len() - 1;
    match &field_names {
        Some(names) if names.len() != groups => problems.push(format!(
            "{field}.field_names names {} keys; the pattern has {groups} groups",
            names.len()
        )),
        None if regex.capture_names().flatten().next().is_none() => problems.push(format!(
            "{field}.pattern has no named group (?P<name>...) and no field_names name its groups"
        )),
        _ => {}
    }
    names_ok(field, field_names.as_deref(), problems);
    Some(ParserKind::Pattern { regex, field_names })
}

/// A `csv` table.
fn csv(field: &str, raw: &RawParse, file: bool, problems: &mut Vec<String>) -> Option<ParserKind> {
    let delimiter = single_byte(
        field,
        "delimiter",
        raw.delimiter.as_deref().unwrap_or(","),
        problems,
    );
    let quote = match raw.quote.as_deref() {
        Some("") => Some(None),
        q => single_byte(field, "quote", q.unwrap_or("\""), problems).map(Some),
    };
    match (&raw.columns, raw.header) {
        (Some(_), true) => problems.push(format!(
            "{field} sets both columns and header = true; choose one"
        )),
        (None, false) => problems.push(format!("{field}: csv needs columns or header = true")),
        (None, true) if !file => problems.push(format!(
            "{field}.header = true needs a [[file]] block (only a file has a first line)"
        )),
        (Some(c), false) if c.is_empty() => problems.push(format!("{field}.columns is empty")),
        _ => {}
    }
    names_ok(field, raw.columns.as_deref(), problems);
    Some(ParserKind::Csv {
        columns: raw.columns.clone(),
        delimiter: delimiter?,
        quote: quote?,
    })
}

/// A `CSVTOJSON` table.
fn agent_csv(field: &str, raw: &RawParse, problems: &mut Vec<String>) -> Option<ParserKind> {
    let d = raw.delimiter.as_deref().unwrap_or(",");
    let delimiter = regex::Regex::new(d)
        .map_err(|e| {
            problems.push(format!(
                "{field}.delimiter {d:?} is not a regular expression: {e}"
            ))
        })
        .ok();
    let Some(field_names) = raw.field_names.clone().filter(|n| !n.is_empty()) else {
        problems.push(format!(
            "{field}: CSVTOJSON needs field_names (its customFieldNames)"
        ));
        return None;
    };
    names_ok(field, Some(&field_names), problems);
    Some(ParserKind::AgentCsv {
        field_names,
        delimiter: delimiter?,
    })
}

/// Key names are not empty and not repeated.
fn names_ok(field: &str, names: Option<&[String]>, problems: &mut Vec<String>) {
    let Some(names) = names else { return };
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() {
            problems.push(format!("{field}: key name {i} is empty"));
        } else if names[..i].contains(n) {
            problems.push(format!("{field}: key name {n:?} is repeated"));
        }
    }
}

/// One ASCII character.
fn single_byte(field: &str, key: &str, s: &str, problems: &mut Vec<String>) -> Option<u8> {
    match s.as_bytes() {
        [b] if b.is_ascii() && *b != b'\n' && *b != b'\r' => Some(*b),
        _ => {
            problems.push(format!("{field}.{key} {s:?} is not one ASCII character"));
            None
        }
    }
}

/// A block's `rename` and `timestamp_format`.
pub(super) fn json_keys(
    field: &str,
    rename: &BTreeMap<String, String>,
    timestamp_format: Option<&str>,
    problems: &mut Vec<String>,
) -> (Vec<(String, String)>, TimeFormat) {
    let mut targets: Vec<&str> = Vec::new();
    for (from, to) in rename {
        if from.is_empty() {
            problems.push(format!("{field}.rename has an empty key"));
        }
        if !to.is_empty() {
            if targets.contains(&to.as_str()) {
                problems.push(format!("{field}.rename gives two keys the name {to:?}"));
            }
            targets.push(to);
        }
    }
    let format = match timestamp_format {
        None => TimeFormat::Rfc3339,
        Some(f) => TimeFormat::parse(f).unwrap_or_else(|| {
            problems.push(format!(
                "{field}.timestamp_format {f:?} is neither rfc3339, epoch_s, epoch_ms, epoch_us nor a strftime format"
            ));
            TimeFormat::Rfc3339
        }),
    };
    (
        rename.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
        format,
    )
}

#[cfg(test)]
mod tests;
