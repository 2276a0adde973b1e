//! Tests of streams named by ARN: the form, the key inside the agent, the
//! region, and two ARNs that would share a key.

use super::parse as parse_arn;
use crate::config::streams::tests::{check, problems};

const ARN: &str = "arn:aws:kinesis:eu-west-1:123456789012:stream/logs";

/// A config whose `[kinesis]` holds `kinesis` and which ends with `rest`.
fn config(kinesis: &str, rest: &str) -> String {
    format!(
        "[kinesis]\n{kinesis}\n[spool]\ndir = \"/tmp/x\"\n[[socket]]\npath = \"/tmp/a.sock\"\n{rest}"
    )
}

#[test]
fn an_arn_is_taken_apart_in_every_partition() {
    let a = parse_arn(ARN).unwrap();
    assert_eq!(
        (&*a.partition, &*a.region, &*a.account, &*a.name),
        ("aws", "eu-west-1", "123456789012", "logs")
    );
    let cn = parse_arn("arn:aws-cn:kinesis:cn-north-1:123456789012:stream/a.b-c_d").unwrap();
    assert_eq!((&*cn.partition, &*cn.name), ("aws-cn", "a.b-c_d"));
    let gov = parse_arn("arn:aws-us-gov:kinesis:us-gov-west-1:123456789012:stream/x").unwrap();
    assert_eq!(&*gov.region, "us-gov-west-1");
}

#[test]
fn a_malformed_arn_is_refused_with_the_reason() {
    for (arn, why) in [
        ("arn:aws:kinesis:eu-west-1:123456789012", "too few"),
        (
            "arn:aws:firehose:eu-west-1:123456789012:deliverystream/x",
            "service is not kinesis",
        ),
        (
            "arn:gcp:kinesis:eu-west-1:123456789012:stream/x",
            "partition",
        ),
        ("arn:aws:kinesis::123456789012:stream/x", "region"),
        ("arn:aws:kinesis:eu-west-1:1234:stream/x", "12 digits"),
        (
            "arn:aws:kinesis:eu-west-1:123456789012:table/x",
            "stream/<name>",
        ),
        (
            "arn:aws:kinesis:eu-west-1:123456789012:stream/bad name",
            "not a valid stream name",
        ),
        (
            "arn:aws:kinesis:eu-west-1:123456789012:stream/",
            "not a valid stream name",
        ),
    ] {
        let e = parse_arn(arn).unwrap_err();
        assert!(e.contains(why), "{arn}: {e}");
        assert!(e.contains("expected arn:aws:kinesis:<region>"), "{e}");
    }
    let all = problems(&config(
        "stream = \"arn:aws:kinesis:eu-west-1:12:stream/logs\"",
        "[[file]]\ninclude = [\"/var/log/*.log\"]\nstream = \"arn:aws:kinesis:eu-west-1:123456789012:stream/a b\"\n",
    ));
    assert!(
        all.contains("kinesis.stream \"arn:aws:kinesis:eu-west-1:12:stream/logs\" is not a Kinesis stream ARN (the account is not 12 digits"),
        "{all}"
    );
    assert!(all.contains("file[0].stream \"arn:aws:kinesis:eu-west-1:123456789012:stream/a b\" is not a Kinesis stream ARN"), "{all}");
}

#[test]
fn an_arn_stream_is_keyed_by_its_name_and_takes_the_arn_region() {
    let c = check(&config(
        &format!("stream = {ARN:?}"),
        "[[socket]]\npath = \"/tmp/b.sock\"\nstream = \"logs\"\n",
    ))
    .unwrap();
    assert_eq!(c.kinesis.stream, "logs");
    assert_eq!(c.sockets[0].stream, "logs");
    assert_eq!(c.sockets[1].stream, "logs", "the key names the same stream");
    assert_eq!(c.streams(), ["logs"]);
    assert_eq!(c.stream_arns, [("logs".to_owned(), ARN.to_owned())]);
    assert_eq!(c.kinesis.destination.region.as_deref(), Some("eu-west-1"));
    // A region written beside it that agrees is fine.
    let c = check(&config(
        &format!("stream = {ARN:?}\nregion = \"eu-west-1\""),
        "",
    ))
    .unwrap();
    assert_eq!(c.kinesis.destination.region.as_deref(), Some("eu-west-1"));
}

#[test]
fn a_conflicting_region_is_refused() {
    let all = problems(&config(
        &format!("stream = {ARN:?}\nregion = \"us-east-1\""),
        "",
    ));
    assert!(
        all.contains(&format!("kinesis.region \"us-east-1\" is not the region of stream {ARN:?} (eu-west-1): remove it")),
        "{all}"
    );
    let other = "arn:aws:kinesis:ap-south-1:123456789012:stream/other";
    let all = problems(&config(
        "stream = \"logs\"\nregion = \"eu-west-1\"",
        &format!(
            "stream = {other:?}\n[[destination]]\nstream = \"other\"\nregion = \"eu-west-1\"\n"
        ),
    ));
    assert!(
        all.contains(&format!("destination[0].region \"eu-west-1\" is not the region of stream {other:?} (ap-south-1)")),
        "{all}"
    );
}

#[test]
fn a_source_arn_in_another_region_gets_its_own_destination() {
    let other = "arn:aws:kinesis:ap-south-1:123456789012:stream/other";
    let c = check(&config(
        "stream = \"logs\"\nregion = \"eu-west-1\"\nprofile = \"p\"",
        &format!("stream = {other:?}\n"),
    ))
    .unwrap();
    assert_eq!(c.sockets[0].stream, "other");
    let d = c.destination("other");
    assert_eq!(d.region.as_deref(), Some("ap-south-1"));
    assert_eq!(d.profile.as_deref(), Some("p"), "the rest from [kinesis]");
    assert_eq!(c.destination("logs").region.as_deref(), Some("eu-west-1"));
    // A block that names it by its key, without a region, gets the ARN's.
    let c = check(&config(
        "stream = \"logs\"\nregion = \"eu-west-1\"",
        &format!("stream = {other:?}\n[[destination]]\nstream = \"other\"\nprofile = \"q\"\n"),
    ))
    .unwrap();
    assert_eq!(c.destination("other").region.as_deref(), Some("ap-south-1"));
    assert_eq!(c.destination("other").profile.as_deref(), Some("q"));
    assert_eq!(c.destinations.len(), 1);
}

#[test]
fn a_block_may_name_its_stream_by_arn() {
    let other = "arn:aws:kinesis:eu-west-1:123456789012:stream/other";
    let c = check(&config(
        "stream = \"logs\"",
        &format!("stream = \"other\"\n[[destination]]\nstream = {other:?}\naggregate = false\n"),
    ))
    .unwrap();
    assert_eq!(c.destinations[0].0, "other");
    assert!(!c.delivery.aggregates("other"));
    assert_eq!(c.stream_arns, [("other".to_owned(), other.to_owned())]);
}

#[test]
fn two_arns_with_one_name_are_refused() {
    let mine = "arn:aws:kinesis:eu-west-1:111111111111:stream/logs";
    let theirs = "arn:aws:kinesis:eu-west-1:222222222222:stream/logs";
    let all = problems(&config(
        &format!("stream = {mine:?}"),
        &format!("stream = {theirs:?}\n"),
    ));
    assert!(
        all.contains(&format!("socket[0].stream {theirs:?} and kinesis.stream {mine:?} are two streams named \"logs\"")),
        "{all}"
    );
    assert!(
        all.contains("deliver one of them from a second shardline with its own spool"),
        "{all}"
    );
}
