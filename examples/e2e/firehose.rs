//! The Firehose ack endpoint, the child's side of `--destination firehose`
//! (`main` calls [`serve_firehose`] for the `--serve-firehose` role): a minimal
//! PutRecordBatch endpoint (JSON 1.1) that parses each request, decodes every
//! record's data, counts its lines (newlines) and accepts every record. It owns
//! the running totals and reports them on its stdout after each request
//! (`arrived <lines> <records>`), which the parent's `Endpoint` reads: the
//! benchmark knows from them when every line arrived.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::endpoint::{note_first_put, ARRIVED};

/// A PutRecordBatch request: only what the endpoint reads.
#[derive(serde::Deserialize)]
struct Batch<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<Entry<'a>>,
}

#[derive(serde::Deserialize)]
struct Entry<'a> {
    /// Base64 of the record's data (borrowed unless the JSON escapes it).
    #[serde(rename = "Data", borrow)]
    data: Cow<'a, str>,
}

/// Lines and records accepted so far.
#[derive(Default)]
struct Totals {
    lines: AtomicU64,
    records: AtomicU64,
}

/// Serves PutRecordBatch on 127.0.0.1 (its address printed first) until the
/// parent goes away.
pub(crate) fn serve_firehose() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        let totals = Arc::new(Totals::default());
        let app = axum::Router::new()
            .fallback(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let totals = totals.clone();
                    async move {
                        let target = headers
                            .get("x-amz-target")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        let reply = if target == "Firehose_20150804.PutRecordBatch" {
                            put_record_batch(&body, &totals)
                        } else {
                            b"{}".to_vec()
                        };
                        ([("content-type", "application/x-amz-json-1.1")], reply)
                    }
                },
            )
            .layer(axum::middleware::from_fn(note_first_put))
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
        axum::serve(listener, app).await.expect("serve");
    });
}

/// Base64 characters decoded at a time: a multiple of 4, so that only the last
/// piece has padding, and small enough that the decoded piece stays in cache
/// (the endpoint shares the machine with the agent).
const PIECE: usize = 64 << 10;

/// PutRecordBatch: every record accepted, its lines counted and the totals
/// reported; the answer has one `RecordId` per record, in order.
fn put_record_batch(body: &[u8], totals: &Totals) -> Vec<u8> {
    let batch: Batch = serde_json::from_slice(body).expect("a PutRecordBatch request");
    let mut lines = 0u64;
    for entry in &batch.records {
        let text: &str = &entry.data;
        for at in (0..text.len()).step_by(PIECE) {
            // The SDK's own (SIMD) decoder; base64 is ASCII, any cut is a char
            // boundary.
            let data = aws_smithy_types::base64::decode(&text[at..(at + PIECE).min(text.len())])
                .expect("base64 record data");
            lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
    let n = batch.records.len() as u64;
    let all_lines = totals.lines.fetch_add(lines, Ordering::AcqRel) + lines;
    let all_records = totals.records.fetch_add(n, Ordering::AcqRel) + n;
    println!("{ARRIVED}{all_lines} {all_records}");
    let first = all_records - n;
    let responses: Vec<_> = (first..all_records)
        .map(|id| serde_json::json!({ "RecordId": format!("{id:056}") }))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "FailedPutCount": 0,
        "Encrypted": false,
        "RequestResponses": responses,
    }))
    .expect("json")
}
