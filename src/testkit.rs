//! **Unstable.** The internals the agent's own tests, benchmarks and examples
//! drive directly: the Kinesis client trait (to put a fault-injecting or scripted
//! Kinesis behind the agent), the framed protocol's codec, the spool opened by
//! hand, the file tailer with a memory sink, shard maps, the batch MD5 and the
//! parse presets. None of this is part of the supported API: names and
//! signatures change in any release without notice. Programs that embed
//! shardline use the items re-exported at the crate's root and the documented
//! modules.

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
