//! Tests of `${VAR}` in the config: values, defaults, escapes, every kind of
//! place a string can be, errors that name variables but never values, and
//! line numbers that still point at the line written.

use super::expand;

fn env(name: &str) -> Option<String> {
    match name {
        "STREAM" => Some("app-logs".into()),
        "REGION" => Some("eu-west-1".into()),
        "EMPTY" => Some(String::new()),
        "SECRET" => Some("hunter2".into()),
        "QUOTE" => Some("a \"quoted\" \\ value".into()),
        _ => None,
    }
}

#[test]
fn references_are_replaced_in_every_string_and_nowhere_else() {
    let text = r#"
# ${STREAM} in a comment stays
[kinesis]
stream = "${STREAM}"
region = '${REGION:-us-east-1}'
endpoint = "http://${HOST:-127.0.0.1}:${PORT:-4567}/"
[spool]
dir = "/var/lib/${EMPTY:-shardline}"
[[file]]
include = ["/var/log/${STREAM}/*.log", "/plain"]
fields = { env = "${STAGE:-prod}", note = "costs $$5", regex = "^a$" }
multiline_start = '^\d+ ${QUOTE}$'
"#;
    let out = expand(text, env).unwrap();
    let doc: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(doc["kinesis"]["stream"].as_str(), Some("app-logs"));
    assert_eq!(doc["kinesis"]["region"].as_str(), Some("eu-west-1"));
    assert_eq!(
        doc["kinesis"]["endpoint"].as_str(),
        Some("http://127.0.0.1:4567/")
    );
    // `:-` takes the default for an empty variable too, as the shell does.
    assert_eq!(doc["spool"]["dir"].as_str(), Some("/var/lib/shardline"));
    let file = &doc["file"].as_array().unwrap()[0];
    assert_eq!(
        file["include"].as_array().unwrap()[0].as_str(),
        Some("/var/log/app-logs/*.log")
    );
    assert_eq!(file["fields"]["env"].as_str(), Some("prod"));
    assert_eq!(file["fields"]["note"].as_str(), Some("costs $5"));
    assert_eq!(file["fields"]["regex"].as_str(), Some("^a$"));
    assert_eq!(
        file["multiline_start"].as_str(),
        Some("^\\d+ a \"quoted\" \\ value$")
    );
    assert!(out.contains("# ${STREAM} in a comment stays"));
}

#[test]
fn a_text_without_references_is_returned_as_written() {
    let text = "[kinesis]\nstream = \"s\" # a comment\nregion='r'\n";
    assert_eq!(expand(text, env).unwrap(), text);
    let text = "[file]\nmultiline_start = '^x$'\n";
    assert_eq!(expand(text, env).unwrap(), text);
}

#[test]
fn unset_variables_are_named_with_their_key_and_no_value_is_printed() {
    let text = r#"
[kinesis]
stream = "${NOPE}"
region = "${SECRET}-${ALSO_MISSING}"
[[socket]]
path = "${BAD-NAME}"
[[file]]
include = ["${OPEN"]
"#;
    let problems = expand(text, env).unwrap_err();
    assert_eq!(
        problems,
        [
            "kinesis.stream: environment variable NOPE is not set (write `${NOPE:-default}` to give a default)",
            "kinesis.region: environment variable ALSO_MISSING is not set (write `${ALSO_MISSING:-default}` to give a default)",
            "socket[0].path: `${BAD-NAME}` is not a variable name (letters, digits and `_`, not starting with a digit)",
            "file[0].include[0]: `${` without its closing `}` (write `$$` for a lone `$`)",
        ]
    );
    assert!(!problems.join("\n").contains("hunter2"));
}

#[test]
fn lines_keep_their_numbers_for_the_reader_s_errors() {
    let text = "[kinesis]\nstream = \"${STREAM}\"\n\n\nregion = 5\n";
    let out = expand(text, env).unwrap();
    assert_eq!(out.lines().count(), text.lines().count());
    assert_eq!(out.lines().nth(4), Some("region = 5"));
    // A file the reader cannot parse is left for it to point at.
    let broken = "[kinesis\nstream = \"${STREAM}\"\n";
    assert_eq!(expand(broken, env).unwrap(), broken);
}
