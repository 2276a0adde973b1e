//! `shardline parse`: sample lines through a block's parser and json format,
//! the same formatter a source runs, printed record by record with why a line
//! failed, so a pattern is tried before it is deployed.

use std::io::{BufRead, Write};

use crate::config::{Config, Oversized, RecordFormat};
use crate::source::format::{JsonFormatter, Tried};
use crate::source::parse::join_of;

/// The presets, one table row each: name, what it reads, its keys, its time
/// key and format.
pub fn presets_table() -> String {
    let mut out = String::from(
        "| Preset | Reads | Keys | Event time (`time_key` as `time_format`) |\n|---|---|---|---|\n",
    );
    for p in crate::config::parse::PRESETS {
        out.push_str(&p.row());
        out.push('\n');
    }
    out.push_str("| `csv` | CSV (RFC 4180): columns named by `columns` or a header line | the columns' | none |\n");
    out.push_str("| `CSVTOJSON` | the Kinesis Agent's CSVTOJSON | `field_names` | none |\n");
    out
}

/// What the sample lines became.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TryReport {
    /// Lines read into records.
    pub parsed: u64,
    /// Lines the parser could not read.
    pub failed: u64,
    /// CSV header lines.
    pub headers: u64,
}

/// A block that can be tried: its name, record format, record limit and
/// `oversized`.
struct Block<'c> {
    name: &'c str,
    format: &'c RecordFormat,
    limit: usize,
    oversized: Oversized,
    /// A file's `multiline_start`.
    multiline: Option<&'c regex::bytes::Regex>,
}

/// The line blocks of `config`.
fn blocks(config: &Config) -> Vec<Block<'_>> {
    let files = config.files.iter().map(|f| Block {
        name: &f.block,
        format: &f.format,
        limit: f.max_record_bytes,
        oversized: f.oversized,
        multiline: f.multiline_start.as_ref(),
    });
    let sockets = config.sockets.iter().map(|s| Block {
        name: &s.block,
        format: &s.format,
        limit: crate::source::socket::JSON_RECORD_BYTES,
        oversized: Oversized::Truncate,
        multiline: None,
    });
    let journald = config.journald.iter().map(|j| Block {
        name: &j.block,
        format: &j.parse_format,
        limit: j.max_record_bytes,
        oversized: j.oversized,
        multiline: None,
    });
    files.chain(sockets).chain(journald).collect()
}

/// The block `source` names, or the one block with a parse table.
fn choose<'a, 'c>(all: &'a [Block<'c>], source: Option<&str>) -> Result<&'a Block<'c>, String> {
    Ok(match source {
        Some(name) => all.iter().find(|b| b.name == name).ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|b| b.name).collect();
            format!(
                "no block {name:?} in the config (it has {})",
                names.join(", ")
            )
        })?,
        None => {
            let parsing: Vec<_> = all
                .iter()
                .filter(|b| matches!(b.format, RecordFormat::Json(j) if j.parse.is_some()))
                .collect();
            match parsing.as_slice() {
                [one] => *one,
                [] => return Err("no block has a parse table; name one with --source".into()),
                _ => {
                    let names: Vec<_> = parsing.iter().map(|b| b.name).collect();
                    return Err(format!(
                        "several blocks parse ({}); name one with --source",
                        names.join(", ")
                    ));
                }
            }
        }
    })
}

/// Runs every line of `input` through the block named `source` (`file[0]`,
/// `socket[1]`, `journald[0]`; `None`: the one block with a `parse` table) and
/// writes what each became to `out`: `line N: ok` or `line N: failed: why`,
/// then its records, one JSON text per line.
pub fn try_lines(
    config: &Config,
    source: Option<&str>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<TryReport, String> {
    let all = blocks(config);
    let block = choose(&all, source)?;
    let Some(mut format) = JsonFormatter::for_source(block.format, "sample", block.name) else {
        return Err(format!(
            "{} sends lines raw (format = \"raw\", no parse table): nothing to try",
            block.name
        ));
    };
    let mut report = TryReport::default();
    let join = (block.name.starts_with("file["))
        .then(|| join_of(block.format))
        .flatten();
    let mut records = Records::default();
    for line in input.split(b'\n') {
        let mut line = line.map_err(|e| format!("cannot read the sample: {e}"))?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        records.line += 1;
        let starts = match (&join, block.multiline) {
            (Some(_), _) => records.pending.is_none(),
            (None, Some(start)) => start.is_match(&line),
            (None, None) => true,
        };
        if starts {
            if let Some((at, record)) = records.pending.take() {
                try_one(&mut format, block, at, &record, &mut report, out)?;
            }
            records.pending = Some((records.line, line));
        } else if let Some((_, record)) = records.pending.as_mut() {
            record.push(b'\n');
            record.extend_from_slice(&line);
        }
        let done = join.as_ref().is_some_and(|j| {
            records
                .pending
                .as_ref()
                .is_some_and(|(_, r)| !j.continues(r))
        });
        if done || (join.is_none() && block.multiline.is_none()) {
            if let Some((at, record)) = records.pending.take() {
                try_one(&mut format, block, at, &record, &mut report, out)?;
            }
        }
    }
    if let Some((at, record)) = records.pending.take() {
        try_one(&mut format, block, at, &record, &mut report, out)?;
    }
    Ok(report)
}

/// The record being joined from sample lines (its first line's number).
#[derive(Default)]
struct Records {
    line: usize,
    pending: Option<(usize, Vec<u8>)>,
}

/// Tries one record (one line, or lines joined as a file's framer joins them)
/// and writes what it became.
fn try_one(
    format: &mut JsonFormatter,
    block: &Block<'_>,
    at: usize,
    line: &[u8],
    report: &mut TryReport,
    out: &mut dyn Write,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot write the output: {e}");
    let records = match format.try_line(line, block.limit, block.oversized) {
        Tried::Header => {
            report.headers += 1;
            writeln!(out, "line {at}: header (names the columns)").map_err(io)?;
            return Ok(());
        }
        Tried::Records(records, notes) => {
            report.parsed += 1;
            match notes.is_empty() {
                true => writeln!(out, "line {at}: ok"),
                false => writeln!(out, "line {at}: ok, but {}", notes.join("; ")),
            }
            .map_err(io)?;
            records
        }
        Tried::Failed { why, records } => {
            report.failed += 1;
            let sent = if records.is_empty() {
                "dropped"
            } else {
                "sent as"
            };
            writeln!(out, "line {at}: failed: {why}; {sent}").map_err(io)?;
            records
        }
    };
    for r in records {
        out.write_all(&r).map_err(io)?;
        out.write_all(b"\n").map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_docs_list_every_preset_with_its_keys() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/parsing.md"))
            .unwrap();
        assert!(
            doc.contains(&super::presets_table()),
            "docs/parsing.md's preset table differs from `shardline parse --presets`:\n{}",
            super::presets_table()
        );
        for p in crate::config::parse::PRESETS {
            assert!(doc.contains(&format!("### `{}`", p.name())), "{}", p.name());
        }
    }
}
