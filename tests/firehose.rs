//! The Amazon Data Firehose destination: the agent against moto (Firehose into
//! S3, read back through S3) and against a fault-injecting Firehose endpoint
//! (`util::firehose`), in process and as the real binary.
//!
//! - [`support`]: the fault endpoint and moto themselves, before anything is
//!   built on them.
//! - [`moto`]: a file to a delivery stream, packing on and off, read back from S3.
//! - [`faults`]: per-record and whole-request errors, slow answers and cut
//!   connections: nothing lost, every duplicate accounted for.
//! - [`sigkill`]: the binary killed mid-batch and started again on its spool.
//! - [`mixed`]: a Kinesis stream and a Firehose stream in one agent, each going
//!   on while the other's endpoint refuses everything.
//! - [`validate`]: `shardline validate` naming the key of each Firehose mistake.
//!
//! This module holds what they share: lines that say where they come from, how
//! delivered data is cut back into lines, and the accounting of what arrived.

mod faults;
mod mixed;
mod moto;
mod sigkill;
mod support;
mod validate;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use crate::util::Workdir;

/// How long a test waits for delivery before it fails.
const LONG: Duration = Duration::from_secs(120);

/// The name of Firehose stream `name` inside the agent (metrics, spool, status).
fn internal(name: &str) -> String {
    format!("firehose:{name}")
}

/// Line `i` of source `tag`: `tag-000000042-` padded with dots to a length
/// that varies from line to line (30 to 329 bytes).
fn line(tag: &str, i: usize) -> String {
    let mut l = format!("{tag}-{i:09}-");
    let len = 30 + (i * 37) % 300;
    while l.len() < len {
        l.push('.');
    }
    l
}

/// (tag, number) of a line made by [`line`].
fn parse_line(l: &[u8]) -> Option<(&str, usize)> {
    let text = std::str::from_utf8(l).ok()?;
    let mut parts = text.splitn(3, '-');
    let tag = parts.next()?;
    let n = parts.next()?.parse().ok()?;
    Some((tag, n))
}

/// Appends lines `range` of `tag` to the file at `path`; returns them.
fn append_lines(path: &Path, tag: &str, range: std::ops::Range<usize>) -> Vec<Bytes> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = Vec::new();
    let mut sent = Vec::new();
    for i in range {
        let l = line(tag, i);
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
        sent.push(Bytes::from(l));
    }
    f.write_all(&buf).unwrap();
    sent
}

/// The lines of delivered Firehose data: every record, packed or not, ends in
/// "\n", so data concatenated as S3 holds it is a sequence of whole lines.
fn split_lines(data: &[u8]) -> Vec<Bytes> {
    assert!(
        data.is_empty() || data.ends_with(b"\n"),
        "delivered data does not end in a newline: {:?}",
        String::from_utf8_lossy(&data[data.len().saturating_sub(80)..])
    );
    data.split(|b| *b == b'\n')
        .take(data.iter().filter(|b| **b == b'\n').count())
        .map(Bytes::copy_from_slice)
        .collect()
}

/// Checks that every line sent arrived and nothing else did; returns how many
/// times each line arrived more than once.
fn duplicates(sent: &[Bytes], got: &[Bytes]) -> HashMap<Bytes, u64> {
    let mut count: HashMap<Bytes, u64> = HashMap::new();
    for g in got {
        *count.entry(g.clone()).or_default() += 1;
    }
    let missing: Vec<&Bytes> = sent.iter().filter(|s| !count.contains_key(*s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} lines never arrived, the first {:?}",
        missing.len(),
        sent.len(),
        missing.first()
    );
    let unique: std::collections::HashSet<&Bytes> = sent.iter().collect();
    let strangers: Vec<&Bytes> = count.keys().filter(|k| !unique.contains(k)).collect();
    assert!(
        strangers.is_empty(),
        "{} lines arrived that were never sent, the first {:?}",
        strangers.len(),
        strangers.first()
    );
    count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(l, n)| (l, n - 1))
        .collect()
}

/// An in-process agent's config: `[kinesis]` with the `kinesis` keys (its
/// destination and endpoint; a 10 s request time limit unless they set one),
/// fast linger, the spool in `work`, then `rest` (sources and
/// `[[destination]]` blocks).
fn agent_config(work: &Workdir, kinesis: &str, rest: &str) -> shardline::config::Config {
    let timeout = if kinesis.contains("request_timeout_ms") {
        ""
    } else {
        "request_timeout_ms = 10000\n"
    };
    let text = format!(
        "shutdown_timeout_secs = 10\n[kinesis]\nregion = \"us-east-1\"\n\
         {timeout}{kinesis}\n[delivery]\nmax_buffered_time_ms = 20\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\nflush_interval_ms = 50\n{rest}",
        work.spool().display()
    );
    shardline::config::parse(&text, Path::new("test.toml"))
        .unwrap_or_else(|e| panic!("the config is refused: {e}\n{text}"))
}
