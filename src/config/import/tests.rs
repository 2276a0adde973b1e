//! Tests of the agent.json mapping: each agent setting and what it becomes,
//! the errors, and that what the import writes reads as TOML and, where it
//! uses no `[file.parse]` nor `rename`, passes `validate`.

use std::path::Path;

use super::*;

/// The import of `json`, its text read back as TOML.
fn import(json: &str) -> (toml::Table, Imported) {
    let imported = kinesis_agent(json, "agent.json").unwrap_or_else(|e| panic!("{e}"));
    let table = toml::from_str(&imported.toml)
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{}", imported.toml));
    (table, imported)
}

/// The import of `json`, checked by `validate` as well.
fn import_valid(json: &str) -> (toml::Table, Imported) {
    let (table, imported) = import(json);
    if let Err(e) = crate::config::parse(&imported.toml, Path::new("imported.toml")) {
        panic!("{e}\n{}", imported.toml);
    }
    (table, imported)
}

fn get<'a>(t: &'a toml::Table, path: &str) -> &'a toml::Value {
    let mut v = t
        .get(path.split('.').next().unwrap())
        .unwrap_or_else(|| panic!("no {path}"));
    for part in path.split('.').skip(1) {
        v = match part.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => v.get(part).unwrap_or_else(|| panic!("no {path} at {part}")),
        };
    }
    v
}

fn has_warning(i: &Imported, needle: &str) -> bool {
    i.warnings.iter().any(|w| w.contains(needle))
}

const KINESIS_FLOW: &str =
    r#"{"flows": [{"filePattern": "/var/log/app.log", "kinesisStream": "s"}]}"#;

#[test]
fn input_that_is_no_agent_config_is_an_error_naming_it() {
    let err = |json: &str| kinesis_agent(json, "agent.json").unwrap_err().to_string();
    assert!(
        err("{nope").starts_with("agent.json is not JSON: "),
        "{}",
        err("{nope")
    );
    assert_eq!(
        err("[1]"),
        "agent.json is not an agent configuration: its top level is a list, not an object"
    );
    for json in [r#"{}"#, r#"{"flows": []}"#, r#"{"flows": {}}"#] {
        assert_eq!(
            err(json),
            "agent.json has no flows: \"flows\" is missing, empty or not a list"
        );
    }
    assert_eq!(err(r#"{"flows": [3]}"#), "flows[0] is 3, not an object");
    assert_eq!(
        err(r#"{"flows": [{"kinesisStream": "s"}]}"#),
        "flows[0] has no filePattern"
    );
    assert_eq!(
        err(r#"{"flows": [{"filePattern": "/var/log/x*"}]}"#),
        "flows[0] (\"/var/log/x*\") names no stream: it needs kinesisStream or deliveryStream"
    );
}

#[test]
fn a_kinesis_flow_becomes_a_file_block_that_validates() {
    let (t, i) = import_valid(KINESIS_FLOW);
    let head: Vec<&str> = i.toml.lines().take(2).collect();
    assert_eq!(
        head,
        [
            "# shardline configuration imported by `shardline import kinesis-agent` from",
            "# agent.json"
        ],
        "{}",
        i.toml
    );
    assert_eq!(get(&t, "kinesis.stream").as_str(), Some("s"));
    assert_eq!(get(&t, "spool.dir").as_str(), Some(SPOOL_DIR));
    assert_eq!(
        get(&t, "file.0.include").as_array().unwrap()[0].as_str(),
        Some("/var/log/app.log")
    );
    assert_eq!(get(&t, "file.0.stream").as_str(), Some("s"));
    assert_eq!(
        get(&t, "file.0.read_from").as_str(),
        Some("end"),
        "END_OF_FILE is the agent's default"
    );
    assert_eq!(
        get(&t, "file.0.partition_key").as_str(),
        Some("random_per_record")
    );
    assert_eq!(get(&t, "file.0.oversized").as_str(), Some("truncate"));
    assert!(
        get(&t, "file.0").get("exclude").is_none(),
        "a literal name needs no exclude"
    );
    assert!(
        has_warning(&i, "cloudwatch.emitMetrics (on by default)"),
        "{:?}",
        i.warnings
    );
}

#[test]
fn initial_position_partition_key_and_an_open_pattern() {
    let (t, _) = import_valid(
        r#"{"flows": [{"filePattern": "/var/log/app/app.log*", "kinesisStream": "s",
            "initialPosition": "START_OF_FILE", "partitionKeyOption": "DETERMINISTIC"}]}"#,
    );
    assert_eq!(get(&t, "file.0.read_from").as_str(), Some("beginning"));
    assert_eq!(get(&t, "file.0.partition_key").as_str(), Some("line_hash"));
    let exclude: Vec<&str> = get(&t, "file.0.exclude")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        exclude,
        [
            "/var/log/app/*.gz",
            "/var/log/app/*.bz2",
            "/var/log/app/*.zip"
        ]
    );
    let (_, i) = import(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "s", "initialPosition": "MIDDLE"}]}"#,
    );
    assert!(
        has_warning(&i, "initialPosition \"MIDDLE\""),
        "{:?}",
        i.warnings
    );
}

#[test]
fn firehose_streams_take_the_agents_firehose_region_and_packing() {
    let (t, i) = import_valid(
        r#"{"kinesis.region": "eu-west-1",
            "flows": [
            {"filePattern": "/var/log/a.log", "kinesisStream": "k"},
            {"filePattern": "/var/log/b.log", "deliveryStream": "packed", "aggregatedRecordSizeBytes": 512000, "maxBufferAgeMillis": 3000},
            {"filePattern": "/var/log/c.log", "deliveryStream": "single"}]}"#,
    );
    assert_eq!(get(&t, "kinesis.stream").as_str(), Some("k"));
    assert_eq!(get(&t, "kinesis.region").as_str(), Some("eu-west-1"));
    assert_eq!(
        get(&t, "destination.0.delivery_stream").as_str(),
        Some("packed")
    );
    assert_eq!(
        get(&t, "destination.0.region").as_str(),
        Some("us-east-1"),
        "no firehose.endpoint"
    );
    assert_eq!(
        get(&t, "destination.0.packing_max_bytes").as_integer(),
        Some(512000)
    );
    assert_eq!(
        get(&t, "destination.0.packing_linger_ms").as_integer(),
        Some(3000)
    );
    assert_eq!(
        get(&t, "destination.1.delivery_stream").as_str(),
        Some("single")
    );
    assert_eq!(get(&t, "destination.1.packing").as_bool(), Some(false));
    assert!(
        i.toml.contains("packing = true (shardline's default)"),
        "{}",
        i.toml
    );
}

#[test]
fn a_firehose_only_config_names_its_first_stream_in_kinesis() {
    let (t, _) = import_valid(
        r#"{"firehose.endpoint": "https://firehose.ap-south-1.amazonaws.com",
            "flows": [{"filePattern": "/var/log/a.log", "deliveryStream": "one", "aggregatedRecordSizeBytes": 1024000},
                      {"filePattern": "/var/log/b.log", "deliveryStream": "two", "multiLineStartPattern": "^\\S",
                       "aggregatedRecordSizeBytes": 1024000}]}"#,
    );
    assert_eq!(get(&t, "kinesis.delivery_stream").as_str(), Some("one"));
    assert_eq!(get(&t, "kinesis.region").as_str(), Some("ap-south-1"));
    assert!(
        get(&t, "kinesis").get("endpoint").is_none(),
        "a region's own endpoint is the region"
    );
    assert_eq!(
        get(&t, "kinesis.packing_max_bytes").as_integer(),
        Some(1024000)
    );
    assert_eq!(
        get(&t, "destination.0.packing").as_bool(),
        Some(false),
        "the agent never packs a multiline flow"
    );
}

#[test]
fn endpoints_other_than_a_regions_own_are_kept_beside_the_region() {
    let (t, _) = import_valid(
        r#"{"kinesis.endpoint": "https://vpce-0abc-kinesis.eu-west-1.vpce.amazonaws.com",
            "firehose.endpoint": "firehose.eu-west-1.amazonaws.com",
            "flows": [{"filePattern": "/var/log/a.log", "kinesisStream": "k"},
                      {"filePattern": "/var/log/b.log", "deliveryStream": "f"}]}"#,
    );
    assert_eq!(get(&t, "kinesis.region").as_str(), Some("eu-west-1"));
    assert_eq!(
        get(&t, "kinesis.endpoint").as_str(),
        Some("https://vpce-0abc-kinesis.eu-west-1.vpce.amazonaws.com")
    );
    // A Firehose stream needs its own block beside a Kinesis endpoint.
    assert_eq!(get(&t, "destination.0.region").as_str(), Some("eu-west-1"));
    assert!(get(&t, "destination.0").get("endpoint").is_none());
    assert_eq!(endpoints::region_in("localhost"), None);
    assert_eq!(
        endpoints::region_in("kinesis.us-gov-west-1.amazonaws.com").as_deref(),
        Some("us-gov-west-1")
    );
    let (t, _) = import_valid(
        r#"{"kinesis.endpoint": "http://127.0.0.1:4567", "flows": [{"filePattern": "/x/a", "kinesisStream": "k"}]}"#,
    );
    assert_eq!(
        get(&t, "kinesis.endpoint").as_str(),
        Some("http://127.0.0.1:4567")
    );
    assert!(get(&t, "kinesis").get("region").is_none());
}

#[test]
fn secrets_are_never_written_and_the_role_is_repeated_in_each_block() {
    let (t, i) = import_valid(
        r#"{"awsAccessKeyId": "AKIASECRETKEYID0001", "awsSecretAccessKey": "very/secret+value",
            "assumeRoleARN": "arn:aws:iam::111122223333:role/writer", "assumeRoleExternalId": "fleet",
            "sts.endpoint": "https://sts.eu-west-1.amazonaws.com",
            "flows": [{"filePattern": "/var/log/a.log", "kinesisStream": "k"},
                      {"filePattern": "/var/log/b.log", "deliveryStream": "f"}]}"#,
    );
    for secret in ["AKIASECRETKEYID0001", "very/secret+value"] {
        assert!(!i.toml.contains(secret), "{}", i.toml);
        assert!(
            !i.warnings.iter().any(|w| w.contains(secret)),
            "{:?}",
            i.warnings
        );
    }
    assert!(i.toml.contains("AWS_ACCESS_KEY_ID"), "{}", i.toml);
    assert!(
        has_warning(&i, "awsAccessKeyId and awsSecretAccessKey not copied"),
        "{:?}",
        i.warnings
    );
    for section in ["kinesis", "destination.0"] {
        assert_eq!(
            get(&t, &format!("{section}.role_arn")).as_str(),
            Some("arn:aws:iam::111122223333:role/writer")
        );
        assert_eq!(
            get(&t, &format!("{section}.external_id")).as_str(),
            Some("fleet")
        );
        assert_eq!(
            get(&t, &format!("{section}.session_name")).as_str(),
            Some("AWSKinesisAgent")
        );
        assert_eq!(
            get(&t, &format!("{section}.sts_endpoint")).as_str(),
            Some("https://sts.eu-west-1.amazonaws.com")
        );
    }
    let (_, i) = import_valid(
        r#"{"sts.endpoint": "https://sts.x", "flows": [{"filePattern": "/x/a", "kinesisStream": "k"}]}"#,
    );
    assert!(
        has_warning(&i, "sts.endpoint without assumeRoleARN"),
        "{:?}",
        i.warnings
    );
}

#[test]
fn general_keys_map_to_timeouts_connections_and_comments() {
    let (t, i) = import_valid(
        r#"{"shutdownTimeoutMillis": 2500, "connectionTimeoutMillis": 1000, "maxConnections": 8,
            "maxSendingThreads": 20, "checkpointFile": "/tmp/cp", "log.emitMetrics": true,
            "cloudwatch.emitMetrics": false, "userAgent": "x",
            "flows": [{"filePattern": "/x/a", "kinesisStream": "k"}]}"#,
    );
    assert_eq!(get(&t, "shutdown_timeout_secs").as_integer(), Some(3));
    assert_eq!(
        get(&t, "kinesis.request_timeout_ms").as_integer(),
        Some(51_000),
        "connect + the SDK's socket timeout"
    );
    assert_eq!(get(&t, "delivery.max_connections").as_integer(), Some(8));
    for needle in ["checkpointFile", "log.emitMetrics", "userAgent"] {
        assert!(has_warning(&i, needle), "{needle}: {:?}", i.warnings);
    }
    assert!(
        !has_warning(&i, "cloudwatch"),
        "metrics were off: {:?}",
        i.warnings
    );
}

#[test]
fn buffering_takes_the_smallest_value_across_flows() {
    let (t, i) = import_valid(
        r#"{"flows": [
            {"filePattern": "/x/a", "kinesisStream": "a", "maxBufferAgeMillis": 5000, "maxBufferSizeRecords": 400, "maxBufferSizeBytes": 4194304},
            {"filePattern": "/x/b", "kinesisStream": "b", "maxBufferAgeMillis": "2000", "maxBufferSizeBytes": 2097152},
            {"filePattern": "/x/c", "deliveryStream": "c", "maxBufferSizeRecords": 100, "maxBufferSizeBytes": 1000}]}"#,
    );
    assert_eq!(
        get(&t, "delivery.max_buffered_time_ms").as_integer(),
        Some(2000)
    );
    assert_eq!(
        get(&t, "delivery.batch_max_records").as_integer(),
        Some(100)
    );
    assert_eq!(
        get(&t, "delivery.batch_max_bytes").as_integer(),
        Some(2097152)
    );
    assert!(
        i.toml
            .contains("the smallest maxBufferAgeMillis of the Kinesis flows"),
        "{}",
        i.toml
    );
    assert!(
        has_warning(&i, "maxBufferSizeBytes 1000 of the Firehose flows"),
        "{:?}",
        i.warnings
    );
    let (t, _) = import_valid(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "a", "maxBufferSizeBytes": 1024}]}"#,
    );
    assert_eq!(
        get(&t, "delivery.batch_max_bytes").as_integer(),
        Some(1 << 20),
        "raised to one full record"
    );
}

#[test]
fn multiline_patterns_are_anchored_and_java_only_ones_reported() {
    let flow = |p: &str| {
        format!(
            r#"{{"flows": [{{"filePattern": "/x/a", "kinesisStream": "k", "multiLineStartPattern": {}}}]}}"#,
            serde_json::Value::from(p)
        )
    };
    let (t, _) = import_valid(&flow(r"^\d{4}-"));
    assert_eq!(get(&t, "file.0.multiline_start").as_str(), Some(r"^\d{4}-"));
    let (t, _) = import_valid(&flow(r"\[\d+|INFO"));
    assert_eq!(
        get(&t, "file.0.multiline_start").as_str(),
        Some(r"^(?:\[\d+|INFO)")
    );
    let (t, i) = import_valid(&flow(r"(?<=x)\["));
    assert!(get(&t, "file.0").get("multiline_start").is_none());
    assert!(has_warning(&i, "lookbehind"), "{:?}", i.warnings);
}

#[test]
fn settings_without_counterpart_are_comments_and_warnings() {
    let (_, i) = import_valid(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "k", "skipHeaderLines": 1,
            "truncatedRecordTerminator": "<cut>", "fileFooterPattern": "END", "retryMaxBackoffMillis": 9,
            "minTimeBetweenFilePollsMillis": 50, "maxTimeBetweenFileTrackerRefreshMillis": 3000}]}"#,
    );
    for needle in [
        "skipHeaderLines 1",
        "truncatedRecordTerminator \"<cut>\"",
        "fileFooterPattern \"END\"",
        "retryMaxBackoffMillis",
        "minTimeBetweenFilePollsMillis 50",
    ] {
        assert!(has_warning(&i, needle), "{needle}: {:?}", i.warnings);
        assert!(
            i.toml.contains(needle.split(' ').next().unwrap()),
            "{needle}: {}",
            i.toml
        );
    }
    assert!(i.toml.contains("rescan_interval_ms = 3000"), "{}", i.toml);
    let (_, i) = import_valid(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "k", "truncatedRecordTerminator": "\n"}]}"#,
    );
    assert!(
        !has_warning(&i, "truncatedRecordTerminator"),
        "the default terminator: {:?}",
        i.warnings
    );
}

#[test]
fn one_file_in_two_flows_is_reported() {
    let (_, i) = import_valid(
        r#"{"flows": [{"filePattern": "/tmp/app.log*", "kinesisStream": "k"},
                      {"filePattern": "/tmp/app.log*", "deliveryStream": "f"}]}"#,
    );
    assert!(
        has_warning(
            &i,
            "flows[1] (/tmp/app.log*): another flow above tails the same files"
        ),
        "{:?}",
        i.warnings
    );
}

#[test]
fn unknown_keys_are_warnings_at_every_level_never_errors() {
    let (_, i) = import(
        r#"{"futureKey": 1, "flows": [{"filePattern": "/x/a", "kinesisStream": "k", "colour": "blue",
            "aggregatedRecordSizeBytes": 5,
            "dataProcessingOptions": [{"optionName": "LOGTOJSON", "logFormat": "SYSLOG", "strict": true},
                                      {"optionName": "UPPERCASE"}]}]}"#,
    );
    for needle in [
        "agent.json: key \"futureKey\" is not one the agent reads",
        "flows[0] (/x/a): key \"colour\"",
        "flows[0] (/x/a): key \"aggregatedRecordSizeBytes\" is not one the agent reads for this flow",
        "dataProcessingOptions[0]: key \"strict\" is not one the agent reads for LOGTOJSON",
        "dataProcessingOptions[1]: optionName \"UPPERCASE\"",
    ] {
        assert!(has_warning(&i, needle), "{needle}: {:?}", i.warnings);
    }
}

#[test]
fn logtojson_is_a_preset_with_the_agents_names_and_keys() {
    let (t, i) = import(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "k", "dataProcessingOptions": [
            {"optionName": "LOGTOJSON", "logFormat": "COMBINEDAPACHELOG",
             "customFieldNames": ["a","b","c","d","e","f","g","h","i"]}]}]}"#,
    );
    assert_eq!(
        get(&t, "file.0.parse.preset").as_str(),
        Some("COMBINEDAPACHELOG")
    );
    assert_eq!(
        get(&t, "file.0.parse.field_names").as_array().map(Vec::len),
        Some(9)
    );
    assert_eq!(get(&t, "file.0.parse.on_error").as_str(), Some("drop"));
    let rename = get(&t, "file.0.rename").as_table().unwrap();
    for key in ["timestamp", "host", "source"] {
        assert_eq!(
            rename[key].as_str(),
            Some(""),
            "{key}: customFieldNames named no such key"
        );
    }
    assert!(
        get(&t, "file.0").get("format").is_none(),
        "a parse table implies json"
    );
    assert!(i.toml.contains("silently"), "{}", i.toml);
    let (_, i) = import(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "k", "dataProcessingOptions": [
            {"optionName": "LOGTOJSON", "logFormat": "SYSLOG", "customFieldNames": ["a"]}]}]}"#,
    );
    assert!(
        has_warning(&i, "customFieldNames has 1 names, SYSLOG has 5 fields"),
        "{:?}",
        i.warnings
    );
}

#[test]
fn a_match_pattern_is_anchored_or_reported() {
    let option = |p: &str| {
        format!(
            r#"{{"flows": [{{"filePattern": "/x/a", "kinesisStream": "k", "dataProcessingOptions": [
                {{"optionName": "LOGTOJSON", "logFormat": "COMMONAPACHELOG", "matchPattern": {}, "customFieldNames": ["x", "y"]}}]}}]}}"#,
            serde_json::Value::from(p)
        )
    };
    let (t, _) = import(&option(r"(\S+) (\d+)"));
    assert_eq!(
        get(&t, "file.0.parse.pattern").as_str(),
        Some(r"^(?:(\S+) (\d+))$")
    );
    assert_eq!(
        get(&t, "file.0.parse.field_names").as_array().map(Vec::len),
        Some(2)
    );
    assert!(get(&t, "file.0.parse").get("preset").is_none());
    let (t, i) = import_valid(&option(r"(\w+)(?=x)(\d)"));
    assert!(get(&t, "file.0").get("parse").is_none());
    assert!(has_warning(&i, "lookahead"), "{:?}", i.warnings);
}

#[test]
fn csvtojson_keeps_the_agents_delimiter() {
    let (t, _) = import(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "k", "dataProcessingOptions": [
            {"optionName": "CSVTOJSON", "customFieldNames": ["a", "b"], "delimiter": "\\t"}]}]}"#,
    );
    assert_eq!(get(&t, "file.0.parse.preset").as_str(), Some("CSVTOJSON"));
    assert_eq!(get(&t, "file.0.parse.delimiter").as_str(), Some(r"\t"));
    assert!(
        get(&t, "file.0.parse").get("on_error").is_none(),
        "CSVTOJSON drops no line"
    );
}

#[test]
fn singleline_and_ec2_metadata() {
    let (t, i) = import(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "k", "dataProcessingOptions": [
            {"optionName": "SINGLELINE"}, {"optionName": "ADDEC2METADATA", "logFormat": "SYSLOG"}]}]}"#,
    );
    assert!(
        has_warning(&i, "dataProcessingOptions[0]: SINGLELINE: no equivalent"),
        "{:?}",
        i.warnings
    );
    assert!(
        has_warning(
            &i,
            "privateIp, instanceType, accountId, amiId, metadataTimestamp and tags"
        ),
        "{:?}",
        i.warnings
    );
    assert_eq!(get(&t, "file.0.format").as_str(), Some("json"));
    assert_eq!(get(&t, "file.0.json_merge").as_bool(), Some(true));
    assert_eq!(get(&t, "file.0.ec2_identity").as_bool(), Some(true));
    let rename = get(&t, "file.0.rename").as_table().unwrap();
    assert_eq!(rename["instance_id"].as_str(), Some("instanceId"));
    assert_eq!(rename["az"].as_str(), Some("availabilityZone"));
    assert!(
        rename.get("host").is_none(),
        "a merged line's own host stays"
    );
    assert!(
        has_warning(&i, "a rename would remove the line's own keys"),
        "{:?}",
        i.warnings
    );
}

#[test]
fn addmetadata_becomes_fields_beside_data_and_ts() {
    let (t, i) = import(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "k", "dataProcessingOptions": [
            {"optionName": "ADDMETADATA", "timestamp": "true", "metadata": {"env": "prod", "host": "x"}}]}]}"#,
    );
    assert_eq!(get(&t, "file.0.fields.env").as_str(), Some("prod"));
    assert!(
        get(&t, "file.0.fields").get("host").is_none(),
        "a built-in key"
    );
    let rename = get(&t, "file.0.rename").as_table().unwrap();
    assert_eq!(rename["message"].as_str(), Some("data"));
    assert_eq!(rename["timestamp"].as_str(), Some("ts"));
    assert!(
        has_warning(&i, "a consumer reading metadata.KEY reads KEY"),
        "{:?}",
        i.warnings
    );
    let (_, i) = import(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "k", "dataProcessingOptions": [
            {"optionName": "ADDMETADATA", "metadata": {"n": 1}}, {"optionName": "ADDBRACKETS"},
            {"optionName": "USINGPLUGGIN", "className": "com.x.C"}]}]}"#,
    );
    for needle in ["metadata {\"n\":1}", "ADDBRACKETS", "com.x.C"] {
        assert!(has_warning(&i, needle), "{needle}: {:?}", i.warnings);
    }
}

#[test]
fn toml_strings_read_back_as_written() {
    for s in [
        r"^\d+$",
        "a \"b\"",
        r#"it's \ "x""#,
        "tab\there",
        "",
        "line\nbreak",
        "\u{1}",
    ] {
        let text = format!("v = {}\n", out::string(s));
        let t: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(t["v"].as_str(), Some(s), "{text}");
    }
}

#[test]
fn values_quoted_in_comments_cannot_end_the_comment() {
    let (t, i) = import(
        r#"{"kinesis.endpoint": "https://x.example\n[evil]\nkey = 1",
            "userDefinedCredentialsProvider.classname": "a\r\n[evil2]",
            "flows": [{"filePattern": "/x/a\n[evil3]", "kinesisStream": "k",
                       "fileFooterPattern": "\u0007"}]}"#,
    );
    for table in ["evil", "evil2", "evil3"] {
        assert!(t.get(table).is_none(), "{}", i.toml);
    }
    assert!(
        !i.toml.contains('\r') && !i.toml.contains('\u{7}'),
        "{}",
        i.toml
    );
}

#[test]
fn a_parsed_key_named_like_an_added_one_is_kept() {
    let (t, i) = import(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "k", "dataProcessingOptions": [
            {"optionName": "LOGTOJSON", "logFormat": "SYSLOG"}]}]}"#,
    );
    let rename = get(&t, "file.0.rename").as_table().unwrap();
    assert!(
        rename.get("timestamp").is_none(),
        "SYSLOG has a timestamp field: {rename:?}"
    );
    assert_eq!(rename["host"].as_str(), Some(""));
    assert!(
        has_warning(&i, "the agent kept `timestamp` as the line wrote it"),
        "{:?}",
        i.warnings
    );
    let (t, _) = import(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "k", "dataProcessingOptions": [
            {"optionName": "LOGTOJSON", "logFormat": "COMMONAPACHELOG"}]}]}"#,
    );
    let rename = get(&t, "file.0.rename").as_table().unwrap();
    assert!(
        rename.get("host").is_none(),
        "the Apache client is `host`: {rename:?}"
    );
    assert_eq!(rename["timestamp"].as_str(), Some(""));
    let (t, _) = import(
        r#"{"flows": [{"filePattern": "/x/a", "kinesisStream": "k", "dataProcessingOptions": [
            {"optionName": "CSVTOJSON", "customFieldNames": ["source", "n"]}]}]}"#,
    );
    let rename = get(&t, "file.0.rename").as_table().unwrap();
    assert!(rename.get("source").is_none(), "{rename:?}");
}
