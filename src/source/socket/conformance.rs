//! The agent's codec against the shared protocol vectors
//! (`clients/vectors/protocol.json`), which every client library is tested
//! against too: frames encode and decode byte for byte, bad frames are refused
//! with the same kind, and records are judged as the clients judge them.

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::frame::{self, FrameError, Record, Request, Response, Status};
use super::framed::request_records;
use crate::source::record_id::Counter;

const VECTORS: &str = include_str!("../../../clients/vectors/protocol.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("the vectors are JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).map(|s| s.as_str().expect("a string").to_owned())
}

fn record(v: &Value) -> Record {
    let data = match (v.get("data"), v.get("data_len")) {
        (Some(d), _) => unhex(d.as_str().expect("hex data")),
        (None, Some(n)) => vec![b'x'; n.as_u64().expect("a length") as usize],
        (None, None) => panic!("a record without data: {v}"),
    };
    Record {
        partition_key: text(v, "partition_key").expect("a partition key"),
        explicit_hash_key: text(v, "explicit_hash_key"),
        data: Bytes::from(data),
        record_id: text(v, "record_id"),
    }
}

fn request(v: &Value) -> Request {
    Request {
        id: text(v, "id").expect("an id").parse().expect("a u64"),
        records: v["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(record)
            .collect(),
        ack: v["ack"].as_bool().expect("ack"),
        stream: text(v, "stream"),
    }
}

fn response(v: &Value) -> Response {
    let code = v["status_code"].as_i64().expect("a status code") as i32;
    let name = Status::try_from(code).ok().map(|s| status_name(s));
    assert_eq!(name, v["status"].as_str(), "status name of code {code}");
    Response {
        id: text(v, "id").expect("an id").parse().expect("a u64"),
        status: code,
        message: text(v, "message").expect("a message"),
        records: v["records"].as_u64().expect("records") as u32,
    }
}

/// A status as the protocol names it.
fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "OK",
        Status::InvalidRecord => "INVALID_RECORD",
        Status::RecordTooLarge => "RECORD_TOO_LARGE",
        Status::SpoolFull => "SPOOL_FULL",
        Status::ShuttingDown => "SHUTTING_DOWN",
        Status::BadFrame => "BAD_FRAME",
        Status::Internal => "INTERNAL",
    }
}

fn name(case: &Value) -> &str {
    case["name"].as_str().expect("a name")
}

#[test]
fn requests_encode_and_decode_byte_for_byte() {
    let v = vectors();
    let cases = v["requests"].as_array().expect("requests");
    assert!(cases.len() >= 20);
    for case in cases {
        let wire = unhex(case["frame"].as_str().expect("a frame"));
        let want = request(&case["request"]);
        let mut out = BytesMut::new();
        frame::encode(&want, &mut out);
        assert_eq!(&out[..], &wire[..], "{}: encoding", name(case));
        let mut buf = BytesMut::from(&wire[..]);
        let got = frame::decode::<Request>(&mut buf).expect("decodes");
        assert_eq!(got, Some(want), "{}: decoding", name(case));
        assert!(buf.is_empty());
        assert_eq!(
            frame::count_records(&wire),
            case["request"]["records"].as_array().unwrap().len()
        );
    }
}

#[test]
fn responses_decode_and_canonical_ones_encode() {
    let v = vectors();
    let cases = v["responses"].as_array().expect("responses");
    // Every status the agent answers has a vector.
    for code in 0..=6 {
        let has = cases.iter().any(|c| c["response"]["status_code"] == code);
        assert!(has, "no vector answers status {code}");
    }
    for case in cases {
        let wire = unhex(case["frame"].as_str().expect("a frame"));
        let want = response(&case["response"]);
        let mut buf = BytesMut::from(&wire[..]);
        let got = frame::decode::<Response>(&mut buf).expect("decodes");
        assert_eq!(got.as_ref(), Some(&want), "{}: decoding", name(case));
        if case["canonical"].as_bool().expect("canonical") {
            let mut out = BytesMut::new();
            frame::encode(&want, &mut out);
            assert_eq!(&out[..], &wire[..], "{}: encoding", name(case));
        }
    }
}

#[test]
fn bad_frames_are_refused_with_their_kind() {
    let v = vectors();
    for case in v["bad_frames"].as_array().expect("bad frames") {
        let wire = unhex(case["frame"].as_str().expect("a frame"));
        for message in ["request", "response"] {
            let mut buf = BytesMut::from(&wire[..]);
            let err = match message {
                "request" => frame::decode::<Request>(&mut buf).map(|_| ()),
                _ => frame::decode::<Response>(&mut buf).map(|_| ()),
            }
            .expect_err(name(case));
            let kind = match err {
                FrameError::TooLarge { .. } => "too_large",
                FrameError::Empty => "empty",
                FrameError::Version { .. } => "version",
                FrameError::Protobuf(_) => "protobuf",
            };
            assert_eq!(
                Some(kind),
                case["error"].as_str(),
                "{} ({message})",
                name(case)
            );
            assert_eq!(
                !err.recoverable(),
                case["fatal"].as_bool().unwrap(),
                "{}",
                name(case)
            );
        }
    }
}

/// Records as a socket judges them: one with `record_id = true` (the only one
/// that reads a record's id) when the record has an id, so that it is judged too.
fn judge(case: &Value) -> Result<(), Status> {
    let mut req = Request {
        id: 1,
        records: vec![record(&case["record"])],
        ack: true,
        stream: None,
    };
    let mut ids = Counter::new("socket[0]");
    let ids = req.records[0].record_id.is_some().then_some(&mut ids);
    request_records(&mut req, ids)
        .map(|_| ())
        .map_err(|r| Status::try_from(r.status).expect("a known status"))
}

#[test]
fn records_are_judged_as_the_clients_judge_them() {
    let v = vectors();
    for case in v["invalid_records"].as_array().expect("invalid records") {
        let want = case["status"].as_str().expect("a status");
        let got = judge(case).expect_err(name(case));
        assert_eq!(status_name(got), want, "{}", name(case));
    }
    for case in v["valid_records"].as_array().expect("valid records") {
        assert_eq!(judge(case), Ok(()), "{}", name(case));
    }
}
