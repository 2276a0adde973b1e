//! Tests of the whole file: defaults, every problem listed at once, and what
//! `validate` refuses that `run` would refuse.

use super::*;

fn check(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("test.toml"))
}

const MINIMAL: &str = r#"
    [kinesis]
    stream = "logs"
    [spool]
    dir = "/tmp/x"
    [[socket]]
    path = "/tmp/a.sock"
    [[socket]]
    path = "/tmp/b.sock"
    stream = "other"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = check(MINIMAL).unwrap();
    assert_eq!(c.sockets[0].stream, "logs");
    assert_eq!(c.sockets[1].stream, "other");
    assert_eq!(c.streams(), vec!["logs", "other"]);
    assert_eq!(c.delivery.max_connections, 24);
    assert_eq!(c.delivery.batch_max_records, 500);
    assert_eq!(c.metrics.listen, "127.0.0.1:9717".parse().unwrap());
}

#[test]
fn metrics_listen_must_be_an_address() {
    let c = check(&format!("{MINIMAL}\n[metrics]\nlisten = \"[::1]:0\"\n")).unwrap();
    assert_eq!(c.metrics.listen, "[::1]:0".parse().unwrap());
    let e = check(&format!("{MINIMAL}\n[metrics]\nlisten = \"localhost\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("metrics.listen \"localhost\""), "{e}");
    let e = check(&format!("{MINIMAL}\n[metrics]\nport = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("port"), "{e}");
}

#[test]
fn unknown_key_is_named() {
    let text = MINIMAL.replace("dir = \"/tmp/x\"", "dir = \"/tmp/x\"\nmax_bites = 3");
    let e = check(&text).unwrap_err().to_string();
    assert!(e.contains("max_bites"), "{e}");
}

#[test]
fn every_problem_is_listed() {
    let e = check(
        r#"
        [kinesis]
        region = "us-east-1"
        [delivery]
        batch_max_records = 501
        [spool]
        max_bytes = 10
        [[socket]]
        stream = "bad name"
    "#,
    )
    .unwrap_err();
    let ConfigError::Invalid { problems, .. } = &e else {
        panic!("{e}");
    };
    let all = problems.join("\n");
    for needle in [
        "kinesis.stream is missing",
        "batch_max_records 501",
        "spool.dir is missing",
        "spool.max_bytes 10",
        "socket[0].path is missing",
        "socket[0].stream \"bad name\"",
    ] {
        assert!(all.contains(needle), "{needle:?} not in\n{all}");
    }
    assert_eq!(problems.len(), 6, "{all}");
}

#[test]
fn file_block_gets_defaults_and_its_stream() {
    let c = check(
        r#"
        [kinesis]
        stream = "logs"
        [spool]
        dir = "/tmp/x"
        [[file]]
        include = ["/var/log/app/*.log"]
        [[file]]
        include = ["/var/log/**/*.json"]
        exclude = ["/var/log/private/**"]
        stream = "json"
        read_from = "end"
        partition_key = { field = "user" }
        multiline_start = '^\d{4}-'
        oversized = "truncate"
        invalid_utf8 = "replace"
        ignore_older_secs = 86400
    "#,
    )
    .unwrap();
    assert!(c.sockets.is_empty());
    assert_eq!(c.streams(), vec!["logs", "json"]);
    let (a, b) = (&c.files[0], &c.files[1]);
    assert_eq!(a.stream, "logs");
    assert_eq!(a.read_from, ReadFrom::Beginning);
    assert_eq!(a.partition_key, PartitionKey::Random);
    assert_eq!(a.max_record_bytes, MAX_FILE_RECORD_BYTES);
    assert_eq!(a.oversized, Oversized::Split);
    assert_eq!(a.invalid_utf8, InvalidUtf8::Pass);
    assert!(a.matches(Path::new("/var/log/app/x.log")));
    assert!(
        !a.matches(Path::new("/var/log/app/sub/x.log")),
        "* crossed a /"
    );
    assert_eq!(b.partition_key, PartitionKey::JsonField("user".into()));
    assert!(b.matches(Path::new("/var/log/a/b/c.json")));
    assert!(!b.matches(Path::new("/var/log/private/c.json")));
    assert!(b
        .multiline_start
        .as_ref()
        .unwrap()
        .is_match(b"2024-01-01 x"));
    assert_eq!(b.ignore_older, Some(Duration::from_secs(86400)));
}

#[test]
fn every_file_problem_is_listed() {
    let e = check(
        r#"
        [kinesis]
        stream = "logs"
        [spool]
        dir = "/tmp/x"
        [[file]]
        include = ["relative/*.log", "/a/[z.log"]
        partition_key = "shard"
        multiline_start = "("
        max_record_bytes = 10485505
        [[file]]
        stream = "bad name"
    "#,
    )
    .unwrap_err();
    let ConfigError::Invalid { problems, .. } = &e else {
        panic!("{e}");
    };
    let all = problems.join("\n");
    for needle in [
        "file[0].include pattern \"relative/*.log\" is not an absolute path",
        "file[0].include pattern \"/a/[z.log\" is not a valid glob",
        "file[0].partition_key \"shard\"",
        "file[0].multiline_start \"(\"",
        "file[0].max_record_bytes 10485505 is outside 1..=10485504",
        "file[1].include is missing",
        "file[1].stream \"bad name\"",
    ] {
        assert!(all.contains(needle), "{needle:?} not in\n{all}");
    }
    assert_eq!(problems.len(), 7, "{all}");
}

#[test]
fn no_sources_is_a_problem() {
    let e = check("[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no sources: add at least one [[socket]], [[file]] or [[journald]]"),
        "{e}"
    );
}

#[test]
fn json_format_is_read_per_source() {
    let text = r#"
        [kinesis]
        stream = "logs"
        [spool]
        dir = "/tmp/x"
        [[socket]]
        path = "/tmp/a.sock"
        format = "json"
        json_merge = true
        [[socket]]
        path = "/tmp/b.sock"
        [[file]]
        include = ["/var/log/app/*.log"]
        format = "json"
        fields = { env = "prod", team = "web" }
    "#;
    let c = check(text).unwrap();
    assert_eq!(
        c.sockets[0].format,
        RecordFormat::Json(JsonFormat {
            fields: vec![],
            merge: true,
            ec2_identity: false,
            ..Default::default()
        })
    );
    assert_eq!(c.sockets[1].format, RecordFormat::Raw);
    assert_eq!(
        c.files[0].format,
        RecordFormat::Json(JsonFormat {
            fields: vec![("env".into(), "prod".into()), ("team".into(), "web".into())],
            merge: false,
            ec2_identity: false,
            ..Default::default()
        })
    );
}

#[test]
fn json_fields_may_not_collide_with_the_built_in_keys() {
    let e = check(
        r#"
        [kinesis]
        stream = "logs"
        [spool]
        dir = "/tmp/x"
        [[socket]]
        path = "/tmp/b.sock"
        format = "yaml"
    "#,
    )
    .unwrap_err()
    .to_string();
    // An unknown format name is a parse error, before validation.
    assert!(e.contains("yaml"), "{e}");
    let e = check(
        r#"
        [kinesis]
        stream = "logs"
        [spool]
        dir = "/tmp/x"
        [[file]]
        include = ["/var/log/app/*.log"]
        format = "json"
        fields = { host = "x", timestamp = "y", "" = "z", env = "ok" }
        [[file]]
        include = ["/var/log/b/*.log"]
        fields = { env = "prod" }
        json_merge = true
        [[file]]
        include = ["/var/log/c/*.log"]
        format = "json"
        max_record_bytes = 100
        fields = { az = "x" }
        [[socket]]
        path = "/tmp/a.sock"
        framing = "frames"
        format = "json"
        [[socket]]
        path = "/tmp/b.sock"
        ec2_identity = true
    "#,
    )
    .unwrap_err()
    .to_string();
    for want in [
        "file[0].fields key \"host\" collides",
        "file[0].fields key \"timestamp\" collides",
        "file[0].fields has an empty key",
        "file[1].fields needs format = \"json\"",
        "file[1].json_merge needs format = \"json\"",
        "file[2].max_record_bytes 100 is below 1024",
        "socket[0]: format = \"json\" needs framing = \"lines\"",
        "file[2].fields key \"az\" collides",
        "socket[1].ec2_identity needs format = \"json\"",
    ] {
        assert!(e.contains(want), "{want:?} not in {e}");
    }
    assert!(!e.contains("\"env\""), "{e}");
    assert!(e.contains("9 problem(s)"), "{e}");
}

#[test]
fn a_destination_takes_what_it_leaves_out_from_kinesis() {
    let text = r#"
        [kinesis]
        stream = "logs"
        region = "us-east-1"
        endpoint = "http://127.0.0.1:4567"
        profile = "base"
        role_arn = "arn:aws:iam::123456789012:role/logs-writer"
        [spool]
        dir = "/tmp/x"
        [[socket]]
        path = "/tmp/a.sock"
        stream = "other"
        [[socket]]
        path = "/tmp/b.sock"
        stream = "third"
        [[destination]]
        stream = "other"
        role_arn = "arn:aws:iam::111122223333:role/ops/writer"
        external_id = "tenant:42"
        sts_endpoint = "https://sts.eu-west-1.amazonaws.com"
        [[destination]]
        stream = "third"
        region = "eu-west-1"
    "#;
    let c = check(text).unwrap();
    let role = c.kinesis.destination.role.as_ref().unwrap();
    assert_eq!(role.role_arn, "arn:aws:iam::123456789012:role/logs-writer");
    assert_eq!(role.session_name, "shardline");
    let other = c.destination("other");
    assert_eq!(other.region.as_deref(), Some("us-east-1"));
    assert_eq!(other.endpoint.as_deref(), Some("http://127.0.0.1:4567"));
    assert_eq!(other.profile.as_deref(), Some("base"));
    let role = other.role.as_ref().unwrap();
    assert_eq!(role.role_arn, "arn:aws:iam::111122223333:role/ops/writer");
    assert_eq!(role.external_id.as_deref(), Some("tenant:42"));
    assert_eq!(
        role.sts_endpoint.as_deref(),
        Some("https://sts.eu-west-1.amazonaws.com")
    );
    // Its own region: not the default endpoint; and no role of [kinesis].
    let third = c.destination("third");
    assert_eq!(third.region.as_deref(), Some("eu-west-1"));
    assert_eq!(third.endpoint, None);
    assert_eq!(third.role, None);
    assert_eq!(c.destination("logs"), &c.kinesis.destination);
    assert_eq!(
        c.stream_destinations()[1],
        (
            "other".to_owned(),
            "us-east-1 at http://127.0.0.1:4567, profile base, as arn:aws:iam::111122223333:role/ops/writer"
                .to_owned()
        )
    );
}

/// Regression (issue 22, N4): `user:pass@` in an endpoint was accepted without a
/// word (and then shown in the log and `shardline status`); a proxy may take them.
#[test]
fn credentials_in_an_endpoint_are_refused_without_being_shown() {
    let text = format!(
        r#"{MINIMAL}
        [[destination]]
        stream = "other"
        endpoint = "https://alice:s3cret@kinesis.example"
        role_arn = "arn:aws:iam::123456789012:role/w"
        sts_endpoint = "https://bob@sts.example"
        "#
    );
    let e = check(&text).unwrap_err().to_string();
    for needle in [
        "destination[0].endpoint \"https://***@kinesis.example\" carries credentials",
        "destination[0].sts_endpoint \"https://***@sts.example\" carries credentials",
        "AWS endpoints take none",
    ] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
    assert!(
        !e.contains("s3cret") && !e.contains("alice") && !e.contains("bob"),
        "{e}"
    );
    let proxied = MINIMAL.replace(
        "stream = \"logs\"\n",
        "stream = \"logs\"\n    proxy = \"http://carol:pw@proxy:3128\"\n",
    );
    assert!(check(&proxied).is_ok());
    let bad_proxy = proxied.replace("http://carol", "ftp://carol");
    let e = check(&bad_proxy).unwrap_err().to_string();
    assert!(e.contains("\"ftp://***@proxy:3128\""), "{e}");
    assert!(!e.contains("carol") && !e.contains(":pw"), "{e}");
}

#[test]
fn every_destination_problem_is_listed() {
    let text = format!(
        r#"{MINIMAL}
        [[destination]]
        stream = "other"
        role_arn = "arn:aws:iam::12345:role/w"
        external_id = "x"
        session_name = "has space"
        sts_endpoint = "sts.amazonaws.com"
        endpoint = "kinesis.local"
        [[destination]]
        stream = "other"
        [[destination]]
        stream = "logs"
        [[destination]]
        stream = "nobody-writes-this"
        external_id = "tenant"
        "#
    );
    let e = check(&text).unwrap_err().to_string();
    for needle in [
        "destination[0].role_arn: \"arn:aws:iam::12345:role/w\" is not an IAM role ARN (the account is not 12 digits)",
        "destination[0].external_id: it is not 2-1224 characters",
        "destination[0].session_name: \"has space\" is not a role session name",
        "destination[0].sts_endpoint \"sts.amazonaws.com\" is not an http:// or https:// URL",
        "destination[0].endpoint \"kinesis.local\" is not an http:// or https:// URL",
        "destination[1] names stream \"other\" again: it has another [[destination]] block",
        "destination[2].stream \"logs\" is kinesis.stream",
        "destination[3] names stream \"nobody-writes-this\", which no source writes",
        "destination[3].external_id is set without destination[3].role_arn",
    ] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }
    let bad_kinesis = MINIMAL.replace(
        "stream = \"logs\"\n",
        "stream = \"logs\"\n    role_arn = \"writer\"\n",
    );
    let e = check(&bad_kinesis).unwrap_err().to_string();
    assert!(
        e.contains("kinesis.role_arn: \"writer\" is not an IAM role ARN"),
        "{e}"
    );
}

/// Regression (issue 22, D13): `validate` accepted what `run` refuses or what
/// cannot be right: a descriptor count no process can have, the filesystem root
/// as the spool, patterns that tail the spool itself, an endpoint without a host.
#[test]
fn validate_refuses_what_run_would_refuse_or_what_harms_the_spool() {
    let e = check(&MINIMAL.replace(
        "path = \"/tmp/a.sock\"",
        "path = \"/tmp/a.sock\"\nmax_connections = 100000000",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("more than Linux allows a process"), "{e}");
    for dir in ["/", "/var", "/var/lib/", "/etc"] {
        let e = check(&MINIMAL.replace("dir = \"/tmp/x\"", &format!("dir = \"{dir}\"")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("root or a system directory"), "{dir}: {e}");
    }
    for dir in ["/var/lib/shardline", "/spool"] {
        check(&MINIMAL.replace("dir = \"/tmp/x\"", &format!("dir = \"{dir}\""))).unwrap();
    }
    for pattern in ["/tmp/x/**", "/tmp/*/streams/*/*.seg", "/tmp/x/*"] {
        let e = check(&format!("{MINIMAL}\n[[file]]\ninclude = [\"{pattern}\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("file[0].include matches the spool's own files")
                || e.contains("file[0].include matches the dead-letter file"),
            "{pattern}: {e}"
        );
    }
    // Excluded, or beside the spool: fine.
    check(&format!(
        "{MINIMAL}\n[[file]]\ninclude = [\"/tmp/**/*.log\"]\n"
    ))
    .unwrap();
    check(&format!(
        "{MINIMAL}\n[[file]]\ninclude = [\"/tmp/x/**\"]\nexclude = [\"/tmp/x/**\"]\n"
    ))
    .unwrap();
    for url in ["http://", "https://:443", "http://user@/"] {
        let e = check(&MINIMAL.replace(
            "stream = \"logs\"\n    [spool]",
            &format!("stream = \"logs\"\n    endpoint = \"{url}\"\n    [spool]"),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("names no host"), "{url}: {e}");
    }
}

/// Lines raised towards 10 MiB (a stream raised with UpdateMaxRecordSize) are
/// accepted up to the largest record, and need the ingest budget to hold them.
#[test]
fn raised_line_limits_reach_10_mib_and_need_ingest_room() {
    let raised = MINIMAL.replace(
        "path = \"/tmp/a.sock\"",
        "path = \"/tmp/a.sock\"\n    max_record_bytes = 10485744",
    );
    assert_eq!(
        check(&raised).unwrap().sockets[0].max_line_bytes,
        10_485_744
    );
    let over = raised.replace("10485744", "10485745");
    let e = check(&over).unwrap_err().to_string();
    assert!(
        e.contains("socket[0].max_record_bytes 10485745 is outside 1..=10485744"),
        "{e}"
    );
    let small = format!("{raised}\n    [ingest]\n    max_memory_bytes = 33554432\n");
    let e = check(&small).unwrap_err().to_string();
    assert!(
        e.contains("ingest.max_memory_bytes 33554432 is below 4 times socket[0].max_record_bytes (10485744): raise it to at least 41942976"),
        "{e}"
    );
}
