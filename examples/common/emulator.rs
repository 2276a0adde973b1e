//! The ferrokinesis emulator served on 127.0.0.1, and an SDK client for it: one
//! copy for the tests (`tests/util`), the examples and the benches.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use shardline::Destination;
use shardline::ProxySetting;
use shardline::{testkit::SdkKinesis, ClientOptions};

/// A served emulator.
pub struct Served {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub store: ferrokinesis::store::Store,
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves an emulator with `options` on `listener`; `layer` wraps its router
/// (fault injection, request taps). axum's 2 MiB body limit is lifted: a
/// PutRecords of 5 MiB is more as base64 JSON.
pub fn serve(
    listener: tokio::net::TcpListener,
    options: ferrokinesis::store::StoreOptions,
    layer: impl FnOnce(axum::Router) -> axum::Router,
) -> Served {
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let (app, store) = ferrokinesis::create_app(options);
    let app = layer(app).layer(axum::extract::DefaultBodyLimit::max(16 << 20));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("the Kinesis emulator stopped: {e}");
        }
    });
    Served {
        addr,
        endpoint: format!("http://{addr}"),
        store,
        task,
    }
}

/// Binds 127.0.0.1:0 and serves there.
pub async fn start(
    options: ferrokinesis::store::StoreOptions,
    layer: impl FnOnce(axum::Router) -> axum::Router,
) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0 for the emulator");
    serve(listener, options, layer)
}

/// An SDK client of an emulator at `endpoint` (never through a proxy).
pub async fn client(endpoint: &str, request_timeout: Option<Duration>) -> aws_sdk_kinesis::Client {
    SdkKinesis::new(&ClientOptions {
        destination: Destination {
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint.into()),
            ..Default::default()
        },
        request_timeout,
        proxy: ProxySetting::Disabled,
        ..Default::default()
    })
    .await
    .client()
    .clone()
}

/// Creates stream `name` with `shards` shards and waits until it is active
/// (panics on an error, or after 30 s).
pub async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateStream {name} failed: {e:?}"));
    wait_active(client, name).await;
}

/// Waits until stream `name` is active (panics on an error, or after 30 s).
pub async fn wait_active(client: &aws_sdk_kinesis::Client, name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeStreamSummary {name} failed: {e:?}"));
        let status = d
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stream {name} not active: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every shard of a stream, open and closed (ferrokinesis answers them all in
/// one page and ignores `ShardFilter`), with its hash key range.
pub async fn every_shard(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<(String, std::ops::RangeInclusive<u128>)>, String> {
    let listed = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| format!("ListShards failed: {e:?}"))?;
    let parse = |k: &str| {
        k.parse::<u128>()
            .map_err(|e| format!("bad hash key {k:?}: {e}"))
    };
    listed
        .shards()
        .iter()
        .map(|shard| {
            let range = shard
                .hash_key_range()
                .ok_or_else(|| format!("shard {} has no hash key range", shard.shard_id()))?;
            let range = parse(range.starting_hash_key())?..=parse(range.ending_hash_key())?;
            Ok((shard.shard_id().to_owned(), range))
        })
        .collect()
}

/// Every Kinesis record of one shard, from `TRIM_HORIZON` to its end, `limit`
/// records per GetRecords: the partition key and the data as stored
/// (aggregated or not).
pub async fn read_shard(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard_id: &str,
    limit: i32,
) -> Result<Vec<(String, bytes::Bytes)>, String> {
    let mut out = Vec::new();
    for_each_record(client, stream, shard_id, limit, |key, data| {
        out.push((key.to_owned(), data));
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Hands every Kinesis record of one shard to `f`, page by page, as
/// [`read_shard`] reads them (for a reader that keeps less than all of them).
pub async fn for_each_record(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard_id: &str,
    limit: i32,
    mut f: impl FnMut(&str, bytes::Bytes) -> Result<(), String>,
) -> Result<(), String> {
    let mut iterator = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard_id)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .map_err(|e| format!("GetShardIterator of {shard_id} failed: {e:?}"))?
        .shard_iterator()
        .map(str::to_owned);
    while let Some(it) = iterator {
        let page = client
            .get_records()
            .shard_iterator(it)
            .limit(limit)
            .send()
            .await
            .map_err(|e| format!("GetRecords of {shard_id} failed: {e:?}"))?;
        for r in page.records() {
            f(
                r.partition_key().unwrap_or_default(),
                bytes::Bytes::copy_from_slice(r.data().as_ref()),
            )?;
        }
        if page.records().is_empty() && page.millis_behind_latest().unwrap_or(0) == 0 {
            break;
        }
        iterator = page.next_shard_iterator().map(str::to_owned);
    }
    Ok(())
}
