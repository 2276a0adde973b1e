//! **Unstable.** The internals the agent's own tests, benchmarks and examples
//! drive directly: the Kinesis client trait (to put a fault-injecting or scripted
//! Kinesis behind the agent), the framed protocol's codec, the spool opened by
//! hand, the file tailer with a memory sink, shard maps and the batch MD5. None of
//! this is part of the supported API: names and signatures change in any release
//! without notice. Programs that embed shardline use the items re-exported at the
//! crate's root and the documented modules.

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
