//! Parsers through the real binary: files read into json records by a
//! `[file.parse]` table, delivered to the emulator and read back as a consumer
//! reads them.
//!
//! - [`apache`]: ~2,000 Apache combined lines (and a few bad ones) with the
//!   event time, compared field by field with what the test makes of each line.
//! - [`sigkill`]: a CSV file with a header and a CRI file with partial lines,
//!   the binary SIGKILLed while it reads them.
//! - [`agent`]: an agent.json of the Kinesis Agent imported with `shardline
//!   import kinesis-agent` and run: the records are those the agent would send.
//!
//! This module holds what they share: the config, the metrics endpoint and
//! reading the stream back as JSON objects.

mod agent;
mod apache;
mod sigkill;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::util::{stream_objects as objects, Emulator, Workdir};

/// How long a test waits for the agent before it fails.
const LONG: Duration = Duration::from_secs(45);

/// A config for the binary: stream `logs` at the emulator, the metrics
/// endpoint on an ephemeral loopback port, the spool in `work`, then `blocks`.
fn config(emu: &Emulator, work: &Workdir, blocks: &str) -> std::path::PathBuf {
    let path = work.path("shardline.toml");
    std::fs::write(
        &path,
        format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\n\
             [delivery]\nmax_buffered_time_ms = 20\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [spool]\ndir = \"{}\"\nflush_interval_ms = 20\n{blocks}",
            emu.endpoint,
            work.spool().display(),
        ),
    )
    .unwrap();
    path
}

/// The `/metrics` text of the agent at `addr`.
async fn metrics(addr: SocketAddr) -> String {
    let (_, text) = shardline::status::get(addr, "/metrics", Duration::from_secs(10))
        .await
        .unwrap();
    String::from_utf8(text.to_vec()).unwrap()
}

/// The value of the sample `series` (name and labels, as `/metrics` writes
/// them) in `text`, 0 when it is not there.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// The records of `stream` once there are at least `count`, or a failure
/// showing `log` after `limit`.
async fn objects_when(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    count: usize,
    log: &Path,
) -> Vec<Map<String, Value>> {
    let deadline = Instant::now() + LONG;
    loop {
        let got = objects(client, stream).await;
        if got.len() >= count {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} records in {stream}\n{}",
            got.len(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens `path` for appending, creating it if needed.
fn open_append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// `m` as a JSON value, for messages and comparisons.
fn obj(m: &Map<String, Value>) -> Value {
    Value::Object(m.clone())
}
