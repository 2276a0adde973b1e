//! The modelled Kinesis stream: ferrokinesis in this process on 127.0.0.1, with
//! its shard write limits on, behind the `layer`. [`Model`] owns the served
//! emulator, the model's own client (which is neither delayed nor counted) and
//! the tap; `fleet` starts it, reshards through it, and `audit` reads the stream
//! back with its client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::emulator;
use super::layer::{layer, Gate, Latency};
use super::tap::Tap;

pub(crate) const STREAM: &str = "fleet";
/// How long a reshard keeps the stream `UPDATING` before its shards change.
const UPDATE_MS: u64 = 1000;

/// One open shard: its id and hash key range.
#[derive(Clone, Debug)]
pub(crate) struct OpenShard {
    pub(crate) id: String,
    pub(crate) start: u128,
    pub(crate) end: u128,
}

/// A reshard the run made.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Reshard {
    /// `split` or `merge`.
    pub(crate) kind: &'static str,
    /// Seconds from the start of the load to the request.
    pub(crate) requested_s: f64,
    /// Seconds from the start of the load until the stream was active again.
    pub(crate) active_s: f64,
    pub(crate) open_shards_after: usize,
    #[serde(skip)]
    pub(crate) requested: Instant,
    #[serde(skip)]
    pub(crate) active: Instant,
}

/// The emulator behind the layer, and the stream in it.
pub(crate) struct Model {
    pub(crate) endpoint: String,
    pub(crate) client: aws_sdk_kinesis::Client,
    pub(crate) tap: Arc<Tap>,
    task: tokio::task::JoinHandle<()>,
}

impl Model {
    /// Serves the model and creates the stream of `shards` shards.
    pub(crate) async fn start(
        agents: usize,
        shards: i32,
        latency: Latency,
        list_shards_tps: u32,
    ) -> Result<Model, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind the model: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("no address: {e}"))?;
        let endpoint = format!("http://{addr}");
        let client = emulator::client(&endpoint, Some(Duration::from_secs(60))).await;
        let tap = Arc::new(Tap::new(agents));
        let gate = Arc::new(Gate::new(
            tap.clone(),
            latency,
            STREAM,
            list_shards_tps,
            client.clone(),
        ));
        let options = ferrokinesis::store::StoreOptions {
            create_stream_ms: 0,
            delete_stream_ms: 0,
            update_stream_ms: UPDATE_MS,
            shard_limit: 10_000,
            enforce_limits: true,
            ..Default::default()
        };
        let served = emulator::serve(listener, options, |app| {
            app.layer(axum::middleware::from_fn_with_state(gate, layer))
        });
        emulator::create_stream(&client, STREAM, shards).await;
        Ok(Model {
            endpoint,
            client,
            tap,
            task: served.task,
        })
    }

    /// The open shards, by starting hash key.
    pub(crate) async fn open_shards(&self) -> Result<Vec<OpenShard>, String> {
        let listed = self
            .client
            .list_shards()
            .stream_name(STREAM)
            .send()
            .await
            .map_err(|e| format!("ListShards failed: {e:?}"))?;
        let mut open: Vec<OpenShard> = listed
            .shards()
            .iter()
            .filter(|s| {
                s.sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none())
            })
            .filter_map(|s| {
                let r = s.hash_key_range()?;
                Some(OpenShard {
                    id: s.shard_id().to_owned(),
                    start: r.starting_hash_key().parse().ok()?,
                    end: r.ending_hash_key().parse().ok()?,
                })
            })
            .collect();
        open.sort_by_key(|s| s.start);
        Ok(open)
    }

    /// Splits the widest open shard in the middle of its range.
    pub(crate) async fn split(&self, load_start: Instant) -> Result<Reshard, String> {
        let open = self.open_shards().await?;
        let widest = open
            .iter()
            .max_by_key(|s| s.end - s.start)
            .ok_or("no open shard to split")?;
        let requested = Instant::now();
        self.client
            .split_shard()
            .stream_name(STREAM)
            .shard_to_split(&widest.id)
            .new_starting_hash_key((widest.start + (widest.end - widest.start) / 2 + 1).to_string())
            .send()
            .await
            .map_err(|e| format!("SplitShard failed: {e:?}"))?;
        self.settled("split", requested, load_start).await
    }

    /// Merges the two adjacent open shards with the narrowest ranges together
    /// (after the split, its two children: the stream is back to even shards,
    /// as when a scale-up is undone).
    pub(crate) async fn merge(&self, load_start: Instant) -> Result<Reshard, String> {
        let open = self.open_shards().await?;
        let (a, b) = open
            .windows(2)
            .filter(|w| w[0].end.checked_add(1) == Some(w[1].start))
            .min_by_key(|w| (w[0].end - w[0].start) / 2 + (w[1].end - w[1].start) / 2)
            .map(|w| (w[0].clone(), w[1].clone()))
            .ok_or("no two adjacent open shards to merge")?;
        let requested = Instant::now();
        self.client
            .merge_shards()
            .stream_name(STREAM)
            .shard_to_merge(&a.id)
            .adjacent_shard_to_merge(&b.id)
            .send()
            .await
            .map_err(|e| format!("MergeShards failed: {e:?}"))?;
        self.settled("merge", requested, load_start).await
    }

    /// Waits for the stream to be active again after a reshard requested at
    /// `requested`.
    async fn settled(
        &self,
        kind: &'static str,
        requested: Instant,
        load_start: Instant,
    ) -> Result<Reshard, String> {
        // The stream turns UPDATING at once and ACTIVE once the shards changed.
        emulator::wait_active(&self.client, STREAM).await;
        let active = Instant::now();
        let open_shards_after = self.open_shards().await?.len();
        let since = |t: Instant| t.duration_since(load_start).as_secs_f64();
        Ok(Reshard {
            kind,
            requested_s: since(requested),
            active_s: since(active),
            open_shards_after,
            requested,
            active,
        })
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        self.task.abort();
    }
}
