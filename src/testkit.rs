//! **Unstable.** The internals the agent's own tests, benchmarks and examples
//! drive directly: the Kinesis client trait (to put a fault-injecting or scripted
//! Kinesis behind the agent), the framed protocol's codec, the spool opened by
//! hand, the file tailer with a memory sink, shard maps, the batch MD5, the
//! parse presets, a block's parser and a source's json formatter. None of this
//! is part of the supported API: names and signatures change in any release
//! without notice. Programs that embed shardline use the items re-exported at
//! the crate's root and the documented modules.

/// The fleet simulation: the agents' pacing and shard map refresh on a paused
/// clock, against a simulated stream.
pub use crate::deliver::fleet_sim::{jain, simulate, FleetReport, FleetSpec};
/// The Kinesis client delivery calls, and the SDK's implementation of it.
pub use crate::deliver::kinesis::{
    BoxFuture, EntryResult, ErrorCode, Kinesis, KinesisError, SdkKinesis, SharedKinesis,
};
/// MD5 of many messages at once.
pub use crate::digest::digests;

use crate::agent::{Agent, AgentError};
use crate::config::Config;
use crate::producer::{LifecycleError, Producer, ProducerOptions};

/// Starts a producer that delivers through `kinesis` instead of the SDK client.
pub async fn start_producer(
    options: ProducerOptions,
    kinesis: SharedKinesis,
) -> Result<Producer, LifecycleError> {
    Producer::start_with(options, kinesis).await
}

/// Starts the whole agent with `kinesis` instead of the SDK client.
pub async fn start_agent(config: Config, kinesis: SharedKinesis) -> Result<Agent, AgentError> {
    Agent::start_with(config, kinesis).await
}
/// The shard map: open shards and their hash key ranges.
pub use crate::shard_map::{Shard, ShardMap};
/// The file tailer, driven by hand against a sink in memory.
pub use crate::source::file::{MemorySink, Tail};
/// The framed protocol's codec (requests, records, answers), as the socket
/// source reads and writes it.
pub use crate::source::socket::frame;
/// The spool, opened by hand; `open_at` opens one without a config.
pub use crate::spool::{open_at, Checkpoint, Spool, StreamSpool};

use crate::source::parse::presets::{Preset, ALL};
use crate::source::parse::value::Fields;

/// A parse preset, driven by hand (the parse benchmark reads lines with each).
#[derive(Debug, Clone, Copy)]
pub struct ParsePreset(Preset);

impl ParsePreset {
    /// Every preset, in the order the docs list them.
    pub fn all() -> impl Iterator<Item = ParsePreset> {
        ALL.into_iter().map(ParsePreset)
    }

    /// The name written in the config.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// Reads every line into one set of fields, cleared between lines as a
    /// parser reuses it: the number of fields read in all and the number of
    /// lines that did not parse.
    pub fn read_lines(self, lines: &[&str]) -> (usize, usize) {
        let mut fields = Fields::default();
        let (mut read, mut failed) = (0, 0);
        for line in lines {
            fields.clear();
            match self.0.parse(line, &mut fields) {
                Ok(()) => read += fields.entries.len(),
                Err(_) => failed += 1,
            }
        }
        (read, failed)
    }

    /// The part of the format `line` does not match, if it does not parse.
    pub fn failure(self, line: &str) -> Option<String> {
        let mut fields = Fields::default();
        self.0
            .parse(line, &mut fields)
            .err()
            .map(|e| e.part.into_owned())
    }
}

use crate::config::{Oversized, RecordFormat};
use crate::source::format::JsonFormatter;
use crate::source::parse::Parser;

/// A block's parser (its `parse` table: a preset, a pattern, csv or
/// CSVTOJSON), driven by hand: a line into fields, `types` applied and the
/// event time read, as a source's formatter reads it.
#[doc(hidden)]
#[derive(Debug)]
pub struct LineParser(Parser);

impl LineParser {
    /// The parser of `format` (`None` without a `parse` table).
    pub fn new(format: &RecordFormat) -> Option<LineParser> {
        match format {
            RecordFormat::Json(j) => j.parse.clone().map(|p| LineParser(Parser::new(p))),
            RecordFormat::Raw => None,
        }
    }

    /// Reads every line: the number of fields read in all and the number of
    /// lines that did not parse.
    pub fn read_lines(&self, lines: &[&str]) -> (usize, usize) {
        let (mut read, mut failed) = (0, 0);
        for line in lines {
            match self.0.read(line) {
                Ok(r) => read += r.fields.entries.len(),
                Err(_) => failed += 1,
            }
        }
        (read, failed)
    }
}

/// A source's json formatter (with the block's parser, if it has one), driven
/// by hand: what a file or socket source runs per line, line to record.
#[doc(hidden)]
#[derive(Debug)]
pub struct LineFormatter(JsonFormatter);

impl LineFormatter {
    /// The formatter of `format` for lines read from `source` (`None`: raw).
    pub fn new(format: &RecordFormat, source: &str) -> Option<LineFormatter> {
        JsonFormatter::for_source(format, source, "file[0]").map(LineFormatter)
    }

    /// Formats every line (without its newline) into records of at most 1 MiB,
    /// dropped as they are made: the bytes of records made.
    pub fn format_lines(&mut self, lines: &[&str]) -> usize {
        let mut bytes = 0;
        for line in lines {
            self.0
                .format(line.as_bytes(), 1 << 20, Oversized::Split, |r| {
                    bytes += r.len()
                });
        }
        bytes
    }

    /// The records of `line`, for a look at what is measured.
    pub fn records(&mut self, line: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.0
            .format(line.as_bytes(), 1 << 20, Oversized::Split, |r| {
                out.push(String::from_utf8_lossy(&r).into_owned())
            });
        out
    }
}
