//! The command line of the benchmark's main role. Owns no state: `main` parses
//! [`Args`] and hands them to `deliver` or `backlog`; `endpoint` reads the
//! [`EndpointKind`] and the [`DestinationKind`], `config` the latter.

use clap::{Parser, ValueEnum};

#[derive(Parser)]
#[command(about = "End-to-end benchmark of the shardline agent")]
pub(crate) struct Args {
    /// Lines to send [default: 2000000; 10000000 with --backlog].
    pub(crate) lines: Option<u64>,
    /// Bytes per line, the newline included.
    #[arg(default_value_t = 256)]
    pub(crate) line_bytes: usize,
    /// Shards of the stream.
    #[arg(default_value_t = 4)]
    pub(crate) shards: u32,
    /// Where the lines come from.
    #[arg(long, value_enum, default_value_t = SourceKind::File)]
    pub(crate) source: SourceKind,
    /// What receives the PutRecords requests (Kinesis only).
    #[arg(long, value_enum, default_value_t = EndpointKind::Ack)]
    pub(crate) endpoint: EndpointKind,
    /// Where the agent delivers: a Kinesis data stream or a Firehose stream.
    #[arg(long, value_enum, default_value_t = DestinationKind::Kinesis)]
    pub(crate) destination: DestinationKind,
    /// Connections the socket client sends over (--source socket).
    #[arg(long, default_value_t = 1)]
    pub(crate) connections: usize,
    /// Backlog recovery: spool every line with the endpoint down, then drain.
    #[arg(long)]
    pub(crate) backlog: bool,
    /// With --backlog: SIGKILL the phase 1 agent instead of stopping it cleanly.
    #[arg(long, requires = "backlog")]
    pub(crate) crash: bool,
    /// With --backlog: seconds the full spool is held before the agent stops.
    #[arg(long, default_value_t = 5)]
    pub(crate) hold_secs: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SourceKind {
    File,
    Socket,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DestinationKind {
    /// `[kinesis] stream`: PutRecords to a stream of `SHARDS` shards.
    Kinesis,
    /// `[kinesis] delivery_stream`: PutRecordBatch of packed lines.
    Firehose,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EndpointKind {
    Ack,
    Emulator,
}
