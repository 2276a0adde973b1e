//! A Kinesis emulator for the client libraries' tests (`clients/`): serves the
//! `ferrokinesis` emulator on 127.0.0.1, creates the streams asked for, and reads
//! them back on request, deaggregated, so a test in any language can check what
//! arrived without an AWS SDK of its own.
//!
//! ```text
//! cargo run --example emulator -- --stream logs:4 [--stream audit:1]
//! ```
//!
//! Prints one JSON line, `{"endpoint":"http://127.0.0.1:PORT","region":"us-east-1"}`,
//! then answers commands read from stdin, one per line, with one JSON line each:
//!
//! - `read STREAM PATH`: writes every user record of STREAM (every shard, open or
//!   closed, from its start) to PATH as NDJSON
//!   `{"shard":…,"partition_key":…,"data":"<base64>"}`; answers `{"records":N}`.
//!
//! A bad command is answered `{"error":"…"}`. It exits at the end of stdin.

use std::io::Write;

use base64::Engine;
use shardline::aggregate::deaggregate;
use tokio::io::AsyncBufReadExt;

mod common;

#[tokio::main]
async fn main() {
    // The emulator takes any credentials; never reach for instance metadata.
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let streams = match parse_args(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("emulator: {e}\nusage: emulator [--stream NAME:SHARDS]...");
            std::process::exit(2);
        }
    };
    let served = common::emulator::start(
        ferrokinesis::store::StoreOptions {
            create_stream_ms: 0,
            delete_stream_ms: 0,
            update_stream_ms: 0,
            shard_limit: 1000,
            ..Default::default()
        },
        |app| app,
    )
    .await;
    let client = common::emulator::client(&served.endpoint, None).await;
    for (name, shards) in &streams {
        common::emulator::create_stream(&client, name, *shards).await;
    }
    answer(&serde_json::json!({"endpoint": served.endpoint, "region": "us-east-1"}));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            [] => continue,
            ["read", stream, path] => match read(&client, stream, path).await {
                Ok(n) => serde_json::json!({ "records": n }),
                Err(e) => serde_json::json!({ "error": e }),
            },
            _ => serde_json::json!({ "error": format!("unknown command {line:?}") }),
        };
        answer(&reply);
    }
}

/// `--stream NAME:SHARDS`, any number of times (default `logs:4`).
fn parse_args(args: impl Iterator<Item = String>) -> Result<Vec<(String, i32)>, String> {
    let mut streams = Vec::new();
    let mut args = args;
    while let Some(a) = args.next() {
        if a != "--stream" {
            return Err(format!("unknown argument {a:?}"));
        }
        let v = args.next().ok_or("--stream needs NAME:SHARDS")?;
        let (name, shards) = v.split_once(':').ok_or("--stream needs NAME:SHARDS")?;
        let shards = shards
            .parse()
            .map_err(|_| format!("bad shard count in {v:?}"))?;
        streams.push((name.to_owned(), shards));
    }
    if streams.is_empty() {
        streams.push(("logs".to_owned(), 4));
    }
    Ok(streams)
}

fn answer(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Writes every user record of `stream` to `path`; returns how many.
async fn read(client: &aws_sdk_kinesis::Client, stream: &str, path: &str) -> Result<usize, String> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| format!("ListShards {stream} failed: {e:?}"))?;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).map_err(|e| format!("cannot create {path}: {e}"))?,
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut n = 0;
    for shard in shards.shards() {
        let id = shard.shard_id();
        for (pk, data) in common::emulator::read_shard(client, stream, id, 10_000).await? {
            let users = deaggregate(&pk, None, &data)
                .map_err(|e| format!("a record in {id} does not decode: {e}"))?;
            for u in users {
                let line = serde_json::json!({
                    "shard": id,
                    "partition_key": u.partition_key,
                    "data": b64.encode(&u.data),
                });
                writeln!(out, "{line}").map_err(|e| format!("cannot write {path}: {e}"))?;
                n += 1;
            }
        }
    }
    out.flush()
        .map_err(|e| format!("cannot write {path}: {e}"))?;
    Ok(n)
}
