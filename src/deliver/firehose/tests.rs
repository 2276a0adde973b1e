//! The Firehose names, options and error classes, one by one; `dispatch.rs`
//! beside this file drives a Firehose stream's dispatcher.

mod dispatch;

use super::*;
use crate::deliver::kinesis::ErrorClass;

#[test]
fn names_inside_the_agent() {
    assert_eq!(route("web-logs"), "firehose:web-logs");
    assert_eq!(stream_name("firehose:web-logs"), Some("web-logs"));
    assert_eq!(stream_name("web-logs"), None);
}

#[test]
fn a_firehose_stream_is_one_shard_of_every_key() {
    let s = shard();
    assert!(s.contains(0) && s.contains(u128::MAX));
}

#[test]
fn firehose_options_pack_lines_without_a_shard_limit() {
    let mut base = crate::deliver::tests::options();
    base.packing = vec![(
        route("one"),
        Packing {
            enabled: false,
            max_bytes: 5000,
            linger: Duration::from_millis(20),
        },
    )];
    let packed = options(&route("other"), &base);
    assert_eq!(packed.aggregation.format, Format::Lines);
    assert_eq!(packed.aggregation.max_bytes, MAX_RECORD_BYTES);
    assert_eq!(packed.aggregation.max_records, usize::MAX);
    assert_eq!(packed.linger, Duration::from_secs(1));
    assert_eq!(packed.shard_rate_factor, 0.0);
    assert!(packed.batch_max_bytes <= MAX_BATCH_BYTES);
    let one = options(&route("one"), &base);
    assert_eq!(one.aggregation.max_records, 1);
    assert_eq!(one.aggregation.max_bytes, 5000);
    assert_eq!(one.linger, Duration::from_millis(20));
}

#[test]
fn firehose_codes_are_classified() {
    assert_eq!(
        ErrorCode::kinesis("ServiceUnavailableException").class(),
        ErrorClass::Throttled
    );
    assert_eq!(
        ErrorCode::kinesis("InternalFailure").class(),
        ErrorClass::Transient
    );
    assert_eq!(
        ErrorCode::kinesis("InvalidArgumentException").class(),
        ErrorClass::Permanent
    );
    for code in ["InvalidKMSResourceException", "InvalidSourceException"] {
        assert_eq!(ErrorCode::kinesis(code).class(), ErrorClass::Environment);
    }
}
