//! Where the agent delivers in this run (`--destination`): the Kinesis emulator
//! and its stream, or the Firehose endpoint. [`Destination`] owns the one in use
//! and is all `main` and `chaos` see of it: the endpoint, the `[kinesis]` lines
//! naming the stream, the faults (a burst, an outage, a reshard for Kinesis
//! only), the restore at the end and the read back.

use std::time::Duration;

use clap::ValueEnum;

use crate::chaos::Fault;
use crate::firehose::{FirehoseEndpoint, DELIVERY_STREAM, REQUEST_TIMEOUT_MS};
use crate::kinesis::{Emulator, STREAM};
use crate::shared::Shared;
use crate::tally::{read_back_settled, Tally};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DestinationKind {
    /// A Kinesis data stream in the emulator, resharded now and then.
    Kinesis,
    /// A Firehose stream (Direct PUT) at the soak's own endpoint.
    Firehose,
}

/// The destination of the run.
pub(crate) enum Destination {
    Kinesis {
        emulator: Emulator,
        client: aws_sdk_kinesis::Client,
    },
    Firehose(FirehoseEndpoint),
}

impl Destination {
    /// Starts the endpoint (and, for Kinesis, creates the stream).
    pub(crate) async fn start(kind: DestinationKind) -> Result<Destination, String> {
        Ok(match kind {
            DestinationKind::Kinesis => {
                let (emulator, client) = Emulator::start_with_stream().await?;
                Destination::Kinesis { emulator, client }
            }
            DestinationKind::Firehose => Destination::Firehose(FirehoseEndpoint::start().await?),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn endpoint(&self) -> &str {
        match self {
            Destination::Kinesis { emulator, .. } => &emulator.endpoint,
            Destination::Firehose(f) => &f.endpoint,
        }
    }

    /// The `[kinesis]` lines that name the stream. A Firehose stream packs lines
    /// into records of 64 KiB, so that requests carry several records and a
    /// per-record fault hits some of them; its requests time out after
    /// `REQUEST_TIMEOUT_MS`, which late answers outlast.
    pub(crate) fn config_lines(&self) -> String {
        match self {
            Destination::Kinesis { .. } => format!("stream = \"{STREAM}\"\n"),
            Destination::Firehose(_) => format!(
                "delivery_stream = \"{DELIVERY_STREAM}\"\npacking_max_bytes = 65536\n\
                 request_timeout_ms = {REQUEST_TIMEOUT_MS}\n"
            ),
        }
    }

    /// The fault plan for this destination: a Firehose stream has no shards to
    /// reshard.
    pub(crate) fn plan(&self, mut plan: Vec<(Duration, Fault)>) -> Vec<(Duration, Fault)> {
        if let Destination::Firehose(_) = self {
            plan.retain(|(_, f)| !matches!(f, Fault::Reshard));
        }
        plan
    }

    /// The Kinesis client of the emulator, for reshards.
    pub(crate) fn kinesis(&self) -> Option<&aws_sdk_kinesis::Client> {
        match self {
            Destination::Kinesis { client, .. } => Some(client),
            Destination::Firehose(_) => None,
        }
    }

    /// A burst of faults, counted in `state`.
    pub(crate) fn inject(&self, state: &Shared) {
        match self {
            Destination::Kinesis { emulator, .. } => emulator.inject(state),
            Destination::Firehose(f) => f.inject(state),
        }
    }

    /// Cuts every connection while `on`.
    pub(crate) fn outage(&self, on: bool) {
        match self {
            Destination::Kinesis { emulator, .. } => emulator
                .faults
                .outage
                .store(on, std::sync::atomic::Ordering::Release),
            Destination::Firehose(f) => f.outage(on),
        }
    }

    /// Ends every fault.
    pub(crate) fn restore(&self) {
        match self {
            Destination::Kinesis { emulator, .. } => emulator.restore(),
            Destination::Firehose(f) => f.restore(),
        }
    }

    /// What arrived: the tally, the records that carried it (Kinesis or Firehose
    /// records, as [`Destination::records_name`] says) and, for Firehose, the
    /// duplicates by cause.
    pub(crate) async fn read_back(
        &self,
        state: &Shared,
        drained: bool,
    ) -> Result<(Tally, u64, Vec<(String, u64)>), String> {
        match self {
            Destination::Kinesis { client, .. } => {
                let (tally, records) = read_back_settled(client, state, drained).await?;
                Ok((tally, records, Vec::new()))
            }
            Destination::Firehose(f) => {
                let (tally, records) = f.read_back();
                let stops = state.stops.lock().expect("not poisoned").clone();
                Ok((tally, records, f.duplicate_causes(&stops)))
            }
        }
    }

    /// What the records that carry the lines are called.
    pub(crate) fn records_name(&self) -> &'static str {
        match self {
            Destination::Kinesis { .. } => "Kinesis records",
            Destination::Firehose(_) => "Firehose records",
        }
    }
}
