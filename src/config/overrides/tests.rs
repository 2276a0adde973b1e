//! Per-destination delivery settings and the default destination written as
//! a `[[destination]]`.

use std::path::Path;
use std::time::Duration;

use crate::config::parse;

const TAIL: &str = r#"
[spool]
dir = "/var/lib/shardline"
[[socket]]
path = "/run/a.sock"
[[socket]]
path = "/run/b.sock"
stream = "audit"
"#;

#[test]
fn a_default_destination_block_is_the_same_as_kinesis() {
    let shorthand = parse(
        &format!("[kinesis]\nstream = \"logs\"\nregion = \"eu-west-1\"\nmax_buffered_time_ms = 5\n{TAIL}"),
        Path::new("t.toml"),
    )
    .unwrap();
    let block = parse(
        &format!("[[destination]]\nstream = \"logs\"\nregion = \"eu-west-1\"\ndefault = true\nmax_buffered_time_ms = 5\n{TAIL}"),
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(format!("{shorthand:?}"), format!("{block:?}"));
    let own = &shorthand.delivery.overrides;
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].0, "logs");
    assert_eq!(own[0].1.linger, Some(Duration::from_millis(5)));
}

#[test]
fn each_destination_sets_its_own_delivery() {
    let c = parse(
        &format!(
            "[kinesis]\nstream = \"logs\"\nregion = \"eu-west-1\"\n[delivery]\nmax_record_age_secs = 60\n\
             [[destination]]\nstream = \"audit\"\nmax_buffered_time_ms = 1000\nrate_limit_percent = 50\n\
             max_record_age_secs = 0\ndead_letter_path = \"/var/lib/shardline/audit-dead.ndjson\"\n\
             max_inflight_bytes = 2097152\naggregate = false\n{TAIL}"
        ),
        Path::new("t.toml"),
    )
    .unwrap();
    let (route, own) = &c.delivery.overrides[0];
    assert_eq!(route, "audit");
    assert_eq!(own.linger, Some(Duration::from_millis(1000)));
    assert_eq!(own.shard_rate_factor, Some(0.5));
    assert_eq!(own.max_record_age, Some(None), "0: never give up");
    assert_eq!(own.max_inflight_bytes, Some(2_097_152));
    assert_eq!(
        own.dead_letter_path.as_deref(),
        Some(Path::new("/var/lib/shardline/audit-dead.ndjson"))
    );
    assert!(!c.delivery.aggregates("audit"));
    assert_eq!(c.delivery.max_record_age, Some(Duration::from_secs(60)));
}

#[test]
fn mistakes_are_named() {
    for (text, says) in [
        (
            "[kinesis]\nstream = \"logs\"\n[[destination]]\nstream = \"x\"\ndefault = true\n",
            "destination[0] says default = true and [kinesis] is set too",
        ),
        (
            "[[destination]]\nstream = \"logs\"\ndefault = true\n[[destination]]\nstream = \"audit\"\ndefault = true\n",
            "destination[0] and destination[1] both say default = true",
        ),
        (
            "[kinesis]\nstream = \"logs\"\n[[destination]]\ndelivery_stream = \"audit\"\nmax_buffered_time_ms = 5\n",
            "destination[0].max_buffered_time_ms is for Kinesis streams; a Firehose stream takes packing_linger_ms",
        ),
        (
            "[kinesis]\nstream = \"logs\"\nrate_limit_percent = 120\n",
            "kinesis.rate_limit_percent 120 is outside 0..=100",
        ),
        (
            "[kinesis]\nstream = \"logs\"\n[[destination]]\nstream = \"audit\"\ndead_letter_path = \"dead.ndjson\"\n",
            "destination[0].dead_letter_path",
        ),
        (
            "[kinesis]\nstream = \"logs\"\ndead_letter_path = \"/d/x\"\n[delivery]\ndead_letter_path = \"/d/x\"\n",
            "dead_letter_path /d/x is named twice",
        ),
        (
            "[kinesis]\nstream = \"logs\"\n[[destination]]\nstream = \"audit\"\ndead_letter_path = \"/var/log/audit-dead.log\"\n[[file]]\ninclude = [\"/var/log/*.log\"]\n",
            "file[0].include matches the dead-letter file /var/log/audit-dead.log",
        ),
    ] {
        let e = parse(&format!("{text}{TAIL}"), Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{text}: {e}");
    }
}
