//! `shardline validate` (the binary) on configs with Firehose mistakes: each is
//! refused with a message naming the key, and the same config without the
//! mistake is accepted (so a refusal for another reason cannot pass).

use std::process::Command;

use crate::util::shardline_bin;

/// Runs `shardline validate` on `text`: (accepted, stdout and stderr).
fn validate(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(shardline_bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `[kinesis]` naming Kinesis stream `logs` (with `kinesis_extra`), a spool,
/// then `rest`.
fn config(kinesis_extra: &str, rest: &str) -> String {
    format!(
        "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\n{kinesis_extra}\n\
         [spool]\ndir = \"/var/lib/shardline-test\"\n{rest}"
    )
}

/// A Firehose destination block for `name`, with `extra` keys.
fn firehose_block(name: &str, extra: &str) -> String {
    format!("[[destination]]\ndelivery_stream = \"{name}\"\nregion = \"us-east-1\"\n{extra}\n")
}

/// Refused, naming every needle; then `fixed` is accepted.
fn refused_then_fixed(bad: &str, needles: &[&str], fixed: &str) {
    let (ok, out) = validate(bad);
    assert!(!ok, "accepted:\n{bad}\n{out}");
    for n in needles {
        assert!(out.contains(n), "{n:?} not in:\n{out}");
    }
    let (ok, out) = validate(fixed);
    assert!(ok, "the fixed config is refused:\n{fixed}\n{out}");
}

#[test]
fn validate_refuses_a_source_with_both_stream_and_delivery_stream() {
    let fh = firehose_block("fh", "");
    refused_then_fixed(
        &config(
            "",
            &format!(
                "[[socket]]\npath = \"/tmp/a.sock\"\nstream = \"logs\"\ndelivery_stream = \"fh\"\n\
                 [[file]]\ninclude = [\"/var/log/app/*.log\"]\nstream = \"logs\"\ndelivery_stream = \"fh\"\n{fh}"
            ),
        ),
        &["socket[0]", "file[0]", "delivery_stream"],
        &config(
            "",
            &format!(
                "[[socket]]\npath = \"/tmp/a.sock\"\ndelivery_stream = \"fh\"\n\
                 [[file]]\ninclude = [\"/var/log/app/*.log\"]\nstream = \"logs\"\n{fh}"
            ),
        ),
    );
}

#[test]
fn validate_refuses_packing_keys_on_a_kinesis_destination() {
    let source = "[[socket]]\npath = \"/tmp/a.sock\"\nstream = \"audit\"\n";
    refused_then_fixed(
        &config(
            "packing = false\n",
            &format!(
                "{source}[[destination]]\nstream = \"audit\"\nregion = \"us-east-1\"\n\
                 packing = true\npacking_max_bytes = 4096\npacking_linger_ms = 10\n"
            ),
        ),
        &[
            "kinesis.packing",
            "destination[0].packing",
            "packing_max_bytes",
            "packing_linger_ms",
        ],
        &config(
            "",
            &format!("{source}[[destination]]\nstream = \"audit\"\nregion = \"us-east-1\"\n"),
        ),
    );
}

#[test]
fn validate_refuses_a_bad_delivery_stream_name() {
    let long = "x".repeat(65);
    refused_then_fixed(
        &config(
            "",
            &format!(
                "[[socket]]\npath = \"/tmp/a.sock\"\ndelivery_stream = \"app logs!\"\n\
                 [[socket]]\npath = \"/tmp/b.sock\"\ndelivery_stream = \"{long}\"\n{}{}",
                firehose_block("app logs!", ""),
                firehose_block(&long, "")
            ),
        ),
        &["delivery_stream", "\"app logs!\"", &format!("\"{long}\"")],
        &config(
            "",
            &format!(
                "[[socket]]\npath = \"/tmp/a.sock\"\ndelivery_stream = \"app_logs-1.x\"\n\
                 [[socket]]\npath = \"/tmp/b.sock\"\ndelivery_stream = \"{}\"\n{}{}",
                &long[..64],
                firehose_block("app_logs-1.x", ""),
                firehose_block(&long[..64], "")
            ),
        ),
    );
}

#[test]
fn validate_refuses_packing_max_bytes_above_the_firehose_record_limit() {
    let source = "[[socket]]\npath = \"/tmp/a.sock\"\ndelivery_stream = \"fh\"\n";
    refused_then_fixed(
        &config(
            "",
            &format!(
                "{source}{}",
                firehose_block("fh", "packing_max_bytes = 1024001")
            ),
        ),
        &["packing_max_bytes", "1024001"],
        &config(
            "",
            &format!(
                "{source}{}",
                firehose_block("fh", "packing_max_bytes = 1024000")
            ),
        ),
    );
    // A source's explicit record limit above a Firehose record's data is
    // refused as well (left at its default, it is lowered).
    refused_then_fixed(
        &config(
            "",
            &format!(
                "[[file]]\ninclude = [\"/var/log/app/*.log\"]\ndelivery_stream = \"fh\"\n\
                 max_record_bytes = 1048000\n[[socket]]\npath = \"/tmp/a.sock\"\n\
                 delivery_stream = \"fh\"\nmax_record_bytes = 1024000\n{}",
                firehose_block("fh", "")
            ),
        ),
        &[
            "file[0].max_record_bytes 1048000",
            "socket[0].max_record_bytes 1024000",
        ],
        &config(
            "",
            &format!(
                "[[file]]\ninclude = [\"/var/log/app/*.log\"]\ndelivery_stream = \"fh\"\n\
                 max_record_bytes = 1023999\n{}",
                firehose_block("fh", "")
            ),
        ),
    );
}

/// `[kinesis].endpoint` is a Kinesis endpoint when `[kinesis]` names a Kinesis
/// stream: a Firehose stream without its own block would have no endpoint of
/// its own, so validate refuses it and says why.
#[test]
fn validate_refuses_a_firehose_stream_without_its_block_when_kinesis_has_an_endpoint() {
    let source = "[[socket]]\npath = \"/tmp/a.sock\"\ndelivery_stream = \"fh\"\n";
    let endpoint = "endpoint = \"http://127.0.0.1:4567\"\n";
    refused_then_fixed(
        &config(endpoint, source),
        &["\"fh\"", "endpoint", "[[destination]]"],
        &config(
            endpoint,
            &format!(
                "{source}{}",
                firehose_block("fh", "endpoint = \"http://127.0.0.1:4568\"")
            ),
        ),
    );
    // Without an endpoint in [kinesis], the stream takes region and
    // credentials from [kinesis] and needs no block.
    let (ok, out) = validate(&config("", source));
    assert!(ok, "{out}");
}
