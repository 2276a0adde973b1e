//! `shardline parse`: sample lines through a block's parser and json format,
//! the same formatter a source runs, printed record by record with why a line
//! failed, so a pattern is tried before it is deployed.

use std::io::{BufRead, Write};

use crate::config::{Config, Oversized, RecordFormat};
use crate::source::format::{JsonFormatter, Tried};

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
}

/// The line blocks of `config`.
fn blocks(config: &Config) -> Vec<Block<'_>> {
    let files = config.files.iter().map(|f| Block {
        name: &f.block,
        format: &f.format,
        limit: f.max_record_bytes,
        oversized: f.oversized,
    });
    let sockets = config.sockets.iter().map(|s| Block {
        name: &s.block,
        format: &s.format,
        limit: crate::source::socket::JSON_RECORD_BYTES,
        oversized: Oversized::Truncate,
    });
    let journald = config.journald.iter().map(|j| Block {
        name: &j.block,
        format: &j.parse_format,
        limit: j.max_record_bytes,
        oversized: j.oversized,
    });
    files.chain(sockets).chain(journald).collect()
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
    let block = match source {
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
    };
    let Some(mut format) = JsonFormatter::for_source(block.format, "sample", block.name) else {
        return Err(format!(
            "{} sends lines raw (format = \"raw\", no parse table): nothing to try",
            block.name
        ));
    };
    let mut report = TryReport::default();
    let io = |e: std::io::Error| format!("cannot write the output: {e}");
    for (i, line) in input.split(b'\n').enumerate() {
        let mut line = line.map_err(|e| format!("cannot read the sample: {e}"))?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let records = match format.try_line(&line, block.limit, block.oversized) {
            Tried::Header => {
                report.headers += 1;
                writeln!(out, "line {}: header (names the columns)", i + 1).map_err(io)?;
                continue;
            }
            Tried::Records(records, notes) => {
                report.parsed += 1;
                match notes.is_empty() {
                    true => writeln!(out, "line {}: ok", i + 1),
                    false => writeln!(out, "line {}: ok, but {}", i + 1, notes.join("; ")),
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
                writeln!(out, "line {}: failed: {why}; {sent}", i + 1).map_err(io)?;
                records
            }
        };
        for r in records {
            out.write_all(&r).map_err(io)?;
            out.write_all(b"\n").map_err(io)?;
        }
    }
    Ok(report)
}
