//! The Kinesis clients delivery uses, chosen by stream name: one [`SdkKinesis`]
//! for the default destination and one for each stream with a destination of its
//! own. Made once at start-up by [`connect`] (the agent and the producer call it);
//! each client's assumed-role credentials come from aws-config's
//! `AssumeRoleProvider`, which caches and refreshes them before they expire.

use std::collections::HashMap;
use std::sync::Arc;

use super::kinesis::{
    BoxFuture, ClientOptions, EntryResult, Kinesis, KinesisError, SdkKinesis, SharedKinesis,
};
use crate::aggregate::Encoded;
use crate::shard_map::Shard;

/// The Kinesis client delivery uses: one [`SdkKinesis`] for the default
/// destination, and one for each stream that has its own.
pub(crate) async fn connect(options: &ClientOptions) -> SharedKinesis {
    let default: SharedKinesis = Arc::new(SdkKinesis::new(options).await);
    if options.streams.is_empty() {
        return default;
    }
    let mut streams = HashMap::new();
    for (stream, destination) in &options.streams {
        tracing::info!(stream = %stream, destination = %destination.describe(), "Stream has its own destination");
        let client: SharedKinesis = Arc::new(SdkKinesis::to(destination, options).await);
        streams.insert(stream.clone(), client);
    }
    Arc::new(PerStream { default, streams })
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

    fn put_records<'a>(
        &'a self,
        stream: &'a str,
        entries: Vec<Encoded>,
    ) -> BoxFuture<'a, Result<Vec<EntryResult>, KinesisError>> {
        self.client(stream).put_records(stream, entries)
    }
}
