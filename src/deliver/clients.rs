//! The clients delivery uses, chosen by stream name: one [`SdkKinesis`] for the
//! default destination, one for each stream with a destination of its own, and
//! one [`SdkFirehose`] for each Firehose stream (`firehose:NAME`). Made once at
//! start-up by [`connect`] (the agent and the producer call it);
//! each client's assumed-role credentials come from aws-config's
//! `AssumeRoleProvider`, which caches and refreshes them before they expire.

use std::collections::HashMap;
use std::sync::Arc;

use super::destination::Destination;
use super::firehose::{self, SdkFirehose};
use super::kinesis::{
    BoxFuture, ClientOptions, EntryResult, Kinesis, KinesisError, SdkKinesis, SharedKinesis,
};
use crate::aggregate::Encoded;
use crate::shard_map::Shard;

/// The client delivery uses for `streams`: one [`SdkKinesis`] for the default
/// destination, one for each Kinesis stream that has its own, and one
/// [`SdkFirehose`] for each Firehose stream (to its own destination, else the
/// default one).
pub(crate) async fn connect(options: &ClientOptions, streams: &[String]) -> SharedKinesis {
    let default: SharedKinesis = Arc::new(SdkKinesis::new(options).await);
    let own = |s: &str| options.streams.iter().any(|(o, _)| o == s);
    let inherited = streams
        .iter()
        .filter(|s| firehose::stream_name(s).is_some() && !own(s))
        .map(|s| (s.clone(), options.destination.clone()));
    let all: Vec<(String, Destination)> =
        options.streams.iter().cloned().chain(inherited).collect();
    if all.is_empty() {
        return default;
    }
    let mut clients = HashMap::new();
    for (stream, destination) in &all {
        let client: SharedKinesis = if firehose::stream_name(stream).is_some() {
            tracing::info!(stream = %stream, destination = %destination.describe(), "Firehose stream");
            Arc::new(SdkFirehose::to(destination, options).await)
        } else {
            tracing::info!(stream = %stream, destination = %destination.describe(), "Stream has its own destination");
            Arc::new(SdkKinesis::to(destination, options).await)
        };
        clients.insert(stream.clone(), client);
    }
    Arc::new(PerStream {
        default,
        streams: clients,
    })
}

/// Kinesis clients chosen by stream name.
pub(crate) struct PerStream {
    pub default: SharedKinesis,
    pub streams: HashMap<String, SharedKinesis>,
}

impl PerStream {
    fn client(&self, stream: &str) -> &SharedKinesis {
        self.streams.get(stream).unwrap_or(&self.default)
    }
}

impl Kinesis for PerStream {
    fn list_shards<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Shard>, KinesisError>> {
        self.client(stream).list_shards(stream)
    }

    fn max_record_bytes<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<usize>, KinesisError>> {
        self.client(stream).max_record_bytes(stream)
    }

    fn put_records<'a>(
        &'a self,
        stream: &'a str,
        entries: Vec<Encoded>,
    ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>> {
        self.client(stream).put_records(stream, entries)
    }
}
