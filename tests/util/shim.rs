//! What ferrokinesis 0.7 lacks of today's Kinesis, added in front of it: it reads
//! `StreamARN` in PutRecords but only `StreamName` in ListShards and
//! DescribeStreamSummary; its DescribeStreamSummary does not answer
//! `MaxRecordSizeInKiB` although UpdateMaxRecordSize sets it; and its request
//! validation refuses data over 1 MiB whatever the stream's maximum. This layer
//! notes how each request named its stream, turns an ARN into the name where the
//! emulator wants one, adds the stream's maximum record size to its summary, and
//! stores a PutRecords that holds a record over 1 MiB through the emulator's own
//! PutRecord action, record by record, after checking each against the stream's
//! maximum as Kinesis does. The records land in the emulator's store like any
//! others and are read back with GetRecords.

use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Value};

/// Requests larger than this carry a record the emulator's validation refuses.
const EMULATOR_RECORD_BYTES: usize = 1 << 20;

/// How one request named its stream.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `ListShards`, `DescribeStreamSummary` or `PutRecords`.
    pub operation: String,
    pub stream_arn: Option<String>,
    pub stream_name: Option<String>,
    /// `access key id/region` of the request's signature (who sent it).
    pub signer: Option<String>,
}

/// The layer's state: the emulator's store (set once it is made) and the
/// requests seen.
#[derive(Default)]
pub struct Shim {
    pub store: OnceLock<ferrokinesis::store::Store>,
    pub seen: Mutex<Vec<Seen>>,
}

impl Shim {
    /// The requests of `operation` seen so far.
    pub fn seen(&self, operation: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.operation == operation)
            .cloned()
            .collect()
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(&body).unwrap()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    r
}

/// The stream a request names: its `StreamName`, else the name in its ARN.
fn stream_name(request: &Value) -> String {
    match request["StreamName"].as_str() {
        Some(name) => name.to_owned(),
        None => request["StreamARN"]
            .as_str()
            .and_then(|a| a.split('/').nth(1))
            .unwrap_or_default()
            .to_owned(),
    }
}

fn data_len(entry: &Value) -> usize {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(entry["Data"].as_str().unwrap_or_default())
        .map_or(0, |d| d.len())
}

/// A PutRecords holding a record over 1 MiB, stored record by record; `None`
/// when it holds none (the emulator takes it as it is).
async fn put_large(store: &ferrokinesis::store::Store, request: &Value) -> Option<Response> {
    let entries = request["Records"].as_array()?;
    let sizes: Vec<usize> = entries
        .iter()
        .map(|e| data_len(e) + e["PartitionKey"].as_str().unwrap_or_default().len())
        .collect();
    if sizes.iter().all(|&s| s <= EMULATOR_RECORD_BYTES) {
        return None;
    }
    let name = stream_name(request);
    let stream = match store.get_stream(&name).await {
        Ok(s) => s,
        Err(e) => return Some(json_response(StatusCode::BAD_REQUEST, json!(e.body))),
    };
    let max = stream.max_record_size_kib as usize * 1024;
    let refuse = |message: String| {
        let body = json!({"__type": "ValidationException", "message": message});
        Some(json_response(StatusCode::BAD_REQUEST, body))
    };
    if let Some(i) = sizes.iter().position(|&s| s > max) {
        return refuse(format!(
            "record {i} of {} bytes exceeds the stream's maximum record size of {max} bytes",
            sizes[i]
        ));
    }
    if sizes.iter().sum::<usize>() > 10 << 20 {
        return refuse("the request's records exceed 10 MiB".into());
    }
    let mut results = Vec::new();
    let mut failed = 0;
    for e in entries {
        let mut one =
            json!({"StreamName": name, "Data": e["Data"], "PartitionKey": e["PartitionKey"]});
        if let Some(k) = e["ExplicitHashKey"].as_str() {
            one["ExplicitHashKey"] = json!(k);
        }
        match ferrokinesis::actions::put_record::execute(store, one).await {
            Ok(Some(r)) => results
                .push(json!({"ShardId": r["ShardId"], "SequenceNumber": r["SequenceNumber"]})),
            Ok(None) => unreachable!("PutRecord answers"),
            Err(e) => {
                failed += 1;
                let b = json!(e.body);
                results.push(json!({"ErrorCode": b["__type"], "ErrorMessage": b["message"]}));
            }
        }
    }
    let body = json!({"FailedRecordCount": failed, "Records": results});
    Some(json_response(StatusCode::OK, body))
}

/// The middleware (installed by `Emulator::serve`, inside the fault layer).
pub async fn layer(State(shim): State<Arc<Shim>>, req: Request, next: Next) -> Response {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
    if !matches!(
        operation.as_str(),
        "ListShards" | "DescribeStreamSummary" | "PutRecords"
    ) {
        return next.run(req).await;
    }
    let signer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(super::faults::signer);
    let (mut parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut request: Value = serde_json::from_slice(&body).unwrap();
    shim.seen.lock().unwrap().push(Seen {
        operation: operation.clone(),
        stream_arn: request["StreamARN"].as_str().map(str::to_owned),
        stream_name: request["StreamName"].as_str().map(str::to_owned),
        signer,
    });
    let store = shim.store.get().expect("set when served").clone();
    if operation == "PutRecords" {
        if let Some(answer) = put_large(&store, &request).await {
            return answer;
        }
    } else if request.get("StreamARN").is_some() {
        let name = stream_name(&request);
        let fields = request.as_object_mut().unwrap();
        fields.remove("StreamARN");
        fields.insert("StreamName".into(), json!(name));
    }
    parts.headers.remove("content-length");
    let forwarded = Request::from_parts(parts, Body::from(serde_json::to_vec(&request).unwrap()));
    let response = next.run(forwarded).await;
    if operation != "DescribeStreamSummary" || !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut answer: Value = serde_json::from_slice(&body).unwrap();
    let name = stream_name(&request);
    if let Ok(stream) = store.get_stream(&name).await {
        answer["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] =
            json!(stream.max_record_size_kib);
    }
    let mut r = Response::from_parts(parts, Body::from(serde_json::to_vec(&answer).unwrap()));
    r.headers_mut().remove("content-length");
    r
}
