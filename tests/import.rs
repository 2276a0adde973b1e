//! `shardline import kinesis-agent`: every agent.json of
//! tests/fixtures/kinesis-agent/ through the real binary, its output through
//! `shardline validate`, and the command's files, streams and exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::shardline_bin;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kinesis-agent");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kinesis-agent")
        .join(name)
}

fn import(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(shardline_bin())
        .args(["import", "kinesis-agent"])
        .args(args)
        .output()
        .unwrap()
}

fn validate(config: &Path) -> Output {
    Command::new(shardline_bin())
        .args(["validate", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether this build's `validate` takes the `[file.parse]` table and
/// `rename`; until it does, outputs that use them are checked as TOML only.
fn parse_keys_accepted(dir: &Path) -> bool {
    let probe = dir.join("probe.toml");
    std::fs::write(
        &probe,
        "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/tmp/probe-spool\"\n[[file]]\ninclude = [\"/var/log/a.log\"]\nrename = { host = \"\" }\n[file.parse]\npreset = \"COMMONAPACHELOG\"\n",
    )
    .unwrap();
    validate(&probe).status.success()
}

#[test]
fn every_fixture_imports_into_a_config_that_validates() {
    let dir = tempfile::tempdir().unwrap();
    let parse_keys = parse_keys_accepted(dir.path());
    let files = fixtures();
    assert!(files.len() >= 8, "{files:?}");
    for file in files {
        let out_path = dir.path().join(format!(
            "{}.toml",
            file.file_stem().unwrap().to_string_lossy()
        ));
        let out = import(&[file.as_os_str(), "--output".as_ref(), out_path.as_os_str()]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", file.display());
        assert!(out.stdout.is_empty(), "--output: nothing on stdout");
        assert!(
            stderr.lines().all(|l| l.starts_with("warning: ")),
            "{stderr}"
        );
        let toml_text = std::fs::read_to_string(&out_path).unwrap();
        toml::from_str::<toml::Table>(&toml_text)
            .unwrap_or_else(|e| panic!("{}: not TOML: {e}\n{toml_text}", file.display()));
        let uses_parse_keys =
            toml_text.contains("[file.parse]") || toml_text.contains("\nrename = ");
        if uses_parse_keys && !parse_keys {
            continue;
        }
        let checked = validate(&out_path);
        assert!(
            checked.status.success(),
            "{}: {}{}\n{toml_text}",
            file.display(),
            text(&checked.stdout),
            text(&checked.stderr)
        );
    }
}

#[test]
fn the_agents_own_example_maps_its_two_flows() {
    let out = import(&[fixture("example.json").as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t: toml::Table = toml::from_str(&text(&out.stdout)).unwrap();
    let files = t["file"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["parse"]["preset"].as_str(), Some("CSVTOJSON"));
    assert_eq!(files[0]["parse"]["delimiter"].as_str(), Some(r"\t"));
    assert_eq!(
        files[1]["parse"]["preset"].as_str(),
        Some("COMMONAPACHELOG")
    );
    assert_eq!(t["kinesis"]["region"].as_str(), Some("us-west-2"));
    let stderr = text(&out.stderr);
    for key in [
        "awsAccessKeyId",
        "userDefinedCredentialsProvider",
        "checkpointFile",
        "cloudwatch.emitMetrics",
    ] {
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
    assert!(!text(&out.stdout).contains("SECRETKEY"));
}

#[test]
fn secrets_never_reach_the_output_or_the_warnings() {
    let agent = fixture("general-keys.json");
    let json = std::fs::read_to_string(&agent).unwrap();
    assert!(
        json.contains("fixture/Secret+Key/ShouldNeverAppear0123"),
        "the fixture has its secret"
    );
    let out = import(&[agent.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for secret in [
        "AKIAFIXTURE0SECRET01",
        "fixture/Secret+Key/ShouldNeverAppear0123",
    ] {
        assert!(!text(&out.stdout).contains(secret));
        assert!(!text(&out.stderr).contains(secret));
    }
    assert!(text(&out.stderr)
        .contains("warning: agent.json: awsAccessKeyId and awsSecretAccessKey not copied"));
}

#[test]
fn stdin_in_stdout_out() {
    let mut child = Command::new(shardline_bin())
        .args(["import", "kinesis-agent", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"cloudwatch.emitMetrics": false, "flows": [{"filePattern": "/var/log/a.log", "kinesisStream": "s"}]}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "nothing to warn about");
    assert!(
        text(&out.stdout).contains("stream = \"s\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn an_existing_output_is_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("shardline.toml");
    std::fs::write(&target, "mine\n").unwrap();
    let agent = fixture("firehose.json");
    let out = import(&[agent.as_os_str(), "-o".as_ref(), target.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("exists: pass --force to replace it"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine\n");
    let out = import(&[
        agent.as_os_str(),
        "-o".as_ref(),
        target.as_os_str(),
        "--force".as_ref(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&target)
        .unwrap()
        .contains("delivery_stream = \"web-logs\""));
}

#[test]
fn an_agent_json_that_cannot_be_imported_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("{", "is not JSON"),
        ("{\"flows\": []}", "has no flows"),
        (
            "{\"flows\": [{\"filePattern\": \"/var/log/a\"}]}",
            "flows[0] (\"/var/log/a\") names no stream",
        ),
    ];
    for (json, needle) in cases {
        let path = dir.path().join("agent.json");
        std::fs::write(&path, json).unwrap();
        let out = import(&[path.as_os_str()]);
        assert_eq!(out.status.code(), Some(2), "{json}");
        assert!(
            text(&out.stderr).starts_with("error: "),
            "{}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{needle}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
    let out = import(&[dir.path().join("missing.json").as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );
}

/// The fenced block of `kind` after `heading` in `text`.
fn block_after<'a>(text: &'a str, heading: &str, kind: &str) -> &'a str {
    let from = text.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    let open = format!("```{kind}\n");
    let start = from + text[from..].find(&open).unwrap() + open.len();
    let end = start + text[start..].find("```").unwrap();
    &text[start..end]
}

/// docs/migration.md's worked example is what the command writes, comments
/// aside.
#[test]
fn the_worked_example_in_the_migration_guide_is_the_commands_output() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/migration.md"))
            .unwrap();
    let json = block_after(&doc, "### A worked example", "json");
    let shown = block_after(&doc, "### A worked example", "toml");
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent.json");
    std::fs::write(&agent, json).unwrap();
    let out = import(&[agent.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "the example maps whole");
    let settings = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(settings(shown), settings(&text(&out.stdout)));
}
