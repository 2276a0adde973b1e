//! The presets cross-checked against parsers that are not shardline's: for
//! each format, sample lines ([`samples`]) go through the real binary
//! (`shardline parse`) and through `parse/crosscheck.py` (apache-log-parser,
//! syslog-rfc5424-parser, syslogmp, logfmt and Python's csv module from
//! PyPI, and the Kinesis Agent's own patterns matched with Python's `re`),
//! and the two must take and refuse the same lines and give the same values
//! for the keys both have. Every disagreement on purpose is listed in
//! [`known`], with the side the format's spec says is right; any other fails.
//!
//! The Python parsers live in the virtual environment `.ci/test` installs
//! (`target/moto-venv`, beside moto); without them the tests fail.

mod known;
mod samples;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::util::moto::venv;
use crate::util::shardline_command;

/// A line as a parser left it: its keys, or why it was refused.
type Outcome = Result<Map<String, Value>, String>;

/// One format to check: the preset, the sample lines, and the extra keys of
/// the `[file.parse]` table.
struct Case {
    preset: &'static str,
    lines: &'static [&'static str],
    parse_keys: &'static str,
    /// The third argument of `crosscheck.py` (the CSV columns).
    columns: Option<&'static str>,
}

impl Case {
    fn new(preset: &'static str, lines: &'static [&'static str]) -> Case {
        Case {
            preset,
            lines,
            parse_keys: "",
            columns: None,
        }
    }
}

/// The venv's Python, or a failure that says how to get it.
fn python() -> PathBuf {
    let python = venv().join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run .ci/test, which installs apache-log-parser, \
         syslog-rfc5424-parser, syslogmp and logfmt into that virtual environment",
        python.display()
    );
    python
}

/// The records `shardline parse` made of `sample`, by line number.
fn shardline(case: &Case, dir: &Path, sample: &Path) -> BTreeMap<usize, Outcome> {
    let config = dir.join("shardline.toml");
    let text = format!(
        "[kinesis]\nstream = \"s\"\nregion = \"eu-west-1\"\n\n[spool]\ndir = {spool:?}\n\n\
         [[file]]\ninclude = [{sample:?}]\nrename = {{ {rename} }}\n\n\
         [file.parse]\npreset = {preset:?}\non_error = \"drop\"\n{keys}\n",
        spool = dir.join("spool"),
        sample = sample,
        rename = added_keys_left_out(case.preset),
        preset = case.preset,
        keys = case.parse_keys,
    );
    std::fs::write(&config, text).unwrap();
    let out = shardline_command()
        .arg("parse")
        .arg("--config")
        .arg(&config)
        .args(["--source", "file[0]"])
        .arg(sample)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "shardline parse ({}) failed: {}\n{stdout}",
        case.preset,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut records = BTreeMap::new();
    let mut current: Option<usize> = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("line ") {
            let (n, what) = rest.split_once(": ").unwrap();
            let n: usize = n.parse().unwrap();
            let outcome = match what.strip_prefix("failed: ") {
                Some(why) => Err(why.to_string()),
                None => Ok(Map::new()),
            };
            records.insert(n, outcome);
            current = Some(n);
        } else if line.starts_with('{') {
            let n = current.expect("a record follows its line");
            let Some(Ok(fields)) = records.get_mut(&n) else {
                panic!("a record for failed line {n} of {}: {line}", case.preset);
            };
            *fields = serde_json::from_str(line).unwrap();
        }
    }
    records
}

/// The `rename` that leaves out the keys every json record gets, so that
/// records hold only the parsed keys: `timestamp`, `host` and `source`, but
/// for those the preset writes itself (renaming one to `""` would leave out
/// the parsed value, which wins over the added one).
fn added_keys_left_out(preset: &str) -> String {
    let own: &[&str] = match preset {
        "apache_common" | "apache_combined" | "syslog_rfc3164" | "syslog_rfc5424"
        | "COMMONAPACHELOG" | "COMBINEDAPACHELOG" => &["host"],
        "APACHEERRORLOG" | "SYSLOG" | "RFC3339SYSLOG" => &["timestamp"],
        _ => &[],
    };
    ["timestamp", "host", "source"]
        .iter()
        .filter(|k| !own.contains(k))
        .map(|k| format!("{k} = \"\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `crosscheck.py` made of `sample`, by line number.
fn independent(case: &Case, sample: &Path) -> BTreeMap<usize, Outcome> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parse/crosscheck.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(case.preset)
        .arg(sample)
        .args(case.columns)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "crosscheck.py {} failed: {}\nIts parsers are installed into target/moto-venv \
         by .ci/test: run it.",
        case.preset,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .map(|line| {
            let mut fields: Map<String, Value> = serde_json::from_str(line).unwrap();
            let n = fields.remove("line").unwrap().as_u64().unwrap() as usize;
            let outcome = match fields.remove("error") {
                Some(why) => Err(why.as_str().unwrap().to_string()),
                None => Ok(fields),
            };
            (n, outcome)
        })
        .collect()
}

/// How the two parsers differ on one line: `accept` when one takes it and
/// the other refuses it, else the keys whose values differ (empty: they
/// agree).
fn differences(preset: &str, ours: &Outcome, theirs: &Outcome) -> BTreeSet<String> {
    match (ours, theirs) {
        (Err(_), Err(_)) => BTreeSet::new(),
        (Ok(_), Err(_)) | (Err(_), Ok(_)) => BTreeSet::from(["accept".to_string()]),
        (Ok(ours), Ok(theirs)) => theirs
            .iter()
            .filter(|(key, value)| derived(preset, key, ours) != **value)
            .map(|(key, _)| key.clone())
            .collect(),
    }
}

/// Our value for the independent parser's `key`: the record's value (a key
/// the record leaves out is null), or one made of several keys.
fn derived(preset: &str, key: &str, ours: &Map<String, Value>) -> Value {
    if preset == "syslog_rfc3164" && key == "tag_and_message" {
        // syslogmp leaves the tag in the message.
        let text = |k| ours.get(k).and_then(Value::as_str).map(str::to_owned);
        let message = text("message").unwrap_or_default();
        let Some(ident) = text("ident") else {
            return Value::String(message);
        };
        let pid = match ours.get("pid") {
            Some(Value::Number(n)) => format!("[{n}]"),
            Some(Value::String(s)) => format!("[{s}]"),
            _ => String::new(),
        };
        return Value::String(format!("{ident}{pid}: {message}"));
    }
    ours.get(key).cloned().unwrap_or(Value::Null)
}

/// Runs one case and checks every line against [`known::DIFFERENCES`];
/// prints the figures the docs give: records, agreements, differences.
fn check(case: &Case) {
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample.log");
    let mut text = case.lines.join("\n");
    text.push('\n');
    std::fs::write(&sample, text).unwrap();
    let ours = shardline(case, dir.path(), &sample);
    let theirs = independent(case, &sample);
    let numbers: BTreeSet<usize> = ours.keys().chain(theirs.keys()).copied().collect();
    let mut failures = Vec::new();
    let (mut agree, mut differ) = (0, 0);
    for n in &numbers {
        let (Some(o), Some(t)) = (ours.get(n), theirs.get(n)) else {
            failures.push(format!("line {n}: only one parser read it as a record"));
            continue;
        };
        let found = differences(case.preset, o, t);
        let listed: Vec<&known::Known> = known::DIFFERENCES
            .iter()
            .filter(|d| d.format == case.preset && d.line == *n)
            .collect();
        let expected: BTreeSet<String> = listed
            .iter()
            .flat_map(|d| d.keys.iter().map(|k| k.to_string()))
            .collect();
        if found.is_empty() {
            agree += 1;
        } else {
            differ += 1;
        }
        if found != expected {
            failures.push(format!(
                "line {n}: differ on {found:?}, listed {expected:?} ({})\n  line: {:?}\n  \
                 shardline: {o:?}\n  independent: {t:?}",
                listed.iter().map(|d| d.why).collect::<Vec<_>>().join("; "),
                case.lines.get(n - 1).unwrap_or(&"")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} disagreement(s) not in tests/parse/known.rs:\n{}",
        case.preset,
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{}: {} records, {agree} agree, {differ} known differences",
        case.preset,
        numbers.len()
    );
}

#[test]
fn apache_common() {
    check(&Case::new("apache_common", samples::APACHE_COMMON));
}

#[test]
fn apache_combined() {
    check(&Case::new("apache_combined", samples::APACHE_COMBINED));
}

#[test]
fn syslog_rfc3164() {
    check(&Case::new("syslog_rfc3164", samples::RFC3164));
}

#[test]
fn syslog_rfc5424() {
    check(&Case::new("syslog_rfc5424", samples::RFC5424));
}

#[test]
fn logfmt() {
    check(&Case::new("logfmt", samples::LOGFMT));
}

#[test]
fn csv() {
    check(&Case {
        parse_keys: "columns = [\"a\", \"b\", \"c\"]",
        columns: Some("a,b,c"),
        ..Case::new("csv", samples::CSV)
    });
}

#[test]
fn agent_common_apache() {
    check(&Case::new("COMMONAPACHELOG", samples::APACHE_COMMON));
}

#[test]
fn agent_combined_apache() {
    check(&Case::new("COMBINEDAPACHELOG", samples::APACHE_COMBINED));
}

#[test]
fn agent_apache_error() {
    check(&Case::new("APACHEERRORLOG", samples::APACHE_ERROR));
}

#[test]
fn agent_syslog() {
    check(&Case::new("SYSLOG", samples::AGENT_SYSLOG));
}

#[test]
fn agent_rfc3339_syslog() {
    check(&Case::new("RFC3339SYSLOG", samples::AGENT_RFC3339_SYSLOG));
}
