//! The aggregation format both ways: against prost, against damage, and
//! `deaggregate(aggregate(xs)) == xs` within the size limits.

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;

use super::{
    deaggregate, encode_all, is_aggregated, proto, Aggregate, Aggregator, Codec, DecodeError,
    Format, Limits, Packs, Pending,
};
use crate::record::{UserRecord, MAX_RECORD_BYTES};

fn pending(pk: &str, ehk: Option<u128>, data: &[u8]) -> Pending {
    Pending::new(
        0,
        0,
        UserRecord {
            partition_key: pk.into(),
            explicit_hash_key: ehk,
            data: Bytes::copy_from_slice(data),
        },
    )
}

const NO_LIMIT: Limits = Limits {
    max_bytes: MAX_RECORD_BYTES,
    max_records: usize::MAX,
    format: Format::Kpl,
    packs: None,
};

fn aggregate(records: Vec<Pending>, limits: &Limits) -> Vec<Aggregate> {
    let mut out = Vec::new();
    let mut agg = Aggregator::new();
    for r in records {
        if let Err(r) = agg.try_add(r, limits) {
            out.push(agg.take());
            agg.try_add(r, limits)
                .expect("empty aggregator takes any record");
        }
    }
    if !agg.is_empty() {
        out.push(agg.take());
    }
    out
}

fn roundtrip(agg: &Aggregate) -> Vec<UserRecord> {
    let e = agg.encode();
    let ehk = e.explicit_hash_key.as_deref().map(|k| k.parse().unwrap());
    deaggregate(&e.partition_key, ehk, &e.data).unwrap()
}

#[test]
fn encoding_matches_prost_and_keeps_required_fields() {
    let records = vec![
        pending("a", None, b""),
        pending("a", Some(7), b"x"),
        pending("b", Some(7), b"yz"),
    ];
    let aggs = aggregate(records, &NO_LIMIT);
    assert_eq!(aggs.len(), 1);
    let e = aggs[0].encode();
    assert_eq!(e.size(), aggs[0].size());
    let body = &e.data[4..e.data.len() - 16];
    let expected = proto::AggregatedRecord {
        partition_key_table: vec!["a".into(), "b".into()],
        explicit_hash_key_table: vec!["7".into()],
        records: vec![
            proto::Record {
                partition_key_index: 0,
                explicit_hash_key_index: None,
                data: Bytes::new(),
                tags: vec![],
            },
            proto::Record {
                partition_key_index: 0,
                explicit_hash_key_index: Some(0),
                data: Bytes::from_static(b"x"),
                tags: vec![],
            },
            proto::Record {
                partition_key_index: 1,
                explicit_hash_key_index: Some(0),
                data: Bytes::from_static(b"yz"),
                tags: vec![],
            },
        ],
    };
    assert_eq!(body, expected.encode_to_vec().as_slice());
    // The first record has index 0 and empty data: both fields are still present
    // (`08 00` and `1a 00`).
    let first_record = &expected.records[0].encode_to_vec();
    assert_eq!(first_record.as_slice(), &[0x08, 0x00, 0x1a, 0x00]);
}

#[test]
fn checksum_and_magic_mismatch_are_detected() {
    let aggs = aggregate(
        vec![pending("a", None, b"one"), pending("b", None, b"two")],
        &NO_LIMIT,
    );
    let e = aggs[0].encode();
    let mut bad = e.data.to_vec();
    let n = bad.len();
    bad[n - 20] ^= 1; // a byte of the protobuf body
    assert!(matches!(
        deaggregate("a", None, &Bytes::from(bad.clone())),
        Err(DecodeError::Checksum { .. })
    ));
    bad[n - 20] ^= 1;
    bad[n - 1] ^= 1; // a byte of the trailer
    assert!(matches!(
        deaggregate("a", None, &Bytes::from(bad.clone())),
        Err(DecodeError::Checksum { .. })
    ));
    bad[n - 1] ^= 1;
    // A wrong magic number: the data is not an aggregate, and reads as one
    // opaque record, as the KCL reads it.
    bad[0] = 0;
    let plain = deaggregate("a", None, &Bytes::from(bad.clone())).unwrap();
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].data, bad);
    assert!(matches!(
        deaggregate("a", None, &Bytes::from_static(&[0xF3, 0x89, 0x9A, 0xC2, 1])),
        Err(DecodeError::Truncated { len: 5 })
    ));
}

#[test]
fn lone_record_goes_unaggregated() {
    let aggs = aggregate(vec![pending("k", Some(5), b"data")], &NO_LIMIT);
    let e = aggs[0].encode();
    assert_eq!(&e.data[..], b"data");
    assert_eq!(e.partition_key, "k");
    assert_eq!(e.explicit_hash_key.as_deref(), Some("5"));
}

fn arb_record() -> impl Strategy<Value = (String, Option<u128>, Vec<u8>)> {
    (
        prop_oneof!["[a-c]{1,2}", "\\PC{1,20}", "[a-z0-9]{200,256}",],
        proptest::option::of(any::<u128>()),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..20_000),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn deaggregate_of_aggregate_is_identity(
        xs in proptest::collection::vec(arb_record(), 1..200),
        max_bytes in prop_oneof![Just(MAX_RECORD_BYTES), 64usize..60_000],
        max_records in prop_oneof![Just(usize::MAX), 1usize..50],
    ) {
        let limits = Limits { max_bytes, max_records, format: Format::Kpl, packs: None };
        let records: Vec<Pending> = xs
            .iter()
            .map(|(pk, ehk, data)| pending(pk, *ehk, data))
            .collect();
        let aggs = aggregate(records, &limits);
        let mut decoded = Vec::new();
        for agg in &aggs {
            let e = agg.encode();
            prop_assert_eq!(e.size(), agg.size());
            prop_assert!(e.size() <= MAX_RECORD_BYTES);
            if agg.len() > 1 {
                prop_assert!(e.size() <= max_bytes);
                prop_assert!(agg.len() <= max_records);
                prop_assert!(is_aggregated(&e.data));
            }
            decoded.extend(roundtrip(agg));
        }
        let expected: Vec<UserRecord> = xs
            .into_iter()
            .map(|(pk, ehk, data)| UserRecord { partition_key: pk, explicit_hash_key: ehk, data: data.into() })
            .collect();
        prop_assert_eq!(decoded, expected);
    }
}

#[test]
fn full_aggregates_stay_within_one_mebibyte() {
    // Records sized so that the limit falls inside the length varints.
    let mut records = Vec::new();
    for i in 0..400 {
        records.push(pending(
            &format!("key-{i}"),
            None,
            &vec![b'x'; 16_380 + i % 7],
        ));
    }
    let aggs = aggregate(records, &NO_LIMIT);
    assert!(aggs.len() > 4);
    for a in &aggs[..aggs.len() - 1] {
        let size = a.encode().size();
        assert!(size <= MAX_RECORD_BYTES, "{size}");
        // Full: no room left for one more record of the same kind.
        assert!(size > MAX_RECORD_BYTES - 16_500, "{size}");
    }
}

#[test]
fn an_encoded_aggregate_gives_up_its_buffer_without_a_copy() {
    // The Kinesis client turns each entry's bytes into the SDK's `Vec`; a
    // request in flight holds its aggregates once only while that takes the
    // buffer itself, which it does for a buffer nothing else shares.
    let records = (0..50)
        .map(|i| pending(&format!("k{i}"), None, &[b'y'; 700]))
        .collect();
    let aggs = aggregate(records, &NO_LIMIT);
    let refs: Vec<&Aggregate> = aggs.iter().collect();
    for e in encode_all(&refs) {
        let at = e.data.as_ptr();
        let len = e.data.len();
        let v = Vec::from(e.data);
        assert_eq!((v.as_ptr(), v.len()), (at, len));
    }
}

const LINES: Limits = Limits {
    max_bytes: 1_024_000,
    max_records: usize::MAX,
    format: Format::Lines,
    packs: None,
};

/// Packs records into line aggregates the way the router does: seal when one
/// does not fit.
fn pack(records: Vec<Pending>, limits: &Limits) -> Vec<Aggregate> {
    let mut out = Vec::new();
    let mut agg = Aggregator::new();
    for p in records {
        if let Err(p) = agg.try_add(p, limits) {
            out.push(agg.take());
            agg.try_add(p, limits)
                .expect("an empty aggregator takes a record");
        }
    }
    if !agg.is_empty() {
        out.push(agg.take());
    }
    out
}

#[test]
fn lines_are_packed_with_a_newline_each_and_no_key() {
    let records = ["a", "bb", "", "ccc"]
        .iter()
        .map(|d| pending("key", Some(7), d.as_bytes()))
        .collect();
    let aggs = pack(records, &LINES);
    assert_eq!(aggs.len(), 1);
    let e = aggs[0].encode();
    assert_eq!(&e.data[..], b"a\nbb\n\nccc\n");
    assert_eq!(e.partition_key, "");
    assert_eq!(e.explicit_hash_key, None);
    assert_eq!(aggs[0].size(), e.data.len(), "the size is exact");
    assert_eq!(aggs[0].format(), Format::Lines);
}

#[test]
fn a_lone_line_keeps_its_newline() {
    let one = Limits {
        max_records: 1,
        ..LINES
    };
    let aggs = pack(
        vec![pending("k", None, b"x"), pending("k", None, b"y")],
        &one,
    );
    let data: Vec<Bytes> = aggs.iter().map(|a| a.encode().data).collect();
    assert_eq!(
        data,
        [Bytes::from_static(b"x\n"), Bytes::from_static(b"y\n")]
    );
}

#[test]
fn line_aggregates_stay_within_their_size() {
    // 256-byte lines: 3,984 fit in 1,024,000 bytes with their newlines.
    let records = (0..10_000u32)
        .map(|i| Pending::new(1, i, UserRecord::new("k", vec![b'x'; 256])))
        .collect();
    let aggs = pack(records, &LINES);
    for a in &aggs {
        let e = a.encode();
        assert!(e.data.len() <= 1_024_000, "{}", e.data.len());
        assert_eq!(e.data.len(), a.len() * 257);
    }
    assert_eq!(aggs[0].len(), 1_024_000 / 257);
    assert_eq!(aggs.iter().map(Aggregate::len).sum::<usize>(), 10_000);
}

#[test]
fn encode_all_mixes_line_and_kpl_aggregates_in_order() {
    let lines = pack(
        vec![pending("k", None, b"l1"), pending("k", None, b"l2")],
        &LINES,
    );
    let kpl = pack(
        vec![pending("a", None, b"k1"), pending("b", None, b"k2")],
        &NO_LIMIT,
    );
    let out = encode_all(&[&lines[0], &kpl[0]]);
    assert_eq!(&out[0].data[..], b"l1\nl2\n");
    assert!(is_aggregated(&out[1].data));
    let back = deaggregate(&out[1].partition_key, None, &out[1].data).unwrap();
    assert_eq!(back.len(), 2);
}

fn lines(n: usize) -> Vec<Pending> {
    (0..n)
        .map(|i| {
            let line = format!(
                "2026-12-06T21:{:02}:00Z GET /api/items/{i} 200 {} ms",
                i % 60,
                i * 7
            );
            pending(&format!("k{}", i % 5), None, line.as_bytes())
        })
        .collect()
}

/// The lines an aggregate carries, read as a consumer does: deaggregate, then
/// decompress each user record and split it at its newlines.
fn unpacked(agg: &Aggregate, codec: Codec) -> Vec<Bytes> {
    roundtrip(agg)
        .iter()
        .flat_map(|r| super::unpack(codec, &r.data).unwrap())
        .collect()
}

#[test]
fn packs_read_back_as_their_lines_with_every_codec() {
    for codec in [Codec::None, Codec::Gzip(6), Codec::Zstd(3)] {
        for max_bytes in [0, 300, 4096] {
            let limits = Limits {
                max_bytes: 8192,
                max_records: usize::MAX,
                format: Format::Kpl,
                packs: Some(Packs { codec, max_bytes }),
            };
            let records = lines(500);
            let want: Vec<Bytes> = records.iter().map(|r| r.record.data.clone()).collect();
            let aggs = aggregate(records, &limits);
            let mut got = Vec::new();
            for agg in &aggs {
                assert!(agg.size() <= 8192, "{codec:?} {max_bytes}: {}", agg.size());
                assert_eq!(agg.encode().size(), agg.size(), "{codec:?} {max_bytes}");
                got.extend(unpacked(agg, codec));
            }
            assert_eq!(got, want, "{codec:?} {max_bytes}");
            assert_eq!(aggs.iter().map(Aggregate::len).sum::<usize>(), 500);
        }
    }
}

#[test]
fn packed_lines_compress_and_a_lone_pack_goes_as_itself() {
    let limits = Limits {
        max_bytes: MAX_RECORD_BYTES,
        max_records: 1,
        format: Format::Kpl,
        packs: Some(Packs {
            codec: Codec::Zstd(3),
            max_bytes: 64 * 1024,
        }),
    };
    let records = lines(1000);
    let raw: usize = records.iter().map(|r| r.record.data.len() + 1).sum();
    let aggs = aggregate(records, &limits);
    // One pack per aggregate (max_records = 1), each a zstd frame, not KPL.
    for agg in &aggs {
        let e = agg.encode();
        assert!(!is_aggregated(&e.data));
        assert_eq!(&e.data[..4], &[0x28, 0xB5, 0x2F, 0xFD]);
    }
    let sent: usize = aggs.iter().map(Aggregate::size).sum();
    assert!(raw > 4 * sent, "{raw} bytes became {sent}");
}
