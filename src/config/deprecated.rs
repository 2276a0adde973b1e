//! Former spellings: keys and values renamed so that every block speaks one
//! vocabulary (`max_record_bytes`, `{ field = … }`, `format = "raw"`) and
//! delivery the Kinesis one (`max_buffered_time_ms`, `rate_limit_percent`).
//! They still load, into the same config as the new spelling, until 0.4; each
//! one found is a hint with the new spelling, logged at WARN by `run` and
//! printed by `validate`.

use toml::{Table, Value};

/// The hints for every former spelling in `table` (the whole config, its
/// snippets merged in).
pub(super) fn hints(table: &Table) -> Vec<String> {
    let mut out = Vec::new();
    let blocks = |name: &str| -> Vec<(usize, &Table)> {
        table
            .get(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_table).enumerate().collect())
            .unwrap_or_default()
    };
    for (i, s) in blocks("socket") {
        renamed(
            &mut out,
            &format!("socket[{i}]"),
            s,
            "max_line_bytes",
            "max_record_bytes",
        );
    }
    for (i, f) in blocks("file") {
        let block = format!("file[{i}]");
        match f.get("partition_key") {
            Some(Value::String(s)) if s == "random" => out.push(format!(
                "{block}.partition_key = \"random\" draws one key per batch of lines (up to 64 KiB): write \"random_per_batch\" for the same, or \"random_per_record\" for a key per record"
            )),
            Some(Value::Table(t)) => {
                if let Some(v) = t.get("json_field") {
                    out.push(hint(&format!("{block}.partition_key"), "{ json_field = … }", &format!("partition_key = {{ field = {v} }}")));
                }
            }
            _ => {}
        }
    }
    for (i, j) in blocks("journald") {
        let block = format!("journald[{i}]");
        if j.get("format").and_then(Value::as_str) == Some("message") {
            out.push(hint(
                &format!("{block}.format"),
                "\"message\"",
                "format = \"raw\"",
            ));
        }
        if let Some(v @ Value::Array(_)) = j.get("fields") {
            out.push(hint(
                &format!("{block}.fields"),
                "as a list of journal fields",
                &format!("journal_fields = {v}"),
            ));
        }
    }
    if let Some(d) = table.get("delivery").and_then(Value::as_table) {
        renamed(&mut out, "delivery", d, "linger_ms", "max_buffered_time_ms");
        if let Some(f) = d.get("shard_rate_factor").and_then(value_f64) {
            out.push(hint(
                "delivery.shard_rate_factor",
                "(a fraction)",
                &format!("rate_limit_percent = {}", f * 100.0),
            ));
        }
    }
    out
}

/// A key renamed, its value unchanged.
fn renamed(out: &mut Vec<String>, block: &str, t: &Table, old: &str, new: &str) {
    if let Some(v) = t.get(old) {
        out.push(hint(&format!("{block}.{old}"), "", &format!("{new} = {v}")));
    }
}

fn hint(key: &str, written: &str, new: &str) -> String {
    let written = if written.is_empty() {
        String::new()
    } else {
        format!(" {written}")
    };
    format!("{key}{written} is a former spelling (read until 0.4): write {new}")
}

fn value_f64(v: &Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

#[cfg(test)]
mod tests;
