//! The Kinesis side of the soak: the emulator on 127.0.0.1 behind the test suite's
//! fault layer, and the soak's stream in it. [`Emulator`] owns the fault switches
//! (`chaos` turns them on, `main` ends them all with [`Emulator::restore`]);
//! [`wait_active`] is called after the stream is created and after each reshard.
//! `destination` holds it beside the Firehose endpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::StreamStatus;

use crate::common;
use crate::faults;
use crate::shared::Shared;

pub(crate) const STREAM: &str = "soak";
/// Shards at the start; reshards pick another count (see `chaos`).
pub(crate) const INITIAL_SHARDS: i32 = 2;

/// The emulator on 127.0.0.1, behind the fault layer.
pub(crate) struct Emulator {
    pub(crate) endpoint: String,
    pub(crate) faults: Arc<faults::Faults>,
}

impl Emulator {
    /// Starts the emulator, creates the stream of [`INITIAL_SHARDS`] shards and
    /// waits until it is active; returns a client of the emulator too.
    pub(crate) async fn start_with_stream() -> Result<(Emulator, aws_sdk_kinesis::Client), String> {
        let emulator = Emulator::start().await?;
        let client =
            common::emulator::client(&emulator.endpoint, Some(Duration::from_secs(30))).await;
        client
            .create_stream()
            .stream_name(STREAM)
            .shard_count(INITIAL_SHARDS)
            .send()
            .await
            .map_err(|e| format!("CreateStream failed: {e:?}"))?;
        wait_active(&client).await?;
        Ok((emulator, client))
    }

    async fn start() -> Result<Emulator, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind the emulator: {e}"))?;
        let faults = Arc::new(faults::Faults::default());
        let f = faults.clone();
        let served = common::emulator::serve(
            listener,
            ferrokinesis::store::StoreOptions {
                create_stream_ms: 0,
                delete_stream_ms: 0,
                update_stream_ms: 500,
                shard_limit: 1000,
                enforce_limits: true,
                ..Default::default()
            },
            |app| app.layer(axum::middleware::from_fn_with_state(f, faults::layer)),
        );
        Ok(Emulator {
            endpoint: served.endpoint,
            faults,
        })
    }

    /// A burst at the endpoint: throttled entries, HTTP 500s, connection resets;
    /// counted in `state`.
    pub(crate) fn inject(&self, state: &Shared) {
        let (throttles, errors, resets) = (300, 3, 2);
        let f = &self.faults;
        f.throttle_entries.fetch_add(throttles, Ordering::AcqRel);
        f.fail_requests.fetch_add(errors, Ordering::AcqRel);
        f.reset_requests.fetch_add(resets, Ordering::AcqRel);
        state
            .injected_throttles
            .fetch_add(throttles.into(), Ordering::Relaxed);
        state
            .injected_500s
            .fetch_add(errors.into(), Ordering::Relaxed);
        state
            .injected_resets
            .fetch_add(resets.into(), Ordering::Relaxed);
    }

    /// Ends every fault: the endpoint is reachable and answers truthfully.
    pub(crate) fn restore(&self) {
        self.faults.outage.store(false, Ordering::Release);
        self.faults.throttle_entries.store(0, Ordering::Release);
        self.faults.fail_requests.store(0, Ordering::Release);
        self.faults.reset_requests.store(0, Ordering::Release);
    }
}

/// Waits up to 30 s until the stream is active.
pub(crate) async fn wait_active(client: &aws_sdk_kinesis::Client) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = client
            .describe_stream_summary()
            .stream_name(STREAM)
            .send()
            .await
            .map_err(|e| format!("DescribeStreamSummary failed: {e:?}"))?
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("stream not active after 30 s: {status:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
