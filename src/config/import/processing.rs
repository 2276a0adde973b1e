//! A flow's `dataProcessingOptions`, the agent's converter chain, turned into
//! what a `[[file]]` block says about its records: a `[file.parse]` table
//! (LOGTOJSON, CSVTOJSON), `format = "json"` with `fields`, `json_merge` and
//! `ec2_identity` (ADDMETADATA, ADDEC2METADATA), and a block-level `rename`
//! that leaves out the keys shardline adds and the agent's records did not
//! have, so that consumers read the same keys.

use serde_json::Value;

use super::super::parse::{Preset, PRESETS};
use super::java_regex;
use super::out::{self, Section};
use super::read::{self, strings, text, Object};
use super::Log;

/// The agent's log formats (`ProcessingUtilsFactory.LogFormat`) with the
/// number of keys each names; shardline's presets of the same names.
const ADDED_KEYS: [&str; 3] = ["timestamp", "host", "source"];

/// What the options make of a block's records.
#[derive(Default)]
pub(super) struct Record {
    /// `format = "json"` without a parse table.
    pub json: bool,
    pub json_merge: bool,
    pub ec2_identity: bool,
    /// Static `fields`.
    pub fields: Vec<(String, String)>,
    /// The block's `rename`, in order.
    pub rename: Vec<(String, String)>,
    /// The `[file.parse]` table.
    pub parse: Option<Section>,
    /// The `timestamp` key stays (ADDMETADATA with `timestamp`), under this name.
    keep_timestamp: Option<&'static str>,
    /// The line stays as `message`, under this name (ADDMETADATA).
    message_as: Option<&'static str>,
    /// The keys the parse makes (which win over the keys shardline adds).
    parsed_keys: Vec<String>,
    /// A preset reads the event time from its `timestamp` field.
    preset_timestamp: bool,
}

impl Record {
    fn is_json(&self) -> bool {
        self.json || self.parse.is_some()
    }
}

/// Reads the options of one flow into `file`'s comments and a [`Record`].
pub(super) fn plan(flow: &Object, place: &str, file: &mut Section, log: &mut Log) -> Record {
    let mut rec = Record::default();
    let list = match flow.get("dataProcessingOptions") {
        None => return rec,
        Some(Value::Array(list)) => list,
        Some(_) => {
            log.lost(
                file,
                place,
                "dataProcessingOptions is not a list: ignored (the agent refuses it)",
            );
            return rec;
        }
    };
    for (i, option) in list.iter().enumerate() {
        let Value::Object(o) = option else {
            log.lost(
                file,
                place,
                &format!("dataProcessingOptions[{i}] is not an object: ignored"),
            );
            continue;
        };
        let name = text(o, "optionName").unwrap_or_default();
        let place = format!("{place}: dataProcessingOptions[{i}]");
        check_keys(o, &name, &place, log);
        if text(o, "jsonFormat").as_deref() == Some("PRETTYPRINT") {
            file.comment(&format!("{name} jsonFormat PRETTYPRINT: shardline writes compact JSON, one record per line."));
        }
        match name.as_str() {
            "LOGTOJSON" | "CSVTOJSON" if rec.is_json() => log.lost(
                file,
                &place,
                &format!("{name} after another option that made JSON: no equivalent (a block parses its lines once)"),
            ),
            "LOGTOJSON" => log_to_json(o, &mut rec, file, log, &place),
            "CSVTOJSON" => csv_to_json(o, &mut rec, file, log, &place),
            "ADDEC2METADATA" => ec2_metadata(o, &mut rec, file, log, &place),
            "ADDMETADATA" => add_metadata(o, &mut rec, file, log, &place),
            "SINGLELINE" => log.lost(
                file,
                &place,
                &format!(
                    "SINGLELINE{}: no equivalent: shardline sends a multiline record with its line breaks (format = \"json\" escapes them as \\n inside one line)",
                    strings(o, "parseOptions").map(|p| format!(" {p:?}")).unwrap_or_default()
                ),
            ),
            "ADDBRACKETS" => log.lost(file, &place, "ADDBRACKETS (each record wrapped in [ and ]): no equivalent"),
            "USINGPLUGGIN" => log.lost(
                file,
                &place,
                &format!(
                    "USINGPLUGGIN (the converter class {}): no equivalent; a Firehose transformation Lambda function or the consumer can do its work",
                    text(o, "className").unwrap_or_else(|| "?".into())
                ),
            ),
            other => log.lost(file, &place, &format!("optionName {other:?} is not one the agent knows (it refuses the config): ignored")),
        }
    }
    finish(&mut rec, file, log, place);
    rec
}

/// Keys each option reads; any other is reported.
fn check_keys(o: &Object, name: &str, place: &str, log: &mut Log) {
    let own: &[&str] = match name {
        "LOGTOJSON" => &["logFormat", "matchPattern", "customFieldNames"],
        "CSVTOJSON" => &["customFieldNames", "delimiter"],
        "ADDEC2METADATA" => &[
            "logFormat",
            "matchPattern",
            "customFieldNames",
            "metadataTTL",
        ],
        "ADDMETADATA" => &["metadata", "timestamp"],
        "SINGLELINE" => &["parseOptions"],
        // A converter class of one's own may read any key.
        "USINGPLUGGIN" => return,
        _ => &[],
    };
    for key in read::unknown(o, &[&["optionName", "jsonFormat"], own]) {
        log.warn(format!(
            "{place}: key {key:?} is not one the agent reads for {name}: ignored"
        ));
    }
}

/// The keys shardline adds that the agent's records did not have, left out
/// with `rename`; the EC2 keys under the agent's names. A parsed key of the
/// same name wins over an added one and stays. With `json_merge` the line's
/// own keys are unknown, and a rename would take them too: a warning instead.
fn finish(rec: &mut Record, file: &mut Section, log: &mut Log, place: &str) {
    if !rec.is_json() {
        return;
    }
    let mut rename = Vec::new();
    if let Some(name) = rec.message_as {
        rename.push(("message".to_owned(), name.to_owned()));
    }
    if rec.json_merge {
        log.lost(file, place, "shardline adds timestamp, host and source to a JSON line that lacks them, which the agent did not; a rename would remove the line's own keys of those names too, so they stay");
    } else {
        for key in ADDED_KEYS
            .iter()
            .filter(|k| !rec.parsed_keys.iter().any(|p| p == *k))
        {
            let to = if *key == "timestamp" {
                rec.keep_timestamp.unwrap_or("")
            } else {
                ""
            };
            rename.push(((*key).to_owned(), to.to_owned()));
        }
    }
    if rec.preset_timestamp {
        log.lost(file, place, "the agent kept `timestamp` as the line wrote it; shardline reads it as the event time and writes it as timestamp_format says (RFC 3339 in UTC by default)");
    }
    if rec.ec2_identity {
        rename.push(("instance_id".to_owned(), "instanceId".to_owned()));
        rename.push(("az".to_owned(), "availabilityZone".to_owned()));
    }
    rename.retain(|(k, v)| k != v);
    rec.rename = rename;
}

/// LOGTOJSON: a preset of the agent's format, or its `matchPattern`.
fn log_to_json(o: &Object, rec: &mut Record, file: &mut Section, log: &mut Log, place: &str) {
    let format = text(o, "logFormat").unwrap_or_default();
    let Some(preset_keys) = Preset::from_name(&format).and_then(Preset::agent_keys) else {
        let known: Vec<&str> = PRESETS
            .iter()
            .filter(|p| p.is_agent())
            .map(|p| p.name())
            .collect();
        log.lost(file, place, &format!("logFormat {format:?} is not one of {} (the agent refuses it): lines are sent as they are", known.join(", ")));
        return;
    };
    let names = strings(o, "customFieldNames");
    let mut parse = Section::new("[file.parse]");
    parse.comment(&format!("LOGTOJSON {format}: each line becomes a JSON object of the parsed fields, as in the agent."));
    match text(o, "matchPattern") {
        Some(pattern) => {
            if let Some(why) = java_regex::unsupported(&pattern) {
                log.lost(file, place, &format!("matchPattern {pattern:?}: {why}; rewrite it as `pattern` in a [file.parse] table: lines are sent as they are until then"));
                return;
            }
            let Some(names) = names else {
                log.lost(file, place, "matchPattern without customFieldNames (the agent refuses it): lines are sent as they are");
                return;
            };
            parse.key_noted(
                "pattern",
                out::string(&format!("^(?:{pattern})$")),
                "matchPattern, anchored: the agent matched whole lines",
            );
            parse.key_noted(
                "field_names",
                out::strings(&names),
                "customFieldNames, by group position",
            );
        }
        None => {
            parse.key("preset", out::string(&format));
            rec.parsed_keys = preset_keys.iter().map(|k| (*k).to_owned()).collect();
            if let Some(names) = names {
                let keys = preset_keys.len();
                if names.len() != keys {
                    log.warn(format!("{place}: customFieldNames has {} names, {format} has {keys} fields (the agent refuses it)", names.len()));
                }
                parse.key_noted("field_names", out::strings(&names), "customFieldNames");
                rec.parsed_keys = names;
            }
            rec.preset_timestamp = rec.parsed_keys.iter().any(|k| k == "timestamp");
        }
    }
    parse.comment("The agent skipped a line that did not parse, silently; shardline drops it too, but counts it (shardline_parse_errors_total) and logs it. on_error = \"wrap\" would send it as a JSON record with the line and the parse error instead.");
    parse.key("on_error", out::string("drop"));
    rec.parse = Some(parse);
}

/// CSVTOJSON: the agent's column names and delimiter (a Java regex).
fn csv_to_json(o: &Object, rec: &mut Record, file: &mut Section, log: &mut Log, place: &str) {
    let Some(names) = strings(o, "customFieldNames") else {
        log.lost(
            file,
            place,
            "CSVTOJSON without customFieldNames (the agent refuses it): lines are sent as they are",
        );
        return;
    };
    let mut parse = Section::new("[file.parse]");
    parse.comment("CSVTOJSON: each line becomes a JSON object of its columns, as in the agent (no quoting; missing columns are null, extra ones ignored).");
    parse.key("preset", out::string("CSVTOJSON"));
    parse.key_noted("field_names", out::strings(&names), "customFieldNames");
    rec.parsed_keys = names.clone();
    if let Some(delimiter) = text(o, "delimiter").filter(|d| d != ",") {
        if let Some(why) = java_regex::unsupported(&delimiter) {
            log.lost(
                file,
                place,
                &format!("delimiter {delimiter:?}: {why}; lines are sent as they are"),
            );
            return;
        }
        parse.key_noted(
            "delimiter",
            out::string(&delimiter),
            "a regular expression, as in the agent",
        );
    }
    rec.parse = Some(parse);
}

/// ADDEC2METADATA: shardline's `ec2_identity`, with the agent's key names.
fn ec2_metadata(o: &Object, rec: &mut Record, file: &mut Section, log: &mut Log, place: &str) {
    rec.ec2_identity = true;
    if !rec.is_json() {
        rec.json = true;
        rec.json_merge = true;
        file.comment("ADDEC2METADATA took JSON object lines (others went as they were): json_merge adds the keys to such lines; shardline wraps any other line in a JSON record under `message`.");
    }
    let ttl = read::integer(o, "metadataTTL")
        .map(|s| format!(" It read them again every metadataTTL ({s} s); shardline reads them once at start."))
        .unwrap_or_default();
    log.lost(
        file,
        place,
        &format!("ADDEC2METADATA in part: ec2_identity adds instanceId, region and availabilityZone (renamed from instance_id and az below); the agent also added privateIp, instanceType, accountId, amiId, metadataTimestamp and tags, which have no equivalent.{ttl}"),
    );
}

/// ADDMETADATA: static `fields`, the line as `data`, the time as `ts`.
fn add_metadata(o: &Object, rec: &mut Record, file: &mut Section, log: &mut Log, place: &str) {
    if rec.is_json() {
        log.lost(file, place, "ADDMETADATA after an option that made JSON (the agent nested that JSON as text under \"data\"): no equivalent");
        return;
    }
    rec.json = true;
    rec.message_as = Some("data");
    if read::boolean(o, "timestamp") == Some(true) {
        rec.keep_timestamp = Some("ts");
    }
    match o.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.values().all(Value::is_string) => {
            for (k, v) in m {
                let v = v.as_str().unwrap_or_default().to_owned();
                if crate::config::BUILT_IN_KEYS.contains(&k.as_str()) {
                    log.lost(file, place, &format!("metadata key {k:?} is a key shardline's records have already: left out"));
                } else {
                    rec.fields.push((k.clone(), v));
                }
            }
        }
        Some(other) => log.lost(
            file,
            place,
            &format!("metadata {other}: shardline's fields are flat strings; add them by hand"),
        ),
    }
    log.lost(
        file,
        place,
        "ADDMETADATA: the agent wrote {\"ts\": ..., \"metadata\": {...}, \"data\": line}; shardline writes the metadata as top-level fields beside \"data\" (and \"ts\"): a consumer reading metadata.KEY reads KEY instead",
    );
}
