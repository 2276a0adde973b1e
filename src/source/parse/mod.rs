//! Parsers: a line read into the fields of a JSON object record, per a block's
//! `parse` table (docs/parsing.md).
//!
//! State: a [`Parser`] belongs to one file (or socket, or journald block): it
//! holds the CSV header read from its file. Reading a line ([`Parser::read`])
//! gives its fields with `types` applied and the event time read from
//! `time_key`, or a [`Failure`] saying what did not match; the record is
//! written by the json formatter (`format`), which owns the added keys and the
//! failure policy. `shardline parse` runs this same path.

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::parse::{FieldType, ParseConfig, ParserKind, TimeFormat};
use crate::config::RecordFormat;

mod diagnose;
pub(crate) mod presets;
mod time;
pub(crate) mod try_it;
pub(crate) mod value;

pub(crate) use diagnose::{explain, reason_text};
pub(crate) use time::{read_time, EventTime};
use value::{Failure, Fields, Value};

/// A line read: its fields and what was off in them.
#[derive(Debug)]
pub(crate) struct Read<'a> {
    pub fields: Fields<'a>,
    /// The event time read from `time_key` (`None`: no `time_key`, or it could
    /// not be read, see `time_failed`).
    pub time: Option<EventTime>,
    /// `time_key` was set but its field was missing or unreadable.
    pub time_failed: bool,
    /// Fields whose value did not convert to their `types` (kept as strings).
    pub type_failures: u32,
}

/// One source's parser.
#[derive(Debug, Clone)]
pub(crate) struct Parser {
    config: Arc<ParseConfig>,
    /// CSV columns read from the file's first line (`header = true`).
    header: Option<Vec<String>>,
    /// The time key and format, the preset's default filled in.
    time: Option<(String, TimeFormat)>,
    /// The format is a preset's: a time written in RFC 3339 instead (rsyslog's
    /// high-precision syslog lines) is read too.
    time_fallback: bool,
}

impl Parser {
    pub(crate) fn new(config: Arc<ParseConfig>) -> Parser {
        let time_fallback = matches!(config.time, Some((_, None)));
        let time = config.time.as_ref().map(|(key, format)| {
            let format = format.clone().unwrap_or_else(|| match &config.kind {
                ParserKind::Preset { preset, .. } => preset
                    .time()
                    .and_then(|(_, f)| TimeFormat::parse(f))
                    .unwrap_or_default(),
                _ => TimeFormat::Rfc3339,
            });
            (key.clone(), format)
        });
        Parser {
            config,
            header: None,
            time,
            time_fallback,
        }
    }

    pub(crate) fn config(&self) -> &ParseConfig {
        &self.config
    }

    /// The field the event time is read from.
    pub(crate) fn time_key(&self) -> Option<&str> {
        self.time.as_ref().map(|(k, _)| k.as_str())
    }

    /// Whether the parser waits for a header line (CSV with `header = true`
    /// and none read yet).
    pub(crate) fn wants_header(&self) -> bool {
        matches!(self.config.kind, ParserKind::Csv { columns: None, .. }) && self.header.is_none()
    }

    /// Drops the header read (the file is read again from its first line).
    pub(crate) fn forget_header(&mut self) {
        self.header = None;
    }

    /// Takes the column names from a header line.
    pub(crate) fn set_header(&mut self, line: &str) -> Result<(), Failure> {
        let ParserKind::Csv {
            delimiter, quote, ..
        } = self.config.kind
        else {
            return Ok(());
        };
        let mut cells = Vec::new();
        presets::csv::Csv { delimiter, quote }.split(line, &mut cells)?;
        self.header = Some(cells.into_iter().map(Cow::into_owned).collect());
        Ok(())
    }

    /// Reads `line` (a CSV header line goes to [`Parser::set_header`] first).
    pub(crate) fn read<'a>(&'a self, line: &'a str) -> Result<Read<'a>, Failure> {
        let this = self;
        // Room for a preset's keys, so the fields are allocated once.
        let mut fields = Fields {
            entries: Vec::with_capacity(16),
        };
        this.fields(line, &mut fields)?;
        let type_failures = this.convert(&mut fields);
        let (time, time_failed) = match &this.time {
            None => (None, false),
            Some((key, format)) => match fields.get(key).and_then(|v| {
                read_time(v, format).or_else(|| {
                    this.time_fallback
                        .then(|| read_time(v, &TimeFormat::Rfc3339))
                        .flatten()
                })
            }) {
                Some(t) => (Some(t), false),
                None => (None, true),
            },
        };
        Ok(Read {
            fields,
            time,
            time_failed,
            type_failures,
        })
    }

    /// The parser's fields of `line`.
    fn fields<'a>(&'a self, line: &'a str, out: &mut Fields<'a>) -> Result<(), Failure> {
        match &self.config.kind {
            ParserKind::Preset {
                preset,
                field_names,
            } => {
                preset.parse(line, out)?;
                if let Some(names) = field_names {
                    for ((k, _), name) in out.entries.iter_mut().zip(names) {
                        *k = Cow::Borrowed(name.as_str());
                    }
                }
                Ok(())
            }
            ParserKind::Pattern { regex, field_names } => {
                let Some(caps) = regex.captures(line) else {
                    return Err(Failure::no_match("the pattern", 0));
                };
                match field_names {
                    Some(names) => {
                        for (i, name) in names.iter().enumerate() {
                            let v = caps
                                .get(i + 1)
                                .map_or(Value::Null, |m| Value::Str(Cow::Borrowed(m.as_str())));
                            out.push(name.as_str(), v);
                        }
                    }
                    None => {
                        for name in regex.capture_names().flatten() {
                            if let Some(m) = caps.name(name) {
                                out.push(name, Value::Str(Cow::Borrowed(m.as_str())));
                            }
                        }
                    }
                }
                Ok(())
            }
            ParserKind::Csv {
                columns,
                delimiter,
                quote,
            } => {
                let names = columns.as_ref().or(self.header.as_ref());
                let names = names.map(Vec::as_slice).unwrap_or_default();
                let mut cells = Vec::with_capacity(names.len());
                presets::csv::Csv {
                    delimiter: *delimiter,
                    quote: *quote,
                }
                .split(line, &mut cells)?;
                if cells.len() != names.len() {
                    return Err(Failure {
                        reason: "columns",
                        part: format!("{} columns where {} are named", cells.len(), names.len())
                            .into(),
                        at: 0,
                    });
                }
                for (name, cell) in names.iter().zip(cells) {
                    out.push(name.as_str(), Value::Str(cell));
                }
                Ok(())
            }
            ParserKind::AgentCsv {
                field_names,
                delimiter,
            } => {
                // The agent's CSVTOJSON: a missing column is null, an extra one
                // is left out.
                let cells = presets::csv::agent_split(line, delimiter);
                for (i, name) in field_names.iter().enumerate() {
                    let v = cells
                        .get(i)
                        .map_or(Value::Null, |c| Value::Str(Cow::Borrowed(*c)));
                    out.push(name.as_str(), v);
                }
                Ok(())
            }
        }
    }

    /// Applies `types`; returns how many values did not convert.
    fn convert(&self, fields: &mut Fields<'_>) -> u32 {
        let mut failed = 0;
        for (key, ty) in &self.config.types {
            for (_, v) in fields.entries.iter_mut().filter(|(k, _)| k == key) {
                match convert(v, *ty) {
                    Some(c) => *v = c,
                    None => failed += 1,
                }
            }
        }
        failed
    }
}

/// The lines a file's framer joins into one record for `format`'s parser.
pub(crate) fn join_of(format: &RecordFormat) -> Option<presets::container::Join> {
    use presets::container::Join;
    use presets::Preset;
    let RecordFormat::Json(j) = format else {
        return None;
    };
    match &j.parse.as_ref()?.kind {
        ParserKind::Preset {
            preset: Preset::Cri,
            ..
        } => Some(Join::Cri),
        ParserKind::Preset {
            preset: Preset::Docker,
            ..
        } => Some(Join::Docker),
        ParserKind::Csv {
            quote: Some(q),
            delimiter,
            ..
        } => Some(Join::CsvQuote(*q, *delimiter)),
        _ => None,
    }
}

/// `v` as `ty`; `None` when it does not convert (null stays null).
fn convert<'a>(v: &Value<'a>, ty: FieldType) -> Option<Value<'a>> {
    let text = match v {
        Value::Null => return Some(Value::Null),
        Value::Str(s) => s.trim(),
        Value::Int(i) => {
            return match ty {
                FieldType::Int => Some(Value::Int(*i)),
                FieldType::Float => Some(Value::Float(*i as f64)),
                FieldType::Bool => None,
                FieldType::String => Some(Value::Str(i.to_string().into())),
            }
        }
        other => {
            return match ty {
                FieldType::String => Some(Value::Str(render_scalar(other).into())),
                _ => None,
            }
        }
    };
    match ty {
        FieldType::Int => text.parse::<i64>().ok().map(Value::Int),
        FieldType::Float => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Float),
        FieldType::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(Value::Bool(true)),
            "false" | "no" | "off" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        FieldType::String => Some(v.clone()),
    }
}

/// A number, bool or JSON value as text.
fn render_scalar(v: &Value<'_>) -> String {
    match v {
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Json(j) => j.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Str(s) => s.to_string(),
        Value::Null => "null".to_owned(),
    }
}

#[cfg(test)]
mod tests;
