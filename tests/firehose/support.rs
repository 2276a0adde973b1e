//! The test support the Firehose tests stand on, checked on its own with raw
//! HTTP requests: the fault endpoint answers as Firehose does and as its plan
//! says, and moto turns a PutRecordBatch into one S3 object of the decoded data.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;

use crate::util::firehose::{FirehoseEndpoint, Outcome, Plan};
use crate::util::moto::Moto;

const TARGET: &str = "Firehose_20150804.PutRecordBatch";

/// A PutRecordBatch body as aws-sdk-firehose sends it.
fn batch(stream: &str, records: &[&[u8]]) -> String {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::json!({"Data": base64::engine::general_purpose::STANDARD.encode(r)}))
        .collect();
    serde_json::json!({"DeliveryStreamName": stream, "Records": records}).to_string()
}

/// POSTs `body` with `target` on a new connection. `Err`: no answer came (the
/// connection was cut).
async fn post(
    endpoint: &str,
    target: &str,
    body: String,
) -> Result<(StatusCode, String, serde_json::Value), hyper::Error> {
    let addr = endpoint.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::post("/")
        .header("host", addr)
        .header("x-amz-target", target)
        .header("content-type", "application/x-amz-json-1.1")
        // Unchecked, but there as the SDK sends it (moto reads the region from it).
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/firehose/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, content_type, serde_json::from_slice(&body).unwrap()))
}

#[tokio::test]
async fn the_fault_endpoint_accepts_and_keeps_records_in_order() {
    let fh = FirehoseEndpoint::start(Plan::default()).await;
    let (status, ct, v) = post(
        &fh.endpoint,
        TARGET,
        batch("logs", &[b"a\n", b"bb\n", b"c\n"]),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "application/x-amz-json-1.1");
    assert_eq!(v["FailedPutCount"], 0);
    assert_eq!(v["Encrypted"], false);
    let responses = v["RequestResponses"].as_array().unwrap();
    assert_eq!(responses.len(), 3);
    assert!(responses.iter().all(|r| r["RecordId"].is_string()));
    post(&fh.endpoint, TARGET, batch("logs", &[b"d\n"]))
        .await
        .unwrap();
    let accepted = fh.accepted();
    let got: Vec<(u64, &[u8])> = accepted.iter().map(|a| (a.request, &a.data[..])).collect();
    assert_eq!(
        got,
        [(0, &b"a\n"[..]), (0, b"bb\n"), (0, b"c\n"), (1, b"d\n")]
    );
    assert!(accepted.iter().all(|a| a.delivery_stream == "logs"));
    assert_eq!(fh.request_count(), 2);
    assert_eq!(
        fh.requests()[0].outcome,
        Outcome::Answered {
            unavailable: 0,
            internal: 0
        }
    );
}

#[tokio::test]
async fn the_fault_endpoint_refuses_records_one_by_one() {
    for (plan, code) in [
        (
            Plan {
                record_unavailable: 1.0,
                ..Plan::default()
            },
            "ServiceUnavailableException",
        ),
        (
            Plan {
                record_internal: 1.0,
                ..Plan::default()
            },
            "InternalFailure",
        ),
    ] {
        let fh = FirehoseEndpoint::start(plan).await;
        let (status, _, v) = post(&fh.endpoint, TARGET, batch("logs", &[b"a\n", b"b\n"]))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["FailedPutCount"], 2);
        for r in v["RequestResponses"].as_array().unwrap() {
            assert_eq!(r["ErrorCode"], code, "{v}");
            assert!(r["ErrorMessage"].is_string());
            assert!(r.get("RecordId").is_none());
        }
        assert!(fh.accepted().is_empty());
        let (unavailable, internal) = fh.records_failed();
        assert_eq!(unavailable + internal, 2);
    }
}

#[tokio::test]
async fn the_fault_endpoint_fails_whole_requests_as_planned() {
    let cases = [
        (
            Plan {
                request_500: 1.0,
                ..Plan::default()
            },
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
        ),
        (
            Plan {
                request_503: 1.0,
                ..Plan::default()
            },
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
        ),
        (
            Plan {
                refuse_all: true,
                ..Plan::default()
            },
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
        ),
        (
            Plan {
                not_found: true,
                ..Plan::default()
            },
            StatusCode::BAD_REQUEST,
            "ResourceNotFoundException",
        ),
    ];
    for (plan, status, code) in cases {
        let fh = FirehoseEndpoint::start(plan).await;
        let (got, ct, v) = post(&fh.endpoint, TARGET, batch("logs", &[b"a\n"]))
            .await
            .unwrap();
        assert_eq!(
            (got, &v["__type"]),
            (status, &serde_json::json!(code)),
            "{v}"
        );
        assert_eq!(ct, "application/x-amz-json-1.1");
        assert!(v["message"].is_string());
        assert!(fh.accepted().is_empty());
    }
    let fh = FirehoseEndpoint::start(Plan::default()).await;
    let (status, _, v) = post(&fh.endpoint, "Firehose_20150804.PutRecord", "{}".into())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(fh.requests()[0].outcome, Outcome::Unknown);
}

/// A plan changed while the endpoint runs applies to the next request.
#[tokio::test]
async fn the_fault_endpoint_cuts_connections_before_or_after_storing() {
    let fh = FirehoseEndpoint::start(Plan {
        reset_before_store: 1.0,
        ..Plan::default()
    })
    .await;
    assert!(post(&fh.endpoint, TARGET, batch("logs", &[b"a\n"]))
        .await
        .is_err());
    assert!(fh.accepted().is_empty());
    fh.set_plan(Plan {
        reset_after_store: 1.0,
        ..Plan::default()
    });
    assert!(post(&fh.endpoint, TARGET, batch("logs", &[b"b\n", b"c\n"]))
        .await
        .is_err());
    let kept: Vec<Bytes> = fh.stored_unanswered().into_iter().map(|a| a.data).collect();
    assert_eq!(kept, [Bytes::from("b\n"), Bytes::from("c\n")]);
    let outcomes: Vec<Outcome> = fh.requests().iter().map(|s| s.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::ResetBeforeStore,
            Outcome::ResetAfterStore { stored: 2 }
        ]
    );
    fh.set_plan(Plan {
        delay: Duration::from_millis(300),
        ..Plan::default()
    });
    let started = Instant::now();
    post(&fh.endpoint, TARGET, batch("logs", &[b"d\n"]))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "no delay");
    assert_eq!(fh.accepted().len(), 3);
    // Stored at once, answered late: a client gone before the answer leaves
    // the records stored.
    fh.set_plan(Plan {
        delay: Duration::from_secs(30),
        store_before_delay: true,
        ..Plan::default()
    });
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        post(&fh.endpoint, TARGET, batch("logs", &[b"e\n"])),
    )
    .await;
    assert!(gave_up.is_err(), "answered before the delay");
    assert_eq!(fh.accepted().len(), 4);
    crate::util::wait_for(
        "the endpoint to drop the request",
        Duration::from_secs(10),
        || fh.in_flight() == 0,
    )
    .await;
    assert!(fh.requests().last().unwrap().abandoned);
    let unanswered: Vec<Bytes> = fh.stored_unanswered().into_iter().map(|a| a.data).collect();
    assert_eq!(
        unanswered,
        [Bytes::from("b\n"), Bytes::from("c\n"), Bytes::from("e\n")]
    );
}

/// moto decodes the base64 `Data` and writes each PutRecordBatch as one S3
/// object, the records' data concatenated in order: what the moto tests read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_writes_one_object_of_decoded_data_per_batch() {
    let moto = Moto::start().await;
    moto.create_delivery_stream("check-bucket", "check").await;
    let (status, _, v) = post(
        &moto.endpoint,
        TARGET,
        batch("check", &[b"a\n", b"bb\nc\n"]),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    let objects = moto.objects("check-bucket").await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].data, Bytes::from("a\nbb\nc\n"));
    assert!(objects[0].key.starts_with("check/"), "{}", objects[0].key);
}

/// aws-sdk-firehose, without its own retries, at `endpoint`.
async fn sdk(endpoint: &str) -> aws_sdk_firehose::Client {
    crate::util::aws_env();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    aws_sdk_firehose::Client::new(&conf)
}

/// What aws-sdk-firehose's PutRecordBatch returns.
type SdkResult = Result<
    aws_sdk_firehose::operation::put_record_batch::PutRecordBatchOutput,
    aws_sdk_firehose::error::SdkError<
        aws_sdk_firehose::operation::put_record_batch::PutRecordBatchError,
    >,
>;

async fn sdk_put(client: &aws_sdk_firehose::Client, records: &[&str]) -> SdkResult {
    let records = records.iter().map(|r| {
        aws_sdk_firehose::types::Record::builder()
            .data(aws_sdk_firehose::primitives::Blob::new(r.as_bytes()))
            .build()
            .unwrap()
    });
    client
        .put_record_batch()
        .delivery_stream_name("logs")
        .set_records(Some(records.collect()))
        .send()
        .await
}

/// The endpoint's answers read as aws-sdk-firehose reads Firehose's: results
/// per record, and each whole-request error with its code.
#[tokio::test]
async fn aws_sdk_firehose_reads_the_fault_endpoint_as_firehose() {
    use aws_sdk_firehose::error::ProvideErrorMetadata as _;
    let fh = FirehoseEndpoint::start(Plan::default()).await;
    let client = sdk(&fh.endpoint).await;
    let out = sdk_put(&client, &["a\n", "b\n"]).await.unwrap();
    assert_eq!(out.failed_put_count(), 0);
    assert_eq!(out.request_responses().len(), 2);
    assert_eq!(fh.accepted()[1].data, Bytes::from("b\n"));
    fh.set_plan(Plan {
        record_internal: 1.0,
        ..Plan::default()
    });
    let out = sdk_put(&client, &["c\n"]).await.unwrap();
    assert_eq!(out.failed_put_count(), 1);
    assert_eq!(
        out.request_responses()[0].error_code(),
        Some("InternalFailure")
    );
    for (plan, code) in [
        (
            Plan {
                request_503: 1.0,
                ..Plan::default()
            },
            "ServiceUnavailableException",
        ),
        (
            Plan {
                request_500: 1.0,
                ..Plan::default()
            },
            "InternalFailure",
        ),
        (
            Plan {
                not_found: true,
                ..Plan::default()
            },
            "ResourceNotFoundException",
        ),
    ] {
        fh.set_plan(plan);
        let e = sdk_put(&client, &["d\n"]).await.unwrap_err();
        assert_eq!(e.code(), Some(code), "{e:?}");
    }
    fh.set_plan(Plan {
        reset_after_store: 1.0,
        ..Plan::default()
    });
    let e = sdk_put(&client, &["e\n"]).await.unwrap_err();
    assert!(e.code().is_none(), "a cut connection has no code: {e:?}");
    assert_eq!(fh.stored_unanswered().len(), 1);
}
