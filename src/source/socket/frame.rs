//! The framed socket protocol, version 1: length-prefixed protobuf messages, so any
//! language can implement a client.
//!
//! ```text
//! frame    = length:u32 (big-endian, of what follows) version:u8 (= 1) message
//! client → agent: message = Request  { id, records[], ack }
//! agent → client: message = Response { id, status, message, records }
//! ```
//!
//! A `Request` carries a batch of records, each with its own partition key and
//! optional explicit hash key; its records are spooled together or not at all. With
//! `ack` set the agent answers once the records are durable in the spool (after the
//! group-commit flush that covers them); an error is always answered, with a status
//! code and a message. Clients may pipeline any number of requests before reading;
//! responses come in request order. A frame longer than [`MAX_FRAME_BYTES`] cannot be
//! skipped safely: the agent answers `BAD_FRAME` and closes the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

/// Protocol version byte.
pub const VERSION: u8 = 1;
/// Longest frame accepted: a record of the largest size a stream takes (10 MiB,
/// raised with UpdateMaxRecordSize) with its keys and room to spare, or a few
/// records of the default 1 MiB.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
const HEADER_BYTES: usize = 4;

/// A batch of records from a client.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// Chosen by the client, echoed in the response.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, repeated, tag = "2")]
    pub records: Vec<Record>,
    /// Answer once the records are durable.
    #[prost(bool, tag = "3")]
    pub ack: bool,
    /// The stream the records go to, by name or ARN: one the socket allows
    /// (its own, or one of its `streams`). None: the socket's own.
    #[prost(string, optional, tag = "4")]
    pub stream: Option<String>,
}

/// One record of a request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// 1 to 256 Unicode characters.
    #[prost(string, tag = "1")]
    pub partition_key: String,
    /// Decimal integer in 0..2^128; overrides the partition key's hash.
    #[prost(string, optional, tag = "2")]
    pub explicit_hash_key: Option<String>,
    #[prost(bytes = "bytes", tag = "3")]
    pub data: Bytes,
    /// The record's id, for a block with `record_id = true` (1 to 64 ASCII
    /// letters, digits and `-._:`); without one the agent gives it one.
    #[prost(string, optional, tag = "4")]
    pub record_id: Option<String>,
}

/// The agent's answer to a request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    /// The request's id (0 when the frame could not be read).
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(enumeration = "Status", tag = "2")]
    pub status: i32,
    /// What went wrong, for a human.
    #[prost(string, tag = "3")]
    pub message: String,
    /// Records spooled for this request.
    #[prost(uint32, tag = "4")]
    pub records: u32,
}

/// Response status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    /// Durable in the spool.
    Ok = 0,
    /// A record's partition key or explicit hash key is invalid.
    InvalidRecord = 1,
    /// A record exceeds the Kinesis record limit.
    RecordTooLarge = 2,
    /// The spool is full (the socket is configured to refuse rather than wait).
    SpoolFull = 3,
    /// The agent is stopping.
    ShuttingDown = 4,
    /// The frame could not be read.
    BadFrame = 5,
    /// The spool failed.
    Internal = 6,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte frame limit")]
    TooLarge { len: usize },
    #[error("empty frame")]
    Empty,
    #[error("unsupported protocol version {got} (this agent speaks {VERSION})")]
    Version { got: u8 },
    #[error("frame is not a valid protobuf message: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

impl FrameError {
    /// Whether the connection can go on (the frame's end is known).
    pub fn recoverable(&self) -> bool {
        !matches!(self, FrameError::TooLarge { .. })
    }
}

/// The whole size (header included) of the frame at the front of `buf`, once its
/// header is there: what a reader must make room for, whether or not all of it came.
pub fn pending_len(buf: &[u8]) -> Option<usize> {
    let header: [u8; HEADER_BYTES] = buf.get(..HEADER_BYTES)?.try_into().ok()?;
    Some(HEADER_BYTES + u32::from_be_bytes(header) as usize)
}

/// How many records the request in `frame` (a whole frame, header included) holds,
/// read from the protobuf wire without decoding anything: what decoding it will
/// cost is known before it is paid. A malformed message counts what was readable
/// (decoding then refuses it).
pub fn count_records(frame: &[u8]) -> usize {
    let mut records = 0;
    top_fields(frame, |key, _| records += usize::from(key == 2 << 3 | 2));
    records
}

/// The id of the request in `frame` (a whole frame, header included), read from
/// the protobuf wire without decoding the records; 0 if it has none or is
/// malformed before it (the last one wins, as when decoding).
pub fn request_id(frame: &[u8]) -> u64 {
    let mut id = 0;
    top_fields(frame, |key, value| {
        if key == 1 << 3 {
            id = value;
        }
    });
    id
}

/// Calls `visit(key, value)` for each top-level field of the message in `frame`
/// (a whole frame, header included), in order, up to the first that cannot be
/// read: `value` is a varint's value, a length-delimited field's length, 0 for
/// fixed-size fields.
fn top_fields(frame: &[u8], mut visit: impl FnMut(u64, u64)) {
    let Some(mut body) = frame.get(HEADER_BYTES + 1..) else {
        return;
    };
    while let Ok(key) = prost::encoding::decode_varint(&mut body) {
        let (value, skip) = match key & 7 {
            0 | 2 => match prost::encoding::decode_varint(&mut body) {
                Ok(v) if key & 7 == 2 => (v, v as usize),
                Ok(v) => (v, 0),
                Err(_) => break,
            },
            1 => (0, 8),
            5 => (0, 4),
            _ => break,
        };
        visit(key, value);
        if skip > body.len() {
            break;
        }
        body = &body[skip..];
    }
}

/// Takes the next complete frame off `buf` and decodes it with `M`. `Ok(None)`: more
/// bytes are needed (the caller makes room for them: see [`pending_len`]).
pub fn decode<M: Message + Default>(buf: &mut BytesMut) -> Result<Option<M>, FrameError> {
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[..HEADER_BYTES].try_into().expect("four bytes")) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len });
    }
    if buf.len() < HEADER_BYTES + len {
        return Ok(None);
    }
    buf.advance(HEADER_BYTES);
    let mut frame = buf.split_to(len).freeze();
    if frame.is_empty() {
        return Err(FrameError::Empty);
    }
    let version = frame.get_u8();
    if version != VERSION {
        return Err(FrameError::Version { got: version });
    }
    Ok(Some(M::decode(frame)?))
}

/// Appends one frame holding `message`.
pub fn encode<M: Message>(message: &M, buf: &mut BytesMut) {
    let len = 1 + message.encoded_len();
    buf.reserve(HEADER_BYTES + len);
    buf.put_u32(len as u32);
    buf.put_u8(VERSION);
    message
        .encode(buf)
        .expect("the buffer was reserved for the whole message");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> Request {
        Request {
            id: 7,
            records: vec![
                Record {
                    partition_key: "k".into(),
                    explicit_hash_key: Some("42".into()),
                    data: Bytes::from_static(b"hello"),
                    record_id: Some("order-1".into()),
                },
                Record {
                    partition_key: "ключ".into(),
                    explicit_hash_key: None,
                    data: Bytes::new(),
                    record_id: None,
                },
            ],
            ack: true,
            stream: Some("audit".into()),
        }
    }

    #[test]
    fn records_are_counted_without_decoding() {
        let mut wire = BytesMut::new();
        encode(&request(), &mut wire);
        assert_eq!(pending_len(&wire), Some(wire.len()));
        assert_eq!(pending_len(&wire[..3]), None);
        assert_eq!(count_records(&wire), 2);
        assert_eq!(request_id(&wire), 7);
        let many = Request {
            id: u64::MAX,
            records: vec![request().records[1].clone(); 1000],
            ack: false,
            stream: None,
        };
        let mut wire = BytesMut::new();
        encode(&many, &mut wire);
        assert_eq!(count_records(&wire), 1000);
        assert_eq!(request_id(&wire), u64::MAX);
        // Garbage counts what was readable, without panicking.
        assert_eq!(count_records(&[0, 0, 0, 3, 1, 0xFF, 0xFF]), 0);
        assert_eq!(count_records(&[0, 0, 0, 3, 1, 0x12, 0x7F]), 1);
    }

    /// A record of the largest size a stream takes (10 MiB, data and key) fits
    /// a frame.
    #[test]
    fn a_10_mib_record_fits_a_frame() {
        let large = Request {
            id: 1,
            records: vec![Record {
                partition_key: "k".repeat(256),
                explicit_hash_key: Some(u128::MAX.to_string()),
                data: Bytes::from(vec![7u8; crate::record::MAX_LARGE_RECORD_BYTES - 256]),
                record_id: None,
            }],
            ack: true,
            stream: None,
        };
        let mut wire = BytesMut::new();
        encode(&large, &mut wire);
        assert_eq!(decode::<Request>(&mut wire).unwrap(), Some(large));
    }

    #[test]
    fn frames_roundtrip_across_partial_reads() {
        let mut wire = BytesMut::new();
        encode(&request(), &mut wire);
        encode(&request(), &mut wire);
        let wire = wire.freeze();
        // Fed one byte at a time, the decoder yields exactly two requests.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(r) = decode::<Request>(&mut buf).unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got, vec![request(), request()]);
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_frames_are_reported() {
        let mut buf = BytesMut::from(&[0xFF, 0xFF, 0xFF, 0xFF][..]);
        let e = decode::<Request>(&mut buf).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { len: 4294967295 }));
        assert!(!e.recoverable());
        assert_eq!(
            e.to_string(),
            "frame of 4294967295 bytes exceeds the 16777216-byte frame limit"
        );
        // Nothing was allocated for the claimed size.
        assert!(buf.capacity() < 1024);
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 9, 0][..]);
        assert!(matches!(
            decode::<Request>(&mut buf),
            Err(FrameError::Version { got: 9 })
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 1, 0xFF, 0xFF][..]);
        assert!(matches!(
            decode::<Request>(&mut buf),
            Err(FrameError::Protobuf(_))
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(
            decode::<Request>(&mut buf),
            Err(FrameError::Empty)
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Arbitrary bytes never panic the decoder nor make it reserve more than one
        /// frame's worth, and it always makes progress or asks for more.
        #[test]
        fn decoder_survives_arbitrary_bytes(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 0..32)) {
            let mut buf = BytesMut::new();
            for c in chunks {
                buf.extend_from_slice(&c);
                loop {
                    let before = buf.len();
                    match decode::<Request>(&mut buf) {
                        Ok(Some(_)) => prop_assert!(buf.len() < before),
                        Ok(None) => break,
                        Err(e) if e.recoverable() => prop_assert!(buf.len() < before),
                        Err(_) => { buf.clear(); break; }
                    }
                }
                prop_assert!(buf.capacity() <= MAX_FRAME_BYTES + 4 + 64 * 32);
            }
        }
    }
}
